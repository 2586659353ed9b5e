"""Train PiCANet on a few annotated maps: `python -m saliency.train --annotations data/annotations/reach-v3.npz`.

Seeded 80/20 split, AdamW (lr 3e-4, wd 0.005, x0.1 late in training), horizontal flips and colour
jitter (applied: see tests), deep-supervised BCE over all side outputs (targets max-pooled to each
side's size), validation F/MAE every `eval_every` epochs at the frames' own resolution, best.pt
kept on the best validation max-F minus MAE, last.pt for --resume, metrics in train.csv and
TensorBoard. Frames reach the model through data.preprocess.frames_to_tensor only. A non-finite loss
stops training with a one-line error before anything more is saved: best.pt and last.pt keep the
last good state, and no checkpoint is ever written with NaN or inf weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.cli import run_command, should_resume
from common.io import check_finite_loss, safe_torch_load
from common.precision import autocast, resolve_precision
from common.progress import progress
from common.runs import MetricLogger, device_description, exclusive_run_dir, prepare_run_dir
from data.preprocess import frames_to_tensor
from data.shards import frame_digests
from saliency.config import TrainConfig, presets_for
from saliency.data import Augment, load_annotations, split
from saliency.export import write_hub_files
from saliency.metrics import score_maps
from saliency.picanet import PiCANet
from saliency.predictor import predict_maps, resolve_device, save_checkpoint

VAL_KEYS = ("f_adaptive", "f_max", "mae", "cc")


def maps_to_tensor(maps: np.ndarray, size: int, device: torch.device | None = None) -> torch.Tensor:
    """float maps [N, H, W] in [0, 1] -> [N, 1, size, size], resized like frames (bilinear)."""
    y = torch.as_tensor(np.asarray(maps, np.float32), device=device)[:, None]  # [N, 1, H, W]
    if y.shape[-1] != size or y.shape[-2] != size:
        y = F.interpolate(y, size=(size, size), mode="bilinear", align_corners=False, antialias=size < y.shape[-1])
    return y.clamp(0, 1).contiguous()


def side_weights(n_sides: int) -> list[float]:
    """PiCANet's deep-supervision weights: 0.5 for the 1/8 cells, then 0.8, 0.8, 1 (a single output: 1)."""
    if n_sides == 1:
        return [1.0]
    return [0.5] * (n_sides - 3) + [0.8, 0.8, 1.0]


