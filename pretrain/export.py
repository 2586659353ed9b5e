"""Hub copies of pretrained MultiMAE encoders: encoder.safetensors + a model card beside encoder.pt.

    python -m pretrain.export runs/mmae/rgbs                      # every encoder.pt below (per-task folders too)
    python -m pretrain.export runs/mmae/rgbs/reach-v3/encoder.pt

Pretraining writes both whenever it writes encoder.pt and a probe refreshes the card; this command
(re)exports runs made before, or copied elsewhere. The card (README.md, Hugging Face style front
matter) says what data the encoder saw (shard folders, frames, task, render settings from the
folders' manifests when they are still there), its architecture and budget, the probe numbers
(probe_*.json beside it) and how to load it. `FrozenEncoder.load` reads either file and gives
identical features; non-finite weights are refused as for encoder.pt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.cli import option, run_command
from common.hub import export_each, markdown_table, model_card, write_card, write_safetensors
from common.io import safe_torch_load
from data.shards import ShardError, read_manifest
from pretrain.frozen import ENCODER_FORMAT, encoder_safetensors
from pretrain.model import POOLS
from pretrain.probe_table import markdown_table as probe_table

#: manifest fields (data.collect's settings) that say how the frames were rendered
RENDER_KEYS = ("camera", "image_size", "render_quality", "episode_steps")
#: config.json fields (pretrain.config) that say how the encoder was trained
TRAIN_KEYS = (
    "preset",
    "epochs",
    "batch_size",
    "lr",
    "warmup_epochs",
    "weight_decay",
    "num_visible",
    "augment",
    "crop_scale",
    "input_norm",
    "saliency",
    "seed",
)


@dataclass
class ExportConfig:
    """Write encoder.safetensors and a model card (README.md) beside every encoder.pt of a run
    (`python -m pretrain.export PATH` is short for --path PATH)."""

    path: str = option(
        "runs/mmae/rgbs", "encoder.pt, or a folder searched recursively for encoder.pt files", positional=True
    )


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _manifest(folder: str) -> dict[str, Any]:
    try:
        return read_manifest(folder)
    except ShardError:  # moved or deleted since: the card says so
        return {}


def _task(source: dict[str, Any], manifest: dict[str, Any]) -> str:
    """A data.json folder entry's task (older entries lack it: the manifest's, else the folder's name)."""
    return source.get("task") or manifest.get("task") or Path(source["folder"]).name


def _stats_label(key: str) -> str:
    """A feature-statistics key ("rgb,saliency|grid2", or a bare "rgb" of older exports = mean) -> "rgb+saliency grid2"."""
    inputs, _, pool = key.partition("|")
    return f"{inputs.replace(',', '+')} {pool or 'mean'}"


def raw_feature_spread(stats: dict[str, torch.Tensor]) -> str:
    """How much a raw pooled feature changes from frame to frame, from its stored statistics: RL's
    `--mmae-features raw` hands the critic these numbers as they are, `standardized` at unit spread."""
    mean, std = stats["mean"].float(), stats["std"].float()  # [D], [D]
    return (
        f"frame-to-frame spread {std.norm():.3g} (per dimension: median std {std.median():.3g}) "
        f"around a mean vector of norm {mean.norm():.3g} ({std.norm() / mean.norm().clamp_min(1e-12):.1%} of it)"
    )


def encoder_card(pt_path: Path, blob: dict[str, Any]) -> str:
    """The model card of `pt_path` (its run folder's config.json, data.json and probe_*.json read when present)."""
    folder = pt_path.parent
    config, data = _json(folder / "config.json"), _json(folder / "data.json")
    modalities = list(blob["model_config"]["modalities"])
    sources = data.get("folders", [])
    manifests = {s["folder"]: _manifest(s["folder"]) for s in sources}
    tasks = sorted(
        {_task(s, manifests[s["folder"]]) for s in sources} or ({config["task"]} if config.get("task") else set())
    )
    probes = [_json(p) for p in sorted(folder.glob("probe_*.json"))]
    front = {
        "library_name": "pytorch",
        "pipeline_tag": "image-feature-extraction",
        "tags": [
            "visarl",
            "multimae",
            "masked-autoencoder",
            *(["saliency"] if "saliency" in modalities else []),
            "reinforcement-learning",
            "meta-world",
            *tasks,
        ],
        "datasets": [Path(s["folder"]).name for s in sources],
        "task": ", ".join(tasks) or "unknown",
    }
    body = [
        f"# MultiMAE encoder ({'+'.join(modalities)}), {', '.join(tasks) or 'unknown task'}",
        "",
        f"The frozen encoder of a MultiMAE pretrained for ViSaRL (visual RL guided by human saliency) on "
        f"Meta-World frames{' and saliency maps' if 'saliency' in modalities else ''}. RL reads its pooled "
        "features with no masking; the decoders are not included.",
        "",
        *_data_section(blob, data, manifests),
        *_architecture_section(blob, config),
        *_probe_section(pt_path, probes),
        *_loading_section(pt_path, blob),
    ]
    return model_card(front, "\n".join(body), probe_results(probes))


