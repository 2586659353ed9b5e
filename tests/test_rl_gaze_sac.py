"""`gaze` through the real SAC loop (rl.sac), its checkpoint, and the gaze pictures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from common.cli import from_flat
from rl.config import PRESETS, SACConfig
from rl.encoders import ENCODERS
from rl.gaze_viz import GazeVizConfig, cell_centre_px, gaze_strip
from rl.gaze_viz import run as viz_run
from rl.sac import run as sac_run
from rl.workspace import checkpoint_steps, latest_checkpoint, train


def gaze_cfg(out: Path, **kw) -> SACConfig:
    """The gaze encoder on CPU with 20-step episodes, so returns reach the buffer."""
    return from_flat(
        SACConfig,
        **{
            **PRESETS["micro"],
            "encoder": "gaze",
            "out": str(out),
            "steps": 160,
            "random_steps": 60,
            "batch_size": 8,
            "max_episode_steps": 20,
            "replay_size": 1000,
            "log_every": 80,
            "checkpoint_every": 80,
            "gaze_buffer_size": 500,
            "gaze_anchors": 32,
            "torch_threads": 1,
            **kw,
        },
    )


@pytest.fixture(scope="module")
def gaze_run(tmp_path_factory) -> Path:
    """160 env steps of SAC with the gaze encoder (seed 0) through rl.sac."""
    return sac_run(gaze_cfg(tmp_path_factory.mktemp("sac") / "gaze"))


def test_gaze_trains_through_rl_sac(gaze_run: Path):
    with open(gaze_run / "aux.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [80, 160]
    last = rows[-1]
    # the last update runs while the env renders step 160: it sees 7 finished episodes (the 8th ends with that step)
    assert float(last["gaze/buffer"]) == 140
    assert float(last["gaze/triplets"]) > 0 and 0 < float(last["gaze/pos_frac"]) <= 1
    assert 0.15 < float(last["gaze/sigma"]) < 2 and np.isfinite(float(last["gaze/contrast_loss"]))
    # checkpoints at episode boundaries (every 20 steps): the last one, at step 160, is the only one kept
    assert checkpoint_steps(gaze_run) == [160]
    path = latest_checkpoint(gaze_run)
    assert path == gaze_run / "checkpoint-000000160.pt"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 160 and (gaze_run / ckpt["replay"]["dir"] / "action.npy").is_file()
    extra = ckpt["encoder_extra"]  # the run's own extra_state: one buffer, one rng
    assert extra["buffer"]["feats"].shape == (160, 32, 121) and extra["buffer"]["written"] == 160
    assert extra["buffer"]["valid"].all() and "rng" in extra
    # the head's own optimiser stepped once per SAC update (gaze_update_every 1)
    updates = ckpt["agent"]["num_updates"]
    assert updates >= 100 and int(next(iter(extra["head_optimizer"]["state"].values()))["step"]) == updates
    first = next(iter(extra["head_optimizer"]["state"].values()))
    assert first["exp_avg"].shape[0] == 1  # run-leading moments of a pack of one
    enc = ENCODERS["gaze"](from_flat(SACConfig, **{**PRESETS["micro"], "gaze_buffer_size": 500}), 64)
    enc.load_extra_state([extra])
    assert enc.buffers[0].size == 160 and enc.rngs[0].bit_generator.state == extra["rng"]


def test_gaze_pack_of_two_keeps_each_run_its_own(gaze_run: Path, tmp_path: Path):
    """Seeds 0 and 1 trained in one pack: each run logs, buffers and checkpoints its own gaze; run 0's
    buffer entries from before the first update are those of seed 0 trained alone (rl.sac above)."""
    dirs = train(
        [gaze_cfg(tmp_path / f"seed{seed}", seed=seed, steps=80, log_every=40, checkpoint_every=40) for seed in (0, 1)]
    )
    solo = torch.load(latest_checkpoint(gaze_run), weights_only=True)["encoder_extra"]["buffer"]
    extras = []
    for run_dir in dirs:
        with open(run_dir / "aux.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["step"]) for r in rows] == [80]  # no auxiliary update (so no row) before step 60
        # the update at step 80 runs while that step renders: the 4th episode (ending with it) is not in yet
        assert float(rows[-1]["gaze/buffer"]) == 60 and float(rows[-1]["gaze/triplets"]) > 0
        ckpt = torch.load(latest_checkpoint(run_dir), weights_only=True)
        assert ckpt["step"] == 80 and ckpt["agent"]["num_updates"] == 20
        extra = ckpt["encoder_extra"]
        assert extra["buffer"]["feats"].shape == (80, 32, 121) and extra["buffer"]["written"] == 80
        assert int(next(iter(extra["head_optimizer"]["state"].values()))["step"]) == 20
        extras.append(extra)
    # before the first update (random_steps 60) a buffer entry depends only on the run's seed:
    # its initial trunk and its env's frames
    feats0, feats1, solo60 = (b["feats"][:60].float() for b in (extras[0]["buffer"], extras[1]["buffer"], solo))
    torch.testing.assert_close(feats0, solo60, atol=2e-3, rtol=2e-3)
    assert not torch.allclose(feats1, solo60, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(extras[0]["buffer"]["returns"][:60], solo["returns"][:60])
    assert extras[0]["rng"] != extras[1]["rng"]


def test_receptive_field_centres_match_the_trunk():
    """cell_centre_px agrees with the centre of each output cell's input gradient support."""
    enc = ENCODERS["gaze_nocontrast"](None, 64)
    x = torch.rand(1, 1, 3, 64, 64, requires_grad=True)  # [R, B, 3, H, W]
    feat = enc.trunk(x)  # [R, B, 32, 11, 11]
    for j in (0, 5, 10):
        x.grad = None
        feat[0, 0, :, j, j].sum().backward(retain_graph=True)
        cols = np.flatnonzero(x.grad[0, 0].abs().sum((0, 1)).numpy())
        assert (cols.min() + cols.max() + 1) / 2 == pytest.approx(cell_centre_px(-1 + 2 * j / 10, 11))
    assert cell_centre_px(np.array([-1.0, 1.0]), 11).tolist() == [21.5, 41.5]


def test_gaze_strip_and_command(gaze_run: Path, tmp_path: Path):
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    sal = np.random.default_rng(1).random((3, 64, 64)).astype(np.float32)
    for name in ("gaze_patch", "gaze_mix"):
        enc = ENCODERS[name](from_flat(SACConfig, gaze_components=3), 64)
        out = gaze_strip(enc, frames, sal, "test maps", tmp_path / f"{name}.png", name)
        assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="saliency maps"):
        gaze_strip(enc, frames, sal[:2], "x", tmp_path / "bad.png")
    out = viz_run(
        GazeVizConfig(
            run=str(gaze_run),
            frames=3,
            episode_steps=12,
            out=str(tmp_path / "run.png"),
            saliency_model=str(tmp_path / "missing.pt"),
        )
    )
    assert out.stat().st_size > 10_000
    with pytest.raises(FileNotFoundError, match="agent.pt"):
        viz_run(GazeVizConfig(run=str(tmp_path / "nothing")))
