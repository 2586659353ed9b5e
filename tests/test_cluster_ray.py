"""rl.grid on a local Ray cluster of two worker nodes (ray.cluster_utils.Cluster): a node is killed while
its pack trains; Ray retries the pack, which continues from its checkpoint (`--resume auto`) and ends
with exactly one metrics.csv row per logged step. Then `--storage driver` brings whole run folders back.
Tiny state-encoder SAC runs keep it within a few minutes on a busy 2-core CPU. Last, `python -m rl.grid --backend
ray` starts a local Ray instance of its own, even where RAY_ADDRESS names another. The Ray tests live in this one
file: `make test` gives whole files to parallel workers (pytest-xdist, `--dist loadfile`), so the two Ray instances
run one after the other, never beside each other on the 2 cores."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from rl.grid import GridConfig, run_grid

STEPS = 1500
EXTRA = "--max-episode-steps 100 --log-every 100 --checkpoint-every 200 --eval-episodes 1"


@pytest.fixture
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # packs run on the workers only
    cluster.workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def grid(cluster, **kw) -> GridConfig:
    return GridConfig(
        **{
            "encoders": "state",
            "seeds": "0,1",
            "steps": STEPS,
            "sac_preset": "micro",
            "pack": 1,
            "out": "runs/sac",
            "backend": "ray",
            "ray_address": cluster.address,
            "extra": EXTRA,
            **kw,
        }
    )


def logged_steps(run_dir: Path) -> list[int]:
    return [int(r["step"]) for r in csv.DictReader(open(run_dir / "metrics.csv"))]


def tensorboard_steps(run_dir: Path) -> list[int]:
    """Steps of metrics/episodes as TensorBoard shows them (events a killed attempt logged after its checkpoint are purged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return [e.step for e in events.Scalars("metrics/episodes")]


@pytest.mark.slow
def test_a_killed_worker_node_is_retried_and_resumes_without_duplicated_rows(cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = [Path("runs/sac/reach-v3/state") / f"seed{s}" for s in (0, 1)]
    killed: list[float] = []

    def kill_a_node_mid_run() -> None:
        """Once both packs hold a checkpoint and neither has finished, kill a worker node (its pack is then
        retried on the other one)."""
        while not all(list(r.glob("checkpoint-*.pt")) for r in runs):
            time.sleep(0.05)
        if not any((r / "summary.json").exists() for r in runs):
            cluster.remove_node(cluster.workers[0], allow_graceful=False)
            killed.append(time.time())

    killer = threading.Thread(target=kill_a_node_mid_run, daemon=True)
    killer.start()
    t0 = time.time()
    status = run_grid(grid(cluster, storage="shared"))
    killer.join(timeout=60)
    assert killed, "the runs finished before a node could be killed: raise STEPS"
    assert status == {"reach-v3/state/seed0": "done", "reach-v3/state/seed1": "done"}
    logs = [(r / "stdout.log").read_text() for r in runs]
    assert any("resumed at step" in log for log in logs), logs  # the retried pack continued, not restarted
    for run in runs:
        assert logged_steps(run) == list(range(100, STEPS + 1, 100))  # one row per step: none duplicated, none lost
        assert tensorboard_steps(run) == list(range(100, STEPS + 1, 100))
        assert json.loads((run / "summary.json").read_text())["steps"] == STEPS
    print(f"killed a node {killed[0] - t0:.0f} s in; grid done after {time.time() - t0:.0f} s")

    # --storage driver: the folders travel to the worker and come back whole
    status = run_grid(grid(cluster, seeds="2", steps=300, storage="driver", scratch=str(tmp_path / "scratch")))
    assert status == {"reach-v3/state/seed2": "done"}
    back = Path("runs/sac/reach-v3/state/seed2")
    assert {"agent.pt", "summary.json", "metrics.csv", "config.json", "checkpoint-000000300.pt"} <= {
        p.name for p in back.iterdir()
    }
    assert any((back / "tb").iterdir()) and any(back.glob("replay-*/*"))

    # this process is connected to the cluster: a grid that would start its own instance says so, and runs nothing
    with pytest.raises(ValueError, match="connected to Ray already: pass that instance's address"):
        run_grid(grid(cluster, seeds="3", ray_address=""))
    assert ray.is_initialized() and not Path("runs/sac/reach-v3/state/seed3").exists()


@pytest.mark.slow
def test_two_run_micro_grid_on_local_ray(tmp_path):
    """Without --ray-address the grid starts a Ray instance of its own, even where RAY_ADDRESS names another
    (here one nobody listens at: joining it would fail)."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "rl.grid",
            "--tasks",
            "reach-v3",
            "--encoders",
            "state",
            "--seeds",
            "0,1",
            "--steps",
            "200",
            "--sac-preset",
            "micro",
            "--backend",
            "ray",
            "--parallel",
            "2",
            "--out",
            str(tmp_path / "sac"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env={**os.environ, "RAY_ADDRESS": "127.0.0.1:9"},
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for seed in (0, 1):
        summary = json.loads((tmp_path / "sac" / "reach-v3" / "state" / f"seed{seed}" / "summary.json").read_text())
        assert summary["steps"] == 200 and summary["seed"] == seed
        assert (Path(tmp_path) / "sac" / "reach-v3" / "state" / f"seed{seed}" / "eval.csv").exists()
    assert (
        "2 ok, 0 diverged (final: counted as 0 success), 0 paused (run again to continue), 0 failed" in r.stdout
        and "in 1 pack(s)" in r.stdout
    )
