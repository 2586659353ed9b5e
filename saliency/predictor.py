"""The one inference API: `SaliencyPredictor.load(path)(frames uint8 [N, H, W, 3]) -> float32 [N, H, W]`.

Works for PiCANet (best.pt) and the student (student.pt), and for their safetensors hub copies
(best.safetensors, student.safetensors: saliency.export): the checkpoint names its kind and holds
its architecture as a plain dict. Frames go through `data.preprocess.frames_to_tensor` (the one
preprocessing path shared with training, pseudo-labelling and RL); the sigmoid output is resized
back to the frames' H x W. In bf16 (`precision`, common/precision.py: auto picks it on a GPU or an
AMX CPU) inference runs under autocast, channels_last except PiCANet on CUDA; maps come back float32. PiCANet on
CUDA runs fp32 under `auto` (`inference_precision`: bf16 measured slower there).
`predictor.save_pretrained(folder)` / `SaliencyPredictor.from_pretrained(folder)` (huggingface_hub's mixin, local
folders) write and read model.safetensors, config.json and a model card.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.cpuinfo import AUTO_ENV
from common.hub import HubFolder, hub_mixins, markdown_table, model_card, read_safetensors, write_hub_folder
from common.io import atomic_torch_save, safe_torch_load
from common.precision import autocast, resolve_precision
from data.preprocess import frames_to_tensor
from saliency.picanet import PiCANet, PiCANetConfig
from saliency.student import StudentConfig, StudentNet

FORMAT = "visarl-saliency/1"
ModelHubMixin, _ = hub_mixins()
MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "picanet": (PiCANet, PiCANetConfig),
    "student": (StudentNet, StudentConfig),
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no GPU is available; use --device cpu")
    return device


def build_model(kind: str, config: dict[str, Any]) -> nn.Module:
    if kind not in MODELS:
        raise ValueError(f"unknown saliency model kind {kind!r}; expected one of {sorted(MODELS)}")
    model_cls, cfg_cls = MODELS[kind]
    try:
        cfg = cfg_cls(**config)
    except TypeError as err:
        raise ValueError(f"{kind} config {config} does not fit this code's {cfg_cls.__name__} ({err})") from err
    return model_cls(cfg)


def save_checkpoint(path: str | Path, model: nn.Module, kind: str, **extra: Any) -> Path:
    """Atomic save of weights + plain-dict architecture (+ extra plain values) for weights_only loading."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save(
        {"format": FORMAT, "kind": kind, "model": asdict(model.cfg), "state_dict": state, **extra}, path
    )


def read_checkpoint(path: Path) -> Any:
    """The checkpoint dict of a .pt, or of a .safetensors hub copy rebuilt into the same dict (weights as
    tensors; metadata "format", "kind", "model" and "info", the last two JSON, as saliency.export writes them)."""
    if path.suffix != ".safetensors":
        return safe_torch_load(path, what="saliency checkpoint")
    tensors, meta = read_safetensors(path, what="saliency checkpoint")
    if "model" not in meta:
        return meta
    return {
        **json.loads(meta.get("info", "{}")),
        "format": meta.get("format"),
        "kind": meta.get("kind"),
        "model": json.loads(meta["model"]),
        "state_dict": tensors,
    }


