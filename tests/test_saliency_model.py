"""PiCANet layouts, attention modules, the student, checkpoints and the predictor's input checks."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import vgg

from saliency.picanet import GlobalAttention, LocalAttention, PiCANet, PiCANetConfig
from saliency.predictor import SaliencyPredictor, load_checkpoint, save_checkpoint
from saliency.student import StudentConfig, StudentNet
from saliency.train import deep_supervised_bce, side_weights


def test_local_attention_matches_an_explicit_neighbourhood_sum():
    torch.manual_seed(0)
    att = LocalAttention(3, hidden=8).eval()
    x = torch.randn(2, 3, 6, 5)
    with torch.no_grad():
        out = att(x)
        w = att.attend(x).softmax(1)  # [B, 49, H, W], neighbour k = (dy, dx) in row-major 7x7 order
    xp = F.pad(x, (6, 6, 6, 6))
    expected = torch.zeros_like(x)
    for k in range(49):
        dy, dx = divmod(k, 7)
        shifted = xp[:, :, 2 * dy : 2 * dy + 6, 2 * dx : 2 * dx + 5]  # neighbour at offset 2*(dy-3), 2*(dx-3)
        expected += w[:, k : k + 1] * shifted
    assert torch.allclose(out, expected, atol=1e-5)


def test_global_attention_is_a_convex_combination_over_the_map():
    att = GlobalAttention(4, hidden=8).eval()
    with torch.no_grad():
        const = torch.full((2, 4, 28, 28), 0.7)
        assert torch.allclose(att(const), const, atol=1e-5)  # softmax weights sum to one
        x = torch.randn(1, 4, 28, 28)
        y = att(x)
    assert y.shape == x.shape
    assert (y.amax((2, 3)) <= x.amax((2, 3)) + 1e-5).all() and (y.amin((2, 3)) >= x.amin((2, 3)) - 1e-5).all()


def test_trimmed_layout_builds_only_what_it_reads():
    lll = PiCANet(PiCANetConfig(layout="LLL", input_size=32, width=1.0))
    convs = [m for m in lll.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 10 and convs[-1].out_channels == 512  # up to conv4_3, no conv5 / fc6 / fc7
    assert lll.fc is None
    n_params = sum(p.numel() for p in lll.parameters())
    assert 14.0e6 < n_params < 14.7e6  # the reference trimmed model carried 35.6M
    sides = lll(torch.rand(2, 3, 32, 32))
    assert [tuple(s.shape) for s in sides] == [(2, 1, 4, 4), (2, 1, 8, 8), (2, 1, 16, 16), (2, 1, 32, 32)]
    assert lll.side_sizes == [4, 8, 16, 32]


def test_full_layout_has_global_cells_and_six_side_outputs():
    full = PiCANet(PiCANetConfig(layout="GGLLL", input_size=64, width=0.125))
    modes = [c.mode for c in full.cells]
    assert modes == ["G", "G", "L", "L", "L", "C"]
    assert isinstance(full.cells[0].attention, GlobalAttention) and isinstance(full.cells[2].attention, LocalAttention)
    sides = full(torch.rand(2, 3, 64, 64))
    assert [s.shape[-1] for s in sides] == [8, 8, 8, 16, 32, 64] == full.side_sizes
    assert side_weights(len(sides)) == [0.5, 0.5, 0.5, 0.8, 0.8, 1.0]


def test_deep_supervision_max_pools_the_target():
    target = torch.zeros(1, 1, 8, 8)
    target[0, 0, 3, 5] = 1.0
    sides = [torch.full((1, 1, 2, 2), -20.0), torch.full((1, 1, 8, 8), -20.0)]
    sides[0][0, 0, 0, 1] = 20.0  # the coarse cell containing (3, 5)
    sides[1][0, 0, 3, 5] = 20.0
    assert float(deep_supervised_bce(sides, target)) < 1e-6
    sides[0][0, 0, 0, 1] = -20.0
    assert float(deep_supervised_bce(sides, target)) == pytest.approx(side_weights(2)[0] * 20.0 / 4, rel=1e-4)


def test_backbone_weights_load_and_mismatch_is_explained(tmp_path):
    feats = vgg.make_layers(vgg.cfgs["D"], batch_norm=True)
    path = tmp_path / "vgg16_bn.pth"
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, path)
    model = PiCANet(PiCANetConfig(input_size=32, width=1.0, batch_norm=True))
    model.load_backbone(str(path))
    assert torch.equal(model.features[0].weight, feats[0].weight)
    plain = PiCANet(PiCANetConfig(input_size=32, width=1.0, batch_norm=False))
    with pytest.raises(ValueError, match="--batch-norm"):
        plain.load_backbone(str(path))


def test_student_shape_and_size():
    s = StudentNet(StudentConfig(width=16))
    out = s(torch.rand(3, 3, 64, 64))
    assert len(out) == 1 and out[0].shape == (3, 1, 64, 64)
    assert sum(p.numel() for p in s.parameters()) < 150_000
    with pytest.raises(ValueError, match="64, 64"):
        s(torch.rand(1, 3, 32, 32))


def test_checkpoint_round_trip_and_clear_errors(tmp_path):
    model = PiCANet(PiCANetConfig(input_size=32, width=0.125)).eval()
    path = save_checkpoint(tmp_path / "best.pt", model, "picanet", seen_keys=["00000-00001"])
    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == "picanet" and raw["model"]["width"] == 0.125
    pred = SaliencyPredictor.load(path, "cpu")
    assert pred.kind == "picanet" and pred.seen_keys == {"00000-00001"}
    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    maps = pred(frames)
    assert maps.shape == (5, 64, 64) and maps.dtype == np.float32 and 0 <= maps.min() and maps.max() <= 1
    assert np.allclose(SaliencyPredictor.load(path, "cpu", batch_size=2)(frames), maps, atol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        pred(frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        pred(frames[..., :2])
    # weights of another architecture under this config
    other = StudentNet(StudentConfig(width=8))
    bad = dict(raw, state_dict=other.state_dict())
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="another architecture"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a saliency checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save(dict(raw, kind="vit"), tmp_path / "vit.pt")
    with pytest.raises(ValueError, match="unknown saliency model kind"):
        load_checkpoint(tmp_path / "vit.pt")
    with pytest.raises(FileNotFoundError, match="saliency.train"):
        load_checkpoint(tmp_path / "missing.pt")
