"""Pixel env workers: memory and start-up time when they import only the env (rl.envs.make_envs) vs
when they also import the trainer's main module, as every spawned worker did before (torch, encoders).

Run: `.venv/bin/python bench/env_workers.py [--workers 15] [--rounds 2]` (15 = one evaluation of a
pack of 3 runs at --eval-envs 5). This script imports torch, as `python -m rl.workspace` does. Both
variants run in this one process, alternating, and the table reports the median round.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import torch  # noqa: F401  (the trainer's main module imports it: the "with main" workers re-import it)

from common.runs import device_description
from data.env import EnvConfig
from rl.envs import env_thunk, make_envs


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _start(variant: str, config: EnvConfig, workers: int) -> tuple[float, float]:
    """Seconds until every worker has reset once, and the workers' mean RSS in MB."""
    t0 = time.perf_counter()
    if variant == "env only":
        envs = make_envs(config, workers, pixels=True, oracle_saliency=False, seed_bases=[0])
    else:
        fns = [env_thunk(config, True, False, 0, i, workers, 0) for i in range(workers)]
        envs = gym.vector.AsyncVectorEnv(
            fns, context="spawn", shared_memory=True, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
        )
    envs.reset()
    seconds = time.perf_counter() - t0
    rss = statistics.mean(_rss_mb(p.pid) for p in envs.processes)
    envs.close()
    return seconds, rss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--task", default="reach-v3")
    p.add_argument("--workers", type=int, default=15)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    config = EnvConfig(task=args.task)
    results: dict[str, list[tuple[float, float]]] = {"with main": [], "env only": []}
    for _ in range(args.rounds):
        for variant in results:
            results[variant].append(_start(variant, config, args.workers))
    print(f"{args.workers} pixel workers ({args.task}, 64 px), median of {args.rounds} rounds; {device_description()}")
    print("| workers import | start + first reset (s) | RSS per worker (MB) | all workers (GB) |")
    print("|---|---|---|---|")
    for variant, rows in results.items():
        seconds = statistics.median(r[0] for r in rows)
        rss = statistics.median(r[1] for r in rows)
        label = "env + trainer's main module (before)" if variant == "with main" else "env only (rl.envs.make_envs)"
        print(f"| {label} | {seconds:.1f} | {rss:.0f} | {rss * args.workers / 1024:.1f} |")


if __name__ == "__main__":
    main()
