import numpy as np
import pytest
import torch

from data.clicks import clicks_to_map, pixel_to_click, validate_clicks
from data.preprocess import frames_to_tensor


def test_single_click_peaks_at_its_pixel_with_documented_width():
    m = clicks_to_map([pixel_to_click(10, 40, 64, 64)], 64)
    assert m.shape == (64, 64) and m.dtype == np.float32
    assert np.unravel_index(m.argmax(), m.shape) == (40, 10)
    assert m.max() == pytest.approx(1.0)
    sigma = 0.025 * 64  # 1.6 px
    assert m[40, 11] == pytest.approx(np.exp(-0.5 / sigma**2), rel=1e-5)


def test_width_is_a_fraction_of_the_image_so_maps_agree_across_resolutions():
    clicks = [(0.3, 0.6), (0.7, 0.2)]
    small, big = clicks_to_map(clicks, 64), clicks_to_map(clicks, 400)
    # 400 px, sigma 10 px, as the paper's canvas; downsampled it matches the 64 px map.
    assert big[240, 120] == pytest.approx(1.0, abs=1e-3)
    pooled = torch.nn.functional.interpolate(torch.from_numpy(big)[None, None], size=(64, 64), mode="area")[
        0, 0
    ].numpy()
    assert np.abs(pooled / pooled.max() - small).max() < 0.12


def test_two_clicks_sum_then_normalise():
    m = clicks_to_map([(0.5, 0.5), (0.5, 0.5)], 32)
    assert m.max() == pytest.approx(1.0)
    m2 = clicks_to_map([(0.25, 0.5), (0.75, 0.5)], 32)
    assert m2[16, 8] == pytest.approx(m2[16, 24], rel=1e-6)


def test_no_clicks_gives_zero_map_and_bad_clicks_are_refused():
    assert clicks_to_map([], 16).sum() == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clicks_to_map([(1.2, 0.5)], 16)
    with pytest.raises(ValueError, match="shape"):
        validate_clicks([1, 2, 3])
    with pytest.raises(ValueError, match="outside"):
        pixel_to_click(64, 3, 64, 64)


def test_preprocess_is_one_resizing_path():
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    x = frames_to_tensor(frames)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    assert torch.allclose(x[1, :, 5, 7] * 255, torch.from_numpy(frames[1, 5, 7]).float())
    up = frames_to_tensor(frames, size=224)
    assert up.shape == (2, 3, 224, 224) and 0 <= up.min() and up.max() <= 1
    assert torch.equal(frames_to_tensor(torch.from_numpy(frames), size=224), up)
    with pytest.raises(TypeError, match="uint8"):
        frames_to_tensor(frames.astype(np.float32))
