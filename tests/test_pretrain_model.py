"""MultiMAE model: token sampling, masked-only losses, parameter count, frozen-encoder export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pretrain.frozen import ENCODER_FORMAT, FrozenEncoder
from pretrain.model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelConfig,
    MultiMAE,
    count_parameters,
    patchify,
    sample_visible,
    unpatchify,
)

from tiny import TINY_MMAE


def _inputs(b: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.rand(b, 3, 64, 64, generator=g), "saliency": torch.rand(b, 1, 64, 64, generator=g)}


def test_exactly_32_visible_split_by_dirichlet():
    g = torch.Generator().manual_seed(0)
    counts, visible = sample_visible(4000, 2, 64, 32, alpha=1.0, generator=g)
    assert visible.shape == (4000, 128) and counts.shape == (4000, 2)
    assert (visible.sum(1) == 32).all()
    assert (visible[:, :64].sum(1) == counts[:, 0]).all() and (visible[:, 64:].sum(1) == counts[:, 1]).all()
    share = counts[:, 0].double() / 32
    # Dirichlet(1, 1) on two modalities: the rgb share is Uniform(0, 1) (mean 1/2, variance 1/12)
    assert abs(share.mean().item() - 0.5) < 0.02
    assert abs(share.var().item() - 1 / 12) < 0.01
    assert counts.min() == 0 and counts.max() == 32
    hist = np.bincount(counts[:, 0].numpy(), minlength=33)[1:32]  # interior counts are equally likely
    assert hist.min() > 0.5 * hist.mean()
    # tokens within a modality are uniform: every position is visible about equally often
    freq = visible[:, :64].float().mean(0)
    assert (freq - freq.mean()).abs().max() < 0.05
    # one modality: all 32 visible tokens go to it
    c1, v1 = sample_visible(10, 1, 64, 32, generator=g)
    assert (c1[:, 0] == 32).all() and (v1.sum(1) == 32).all()


def test_three_modalities_sum_exactly():
    counts, visible = sample_visible(500, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    assert (counts.sum(1) == 32).all() and (visible.sum(1) == 32).all()
    assert (counts >= 0).all() and (counts <= 64).all()


def test_forward_shapes_and_visible_count():
    model = MultiMAE(ModelConfig(**TINY_MMAE))
    loss, losses, preds, visible = model(_inputs(), generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"rgb", "saliency", "rgb_norm"}
    assert (
        preds["rgb"].shape == (4, 64, 192)
        and preds["saliency"].shape == (4, 64, 64)
        and preds["rgb_norm"].shape == (4, 64, 192)
    )
    assert (visible.sum(1) == 32).all()
    expected = losses["rgb"] + 10 * losses["saliency"] + losses["rgb_norm"]
    assert torch.allclose(loss, expected)
    rgb_only = MultiMAE(ModelConfig(modalities=("rgb",), **TINY_MMAE))
    _, l2, p2, v2 = rgb_only({"rgb": _inputs()["rgb"]})
    # num_visible 0 (the default): a quarter of all input tokens, 16 of rgb's 64 (masking ratio 0.75)
    assert set(l2) == {"rgb", "rgb_norm"} and v2.shape == (4, 64) and (v2.sum(1) == 16).all()


def test_patchify_roundtrip():
    x = torch.rand(2, 3, 64, 64)
    assert patchify(x, 8).shape == (2, 64, 192)
    assert torch.equal(unpatchify(patchify(x, 8), 8, 3), x)


def test_loss_only_on_masked_patches():
    model = MultiMAE(ModelConfig(**TINY_MMAE))
    inputs = _inputs()
    _, losses, preds, visible = model(inputs, generator=torch.Generator().manual_seed(3))
    base = {k: v.item() for k, v in model.losses(inputs, preds, visible).items()}
    assert base == pytest.approx({k: v.item() for k, v in losses.items()})
    for m_i, m in enumerate(("rgb", "saliency")):
        vis = visible[:, m_i * 64 : (m_i + 1) * 64]  # [B, 64]
        pix = unpatchify(vis[..., None].float().expand(-1, -1, inputs[m].shape[1] * 64), 8, inputs[m].shape[1]).bool()
        changed = dict(inputs)
        changed[m] = torch.where(pix, torch.rand_like(inputs[m]), inputs[m])  # new targets at visible patches only
        after = {k: v.item() for k, v in model.losses(changed, preds, visible).items()}
        assert after == pytest.approx(base, abs=0, rel=1e-6), m
        # Flat grey targets at masked patches: a decisive change for every loss, the patch-normalised
        # one included (flat patches normalise to 0), whatever the random inputs were.
        changed[m] = torch.where(pix, inputs[m], torch.full_like(inputs[m], 0.5))
        moved = model.losses(changed, preds, visible)
        outs = ("rgb", "rgb_norm") if m == "rgb" else ("saliency",)
        assert all(abs(moved[o].item() - base[o]) > 1e-3 for o in outs)


def test_paper_size_parameter_count():
    full = MultiMAE(ModelConfig())
    enc = sum(p.numel() for n, p in full.named_parameters() if not n.startswith("decoders."))
    assert 12.0e6 < count_parameters(full) < 13.5e6  # three decoders (reference: 13.0M)
    assert 3.1e6 < enc < 3.3e6
    assert len(full.decoders) == 3 and len(MultiMAE(ModelConfig(modalities=("rgb",))).decoders) == 2
    assert not any(b.requires_grad for b in full.buffers())  # sin-cos positions are fixed, precomputed buffers


def test_tiny_model_overfits_a_handful_of_frames():
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-0.5, 0.5, 64), torch.linspace(-0.5, 0.5, 64), indexing="ij")
    angle = torch.tensor([0.0, 1.6, 3.1, 4.7])[:, None, None, None] + torch.tensor([0.0, 0.5, 1.0])[:, None, None]
    x = 0.5 + 0.8 * (angle.cos() * xx + angle.sin() * yy)  # [4, 3, 64, 64]: 4 frames of colour ramps
    frames = {"rgb": x, "saliency": x.mean(1, keepdim=True)}
    model = MultiMAE(ModelConfig(dim=64, depth=1, num_heads=2, decoder_dim=64, decoder_depth=1, decoder_heads=2))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)  # fresh random masks every step
    losses = []
    for _ in range(180):
        loss = model(frames, generator=gen)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) * 10 <= losses[0], (losses[0], losses[-10:])


def test_frozen_encoder_export_roundtrip(tmp_path):
    cfg = ModelConfig(**TINY_MMAE)
    model = MultiMAE(cfg)
    path = tmp_path / "encoder.pt"
    torch.save(
        {"format": ENCODER_FORMAT, "model_config": cfg.to_dict(), "state_dict": model.encoder_state_dict(), "step": 7},
        path,
    )
    assert not any(k.startswith("decoders.") for k in torch.load(path, weights_only=True)["state_dict"])
    enc = FrozenEncoder.load(path)
    assert enc.inputs == ("rgb", "saliency") and enc.out_dim == 32 and not enc.training
    x = _inputs(3)
    out = enc(x["rgb"], x["saliency"])
    assert out.shape == (3, 32) and not out.requires_grad
    manual = model.encode(model.tokenize({"rgb": x["rgb"], "saliency": x["saliency"]})).mean(1)  # all 1+128 tokens
    assert torch.allclose(out, manual, atol=1e-6)
    assert not torch.allclose(out, enc(x["rgb"], torch.zeros_like(x["saliency"])))  # saliency matters
    po = FrozenEncoder.load(path, inputs=("rgb",))
    assert torch.allclose(po(x["rgb"]), model.encode(model.tokenize({"rgb": x["rgb"]})).mean(1), atol=1e-6)
    assert torch.equal(po(x["rgb"]), po(x["rgb"], torch.zeros_like(x["saliency"])))  # PO ignores saliency
    with pytest.raises(ValueError, match="takes saliency"):
        enc(x["rgb"])
    with pytest.raises(ValueError, match="no feature statistics"):
        FrozenEncoder.load(path, standardize=True)
    rgb_only = MultiMAE(ModelConfig(modalities=("rgb",), **TINY_MMAE))
    torch.save(
        {"format": ENCODER_FORMAT, "model_config": rgb_only.cfg.to_dict(), "state_dict": rgb_only.encoder_state_dict()},
        path,
    )
    with pytest.raises(ValueError, match="pretrained on"):
        FrozenEncoder.load(path, inputs=("rgb", "saliency"))
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a MultiMAE encoder"):
        FrozenEncoder.load(tmp_path / "other.pt")


def test_rgb_targets_are_the_normalised_image_the_encoder_sees():
    """MultiMAE reconstructs the ImageNet-normalised rgb (its loss weighs rgb against saliency x10 on that
    scale); `to_pixels` maps a prediction back to [0, 1] for pictures and pixel-space errors."""
    model = MultiMAE(ModelConfig(**TINY_MMAE))
    x = _inputs(2)
    targets = model.targets(x)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(targets["rgb"], patchify((x["rgb"] - mean) / std, 8))
    torch.testing.assert_close(model.to_pixels("rgb", targets["rgb"]), patchify(x["rgb"], 8), atol=1e-6, rtol=0)
    torch.testing.assert_close(targets["saliency"], patchify(x["saliency"], 8))
    assert torch.equal(model.to_pixels("saliency", targets["saliency"]), targets["saliency"])
    legacy = MultiMAE(ModelConfig(input_norm="none", **TINY_MMAE))  # models made before the normalisation
    torch.testing.assert_close(legacy.targets(x)["rgb"], patchify(x["rgb"], 8))


def test_a_batch_in_passes_gives_the_one_pass_gradient():
    """Gradient accumulation (pretrain.train.backward_in_passes): passes of 5, 5, 5 and 1 images draw the
    whole batch's masks first and average every loss over the whole batch's masked patches, so loss and
    gradient are the one pass's (float rounding aside); one pass is the model's own masked forward."""
    import contextlib

    from pretrain.train import backward_in_passes

    inputs = _inputs(16, seed=5)
    results = []
    for micro in (0, 5):
        torch.manual_seed(0)
        model = MultiMAE(ModelConfig(**TINY_MMAE))
        loss, losses = backward_in_passes(
            model, None, inputs, torch.Generator().manual_seed(3), micro, contextlib.nullcontext()
        )
        results.append((loss, losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (one, one_parts, one_grads), (passes, parts, grads) = results
    torch.manual_seed(0)
    own = MultiMAE(ModelConfig(**TINY_MMAE))(inputs, generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(one, own.detach())
    assert torch.allclose(passes, one, rtol=1e-5) and parts.keys() == one_parts.keys() == {
        "rgb",
        "saliency",
        "rgb_norm",
    }
    assert all(torch.allclose(parts[k], one_parts[k], rtol=1e-5) for k in parts)
    assert grads.keys() == one_grads.keys() and len(grads) > 10
    for name, g in grads.items():
        assert torch.allclose(g, one_grads[name], rtol=1e-4, atol=1e-7 * one_grads[name].abs().max()), name
