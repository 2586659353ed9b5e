"""MultiMAE training speed, fp32 and bf16 side by side: images/s of full training steps
(RandomResizedCrop, forward with the in-model ImageNet normalisation, backward, AdamW) on synthetic
frames, as pretrain.train runs them, and the frozen encoder's forward as rl runs it.

    python bench/pretrain_speed.py                       # the paper's model (13.0M params), batch 64, fp32 and bf16
    python bench/pretrain_speed.py --preset cpu --batch-size 64 --threads 1 --steps 2 --rounds 2
    python bench/pretrain_speed.py --device cuda --batch-size 512 --precision bf16

Each precision gets its own model as the Trainer builds it (bf16 on a CPU: timm's fused attention
off, common.precision.autocast around the forward; weights and AdamW in float32), from the same
initial weights; the precisions alternate within each round (ABBA over rounds) so machine noise hits
both alike. Prints the device, the CPU's native bf16 units, the load average before and after, and
one markdown row with each precision's rate, the bf16/fp32 speed ratio, the projected time of the
paper's budget (200k frames x 200 epochs = 40M images) and the step's GFLOP per image (forward and backward,
`torch.utils.flop_counter`: what the modalities cost against each other, whatever the machine).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import timm.layers
import torch
from torch.utils.flop_counter import FlopCounterMode

from common.cli import OneLineParser, from_stored
from common.precision import autocast
from pretrain.augment import random_resized_crop
from pretrain.config import PRESETS, PretrainConfig
from pretrain.frozen import FrozenEncoder
from pretrain.model import ModelConfig, MultiMAE, count_parameters

from precision_columns import (
    PRECISION_LIST_HELP,
    headers,
    load_average,
    machine_lines,
    parse_precisions,
    round_order,
    side_by_side,
)

PAPER_IMAGES = 200_000 * 200


def build_model(mcfg: ModelConfig, precision: str, device: torch.device) -> MultiMAE:
    """The model pretrain.train.Trainer trains at `precision` (seed 0): bf16 on a CPU reads timm's fused
    attention off at build (its bf16 backward is slow there); the global setting is restored after."""
    fused = timm.layers.use_fused_attn()
    if precision == "bf16" and device.type == "cpu":
        timm.layers.set_fused_attn(False)
    try:
        torch.manual_seed(0)
        return MultiMAE(mcfg).to(device)
    finally:
        timm.layers.set_fused_attn(fused)


def training_gflops(model: MultiMAE, batch: dict[str, torch.Tensor], generator: torch.Generator) -> float:
    """GFLOP per image of a training step's forward and backward on two images of `batch` (the optimiser's few
    element-wise FLOPs left out); the gradients it leaves are cleared."""
    with FlopCounterMode(display=False) as counter:
        model({m: v[:2] for m, v in batch.items()}, generator=generator)[0].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2 / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], n: int, device: torch.device) -> float:
    """Seconds per call of `fn` over `n` calls."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / n


def main(argv: list[str] | None = None) -> None:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="model size to time")
    p.add_argument("--modalities", default="rgb,saliency")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps per precision and round (after 2 warm-up steps)")
    p.add_argument("--rounds", type=int, default=2, help="rounds; each times every precision, the order alternating")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32,bf16", help=PRECISION_LIST_HELP)
    p.add_argument(
        "--augment",
        default="crop",
        choices=["crop", "none"],
        help="time the crop augmentation too (the default recipe)",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    try:
        precisions = parse_precisions(args.precision, dev)
    except ValueError as err:
        p.error(str(err))
    cfg = from_stored(PretrainConfig, {**PRESETS[args.preset], "modalities": args.modalities})
    mcfg = cfg.model
    B, S = args.batch_size, mcfg.image_size
    g = torch.Generator().manual_seed(0)
    inputs = {
        "rgb": torch.rand(B, 3, S, S, generator=g).to(dev),
        "saliency": torch.rand(B, 1, S, S, generator=g).to(dev),
    }
    batch = {m: inputs[m] for m in mcfg.modalities}
    sal = inputs["saliency"] if "saliency" in mcfg.modalities else None
    print(machine_lines(), flush=True)

    train_steps: dict[str, Callable[[], None]] = {}
    encoder_fwds: dict[str, Callable[[], None]] = {}
    params = 0
    for prec in precisions:
        model = build_model(mcfg, prec, dev)
        params = count_parameters(model)
        gflops = training_gflops(model, batch, torch.Generator(dev).manual_seed(0))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
        gen = torch.Generator(dev).manual_seed(0)
        region = autocast(prec, dev)

        def step(model=model, opt=opt, gen=gen, region=region) -> None:
            x = random_resized_crop(batch, (cfg.crop_scale, 1.0), generator=gen) if args.augment == "crop" else batch
            with region:
                loss = model(x, generator=gen)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        # the frozen encoder as rl builds it (timm's default attention) under the pack's autocast region
        frozen = FrozenEncoder(mcfg).to(dev)
        frozen.model.load_state_dict(model.encoder_state_dict())

        def forward(frozen=frozen, region=region) -> None:
            with region:
                frozen(inputs["rgb"], sal)

        train_steps[prec], encoder_fwds[prec] = step, forward

    for prec in precisions:  # warm-up
        timed(train_steps[prec], 2, dev)
        timed(encoder_fwds[prec], 1, dev)
    step_s: dict[str, list[float]] = {q: [] for q in precisions}
    enc_s: dict[str, list[float]] = {q: [] for q in precisions}
    for rnd in range(args.rounds):
        for prec in round_order(precisions, rnd):
            step_s[prec].append(timed(train_steps[prec], args.steps, dev))
            enc_s[prec].append(timed(encoder_fwds[prec], args.steps, dev))
            print(
                f"round {rnd} {prec}: {step_s[prec][-1]:.2f} s/step, frozen encoder {1000 * enc_s[prec][-1]:.0f} ms/batch",
                flush=True,
            )

    img_s = {q: B / statistics.median(v) for q, v in step_s.items()}
    enc_ms = {q: 1000 * statistics.median(v) for q, v in enc_s.items()}
    hours = {q: PAPER_IMAGES / r / 3600 for q, r in img_s.items()}
    device = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"torch threads {torch.get_num_threads()}"
    print(f"load average after (1, 5, 15 min): {load_average()}")
    print(f"\n{device}; median over {args.rounds} round(s) of {args.steps} steps per precision\n")
    cols = (
        ["preset", "modalities", "params", "batch"]
        + headers("train img/s", precisions)
        + headers("frozen-encoder fwd ms/batch", precisions)
        + [f"paper budget (40M img) {q}" for q in precisions]
        + ["GFLOP per image"]
    )
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    cells = (
        [args.preset, args.modalities, f"{params / 1e6:.1f}M", str(B)]
        + side_by_side(img_s, precisions)
        + side_by_side(enc_ms, precisions, "{:.0f}".format, time_like=True)
        + [f"{hours[q]:,.0f} h ({hours[q] / 24:,.1f} days)" for q in precisions]
        + [f"{gflops:.2f}"]
    )
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
