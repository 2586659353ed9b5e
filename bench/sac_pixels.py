"""Pixel SAC end to end: env-steps/s per encoder, frozen-embedding replay vs re-encoding, replay bytes.

    python bench/sac_pixels.py [--steps 200] [--baseline-steps 20] [--hidden 256] [--threads 1]

Runs `rl.sac.run` on reach-v3 (64x64 corner camera, render_quality fast, one env, one update per
env step, batch 128, the given MLP width) for cnn_rgb, mmae_rgb and mmae_rgbs, and for a baseline
that stores frames and re-encodes every sampled batch (obs and next_obs) with the same frozen
MultiMAE encoder (`mmae_rgb_reencode`, registered here: the same encoder with `frozen = False`).
Only the learning phase is timed (after 200 random steps). Pretrained encoders come from
runs/mmae/<name>/encoder.pt when present; otherwise a randomly initialised encoder of the paper's
size (dim 256, depth 4: identical cost) is exported to a temp folder. mmae_rgbs gets the student
saliency model (runs/saliency/reach-v3/student.pt) when present, else the oracle; the table says which.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np
import torch

from common.cli import from_flat
from common.runs import device_description
from rl.config import SACConfig
from rl.encoders import ENCODERS, MMAEEncoder, register_encoder
from rl.replay import ReplayBuffer

RANDOM = 200


class ReencodeMMAE(MMAEEncoder):
    """The baseline: the frozen encoder's inputs go to the replay buffer and every update re-encodes them."""

    frozen = False


def reencode_factory(cfg, image_size=64, runs=1):
    return ReencodeMMAE(ENCODERS["mmae_rgb"](cfg, image_size).module, ("rgb",))


def encoder_export(name: str, tmp: Path) -> tuple[str, str]:
    """(path, description) of the frozen encoder to use for runs/mmae/<name>."""
    path = Path(f"runs/mmae/{name}/encoder.pt")
    if path.exists():
        return str(path), f"pretrained {path}"
    from pretrain.frozen import encoder_blob, identity_statistics
    from pretrain.model import ModelConfig, MultiMAE

    cfg = ModelConfig(modalities=("rgb", "saliency") if name == "rgbs" else ("rgb",))
    out = tmp / name / "encoder.pt"
    out.parent.mkdir(parents=True)
    torch.save(encoder_blob(MultiMAE(cfg, decoders=False), identity_statistics(cfg)), out)
    return str(out), "random-init paper-size encoder (no runs/mmae export yet)"


def measure(encoder: str, steps: int, hidden: int, out: Path, **kw) -> float:
    from rl.sac import run

    cfg = from_flat(
        SACConfig,
        encoder=encoder,
        hidden_dim=hidden,
        steps=RANDOM + steps,
        random_steps=RANDOM,
        log_every=steps if steps < 100 else 100,
        eval_every=0,
        eval_episodes=1,
        checkpoint_every=10**9,
        replay_size=20_000,
        out=str(out),
        **kw,
    )
    with open(run(cfg) / "metrics.csv") as f:
        wall = {int(r["step"]): float(r["wall_s"]) for r in csv.DictReader(f)}
    first = min(s for s in wall if s >= RANDOM)
    return (RANDOM + steps - first) / (wall[RANDOM + steps] - wall[first])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200, help="timed learning steps (multiple of 100)")
    p.add_argument("--baseline-steps", type=int, default=20, help="timed learning steps of the re-encoding baseline")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    register_encoder("mmae_rgb_reencode", "MMAE RGB, re-encoded in every update")(reencode_factory)
    student = Path("runs/saliency/reach-v3/student.pt")
    sal = dict(saliency="predictor", saliency_model=str(student)) if student.exists() else dict(saliency="oracle")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rgb, rgb_desc = encoder_export("rgb", Path(tmp))
        rgbs, rgbs_desc = encoder_export("rgbs", Path(tmp))
        runs = [
            ("cnn_rgb", args.steps, {}, "trained 11-layer CNN"),
            ("mmae_rgb", args.steps, dict(mmae=rgb), rgb_desc),
            ("mmae_rgbs", args.steps, dict(mmae=rgbs, **sal), f"{rgbs_desc}; saliency: {sal['saliency']}"),
            ("mmae_rgb_reencode", args.baseline_steps, dict(mmae=rgb), "baseline: frames stored, batches re-encoded"),
        ]
        for enc, steps, kw, desc in runs:
            v = measure(enc, steps, args.hidden, Path(tmp) / enc, **kw)
            rows.append((enc, v, desc))
            print(f"{enc}: {v:.2f} env-steps/s ({desc})", flush=True)
    speed = dict((r[0], r[1]) for r in rows)
    print(
        f"\ndevice: {device_description()}; reach-v3 64x64, 1 env, hidden {args.hidden}, batch 128, one update per "
        f"env step, {args.steps} timed learning steps ({args.baseline_steps} for the baseline)\n"
    )
    print("| encoder | env-steps/s | notes |\n|---|---|---|")
    for enc, v, desc in rows:
        print(f"| {enc} | {v:.2f} | {desc} |")
    print(
        f"\nmmae_rgb (embeddings in replay) vs re-encoding baseline: {speed['mmae_rgb'] / speed['mmae_rgb_reencode']:.1f}x\n"
    )
    print("| replay contents | bytes per transition | 1M transitions |\n|---|---|---|")
    specs = {
        "frames (cnn_rgb: uint8 3x64x64)": {"pixels": ((3, 64, 64), np.uint8)},
        "frames + saliency (cnn_rgbs: uint8 4x64x64)": {
            "pixels": ((3, 64, 64), np.uint8),
            "saliency": ((1, 64, 64), np.uint8),
        },
        "embedding (mmae_*: float32 x 256)": {"embedding": ((256,), np.float32)},
        "state (float32 x 39)": {"state": ((39,), np.float32)},
    }
    for name, spec in specs.items():
        b = ReplayBuffer(spec, 4, 10, 1).bytes_per_slot()
        print(f"| {name} | {b} | {b * 1e6 / 2**30:.2f} GiB |")


if __name__ == "__main__":
    main()
