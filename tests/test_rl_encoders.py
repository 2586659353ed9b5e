"""The encoder registry's frozen MultiMAE variants: mmae_rgbs_grid2 (the 2x2 grid pool) has 4x the
features of mmae_rgbs, packs only with frozen encoders of its embedding size, and trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.cli import from_flat
from pretrain.frozen import FrozenEncoder, MissingStatisticsError, encoder_blob, identity_statistics
from pretrain.model import ModelConfig, MultiMAE
from rl.config import SACConfig
from rl.encoders import ENCODERS, EXTRA, TABLE_I, MMAEEncoder, build_encoder, image_input
from rl.workspace import Pack, latest_checkpoint, pack_key, train

from numerics import relative_difference
from tiny import TINY_MMAE, TINY_SAC


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[int, Path]:
    """Tiny rgb+saliency MultiMAE encoder exports of width 32 and 128 (seeded, random weights)."""
    root = tmp_path_factory.mktemp("mmae")
    paths = {}
    for dim in (32, 128):
        torch.manual_seed(dim)
        cfg = ModelConfig(**{**TINY_MMAE, "dim": dim}, modalities=("rgb", "saliency"))
        paths[dim] = root / f"dim{dim}" / "encoder.pt"
        paths[dim].parent.mkdir()
        torch.save(encoder_blob(MultiMAE(cfg, decoders=False), identity_statistics(cfg)), paths[dim])
    return paths


def sac(tmp_path: Path, encoder: str, mmae: Path, seed: int = 0, **kw) -> SACConfig:
    return from_flat(
        SACConfig,
        **{**TINY_SAC, **kw},
        encoder=encoder,
        mmae=str(mmae),
        seed=seed,
        out=str(tmp_path / f"{encoder}-{mmae.parent.name}-s{seed}"),
    ).validate()


def test_grid2_is_registered_outside_table_i_and_in_help():
    assert "mmae_rgbs_grid2" in ENCODERS and "mmae_rgbs_grid2" in EXTRA and "mmae_rgbs_grid2" not in TABLE_I
    assert MMAEEncoder.VARIANTS["mmae_rgbs_grid2"] == ("rgbs", ("rgb", "saliency"), "grid2")
    help_text = next(f.metadata["help"] for f in SACConfig.__dataclass_fields__.values() if f.name == "encoder")
    assert (
        EXTRA["mmae_rgbs_grid2"] in help_text
        and "mmae_rgbs_grid2" in SACConfig.__dataclass_fields__["mmae"].metadata["help"]
    )


def test_grid2_features_are_four_region_means(tmp_path, exports):
    grid = build_encoder(sac(tmp_path, "mmae_rgbs_grid2", exports[32]))
    mean = build_encoder(sac(tmp_path, "mmae_rgbs", exports[32]))
    assert (grid.out_dim, mean.out_dim) == (128, 32) and grid.obs_keys == ("pixels", "saliency") and grid.frozen
    assert grid.source.endswith("encoder.pt:rgb,saliency|grid2") and mean.source.endswith("|mean")
    g = torch.Generator().manual_seed(0)
    obs = {
        "pixels": torch.randint(0, 256, (2, 3, 3, 64, 64), dtype=torch.uint8, generator=g),
        "saliency": torch.randint(0, 256, (2, 3, 1, 64, 64), dtype=torch.uint8, generator=g),
    }
    feats = grid(obs)  # [R=2, B=3, 128]
    assert feats.shape == (2, 3, 128)
    rgb, sal = image_input(obs["pixels"]).flatten(0, 1), image_input(obs["saliency"]).flatten(0, 1)
    direct = FrozenEncoder.load(exports[32], pool="grid2")(rgb, sal).view(2, 3, 128)
    assert torch.equal(feats, direct)
    # the mean of the 4 cells (16 patch tokens each) is the mean of all patch tokens
    patches = grid.module.tokens(rgb, sal)[:, 1:].mean(1).view(2, 3, 32)
    torch.testing.assert_close(feats.view(2, 3, 4, 32).mean(2), patches, rtol=1e-5, atol=1e-6)
    assert (feats.view(6, 4, 32).std(1) > 1e-4).all()  # the cells differ: where things are is kept


def test_grid2_packs_only_with_frozen_encoders_of_its_size(tmp_path, exports):
    grid = sac(tmp_path, "mmae_rgbs_grid2", exports[32])
    wide_mean = sac(tmp_path, "mmae_rgbs", exports[128], seed=1)  # mean pool of a 128-wide model: 128-d too
    narrow_mean = sac(tmp_path, "mmae_rgbs", exports[32], seed=1)
    keys = {
        name: pack_key(c, build_encoder(c))
        for name, c in (("grid", grid), ("wide", wide_mean), ("narrow", narrow_mean))
    }
    assert keys["grid"] == keys["wide"] != keys["narrow"]
    assert keys["grid"][0] == ("frozen", 128)
    with pytest.raises(ValueError, match="cannot share a pack"):
        Pack([grid, narrow_mean])


def test_grid2_trains_packed_beside_another_frozen_encoder_as_it_does_alone(tmp_path, exports):
    """A packed run of mmae_rgbs_grid2 and a 128-d mean-pool encoder: two export modules embed their
    own runs' frames; the grid2 run stores the embeddings it stores alone and its critic trains."""
    (alone_dir,) = train([sac(tmp_path / "alone", "mmae_rgbs_grid2", exports[32])])
    grid_dir, wide_dir = train(
        [
            sac(tmp_path / "pack", "mmae_rgbs_grid2", exports[32]),
            sac(tmp_path / "pack", "mmae_rgbs", exports[128], seed=1),
        ]
    )
    emb = {}
    for name, run_dir in (("alone", alone_dir), ("grid", grid_dir), ("wide", wide_dir)):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["steps"] == 150 and 0.0 <= summary["success_rate"] <= 1.0
        ckpt = torch.load(latest_checkpoint(run_dir), weights_only=True)
        assert ckpt["agent"]["num_updates"] == 100 and int(ckpt["replay"]["valid"].sum()) == 150
        emb[name] = np.load(run_dir / ckpt["replay"]["dir"] / "obs.embedding.npy")
        model = torch.load(run_dir / "agent.pt", weights_only=True)["model"]
        assert not [k for k in model if k.startswith("encoder.")]  # frozen: no encoder weights in the agent
    assert emb["grid"].shape[-1] == emb["wide"].shape[-1] == 128 and emb["grid"].dtype == np.float32
    assert np.isfinite(emb["grid"]).all() and emb["grid"].std(axis=tuple(range(emb["grid"].ndim - 1))).min() > 0
    # the first 50 steps are random actions under the run's own seed: identical frames, identical embeddings
    first = slice(0, 50)
    assert np.array_equal(emb["grid"].reshape(-1, 128)[first], emb["alone"].reshape(-1, 128)[first])
    assert not np.allclose(emb["grid"].reshape(-1, 128)[first], emb["wide"].reshape(-1, 128)[first])


