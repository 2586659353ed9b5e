"""Distil PiCANet into the fast student: `python -m saliency.distill --teacher runs/saliency/reach-v3/best.pt --data data/shards/reach-v3`.

The teacher pseudo-labels the first `--frames` frames of the shard folder (through the same
SaliencyPredictor path RL uses); the student (native 64x64) learns those maps with BCE, flips and
colour jitter, and the epoch that agrees best with the teacher on held-out frames is kept.
The student checkpoint records every frame key it or its teacher saw, so evaluation excludes them.
The flags go to `distill-<student stem>-config.json` beside it (`--config` reruns the distillation).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from common.cli import run_command, should_resume
from common.io import OutputError, safe_torch_load
from common.precision import resolve_precision
from common.runs import device_description, exclusive_run_dir, write_config
from data.shards import frame_digests, load_arrays
from saliency.config import DistillConfig, presets_for
from saliency.data import split
from saliency.predictor import SaliencyPredictor, resolve_device
from saliency.student import StudentConfig, StudentNet
from saliency.train import FitSpec, check_resume_config, fit, last_checkpoint


def config_path(cfg: DistillConfig) -> Path:
    """Where a distillation records its flags for `--config`: `distill-<student stem>-config.json` beside the
    student (its folder is usually the teacher's run, whose config.json is saliency.train's)."""
    return cfg.out_path.parent / f"distill-{cfg.out_path.stem}-config.json"


def run(cfg: DistillConfig) -> Path:
    """Distil as configured; returns the student checkpoint's path."""
    cfg.validate()
    with exclusive_run_dir(cfg.out_path.parent):  # its logs and checkpoints go beside the student
        return _distill(cfg)


def _distill(cfg: DistillConfig) -> Path:
    out = cfg.out_path
    log_name = f"distill-{out.stem}"
    last = last_checkpoint(out.parent, log_name)
    if out.exists() and not cfg.resume:
        raise OutputError(
            f"{out} exists; refusing to overwrite a trained student (pass --resume auto to continue "
            "its training, choose another --out or delete it)"
        )
    resuming = should_resume(cfg.resume, last.exists(), last)
    if resuming:
        state = safe_torch_load(last)
        check_resume_config(last, state.get("distill_config", {}), cfg)
        if out.exists() and int(state.get("epoch", 0)) >= cfg.epochs:  # nothing left: spare labelling every frame
            print(f"{out} already finished ({state['epoch']} of {cfg.epochs} epochs): nothing to distil")
            return out
    write_config(config_path(cfg), cfg, resume=cfg.resume)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    # the teacher resolves --precision itself: under auto a PiCANet on CUDA labels in fp32 (saliency.predictor)
    teacher = SaliencyPredictor.load(cfg.teacher, device, precision=cfg.precision)
    if teacher.kind != "picanet":
        raise ValueError(f"{cfg.teacher} is a {teacher.kind} checkpoint; distil from a PiCANet (best.pt)")
    arrays = load_arrays(cfg.data, limit=cfg.frames, allow_incomplete=cfg.allow_incomplete)
    frames, keys = arrays["rgb"], np.array(arrays["keys"])
    if len(frames) < cfg.frames:
        print(f"note: {cfg.data} holds only {len(frames)} frames; distilling on all of them")
    h = frames.shape[1]
    if frames.shape[2] != h or h % 8:
        raise ValueError(f"the student needs square frames with a side divisible by 8, got {frames.shape[1:3]}")
    pseudo = teacher(frames)  # [N, H, W] float32 in [0, 1]
    tr, va = split(len(frames), cfg.val_frac, cfg.seed)
    model = StudentNet(StudentConfig(width=cfg.width, input_size=h))
    spec = FitSpec.of(cfg, precision)
    extra = {
        "seen_keys": sorted(teacher.seen_keys | {str(k) for k in keys}),
        "seen_frames": sorted(teacher.seen_frames | set(frame_digests(frames))),
        "teacher": str(cfg.teacher),
        "teacher_train_keys": list(teacher.info.get("train_keys", [])),
        "distill_config": asdict(cfg),
        "device": device_description(),
    }
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"student width {cfg.width} ({n_params / 1e3:.1f}k parameters) on {len(tr)} pseudo-labelled frames "
        f"({len(va)} held out) from {cfg.teacher}"
    )
    best = fit(
        model,
        "student",
        (frames[tr], pseudo[tr]),
        (frames[va], pseudo[va]),
        spec,
        out.parent,
        device,
        out,
        extra,
        resuming,
        log_name=log_name,
    )
    print(
        f"best agreement with the teacher (epoch {best.get('epoch')}): max-F {best.get('f_max', float('nan')):.4f}, "
        f"MAE {best.get('mae', float('nan')):.4f} -> {out}"
    )
    return out


def main(argv=None) -> None:
    run_command(DistillConfig, run, argv, presets=presets_for(DistillConfig))


if __name__ == "__main__":
    main()
