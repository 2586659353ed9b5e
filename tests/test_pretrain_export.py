"""Hub copies (safetensors + model card) of MultiMAE encoders and saliency models: identical outputs
from either file, cards that say what data / architecture / probe, refusals, and the training hooks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from common.cli import from_flat
from common.hub import CARD_MARK
from common.io import CheckpointError, NonFiniteError
from data.shards import write_manifest
from pretrain.export import main as export_encoders
from pretrain.export import refresh_card, write_hub_files
from pretrain.frozen import ENCODER_FORMAT, FrozenEncoder
from pretrain.model import ModelConfig, MultiMAE
from pretrain.probe_table import format_row
from saliency.export import main as export_saliency
from saliency.picanet import PiCANet, PiCANetConfig
from saliency.predictor import SaliencyPredictor, save_checkpoint
from saliency.student import StudentConfig, StudentNet

from tiny import TINY_MMAE

MCFG = ModelConfig(modalities=("rgb", "saliency"), **TINY_MMAE)


def encoder_blob(seed: int = 0) -> dict:
    """What Trainer.export_encoder writes, for a tiny seeded model (statistics for two pools, and the bare legacy key)."""
    torch.manual_seed(seed)
    stats = {
        f"{inputs}|{pool}": {"mean": torch.randn(k * 32), "std": torch.rand(k * 32) + 0.5}
        for inputs in ("rgb,saliency", "rgb")
        for pool, k in (("mean", 1), ("grid2", 4))
    }
    stats["rgb,saliency"] = stats["rgb,saliency|mean"]
    return {
        "format": ENCODER_FORMAT,
        "model_config": MCFG.to_dict(),
        "state_dict": MultiMAE(MCFG, decoders=False).encoder_state_dict(),
        "feature_stats": stats,
        "step": 12,
        "epoch": 2,
        "saliency_source": "oracle",
        "data": "data/shards",
        "code_version": "abc1234",
    }


def encoder_run(root: Path, seed: int = 0) -> Path:
    """A run folder as pretraining leaves it: encoder.pt, config.json, data.json naming a shard folder with a manifest."""
    shards = root / "shards" / "reach-v3-sal"
    write_manifest(
        shards,
        {
            "shards": [],
            "task": "reach-v3",
            "camera": "corner",
            "image_size": 64,
            "render_quality": "fast",
            "episode_steps": 40,
            "labelled_from": "reach-v3",
        },
    )
    run = root / "run"
    run.mkdir(parents=True)
    torch.save(encoder_blob(seed), run / "encoder.pt")
    (run / "config.json").write_text(
        json.dumps({"preset": "micro", "epochs": 2, "batch_size": 16, "lr": 0.001, "seed": 0})
    )
    (run / "data.json").write_text(
        json.dumps(
            {
                "folders": [{"folder": str(shards), "task": "reach-v3", "frames": 160, "saliency": "predicted"}],
                "train_frames": 120,
                "held_out_frames": 40,
            }
        )
    )
    return run / "encoder.pt"


def test_encoder_safetensors_gives_identical_features_for_every_inputs_and_pool(tmp_path):
    pt = encoder_run(tmp_path)
    weights, card = write_hub_files(pt)
    assert (weights, card) == (pt.with_suffix(".safetensors"), pt.parent / "README.md")
    g = torch.Generator().manual_seed(1)
    rgb, sal = torch.rand(5, 3, 64, 64, generator=g), torch.rand(5, 1, 64, 64, generator=g)
    for inputs, pool in ((None, "mean"), (("rgb",), "mean"), (None, "grid2"), (None, "global")):
        a, b = FrozenEncoder.load(pt, inputs=inputs, pool=pool), FrozenEncoder.load(weights, inputs=inputs, pool=pool)
        assert a.standardized == b.standardized == (pool != "global") and a.meta == b.meta
        assert torch.equal(a(rgb, sal), b(rgb, sal)) and a(rgb, sal).shape == (5, {"grid2": 128}.get(pool, 32))
    tensors = load_file(weights)  # readable without this code, names as the card says
    blob = encoder_blob()
    assert set(tensors) == {f"state_dict.{k}" for k in blob["state_dict"]} | {
        f"feature_stats.{k}.{s}" for k in blob["feature_stats"] for s in ("mean", "std")
    }
    assert torch.equal(
        tensors["feature_stats.rgb,saliency|grid2.std"], blob["feature_stats"]["rgb,saliency|grid2"]["std"]
    )
    assert FrozenEncoder.load(weights).meta == {
        "step": 12,
        "epoch": 2,
        "saliency_source": "oracle",
        "data": "data/shards",
    }


def test_a_kill_while_the_card_is_written_leaves_the_older_safetensors_to_say_so(tmp_path, monkeypatch):
    from pretrain import export
    from pretrain.train import exported_at

    pt = encoder_run(tmp_path)
    write_hub_files(pt)
    torch.save({**encoder_blob(), "step": 13}, pt)  # the next checkpoint's export

    def killed(folder, text):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "write_card", killed)
    with pytest.raises(KeyboardInterrupt):
        write_hub_files(pt)
    assert FrozenEncoder.load(pt.with_suffix(".safetensors")).meta["step"] == 12
    assert not exported_at(pt.parent, 13)  # a resume exports step 13 again, card included
    monkeypatch.undo()
    write_hub_files(pt)
    assert exported_at(pt.parent, 13) and "Trained 13 steps" in (pt.parent / "README.md").read_text()


def test_encoder_card_says_data_architecture_probe_and_how_to_load(tmp_path):
    pt = encoder_run(tmp_path)
    _, card = write_hub_files(pt)
    text = card.read_text()
    data = ModelCard.load(card).data  # huggingface_hub reads it back
    assert (data.library_name, data.pipeline_tag, data.license, data.task) == (
        "pytorch",
        "image-feature-extraction",
        "mit",
        "reach-v3",
    )
    assert (
        data.tags[0] == "visarl"
        and data.tags[-1] == "reach-v3"
        and data.datasets == ["reach-v3-sal"]
        and CARD_MARK in text
    )
    assert not data.eval_results  # no probe yet: no metrics
    folder = tmp_path / "shards" / "reach-v3-sal"
    assert f"| {folder} | reach-v3 | 160 | predicted | corner | 64 | fast | 40 |" in text
    assert "120 training frames and 40 held-out frames" in text and "dim 32, depth 1, 2 heads" in text
    assert (
        "grid2 128-d" in text
        and "rgb+saliency grid2" in text
        and "Trained 12 steps (2 epochs): preset micro, epochs 2" in text
    )
    assert "FrozenEncoder.load(\"encoder.safetensors\", inputs=('rgb', 'saliency'), pool=\"mean\")" in text
    assert "Not probed yet" in text
    # a probe beside the encoder: its table lands in the card
    row = {
        "features": "pretrained, rgb+saliency",
        "kind": "pretrained",
        "pool": "grid2",
        "dim": 128,
        "r2": {"hand": 0.98, "object": 0.87, "goal": 0.61},
        "r2_stored": {"hand": 0.98, "object": 0.87, "goal": 0.61},
    }
    (pt.parent / "probe_rgb+saliency.json").write_text(
        json.dumps(
            {
                "inputs": ["rgb", "saliency"],
                "fit_frames": 90,
                "fit_episodes": 3,
                "score_frames": 30,
                "score_episodes": 1,
                "data": str(folder),
                "store": "float16",
                "rows": [row],
                "warnings": ["a loud one"],
            }
        )
    )
    assert refresh_card(pt) == card
    text = card.read_text()
    assert format_row(row) in text and "| pretrained, rgb+saliency | grid2 | 128 | 0.98 | 0.87 | 0.61 |" in text
    assert "- WARNING: a loud one" in text and "Not probed yet" not in text
    results = {
        r.metric_name: r for r in ModelCard.load(card).data.eval_results
    }  # the probe's R^2 as the card's metrics
    assert set(results) == {f"{t} R^2 (rgb+saliency, grid2 pool)" for t in ("hand", "object", "goal")}
    obj = results["object R^2 (rgb+saliency, grid2 pool)"]
    assert (obj.metric_type, obj.metric_value, obj.dataset_name, obj.dataset_split) == (
        "r_squared",
        0.87,
        "reach-v3-sal",
        "held-out episodes",
    )


def test_the_card_says_how_little_raw_mean_features_move_between_frames(tmp_path):
    """--mmae-features raw hands SAC the mean-pooled tokens as they are: the card states their
    frame-to-frame spread against their constant part, from the export's stored statistics."""
    from pretrain.export import raw_feature_spread

    stats = {"mean": torch.full((4,), 3.0), "std": torch.tensor([0.01, 0.02, 0.02, 0.04])}
    assert raw_feature_spread(stats) == (
        "frame-to-frame spread 0.05 (per dimension: median std 0.02) around a mean vector of norm 6 (0.8% of it)"
    )
    pt = encoder_run(tmp_path)
    _, card = write_hub_files(pt)
    lines = [line for line in card.read_text().splitlines() if line.startswith("- Raw ")]
    blob = torch.load(pt, weights_only=True)
    labels = ["rgb mean", "rgb+saliency mean"]
    assert [line.split(" features")[0] for line in lines] == [f"- Raw {label}" for label in labels]
    expected = raw_feature_spread(blob["feature_stats"]["rgb,saliency|mean"])
    assert lines[1] == f"- Raw rgb+saliency mean features over the frames of the stored statistics: {expected}."


