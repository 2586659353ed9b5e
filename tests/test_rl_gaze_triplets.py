"""rl.gaze_triplets: the triplet-quality measure on a buffer whose answer is worked out by hand, and the CLI
on collected shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from common.cli import flat_dict, from_flat
from common.io import atomic_torch_save
from data.collect import CollectConfig, collect
from data.shards import load_arrays
from rl.agent import SAC
from rl.config import PRESETS, SACConfig
from rl.encoder_base import image_input
from rl.encoders import build_encoder
from rl.envs import ACTION_DIM
from rl.gaze_triplets import Entries, TripletsConfig, chance_levels, entries_from_shards, main, measure, spearman

STEPS = 4  # entries per episode


def synthetic_entries() -> Entries:
    """Three 4-entry episodes whose rewards [c, c, c, 2c] (c = G / 2) make the return-to-go at discount 0.5
    exactly G at every step (G = 1 failed, 2 and 3 succeeded), while the undiscounted one is G/2 (3 - t) + G,
    falling with time. Keys lie on a circle at angle episode + 0.05 step: an entry's most similar
    neighbours are the nearest steps of its own episode, then the nearest episode."""
    g = np.repeat([1.0, 2.0, 3.0], STEPS)
    step = np.tile(np.arange(STEPS), 3)
    episode = np.repeat(np.arange(3), STEPS)
    angle = episode + 0.05 * step
    n = len(g)
    return Entries(
        feats=np.zeros((n, 1, 1, 1), np.float16),
        keys=np.stack([np.cos(angle), np.sin(angle)], 1).astype(np.float32),
        pooled=np.zeros((n, 1), np.float32),
        reward=np.where(step == STEPS - 1, g, g / 2).astype(np.float32),
        done=step == STEPS - 1,
        episode=episode,
        step=step,
        success=episode > 0,
    )


def test_undiscounted_triplets_pair_frames_of_one_episode_discounted_ones_pair_success():
    entries = synthetic_entries()
    # undiscounted returns: episode 0 [2.5, 2, 1.5, 1], 1 [5, 4, 3, 2], 2 [7.5, 6, 4.5, 3]; margin 0.25.
    # Worked by hand (anchor, positive, negative) as (episode, step):
    #   (0,0) (1,0) (0,1) | (0,1) (0,0) (0,2) | (0,2) (0,1) (0,3) | (1,0) (2,0) (1,1) | (1,1) (1,0) (1,2)
    #   (1,2) (1,1) (1,3) | (1,3) (1,2) (0,3) | (2,1) (2,0) (2,2) | (2,2) (2,1) (2,3) | (2,3) (2,2) (1,3)
    # ((0,3) has no lower return, (2,0) no higher one)
    u = measure(entries, 1.0, anchors=100, k=16, return_margin=0.25, seed=0)
    assert u["anchors"] == 12 and u["triplets"] == 10
    assert u["p_pos_same_success"] == pytest.approx(0.9)  # only (0,0)'s positive is from another outcome
    assert u["p_neg_other_success"] == pytest.approx(0.1)  # only (1,3)'s negative
    assert u["p_pos_success"] == pytest.approx(0.8) and u["p_neg_failure"] == pytest.approx(0.4)
    assert u["p_success_ordered"] == pytest.approx(0.2) and u["p_success_inverted"] == 0.0  # (0,0)'s and (1,3)'s
    assert u["p_pos_same_episode"] == pytest.approx(0.8) and u["p_neg_same_episode"] == pytest.approx(0.8)
    assert u["step_gap_pos"] == pytest.approx(0.8) and u["step_gap_neg"] == pytest.approx(0.8)
    # |return gap| and |step gap| of the 20 pairs above, ranked by scipy
    d_return = [2.5, 0.5, 0.5, 0.5, 0.5, 0.5, 2.5, 1, 1, 1, 1, 1, 1, 1, 1.5, 1.5, 1.5, 1.5, 1.5, 1]
    d_step = [0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0]
    assert u["spearman_return_step"] == pytest.approx(spearmanr(d_return, d_step).statistic)
    assert u["spearman_return_step"] < 0
    # discount 0.5: returns 1, 2, 3 per episode; only episode 1 has both a higher and a lower return around it:
    # anchor (1,t) -> positive (2,0) (nearest angle), negative (0,3)
    d = measure(entries, 0.5, anchors=100, k=16, return_margin=0.25, seed=0)
    assert d["triplets"] == 4 and d["anchor_success_share"] == 1.0
    assert d["p_pos_same_success"] == 1.0 and d["p_neg_other_success"] == 1.0 and d["p_success_ordered"] == 1.0
    assert d["p_pos_same_episode"] == 0.0 and d["p_neg_same_episode"] == 0.0
    assert d["step_gap_pos"] == pytest.approx(1.5) and d["step_gap_neg"] == pytest.approx(1.5)  # t and 3 - t
    assert d["spearman_return_step"] is None  # every return gap is 1: no ranking
    assert d["pos_frac"] == pytest.approx(8 / 12) and d["neg_frac"] == pytest.approx(8 / 12)


def test_anchors_are_the_same_for_every_discount_and_the_margin_is_automatic_by_default():
    entries = synthetic_entries()
    u = measure(entries, 1.0, anchors=5, k=16, return_margin=0.0, seed=3)
    d = measure(entries, 0.5, anchors=5, k=16, return_margin=0.0, seed=3)
    assert u["anchors"] == d["anchors"] == 5
    undiscounted = np.array([2.5, 2, 1.5, 1, 5, 4, 3, 2, 7.5, 6, 4.5, 3])
    assert u["return_margin"] == pytest.approx(0.1 * undiscounted.std())
    assert d["return_margin"] == pytest.approx(0.1 * np.repeat([1.0, 2.0, 3.0], STEPS).std())


def test_spearman_and_chance_levels_by_hand():
    # ranks [1, 2, 3, 4] vs [2, 1, 4, 3]: sum d^2 = 4, rho = 1 - 6 * 4 / (4 * 15) = 0.6
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([2.0, 1, 4, 3])) == pytest.approx(0.6)
    assert spearman(np.array([1.0, 1.0]), np.array([1.0, 2.0])) is None
    c = chance_levels(synthetic_entries())
    assert c["success_share"] == pytest.approx(8 / 12)
    assert c["p_same_success"] == pytest.approx((2 / 3) ** 2 + (1 / 3) ** 2)
    # steps 0..3 three times each: mean |t_i - t_j| over 16 ordered step pairs is 20 / 16
    assert c["step_gap"] == pytest.approx(20 / 16)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """reach-v3, 6 whole 20-step episodes (21 frames each), a shard boundary between episodes."""
    out = tmp_path_factory.mktemp("triplet_shards") / "reach-v3"
    collect(
        from_flat(CollectConfig, task="reach-v3", frames=126, shard_size=63, episode_steps=20, out=str(out)),
        progress=False,
    )
    return out


def test_cli_writes_the_measure_per_discount(shards, tmp_path, capsys):
    out = tmp_path / "triplets.json"
    main(["--data", str(shards), "--out", str(out), "--anchors", "60", "--k", "8", "--threads", "1"])
    saved = json.loads(out.read_text())
    assert saved["data"]["episodes"] == 6 and saved["data"]["episode_steps"] == 20
    assert saved["data"]["frames_left_out"] == 0 and saved["entries"] == 6 * 20
    assert len(saved["data"]["data_digest"]) == 64 and saved["seeds"] == {"encoder": 0, "anchors": 0}
    assert [r["discount"] for r in saved["rows"]] == [1.0, 0.99]
    for row in saved["rows"]:
        assert row["anchors"] == 60 and 0 < row["triplets"] <= 60
        for key in ("p_pos_same_success", "p_neg_other_success", "p_success_ordered", "p_pos_same_episode"):
            assert 0 <= row[key] <= 1
        assert 0 <= row["step_gap_pos"] <= 19 and 0 <= row["step_gap_neg"] <= 19
        assert row["return_margin"] > 0
    assert saved["rows"][0]["return_margin"] > saved["rows"][1]["return_margin"]  # discounted returns spread less
    table = capsys.readouterr().out
    assert "| discount | triplets |" in table and "| chance |" in table


def test_cli_refuses_what_it_cannot_measure(shards, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["--data", str(shards), "--discounts", "1.5", "--out", str(tmp_path / "x.json")])
    assert err.value.code == 2 and "--discounts must lie in (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.json")])
    assert err.value.code == 2 and "is not a shard folder" in capsys.readouterr().err


def saved_agent(path: Path, encoder_name: str, seed: int) -> torch.nn.Module:
    """An agent.pt as rl.workspace writes it, of a fresh SAC agent; returns its encoder."""
    cfg = from_flat(SACConfig, **{**PRESETS["micro"], "encoder": encoder_name, "seed": seed})
    torch.manual_seed(seed)
    encoder = build_encoder(cfg, 64)
    agent = SAC(encoder, encoder.out_dim, ACTION_DIM, cfg, runs=1)
    atomic_torch_save({"config": flat_dict(cfg), "step": 7, "model": agent.run_state(0)["model"]}, path)
    return encoder


def test_checkpoint_keys_come_from_the_saved_trunk(shards, tmp_path):
    path = tmp_path / "gaze" / "agent.pt"
    encoder = saved_agent(path, "gaze", seed=5)
    entries, read = entries_from_shards(TripletsConfig(data=str(shards), checkpoint=str(path)))
    assert str(path) in read["keys"] and "step 7" in read["keys"]
    first = torch.from_numpy(load_arrays(shards, limit=1)["rgb"]).permute(0, 3, 1, 2)[None]  # [1, 1, 3, H, W]
    with torch.no_grad():
        feat = encoder.trunk(image_input(first)).mean((3, 4))[0, 0]  # [C]
    np.testing.assert_allclose(entries.keys[0], (feat / feat.norm()).numpy(), rtol=1e-5, atol=1e-6)
    random_init, _ = entries_from_shards(TripletsConfig(data=str(shards)))
    assert not np.allclose(random_init.keys[0], entries.keys[0])
    saved_agent(tmp_path / "cnn" / "agent.pt", "cnn_rgb", seed=0)
    with pytest.raises(ValueError, match="trained encoder 'cnn_rgb': pass a gaze run"):
        entries_from_shards(TripletsConfig(data=str(shards), checkpoint=str(tmp_path / "cnn" / "agent.pt")))