def _data_section(blob: dict[str, Any], data: dict[str, Any], manifests: dict[str, dict[str, Any]]) -> list[str]:
    """The card's "Data": frame counts, data and saliency sources, one row per shard folder."""
    sources = data.get("folders", [])
    rows = [
        [
            s["folder"],
            _task(s, manifests[s["folder"]]),
            s.get("frames", "?"),
            s.get("saliency", "?"),
            *[manifests[s["folder"]].get(k, "?") for k in RENDER_KEYS],
        ]
        for s in sources
    ]
    frames = (
        f"{data['train_frames']:,} training frames and {data['held_out_frames']:,} held-out frames (whole episodes)"
        if "train_frames" in data
        else "frame counts unknown (no data.json beside the export)"
    )
    return [
        "## Data",
        "",
        f"Pretrained on {frames} from `{blob.get('data', '?')}`, saliency source `{blob.get('saliency_source', 'none')}`. "
        "Render settings are those of each shard folder's manifest (`?`: the folder is no longer where it was).",
        "",
        markdown_table(["shard folder", "task", "frames", "saliency", *RENDER_KEYS], rows)
        if rows
        else "No data.json beside the export.",
        "",
    ]


def _architecture_section(blob: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The card's "Architecture and training": the ViT, its pooled features, the training settings."""
    mcfg = blob["model_config"]
    modalities = list(mcfg["modalities"])
    if config.get("lr") is None and "blr" in config:  # the peak lr, from MultiMAE's rule blr x batch / 256
        config = {**config, "lr": f"{config['blr'] * config['batch_size'] / 256:g} (blr {config['blr']:g})"}
    trained = ", ".join(f"{k} {config[k]}" for k in TRAIN_KEYS if k in config) or "config.json not found"
    pools = ", ".join(f"{p} {k * mcfg['dim']}-d" for p, k in POOLS.items())
    stats = sorted({_stats_label(k) for k in blob.get("feature_stats", {})})
    mean_pools = {
        _stats_label(k): v for k, v in blob.get("feature_stats", {}).items() if "|" not in k or k.endswith("|mean")
    }
    spreads = [
        f"- Raw {label} features over the frames of the stored statistics: {raw_feature_spread(mean_pools[label])}."
        for label in sorted(mean_pools)
    ]
    params = sum(t.numel() for t in blob["state_dict"].values())
    return [
        "## Architecture and training",
        "",
        f"- ViT encoder: patch {mcfg['patch_size']} on {mcfg['image_size']}x{mcfg['image_size']} inputs ({', '.join(modalities)}), "
        f"dim {mcfg['dim']}, depth {mcfg['depth']}, {mcfg['num_heads']} heads, one global token; {params / 1e6:.2f}M parameters.",
        f"- Features: {pools}; standardised per dimension with stored statistics for {', '.join(stats) or 'none (raw features)'}.",
        *spreads,
        f"- Trained {blob.get('step', '?')} steps ({blob.get('epoch', '?')} epochs): {trained}; code {blob.get('code_version', '?')}.",
        "",
    ]


def _probe_section(pt_path: Path, probes: list[dict[str, Any]]) -> list[str]:
    """The card's "Linear probe": each probe's table and warnings, or the command that probes it."""
    body = ["## Linear probe", ""]
    for probe in probes:
        body += [
            f"Inputs {'+'.join(probe['inputs'])}, {probe['fit_frames']} fit frames of {probe['fit_episodes']} episodes, "
            f"R^2 on {probe['score_frames']} frames of {probe['score_episodes']} other episodes of `{probe['data']}`:",
            "",
            probe_table(probe),
            "",
            *[f"- WARNING: {w}" for w in probe.get("warnings", [])],
            "",
        ]
    if not probes:
        body += ["Not probed yet: `python -m pretrain.probe --encoder " + str(pt_path) + "` (then re-export).", ""]
    return body


def _loading_section(pt_path: Path, blob: dict[str, Any]) -> list[str]:
    """The card's "How to load": with this project's FrozenEncoder, or from the safetensors file alone."""
    mcfg = blob["model_config"]
    modalities = list(mcfg["modalities"])
    return [
        "## How to load",
        "",
        "```python",
        "from pretrain.frozen import FrozenEncoder  # pretrain/frozen.py of the ViSaRL pipeline",
        f'enc = FrozenEncoder.load("{pt_path.with_suffix(".safetensors").name}", inputs={tuple(modalities)!r}, pool="mean")',
        f"feats = enc(rgb{', saliency' if 'saliency' in modalities else ''})  # [B, C, H, W] floats in [0, 1] -> [B, {mcfg['dim']}]",
        "```",
        "",
        "Without this code: `safetensors.torch.load_file` gives the weights under `state_dict.*` and the "
        "statistics under `feature_stats.<inputs|pool>.mean/std`; the file's metadata holds `model_config` "
        f"(JSON) and `format` `{ENCODER_FORMAT}`. In RL: `python -m rl.sac --encoder mmae_rgbs --mmae PATH`.",
    ]


def probe_results(probes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pretrained rows of probe_*.json files as model-card eval results: R^2 of each probed position."""
    results = []
    for probe in probes:
        for row in (r for r in probe.get("rows", []) if r.get("kind") == "pretrained"):
            for target, value in row["r2"].items():
                if isinstance(value, (int, float)) and value == value:  # NaN: not scored
                    results.append(
                        {
                            "task_type": "feature-extraction",
                            "task_name": "linear probe of positions",
                            "dataset_name": Path(probe["data"]).name,
                            "dataset_split": "held-out episodes",
                            "metric_type": "r_squared",
                            "metric_value": round(float(value), 4),
                            "metric_name": f"{target} R^2 ({'+'.join(probe['inputs'])}, {row['pool']} pool)",
                        }
                    )
    return results


def write_hub_files(pt_path: str | Path, blob: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """encoder.safetensors and the model card beside `pt_path` (its dict `blob` when the caller holds it). The card
    is written first: the safetensors' step (pretrain.train.exported_at) then vouches for both after a kill."""
    pt_path = Path(pt_path)
    blob = blob if blob is not None else safe_torch_load(pt_path, what="MultiMAE encoder")
    if not isinstance(blob, dict) or blob.get("format") != ENCODER_FORMAT:
        raise ValueError(f"{pt_path} is not a MultiMAE encoder export ({ENCODER_FORMAT})")
    card = write_card(pt_path.parent, encoder_card(pt_path, blob))
    return write_safetensors(pt_path.with_suffix(".safetensors"), *encoder_safetensors(blob)), card


def refresh_card(pt_path: str | Path) -> Path | None:
    """Rewrite the card of an exported encoder (after a probe); None when it has no hub copy yet."""
    pt_path = Path(pt_path)
    if not pt_path.with_suffix(".safetensors").exists():
        return None
    return write_card(pt_path.parent, encoder_card(pt_path, safe_torch_load(pt_path, what="MultiMAE encoder")))


def encoder_files(path: str | Path) -> list[Path]:
    """`path` itself when it is a file, else every encoder.pt below it."""
    path = Path(path)
    found = [path] if path.is_file() else sorted(path.glob("**/encoder.pt"))
    if not found:
        raise FileNotFoundError(
            f"no encoder.pt in {path}: pretrain first with `python -m pretrain.multimae --out {path}`"
        )
    return found


def export(cfg: ExportConfig) -> list[tuple[Path, Path]]:
    """The hub files of every checkpoint `cfg.path` names, each printed as it is written."""
    return export_each(encoder_files(cfg.path), write_hub_files)


def main(argv: list[str] | None = None) -> list[tuple[Path, Path]]:
    return run_command(ExportConfig, export, argv)


if __name__ == "__main__":
    main()
