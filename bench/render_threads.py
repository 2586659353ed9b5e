"""Mesa llvmpipe's rasterizer threads: its default (one per core) against rendering on the calling thread.

    python bench/render_threads.py [--tasks reach-v3,door-open-v3] [--frames 300] [--rounds 3]

llvmpipe reads LP_NUM_THREADS once per process, so each measurement is a fresh process rendering one task's
frames (after 30 warm-up steps) at the RL path's size and quality (64 px, fast) and at the annotation app's
(512 px; default quality), with the variable unset (llvmpipe's default) or 0 (`data.gl.serial_rasterizer`, what
RL env workers and collection use). The variants alternate within each round so machine noise hits them alike;
the table gives medians of per-frame CPU time (process-wide, rasterizer threads included) and wall time, and
whether the frames are byte-identical (a hash of every frame rendered).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common.runs import device_description

REPO = Path(__file__).resolve().parents[1]
#: (quality, size, frames as a share of --frames): the RL/collection frame and the annotation app's re-render
SETTINGS = (("fast", 64, 1.0), ("default", 512, 0.1))
VARIANTS = {"llvmpipe default (a thread per core)": None, "LP_NUM_THREADS=0 (calling thread)": "0"}

MEASURE = """
import hashlib, json, sys, time
import numpy as np
from data.env import make_env
task, quality, size, frames = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
env = make_env(task=task, render_quality=quality, image_size=size)
env.reset(seed=0)
rng, digest = np.random.default_rng(0), hashlib.sha256()
for _ in range(30):
    env.step(rng.uniform(-1, 1, 4))
    digest.update(env.render().tobytes())
wall, cpu = time.perf_counter(), time.process_time()
for _ in range(frames):
    env.render()
print(json.dumps({"cpu_ms": (time.process_time() - cpu) / frames * 1e3,
                  "wall_ms": (time.perf_counter() - wall) / frames * 1e3, "sha": digest.hexdigest()}))
"""


def measure(task: str, quality: str, size: int, frames: int, threads: str | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("LP_NUM_THREADS", None)
    if threads is not None:
        env["LP_NUM_THREADS"] = threads
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, task, quality, str(size), str(frames)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="reach-v3,door-open-v3", help="comma-separated Meta-World tasks")
    p.add_argument("--frames", type=int, default=300, help="timed 64-px frames per process (512-px: a tenth)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs every variant once, alternating")
    args = p.parse_args()
    rows = []
    for task in args.tasks.split(","):
        for quality, size, share in SETTINGS:
            frames = max(10, int(args.frames * share))
            runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
            for r in range(args.rounds):
                order = list(VARIANTS.items())
                for name, threads in order if r % 2 == 0 else order[::-1]:
                    runs[name].append(measure(task, quality, size, frames, threads))
            base = statistics.median(m["cpu_ms"] for m in runs[next(iter(VARIANTS))])
            hashes = {m["sha"] for ms in runs.values() for m in ms}
            for name, ms in runs.items():
                cpu, wall = (statistics.median(m[k] for m in ms) for k in ("cpu_ms", "wall_ms"))
                rows.append(
                    f"| {task} | {size} px, {quality} | {name} | {cpu:.2f} | {wall:.2f} | {base / cpu:.2f}x | "
                    f"{'yes' if len(hashes) == 1 else 'NO'} |"
                )
    print(f"device: {device_description()}; load average before the last row: {os.getloadavg()[0]:.2f}")
    print(f"median of {args.rounds} rounds, {args.frames} timed 64-px frames (512 px: a tenth) per process")
    print("| task | frame | rasterizer | CPU ms/frame | wall ms/frame | CPU speed vs default | frames identical |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
