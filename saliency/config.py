"""Configs of the saliency stage's entry points and their presets, in one place.

`PRESETS[name][entry]` holds the fields a preset sets for one entry point (train, distill, label,
evaluate, study); `--preset NAME` applies them before explicit flags, and
`from_preset(TrainConfig, "cpu", annotations=...)` does the same in code.

* micro: seconds, for CI tests of the whole pipeline (32 px PiCANet at 1/8 width).
* demo: about a minute per entry on the 2-core CPU (64 px PiCANet at 1/4 width).
* cpu: the CPU runs reported in RESULTS.md (64 px PiCANet at 1/4 width, 200 epochs, 1 thread).
* paper: the paper's budget for a GPU (224 px, full-width VGG16, 1000 epochs, batch 16).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from common.cli import RESUME_HELP, check_finite, from_flat, nested, option, resume_field, resume_mode
from common.precision import precision_field
from data.shards import ALLOW_INCOMPLETE_HELP
from saliency.picanet import PiCANetConfig

T = TypeVar("T")

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class FitOptions:
    """The training settings saliency.train and saliency.distill share (`saliency.train.FitSpec.of` reads
    them); each command adds its data, model, budget and split flags."""

    weight_decay: float = option(0.005, "AdamW weight decay")
    lr_decay_at: float = option(0.75, "fraction of the epochs after which the lr is multiplied by 0.1")
    flip: bool = option(True, "random horizontal flips of frame and map")
    color_jitter: float = option(0.3, "brightness/contrast/saturation jitter strength (0: off); hue gets a tenth")
    seed: int = option(0, "seed of split, initialisation and augmentation")
    threads: int = option(2, "torch CPU threads")
    device: str = option("auto", "auto, cpu or cuda", choices=list(DEVICES))
    precision: str = precision_field()
    progress: bool = option(True, "show a progress bar")


@dataclass
class TrainConfig(FitOptions):
    """Train PiCANet on an annotation export (.npz of frames and saliency maps)."""

    annotations: str = option(
        "data/annotations/reach-v3.npz", "annotation export (.npz: images, maps, keys, annotators)"
    )
    out: str = option("", "run folder (default: runs/saliency/<annotations file stem>)")
    model: PiCANetConfig = nested(PiCANetConfig)  # --layout, --input-size, --width, --batch-norm, ...
    backbone_weights: str = option(
        "", "optional torchvision vgg16(_bn) state dict to start the encoder from (default: from scratch)"
    )
    epochs: int = option(1000, "training epochs (paper: 1000)")
    batch_size: int = option(16, "batch size (paper: 16)")
    lr: float = option(3e-4, "AdamW learning rate")
    val_frac: float = option(0.2, "share of annotated frames held out for validation (seeded split)")
    eval_every: int = option(10, "validate (and maybe save best.pt) every this many epochs")
    resume: bool | str = resume_field(RESUME_HELP + " (its last.pt)")

    def validate(self) -> "TrainConfig":
        check_finite(self)
        if self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("epochs, batch_size and eval_every must be >= 1")
        if not 0 <= self.val_frac < 1:
            raise ValueError(f"val_frac must lie in [0, 1), got {self.val_frac}")
        if self.color_jitter < 0:
            raise ValueError("color_jitter must be >= 0")
        self.resume = resume_mode(self.resume)
        if self.resume is True and self.backbone_weights:
            raise ValueError(
                "--backbone-weights has no effect with --resume (the run continues from its last.pt); drop one"
            )
        self.model.validate()
        return self

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"runs/saliency/{Path(self.annotations).stem}")


@dataclass
class DistillConfig(FitOptions):
    """Distil a trained PiCANet into the fast 64x64 student on pseudo-labelled frames."""

    teacher: str = option("runs/saliency/reach-v3/best.pt", "trained PiCANet checkpoint")
    data: str = option("data/shards/reach-v3", "shard folder whose first --frames frames the teacher labels")
    allow_incomplete: bool = option(False, ALLOW_INCOMPLETE_HELP)
    out: str = option("", "student checkpoint (default: student.pt beside the teacher)")
    frames: int = option(1500, "pseudo-labelled frames (the first ones of the folder)")
    width: int = option(16, "student width (channels of its first stage)")
    epochs: int = option(40, "training epochs over the pseudo-labelled frames")
    batch_size: int = option(64, "batch size")
    lr: float = option(3e-3, "AdamW learning rate")
    val_frac: float = option(0.1, "share of pseudo-labelled frames held out to pick the best epoch")
    eval_every: int = option(2, "validate every this many epochs")
    resume: bool | str = resume_field(
        RESUME_HELP + " (its <out stem>-last.pt beside --out); without it an existing --out is refused"
    )

    def validate(self) -> "DistillConfig":
        check_finite(self)
        self.resume = resume_mode(self.resume)
        if self.frames < 2 or self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("frames must be >= 2; epochs, batch_size and eval_every >= 1")
        if not 0 < self.val_frac < 1:
            raise ValueError(f"val_frac must lie in (0, 1), got {self.val_frac}")
        return self

    @property
    def out_path(self) -> Path:
        return Path(self.out) if self.out else Path(self.teacher).parent / "student.pt"


@dataclass
class LabelConfig:
    """Pseudo-label a shard folder: every sample gains saliency.png from a trained predictor."""

    model: str = option("runs/saliency/reach-v3/best.pt", "PiCANet or student checkpoint")
    data: str = option("data/shards/reach-v3", "source shard folder")
    allow_incomplete: bool = option(False, ALLOW_INCOMPLETE_HELP)
    out: str = option("", "labelled shard folder (default: <data>-sal)")
    batch_size: int = option(256, "frames per forward pass")
    threads: int = option(2, "torch CPU threads")
    device: str = option("auto", "auto, cpu or cuda", choices=list(DEVICES))
    precision: str = precision_field()
    progress: bool = option(True, "show a progress bar")

    def validate(self) -> "LabelConfig":
        if self.batch_size < 1 or self.threads < 1:
            raise ValueError("batch_size and threads must be >= 1")
        return self

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(str(Path(self.data)).rstrip("/") + "-sal")


@dataclass
class EvalConfig:
    """Score a predictor against oracle maps (from stored clicks) on frames it never saw; draw a Fig. 7 grid."""

    model: str = option("runs/saliency/reach-v3/best.pt", "PiCANet or student checkpoint")
    data: str = option("data/shards/reach-v3", "shard folder with oracle clicks")
    allow_incomplete: bool = option(False, ALLOW_INCOMPLETE_HELP)
    n: int = option(1000, "unseen frames to score (the last ones of the folder)")
    out: str = option("", "folder for metrics JSON and figure (default: <model dir>/eval-<data name>)")
    figure_rows: int = option(6, "frames shown in the figure")
    batch_size: int = option(256, "frames per forward pass")
    threads: int = option(2, "torch CPU threads")
    device: str = option("auto", "auto, cpu or cuda", choices=list(DEVICES))
    precision: str = precision_field()

    def validate(self) -> "EvalConfig":
        if self.n < 1 or self.figure_rows < 0:
            raise ValueError("n must be >= 1 and figure_rows >= 0")
        return self


@dataclass
class StudyConfig:
    """Table V analog: train PiCANet with 5, 10, 20, 30 oracle maps and score each on unseen frames."""

    data: str = option("data/shards/reach-v3", "shard folder (annotations drawn from its first 500 frames)")
    sizes: str = option("5,10,20,30", "comma-separated numbers of annotated maps (nested draws)")
    out: str = option("runs/saliency/study", "study folder (one run per size, results.json)")
    train_preset: str = option(
        "cpu", "saliency.train preset used for every size", choices=["micro", "demo", "cpu", "paper"]
    )
    steps: int = option(0, "optimiser steps per run (0: the preset's epochs at 30 maps), same for every size")
    n: int = option(1000, "unseen frames scored per run")
    seed: int = option(0, "seed of the frame draw and training")
    threads: int = option(2, "torch CPU threads")
    allow_incomplete: bool = option(False, ALLOW_INCOMPLETE_HELP)

    def validate(self) -> "StudyConfig":
        if not self.size_list or min(self.size_list) < 2:
            raise ValueError(f"sizes must be integers >= 2, got {self.sizes!r}")
        return self

    @property
    def size_list(self) -> list[int]:
        return [int(s) for s in self.sizes.split(",") if s.strip()]


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "micro": {
        "train": {"input_size": 32, "width": 0.125, "epochs": 2, "batch_size": 4, "eval_every": 1, "progress": False},
        "distill": {"frames": 48, "width": 8, "epochs": 2, "batch_size": 16, "eval_every": 1, "progress": False},
        "label": {"batch_size": 64, "progress": False},
        "evaluate": {"n": 40, "figure_rows": 3, "batch_size": 64},
        "study": {"sizes": "3,5", "train_preset": "micro", "n": 40},
    },
    "demo": {
        # 25 epochs and the student's 600 frames keep the whole `make demo` under 20 minutes (BENCHMARKS.md)
        "train": {"input_size": 64, "width": 0.25, "epochs": 25, "batch_size": 8, "eval_every": 5},
        "distill": {"frames": 600, "width": 16, "epochs": 4, "batch_size": 64, "eval_every": 2},
        "label": {"batch_size": 256},
        "evaluate": {"n": 500},
        "study": {"train_preset": "demo", "n": 500},
    },
    "cpu": {
        "train": {"input_size": 64, "width": 0.25, "epochs": 200, "batch_size": 8, "eval_every": 10, "threads": 1},
        "distill": {"frames": 1500, "width": 16, "epochs": 40, "batch_size": 64, "eval_every": 4},
        "label": {"batch_size": 256},
        "evaluate": {"n": 1000},
        "study": {"train_preset": "cpu", "n": 1000},
    },
    "paper": {
        "train": {"input_size": 224, "width": 1.0, "epochs": 1000, "batch_size": 16, "eval_every": 20},
        "distill": {"frames": 20000, "width": 16, "epochs": 40, "batch_size": 256, "eval_every": 4},
        "label": {"batch_size": 512},
        "evaluate": {"n": 1000},
        "study": {"train_preset": "paper", "n": 1000},
    },
}

ENTRY = {
    TrainConfig: "train",
    DistillConfig: "distill",
    LabelConfig: "label",
    EvalConfig: "evaluate",
    StudyConfig: "study",
}


def presets_for(cls: type) -> dict[str, dict[str, Any]]:
    """{preset name: fields} for one entry point's config class (for common.cli.parse_config)."""
    return {name: entries[ENTRY[cls]] for name, entries in PRESETS.items()}


def from_preset(cls: type[T], preset: str | None = None, **overrides: Any) -> T:
    """Build a config in code: defaults < preset < overrides, then validate."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    values = {**(PRESETS[preset][ENTRY[cls]] if preset else {}), **overrides}
    try:
        cfg = from_flat(cls, values)
    except TypeError as err:
        raise ValueError(str(err)) from None
    return cfg.validate() if hasattr(cfg, "validate") else cfg
