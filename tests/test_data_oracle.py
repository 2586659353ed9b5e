import numpy as np
import pytest

from data.clicks import clicks_to_map
from data.env import make_env
from data.oracle import is_visible, project_points

GEOM = 5  # mjOBJ_GEOM in the segmentation render


def _geoms_of(model, bodies):
    ids = [model.body(b).id for b in bodies]
    return set(np.where(np.isin(model.geom_bodyid, ids))[0])


def _hits(seg, uv, geoms, radius=1):
    h, w = seg.shape[:2]
    col, row = int(uv[0] * w), int(uv[1] * h)
    win = seg[max(row - radius, 0) : row + radius + 1, max(col - radius, 0) : col + radius + 1]
    return any((g[1] == GEOM and g[0] in geoms) for g in win.reshape(-1, 2))


@pytest.mark.parametrize("size", [64, 256])
def test_projected_gripper_pads_land_on_rendered_pads(size):
    """Each finger pad's centre projects onto that pad's pixels, within ~1 px of their centroid."""
    env = make_env(task="reach-v3", image_size=size)
    for seed in range(3):
        env.reset(seed=seed)
        for _ in range(5):
            env.step(env.action_space.sample())
        seg = env.render_segmentation()
        for name in ("leftpad_geom", "rightpad_geom"):
            gid = env.model.geom(name).id
            (uv,), (depth,) = project_points(env, env.data.geom_xpos[gid][None])
            assert depth > 0 and _hits(seg, uv, {gid}, radius=0 if size == 256 else 1)
            rows, cols = np.where((seg[..., 0] == gid) & (seg[..., 1] == GEOM))
            centroid = np.array([cols.mean() + 0.5, rows.mean() + 0.5]) / size
            assert np.abs(centroid - uv).max() * size < 1.5
    env.close()


@pytest.mark.parametrize("size", [64, 256])
def test_projected_object_lands_on_rendered_drawer(size):
    env = make_env(task="drawer-open-v3", image_size=size)
    geoms = _geoms_of(env.model, ("drawer_link",))
    env.reset(seed=5)
    (uv,), _ = project_points(env, env.mw._get_pos_objects()[:3][None])
    assert _hits(env.render_segmentation(), uv, geoms, radius=1 if size == 64 else 3)
    env.close()


def test_oracle_clicks_are_on_task_parts_and_count_like_humans():
    env = make_env(task="drawer-open-v3", image_size=64)
    rng = np.random.default_rng(0)
    counts, near_gripper = [], []
    for seed in range(6):
        env.reset(seed=seed)
        clicks = env.oracle_clicks(rng)
        assert clicks.dtype == np.float32 and clicks.shape[1] == 2
        assert np.all((clicks >= 0) & (clicks < 1))
        counts.append(len(clicks))
        (tip,), _ = project_points(env, np.asarray(env.mw.tcp_center)[None])
        near_gripper.append(np.mean(np.linalg.norm(clicks - tip, axis=1) < 0.1))
        saliency = clicks_to_map(clicks, 64)
        assert saliency[int(tip[1] * 64), int(tip[0] * 64)] > 0.3  # the tip is salient
    assert 12 <= np.mean(counts) <= 35  # the paper's annotators: 25 +- 5.8
    assert np.mean(near_gripper) > 0.35  # concentrated near the gripper tip
    env.close()


def test_points_behind_geometry_are_not_visible():
    env = make_env(task="reach-v3")
    env.reset(seed=0)
    inside_table = np.array([[0.0, 0.6, -0.2]])  # under the table top
    above = np.asarray(env.mw.tcp_center)[None]
    assert not is_visible(env, inside_table, tolerance=0.01)[0]
    assert is_visible(env, above, tolerance=0.02)[0]
    env.close()
