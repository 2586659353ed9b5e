"""The CNN trunk's layout: one grouped convolution over a pack's runs vs one channels-last convolution per run.

    python bench/conv_trunk.py [--runs 3] [--hidden 256] [--batch 128] [--rounds 5] [--threads 1]

Times a packed cnn_rgb SAC update (replay sample, the 11-layer trunk forward and backward through the
critic, AdamW; bench/profile_step.py's update step on random transitions) with `PackedConvTrunk.forward`
(per run, channels-last: rl/nets.py) and with the grouped-convolution forward it replaced (kept here as
the reference), alternating the two in each round so both see the same machine load. Prints the
per-round wall ms of each, their medians and the ratio, and checks that both give the same trunk output.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from profile_step import build_pack, fill, update_step

from common.cli import OneLineParser
from rl.nets import PackedConvTrunk

from precision_columns import load_average, machine_lines


def grouped_forward(trunk: PackedConvTrunk, x: torch.Tensor) -> torch.Tensor:
    """The trunk as one grouped convolution per layer over the runs (NCHW): [R, B, C, H, W] -> [R, B, 32, h, w]."""
    r, b = x.shape[:2]
    h = x.transpose(0, 1).reshape(b, r * x.shape[2], *x.shape[3:])  # [B, R*C, H, W]
    for i, (w, bias) in enumerate(zip(trunk.weights, trunk.biases)):
        if i:
            h = F.relu(h)
        h = F.conv2d(h, w, bias, stride=2 if i == 0 else 1, groups=r)  # [B, R*32, h', w']
    return h.view(b, r, trunk.num_filters, *h.shape[2:]).transpose(0, 1)  # [R, B, 32, h', w']


def main(argv: list[str] | None = None) -> None:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="runs per pack")
    p.add_argument("--hidden", type=int, default=256, help="SAC hidden width")
    p.add_argument("--batch", type=int, default=128, help="SAC batch size")
    p.add_argument("--rounds", type=int, default=5, help="rounds; each times one update of each layout")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    if min(args.runs, args.hidden, args.batch, args.rounds, args.threads) < 1:
        p.error("--runs, --hidden, --batch, --rounds and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    args.precision = "fp32"
    print(machine_lines())
    print(f"cnn_rgb, {args.runs} runs per pack, hidden {args.hidden}, batch {args.batch}, torch threads {args.threads}")

    x = torch.rand(args.runs, 8, 3, 64, 64)
    trunk = PackedConvTrunk(args.runs, 3)
    with torch.no_grad():
        gap = (trunk(x) - grouped_forward(trunk, x)).abs().max().item()
    print(f"max |per-run - grouped| trunk output on random frames: {gap:.2e}")

    per_run_forward = PackedConvTrunk.forward
    layouts = {"per run, channels-last": per_run_forward, "grouped, NCHW": grouped_forward}
    times: dict[str, list[float]] = {name: [] for name in layouts}
    with tempfile.TemporaryDirectory() as tmp:
        pack = build_pack("cnn_rgb", args, Path(tmp), {})
        fill(pack, 2 * args.batch)
        step = update_step(pack)
        try:
            for _ in range(args.rounds + 1):  # the first round warms both up and is not counted
                for name, forward in layouts.items():
                    PackedConvTrunk.forward = forward
                    t0 = time.perf_counter()
                    step()
                    times[name].append((time.perf_counter() - t0) * 1000)
        finally:
            PackedConvTrunk.forward = per_run_forward
    print("\n| layout | ms per packed update, rounds | median |\n|---|---|---|")
    medians = {}
    for name, ms in times.items():
        medians[name] = statistics.median(ms[1:])
        print(f"| {name} | {', '.join(f'{t:.0f}' for t in ms[1:])} | {medians[name]:.0f} |")
    ratio = medians["grouped, NCHW"] / medians["per run, channels-last"]
    print(f"\ngrouped / per-run median: {ratio:.2f}x; load average after: {load_average()}")


if __name__ == "__main__":
    main()
