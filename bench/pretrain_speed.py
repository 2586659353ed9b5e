"""MultiMAE training speed: images/s of full training steps (RandomResizedCrop, forward with the in-model
ImageNet normalisation, backward, AdamW) on synthetic frames, as pretrain.train runs them.

    python bench/pretrain_speed.py                       # the paper's model (13.0M params), batch 64
    python bench/pretrain_speed.py --preset cpu --batch-size 64
    python bench/pretrain_speed.py --device cuda --batch-size 512   # bf16 autocast on GPU

Prints one markdown row per measurement and the projected time of the paper's budget
(200k frames x 200 epochs = 40M images) at the measured rate.
"""
from __future__ import annotations

import argparse
import time

import torch

from common.cli import from_stored
from common.runs import device_description
from pretrain.augment import random_resized_crop
from pretrain.config import PRESETS, PretrainConfig
from pretrain.frozen import FrozenEncoder
from pretrain.model import MultiMAE, count_parameters

PAPER_IMAGES = 200_000 * 200


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="model size to time")
    p.add_argument("--modalities", default="rgb,saliency")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--augment", default="crop", choices=["crop", "none"], help="time the crop augmentation too (the default recipe)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = from_stored(PretrainConfig, {**PRESETS[args.preset], "modalities": args.modalities})
    mcfg = cfg.model
    dev = torch.device(args.device)
    model = MultiMAE(mcfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    B, S = args.batch_size, mcfg.image_size
    g = torch.Generator().manual_seed(0)
    inputs = {"rgb": torch.rand(B, 3, S, S, generator=g).to(dev), "saliency": torch.rand(B, 1, S, S, generator=g).to(dev)}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)

    gen = torch.Generator(dev).manual_seed(0)
    batch = {m: inputs[m] for m in mcfg.modalities}

    def step() -> None:
        x = random_resized_crop(batch, (cfg.crop_scale, 1.0), generator=gen) if args.augment == "crop" else batch
        with autocast:
            loss = model(x, generator=gen)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    rate = B / dt

    frozen = FrozenEncoder(mcfg).to(dev)
    frozen.model.load_state_dict(model.encoder_state_dict())
    sal = inputs["saliency"] if "saliency" in mcfg.modalities else None
    frozen(inputs["rgb"], sal)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        frozen(inputs["rgb"], sal)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    enc_ms = (time.perf_counter() - t0) / args.steps * 1000

    hours = PAPER_IMAGES / rate / 3600
    print(f"device: {device_description() if dev.type == 'cpu' else torch.cuda.get_device_name(dev)}")
    print("| preset | modalities | params | batch | s/step | train img/s | frozen-encoder fwd ms/batch | paper budget (40M img) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.preset} | {args.modalities} | {count_parameters(model) / 1e6:.1f}M | {B} | {dt:.2f} | {rate:.1f} | {enc_ms:.0f} | {hours:.0f} h ({hours / 24:.1f} days) |")


if __name__ == "__main__":
    main()
