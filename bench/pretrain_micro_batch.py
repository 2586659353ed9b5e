"""MultiMAE training speed by pass size: one update of --batch-size images done in passes of each
--micro-batches size (pretrain.train.backward_in_passes: the same update, gradients accumulated), side
by side, the order alternating over rounds so machine noise hits every size alike.

    python bench/pretrain_micro_batch.py                         # paper model, batch 512: passes of 512/256/128/64
    python bench/pretrain_micro_batch.py --rounds 5 --threads 1

Images/s of whole updates (crop, masks, forward, backward, AdamW) on synthetic frames, fp32 unless
--precision says otherwise. Prints the device, the load average before and after, and one markdown
row: each size's median rate and its speed against one pass of the whole batch.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common.cli import OneLineParser, from_stored
from common.precision import autocast
from pretrain.augment import random_resized_crop
from pretrain.config import PRESETS, PretrainConfig
from pretrain.model import MultiMAE
from pretrain.train import backward_in_passes

from precision_columns import load_average, machine_lines


def main(argv: list[str] | None = None) -> None:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="model size to time")
    p.add_argument("--modalities", default="rgb,saliency")
    p.add_argument("--batch-size", type=int, default=512, help="images per update")
    p.add_argument("--micro-batches", default="512,256,128,64", help="pass sizes to time, comma-separated")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each times one update per pass size")
    p.add_argument("--threads", type=int, default=2, help="torch threads (0 = default)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.micro_batches.split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or max(sizes) > args.batch_size:
        p.error(f"--micro-batches must be sizes in 1..{args.batch_size}, got {args.micro_batches!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = from_stored(PretrainConfig, {**PRESETS[args.preset], "modalities": args.modalities})
    B, S = args.batch_size, cfg.model.image_size
    g = torch.Generator().manual_seed(0)
    frames = {"rgb": torch.rand(B, 3, S, S, generator=g), "saliency": torch.rand(B, 1, S, S, generator=g)}
    frames = {m: frames[m] for m in cfg.model.modalities}
    torch.manual_seed(0)
    model = MultiMAE(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    gen, region = torch.Generator().manual_seed(0), autocast(args.precision, "cpu")
    print(machine_lines(), flush=True)

    def update(micro: int) -> float:
        start = time.perf_counter()
        batch = random_resized_crop(frames, (cfg.crop_scale, 1.0), generator=gen)
        opt.zero_grad(set_to_none=True)
        backward_in_passes(model, None, batch, gen, micro, region)
        opt.step()
        return time.perf_counter() - start

    for micro in sizes:  # warm-up
        update(micro)
    seconds: dict[int, list[float]] = {m: [] for m in sizes}
    for rnd in range(args.rounds):
        for micro in sizes if rnd % 2 == 0 else sizes[::-1]:
            seconds[micro].append(update(micro))
            print(f"round {rnd} passes of {micro}: {B / seconds[micro][-1]:.1f} img/s", flush=True)
    rate = {m: B / statistics.median(v) for m, v in seconds.items()}
    whole = rate.get(B)
    print(f"load average after (1, 5, 15 min): {load_average()}")
    print(
        f"\n{args.preset} model, batch {B}, {args.precision}, torch threads {torch.get_num_threads()}; "
        f"median over {args.rounds} round(s)\n"
    )
    print("| pass size | train img/s | speed vs one pass of the batch |\n|---|---|---|")
    for m in sizes:
        print(f"| {m} | {rate[m]:.1f} | {f'{rate[m] / whole:.2f}x' if whole else '-'} |")


if __name__ == "__main__":
    main()
