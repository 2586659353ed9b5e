"""`--config PATH` round-trips on every stage: what a stage writes, `--config` reads back as an equal config."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from common.cli import flat_dict, from_flat, parse_config
from common.io import OutputError
from common.runs import prepare_run_dir, write_config

from tiny import TINY_MMAE


def _collect(tmp: Path) -> tuple[Any, Path]:
    from data.collect import CollectConfig

    cfg = from_flat(CollectConfig, task="door-open-v3", frames=77, seed=5, episode_steps=40, out=str(tmp / "shards"))
    return cfg, prepare_run_dir(cfg.out_dir, cfg, allow_existing=True) / "config.json"  # as data.collect does


def _saliency_train(tmp: Path) -> tuple[Any, Path]:
    from saliency.config import TrainConfig

    cfg = from_flat(TrainConfig, lr=1e-3, epochs=3, width=0.25, input_size=64, flip=False, out=str(tmp / "sal"))
    return cfg, prepare_run_dir(cfg.out_dir, cfg, resume=cfg.resume) / "config.json"


def _distill(tmp: Path) -> tuple[Any, Path]:
    from saliency.config import DistillConfig
    from saliency.distill import config_path

    cfg = from_flat(DistillConfig, teacher=str(tmp / "sal" / "best.pt"), frames=300, width=8, color_jitter=0.0)
    return cfg, write_config(config_path(cfg), cfg, resume=cfg.resume)


def _label(tmp: Path) -> tuple[Any, Path]:
    from saliency.config import LabelConfig

    cfg = from_flat(LabelConfig, model=str(tmp / "student.pt"), data=str(tmp / "shards"), batch_size=32)
    return cfg, prepare_run_dir(cfg.out_dir, cfg, allow_existing=True) / "config.json"  # as saliency.label does


def _multimae(tmp: Path) -> tuple[Any, Path]:
    from pretrain.config import PretrainConfig

    cfg = from_flat(PretrainConfig, dim=32, depth=1, modalities="rgb", epochs=3, out=str(tmp / "mmae"))
    return cfg, prepare_run_dir(cfg.out, cfg, resume=cfg.resume, allow_existing=True) / "config.json"


def _probe(tmp: Path) -> tuple[Any, Path]:
    from pretrain.probe import ProbeConfig, write_result

    cfg = from_flat(ProbeConfig, encoder=str(tmp / "encoder.pt"), pools="mean,grid2", fit_frames=123, seed=4)
    result = {"inputs": ["rgb"], "warnings": [], "seconds": 1.0, "seed": 4, "rows": []}
    return cfg, Path(write_result(cfg, result, verbose=False)["path"])


def _sac(tmp: Path) -> tuple[Any, Path]:
    from rl.config import SACConfig
    from rl.provenance import INPUTS_KEY

    cfg = from_flat(SACConfig, task="door-open-v3", encoder="cnn_rgb", seed=3, steps=5000, out=str(tmp / "sac"))
    inputs = {"saliency_model": {"path": "student.pt", "sha256": "ab" * 32}}
    return cfg, prepare_run_dir(cfg.out, {**flat_dict(cfg), INPUTS_KEY: inputs}) / "config.json"  # as rl.workspace


def _evaluate(tmp: Path) -> tuple[Any, Path]:
    from rl.evaluate import EvaluateConfig, write_report

    cfg = from_flat(EvaluateConfig, run=str(tmp / "run"), episodes=3, seed=7, video=True, overlay="saliency")
    report = {"run": cfg.run, "step": 500, "seed": 7, "episodes": [], "inputs": {}, "success_rate": 0.5}
    return cfg, write_report(cfg, report, tmp / "agent-seed7-3ep.json")


def _pipeline(tmp: Path) -> tuple[Any, Path]:
    from pipeline.run import PipelineConfig, write_pipeline_config

    cfg = from_flat(PipelineConfig, tasks="reach-v3,door-open-v3", frames=99, stage_preset="micro")
    return cfg, tmp / write_pipeline_config(cfg)  # runs/pipeline/config.json of the working folder


STAGES: dict[str, Callable[[Path], tuple[Any, Path]]] = {
    "data.collect": _collect,
    "saliency.train": _saliency_train,
    "saliency.distill": _distill,
    "saliency.label": _label,
    "pretrain.multimae": _multimae,
    "pretrain.probe": _probe,
    "rl.sac": _sac,
    "rl.evaluate": _evaluate,
    "pipeline": _pipeline,
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_what_a_stage_writes_config_reads_back(stage, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg, path = STAGES[stage](tmp_path)
    assert path.is_file()
    loaded = parse_config(type(cfg), ["--config", str(path)])
    assert loaded == cfg and flat_dict(loaded) == flat_dict(cfg) != flat_dict(type(cfg)())


def test_a_distillation_config_is_not_replaced_without_resume(tmp_path):
    from saliency.config import DistillConfig
    from saliency.distill import config_path

    cfg = from_flat(DistillConfig, teacher=str(tmp_path / "best.pt"), frames=300)
    path = write_config(config_path(cfg), cfg)
    assert path.name == "distill-student-config.json"  # beside saliency.train's config.json, not over it
    with pytest.raises(OutputError, match="already holds a run; pass --resume"):
        write_config(config_path(cfg), from_flat(DistillConfig, teacher=cfg.teacher, frames=400))
    assert json.loads(path.read_text())["frames"] == 300


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """A tiny reach-v3 collection made through data.collect's command line (80 frames, 4 episodes)."""
    from data import collect

    out = tmp_path_factory.mktemp("roundtrip") / "reach-v3"
    argv = ["--task", "reach-v3", "--frames", "80", "--shard-size", "40", "--episode-steps", "20", "--seed", "2"]
    collect.main([*argv, "--out", str(out)])
    return out


