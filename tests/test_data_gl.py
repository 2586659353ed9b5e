"""Headless rendering: a rendered frame, then the first optimiser, in one process; RL workers' rasterizer threads."""

import json
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


RENDER_IN_AN_RL_WORKER = """
import glob, hashlib, json
from data.env import EnvConfig
from rl.envs import env_thunk
env = env_thunk(EnvConfig(task="reach-v3"), pixels=True, oracle=False, base=0, offset=0, stride=1, first_episode=0)()
obs, _ = env.reset()
threads = [open(p).read().strip() for p in glob.glob("/proc/self/task/*/comm")]
print(json.dumps({"threads": threads, "sha": hashlib.sha256(obs["pixels"].tobytes()).hexdigest()}))
"""


def test_rl_env_workers_rasterize_on_their_own_thread_unless_told_and_render_the_same_frames():
    """An RL env worker renders with LP_NUM_THREADS=0 (no llvmpipe rasterizer threads, data.gl.serial_rasterizer);
    a user's LP_NUM_THREADS wins; both give the same pixels."""
    runs = {}
    for threads in (None, "2"):
        env = {**os.environ, "MUJOCO_GL": "egl", "PYTHONPATH": str(REPO)}
        env.pop("PYOPENGL_PLATFORM", None)
        env.pop("LP_NUM_THREADS", None)
        if threads:
            env["LP_NUM_THREADS"] = threads
        done = subprocess.run(
            [sys.executable, "-c", RENDER_IN_AN_RL_WORKER], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        runs[threads] = json.loads(done.stdout.strip().splitlines()[-1])
    rasterizers = {k: sorted(t for t in r["threads"] if t.startswith("llvmpipe")) for k, r in runs.items()}
    assert rasterizers[None] == [], rasterizers
    assert rasterizers["2"] == ["llvmpipe-0", "llvmpipe-1"], rasterizers
    assert runs[None]["sha"] == runs["2"]["sha"]
