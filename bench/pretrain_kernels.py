"""MultiMAE training on a CPU: the attention kernel and torch.compile, side by side.

    python bench/pretrain_kernels.py                     # paper model, batch 64, 2 threads, bf16: unfused, fused, compiled
    python bench/pretrain_kernels.py --variants unfused,fused --rounds 4 --precision fp32

pretrain.train builds the model with timm's fused attention (SDPA) off for bf16 on a CPU, on for fp32, and runs it
eagerly. Each variant here is that training step (crop augmentation, forward under common.precision.autocast at
`--precision`, backward, AdamW) from the same initial weights: `unfused` with matmul-softmax-matmul attention,
`fused` with SDPA attention, `compiled` the unfused model under torch.compile (its compile time, printed, is not
timed). Rounds alternate the order
(ABBA) so the machine's load drifts over every variant alike; the median img/s of each is printed with its
speed relative to the Trainer's variant (`unfused` in bf16, `fused` in fp32, as timm's setting allows), the load
average before and after.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import timm.layers
import torch

from common.cli import OneLineParser, from_stored
from common.precision import autocast
from pretrain.augment import random_resized_crop
from pretrain.config import PRESETS, PretrainConfig
from pretrain.model import MultiMAE

from precision_columns import load_average, machine_lines

VARIANTS = ("unfused", "fused", "compiled")


def training_step(
    cfg: PretrainConfig, batch: dict[str, torch.Tensor], variant: str, precision: str
) -> Callable[[], float]:
    """One training step at `precision` of a fresh model (seed 0) built as `variant` says; returns the loss."""
    fused = timm.layers.use_fused_attn()
    timm.layers.set_fused_attn(variant == "fused")
    try:
        torch.manual_seed(0)
        model = MultiMAE(cfg.model)
    finally:
        timm.layers.set_fused_attn(fused)
    forward = torch.compile(model) if variant == "compiled" else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    region = autocast(precision, torch.device("cpu"))

    def step() -> float:
        inputs = random_resized_crop(batch, (cfg.crop_scale, 1.0), generator=generator)
        with region:
            loss = forward(inputs, generator=generator)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def main(argv: list[str] | None = None) -> None:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="model size to time")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant and round (after 3 warm-up steps)")
    p.add_argument("--rounds", type=int, default=4, help="rounds; the order of the variants alternates")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"], help="the training step's precision")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        p.error(f"--variants {args.variants!r}: choose from {', '.join(VARIANTS)} (e.g. --variants unfused,fused)")
    torch.set_num_threads(args.threads)
    cfg = from_stored(PretrainConfig, {**PRESETS[args.preset], "modalities": "rgb,saliency"})
    size, g = cfg.model.image_size, torch.Generator().manual_seed(0)
    batch = {
        "rgb": torch.rand(args.batch_size, 3, size, size, generator=g),
        "saliency": torch.rand(args.batch_size, 1, size, size, generator=g),
    }
    print(machine_lines(), flush=True)
    steps = {v: training_step(cfg, batch, v, args.precision) for v in variants}
    for v, step in steps.items():  # warm-up (and compilation)
        t0 = time.perf_counter()
        losses = [round(step(), 4) for _ in range(3)]
        print(f"{v}: warm-up losses {losses} in {time.perf_counter() - t0:.0f} s", flush=True)
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    for rnd in range(args.rounds):
        for v in variants if rnd % 2 == 0 else variants[::-1]:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                steps[v]()
            seconds[v].append((time.perf_counter() - t0) / args.steps)
            print(f"round {rnd} {v}: {args.batch_size / seconds[v][-1]:.1f} img/s", flush=True)
    print(f"load average after (1, 5, 15 min): {load_average()}")
    rate = {v: args.batch_size / statistics.median(s) for v, s in seconds.items()}
    # pretrain.train's choice on a CPU (timm's setting, TIMM_FUSED_ATTN, can turn fused attention off everywhere)
    trainers = "fused" if timm.layers.use_fused_attn() and args.precision != "bf16" else "unfused"
    base = rate.get(trainers)
    print(
        f"\n{args.preset} preset, batch {args.batch_size}, {args.precision}, {args.threads} threads; median of "
        f"{args.rounds} rounds\n"
    )
    print(f"| variant | train img/s | speed vs {trainers} (the Trainer's) |\n|---|---|---|")
    for v, r in rate.items():
        print(f"| {v} | {r:.1f} | {f'{r / base:.2f}x' if base else '-'} |")


if __name__ == "__main__":
    main()
