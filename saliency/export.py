"""Hub copies of saliency models: <name>.safetensors beside best.pt / student.pt, and a model card.

    python -m saliency.export runs/saliency/reach-v3             # every saliency checkpoint in it (not last.pt)
    python -m saliency.export runs/saliency/reach-v3/student.pt

Training writes both whenever it keeps a new best.pt or student.pt; this command (re)exports runs
made before. The folder's card (README.md, Hugging Face style front matter) describes every hub
copy in it: the data (annotation file and map counts for PiCANet; the pseudo-labelled shard folder,
its frame count and render settings for the student), the architecture, validation and held-out
scores (saliency.evaluate's metrics.json when present) and how to load it.
`SaliencyPredictor.load` reads either file and predicts identical maps; non-finite weights are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.cli import option, run_command
from common.hub import export_each, markdown_table, model_card, write_card, write_safetensors
from common.io import safe_torch_load
from data.shards import ShardError, read_manifest
from saliency.predictor import FORMAT, read_checkpoint

#: checkpoint entries a hub copy leaves out (weights go in as tensors; the rest only resumes training)
NOT_INFO = ("format", "kind", "model", "state_dict", "optimizer", "scheduler", "generator", "best")
#: manifest fields (data.collect's settings) that say how the frames were rendered
RENDER_KEYS = ("task", "camera", "image_size", "render_quality", "episode_steps")
SCORE_KEYS = ("f_max", "mae", "cc", "auc_judd", "nss")
TITLES = {"picanet": "PiCANet saliency predictor", "student": "student saliency predictor (distilled from PiCANet)"}


@dataclass
class ExportConfig:
    """Write <name>.safetensors beside saliency checkpoints and the folder's model card (README.md)
    (`python -m saliency.export PATH` is short for --path PATH)."""

    path: str = option(
        "runs/saliency/reach-v3",
        "a saliency checkpoint (.pt), or a folder of them (last.pt files are skipped)",
        positional=True,
    )


def checkpoint_safetensors(ckpt: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A saliency checkpoint dict -> (tensors, metadata) as `saliency.predictor.read_checkpoint` reads them."""
    info = {k: v for k, v in ckpt.items() if k not in NOT_INFO}
    return dict(ckpt["state_dict"]), {
        "format": FORMAT,
        "kind": ckpt["kind"],
        "model": json.dumps(ckpt["model"]),
        "info": json.dumps(info),
    }


def _manifest(folder: str) -> dict[str, Any]:
    try:
        return read_manifest(folder)
    except ShardError:  # moved or deleted since: the card says so
        return {}


def task_in(name: str) -> str:
    """The Meta-World task a file or folder name holds ("ann-reach-v3-30" -> "reach-v3"), else the name."""
    from data.env import TASKS  # here: importing Meta-World takes seconds

    return max((t for t in TASKS if t in name), key=len, default=name)


