"""Headless rendering shares the process with torch: a rendered frame, then the first optimiser."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RENDER_THEN_OPTIMISE = """
import torch
from data.env import EnvConfig, make_env
env = make_env(EnvConfig(task="reach-v3"))
env.reset(seed=0)
torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))])
print("optimiser built after a rendered frame")
"""


@pytest.mark.parametrize("backend", ["egl", "osmesa"])
def test_a_rendered_frame_then_the_first_optimiser_does_not_crash(backend):
    """Mesa's llvmpipe and triton both carry an LLVM: triton loaded second (torch loads it lazily at its
    first optimiser) segfaulted the process (exit -11) before data.gl loaded triton first."""
    env = {**os.environ, "MUJOCO_GL": backend, "PYTHONPATH": str(REPO)}
    env.pop("PYOPENGL_PLATFORM", None)
    done = subprocess.run(
        [sys.executable, "-c", RENDER_THEN_OPTIMISE], env=env, capture_output=True, text=True, timeout=300
    )
    if backend == "osmesa" and "OSMesa" in done.stderr and done.returncode != 0:
        pytest.skip("OSMesa is not installed here")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "optimiser built after a rendered frame" in done.stdout
