"""Env workers: spawned pixel workers import the env, not the trainer's main module (torch, encoders)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A trainer-like main module run with `python -m`: it imports torch before it builds its envs.
TRAINER = """
import json, sys
import torch  # noqa: F401
from data.env import EnvConfig
from rl.envs import make_envs


def main():
    envs = make_envs(EnvConfig(task="reach-v3", image_size=32), 2, pixels=True, oracle_saliency=True, seed_bases=[7])
    obs, _ = envs.reset()
    workers = []
    for p in envs.processes:
        rss_kb = next(int(line.split()[1]) for line in open(f"/proc/{p.pid}/status") if line.startswith("VmRSS"))
        workers.append({"torch": "libtorch" in open(f"/proc/{p.pid}/maps").read(), "rss_mb": rss_kb // 1024})
    print(json.dumps({"workers": workers, "pixels": list(obs["pixels"].shape), "saliency_max": int(obs["saliency"].max()),
                      "main": sys.modules["__main__"].__spec__.name, "file": __file__.endswith("fake_trainer.py")}))
    envs.close()


if __name__ == "__main__":
    main()
"""


def test_pixel_workers_of_a_torch_main_module_do_not_import_torch(tmp_path):
    (tmp_path / "fake_trainer.py").write_text(TRAINER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-m", "fake_trainer"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert [w["torch"] for w in report["workers"]] == [False, False]
    # a worker that imported the trainer's main module held ~0.76 GB; one that imports only the env, ~0.3 GB
    assert all(w["rss_mb"] < 500 for w in report["workers"]), report["workers"]
    assert report["pixels"] == [2, 32, 32, 3] and report["saliency_max"] > 0  # the workers still work
    assert report["main"] == "fake_trainer" and report["file"]  # the main module is restored afterwards
