import os

os.environ.setdefault("MUJOCO_GL", "egl")
# `--precision auto` is float32 in the suite on every CPU (bf16 on AMX/AVX512-BF16 ones otherwise): tests that
# compare two code paths (a pack vs a run alone, a batch vs its parts) hold float32's rounding; bf16 paths are
# tested with an explicit bf16 in test_precision.py. Child processes inherit it.
os.environ["VISARL_AUTO_PRECISION"] = "fp32"

import data  # noqa: E402,F401  (configures headless GL before any test imports mujoco)