def load_checkpoint(path: str | Path, device: str | torch.device | None = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, checkpoint dict) from a saliency checkpoint; clear errors for anything else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: train one with `python -m saliency.train` (or `saliency.distill`)")
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "kind" not in ckpt:
        raise ValueError(
            f"{path} is not a saliency checkpoint (expected format {FORMAT!r} with a 'kind'); "
            "pass runs/saliency/<task>/best.pt or student.pt (or their .safetensors copies)"
        )
    model = build_model(ckpt["kind"], ckpt["model"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise ValueError(
            f"{path}: weights do not match its {ckpt['kind']} architecture {ckpt['model']} "
            f"(a checkpoint from another architecture or code version): {str(err)[:300]}"
        ) from err
    return model.to(resolve_device(device)).eval(), ckpt


def inference_precision(model: nn.Module, precision: str, device: torch.device) -> str:
    """`precision` resolved for `model` on `device`: as common.precision says, except PiCANet on CUDA under `auto`.

    There fp32 is the faster one (H200, full width, 224 px, batch 4: fp32 6.9 ms, bf16 9.1 ms, bf16 channels_last
    82 ms, one cuDNN convolution kernel taking 75 of them; BENCHMARKS.md "On a GPU"); the student gains 2.4x in bf16.
    A forced auto (VISARL_AUTO_PRECISION) is obeyed as everywhere.
    """
    if precision == "auto" and device.type == "cuda" and isinstance(model, PiCANet) and not os.environ.get(AUTO_ENV):
        return "fp32"
    return resolve_precision(precision, device)


def channels_last(model: nn.Module, precision: str, device: torch.device) -> bool:
    """Whether bf16 inference of `model` uses channels_last: on CPU (oneDNN's fast layout) and for the student,
    not for PiCANet on CUDA (cuDNN picks a ~9x slower kernel for it there, see `inference_precision`)."""
    return precision == "bf16" and not (device.type == "cuda" and isinstance(model, PiCANet))


@torch.inference_mode()
def predict_maps(
    model: nn.Module, frames, batch_size: int = 256, device: torch.device | None = None, precision: str = "auto"
) -> np.ndarray:
    """uint8 frames [N, H, W, 3] -> float32 maps [N, H, W] in [0, 1] (the final side output)."""
    frames = frames.cpu().numpy() if torch.is_tensor(frames) else np.asarray(frames)
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must be uint8 [N, H, W, 3] in [0, 255], got dtype {frames.dtype}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N, H, W, 3] RGB, got shape {frames.shape}")
    device = torch.device(device or next(model.parameters()).device)
    precision = inference_precision(model, precision, device)
    layout = torch.channels_last if channels_last(model, precision, device) else torch.contiguous_format
    size, (h, w) = model.cfg.input_size, frames.shape[1:3]
    out = np.empty((len(frames), h, w), np.float32)
    for i in range(0, len(frames), batch_size):
        x = frames_to_tensor(frames[i : i + batch_size], size=size, device=device).contiguous(memory_format=layout)
        with autocast(precision, device):
            logits = model(x)[-1].float()  # [B, 1, S, S]
        maps = torch.sigmoid(logits)
        if (h, w) != (size, size):
            maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False, antialias=size > h).clamp_(
                0, 1
            )
        out[i : i + len(x)] = maps[:, 0].cpu().numpy()
    return out


#: the metrics a checkpoint's "val" holds, in card order
VAL_KEYS = ("f_max", "mae", "cc", "auc_judd", "nss")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


