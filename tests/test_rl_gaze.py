"""Gaze on the Prize encoders: the Gaussian map, the heads, the return buffer, triplet mining, and
the rule that the contrastive loss trains only the gaze head."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from common.cli import from_flat, parse_config
from rl.config import SACConfig
from rl.encoders import ENCODERS
from rl.gaze import (
    METRIC_KEYS,
    GaussianGazeHead,
    GazeEncoder,
    PatchGazeHead,
    ReturnBuffer,
    cosine_triplet_loss,
    gaussian_map,
    gazed_cosine,
    map_spread,
    mine_triplets,
    spread_loss,
)
from rl.nets import slice_state, stack_states

from numerics import relative_difference, relative_update_difference


@pytest.fixture(autouse=True)
def _threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # the cores are shared: 2 threads stall under load


def small_cfg(**kw) -> SACConfig:
    base = dict(gaze_buffer_size=2000, gaze_anchors=32, gaze_k=8, gaze_lr=1e-2, seed=0)
    return from_flat(SACConfig, {**base, **kw})


def test_gaussian_map_normalised_and_peaks_at_mu():
    # an 11-cell grid on [-1, 1] has cells every 0.2: mu (-0.6, 0.4) is column 2, row 7
    mu = torch.tensor([[-0.6, 0.4], [0.0, 0.0], [0.8, -1.0]])
    sigma = torch.tensor([[0.3, 0.5], [1.0, 1.0], [0.2, 0.2]])
    rho = torch.tensor([0.5, 0.0, -0.9])
    maps = gaussian_map(mu, sigma, rho, 11, 11)  # [3, 11, 11]
    assert maps.shape == (3, 11, 11)
    torch.testing.assert_close(maps.sum((1, 2)), torch.ones(3))
    peaks = [divmod(int(m.argmax()), 11) for m in maps]
    assert peaks == [(7, 2), (5, 5), (0, 9)]  # (row, column)
    # the closed form, up to normalisation, for the correlated one
    xs = torch.linspace(-1, 1, 11)
    y, x = torch.meshgrid(xs, xs, indexing="ij")
    cov = torch.tensor([[0.09, 0.5 * 0.3 * 0.5], [0.5 * 0.3 * 0.5, 0.25]])
    d = torch.stack([x + 0.6, y - 0.4], -1)  # [11, 11, 2]
    dens = torch.exp(-0.5 * torch.einsum("hwi,ij,hwj->hw", d, torch.linalg.inv(cov), d))
    torch.testing.assert_close(maps[0], dens / dens.sum())
    # the spatial spread of a Gaussian well inside the grid is its sigma
    torch.testing.assert_close(
        map_spread(gaussian_map(torch.zeros(1, 2), torch.full((1, 2), 0.25), torch.zeros(1), 41, 41)),
        torch.full((1, 2), 0.25),
        atol=2e-3,
        rtol=0,
    )


def test_heads_start_centred_wide_and_bounded():
    feat = torch.rand(1, 16, 32, 11, 11) * 3  # [R, B, C, h, w]
    head = GaussianGazeHead(32, (11, 11), components=1, pool=3, sigma_floor=0.15)
    attn, sigma, p = head(feat)
    assert attn.shape == (1, 16, 11, 11) and sigma.shape == (1, 16, 1, 2)
    assert p["mu"].abs().max() < 0.05 and (p["sigma"] - 1).abs().max() < 0.05 and p["rho"].abs().max() < 0.05
    torch.testing.assert_close(attn.sum((2, 3)), torch.ones(1, 16))
    # extreme raw outputs stay in range: |mu| <= 1, sigma >= floor, |rho| < 1
    with torch.no_grad():
        head.mlp.layers[-1].bias.copy_(torch.tensor([50.0, -50.0, -50.0, -50.0, 50.0]).view(1, 1, 5))
    _, sigma, p = head(feat)
    assert p["mu"].abs().max() <= 1 and sigma.min() >= 0.15 and p["rho"].abs().max() < 1
    mix = GaussianGazeHead(32, (11, 11), components=3)
    attn, sigma, p = mix(feat)
    assert sigma.shape == (1, 16, 3, 2) and len({tuple(m.round(decimals=2).tolist()) for m in p["mu"][0, 0]}) == 3
    torch.testing.assert_close(attn.sum((2, 3)), torch.ones(1, 16))
    torch.testing.assert_close(p["weight"], torch.full((1, 16, 3), 1 / 3), atol=1e-2, rtol=0)
    patch = PatchGazeHead(32, (11, 11))
    attn, sigma, _ = patch(feat)
    torch.testing.assert_close(attn, torch.full((1, 16, 11, 11), 1 / 121), atol=1e-3, rtol=0)
    # a pack of 3 heads: every run starts centred and wide on its own features
    feats = torch.rand(3, 16, 32, 11, 11) * 3
    packed = GaussianGazeHead(32, (11, 11), components=1, runs=3)
    assert packed.mlp.layers[0].weight.shape == (3, 288, 64) and packed.mlp.layers[-1].bias.shape == (3, 1, 5)
    attn, sigma, p = packed(feats)
    assert attn.shape == (3, 16, 11, 11) and sigma.shape == (3, 16, 1, 2)
    assert p["mu"].abs().max() < 0.05 and (p["sigma"] - 1).abs().max() < 0.05
    torch.testing.assert_close(attn.sum((2, 3)), torch.ones(3, 16))
    attn, _, _ = PatchGazeHead(32, (11, 11), runs=3)(feats)
    torch.testing.assert_close(attn, torch.full((3, 16, 11, 11), 1 / 121), atol=1e-3, rtol=0)


def test_registered_encoders_forward_backward_and_detach():
    cfg = small_cfg(gaze_components=3)
    pixels = torch.randint(0, 256, (1, 4, 3, 64, 64), dtype=torch.uint8)  # [R, B, 3, H, W]
    for name, n_comp in [("gaze", 1), ("gaze_nocontrast", 1), ("gaze_patch", 1), ("gaze_mix", 3)]:
        enc = ENCODERS[name](cfg, 64)
        assert enc.obs_keys == ("pixels",) and enc.out_dim == 100 and not enc.frozen
        assert enc.feat_shape == (32, 11, 11)
        out = enc({"pixels": pixels})
        assert out.shape == (1, 4, 100) and out.abs().max() <= 1
        out.pow(2).sum().backward()
        for part in (enc.trunk, enc.head, enc.projection):
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters() if p.requires_grad), (
                name
            )
        att = enc.attention(pixels)
        assert att["sigma"].shape == (1, 4, n_comp, 2) and att["attention"].shape == (1, 4, 11, 11)
        enc.zero_grad(set_to_none=True)
        detached = enc({"pixels": pixels}, detach=True)
        torch.testing.assert_close(detached, out)
        detached.pow(2).sum().backward()  # like cnn_rgb: the projection trains, trunk and gaze head do not
        assert all(p.grad is None for p in [*enc.trunk.parameters(), *enc.head.parameters()])
        assert all(p.grad is not None for p in enc.projection.parameters())
    assert ENCODERS["gaze_mix"](small_cfg(), 64).head.components == 2  # gaze_components 1 -> 2


def test_packed_encoder_runs_are_their_own_networks():
    """A pack of 2 gives each run the output of that run's pack of one; run 1's loss reaches only run 1."""
    singles = []
    for seed in (3, 4):
        torch.manual_seed(seed)
        singles.append(ENCODERS["gaze"](small_cfg(), 64, 1))
    pack = ENCODERS["gaze"](small_cfg(), 64, 2)
    pack.load_state_dict(stack_states([e.state_dict() for e in singles]))
    pixels = torch.randint(0, 256, (2, 3, 3, 64, 64), dtype=torch.uint8)
    out = pack({"pixels": pixels})
    assert out.shape == (2, 3, 100)
    for r, enc in enumerate(singles):
        torch.testing.assert_close(out[r], enc({"pixels": pixels[r : r + 1]})[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            pack.attention(pixels)["attention"][r], enc.attention(pixels[r : r + 1])["attention"][0]
        )
        state = slice_state(pack.state_dict(), r, 2)
        assert all(torch.equal(state[k], v) for k, v in enc.state_dict().items())
    out[1].pow(2).sum().backward()
    for name, p in pack.named_parameters():
        per = p.shape[0] // 2
        assert p.grad[:per].abs().sum() == 0 and p.grad[per:].abs().sum() > 0, name


def test_return_buffer_returns_to_go_and_ring_overwrites():
    buf = ReturnBuffer(capacity=6, feat_shape=(1, 1, 1), key_dim=1, pooled_dim=1, discount=0.5)
    one = np.ones((2, 1), np.float32)
    buf.add(one, one, one, np.array([1.0, 10.0]), np.array([False, False]))
    buf.add(one, one, one, np.array([2.0, 20.0]), np.array([True, False]))  # env 0 ends: returns 1 + 0.5 * 2, 2
    assert buf.valid[:4].tolist() == [True, False, True, False]
    np.testing.assert_allclose(buf.returns[[0, 2]], [2.0, 2.0])
    buf.add(one, one, one, np.array([3.0, 40.0]), np.array([False, False]))  # slots 4, 5
    buf.add(one, one, one, np.array([4.0, 80.0]), np.array([True, True]))  # slots 0, 1 overwritten
    # env 1's episode 10, 20, 40, 80 lives in slots 1, 3, 5, 1: the first entry was overwritten
    np.testing.assert_allclose(buf.returns[[3, 5, 1]], [20 + 0.5 * 40 + 0.25 * 80, 40 + 0.5 * 80, 80])
    np.testing.assert_allclose(buf.returns[[4, 0]], [3 + 0.5 * 4, 4])
    assert buf.valid.all() and buf.size == 6 and buf.written == 8 and not buf.pending


def _planted_buffer():
    """An anchor at key e0 with neighbours of known similarity and return."""
    rng = np.random.default_rng(0)
    angles = {  # index: (angle from anchor in radians, return)
        0: (0.0, 5.0),  # anchor
        1: (0.05, 5.01),  # most similar, but within the return margin: neither label
        2: (0.10, 9.0),  # the planted positive (most similar with a higher return)
        3: (0.15, 1.0),  # the planted negative (most similar with a lower return)
        4: (0.20, 12.0),  # a less similar positive
        5: (0.25, 0.0),  # a less similar negative
        6: (0.02, 50.0),  # very similar, high return, but its episode has not ended (invalid)
    }
    keys, returns = np.zeros((200, 8), np.float32), np.zeros(200, np.float32)
    for i, (a, r) in angles.items():
        keys[i, 0], keys[i, 1], returns[i] = np.cos(a), np.sin(a), r
    far = rng.normal(size=(193, 8)).astype(np.float32)
    far[:, 0] = -np.abs(far[:, 0]) - 1  # all far away from the anchor (negative cosine)
    keys[7:] = far / np.linalg.norm(far, axis=1, keepdims=True)
    returns[7:] = rng.uniform(0, 100, 193)
    valid = np.ones(200, bool)
    valid[6] = False
    return keys, returns, valid


def test_triplet_mining_picks_planted_positive_and_negative():
    keys, returns, valid = _planted_buffer()
    mined = mine_triplets(keys, returns, valid, np.array([0]), k=8, return_margin=0.5)
    assert mined["anchor"].tolist() == [0] and mined["positive"].tolist() == [2] and mined["negative"].tolist() == [3]
    assert mined["has_pos"].tolist() == [True] and mined["has_neg"].tolist() == [True]
    # with k = 2 only items 6 (invalid) and 1 (in margin) are neighbours: nothing is mined
    mined = mine_triplets(keys, returns, valid, np.array([0]), k=2, return_margin=0.5)
    assert len(mined["anchor"]) == 0 and not mined["has_pos"][0] and not mined["has_neg"][0]


def test_gazed_cosine_equals_cosine_of_gazed_maps_and_losses():
    fa, fb = torch.rand(5, 32, 121), torch.rand(5, 32, 121) - 0.3  # [T, C, S]
    aa, ab = torch.softmax(torch.randn(5, 121), 1), torch.softmax(torch.randn(5, 121), 1)
    direct = torch.nn.functional.cosine_similarity((fa * aa[:, None]).flatten(1), (fb * ab[:, None]).flatten(1), dim=1)
    fast = gazed_cosine(aa, ab, (fa * fb).sum(1), (fa**2).sum(1), (fb**2).sum(1))
    torch.testing.assert_close(fast, direct)
    assert cosine_triplet_loss(torch.ones(1), -torch.ones(1), 0.2).item() == 0.0  # d_ap 0, d_an 2
    assert cosine_triplet_loss(-torch.ones(1), torch.ones(1), 0.2).item() == pytest.approx(2.2)
    assert spread_loss(torch.full((3, 1, 2), 0.5), 0.5).item() == pytest.approx(0.0, abs=1e-7)
    assert spread_loss(torch.full((3, 1, 2), 0.5 * np.e), 0.5).item() == pytest.approx(2.0)


def _fill(
    enc: GazeEncoder,
    reward_of,
    episodes: int = 4,
    length: int = 12,
    num_envs: int = 4,
    pixels: bool = False,
    seed: int = 1,
) -> None:
    """Episodes of random frames [R, N, 3, H, W] through on_env_step (pixels=True), or of random
    trunk-like features straight into every run's buffer (fast; each run gets its own data)."""
    rng = np.random.default_rng(seed)
    R = enc.runs
    keys_dim, pooled_dim = enc.buffers[0].key_dim, enc.buffers[0].pooled.shape[1]
    for ep in range(episodes):
        for t in range(length):
            rewards = np.array([reward_of(ep, e, t) for e in range(num_envs)], np.float32)
            dones = np.full(num_envs, t == length - 1)
            if pixels:
                frames = torch.from_numpy(rng.integers(0, 256, (R, num_envs, 3, 64, 64), dtype=np.uint8))
                enc.on_env_step({"pixels": frames}, np.tile(rewards, (R, 1)), np.tile(dones, (R, 1)))
            else:
                for buf in enc.buffers:
                    feats = rng.gamma(1.0, 1.0, (num_envs, *enc.feat_shape)).astype(np.float32)
                    keys = rng.normal(size=(num_envs, keys_dim)).astype(np.float32)
                    pooled = rng.gamma(1.0, 1.0, (num_envs, pooled_dim)).astype(np.float32)
                    buf.add(feats, keys / np.linalg.norm(keys, axis=1, keepdims=True), pooled, rewards, dones)


