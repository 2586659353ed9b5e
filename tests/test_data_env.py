import gc

import mujoco
import numpy as np
import pytest

from data.env import EnvConfig, make_env
from data.oracle import project_points


@pytest.fixture(scope="module")
def reach():
    env = make_env(task="reach-v3", seed=3)
    yield env
    env.close()


def test_observations_shapes_and_success(reach):
    obs, info = reach.reset(seed=3)
    assert obs["pixels"].shape == (64, 64, 3) and obs["pixels"].dtype == np.uint8
    assert obs["state"].shape == (39,) and obs["state"].dtype == np.float32
    obs, r, term, trunc, info = reach.step(np.zeros(4))
    assert term is False and trunc is False and "success" in info and isinstance(r, float)


def test_frames_are_upright(reach):
    """The gripper (high above the table) projects above the table's far edge, and the
    rendered frame is brighter (wall/sky) at the top where the raw corner render has the floor."""
    reach.reset(seed=0)
    tip = np.asarray(reach.mw.tcp_center)
    below = tip - np.array([0, 0, 0.15])  # a point on the table under the gripper
    (tip_uv, below_uv), _ = project_points(reach, np.stack([tip, below]))
    assert tip_uv[1] < below_uv[1], "world-up must be image-up"
    seg = reach.render_segmentation()
    m = reach.model
    table = np.where(m.geom_bodyid == m.body("tablelink").id)[0]
    rows = np.where(np.isin(seg[..., 0], table) & (seg[..., 1] == 5))[0]  # 5: mjOBJ_GEOM
    assert len(rows) > 100 and rows.mean() > 32, "the table should fill the lower half"


def test_seeded_reset_is_reproducible_and_goals_rerandomise():
    a, b = make_env(task="reach-v3"), make_env(task="reach-v3")
    oa, _ = a.reset(seed=11)
    ob, _ = b.reset(seed=11)
    assert np.array_equal(oa["pixels"], ob["pixels"]) and np.array_equal(oa["state"], ob["state"])
    goals = {tuple(np.round(a.reset()[0]["state"][-3:], 4)) for _ in range(4)}
    assert len(goals) == 4, "goal must be re-randomised every episode"
    a.close()
    b.close()


def test_truncates_at_time_limit_and_never_terminates():
    env = make_env(task="reach-v3", max_episode_steps=5)
    env.reset(seed=0)
    flags = [env.step(env.action_space.sample())[2:4] for _ in range(5)]
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])
    env.close()


def test_several_envs_in_one_process_render_correct_frames():
    a = make_env(task="reach-v3", seed=1)
    a.reset(seed=1)
    first = a.render().copy()
    b = make_env(task="drawer-open-v3", seed=2)
    ob, _ = b.reset(seed=2)
    assert ob["pixels"].mean() > 20, "second env rendered black"
    again = a.render()
    assert np.array_equal(first, again), "first env's frame changed after a second env was created"
    b.close()
    del b
    gc.collect()
    assert np.array_equal(first, a.render()), "first env's frame changed after the second was collected"
    a.close()


def test_fast_mode_keeps_frames_close_to_default():
    fast, slow = make_env(task="reach-v3"), make_env(task="reach-v3", render_quality="default")
    f, s = fast.reset(seed=4)[0]["pixels"].astype(float), slow.reset(seed=4)[0]["pixels"].astype(float)
    assert np.abs(f - s).mean() < 20  # same scene; only shadows/reflections/antialiasing differ
    fast.close()
    slow.close()


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="reach-v3"):
        make_env(task="reach-v9")
    with pytest.raises(ValueError, match="camera"):
        EnvConfig(camera="nope").validate()


def test_vector_env_same_step_autoreset():
    from rl.envs import make_envs

    venv = make_envs(
        EnvConfig(task="reach-v3", max_episode_steps=3), 2, pixels=True, oracle_saliency=False, seed_bases=[0]
    )
    try:
        obs, _ = venv.reset(seed=0)
        assert obs["pixels"].shape == (2, 64, 64, 3)
        assert not np.array_equal(obs["pixels"][0], obs["pixels"][1])
        for _ in range(3):
            obs, r, term, trunc, info = venv.step(np.zeros((2, 4), np.float32))
        assert trunc.all() and "final_obs" in info
        assert info["final_obs"][0]["pixels"].shape == (64, 64, 3)
    finally:
        venv.close()


@pytest.mark.parametrize("task", ["reach-v3", "drawer-open-v3"])
def test_reset_shows_and_observes_this_episodes_placement(task):
    """Meta-World's reset places goal and objects without refreshing the positions it then reads: the reset
    frame must show this episode's placement and the state must hold it, exactly as after a fresh forward pass."""
    env = make_env(task=task, seed=3)
    goal = env.model.site("goal").id
    for _ in range(3):  # from the second reset on, stale positions would be the previous episode's
        obs = env.reset()[0]
        np.testing.assert_allclose(env.data.site_xpos[goal], env.raw_state[-3:], atol=1e-9)
        mujoco.mj_forward(env.model, env.data)
        np.testing.assert_array_equal(env.render(), obs["pixels"])
        fresh = env.mw._get_obs()
        np.testing.assert_array_equal(obs["state"][:18], fresh[:18].astype(np.float32))
    env.close()
