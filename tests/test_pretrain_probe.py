"""Linear probe, pooling, storage precision, input normalisation, crops, per-task runs, old exports."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

from common.cli import from_flat
from data.shards import read_manifest, write_manifest
from pretrain.augment import apply_crops, crop_boxes, random_resized_crop
from pretrain.config import PRESETS, PretrainConfig
from pretrain.data import load_frames, split_episodes, tasks_under
from pretrain.frozen import ENCODER_FORMAT, FrozenEncoder
from pretrain.model import IMAGENET_MEAN, IMAGENET_STD, ModelConfig, MultiMAE
from pretrain.probe import (
    ALPHAS,
    ProbeConfig,
    Ridge,
    choose_alphas,
    gate_warnings,
    probe,
    probe_features,
    r2_pooled,
    stored,
)
from pretrain.train import export_feature_stats, task_configs

from tiny import TINY_MMAE

ARTIFACT = Path(__file__).resolve().parents[1] / "artifacts" / "mmae" / "rgbs-cpu" / "encoder.pt"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """A reach-v3 shard folder of 240 frames in 12 episodes (object and goal move between episodes)."""
    from data.collect import CollectConfig, collect

    root = tmp_path_factory.mktemp("probe_shards")
    collect(
        from_flat(
            CollectConfig,
            task="reach-v3",
            frames=240,
            out=str(root / "reach-v3"),
            shard_size=120,
            episode_steps=20,
            seed=3,
        )
    )
    return root


def _export(model: MultiMAE, path: Path, frames=None) -> Path:
    blob = {
        "format": ENCODER_FORMAT,
        "model_config": model.cfg.to_dict(),
        "state_dict": model.encoder_state_dict(),
        "step": 0,
    }
    if frames is not None:
        blob["feature_stats"] = export_feature_stats(model, frames, model.cfg.image_size, 128)
    torch.save(blob, path)
    return path


def test_ridge_recovers_a_linear_map_in_both_forms():
    g = torch.Generator().manual_seed(0)
    for n, d in ((300, 20), (60, 200)):  # primal (d <= n) and dual (d > n) forms
        x = torch.randn(n + 100, d, generator=g) * torch.linspace(0.01, 10, d)  # wildly scaled features
        w = torch.randn(d, 3, generator=g)
        y = (x / torch.linspace(0.01, 10, d)) @ w + 0.01 * torch.randn(n + 100, 3, generator=g)
        ridge = Ridge(x[:n], y[:n])
        assert ridge.primal == (d <= n)
        r2 = r2_pooled(ridge.predict(x[n:], 1e-2).float(), y[n:])
        assert r2 > (0.99 if d <= n else 0.2), (n, d, r2)
    assert math.isnan(r2_pooled(torch.zeros(5, 3), torch.ones(5, 3)))  # a constant target has no R^2
    assert r2_pooled(torch.zeros(4, 1), torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])) == pytest.approx(0.0)


def test_a_feature_nearly_constant_in_the_fit_frames_cannot_blow_up_unseen_ones():
    g = torch.Generator().manual_seed(2)
    groups = torch.arange(65).repeat_interleave(20)  # 65 episodes of 20 frames
    pos = torch.rand(1300, 3, generator=g)
    signal = pos @ torch.randn(3, 20, generator=g) + 0.3 * torch.randn(1300, 20, generator=g)  # [n, 20]
    pixels = torch.full((1300, 5), 0.5)  # background pixels the arm crosses: faintly in one fit frame,
    pixels[5] += 1e-4 * torch.rand(5, generator=g)
    pixels[1000::7] += 0.3  # plainly in every 7th unseen frame
    fit, score = slice(0, 1000), slice(1000, None)

    def r2(x):
        return probe_features(x[fit], x[score], {"p": pos[fit]}, {"p": pos[score]}, groups[fit])["r2"]["p"]

    without = r2(signal)
    assert without > 0.9
    assert r2(torch.cat([signal, pixels], 1)) == pytest.approx(without, abs=0.01)  # unfloored: R^2 ~ -4e8


def test_alpha_choice_follows_held_out_episodes():
    g = torch.Generator().manual_seed(1)
    groups = torch.arange(40).repeat_interleave(10)  # 40 episodes of 10 frames
    pos = torch.randn(40, 3, generator=g)[groups]  # a per-episode position, like the object
    noise = torch.randn(400, 50, generator=g) * 3  # features: mostly noise, a weak copy of the position
    x = torch.cat([pos + 0.5 * torch.randn(400, 3, generator=g), noise], 1)
    alphas = choose_alphas(x, {"object": pos}, groups)
    assert alphas["object"] in ALPHAS and alphas["object"] > ALPHAS[0]  # noise features need shrinkage


def test_float16_storage_eats_near_constant_features_and_standardising_saves_them():
    g = torch.Generator().manual_seed(0)
    groups = torch.arange(60).repeat_interleave(20)
    pos = torch.rand(1200, 3, generator=g)
    # 8 features at |f| ~0.8 varying by ~1e-4 (the CPU-preset encoders' regime): below float16's step there (~5e-4)
    raw = 0.8 + 3e-4 * (pos @ torch.randn(3, 8, generator=g)) + 1e-6 * torch.randn(1200, 8, generator=g)
    fit, score = slice(0, 900), slice(900, None)
    a = choose_alphas(raw[fit], {"p": pos[fit]}, groups[fit])["p"]

    def r2(x):
        return r2_pooled(Ridge(x[fit], pos[fit]).predict(x[score], a).float(), pos[score])

    assert r2(raw) > 0.99  # float32 keeps the signal
    assert r2(stored(raw, "float16")) < 0.8  # float16 rounds it away
    z = (raw - raw[fit].mean(0)) / raw[fit].std(0)
    assert r2(stored(z, "float16")) > 0.99  # standardised first: float16 is enough


def test_pools_shapes_and_values():
    model = MultiMAE(ModelConfig(**TINY_MMAE), decoders=False)
    enc = model.encode(
        model.tokenize({"rgb": torch.rand(2, 3, 64, 64), "saliency": torch.rand(2, 1, 64, 64)})
    )  # [2, 129, 32]
    assert torch.equal(model.pool(enc, "mean"), enc.mean(1)) and torch.equal(model.pool(enc, "global"), enc[:, 0])
    grid2 = model.pool(enc, "grid2").view(2, 2, 2, 32)  # [B, row, col, E]
    patches = enc[:, 1:].reshape(2, 2, 8, 8, 32).mean(1)  # mean over the two modalities, [B, 8, 8, E]
    assert torch.allclose(grid2[:, 0, 1], patches[:, :4, 4:].mean((1, 2)), atol=1e-6)  # top-right quadrant
    assert torch.allclose(grid2[:, 1, 0], patches[:, 4:, :4].mean((1, 2)), atol=1e-6)
    assert model.pool(enc, "grid4").shape == (2, 16 * 32)
    with pytest.raises(ValueError, match="unknown pool"):
        model.pool(enc, "max")
    for pool, k in (("mean", 1), ("global", 1), ("grid2", 4), ("grid4", 16)):
        f = FrozenEncoder(model.cfg, pool=pool)
        assert f.out_dim == k * 32 and f(torch.rand(3, 3, 64, 64), torch.rand(3, 1, 64, 64)).shape == (3, k * 32)
    with pytest.raises(ValueError, match="pool must be one of"):
        FrozenEncoder(model.cfg, pool="max")


def test_imagenet_normalisation_inside_the_model_and_old_configs():
    cfg = ModelConfig(**TINY_MMAE)
    assert cfg.input_norm == "imagenet"
    model = MultiMAE(cfg, decoders=False)
    x = torch.rand(2, 3, 64, 64)
    norm = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = model.patch_embed["rgb"](norm).flatten(2).transpose(1, 2) + model.pos
    assert torch.allclose(model.tokenize({"rgb": x}), expected, atol=1e-5)
    s = torch.rand(2, 1, 64, 64)  # saliency stays in [0, 1]
    assert torch.allclose(
        model.tokenize({"saliency": s}), model.patch_embed["saliency"](s).flatten(2).transpose(1, 2) + model.pos
    )
    legacy = {k: v for k, v in cfg.to_dict().items() if k != "input_norm"}  # an export made before the change
    old = MultiMAE(ModelConfig.from_dict(legacy), decoders=False)
    assert old.cfg.input_norm == "none"
    old.load_state_dict(model.state_dict())
    assert torch.allclose(
        old.tokenize({"rgb": x}), model.patch_embed["rgb"](x).flatten(2).transpose(1, 2) + model.pos, atol=1e-6
    )
    with pytest.raises(ValueError, match="--input-norm"):
        ModelConfig(input_norm="zca", **TINY_MMAE).validate()


def test_random_resized_crop_boxes_and_shared_crops():
    g = torch.Generator().manual_seed(0)
    boxes = crop_boxes(20000, (0.2, 1.0), generator=g)  # (x0, y0, w, h) as fractions
    x0, y0, w, h = boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 1 + 1e-6).all() and (y0 + h <= 1 + 1e-6).all()
    area, ratio = w * h, w / h
    assert area.min() > 0.2 - 1e-4 and area.max() <= 1 + 1e-6 and 0.5 < area.mean() < 0.65
    assert ratio.min() > 0.75 - 1e-3 and ratio.max() < 4 / 3 + 1e-3
    rgb = torch.rand(4, 3, 64, 64)
    same = apply_crops({"rgb": rgb}, torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 4))["rgb"]
    assert torch.allclose(same, rgb, atol=1e-5)  # the whole frame is the identity
    quarter = apply_crops({"rgb": rgb}, torch.tensor([[0.5, 0.0, 0.5, 0.5]] * 4))["rgb"]  # top-right quadrant, 2x
    ref = torch.nn.functional.interpolate(rgb[:, :, :32, 32:], size=64, mode="bilinear", align_corners=False)
    assert torch.allclose(quarter[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5)
    out = random_resized_crop({"rgb": rgb, "saliency": rgb.mean(1, keepdim=True)}, generator=g)
    assert out["rgb"].shape == rgb.shape and torch.allclose(
        out["saliency"], out["rgb"].mean(1, keepdim=True), atol=1e-5
    )
    assert not torch.allclose(out["rgb"], rgb)


def test_rgb_only_model_sees_16_of_64_patches():
    model = MultiMAE(ModelConfig(**{**TINY_MMAE, "modalities": "rgb"}))
    _, _, _, visible = model({"rgb": torch.rand(3, 3, 64, 64)})
    assert (visible.sum(1) == 16).all()
    both = MultiMAE(ModelConfig(**TINY_MMAE))
    _, _, _, visible = both({"rgb": torch.rand(3, 3, 64, 64), "saliency": torch.rand(3, 1, 64, 64)})
    assert (visible.sum(1) == 32).all()


def test_probe_end_to_end_table_json_and_gate(shards, tmp_path, capsys):
    frames, _ = load_frames(shards, None)
    assert frames.state.shape == (240, 39)
    train, _ = split_episodes(frames, 0.25, 0)
    torch.manual_seed(0)
    model = MultiMAE(ModelConfig(modalities=("rgb",), **TINY_MMAE), decoders=False)
    path = _export(model, tmp_path / "encoder.pt", train)
    res = probe(ProbeConfig(encoder=str(path), data=str(shards), fit_frames=150, score_frames=60, threads=1))
    captured = capsys.readouterr()
    out = captured.out
    assert "| features | pool | dim | hand R^2" in out and "raw pixels 16x16x3" in out
    for kind in ("pretrained", "random init"):  # progress while the features are computed: plain lines, not a tty
        assert re.search(rf"probe: {kind} features: 100% {150 + res['score_frames']}/\d+ frame", captured.err), kind
    assert "\r" not in captured.err
    saved = json.loads((tmp_path / "probe_rgb.json").read_text())
    assert (
        len(saved["rows"]) == len(res["rows"]) == 9 and saved["fit_frames"] == 150 and 40 <= saved["score_frames"] <= 60
    )
    assert saved["fit_episodes"] + saved["score_episodes"] <= 12 and saved["score_episodes"] >= 2
    kinds = [(r["kind"], r["pool"], r["dim"]) for r in saved["rows"]]
    assert kinds == [
        ("pretrained", p, k * 32) for p, k in (("mean", 1), ("global", 1), ("grid2", 4), ("grid4", 16))
    ] + [("random init", p, k * 32) for p, k in (("mean", 1), ("global", 1), ("grid2", 4), ("grid4", 16))] + [
        ("pixels", "-", 768)
    ]
    pixels = saved["rows"][-1]
    assert pixels["r2"]["hand"] > 0.5  # raw pixels see the arm
    assert all(
        set(r["r2"]) == {"hand", "object", "goal"} and set(r["r2_stored"]) == {"hand", "object", "goal"}
        for r in saved["rows"]
    )
    # this export's features are standardised with its statistics: float16 storage costs nothing
    mean = saved["rows"][0]
    assert "r2_stored_raw" in mean and abs(mean["r2_stored"]["hand"] - mean["r2"]["hand"]) < 0.02
    # the gate: pretrained worse than random init on the hand position is a loud warning
    fake = {
        "encoder": "e.pt",
        "inputs": ["rgb"],
        "store": "float16",
        "rows": [
            {
                "kind": "pretrained",
                "pool": "mean",
                "r2": {"hand": 0.5, "object": 0.1, "goal": 0.1},
                "r2_stored": {"hand": 0.1, "object": 0.1, "goal": 0.1},
            },
            {
                "kind": "random init",
                "pool": "mean",
                "r2": {"hand": 0.9, "object": 0.1, "goal": 0.1},
                "r2_stored": {"hand": 0.9, "object": 0.1, "goal": 0.1},
            },
        ],
    }
    warnings = gate_warnings(fake)
    assert any("worse than the same model at random init" in w for w in warnings)
    assert any("storing features as float16 drops hand R^2 from 0.50 to 0.10" in w for w in warnings)
    fake["rows"][0]["r2"]["hand"] = fake["rows"][0]["r2_stored"]["hand"] = 0.95
    assert gate_warnings(fake) == []


def test_probe_refuses_bad_flags(capsys):
    from pretrain.probe import main

    for argv, msg in (
        (["--pools", "mean,max"], "--pools"),
        (["--held-out", "nan"], "finite"),
        (["--held-out", "1.5"], "--held-out"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and msg in err and "\n" not in err


def test_one_model_per_task_unless_pooled(shards, tmp_path):
    root = tmp_path / "two"
    shutil.copytree(shards / "reach-v3", root / "reach-v3")
    shutil.copytree(shards / "reach-v3", root / "drawer-open-v3")
    write_manifest(root / "drawer-open-v3", {**read_manifest(root / "drawer-open-v3"), "task": "drawer-open-v3"})
    assert tasks_under(root) == ["drawer-open-v3", "reach-v3"]
    cfg = PretrainConfig(data=str(root), out=str(tmp_path / "rgbs"))
    runs = task_configs(cfg)
    assert [(c.task, c.out) for c in runs] == [(t, str(tmp_path / "rgbs" / t)) for t in ("drawer-open-v3", "reach-v3")]
    assert task_configs(PretrainConfig(data=str(root), pooled=True)) == [PretrainConfig(data=str(root), pooled=True)]
    assert task_configs(PretrainConfig(data=str(shards))) == [
        PretrainConfig(data=str(shards))
    ]  # one task: --out itself
    frames, info = load_frames(root, None, task="drawer-open-v3")
    assert len(frames) == 240 and [i["task"] for i in info] == ["drawer-open-v3"]
    assert len(load_frames(root, None)[0]) == 480


@pytest.mark.skipif(not ARTIFACT.exists(), reason="artifact not present")
def test_old_exports_still_load():
    enc = FrozenEncoder.load(ARTIFACT)  # made before ImageNet normalisation and pools: raw [0, 1] rgb, mean stats only
    assert enc.model.cfg.input_norm == "none" and enc.standardized and enc.out_dim == 256
    grid = FrozenEncoder.load(ARTIFACT, inputs=("rgb",), pool="grid2")
    assert not grid.standardized and grid.out_dim == 1024  # no stored statistics for this pool: raw features
    with pytest.raises(ValueError, match="no feature statistics"):
        FrozenEncoder.load(ARTIFACT, pool="grid2", standardize=True)


def test_damaged_export_is_a_clear_error(tmp_path):
    bad = tmp_path / "encoder.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"cannot load MultiMAE encoder {bad}"):
        FrozenEncoder.load(bad)
    model = MultiMAE(ModelConfig(**TINY_MMAE), decoders=False)
    blob = {
        "format": ENCODER_FORMAT,
        "model_config": {**model.cfg.to_dict(), "dim": 64},
        "state_dict": model.encoder_state_dict(),
    }
    torch.save(blob, bad)
    with pytest.raises(ValueError, match="do not match its model_config"):
        FrozenEncoder.load(bad)


def test_presets_keep_the_paper_recipe():
    assert all("num_visible" not in p and "augment" not in p and "input_norm" not in p for p in PRESETS.values())


def test_pipeline_gate_probes_each_encoder_and_skips_unusable_data(shards, tmp_path, capsys):
    from pretrain.gate import encoder_paths, probe_gate

    # one folder per task, also for a single task: a shard root that gains tasks later keeps the layout
    assert encoder_paths("runs/mmae/rgbs", ["reach-v3"]) == {"reach-v3": Path("runs/mmae/rgbs/reach-v3/encoder.pt")}
    assert encoder_paths("runs/mmae/rgbs", ["a", "b"])["b"] == Path("runs/mmae/rgbs/b/encoder.pt")
    torch.manual_seed(0)
    run_dir = tmp_path / "rgb"
    (run_dir / "reach-v3").mkdir(parents=True)
    _export(
        MultiMAE(ModelConfig(modalities=("rgb",), **TINY_MMAE), decoders=False), run_dir / "reach-v3" / "encoder.pt"
    )
    results = probe_gate(run_dir, ["reach-v3"], "rgb", data_root=shards, pools="mean", fit_frames=120, score_frames=40)
    assert len(results) == 1 and (run_dir / "reach-v3" / "probe_rgb.json").exists()
    assert [r["kind"] for r in results[0]["rows"]] == ["pretrained", "random init", "pixels"]
    capsys.readouterr()
    assert probe_gate(run_dir, ["reach-v3"], "rgb", data_root=tmp_path / "no-data", pools="mean") == []  # never fatal
    out = capsys.readouterr().out
    assert "probe of" in out and "skipped" in out