def _score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_section(path: Path, ckpt: dict[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
    """(Markdown lines, front-matter lists "tags"/"datasets") describing one hub copy."""
    kind, folder = ckpt["kind"], path.parent
    params = sum(t.numel() for t in ckpt["state_dict"].values())
    size = ckpt["model"].get("input_size", "?")
    lines = [
        f"## `{path.name}`: {TITLES.get(kind, kind)}",
        "",
        f"- Architecture: {kind} {json.dumps(ckpt['model'])}, {params / 1e6:.2f}M parameters, {size}x{size} input "
        "(frames are resized to it and the map back to the frames' size).",
    ]
    if kind == "student":
        distill = ckpt.get("distill_config", {})
        manifest = _manifest(distill.get("data", ""))
        task = manifest.get("task") or task_in(Path(distill.get("data", "?")).name)
        render = ", ".join(f"{k} {manifest[k]}" for k in RENDER_KEYS[1:] if k in manifest) or "manifest not found"
        lines.append(
            f"- Data: the teacher `{ckpt.get('teacher', '?')}`'s maps of the first {distill.get('frames', '?')} frames of "
            f"`{distill.get('data', '?')}` (task {task}; {render}); {distill.get('epochs', '?')} epochs."
        )
        datasets = [Path(distill.get("data", "?")).name]
    else:
        train = ckpt.get("train_config", {})
        annotations = ckpt.get("annotations") or train.get("annotations", "?")
        task = task_in(Path(annotations).stem)
        lines.append(
            f"- Data: {len(ckpt.get('seen_keys', []))} annotated maps of `{annotations}` "
            f"({len(ckpt.get('train_keys', []))} trained on, the rest for validation); {train.get('epochs', '?')} epochs, "
            f"layout {train.get('layout', '?')}, seed {train.get('seed', '?')}."
        )
        datasets = [Path(annotations).stem]
    val = ckpt.get("val", {})
    lines.append(
        f"- Kept at epoch {ckpt.get('epoch', '?')}: validation "
        + ", ".join(f"{k} {_score(val[k])}" for k in SCORE_KEYS if k in val)
        + f" ({int(val.get('n', 0))} maps); every frame key it (or its teacher) saw is in `info.seen_keys`."
    )
    evals = [json.loads(m.read_text()) for m in sorted(folder.glob("eval-*/metrics.json"))]
    evals = [e for e in evals if Path(e.get("model", "")).stem == path.stem]
    if evals:
        lines += [
            "",
            f"Held-out evaluation (`python -m saliency.evaluate`, {evals[0].get('gt', 'oracle maps')}):",
            "",
            markdown_table(
                ["data", "frames", *SCORE_KEYS],
                [
                    [
                        e.get("data", "?"),
                        e["metrics"].get("n", "?"),
                        *[_score(e["metrics"].get(k, "-")) for k in SCORE_KEYS],
                    ]
                    for e in evals
                ],
            ),
        ]
    lines += [
        "",
        "```python",
        "from saliency.predictor import SaliencyPredictor  # saliency/predictor.py of the ViSaRL pipeline",
        f'maps = SaliencyPredictor.load("{path.name}")(frames)  # uint8 [N, H, W, 3] -> float32 [N, H, W] in [0, 1]',
        "```",
        "",
    ]
    return lines, {"tags": [kind, task], "datasets": datasets}


def validation_results(path: Path, ckpt: dict[str, Any], dataset: str) -> list[dict[str, Any]]:
    """A checkpoint's validation scores (the epoch it was kept at) as model-card eval results."""
    val = ckpt.get("val", {})
    return [
        {
            "task_type": "image-segmentation",
            "task_name": "saliency prediction",
            "dataset_name": dataset,
            "dataset_split": "validation",
            "metric_type": key,
            "metric_value": round(float(val[key]), 4),
            "metric_name": f"{path.stem} {key}",
        }
        for key in SCORE_KEYS
        if isinstance(val.get(key), (int, float))
    ]


def saliency_card(folder: Path) -> str:
    """The card of every saliency hub copy (*.safetensors) in `folder`."""
    body = [
        "# Saliency predictors for ViSaRL",
        "",
        "Predict where a human looks in a 64x64 Meta-World frame (a map in [0, 1] per frame); ViSaRL feeds the "
        "map to its encoders beside the RGB frame.",
        "",
    ]
    tags, datasets, results = ["visarl", "saliency-prediction", "meta-world", "reinforcement-learning"], [], []
    for path in sorted(folder.glob("*.safetensors")):
        ckpt = read_checkpoint(path)
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
            continue
        lines, front = model_section(path, ckpt)
        results += validation_results(path, ckpt, front["datasets"][0])
        body += lines
        tags += [t for t in front["tags"] if t not in tags]
        datasets += [d for d in front["datasets"] if d not in datasets]
    body += [
        "Without this code: `safetensors.torch.load_file` gives the weights (a state dict); the file's metadata "
        f"holds `kind`, `model` (the architecture, JSON), `info` (JSON) and `format` `{FORMAT}`."
    ]
    return model_card(
        {
            "library_name": "pytorch",
            "pipeline_tag": "image-segmentation",
            "tags": tags,
            "datasets": datasets,
            "task": ", ".join(t for t in tags if t.endswith("-v3")) or "unknown",
        },
        "\n".join(body),
        results,
    )


def write_hub_files(pt_path: str | Path) -> tuple[Path, Path]:
    """<name>.safetensors beside the checkpoint `pt_path`, and the folder's card."""
    pt_path = Path(pt_path)
    ckpt = safe_torch_load(pt_path, what="saliency checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "kind" not in ckpt:
        raise ValueError(f"{pt_path} is not a saliency checkpoint ({FORMAT}); pass best.pt, student.pt or their folder")
    weights = write_safetensors(pt_path.with_suffix(".safetensors"), *checkpoint_safetensors(ckpt))
    return weights, write_card(pt_path.parent, saliency_card(pt_path.parent))


def checkpoint_files(path: str | Path) -> list[Path]:
    """`path` itself when it is a file, else its saliency checkpoints (resume states last.pt / *-last.pt left out)."""
    path = Path(path)
    found = [path] if path.is_file() else [p for p in sorted(path.glob("*.pt")) if not p.name.endswith("last.pt")]
    if not found:
        raise FileNotFoundError(f"no saliency checkpoint in {path}: train one with `python -m saliency.train`")
    return found


def export(cfg: ExportConfig) -> list[tuple[Path, Path]]:
    """The hub files of every checkpoint `cfg.path` names, each printed as it is written."""
    return export_each(checkpoint_files(cfg.path), write_hub_files)


def main(argv: list[str] | None = None) -> list[tuple[Path, Path]]:
    return run_command(ExportConfig, export, argv)


if __name__ == "__main__":
    main()