def test_non_finite_weights_are_refused_and_a_hand_written_readme_is_kept(tmp_path):
    pt = encoder_run(tmp_path)
    (pt.parent / "README.md").write_text("my notes\n")
    weights, card = write_hub_files(pt)
    assert card.name == "MODEL_CARD.md" and (pt.parent / "README.md").read_text() == "my notes\n"
    before = weights.read_bytes()
    bad = encoder_blob()
    bad["state_dict"]["blocks.0.attn.qkv.weight"][0, 0] = float("nan")
    torch.save(bad, pt)
    with pytest.raises(NonFiniteError, match="refusing to write .*encoder.safetensors.*blocks.0.attn.qkv.weight"):
        write_hub_files(pt)
    assert weights.read_bytes() == before  # the previous copy is kept
    weights.write_bytes(before[:100])
    with pytest.raises(CheckpointError, match="cannot load MultiMAE encoder .*encoder.safetensors: it is damaged"):
        FrozenEncoder.load(weights)


def test_export_command_finds_every_encoder_of_a_run(tmp_path, capsys):
    for task, seed in (("reach-v3", 0), ("door-open-v3", 1)):
        (tmp_path / "mmae" / task).mkdir(parents=True)
        torch.save(encoder_blob(seed), tmp_path / "mmae" / task / "encoder.pt")
    written = export_encoders([str(tmp_path / "mmae")])
    assert [w.parent.name for w, _ in written] == ["door-open-v3", "reach-v3"]
    assert all(w.name == "encoder.safetensors" and c.name == "README.md" for w, c in written)
    assert "Not probed yet" in written[0][1].read_text() and "frame counts unknown" in written[0][1].read_text()
    with pytest.raises(SystemExit) as exit_info:
        export_encoders([str(tmp_path / "nothing")])
    assert exit_info.value.code == 2 and "no encoder.pt in" in capsys.readouterr().err


