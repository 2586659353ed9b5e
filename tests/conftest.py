import os

os.environ.setdefault("MUJOCO_GL", "egl")
if "PYTEST_XDIST_WORKER" in os.environ:  # `make test`'s workers share the cores: one torch thread each, inherited
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # by child processes (a stage's own --threads still applies)
# `--precision auto` is float32 in the suite on every CPU (bf16 on AMX/AVX512-BF16 ones otherwise): tests that
# compare two code paths (a pack vs a run alone, a batch vs its parts) hold float32's rounding; bf16 paths are
# tested with an explicit bf16 in test_precision.py. Child processes inherit it.
os.environ["VISARL_AUTO_PRECISION"] = "fp32"

import data  # noqa: E402,F401  (configures headless GL before any test imports mujoco)

#: the suite's longest files (minutes each, one end-to-end test apiece): first, so each starts on a worker of its own
LONGEST = ("test_pipeline_table_e2e.py", "test_pipeline_table_e2e_bc.py", "test_pipeline_e2e.py")


def pytest_collection_modifyitems(items):
    """LONGEST, then the other files holding a `slow` test, then the rest, in a stable sort: `make test`'s workers
    take whole files in this order (`--no-loadscope-reorder`), and a file of several minutes started last, or
    queued behind another, would run alone at the end. (xdist hands a worker whose file holds 2 tests or fewer a
    second file at once: the next two files, short ones, queue behind LONGEST.)"""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item) -> int:
        if item.path.name in LONGEST:
            return LONGEST.index(item.path.name)
        return len(LONGEST) + (item.path not in slow_files)

    items.sort(key=rank)