class SaliencyPredictor(
    HubFolder,
    ModelHubMixin,
    library_name="visarl",
    license="mit",
    pipeline_tag="image-segmentation",
    tags=["visarl", "saliency-prediction", "meta-world"],
):
    """Batched saliency for uint8 frames; `SaliencyPredictor.load(path)` picks student or PiCANet."""

    def __init__(
        self,
        model: nn.Module,
        kind: str,
        batch_size: int = 256,
        checkpoint: dict[str, Any] | None = None,
        precision: str = "auto",
    ):
        self.model, self.kind, self.batch_size = model.eval(), kind, batch_size
        self.device = next(model.parameters()).device
        self.precision = inference_precision(self.model, precision, self.device)
        self.info = {k: v for k, v in (checkpoint or {}).items() if k not in ("state_dict", "optimizer")}
        if channels_last(self.model, self.precision, self.device):
            self.model = self.model.to(memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device | None = "auto",
        batch_size: int = 256,
        precision: str = "auto",
    ) -> "SaliencyPredictor":
        model, ckpt = load_checkpoint(path, resolve_device(device))
        return cls(model, ckpt["kind"], batch_size, ckpt, precision)

    def _save_pretrained(self, save_directory: Path) -> None:
        """model.safetensors (read like saliency.export's hub copies), config.json and README.md (huggingface_hub calls this)."""
        info = {k: v for k, v in self.info.items() if k not in ("format", "kind", "model") and _jsonable(v)}
        architecture = asdict(self.model.cfg)
        write_hub_folder(
            Path(save_directory),
            self.model.state_dict(),
            {"format": FORMAT, "kind": self.kind, "model": json.dumps(architecture), "info": json.dumps(info)},
            {"kind": self.kind, "architecture": architecture, "batch_size": self.batch_size},
            self.card(info),
        )

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        config: dict[str, Any] | None = None,
        device: str | torch.device | None = "auto",
        batch_size: int | None = None,
        **hub_kwargs: Any,
    ) -> "SaliencyPredictor":
        """The predictor of a folder `save_pretrained` wrote (its weights must fit their architecture)."""
        return cls.load(
            Path(model_id) / "model.safetensors", device, batch_size or int((config or {}).get("batch_size", 256))
        )

    def card(self, info: dict[str, Any]) -> str:
        """The model card of a `save_pretrained` folder: architecture, validation scores (also as eval results), usage."""
        val = info.get("val", {})
        scores = {k: float(val[k]) for k in VAL_KEYS if isinstance(val.get(k), (int, float))}
        data = info.get("annotations") or info.get("distill_config", {}).get("data") or "unknown"
        body = "\n".join(
            [
                f"# {self.kind} saliency predictor for ViSaRL",
                "",
                "Predicts where a human looks in a Meta-World frame (a map in [0, 1] per frame); ViSaRL feeds the map to its "
                "encoders beside the RGB frame.",
                "",
                markdown_table(
                    ["", ""],
                    [
                        ["architecture", f"{self.kind} {json.dumps(asdict(self.model.cfg))}"],
                        ["input size", f"{self.input_size} x {self.input_size} (maps are resized back to the frames)"],
                        ["data", f"`{data}`"],
                        ["kept at epoch", info.get("epoch", "?")],
                        *[[f"validation {k}", f"{v:.4f}"] for k, v in scores.items()],
                    ],
                ),
                "",
                "```python",
                "from saliency.predictor import SaliencyPredictor  # saliency/predictor.py of the ViSaRL pipeline",
                "maps = SaliencyPredictor.from_pretrained(FOLDER)(frames)  # uint8 [N, H, W, 3] -> float32 [N, H, W] in [0, 1]",
                "```",
            ]
        )
        results = [
            {
                "task_type": "image-segmentation",
                "task_name": "saliency prediction",
                "dataset_name": Path(str(data)).stem,
                "dataset_split": "validation",
                "metric_type": k,
                "metric_value": round(v, 4),
            }
            for k, v in scores.items()
        ]
        return model_card(
            {
                "library_name": "visarl",
                "pipeline_tag": "image-segmentation",
                "tags": ["visarl", "saliency-prediction", "meta-world", self.kind],
            },
            body,
            results,
        )

    @property
    def input_size(self) -> int:
        return self.model.cfg.input_size

    @property
    def seen_keys(self) -> set[str]:
        """Frame keys this model (and, for a student, its teacher) was trained or selected on."""
        return set(self.info.get("seen_keys", []))

    @property
    def seen_frames(self) -> set[str]:
        """`data.shards.frame_digests` of the frames it (or its teacher) saw; empty for a checkpoint
        written before they were recorded (evaluation then excludes by key)."""
        return set(self.info.get("seen_frames", []))

    def __call__(self, frames) -> np.ndarray:
        """uint8 [N, H, W, 3] (or one [H, W, 3]) -> float32 [N, H, W] in [0, 1]."""
        return predict_maps(self.model, frames, self.batch_size, self.device, self.precision)
