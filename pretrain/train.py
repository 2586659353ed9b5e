"""MultiMAE pretraining loop: `python -m pretrain.multimae --data data/shards [--preset cpu]`.

Single process or torchrun (DistributedDataParallel, NCCL on GPU / gloo on CPU): every rank
decodes and trains on its own share of the shards (pretrain.data.load_split), drawing its part of
each global batch from a per-epoch permutation seeded by (seed, epoch, rank); all ranks take the
same number of steps. Masks come from a generator seeded by (seed, step, rank), so `--resume`
replays the same batches and masks.
A checkpoint is written every epoch, every --checkpoint-minutes within one (a hard kill loses at most that) and on SIGTERM; the frozen encoder is exported beside it.
Frames get a RandomResizedCrop per sample (shared by its modalities) before masking. A NaN or inf
loss stops training with a one-line error before anything more is saved: checkpoint.pt and
encoder.pt keep the last good state, and nothing with non-finite weights is ever written.
With several tasks under --data, one model is trained per task (in --out/<task>), unless --pooled.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from timm.layers import use_fused_attn
from torch.nn.parallel import DistributedDataParallel

from common.cli import flat_dict, replace_flat, run_command, should_resume
from common.hub import read_safetensors_metadata
from common.io import (
    CheckpointError,
    NonFiniteError,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    safe_torch_load,
)
from common.precision import autocast, resolve_precision
from common.progress import progress
from common.runs import (
    MetricLogger,
    code_version,
    device_description,
    exclusive_run_dir,
    on_main_thread,
    prepare_run_dir,
)
from data.shards import ShardError
from pretrain.augment import random_resized_crop
from pretrain.config import CPU_MICRO_BATCH, PRESETS, PretrainConfig
from pretrain.data import folder_frames, load_split, tasks_under
from pretrain.export import write_hub_files
from pretrain.figures import loss_curve, reconstruction_grid
from pretrain.frozen import FrozenEncoder, encoder_blob, statistics_inputs
from pretrain.model import POOLS, MultiMAE, attention_kernels, count_parameters, patchify

CHECKPOINT = "checkpoint.pt"
ENCODER = "encoder.pt"
# fields that may differ when resuming (they do not change what the checkpoint means)
RESUMABLE = {
    "resume",
    "allow_incomplete",
    "max_steps",
    "checkpoint_minutes",
    "progress",
    "threads",
    "device",
    "precision",
    "log_every",
    "figure_every",
    "eval_frames",
    "out",
    "data",
    "preset",
    "pooled",
    "micro_batch",
}


def _no_decay(name: str, p: torch.nn.Parameter) -> bool:
    return p.ndim <= 1 or name.endswith(("global_token", "mask_token", "task_emb"))


def lr_lambda(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def backward_in_passes(
    model: MultiMAE,
    ddp: DistributedDataParallel | None,
    inputs: dict[str, torch.Tensor],
    generator: torch.Generator,
    micro_batch: int,
    region: contextlib.AbstractContextManager,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward and backward of one batch in passes of `micro_batch` images (0: one pass), the gradients
    accumulated. The whole batch's masks are drawn first (the draws one pass makes) and every pass averages
    its losses over the whole batch's masked patches, so the gradient is the one pass's, up to float
    rounding; a CPU runs the smaller passes faster (BENCHMARKS.md, "Pass size"). Under
    DDP only the last pass all-reduces. Returns the batch's loss and per-output losses, detached."""
    batch = next(iter(inputs.values())).shape[0]
    visible = model.sample_masks(batch, generator, next(iter(inputs.values())).device)  # [B, M*L]
    denominators = model.masked_counts(visible)
    step = micro_batch if 0 < micro_batch < batch else batch
    starts = range(0, batch, step)
    loss, losses = torch.zeros((), device=visible.device), {}
    for start in starts:
        part = slice(start, start + step)
        last = start == starts[-1]
        with ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext():
            with region:
                part_loss, part_losses, _, _ = (ddp or model)(
                    {k: v[part] for k, v in inputs.items()}, visible=visible[part], denominators=denominators
                )
            part_loss.backward()
        loss += part_loss.detach()
        for k, v in part_losses.items():
            losses[k] = losses.get(k, 0) + v.detach()
    return loss, losses