@pytest.fixture
def saliency_run(tmp_path) -> Path:
    """best.pt (tiny PiCANet), student.pt, a resume state last.pt, and an evaluation, as the saliency stage leaves them."""
    run = tmp_path / "saliency" / "reach-v3"
    torch.manual_seed(0)
    teacher = PiCANet(PiCANetConfig(input_size=64, width=0.125, local_hidden=16, global_hidden=16))
    keys = [f"00000-{i:05d}" for i in range(10)]
    save_checkpoint(
        run / "best.pt",
        teacher,
        "picanet",
        epoch=30,
        val={"f_max": 0.9, "mae": 0.01, "n": 2.0},
        seen_keys=keys,
        train_keys=keys[:8],
        train_config={"annotations": "data/annotations/reach-v3.npz", "epochs": 40, "layout": "LLL", "seed": 0},
        annotations="data/annotations/reach-v3.npz",
    )
    save_checkpoint(run / "last.pt", teacher, "picanet", epoch=40, optimizer={"state": {}})
    shards = tmp_path / "shards" / "reach-v3"
    write_manifest(
        shards, {"shards": [], "task": "reach-v3", "camera": "corner", "image_size": 64, "render_quality": "fast"}
    )
    save_checkpoint(
        run / "student.pt",
        StudentNet(StudentConfig(width=4)),
        "student",
        epoch=5,
        val={"f_max": 0.8, "mae": 0.02, "n": 30.0},
        seen_keys=keys + ["00001-00000"],
        teacher=str(run / "best.pt"),
        distill_config={"data": str(shards), "frames": 300, "epochs": 5},
    )
    (run / "eval-student-reach-v3").mkdir()
    (run / "eval-student-reach-v3" / "metrics.json").write_text(
        json.dumps(
            {
                "model": str(run / "student.pt"),
                "data": str(shards),
                "gt": "oracle maps",
                "metrics": {"n": 1000, "f_max": 0.85, "mae": 0.0025, "cc": 0.96},
            }
        )
    )
    return run