def test_cnn_trunk_starts_as_the_references_weight_init_on_rendered_frames():
    """SAC-AE/RAD/SGQN's weight_init (delta-orthogonal convolutions with the ReLU gain, orthogonal linear
    layers, zero biases): the 100-d feature of different rendered frames differs at init (std across
    frames ~0.16; with nn.Conv2d's default uniform init it was 6.4e-5, one constant vector to the critic)."""
    from data.env import make_env

    env = make_env(task="reach-v3", seed=0)
    frames = []
    for episode in range(4):
        env.reset(seed=episode)
        for _ in range(4):
            frames.append(env.step(env.action_space.sample())[0]["pixels"])
    env.close()
    pixels = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)[None]  # [R=1, 16, 3, 64, 64]
    torch.manual_seed(0)
    enc = ENCODERS["cnn_rgb"](from_flat(SACConfig, feature_dim=100), 64, 1)
    trunk = enc.trunk
    assert all((b == 0).all() for b in trunk.biases) and (enc.projection.linear.bias == 0).all()
    centre = trunk.weights[1][:, :, 1, 1]  # [32, 32] orthogonal x ReLU gain, zeros off-centre
    torch.testing.assert_close(centre @ centre.T, 2.0 * torch.eye(32), atol=1e-5, rtol=0)
    off_centre = trunk.weights[1].detach().clone()
    off_centre[:, :, 1, 1] = 0
    assert (off_centre == 0).all()
    with torch.no_grad():
        maps = trunk(image_input(pixels))  # [1, 16, 32, 11, 11]
        features = enc({"pixels": pixels})  # [1, 16, 100]
    assert (maps < 0).any()  # the trunk ends on its last convolution (no ReLU after it, as SGQN)
    assert features.shape == (1, 16, 100) and features.std(1).mean() > 0.05


