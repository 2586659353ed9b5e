"""Sharp frames for annotators: stored scene states re-render the exact collected scene at any size."""

import numpy as np
import pytest

import annotate_app.render as render_mod
from annotate_app.app import Annotator, frames_line
from annotate_app.render import display_frames, render_dir, task_line
from annotate_app.store import AnnotatorStore, create_or_load_frameset
from annotate_app.synthetic import synthetic_shards
from common.cli import from_flat
from data.clicks import clicks_to_map
from data.collect import CollectConfig, collect
from data.env import make_env
from data.oracle import project_points
from data.shards import iter_raw, iter_samples, list_shards, read_manifest, tar_member_bytes

GEOM = 5  # mjOBJ_GEOM in MuJoCo's segmentation render
TASK = "drawer-open-v3"  # a task with an object (the drawer), a goal and the gripper


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / TASK
    # 10-step episodes: several reset frames (step 0), whose render state Meta-World's reset leaves stale
    collect(
        from_flat(CollectConfig, task=TASK, frames=24, shard_size=12, episode_steps=10, out=str(out)), progress=False
    )
    return out


@pytest.fixture(scope="module")
def rendered(folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("ann")
    fs = create_or_load_frameset(root, TASK, folder, n=4, seed=3)
    return root, fs, display_frames(fs, root, scale=8)


def on_body(env, seg: np.ndarray, uv: np.ndarray, bodies: set[int], radius: int) -> bool:
    """True when a geom of one of `bodies` is drawn within `radius` px of normalised point `uv`."""
    h, w = seg.shape[:2]
    col, row = int(uv[0] * w), int(uv[1] * h)
    win = seg[max(row - radius, 0) : row + radius + 1, max(col - radius, 0) : col + radius + 1].reshape(-1, 2)
    return any(t == GEOM and env.model.geom_bodyid[g] in bodies for g, t in win)


def test_64px_rerenders_equal_the_stored_frames_exactly(folder):
    """Tolerance 0: replaying the episode's seeded reset and the physics state reproduces every
    frame bit for bit, reset frames (step 0) included."""
    env = make_env(task=TASK, image_size=64)
    steps = []
    for shard in list_shards(folder):
        for s in iter_samples(shard):
            env.restore_scene(s["scene"])
            assert np.array_equal(env.render(), s["rgb"]), s["key"]
            steps.append(s["meta"]["step"])
    env.close()
    assert len(steps) == 24 and steps.count(0) >= 2 and max(steps) == 10


def test_the_manifest_states_the_scene_cost_in_bytes_per_sample(folder):
    cost = read_manifest(folder)["scene"]
    raw = next(iter(iter_raw(list_shards(folder)[0])))
    assert cost["field"] == "scene.npy" and "scene.npy" in read_manifest(folder)["fields"]
    assert cost["bytes_per_sample"] == tar_member_bytes(raw["scene.npy"]) == 1024  # header + one 512-byte block
    assert cost["physics_values"] == 28  # drawer-open-v3: time, qpos 10, qvel 10, mocap pos 3 + quat 4
    others = sum(tar_member_bytes(raw[f]) for f in ("rgb.png", "state.npy", "clicks.npy", "meta.json"))
    assert cost["bytes_per_sample"] < 0.2 * others


def test_clicks_on_projected_points_land_on_those_objects_in_the_large_render(rendered):
    root, fs, display = rendered
    assert display.rendered == [True] * 4 and display.note == ""
    assert sorted(p.name for p in render_dir(root, TASK, "fast", 512).iterdir()) == sorted(f"{k}.png" for k in fs.keys)
    ann = Annotator(AnnotatorStore(root, fs, "alice"), display_size=512, display=display)
    env = make_env(task=TASK, image_size=512)
    drawer = {env.model.body("drawer_link").id}
    pads = {env.model.body("leftpad").id, env.model.body("rightpad").id}
    _, _, _, state = ann.new_session()
    for i in range(len(fs)):
        env.restore_scene(fs.scenes[i])
        assert np.array_equal(env.render(), display.images[i])  # the cached picture is this scene
        seg = env.render_segmentation()
        handle = env.mw._get_pos_objects()[:3]
        pad = env.data.body("leftpad").xpos
        (uv_obj, uv_pad), depth = project_points(env, np.stack([handle, pad]))
        assert (depth > 0).all()
        state["index"] = i
        for uv, bodies in ((uv_obj, drawer), (uv_pad, pads)):
            col, row = int(uv[0] * 512), int(uv[1] * 512)
            assert on_body(env, seg, uv, bodies, radius=2)  # the projected point is on that object
            ann.click(state, True, float(col), float(row))  # the annotator clicks that pixel
        saved = np.array([[c["x"], c["y"]] for c in ann.store.read(i)["clicks"]])
        assert np.abs(saved - np.stack([uv_obj, uv_pad])).max() <= 1 / 512  # normalised, exact to the pixel
        assert all(on_body(env, seg, c, b, radius=2) for c, b in zip(saved, (drawer, pads)))
        # the exported 64-px map peaks at the handle's pixel of the stored frame
        m = clicks_to_map(saved[:1], 64)
        assert np.unravel_index(m.argmax(), m.shape) == (int(saved[0, 1] * 64), int(saved[0, 0] * 64))
    env.close()


def test_large_frames_are_sharp_renders_not_enlarged_pixels(rendered):
    _, fs, display = rendered
    img = display.images[0].astype(int)  # [512, 512, 3]
    blocks = img.reshape(64, 8, 64, 8, 3)
    flat = (blocks == blocks[:, :1, :, :1]).all(axis=(1, 3, 4)).mean()  # share of uniform 8x8 blocks
    assert flat < 0.75  # an enlarged 64-px frame is 100% uniform blocks
    small = img.reshape(64, 8, 64, 8, 3).mean(axis=(1, 3))
    assert np.abs(small - fs.images[0]).mean() < 12  # yet the same picture at 64 px


def test_renders_are_cached_and_the_quality_is_a_choice(rendered, monkeypatch):
    root, fs, fast = rendered

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(render_mod, "SceneRenderer", no_render)
    again = display_frames(fs, root, scale=8)
    assert all(np.array_equal(a, b) for a, b in zip(again.images, fast.images))
    monkeypatch.undo()
    default = display_frames(fs, root, scale=8, quality="default")
    assert default.rendered == [True] * 4 and render_dir(root, TASK, "default", 512).is_dir()
    diff = np.abs(default.images[0].astype(int) - fast.images[0]).max(-1)
    assert 0.02 < (diff > 8).mean() < 0.6  # shadows and multisampling change the picture, not the scene


def test_unreproducible_scenes_fall_back_and_say_why(folder, tmp_path):
    fs = create_or_load_frameset(tmp_path / "ann", TASK, folder, n=3, seed=3)
    fs.scenes[0]["reset_seed"] += 1  # replays another placement
    fs.scenes[1]["physics"][1:11] += 0.05  # another arm pose than the stored frame shows
    display = display_frames(fs, tmp_path / "ann", scale=8)
    assert display.rendered == [False, False, True]
    assert np.array_equal(display.images[0], np.repeat(np.repeat(fs.images[0], 8, 0), 8, 1))
    assert (
        "frame 1: replaying reset seed" in display.note
        and "frame 2: its re-render differs from the stored frame" in display.note
    )


def test_folders_without_scene_states_show_enlarged_frames_and_say_so(tmp_path):
    shards = synthetic_shards(tmp_path / "shards", frames=10)
    fs = create_or_load_frameset(tmp_path / "ann", "reach-v3", shards, n=3)
    assert fs.scenes is None and "render" not in fs.info
    display = display_frames(fs, tmp_path / "ann", scale=8)
    assert display.rendered == [False] * 3 and "stores no scene states" in display.note
    ann = Annotator(AnnotatorStore(tmp_path / "ann", fs, "bob"), display_size=512, display=display)
    assert "stores no scene states" in frames_line(ann, None)
    assert not (tmp_path / "ann" / "reach-v3" / "renders").exists()


def test_the_page_names_the_task_in_one_line():
    assert task_line("reach-v3") == "reach: move the gripper to the red goal ball"
    assert task_line("drawer-open-v3").startswith("drawer open: ")
    assert task_line("pick-place-v3") == "pick place: the gripper must pick place (Meta-World task pick-place-v3)"
    assert "\n" not in task_line("door-open-v3")


def test_render_quality_flag_is_checked(capsys):
    from annotate_app.app import AppConfig
    from common.cli import parse_config

    assert parse_config(AppConfig, ["--annotator", "a", "--render-quality", "default"]).render_quality == "default"
    with pytest.raises(SystemExit):
        parse_config(AppConfig, ["--annotator", "a", "--render-quality", "ultra"])
    assert "--render-quality must be one of fast, default" in capsys.readouterr().err