class Trainer:
    """Owns the process group, data, model, optimizer, schedule and run folder of one pretraining run."""

    def __init__(self, cfg: PretrainConfig):
        cfg.validate()
        self.cfg = cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if cfg.batch_size % self.world:
            raise ValueError(
                f"--batch-size {cfg.batch_size} is not divisible across {self.world} processes (WORLD_SIZE); "
                f"use a multiple of {self.world}, e.g. {cfg.batch_size // self.world * self.world or self.world}"
            )
        use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        self.device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        self.is_main = self.rank == 0
        self.run_dir = cfg.run_dir
        self.model_cfg = cfg.model
        if not cfg.resume and (self.run_dir / CHECKPOINT).exists():
            raise ValueError(
                f"{self.run_dir} already holds a run; pass --resume (or --resume auto) to continue it or choose another --out"
            )
        self.resuming = should_resume(cfg.resume, (self.run_dir / CHECKPOINT).exists(), self.run_dir / CHECKPOINT)

        # data: this rank's share of the training shards in memory as uint8 (moved to the GPU when there
        # is one), the held-out frames on the main rank; every rank takes as many steps as the smallest share
        saliency = cfg.saliency if "saliency" in self.model_cfg.modalities else None
        split = load_split(
            cfg.data,
            saliency,
            cfg.val_fraction,
            cfg.seed,
            cfg.limit,
            task=cfg.task,
            allow_incomplete=cfg.allow_incomplete,
            rank=self.rank,
            world=self.world,
        )
        self.data_info, self.val_frames, self.train_total = split.info, split.val, sum(split.train_counts)
        self.local_batch = cfg.batch_size // self.world
        self.steps_per_epoch = min(split.train_counts) // self.local_batch
        if self.steps_per_epoch == 0:
            share = (
                ""
                if self.world == 1
                else f" (the smallest share of {self.world} processes holds {min(split.train_counts)})"
            )
            raise ValueError(
                f"--batch-size {cfg.batch_size} exceeds the {self.train_total} training frames in {cfg.data}{share}; "
                "lower --batch-size or collect more frames"
            )
        self.train_frames = split.train.to(self.device)
        self.total_steps = self.steps_per_epoch * cfg.epochs

        cfg.precision = resolve_precision(cfg.precision, self.device)  # config.json records what ran
        if cfg.micro_batch == 0:
            cfg.micro_batch = self.local_batch if use_cuda else min(CPU_MICRO_BATCH, self.local_batch)
        self.micro_batch = cfg.micro_batch
        self.autocast = autocast(cfg.precision, self.device)
        # the CPU's fused attention is slow in bf16 backward; matmul-softmax-matmul lets AMX run the matmuls
        # (a paper-size step: 85 -> 121 img/s, ../shared/notes/cpu.md)
        fused = use_fused_attn() and not (cfg.precision == "bf16" and self.device.type == "cpu")
        torch.manual_seed(cfg.seed)
        with attention_kernels(fused):
            self.model = MultiMAE(self.model_cfg).to(self.device)
        self.ddp = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if use_cuda else None)
            if self.world > 1
            else None
        )
        self.optimizer, self.scheduler = self._optimizer(fused=use_cuda)
        self.step = 0
        self.mask_gen = torch.Generator(self.device)
        self._stop = False
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)  # any NaN/inf loss since the last check
        self._checked_step = 0  # losses up to this step are known to be finite
        self.saved_step: int | None = None  # step of the last checkpoint written (or resumed from)
        # mean training patch per position: the trivial baseline of the held-out evaluation
        self.mean_image = self._mean_image()
        if self.resuming:
            self._load_checkpoint()

    def _optimizer(self, fused: bool) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
        """MultiMAE's AdamW (betas 0.9/0.95; no decay on biases, norms, tokens, embeddings) and its schedule:
        linear warm-up to the peak lr, then cosine to --min-lr."""
        cfg = self.cfg
        named = list(self.model.named_parameters())
        groups = [
            {"params": [p for n, p in named if not _no_decay(n, p)], "weight_decay": cfg.weight_decay},
            {"params": [p for n, p in named if _no_decay(n, p)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=cfg.peak_lr, betas=(0.9, 0.95), fused=fused or None)
        warmup = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_lambda(s, warmup, self.total_steps, cfg.min_lr / cfg.peak_lr)
        )
        return optimizer, schedule

    # -- data order ---------------------------------------------------------------------------
    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """Indices into this rank's training frames for every step of `epoch`: long [steps_per_epoch, local_batch]."""
        g = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch + 1_000_003 * self.rank)
        perm = torch.randperm(len(self.train_frames), generator=g)[: self.steps_per_epoch * self.local_batch]
        return perm.view(self.steps_per_epoch, self.local_batch)

    def _mean_image(self) -> dict[str, torch.Tensor]:
        out, n = {}, len(self.train_frames)
        for start in range(0, n, 1024):
            b = self.train_frames.batch(
                torch.arange(start, min(n, start + 1024)),
                self.model_cfg.modalities,
                self.model_cfg.image_size,
                self.device,
            )
            for m, x in b.items():
                out[m] = out.get(m, 0) + x.sum(0, keepdim=True)
        if self.world > 1:  # over every rank's share: the mean of all training frames
            for v in out.values():
                dist.all_reduce(v)
        return {m: v / self.train_total for m, v in out.items()}  # {m: [1, C, H, W]}

    # -- one step -----------------------------------------------------------------------------
    def train_step(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimizer step on this rank's indices [local_batch]; returns the (rank-local) losses, detached."""
        self.model.train()
        inputs = self.train_frames.batch(idx, self.model_cfg.modalities, self.model_cfg.image_size, self.device)
        self.mask_gen.manual_seed((self.cfg.seed * 1_000_003 + self.step) * 1009 + self.rank)
        if self.cfg.augment == "crop":  # [B, C, H, W] each, one box per sample for all its modalities
            inputs = random_resized_crop(inputs, (self.cfg.crop_scale, 1.0), generator=self.mask_gen)
        self.optimizer.zero_grad(set_to_none=True)
        loss, losses = backward_in_passes(self.model, self.ddp, inputs, self.mask_gen, self.micro_batch, self.autocast)
        self._nonfinite |= ~torch.isfinite(loss)  # no host sync here: checked on CPU now, on GPU at log steps
        if self.device.type != "cuda":
            self.check_finite()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"loss": loss, **{f"loss_{k}": v for k, v in losses.items()}}

    def check_finite(self) -> None:
        """Raise NonFiniteError if a loss since the last check was NaN/inf (nothing is saved after it)."""
        if bool(self._nonfinite):
            first = self._checked_step + 1
            where = f"step {first}" if first >= self.step else f"a step between {first} and {self.step}"
            kept = (
                f"The last good checkpoint {self.run_dir / CHECKPOINT} (step {self.saved_step}) and its "
                f"{ENCODER} are kept."
                if self.saved_step is not None
                else "No checkpoint had been written yet."
            )
            raise NonFiniteError(
                f"training diverged: the loss is not finite at {where}; stopped without saving. {kept} "
                "Lower --lr (or check the data) and run again"
            )
        self._checked_step = self.step

    # -- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Masked-patch errors on held-out frames (fixed masks) vs the trivial baselines."""
        frames = self.val_frames if len(self.val_frames) else self.train_frames
        n = min(len(frames), self.cfg.eval_frames)
        self.model.eval()
        gen = torch.Generator(self.device)
        gen.manual_seed(12345)
        L, p = self.model_cfg.grid**2, self.model_cfg.patch_size
        sums: dict[str, float] = {}
        count: dict[str, float] = {}
        for start in range(0, n, 256):
            inputs = frames.batch(
                torch.arange(start, min(n, start + 256)),
                self.model_cfg.modalities,
                self.model_cfg.image_size,
                self.device,
            )
            with self.autocast:
                _, _, preds, visible = self.model(inputs, generator=gen)
            for m_i, m in enumerate(self.model_cfg.modalities):
                target = patchify(inputs[m], p)  # [B, L, C*p*p]
                masked = ~visible[:, m_i * L : (m_i + 1) * L]  # [B, L]
                vis = (~masked).float()[..., None]
                mean_patch = patchify(self.mean_image[m], p).expand_as(target)
                visible_mean = (target * vis).sum((1, 2), keepdim=True) / (
                    vis.sum((1, 2), keepdim=True) * target.shape[-1]
                ).clamp(min=1)
                err = "mse" if m == "rgb" else "l1"
                for name, guess in (
                    ("", self.model.to_pixels(m, preds[m])),
                    ("_mean_patch", mean_patch),
                    ("_visible_mean", visible_mean.expand_as(target)),
                ):
                    d = guess - target
                    per_patch = (d.pow(2) if err == "mse" else d.abs()).mean(-1)[masked]
                    key = f"{m}_{err}{name}"
                    sums[key] = sums.get(key, 0.0) + per_patch.sum().item()
                    count[key] = count.get(key, 0.0) + per_patch.numel()
        self.model.train()
        return {k: sums[k] / count[k] for k in sums} | {"eval_frames": n, "held_out": bool(len(self.val_frames))}

    def figure(self, epoch: int) -> Path:
        frames = self.val_frames if len(self.val_frames) else self.train_frames
        idx = torch.linspace(0, len(frames) - 1, min(6, len(frames))).long()
        inputs = frames.batch(idx, self.model_cfg.modalities, self.model_cfg.image_size, self.device)
        title = f"{self.run_dir.name} epoch {epoch} step {self.step} ({'held-out' if len(self.val_frames) else 'training'} frames)"
        path = reconstruction_grid(
            self.model, inputs, self.run_dir / "figures" / f"recon_epoch{epoch:04d}.png", title=title
        )
        atomic_write_bytes(self.run_dir / "recon_latest.png", path.read_bytes())
        return path

    # -- checkpoints --------------------------------------------------------------------------
    def _identity(self) -> dict:
        return {**flag_identity(self.cfg), "steps_per_epoch": self.steps_per_epoch, "train_frames": self.train_total}

    def save_checkpoint(self) -> Path:
        self.check_finite()  # a diverged model is never saved (atomic_torch_save also refuses NaN/inf tensors)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "identity": self._identity(),
            "model_config": self.model_cfg.to_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device)
            if self.device.type == "cuda"
            else torch.zeros(0, dtype=torch.uint8),
            "code_version": code_version(),
        }
        path = atomic_torch_save(state, self.run_dir / CHECKPOINT)
        self.export_encoder()
        self.saved_step = self.step
        return path

    @torch.no_grad()
    def feature_stats(self, frames: int = 512) -> dict[str, dict[str, torch.Tensor]]:
        """Per-dimension mean/std of the frozen features over training frames, per input set and pool
        (keys "rgb,saliency|mean", ...; the mean pool also under the bare input key of older exports).

        Mean-pooled features of a static-camera scene vary little between frames (~1 % of their
        magnitude: the model card states it): FrozenEncoder standardises with these unless asked not
        to, and so do RL's mmae rows by default (`--mmae-features`).
        """
        return export_feature_stats(self.model, self.train_frames, self.model_cfg.image_size, frames)

    def export_encoder(self) -> Path:
        """Weights + config of the encoder alone (pretrain.frozen.FrozenEncoder loads it), and its hub copy
        beside it (encoder.safetensors + model card, pretrain.export)."""
        blob = encoder_blob(
            self.model,
            self.feature_stats(),
            step=self.step,
            epoch=self.step // self.steps_per_epoch,
            saliency_source=self.cfg.saliency,
            data=str(self.cfg.data),
            code_version=code_version(),
        )
        path = atomic_torch_save(blob, self.run_dir / ENCODER)
        write_hub_files(path, blob)
        return path

    def _load_checkpoint(self) -> None:
        path = self.run_dir / CHECKPOINT
        state = safe_torch_load(path, map_location=self.device)
        mine, theirs = self._identity(), state.get("identity", {})
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        if diff:
            detail = "; ".join(f"{k}: checkpoint {theirs.get(k)!r} vs now {mine.get(k)!r}" for k in diff[:6])
            raise ValueError(
                f"--resume: {path} was made with another config ({detail}); use the same flags or another --out"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = self._checked_step = int(state["step"])
        self.saved_step = self.step
        torch.set_rng_state(state["rng"].cpu())
        if self.device.type == "cuda" and state["cuda_rng"].numel():
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)

    # -- the loop -----------------------------------------------------------------------------
    def _request_stop(self, signum, frame) -> None:
        self._stop = True

    def _checkpoint_due(self, saved_at: float) -> bool:
        minutes = self.cfg.checkpoint_minutes
        return minutes > 0 and time.time() - saved_at >= minutes * 60

    def _should_stop(self, steps_here: int) -> bool:
        stop = self._stop or (self.cfg.max_steps > 0 and steps_here >= self.cfg.max_steps)
        if self.world > 1:
            flag = torch.tensor([float(stop)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        return stop

    def fit(self) -> Path:
        cfg = self.cfg
        if self.is_main:
            prepare_run_dir(self.run_dir, cfg, resume=cfg.resume, allow_existing=True)
            atomic_write_json(
                self.run_dir / "data.json",
                {
                    "folders": self.data_info,
                    "train_frames": self.train_total,
                    "held_out_frames": len(self.val_frames),
                    "total_steps": self.total_steps,  # what a status line measures progress against
                },
            )
            n_all, n_enc = (
                count_parameters(self.model),
                count_parameters(self.model) - sum(p.numel() for p in self.model.decoders.parameters()),
            )
            print(
                f"MultiMAE {','.join(self.model_cfg.modalities)} -> {','.join(self.model_cfg.outputs)}: {n_all / 1e6:.2f}M parameters "
                f"(encoder {n_enc / 1e6:.2f}M) | {self.train_total} train / {len(self.val_frames)} held-out frames | "
                f"batch {cfg.batch_size} x {self.steps_per_epoch} steps x {cfg.epochs} epochs"
                + (f" (passes of {self.micro_batch})" if self.micro_batch < self.local_batch else "")
                + f" | {self.world} process(es) on {device_description()}",
                flush=True,
            )
        train_log = MetricLogger(self.run_dir, "train") if self.is_main else None
        eval_log = MetricLogger(self.run_dir, "eval", tensorboard=False) if self.is_main else None
        if self.is_main:  # rows after the checkpoint (all of them on a fresh start) were logged by a killed run
            train_log.truncate_after(self.step)
            eval_log.truncate_after(self.step, train_log.elapsed())  # evaluations are rarer than train rows
            if self.resuming and not exported_at(self.run_dir, self.step):
                self.export_encoder()  # killed mid-export: at the last step no later checkpoint would export it
        previous = signal.signal(signal.SIGTERM, self._request_stop) if on_main_thread() else None
        bar = progress(
            total=self.total_steps,
            initial=self.step,
            disable=not (self.is_main and cfg.progress),
            unit="step",
            dynamic_ncols=True,
        )
        steps_here, t0, stopped = 0, time.time(), False
        saved_at = t0
        try:
            while self.step < self.total_steps and not stopped:
                epoch, offset = divmod(self.step, self.steps_per_epoch)
                indices = self.epoch_indices(epoch)
                for i in range(offset, self.steps_per_epoch):
                    losses = self.train_step(indices[i])
                    steps_here += 1
                    bar.update(1)
                    if self.is_main and (self.step % cfg.log_every == 0 or i == self.steps_per_epoch - 1):
                        self.check_finite()
                        metrics = {k: round(v.item(), 6) for k, v in losses.items()}
                        rate = steps_here * cfg.batch_size / (time.time() - t0)
                        train_log.log(
                            self.step,
                            epoch=epoch,
                            lr=self.optimizer.param_groups[0]["lr"],
                            img_per_s=round(rate, 2),
                            **metrics,
                        )
                        bar.set_postfix(loss=f"{metrics['loss']:.4f}", img_s=f"{rate:.0f}")
                    if self._should_stop(steps_here):
                        stopped = True
                        break
                    if self.is_main and self._checkpoint_due(saved_at) and i < self.steps_per_epoch - 1:
                        self.save_checkpoint()  # mid-epoch: resuming continues at this step (data order and masks are per step)
                        saved_at = time.time()
                if self.is_main:
                    done = self.step % self.steps_per_epoch == 0
                    if done:  # end of an epoch: score held-out frames, maybe draw
                        ep = self.step // self.steps_per_epoch
                        eval_log.log(self.step, epoch=ep, **self.evaluate())
                        if ep % cfg.figure_every == 0 or self.step == self.total_steps:
                            self.figure(ep)
                    self.save_checkpoint()
                    saved_at = time.time()
                if self.world > 1:
                    dist.barrier()
        finally:
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            for log in (train_log, eval_log):
                if log is not None:
                    log.close()
        if self.is_main:
            loss_curve(self.run_dir)
            state = (
                "stopped early (continue with --resume or --resume auto)"
                if self.step < self.total_steps
                else "finished"
            )
            print(
                f"{state} at step {self.step}/{self.total_steps}: checkpoint {self.run_dir / CHECKPOINT}, "
                f"frozen encoder {self.run_dir / ENCODER}, logs {self.run_dir}/train.csv, figures {self.run_dir}/figures",
                flush=True,
            )
        return self.run_dir


@torch.no_grad()
def export_feature_stats(model: MultiMAE, frames, image_size: int, n: int = 512) -> dict[str, dict[str, torch.Tensor]]:
    """{"<inputs>|<pool>": {"mean": [D], "std": [D]}} over `n` evenly spread frames (see Trainer.feature_stats)."""
    device = next(model.parameters()).device
    idx = torch.linspace(0, len(frames) - 1, min(n, len(frames))).long()
    out = {}
    for inputs in statistics_inputs(model.cfg):
        enc = FrozenEncoder(model.cfg, inputs).to(device)
        enc.model.load_state_dict(model.encoder_state_dict())
        feats: dict[str, list[torch.Tensor]] = {p: [] for p in POOLS}
        for chunk in idx.split(128):
            b = frames.batch(chunk, inputs, image_size, device)
            tokens = enc.tokens(b["rgb"], b.get("saliency"))  # [b, 1+M*L, E]
            for p in POOLS:
                feats[p].append(enc.model.pool(tokens, p).float())
        key = ",".join(inputs)
        for p, chunks in feats.items():
            f = torch.cat(chunks)  # [n, D]
            out[f"{key}|{p}"] = {"mean": f.mean(0).cpu(), "std": f.std(0).cpu()}
        out[key] = out[f"{key}|mean"]  # the key older loaders read
    return out


def flag_identity(cfg: PretrainConfig) -> dict:
    """The flags a checkpoint must share to be resumed: flat, as given; modalities as the flag's "rgb,saliency" (the
    form checkpoints before nested configs hold). A checkpoint adds what it measured on the data (steps_per_epoch,
    train_frames)."""
    keep = {k: v for k, v in flat_dict(cfg).items() if k not in RESUMABLE}
    keep["modalities"] = ",".join(cfg.model.modalities)
    return keep


def exported_at(run_dir: Path, step: int) -> bool:
    """encoder.pt and its hub copy (its model card, then encoder.safetensors, written after it) hold the export of
    `step`: a kill between a checkpoint and the end of its export leaves them older."""
    encoder = run_dir / ENCODER
    if not encoder.exists() or safe_torch_load(encoder, what="MultiMAE encoder").get("step") != step:
        return False
    try:
        meta = json.loads(read_safetensors_metadata(encoder.with_suffix(".safetensors")).get("meta", "{}"))
    except (CheckpointError, ValueError):
        return False
    return meta.get("step") == step


def finished_step(cfg: PretrainConfig) -> int | None:
    """The step at which the run in cfg.run_dir finished, when --resume would continue it, its checkpoint has these
    flags and reached its last step, its encoder.pt was exported at that step and --data holds the frames its
    data.json recorded (by the manifests); else None: train or resume as usual (which checks the frames themselves).
    Spares a finished run's rerun loading every frame for no step."""
    path, encoder, data = cfg.run_dir / CHECKPOINT, cfg.run_dir / ENCODER, cfg.run_dir / "data.json"
    if not (should_resume(cfg.resume, path.exists(), path) and encoder.exists() and data.exists()):
        return None
    state = safe_torch_load(path, map_location="cpu")
    theirs, mine = state.get("identity", {}), flag_identity(cfg)
    if any(theirs.get(k) != v for k, v in mine.items()) or "steps_per_epoch" not in theirs:
        return None
    step = int(state["step"])
    if step < int(theirs["steps_per_epoch"]) * cfg.epochs or not exported_at(cfg.run_dir, step):
        return None  # not at its last step, or killed between its last checkpoint and the encoder's export
    recorded = [{k: f.get(k) for k in ("folder", "frames")} for f in json.loads(data.read_text()).get("folders", [])]
    try:
        same = folder_frames(cfg.data, cfg.task, cfg.limit) == recorded
    except (ShardError, OSError, ValueError):
        same = False
    return step if same else None


def task_configs(cfg: PretrainConfig) -> list[PretrainConfig]:
    """One config per task under --data (the paper trains one MultiMAE per task), or [cfg] when pooled,
    when --task is set, or when --data holds one task."""
    if cfg.pooled or cfg.task:
        return [cfg]
    tasks = tasks_under(cfg.data)
    if len(tasks) <= 1:
        return [cfg]
    return [replace_flat(cfg, task=t, out=str(cfg.run_dir / t)) for t in tasks]


def run(cfg: PretrainConfig) -> Path:
    """Train (or resume) one model per task (or one pooled model); returns the run folder of the last one
    (checkpoint.pt, encoder.pt, train.csv, figures/). With several tasks the folders are --out/<task>."""
    configs = task_configs(cfg)
    if len(configs) > 1:
        print(
            f"{len(configs)} tasks under {cfg.data}: one MultiMAE each ({', '.join(c.task for c in configs)}); "
            "--pooled trains one on all",
            flush=True,
        )
    out = cfg.run_dir
    main_rank = int(os.environ.get("RANK", "0")) == 0
    for c in configs:
        # the main rank holds the folder: no other job trains into it meanwhile
        with exclusive_run_dir(c.run_dir) if main_rank else contextlib.nullcontext():
            c.validate()
            done = finished_step(c)
            if done is not None:
                if main_rank:
                    print(
                        f"{c.run_dir} already finished at step {done:,}, its last: nothing to train (frozen encoder "
                        f"{c.run_dir / ENCODER}; another --out trains anew)",
                        flush=True,
                    )
                out = c.run_dir
                continue
            trainer = Trainer(c)
            try:
                out = trainer.fit()
            finally:
                if trainer.world > 1 and dist.is_initialized():
                    dist.destroy_process_group()
    return out


def main(argv: list[str] | None = None) -> Path:
    return run_command(
        PretrainConfig,
        run,
        argv,
        presets=PRESETS,
        description="MultiMAE pretraining on RGB (+ saliency) frames (ViSaRL). "
        "Multi-GPU: torchrun --nproc-per-node N -m pretrain.multimae ...",
    )


if __name__ == "__main__":
    main()
