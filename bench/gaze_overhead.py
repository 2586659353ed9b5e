"""Throughput cost of Gaze on the Prize over the CNN baseline, through the real SAC loop.

Run: `nice -n 10 .venv/bin/python bench/gaze_overhead.py [--steps 500] [--batch 32] [--rounds 2] [--torch-threads 1]`

Part 1 (end to end): `rl.sac.run` trains `cnn_rgb` and `gaze` with identical settings, interleaved
over rounds so machine noise hits both alike; env-steps/s is measured over the SAC-update phase
only (metrics.csv rows after the random-action steps; the final evaluation is excluded). Short
runs fill the return buffer only to a few thousand entries, so part 2 prices the contrastive update
at the paper's full buffer: `auxiliary_update` timed on a gaze encoder whose 100k-entry buffer is
filled with random features, divided by `gaze_update_every` and compared with the per-step time
of `cnn_rgb` from part 1.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from common.cli import from_flat
from common.runs import device_description
from rl.config import SACConfig
from rl.encoders import ENCODERS
from rl.sac import run


def sac_settings(args: argparse.Namespace) -> dict:
    return dict(
        task=args.task,
        steps=args.steps,
        random_steps=args.random_steps,
        max_episode_steps=args.episode,
        hidden_dim=args.hidden,
        batch_size=args.batch,
        replay_size=max(10_000, 2 * (args.episode + 1)),
        eval_every=0,
        eval_episodes=1,
        log_every=100,
        checkpoint_every=10**9,
        torch_threads=args.torch_threads,
        seed=0,
        device="cpu",
        gaze_update_every=args.gaze_update_every,
    )


def update_phase_rate(run_dir: Path, random_steps: int) -> float:
    """env-steps/s between the first metrics row after the random phase (+1 log) and the last row."""
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) > random_steps]
    first, last = rows[0], rows[-1]
    return (int(last["step"]) - int(first["step"])) / (float(last["wall_s"]) - float(first["wall_s"]))


def full_buffer_update_s(size: int, update_every_cfg: dict, repeats: int) -> float:
    """Seconds per contrastive update with `size` valid entries (random features, varied returns)."""
    enc = ENCODERS["gaze"](type("Cfg", (), {**update_every_cfg, "gaze_buffer_size": size}), 64)
    rng = np.random.default_rng(0)
    buf = enc.buffers[0]
    chunk = 10_000
    for start in range(0, size, chunk):
        n = min(chunk, size - start)
        buf.feats[start : start + n] = rng.random(buf.feats[start : start + n].shape, dtype=np.float32)
        buf.cell_sq[start : start + n] = np.square(buf.feats[start : start + n], dtype=np.float32).sum(1)
        buf.pooled[start : start + n] = rng.random((n, buf.pooled.shape[1]), dtype=np.float32)
        keys = rng.normal(size=(n, buf.key_dim)).astype(np.float32)
        buf.keys[start : start + n] = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    buf.returns[:size] = rng.uniform(0, 1000, size)
    buf.valid[:size] = True
    buf.written = size
    enc.auxiliary_update(0)  # warm-up
    t0 = time.perf_counter()
    for i in range(repeats):
        enc.auxiliary_update(0)
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="reach-v3")
    p.add_argument("--steps", type=int, default=500, help="env steps per run")
    p.add_argument("--random-steps", type=int, default=200)
    p.add_argument("--episode", type=int, default=100, help="max episode steps (short, so returns reach the buffer)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument(
        "--batch", type=int, default=32, help="SAC batch (the paper's 128 runs at ~0.1-0.2 steps/s on this shared CPU)"
    )
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--gaze-update-every", type=int, default=1, help="gaze_update_every of the end-to-end gaze runs")
    p.add_argument("--buffer-sizes", default="10000,100000")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.torch_threads)
    faiss.omp_set_num_threads(args.torch_threads)

    rates: dict[str, list[float]] = {"cnn_rgb": [], "gaze": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for enc in rates:
                cfg = from_flat(SACConfig, encoder=enc, out=f"{tmp}/{enc}-{r}", **sac_settings(args))
                rates[enc].append(update_phase_rate(run(cfg), args.random_steps))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"\ndevice: {device_description()}; {args.task}, 64x64, batch {args.batch}, hidden {args.hidden}, "
        f"{args.steps} steps ({args.random_steps} random), {args.episode}-step episodes, 1 env, "
        f"median of {args.rounds} interleaved rounds; gaze: contrastive update every {args.gaze_update_every} SAC "
        f"update(s), 128 anchors, k 16"
    )
    print("| encoder | env-steps/s (update phase) | per round | vs cnn_rgb |")
    print("|---|---|---|---|")
    for k, v in med.items():
        rounds = ", ".join(f"{x:.2f}" for x in rates[k])
        print(f"| {k} | {v:.2f} | {rounds} | {v / med['cnn_rgb'] - 1:+.1%} |")

    step_s = 1.0 / med["cnn_rgb"]
    print(f"\ncontrastive update at a full buffer vs one cnn_rgb env step + SAC update ({step_s * 1000:.0f} ms):")
    print("| buffer entries | anchors | update every | s per contrastive update | projected overhead |")
    print("|---|---|---|---|---|")
    for size in (int(s) for s in args.buffer_sizes.split(",")):
        for anchors in (128, 32):
            cost = full_buffer_update_s(size, {"gaze_anchors": anchors}, args.repeats)
            for every in (1, 4):
                print(f"| {size:,} | {anchors} | {every} | {cost:.3f} | {cost / every / step_s:+.1%} |")


if __name__ == "__main__":
    main()
