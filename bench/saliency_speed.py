"""Saliency inference speed on this machine, fp32 and bf16 side by side:
`python bench/saliency_speed.py [--student PATH] [--picanet PATH] [--paper] [--precision fp32,bf16]`.

Times the full SaliencyPredictor path (uint8 64x64 frames -> data.preprocess -> model -> sigmoid ->
maps at 64x64) at each precision (SaliencyPredictor(..., precision=...): bf16 autocast, channels_last
except PiCANet on CUDA, maps back in float32) in frames/s of wall-clock time and per CPU-second of this
process, best of `--repeats` timed passes after one warm-up; the precisions alternate within each
pass (ABBA over passes) so machine noise hits both alike. Speed does not depend on the weights, so
untrained models of the same architecture stand in when no checkpoint is given. `--paper` adds
full-width 224 px PiCANets (LLL and GGLLL, ~1 s per frame on CPU). Prints the device, the CPU's
native bf16 units, the load average before and after and a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from common.cli import OneLineParser
from saliency.picanet import PiCANet, PiCANetConfig
from saliency.predictor import SaliencyPredictor, resolve_device
from saliency.student import StudentConfig, StudentNet

from precision_columns import (
    PRECISION_LIST_HELP,
    headers,
    load_average,
    machine_lines,
    parse_precisions,
    round_order,
    side_by_side,
)


def frames_per_s(
    predictors: dict[str, SaliencyPredictor], frames: np.ndarray, repeats: int
) -> dict[str, tuple[float, float]]:
    """Per precision: (frames per wall-clock second, frames per CPU-second of this process), best of `repeats`.

    On a shared machine wall-clock speed depends on the other jobs; CPU time does much less: with
    one thread, frames per CPU-second estimates the frames/s of an idle core."""
    for predictor in predictors.values():
        predictor(frames[: min(len(frames), 4)])  # warm-up
    wall = dict.fromkeys(predictors, float("inf"))
    cpu = dict.fromkeys(predictors, float("inf"))
    for rep in range(repeats):
        for prec in round_order(list(predictors), rep):
            t0, c0 = time.perf_counter(), time.process_time()
            predictors[prec](frames)
            wall[prec], cpu[prec] = min(wall[prec], time.perf_counter() - t0), min(cpu[prec], time.process_time() - c0)
    return {q: (len(frames) / wall[q], len(frames) / cpu[q]) for q in predictors}


def main(argv=None) -> None:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="", help="student checkpoint (default: untrained width-16 student)")
    p.add_argument("--picanet", default="", help="PiCANet checkpoint (default: untrained cpu-preset PiCANet)")
    p.add_argument("--batch", type=int, default=64, help="frames per forward pass")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per precision (best is reported)")
    p.add_argument("--paper", action="store_true", help="also time full-width 224 px PiCANet LLL and GGLLL")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--precision", default="fp32,bf16", help=PRECISION_LIST_HELP)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    try:
        precisions = parse_precisions(args.precision, device)
    except ValueError as err:
        p.error(str(err))
    frames = np.random.default_rng(0).integers(0, 256, (args.batch, 64, 64, 3), dtype=np.uint8)

    def loaded(path: str, fallback: torch.nn.Module, batch: int) -> tuple[dict[str, SaliencyPredictor], str]:
        """A predictor per precision (own copies: bf16 may turn its model channels_last)."""
        if path:
            return {q: SaliencyPredictor.load(path, device, batch, precision=q) for q in precisions}, path
        return {
            q: SaliencyPredictor(copy.deepcopy(fallback).to(device), "untrained", batch, precision=q)
            for q in precisions
        }, "untrained"

    rows = [
        ("student", *loaded(args.student, StudentNet(StudentConfig(width=16)), args.batch), args.batch),
        (
            "PiCANet LLL (cpu preset: 64 px, width 0.25)",
            *loaded(args.picanet, PiCANet(PiCANetConfig(input_size=64, width=0.25)), args.batch),
            args.batch,
        ),
        (
            "PiCANet LLL full width at 64 px",
            *loaded("", PiCANet(PiCANetConfig(input_size=64, width=1.0)), args.batch),
            args.batch,
        ),
    ]
    if args.paper:
        for layout in ("LLL", "GGLLL"):
            model = PiCANet(PiCANetConfig(layout=layout, input_size=224, width=1.0, batch_norm=False))
            rows.append((f"PiCANet {layout} paper (224 px, full width)", *loaded("", model, 4), 4))
    print(machine_lines())
    print(
        f"batch {args.batch} (224 px rows: 4, one pass), best of {args.repeats} passes per precision, "
        f"torch threads {args.threads}\n"
    )
    cols = (
        ["model", "weights", "parameters"]
        + headers("frames/s (wall)", precisions)
        + headers("frames per CPU-second", precisions)
    )
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    wall: dict[str, dict[str, float]] = {}
    for name, predictors, weights, batch in rows:
        speeds = frames_per_s(predictors, frames[:batch], args.repeats if batch == args.batch else 1)
        wall[name] = {q: s[0] for q, s in speeds.items()}
        n = sum(q.numel() for q in next(iter(predictors.values())).model.parameters())
        cells = (
            [name, weights, f"{n / 1e6:.2f}M"]
            + side_by_side(wall[name], precisions)
            + side_by_side({q: s[1] for q, s in speeds.items()}, precisions)
        )
        print("| " + " | ".join(cells) + " |", flush=True)
    student, teacher = wall["student"], wall["PiCANet LLL (cpu preset: 64 px, width 0.25)"]
    print(f"load average after (1, 5, 15 min): {load_average()}")
    for q in precisions:
        print(
            f"{q}: student / cpu-preset PiCANet speed-up (wall): {student[q] / teacher[q]:.1f}x; "
            f"student target >= 500 frames/s (wall): {'met' if student[q] >= 500 else 'missed'}"
        )


if __name__ == "__main__":
    main()
