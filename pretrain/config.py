"""The one config of `python -m pretrain.multimae` and its presets (micro / demo / cpu / paper)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.cli import RESUME_HELP, check_finite, nested, option, parse_flags, resume_field, resume_mode
from common.precision import check_precision, precision_field
from data.shards import ALLOW_INCOMPLETE_HELP
from pretrain.model import ModelConfig

#: --micro-batch 0 on a CPU: passes of this many images (bench/pretrain_micro_batch.py)
CPU_MICRO_BATCH = 128


@dataclass
class PretrainConfig:
    """MultiMAE pretraining on RGB (+ saliency) frames from shard folders."""

    data: str = option(
        "data/shards",
        "a shard folder or a folder of shard folders (several tasks); a labelled folder (manifest 'labelled_from') replaces its source",
    )
    pooled: bool = option(
        False,
        "one model on the frames of every task under --data; default: one model per task (the paper), in --out/<task>/ when --data holds several tasks",
    )
    task: str = option(
        "", "train on the folders of this task only (manifest 'task'); set per run when --data holds several tasks"
    )
    model: ModelConfig = nested(ModelConfig)  # --modalities, --dim, --depth, --num-visible, ... (pretrain/model.py)
    saliency: str = option(
        "predicted",
        "saliency source: 'predicted' (saliency.png written by saliency.label) or 'oracle' (maps from the stored oracle clicks)",
        choices=["predicted", "oracle"],
    )
    out: str = option(
        "",
        "run folder (default runs/mmae/rgbs for rgb,saliency, runs/mmae/rgb for rgb); with several tasks under --data and no --pooled, one subfolder per task",
    )
    resume: bool | str = resume_field(RESUME_HELP + " (optimizer, schedule, step, RNG)")
    epochs: int = option(200, "passes over the training frames")
    batch_size: int = option(512, "global batch (split evenly across torchrun processes)")
    micro_batch: int = option(
        0,
        "images per forward/backward pass, gradients accumulated over the batch (the same update, float rounding "
        f"aside): 0 = {CPU_MICRO_BATCH} on a CPU (measured faster there: BENCHMARKS.md), "
        "the whole batch on a GPU",
    )
    blr: float = option(
        1e-4,
        "base learning rate: the peak is blr x batch-size / 256 (MultiMAE's and MAE's rule: the paper's 1e-4 at batch 512 peaks at 2e-4)",
    )
    lr: float | None = option(None, "peak learning rate (AdamW, betas 0.9/0.95); overrides --blr")
    min_lr: float = option(1e-6, "learning rate at the end of the cosine schedule")
    warmup_epochs: float = option(40, "linear warm-up epochs before the cosine decay")
    weight_decay: float = option(0.05, "AdamW weight decay (not on biases, norms, tokens, embeddings)")
    augment: str = option(
        "crop",
        "training augmentation: 'crop' (RandomResizedCrop, the paper's Table II, one box per sample shared by its modalities) or 'none'",
        choices=["crop", "none"],
    )
    crop_scale: float = option(0.2, "smallest crop area share of RandomResizedCrop (largest 1.0; MAE/MultiMAE use 0.2)")
    limit: int = option(0, "use at most this many frames per shard folder (0 = all)")
    allow_incomplete: bool = option(False, ALLOW_INCOMPLETE_HELP)
    val_fraction: float = option(0.05, "share of each folder's episodes held out for evaluation and figures")
    eval_frames: int = option(512, "held-out frames scored at the end of each epoch")
    figure_every: int = option(5, "write a reconstruction grid every this many epochs (and at the end)")
    log_every: int = option(10, "log training metrics every this many steps")
    max_steps: int = option(
        0,
        "stop (with a checkpoint, resumable) after this many steps in this invocation; 0 = run to the end. The schedule still follows --epochs",
    )
    checkpoint_minutes: float = option(
        20.0,
        "also write a checkpoint within an epoch when this many minutes passed since the last one (0 = only at "
        "epoch ends and on SIGTERM): a job killed without warning loses at most this much",
    )
    seed: int = option(0, "seed of weights, data order and masks")
    threads: int = option(0, "torch CPU threads (0 = torch default)")
    device: str = option("auto", "auto (cuda:LOCAL_RANK if available, else cpu), cpu or cuda")
    precision: str = precision_field()
    progress: bool = option(True, "show a progress bar")
    preset: str = field(default="", init=False, metadata={"help": "set by --preset (recorded in config.json)"})

    def validate(self) -> "PretrainConfig":
        check_finite(self)  # NaN/inf hyperparameters are refused here, whoever built the config
        self.resume = resume_mode(self.resume)
        check_precision(self.precision)
        self.model.validate()
        if self.epochs < 1 or self.batch_size < 1 or self.figure_every < 1 or self.log_every < 1:
            raise ValueError("--epochs, --batch-size, --figure-every and --log-every must be >= 1")
        if min(self.limit, self.eval_frames, self.max_steps, self.threads, self.micro_batch) < 0:
            raise ValueError("--limit, --eval-frames, --max-steps, --threads and --micro-batch must be >= 0")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.blr <= 0 or (self.lr is not None and self.lr <= 0) or self.min_lr < 0 or self.warmup_epochs < 0:
            raise ValueError("--blr and --lr must be > 0, --min-lr and --warmup-epochs >= 0")
        if self.augment not in ("crop", "none") or not 0 < self.crop_scale <= 1:
            raise ValueError(
                f"--augment must be 'crop' or 'none' and --crop-scale in (0, 1], got {self.augment!r}, {self.crop_scale}"
            )
        if self.saliency not in ("predicted", "oracle"):
            raise ValueError(f"--saliency must be 'predicted' or 'oracle', got {self.saliency!r}")
        return self

    @property
    def peak_lr(self) -> float:
        """--lr, else --blr scaled by the global batch (lr = blr x batch / 256)."""
        return self.lr if self.lr is not None else self.blr * self.batch_size / 256

    @property
    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        return Path("runs/mmae") / ("rgbs" if "saliency" in self.model.modalities else "rgb")


# demo and cpu keep the paper's encoder shape (the RL feature stays 256-d) with small decoders and few epochs,
# which a 2-core CPU affords (their costs: BENCHMARKS.md, MultiMAE pretraining); micro is for CI only.
# Learning rates as MultiMAE sets them, a base lr scaled by the batch: the CPU presets' base keeps the peak they
# were tuned at (5e-4 at batch 64, micro 1e-3 at 16); the paper's base 1e-4 at batch 512 peaks at 2e-4.
PRESETS: dict[str, dict] = {
    "micro": dict(
        dim=64,
        depth=1,
        num_heads=2,
        decoder_dim=64,
        decoder_depth=1,
        decoder_heads=2,
        epochs=2,
        batch_size=16,
        blr=1.6e-2,
        warmup_epochs=1,
        limit=64,
        eval_frames=16,
        figure_every=1,
        log_every=1,
        val_fraction=0.2,
    ),
    "demo": dict(
        depth=2,
        decoder_dim=128,
        decoder_depth=1,
        epochs=3,
        batch_size=64,
        blr=2e-3,
        warmup_epochs=1,
        limit=1000,
        eval_frames=128,
        figure_every=2,
        log_every=5,
        val_fraction=0.1,
    ),
    "cpu": dict(
        decoder_dim=128,
        decoder_depth=1,
        epochs=6,
        batch_size=64,
        blr=2e-3,
        warmup_epochs=1,
        limit=0,
        eval_frames=256,
        figure_every=5,
        log_every=10,
    ),
    "paper": dict(
        epochs=200,
        batch_size=512,
        blr=1e-4,
        warmup_epochs=40,
        dim=256,
        depth=4,
        num_heads=4,
        decoder_dim=256,
        decoder_depth=3,
        decoder_heads=4,
    ),
}


def parse_pretrain_flags(argv: list[str], what: str) -> PretrainConfig:
    """`argv` parsed as `python -m pretrain.multimae` will; a bad flag is a ValueError naming `what`, the flag
    that passed it through (e.g. --pretrain-extra)."""
    return parse_flags(PretrainConfig, argv, presets=PRESETS, command="python -m pretrain.multimae", what=what)