def test_saliency_safetensors_give_identical_maps_and_one_card(saliency_run):
    written = export_saliency([str(saliency_run)])
    assert [w.name for w, _ in written] == ["best.safetensors", "student.safetensors"]  # last.pt is a resume state
    assert not (saliency_run / "last.safetensors").exists()
    frames = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    for name in ("best", "student"):
        a = SaliencyPredictor.load(saliency_run / f"{name}.pt", device="cpu")
        b = SaliencyPredictor.load(saliency_run / f"{name}.safetensors", device="cpu")
        assert a.kind == b.kind and a.info == b.info and a.seen_keys == b.seen_keys
        maps = a(frames)
        assert maps.shape == (4, 48, 48) and np.array_equal(maps, b(frames))
    text = (saliency_run / "README.md").read_text()
    data = ModelCard.load(saliency_run / "README.md").data
    assert (
        data.pipeline_tag == "image-segmentation"
        and data.license == "mit"
        and data.tags[-3:] == ["picanet", "reach-v3", "student"]
    )
    scores = {r.metric_name: r.metric_value for r in data.eval_results}
    assert scores["best f_max"] == 0.9 and scores["best mae"] == 0.01 and scores["student f_max"] == 0.8
    assert "- Data: 10 annotated maps of `data/annotations/reach-v3.npz` (8 trained on" in text
    assert (
        f"first 300 frames of `{saliency_run.parent.parent / 'shards' / 'reach-v3'}` (task reach-v3; camera corner, image_size 64, render_quality fast)"
        in text
    )
    assert (
        "validation f_max 0.9000, mae 0.0100 (2 maps)" in text and "| 1000 | 0.8500 | 0.0025 | 0.9600 | - | - |" in text
    )
    assert 'SaliencyPredictor.load("student.safetensors")(frames)' in text


def test_saliency_training_writes_the_hub_copy_of_its_best_checkpoint(tmp_path):
    from saliency.data import Augment
    from saliency.train import FitSpec, fit

    rng = np.random.default_rng(0)
    frames, maps = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8), rng.random((8, 64, 64)).astype(np.float32)
    torch.manual_seed(0)
    model = StudentNet(StudentConfig(width=4))
    spec = FitSpec(
        epochs=2,
        batch_size=4,
        lr=1e-3,
        weight_decay=0.0,
        lr_decay_at=0.5,
        eval_every=1,
        seed=0,
        augment=Augment(),
        progress=False,
    )
    best = fit(
        model,
        "student",
        (frames[:6], maps[:6]),
        (frames[6:], maps[6:]),
        spec,
        tmp_path,
        torch.device("cpu"),
        tmp_path / "student.pt",
        {"seen_keys": ["a"]},
    )
    a = SaliencyPredictor.load(tmp_path / "student.pt", device="cpu")
    b = SaliencyPredictor.load(tmp_path / "student.safetensors", device="cpu")
    assert a.info["epoch"] == b.info["epoch"] == best["epoch"] and np.array_equal(a(frames), b(frames))
    assert "## `student.safetensors`" in (tmp_path / "README.md").read_text()


def test_pretraining_writes_the_hub_copy_beside_encoder_pt(tmp_path):
    from common.cli import parse_config
    from data.collect import CollectConfig, collect
    from pretrain.config import PRESETS, PretrainConfig
    from pretrain.train import run

    collect(
        parse_config(
            CollectConfig,
            [
                "--task",
                "reach-v3",
                "--frames",
                "80",
                "--out",
                str(tmp_path / "shards" / "reach-v3"),
                "--shard-size",
                "80",
                "--episode-steps",
                "20",
                "--seed",
                "0",
            ],
        )
    )
    cfg = from_flat(
        PretrainConfig,
        data=str(tmp_path / "shards"),
        out=str(tmp_path / "mmae"),
        saliency="oracle",
        **{**PRESETS["micro"], "epochs": 1, "threads": 1, "progress": False, "val_fraction": 0.25},
    )
    run_dir = run(cfg)
    pt = run_dir / "encoder.pt"
    g = torch.Generator().manual_seed(0)
    rgb, sal = torch.rand(3, 3, 64, 64, generator=g), torch.rand(3, 1, 64, 64, generator=g)
    a, b = FrozenEncoder.load(pt), FrozenEncoder.load(pt.with_suffix(".safetensors"))
    assert a.standardized and b.standardized and torch.equal(a(rgb, sal), b(rgb, sal))
    text = (run_dir / "README.md").read_text()
    assert f"| {tmp_path / 'shards' / 'reach-v3'} | reach-v3 | 64 | oracle | corner | 64 | fast | 20 |" in text
    assert (
        "dim 64, depth 1, 2 heads" in text and "Trained 2 steps (1 epochs): epochs 1, batch_size 16, lr 0.001" in text
    )