def test_contrastive_update_changes_only_the_gaze_head():
    enc = ENCODERS["gaze"](small_cfg(), 64)
    _fill(enc, lambda ep, e, t: float(ep * 2 + e) * (t % 3))
    buf = enc.buffers[0]
    assert buf.valid[: buf.size].all()
    first = enc.head.mlp.layers[0].weight
    first.grad = torch.full_like(first, 7.0)  # what SAC's critic step left (it zeroes it before its next backward)
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    out = enc.auxiliary_update(step=0)
    assert isinstance(out, list) and len(out) == 1
    metrics = out[0]
    assert (
        set(metrics) == set(METRIC_KEYS)
        and metrics["gaze/triplets"] > 0
        and 0 < metrics["gaze/pos_frac"] <= 1
        and 0 < metrics["gaze/neg_frac"] <= 1
    )
    assert metrics["gaze/contrast_loss"] > 0 and metrics["gaze/sigma"] == pytest.approx(1.0, abs=0.05)
    changed = {n for n, p in enc.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {n for n, _ in enc.named_parameters() if n.startswith("head.")}
    # the head's optimiser stepped on the contrastive gradient alone (not on what the critic left), and only the
    # head's parameters received one
    assert first.grad.abs().max() < 1.0  # contrastive gradients are small; accumulated onto 7 they would not be
    assert all((p.grad is None) != n.startswith("head.") for n, p in enc.named_parameters())
    # update_every: off-steps do nothing
    enc.settings.update_every = 4
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    assert enc.auxiliary_update(step=3) == [metrics]  # the latest values, same keys
    assert all(torch.equal(p, before[n]) for n, p in enc.named_parameters())


def test_constant_returns_mine_nothing_and_do_not_break():
    enc = ENCODERS["gaze"](small_cfg(), 64)
    (metrics,) = enc.auxiliary_update(step=0)  # empty buffer: no update, the same keys
    assert set(metrics) == set(METRIC_KEYS) and metrics["gaze/buffer"] == 0 and metrics["gaze/triplets"] == 0
    _fill(enc, lambda ep, e, t: 0.0, episodes=3, length=6, num_envs=2, pixels=True)  # sparse reward never reached
    assert enc.buffers[0].size == 36 and enc.buffers[0].valid[:36].all()
    trunk_before = [p.detach().clone() for p in enc.trunk.parameters()]
    for step in range(3):
        (metrics,) = enc.auxiliary_update(step)
        assert metrics["gaze/triplets"] == 0 and metrics["gaze/pos_frac"] == 0 and metrics["gaze/neg_frac"] == 0
        assert metrics["gaze/contrast_loss"] == 0 and metrics["gaze/return_margin"] == 0
        assert np.isfinite(metrics["gaze/spread_loss"])
    assert all(torch.equal(a, b) for a, b in zip(trunk_before, enc.trunk.parameters()))
    assert all(torch.isfinite(p).all() for p in enc.head.parameters())


def test_on_env_step_reuses_acting_features_per_run():
    enc = ENCODERS["gaze"](small_cfg(), 64, 2)
    pixels = torch.randint(0, 256, (2, 2, 3, 64, 64), dtype=torch.uint8)  # [R, N, 3, H, W]
    with torch.no_grad():
        enc({"pixels": pixels}, detach=True)  # acting fills the cache
        feat = enc.trunk(pixels.float() / 255)  # [R, N, C, h, w]
        for p in enc.trunk.parameters():  # features computed from here on differ from the acting ones
            p.mul_(0.5)
        feat_after = enc.trunk(pixels.float() / 255)
    enc.on_env_step({"pixels": pixels}, np.zeros((2, 2)), np.zeros((2, 2), bool))  # the acting features
    enc.on_env_step({"pixels": pixels}, np.zeros((2, 2)), np.ones((2, 2), bool))  # cache used once: recomputed
    for r, buf in enumerate(enc.buffers):
        assert buf.size == 4 and buf.valid[:4].all()
        stored = torch.from_numpy(buf.feats[:4].astype(np.float32))  # [4, C, h*w]
        torch.testing.assert_close(stored, torch.cat([feat[r], feat_after[r]]).flatten(2), atol=2e-3, rtol=2e-3)
        pooled = torch.nn.functional.adaptive_avg_pool2d(feat[r], 3).flatten(1)
        torch.testing.assert_close(torch.from_numpy(buf.pooled[:2]), pooled)
        torch.testing.assert_close(torch.from_numpy(buf.cell_sq[:2]), stored[:2].pow(2).sum(1))
        keys = torch.nn.functional.normalize(feat[r].mean((2, 3)), dim=-1)
        torch.testing.assert_close(torch.from_numpy(buf.keys[:2]), keys)
    with pytest.raises(ValueError, match="pixels"):
        enc.on_env_step(
            {"pixels": torch.zeros((2, 64, 64, 3), dtype=torch.uint8)}, np.zeros((1, 2)), np.zeros((1, 2), bool)
        )
    with pytest.raises(ValueError, match="pixels"):  # channels last is not accepted any more
        enc.on_env_step({"pixels": pixels.permute(0, 1, 3, 4, 2)}, np.zeros((2, 2)), np.zeros((2, 2), bool))


def test_extra_state_round_trips_through_weights_only_load():
    enc = ENCODERS["gaze"](small_cfg(), 64)
    _fill(enc, lambda ep, e, t: float(ep + t), episodes=2)
    enc.auxiliary_update(0)
    ckpt = _roundtrip({"encoder": enc.state_dict(), "extra": enc.extra_state(0)})
    other = ENCODERS["gaze"](small_cfg(), 64)
    other.load_state_dict(ckpt["encoder"])
    other.load_extra_state([ckpt["extra"]])
    a, b = enc.buffers[0], other.buffers[0]
    n = a.size
    assert b.size == n and b.written == a.written
    np.testing.assert_array_equal(b.feats[:n], a.feats[:n])
    np.testing.assert_array_equal(b.pooled[:n], a.pooled[:n])
    np.testing.assert_array_equal(b.cell_sq[:n], a.cell_sq[:n])
    np.testing.assert_array_equal(b.returns[:n], a.returns[:n])
    assert other.rngs[0].bit_generator.state == enc.rngs[0].bit_generator.state
    assert other.head_optimizer.state_dict()["state"].keys() == enc.head_optimizer.state_dict()["state"].keys()
    with pytest.raises(ValueError, match="gaze_buffer_size"):
        ENCODERS["gaze"](small_cfg(gaze_buffer_size=10), 64).load_extra_state([ckpt["extra"]])


def _roundtrip(obj):
    blob = io.BytesIO()
    torch.save(obj, blob)
    blob.seek(0)
    return torch.load(blob, weights_only=True)


def test_a_run_in_a_pack_takes_the_same_contrastive_step_as_alone():
    """Run 1 of a gaze pack of 2 takes the auxiliary step of a pack of one holding its params, buffer and rng."""
    pack = ENCODERS["gaze"](small_cfg(), 64, 2)
    _fill(pack, lambda ep, e, t: float(ep * 2 + e) * (t % 3))  # each run's buffer gets its own features
    pack.rngs[1] = np.random.default_rng(123)  # a run's own mining stream
    pack.auxiliary_update(0)  # Adam moments and a first step behind both runs
    with torch.no_grad():  # run 1's head differs from run 0's
        for p in pack.head.parameters():
            p[1:].add_(0.01 * torch.randn_like(p[1:]))
    # run 1's checkpoint (through torch.save, as a checkpoint goes: slice_state keeps 0-d tensors such as
    # Adam's step by reference, which would otherwise tie both optimisers' step counters together)
    ckpt = _roundtrip({"encoder": slice_state(pack.state_dict(), 1, 2), "extra": pack.extra_state(1)})
    alone = ENCODERS["gaze"](small_cfg(), 64, 1)
    alone.load_state_dict(ckpt["encoder"])
    alone.load_extra_state([ckpt["extra"]])
    assert (
        alone.buffers[0].size == pack.buffers[1].size
        and alone.rngs[0].bit_generator.state == pack.rngs[1].bit_generator.state
    )
    metrics_pack = pack.auxiliary_update(1)
    (metrics_alone,) = alone.auxiliary_update(1)
    assert len(metrics_pack) == 2 and metrics_pack[1]["gaze/triplets"] > 0
    assert metrics_pack[1]["gaze/triplets"] == metrics_alone["gaze/triplets"]
    assert metrics_pack[1] == pytest.approx(metrics_alone, rel=1e-4, abs=1e-6)
    assert metrics_pack[0] != pytest.approx(metrics_alone, rel=1e-4, abs=1e-6)  # run 0 mined its own data
    # the same step up to summation order (tests/numerics.py): measured <= 2e-6 relative on an AVX2 CPU
    for (name, p), q in zip(pack.head.named_parameters(), alone.head.parameters()):
        assert relative_update_difference(p[1:], q, ckpt["encoder"][f"head.{name}"]) < 1e-3, name
        assert not torch.allclose(p[:1], q), name
    assert alone.rngs[0].bit_generator.state == pack.rngs[1].bit_generator.state
    # Adam's moments are running sums of the gradients (no division): their relative difference is the
    # gradients' own, ~1e-7 per operation; measured <= 3.4e-7 on an AVX2 CPU (2026-12-03),
    # the bound leaves ~300x for other kernels
    state = slice_state(pack.head_optimizer.state_dict(), 1, 2)["state"]
    for key, value in alone.head_optimizer.state_dict()["state"].items():
        for moment in ("exp_avg", "exp_avg_sq"):
            assert relative_difference(state[key][moment], value[moment]) < 1e-4, (key, moment)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="--gaze-k must be >= 1, got 0"):
        ENCODERS["gaze"](small_cfg(gaze_k=0), 64)
    with pytest.raises(ValueError, match=r"--gaze-return-discount must be in \(0, 1\], got 1.5"):
        ENCODERS["gaze"](small_cfg(gaze_return_discount=1.5), 64)
    with pytest.raises(SystemExit):  # the same check refuses the flag before anything is built
        parse_config(SACConfig, ["--encoder", "gaze", "--gaze-k", "0"])