def test_cnn_trunk_runs_in_a_pack_compute_what_they_would_alone_and_match_the_grouped_layout():
    """Each run of a pack convolves alone (channels-last, bench/conv_trunk.py: ~1.5x faster on CPU than
    one grouped convolution): run r's output is bit-identical to a pack of one holding run r's kernels,
    its gradient reaches only run r's kernels, and the stored [R * 32, c_in, 3, 3] weights mean what a
    grouped convolution over the runs would compute with them."""
    from rl.nets import PackedConvTrunk

    torch.manual_seed(0)
    runs = 3
    pack = PackedConvTrunk(runs, 4)
    with torch.no_grad():  # every tap non-zero, biases too, so the check sees the whole kernel
        for w, b in zip(pack.weights, pack.biases):
            w.normal_(0, 0.2)
            b.normal_(0, 0.1)
    x = torch.rand(runs, 5, 4, 64, 64)
    out = pack(x)  # [3, 5, 32, 11, 11]
    assert out.shape == (runs, 5, 32, 11, 11)
    for r in range(runs):
        alone = PackedConvTrunk(1, 4)
        with torch.no_grad():
            for dst, src in zip([*alone.weights, *alone.biases], [*pack.weights, *pack.biases]):
                dst.copy_(src[r * 32 : (r + 1) * 32])
        assert torch.equal(alone(x[r : r + 1])[0], out[r])

    out[1].sum().backward()
    for w in pack.weights:
        assert (w.grad[32:64] != 0).any() and (w.grad[:32] == 0).all() and (w.grad[64:] == 0).all()

    h = x.transpose(0, 1).reshape(5, runs * 4, 64, 64)  # [B, R*C, H, W]
    with torch.no_grad():
        for i, (w, b) in enumerate(zip(pack.weights, pack.biases)):
            h = F.conv2d(F.relu(h) if i else h, w, b, stride=2 if i == 0 else 1, groups=runs)  # [B, R*32, h', w']
    grouped = h.view(5, runs, 32, 11, 11).transpose(0, 1)
    assert relative_difference(out.detach(), grouped) < 1e-4


def test_saliency_scale_authors_divides_the_cnn_rows_saliency_by_255_once_more():
    """--saliency-scale authors reproduces the authors' public code ([0, 1/255]) on the Saliency and RGBS rows;
    the paper's [0, 1] stays the default, and RGB x Saliency (a product, unscaled there) keeps it."""
    g = torch.Generator().manual_seed(0)
    obs = {
        "pixels": torch.randint(0, 256, (1, 2, 3, 64, 64), dtype=torch.uint8, generator=g),
        "saliency": torch.full((1, 2, 1, 64, 64), 255, dtype=torch.uint8),
    }
    for variant in ("cnn_saliency", "cnn_rgbs", "cnn_rgb_x_saliency"):
        paper = ENCODERS[variant](from_flat(SACConfig), 64, 1).inputs(obs)
        authors = ENCODERS[variant](from_flat(SACConfig, saliency_scale="authors"), 64, 1).inputs(obs)
        if variant == "cnn_rgb_x_saliency":
            assert torch.equal(authors, paper)
            continue
        assert paper[:, :, -1].max() == 1.0 and authors[:, :, -1].max() == pytest.approx(1 / 255)
        assert torch.equal(authors[:, :, :-1], paper[:, :, :-1])  # rgb untouched
    with pytest.raises(ValueError, match="saliency-scale"):
        from_flat(SACConfig, saliency_scale="half").validate()