def test_a_collection_reruns_from_its_config(shards, capsys):
    from data import collect
    from data.collect import CollectConfig

    stored = json.loads((shards / "config.json").read_text())
    assert stored["frames"] == 80 and stored["seed"] == 2 and stored["episode_steps"] == 20
    cfg = parse_config(CollectConfig, ["--config", str(shards / "config.json")])
    assert (cfg.env.task, cfg.frames, cfg.shard_size, cfg.env.max_episode_steps, cfg.out_dir) == (
        "reach-v3",
        80,
        40,
        20,
        shards,
    )
    before = {p.name: p.read_bytes() for p in shards.glob("shard-*.tar")}
    capsys.readouterr()
    collect.main(["--config", str(shards / "config.json")])  # the same collection: every shard is kept
    assert "80 frames of reach-v3" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in shards.glob("shard-*.tar")} == before


def test_a_probe_reruns_from_its_report(shards, tmp_path):
    from pretrain.frozen import ENCODER_FORMAT
    from pretrain.model import ModelConfig, MultiMAE
    from pretrain.probe import ProbeConfig
    from pretrain.probe import main as probe_main

    torch.manual_seed(0)
    model = MultiMAE(
        ModelConfig(modalities=("rgb",), **TINY_MMAE),
        decoders=False,
    )
    encoder = tmp_path / "encoder.pt"
    torch.save(
        {
            "format": ENCODER_FORMAT,
            "model_config": model.cfg.to_dict(),
            "state_dict": model.encoder_state_dict(),
            "step": 0,
        },
        encoder,
    )
    argv = ["--encoder", str(encoder), "--data", str(shards), "--pools", "mean", "--fit-frames", "40"]
    first = probe_main([*argv, "--score-frames", "12", "--threads", "1", "--pixels", "4"])
    report = tmp_path / "probe_rgb.json"
    cfg = parse_config(ProbeConfig, ["--config", str(report)])
    assert (cfg.encoder, cfg.pools, cfg.fit_frames, cfg.score_frames, cfg.pixels) == (str(encoder), "mean", 40, 12, 4)
    again = probe_main(["--config", str(report), "--out", str(tmp_path / "again.json")])
    assert again["config"] == {**first["config"], "out": str(tmp_path / "again.json")}
    assert [r["r2"] for r in again["rows"]] == [r["r2"] for r in first["rows"]]  # the same probe, the same numbers


def test_a_pipeline_run_with_other_flags_keeps_the_earlier_record(tmp_path, monkeypatch):
    from pipeline.run import PipelineConfig, write_pipeline_config

    monkeypatch.chdir(tmp_path)
    first = from_flat(PipelineConfig, frames=99, stage_preset="micro")
    path = write_pipeline_config(first)
    write_pipeline_config(first)  # the same flags again: one record
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.json"]
    write_pipeline_config(from_flat(PipelineConfig, frames=120, stage_preset="micro"))
    assert sorted(p.name for p in path.parent.iterdir()) == ["config-1.json", "config.json"]
    assert json.loads((path.parent / "config-1.json").read_text())["frames"] == 99
    assert json.loads(path.read_text())["frames"] == 120
