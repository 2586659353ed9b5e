import os

os.environ.setdefault("MUJOCO_GL", "egl")

import data  # noqa: E402,F401  (configures headless GL before any test imports mujoco)