@pytest.mark.parametrize("name", ["gaze_patch", "gaze_mix"])
def test_ablation_heads_take_contrastive_steps(name):
    enc = ENCODERS[name](small_cfg(gaze_components=3), 64)
    _fill(enc, lambda ep, e, t: float(ep * 2 + e) * (t % 3))
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    (metrics,) = enc.auxiliary_update(step=0)
    assert (
        metrics["gaze/triplets"] > 0 and np.isfinite(metrics["gaze/spread_loss"]) and metrics["gaze/contrast_loss"] > 0
    )
    changed = {n for n, p in enc.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("head.") for n in changed)


def test_the_return_buffers_memory_is_what_their_arrays_hold():
    cfg = small_cfg(gaze_buffer_size=40)
    enc = ENCODERS["gaze"](cfg, 64)
    buf = enc.buffers[0]
    arrays = (buf.feats, buf.cell_sq, buf.pooled, buf.keys, buf.returns, buf.valid, buf.write_id)
    full = sum(a.nbytes for a in arrays)
    assert ReturnBuffer.bytes_needed(40, enc.feat_shape, buf.key_dim, buf.pooled.shape[1]) == full
    assert enc.host_memory(10) == full // 4  # one entry per env step
    assert enc.host_memory(1_000) == full  # never more than its size
    assert ENCODERS["gaze_nocontrast"](cfg, 64).host_memory(1_000) == 0  # no return buffer
    assert ENCODERS["cnn_rgb"](cfg, 64).host_memory(1_000) == 0
