"""Saliency inference speed on this machine: `python bench/saliency_speed.py [--student PATH] [--picanet PATH] [--paper]`.

Times the full SaliencyPredictor path (uint8 64x64 frames -> data.preprocess -> model -> sigmoid ->
maps at 64x64) in frames/s of wall-clock time and per CPU-second of this process, best of
`--repeats` timed passes after one warm-up. Speed does not
depend on the weights, so untrained models of the same architecture stand in when no checkpoint
is given. `--paper` adds full-width 224 px PiCANets (LLL and GGLLL, ~1 s per frame on CPU).
Prints a markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from common.runs import device_description
from saliency.picanet import PiCANet, PiCANetConfig
from saliency.predictor import SaliencyPredictor, resolve_device
from saliency.student import StudentConfig, StudentNet


def frames_per_s(predictor: SaliencyPredictor, frames: np.ndarray, repeats: int) -> tuple[float, float]:
    """(frames per wall-clock second, frames per CPU-second of this process), best of `repeats`.

    On a shared machine wall-clock speed depends on the other jobs; CPU time does much less: with
    one thread, frames per CPU-second estimates the frames/s of an idle core."""
    predictor(frames[: min(len(frames), 4)])  # warm-up
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        predictor(frames)
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return len(frames) / wall, len(frames) / cpu


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="", help="student checkpoint (default: untrained width-16 student)")
    p.add_argument("--picanet", default="", help="PiCANet checkpoint (default: untrained cpu-preset PiCANet)")
    p.add_argument("--batch", type=int, default=64, help="frames per forward pass")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=5, help="timed passes (best is reported)")
    p.add_argument("--paper", action="store_true", help="also time full-width 224 px PiCANet LLL and GGLLL")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    frames = np.random.default_rng(0).integers(0, 256, (args.batch, 64, 64, 3), dtype=np.uint8)

    def loaded(path, fallback):
        if path:
            return SaliencyPredictor.load(path, device, args.batch), path
        return SaliencyPredictor(fallback.to(device), "untrained", args.batch), "untrained"

    rows = [
        ("student", *loaded(args.student, StudentNet(StudentConfig(width=16))), args.batch),
        ("PiCANet LLL (cpu preset: 64 px, width 0.25)", *loaded(args.picanet, PiCANet(PiCANetConfig(input_size=64, width=0.25))), args.batch),
        ("PiCANet LLL full width at 64 px", *loaded("", PiCANet(PiCANetConfig(input_size=64, width=1.0))), args.batch),
    ]
    if args.paper:
        for layout in ("LLL", "GGLLL"):
            model = PiCANet(PiCANetConfig(layout=layout, input_size=224, width=1.0, batch_norm=False))
            rows.append((f"PiCANet {layout} paper (224 px, full width)", *loaded("", model), 4))
    print(f"device: {device_description()}, batch {args.batch} (224 px rows: 4), best of {args.repeats}")
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| model | weights | parameters | frames/s (wall) | ms/frame (wall) | frames per CPU-second |")
    print("|---|---|---|---|---|---|")
    results = {}
    for name, pred, weights, batch in rows:
        pred.batch_size = batch
        fps, per_cpu = frames_per_s(pred, frames[:batch], args.repeats if batch == args.batch else 1)
        n = sum(q.numel() for q in pred.model.parameters())
        results[name] = fps
        print(f"| {name} | {weights} | {n / 1e6:.2f}M | {fps:.1f} | {1000 / fps:.2f} | {per_cpu:.1f} |", flush=True)
    student, teacher = results["student"], results["PiCANet LLL (cpu preset: 64 px, width 0.25)"]
    print(f"load average after: {os.getloadavg()[0]:.1f}; student / cpu-preset PiCANet speed-up (wall): {student / teacher:.1f}x; "
          f"student target >= 500 frames/s (wall): {'met' if student >= 500 else 'missed'}")


if __name__ == "__main__":
    main()