def deep_supervised_bce(sides: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Weighted BCE of every side output's logits against the target max-pooled to its size."""
    loss = target.new_zeros(())
    for w, logit in zip(side_weights(len(sides)), sides):
        t = target if logit.shape[-1] == target.shape[-1] else F.adaptive_max_pool2d(target, logit.shape[-2:])
        loss = loss + w * F.binary_cross_entropy_with_logits(logit.float(), t)
    return loss


@dataclass
class FitSpec:
    """What `fit` needs besides data and model: shared by saliency.train and saliency.distill."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    lr_decay_at: float
    eval_every: int
    seed: int
    augment: Augment
    progress: bool = True
    precision: str = "fp32"  # resolved (common/precision.py)

    @classmethod
    def of(cls, cfg: Any, precision: str) -> "FitSpec":
        """The spec of a TrainConfig or DistillConfig (they share these fields); colour jitter on brightness,
        contrast and saturation, a tenth of it on hue."""
        jitter = cfg.color_jitter
        augment = Augment(flip=cfg.flip, brightness=jitter, contrast=jitter, saturation=jitter, hue=jitter / 10)
        return cls(
            cfg.epochs,
            cfg.batch_size,
            cfg.lr,
            cfg.weight_decay,
            cfg.lr_decay_at,
            cfg.eval_every,
            cfg.seed,
            augment,
            cfg.progress,
            precision,
        )


#: flags that may differ when a run resumes: they change neither its data nor how it trains (--epochs
#: extends the run; its learning-rate schedule stays the checkpoint's)
RESUMABLE = frozenset(
    {"resume", "out", "epochs", "progress", "threads", "device", "precision", "eval_every", "allow_incomplete"}
)


def check_resume_config(path: Path, stored: dict, cfg: Any) -> None:
    """Refuse (ValueError) to continue the run of checkpoint `path`, made with config `stored`
    (`asdict` of it), under other flags than it was made with, besides RESUMABLE ones: a changed
    --lr or --frames would be recorded but not used, or would swap the data mid-run."""

    def flat(d: dict) -> dict:
        return {
            k: v
            for key, value in d.items()
            for k, v in (flat(value) if isinstance(value, dict) else {key: value}).items()
        }

    mine, theirs = flat(asdict(cfg)), flat(stored)
    diff = [k for k in mine if k not in RESUMABLE and k in theirs and theirs[k] != mine[k]]
    if diff:
        detail = "; ".join(f"--{k.replace('_', '-')}: checkpoint {theirs[k]!r} vs now {mine[k]!r}" for k in diff[:6])
        raise ValueError(
            f"--resume: {path} was made with other flags ({detail}); resume with the same flags, or "
            "start a new run in another --out"
        )


def last_checkpoint(run_dir: Path, log_name: str = "train") -> Path:
    """The resumable checkpoint `fit` keeps in `run_dir`: last.pt, or <log_name>-last.pt."""
    return Path(run_dir) / ("last.pt" if log_name == "train" else f"{log_name}-last.pt")


def _train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: tuple[torch.Tensor, torch.Tensor],
    spec: FitSpec,
    gen: torch.Generator,
    device: torch.device,
    epoch: int,
    kept: str,
) -> tuple[float, int]:
    """One pass over the training frames in a seeded order: (summed loss x samples, samples seen)."""
    x_all, y_all = data
    n = len(x_all)
    model.train()
    perm = torch.randperm(n, generator=gen)
    total, seen = 0.0, 0
    for i in range(math.ceil(n / spec.batch_size)):
        idx = perm[i * spec.batch_size : (i + 1) * spec.batch_size]
        if len(idx) < 2 and n >= 2:  # BatchNorm needs two samples: fold a lone tail sample into the next epoch
            continue
        x, y = spec.augment(x_all[idx], y_all[idx], gen)
        with autocast(spec.precision, device):
            loss = deep_supervised_bce(model(x.to(device)), y.to(device))
        check_finite_loss(float(loss.detach()), f"epoch {epoch}, batch {i + 1}", kept)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
    return total, seen


def _validate(
    model: nn.Module, val: tuple[np.ndarray, np.ndarray] | None, spec: FitSpec, device: torch.device, train_loss: float
) -> tuple[float, dict]:
    """(selection score, validation metrics): max-F minus MAE on the held-out maps, or minus the training
    loss when there are none."""
    if val is None or not len(val[0]):
        return -train_loss, {}
    model.eval()
    scores = score_maps(predict_maps(model, val[0], device=device, precision=spec.precision), val[1])
    return (scores["f_max"] if not math.isnan(scores["f_max"]) else 0.0) - scores["mae"], scores


def fit(
    model: nn.Module,
    kind: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None,
    spec: FitSpec,
    run_dir: Path,
    device: torch.device,
    best_path: Path,
    extra: dict,
    resume: bool | str = False,
    log_name: str = "train",
) -> dict:
    """Train `model` on (uint8 frames [N, H, W, 3], maps [N, H, W] in [0, 1]); keep the best
    validation checkpoint at `best_path` and a resumable `last.pt` (`<log_name>-last.pt`) in
    `run_dir`, metrics in `<log_name>.csv`; `resume` as common.cli.should_resume. Returns the best
    validation metrics."""
    size = model.cfg.input_size
    x_all = frames_to_tensor(train[0], size=size)  # [N, 3, S, S]
    y_all = maps_to_tensor(train[1], size)  # [N, 1, S, S]
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    decay_epoch = max(1, math.ceil(spec.epochs * spec.lr_decay_at))
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [decay_epoch], 0.1)
    gen = torch.Generator().manual_seed(spec.seed)
    logger = MetricLogger(run_dir, log_name)
    last_path = last_checkpoint(run_dir, log_name)
    start, best, saved = 1, {"score": -math.inf}, None
    if should_resume(resume, last_path.exists(), last_path):
        state = safe_torch_load(last_path)
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        start, best, saved = state["epoch"] + 1, state["best"], state["epoch"]
        print(f"resuming {run_dir} at epoch {start}")
    logger.truncate_after(start - 1)  # rows after the checkpoint (all of them on a fresh start) come from a killed run
    n = len(x_all)
    bar = progress(range(start, spec.epochs + 1), desc=f"train {kind}", unit="epoch", disable=not spec.progress)
    t0, seen = time.time(), 0
    for epoch in bar:
        kept = (
            f"The last good checkpoints are kept: {last_path} (epoch {saved}), {best_path} (epoch {best.get('epoch')})."
            if saved
            else "No checkpoint had been written yet."
        )
        total, count = _train_epoch(model, opt, (x_all, y_all), spec, gen, device, epoch, kept)
        seen += count
        sched.step()
        row = {
            "loss": total / n,
            "lr": opt.param_groups[0]["lr"],
            "frames_per_s": seen / max(time.time() - t0, 1e-9),
            **{f"val_{k}": "" for k in VAL_KEYS},
        }  # same CSV columns on every row
        if epoch % spec.eval_every == 0 or epoch == spec.epochs:
            score, scores = _validate(model, val, spec, device, row["loss"])
            row.update({f"val_{k}": scores[k] for k in VAL_KEYS if k in scores})
            if score > best["score"]:
                best = {"score": score, "epoch": epoch, **{k: float(v) for k, v in scores.items()}}
                write_hub_files(save_checkpoint(best_path, model, kind, epoch=epoch, val=best, **extra))
            save_checkpoint(
                last_path,
                model,
                kind,
                epoch=epoch,
                best=best,
                optimizer=opt.state_dict(),
                scheduler=sched.state_dict(),
                generator=gen.get_state(),
                **extra,
            )
            saved = epoch
        logger.log(epoch, **row)
        bar.set_postfix(
            loss=f"{row['loss']:.4f}", **({"valF": f"{row['val_f_max']:.3f}"} if row["val_f_max"] != "" else {})
        )
    logger.close()
    return best


def run(cfg: TrainConfig) -> Path:
    """Train PiCANet as configured; returns the path of best.pt."""
    cfg.validate()
    with exclusive_run_dir(cfg.out_dir):  # no other process trains into this folder meanwhile
        return _train(cfg)


def _train(cfg: TrainConfig) -> Path:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    ann = load_annotations(cfg.annotations)
    tr, va = split(len(ann), cfg.val_frac, cfg.seed)
    last = last_checkpoint(cfg.out_dir)
    resuming = should_resume(
        cfg.resume, last.exists(), last
    )  # before config.json is written: a refusal leaves no trace
    if resuming:
        check_resume_config(last, safe_torch_load(last).get("train_config", {}), cfg)
    run_dir = prepare_run_dir(cfg.out_dir, cfg, resume=cfg.resume)
    device = resolve_device(cfg.device)
    model = PiCANet(cfg.model)
    if cfg.backbone_weights:
        model.load_backbone(cfg.backbone_weights)
    extra = {
        "seen_keys": [str(k) for k in ann.keys],
        "seen_frames": frame_digests(ann.images),  # what evaluation excludes: keys repeat across collections
        "train_keys": [str(k) for k in ann.keys[tr]],
        "train_config": {k: v for k, v in asdict(cfg).items()},
        "annotations": str(cfg.annotations),
        "device": device_description(),
    }
    spec = FitSpec.of(cfg, resolve_precision(cfg.precision, device))
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"PiCANet {cfg.model.layout} at {cfg.model.input_size} px, width {cfg.model.width}: {n_params / 1e6:.2f}M parameters; "
        f"{len(tr)} train / {len(va)} val maps on {device_description()}, {spec.precision}"
    )
    best = fit(
        model,
        "picanet",
        (ann.images[tr], ann.maps[tr]),
        (ann.images[va], ann.maps[va]) if len(va) else None,
        spec,
        run_dir,
        device,
        run_dir / "best.pt",
        extra,
        resuming,
    )
    print(
        f"best validation (epoch {best.get('epoch')}): max-F {best.get('f_max', float('nan')):.4f}, "
        f"MAE {best.get('mae', float('nan')):.4f} -> {run_dir / 'best.pt'}"
    )
    return run_dir / "best.pt"


def main(argv=None) -> None:
    run_command(TrainConfig, run, argv, presets=presets_for(TrainConfig))


if __name__ == "__main__":
    main()