def test_frozen_features_are_standardized_unless_raw_is_asked(exports, tmp_path):
    """--mmae-features standardized (the default: the export's statistics, measured better on reach-v3 in issue #24)
    or raw (the paper's mean of all tokens as it is); an export without statistics is refused by name, never fed raw
    silently."""
    g = torch.Generator().manual_seed(0)
    obs = {
        "pixels": torch.randint(0, 256, (1, 3, 3, 64, 64), dtype=torch.uint8, generator=g),
        "saliency": torch.randint(0, 256, (1, 3, 1, 64, 64), dtype=torch.uint8, generator=g),
    }
    rgb, sal = image_input(obs["pixels"]).flatten(0, 1), image_input(obs["saliency"]).flatten(0, 1)
    direct = FrozenEncoder.load(exports[32], standardize=False)(rgb, sal)  # [3, 32]
    blob = torch.load(exports[32], weights_only=True)
    blob["feature_stats"] = {"rgb,saliency|mean": {"mean": direct.mean(0), "std": direct.std(0)}}
    torch.save(blob, tmp_path / "with_stats.pt")
    std_enc = build_encoder(sac(tmp_path, "mmae_rgbs", tmp_path / "with_stats.pt"), 64)
    assert std_enc.module.standardized and std_enc.provenance["features"] == "standardized"
    torch.testing.assert_close(std_enc(obs).view(3, 32), (direct - direct.mean(0)) / direct.std(0))
    raw_enc = build_encoder(sac(tmp_path, "mmae_rgbs", tmp_path / "with_stats.pt", mmae_features="raw"), 64)
    assert torch.equal(raw_enc(obs).view(3, 32), direct) and not raw_enc.module.standardized
    blob["feature_stats"] = {}
    torch.save(blob, tmp_path / "without_stats.pt")
    with pytest.raises(MissingStatisticsError, match="no feature statistics.*--mmae-features raw"):
        build_encoder(sac(tmp_path, "mmae_rgbs", tmp_path / "without_stats.pt"), 64)
    raw_only = build_encoder(sac(tmp_path, "mmae_rgbs", tmp_path / "without_stats.pt", mmae_features="raw"), 64)
    assert torch.equal(raw_only(obs).view(3, 32), direct)


def test_options_of_other_encoders_neither_block_a_resume_nor_make_another_row():
    """Every run records every rl.sac option; those of MultiMAE, CNN-saliency and gaze rows change nothing for the
    others (a gaze run saved under one --mmae-features resumes under another)."""
    from common.cli import flat_dict
    from rl.encoders import field_applies

    gaze = from_flat(SACConfig, encoder="gaze", mmae_features="standardized", saliency_scale="authors")
    stored = {**flat_dict(gaze), "mmae_features": "raw", "saliency_scale": "paper"}
    assert gaze.differences(stored) == []
    assert gaze.differences({**stored, "gaze_return_discount": 0.99}) == [
        "gaze_return_discount: checkpoint 0.99 vs now 1.0"
    ]
    mmae = from_flat(SACConfig, encoder="mmae_rgbs", mmae_features="standardized")
    assert mmae.differences({**flat_dict(mmae), "mmae_features": "raw"}) == [
        "mmae_features: checkpoint 'raw' vs now 'standardized'"
    ]
    assert field_applies("saliency_scale", "cnn_rgbs") and not field_applies("saliency_scale", "cnn_rgb")
    assert field_applies("gaze_k", "gaze_patch") and not field_applies("gaze_k", "mmae_rgbs")
    assert field_applies("batch_size", "state")
