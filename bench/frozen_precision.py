"""How much bf16 moves a frozen MultiMAE's features, against how much they move from frame to frame.

    python -m data.collect --task reach-v3 --frames 600 --workers 1 --shard-size 300 --out /tmp/frames
    python -m saliency.label --model artifacts/saliency/reach-v3/student.pt --data /tmp/frames --out /tmp/frames-sal
    python bench/frozen_precision.py --data /tmp/frames-sal \
        --encoders artifacts/mmae/rgbs-cpu/encoder.pt,artifacts/mmae/rgb-cpu/encoder.pt

Each encoder embeds every frame (all tokens, mean pool, as RL's frozen rows) in fp32 and under bf16 autocast,
then standardises both with the export's statistics. Prints per encoder: the raw features' frame-to-frame
spread and the bf16 error, both relative to the features' norm; on the standardised features the rms of the
bf16 error against the rms spread over frames, that error less its mean over frames (the part that varies
from frame to frame) and the mean itself (a constant offset), and the correlation of each dimension's fp32 and
bf16 values across frames (median, 10th percentile, minimum). A frame-varying error near the spread means bf16
features are a different, noisier encoder: why RL runs frozen encoders in float32 (rl/observe.py).
"""

from __future__ import annotations

import argparse

import torch

from common.cli import OneLineParser
from pretrain.data import load_split
from pretrain.frozen import FrozenEncoder
from pretrain.probe import encode_pools


def compare(path: str, frames) -> str:
    enc = FrozenEncoder.load(path, standardize=True)
    idx = torch.arange(len(frames))
    feats = {p: encode_pools(enc, frames, idx, ["mean"], "cpu", precision=p)["mean"] for p in ("fp32", "bf16")}
    f32, b16 = feats["fp32"], feats["bf16"]  # [n, D] raw
    norm = f32.norm(dim=1).mean()
    z32, z16 = (f32 - enc.shift) / enc.scale, (b16 - enc.shift) / enc.scale  # [n, D] standardised
    spread = (z32 - z32.mean(0)).pow(2).mean().sqrt()
    error = z16 - z32
    varying = (error - error.mean(0)).pow(2).mean().sqrt()
    corr = torch.stack([torch.corrcoef(torch.stack([z32[:, d], z16[:, d]]))[0, 1] for d in range(z32.shape[1])])
    return (
        f"| {path} | {len(frames)} | {(f32 - f32.mean(0)).norm(dim=1).mean() / norm:.2e} | "
        f"{(b16 - f32).norm(dim=1).mean() / norm:.2e} | {error.pow(2).mean().sqrt() / spread:.2f} | "
        f"{varying / spread:.2f} | {error.mean(0).pow(2).mean().sqrt():.2f} | "
        f"{corr.median():.3f} / {corr.quantile(0.1):.3f} / {corr.min():.3f} |"
    )


def main() -> None:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="labelled frames (saliency.label's --out)")
    p.add_argument("--encoders", required=True, help="comma-separated encoder.pt paths (exports with statistics)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    frames = load_split(args.data, "predicted", 0.0).train
    print(
        "| encoder | frames | raw spread / norm | raw bf16 error / norm | standardised: bf16 error / spread | "
        "its frame-varying part / spread | its offset (rms, in stds) | per-dimension corr. fp32 vs bf16: median / "
        "10th pct / min |\n|---|---|---|---|---|---|---|---|"
    )
    for path in args.encoders.split(","):
        print(compare(path, frames), flush=True)


if __name__ == "__main__":
    main()
