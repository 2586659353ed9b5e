"""Collection throughput at 64x64: default render path vs fast mode vs bare env.step, and worker scaling.

Run: `.venv/bin/python bench/collection.py [--task reach-v3] [--steps 300] [--workers 1,2]`
All variants run in this one process, interleaved over several rounds, so machine noise hits them
alike; the table reports the median round.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from common.cli import from_flat
from common.runs import device_description
from data.collect import CollectConfig, collect
from data.env import make_env


def _rate(env, steps: int, render: bool) -> float:
    env.reset(seed=0)
    action_rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for i in range(steps):
        action = action_rng.uniform(-1, 1, 4)
        if render:
            _, _, _, trunc, _ = env.step(action)
        else:
            _, _, trunc, _ = env.step_state_only(action)
        if trunc:
            env.reset()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", default="reach-v3")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", default="1,2", help="worker counts for the collection scaling rows")
    p.add_argument("--frames-per-worker", type=int, default=600)
    args = p.parse_args()

    envs = {
        "default render": (make_env(task=args.task, render_quality="default"), True),
        "fast render": (make_env(task=args.task, render_quality="fast"), True),
        "bare env.step": (make_env(task=args.task), False),
    }
    rates: dict[str, list[float]] = {k: [] for k in envs}
    for _ in range(args.rounds):
        for name, (env, render) in envs.items():
            steps = args.steps if name != "bare env.step" else args.steps * 10
            rates[name].append(_rate(env, steps // (4 if name == "default render" else 1), render))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"device: {device_description()}; task {args.task}, 64x64 corner camera, median of {args.rounds} rounds")
    print("| path | frames/s (1 core) | vs default | vs bare env.step |")
    print("|---|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:,.1f} | {v / med['default render']:.1f}x | {v / med['bare env.step']:.3f} |")

    print("\n| collection (fast, oracle clicks, PNG shards) | workers | frames/s | scaling |")
    print("|---|---|---|---|")
    base = None
    for w in [int(x) for x in args.workers.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = from_flat(
                CollectConfig,
                task=args.task,
                frames=args.frames_per_worker * w,
                shard_size=args.frames_per_worker // 2,
                workers=w,
                out=f"{tmp}/s",
            )
            t0 = time.perf_counter()
            collect(cfg, progress=False)
            fps = cfg.frames / (time.perf_counter() - t0)
        base = base or fps
        print(f"| data.collect | {w} | {fps:,.1f} | {fps / base:.2f}x |")


if __name__ == "__main__":
    main()
