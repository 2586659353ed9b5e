"""rl.evaluate: a trained agent's evaluation at fixed seeds, its videos and overlays, and the input files a run records."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from common.cli import from_flat
from rl.config import SACConfig
from rl.envs import EVAL_SEED_BASE, TRAIN_SEED_STRIDE
from rl.evaluate import (
    EvaluateConfig,
    clip,
    evaluate,
    gaze_overlay,
    load_agent,
    main,
    report_clips,
    saliency_overlay,
    video_frames,
    write_video,
)
from rl.provenance import INPUTS_KEY, run_inputs
from rl.sac import run as sac_run
from rl.workspace import Pack, checkpoint_steps, train

from tiny import TINY_MMAE, TINY_SAC

TINY = TINY_SAC | dict(
    steps=120, random_steps=60, max_episode_steps=30, eval_episodes=2, log_every=60, checkpoint_every=60
)


def tiny(out: Path, encoder: str, **kw) -> SACConfig:
    return from_flat(SACConfig, **{**TINY, "encoder": encoder, "out": str(out), **kw})


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory) -> Path:
    """120 steps of cnn_rgb (30-step episodes), evaluated on 2 episodes at the end."""
    return sac_run(tiny(tmp_path_factory.mktemp("sac") / "cnn", "cnn_rgb"))


@pytest.fixture(scope="module")
def mmae_export(tmp_path_factory) -> Path:
    """A tiny rgb MultiMAE encoder export (random weights) at runs/mmae/rgb/reach-v3/encoder.pt of a root."""
    from pretrain.frozen import encoder_blob, identity_statistics
    from pretrain.model import ModelConfig, MultiMAE

    root = tmp_path_factory.mktemp("root")
    torch.manual_seed(0)
    cfg = ModelConfig(modalities=("rgb",), **TINY_MMAE)
    path = root / "runs/mmae/rgb/reach-v3/encoder.pt"
    path.parent.mkdir(parents=True)
    torch.save(encoder_blob(MultiMAE(cfg, decoders=False), identity_statistics(cfg)), path)
    return path


def test_evaluation_repeats_the_runs_final_evaluation(cnn_run: Path):
    """With the run's own seed the episodes are those of its training evaluation: the same success and returns."""
    report = json.loads(evaluate(EvaluateConfig(run=str(cnn_run), episodes=2)).read_text())
    summary = json.loads((cnn_run / "summary.json").read_text())
    assert report["checkpoint"] == str(cnn_run / "agent.pt") and report["step"] == 120
    assert [e["seed"] for e in report["episodes"]] == [EVAL_SEED_BASE, EVAL_SEED_BASE + 1]
    assert [e["steps"] for e in report["episodes"]] == [30, 30]
    assert report["success_rate"] == summary["success_rate"]
    assert report["return_mean"] == pytest.approx(summary["return_mean"], rel=1e-6)
    assert report["return_mean"] == pytest.approx(np.mean([e["return"] for e in report["episodes"]]))
    # another seed: other episodes (other goals), other returns
    other = json.loads(evaluate(EvaluateConfig(run=str(cnn_run), episodes=2, seed=3)).read_text())
    assert other["episodes"][0]["seed"] == EVAL_SEED_BASE + 3 * TRAIN_SEED_STRIDE
    assert other["episodes"][0]["return"] != report["episodes"][0]["return"]


def test_a_pack_run_evaluates_from_its_checkpoint(tmp_path: Path):
    """Seed 1 of a pack of two, its agent.pt gone: the newest checkpoint is loaded, and the numbers are its summary's."""
    dirs = train([tiny(tmp_path / f"seed{s}", "state", seed=s) for s in (0, 1)])
    (dirs[1] / "agent.pt").unlink()
    report = json.loads(evaluate(EvaluateConfig(run=str(dirs[1]), episodes=2, out=str(tmp_path / "eval"))).read_text())
    summary = json.loads((dirs[1] / "summary.json").read_text())
    assert (
        Path(report["checkpoint"]).name == f"checkpoint-{checkpoint_steps(dirs[1])[-1]:09d}.pt"
        and report["step"] == 120
    )
    assert report["episodes"][0]["seed"] == EVAL_SEED_BASE + TRAIN_SEED_STRIDE  # the run's own seed, 1
    assert report["return_mean"] == pytest.approx(summary["return_mean"], rel=1e-6)
    assert (tmp_path / "eval" / f"{Path(report['checkpoint']).stem}-seed1-2ep.json").is_file()


def test_videos_show_the_observations_upscaled(cnn_run: Path, tmp_path: Path):
    import imageio.v3 as iio
    from PIL import Image

    path = evaluate(
        EvaluateConfig(
            run=str(cnn_run), episodes=2, video=True, video_episodes=1, frame_stride=3, scale=2, out=str(tmp_path)
        )
    )
    video = iio.imread(json.loads(path.read_text())["video"])
    assert video.shape == (10, 128, 128, 3)  # 30 steps, every 3rd, of the first episode
    loaded = load_agent(cnn_run)
    from rl.evaluate import make_observer, rollout

    results, episodes = rollout(loaded, make_observer(loaded), 1, record=1, stride=3)
    frames = video_frames(episodes[0], 2)
    first = episodes[0]["frames"][0]
    assert frames[0].shape == (128, 128, 3)
    # below the caption band, a frame is the observation with every pixel repeated 2 x 2
    assert np.array_equal(frames[0][40:], first.repeat(2, 0).repeat(2, 1)[40:])
    assert np.abs(video[0][40:].astype(int) - frames[0][40:]).mean() < 8  # H.264 is lossy
    gif = write_video(frames, tmp_path / "ep.gif", fps=10)
    with Image.open(gif) as im:
        assert (im.n_frames, im.size, im.info["duration"], im.info["loop"]) == (10, (128, 128), 100, 0)
    with pytest.raises(ValueError, match=r"\.mp4, \.gif or \.webp"):
        write_video(frames, tmp_path / "ep.avi")
    clip_path = clip(cnn_run, tmp_path / "clip.webp", max_steps=12, stride=2, scale=3)
    with Image.open(clip_path) as im:
        assert (im.n_frames, im.size) == (6, (192, 192))


def test_a_trained_runs_video_with_the_saliency_overlay_shows_its_saliency_source(cnn_run: Path, tmp_path: Path):
    """`rl.evaluate --video --overlay saliency` end to end on a trained run whose encoder reads no
    saliency: the video is the episode's frames with the run's saliency source (oracle here) drawn in
    jet, red at the map's peak, and the file says which overlay it carries."""
    import imageio.v3 as iio

    from rl.evaluate import make_observer, rollout

    report = json.loads(
        evaluate(
            EvaluateConfig(
                run=str(cnn_run), episodes=1, video=True, frame_stride=3, scale=2, overlay="saliency", out=str(tmp_path)
            )
        ).read_text()
    )
    assert report["video"].endswith("-saliency.mp4")
    video = iio.imread(report["video"])
    assert video.shape == (10, 128, 128, 3)
    loaded = load_agent(cnn_run)
    _, episodes = rollout(loaded, make_observer(loaded, saliency=True), 1, record=1, stride=3)
    overlaid, plain = video_frames(episodes[0], 2, "saliency"), video_frames(episodes[0], 2)
    sal = episodes[0]["saliency"][0]  # [64, 64] in [0, 1]
    assert sal.shape == (64, 64) and sal.max() > 0.5 and sal.min() < 0.1
    below_caption = slice(40, None)
    assert np.abs(video[0][below_caption].astype(int) - overlaid[0][below_caption]).mean() < 8  # H.264 is lossy
    assert np.abs(overlaid[0][below_caption].astype(int) - plain[0][below_caption]).mean() > 20
    y, x = np.unravel_index(sal.argmax(), sal.shape)
    assert 2 * y >= 40  # the oracle's peak (the hand, the goal) lies below the caption band
    red, _, blue = overlaid[0][2 * y, 2 * x].astype(int)
    assert red > blue + 40  # jet's top is red


def test_random_actions_play_the_runs_evaluation_episodes(cnn_run: Path, tmp_path: Path):
    """`--policy random --run`: the run's task, episode length and seed (its evaluation episodes' seeds), no weights
    read; each episode's actions come from its own seed, so the first episodes of a longer evaluation are the same;
    --task plays the task's at EnvConfig's defaults."""
    (tmp_path / "run").mkdir()
    shutil.copy(cnn_run / "config.json", tmp_path / "run")  # the config alone: no agent.pt, no checkpoint
    three = json.loads(evaluate(EvaluateConfig(run=str(tmp_path / "run"), policy="random", episodes=3)).read_text())
    assert Path(three["config"]["run"]) == tmp_path / "run"
    assert (tmp_path / "run/evaluate/random-seed0-3ep.json").is_file()
    assert (three["policy"], three["task"], three["step"], three["checkpoint"]) == ("random", "reach-v3", 0, None)
    assert [(e["seed"], e["steps"]) for e in three["episodes"]] == [(EVAL_SEED_BASE + k, 30) for k in range(3)]
    assert three["return_mean"] == pytest.approx(np.mean([e["return"] for e in three["episodes"]]))
    two = json.loads(
        evaluate(EvaluateConfig(run=str(tmp_path / "run"), policy="random", episodes=2, out=str(tmp_path))).read_text()
    )
    assert [e["return"] for e in two["episodes"]] == [e["return"] for e in three["episodes"][:2]]
    # random actions move the arm otherwise than the trained policy does, on the same episodes
    agent = json.loads(evaluate(EvaluateConfig(run=str(cnn_run), episodes=2, out=str(tmp_path))).read_text())
    assert [e["seed"] for e in agent["episodes"]] == [e["seed"] for e in two["episodes"]]
    assert agent["return_mean"] != pytest.approx(two["return_mean"])
    task = json.loads(
        evaluate(
            EvaluateConfig(task="reach-v3", policy="random", seed=3, episodes=1, episode_steps=20, out=str(tmp_path))
        ).read_text()
    )
    assert [(e["seed"], e["steps"]) for e in task["episodes"]] == [(EVAL_SEED_BASE + 3 * TRAIN_SEED_STRIDE, 20)]
    assert (tmp_path / "random-seed3-1ep.json").is_file() and task["run"] is None


def test_saliency_overlay_is_red_where_the_map_is_high():
    frame = np.full((8, 8, 3), 128, np.uint8).repeat(4, 0).repeat(4, 1)
    sal = np.zeros((8, 8), np.float32)
    sal[2, 5] = 1.0
    out = saliency_overlay(frame, sal, 4).astype(int)
    hot, cold = out[2 * 4 + 2, 5 * 4 + 2], out[30, 2]
    assert hot[0] > 170 and hot[2] < 110  # jet's top is red
    assert cold[2] > cold[0] + 40  # jet's bottom is dark blue


def test_gaze_overlay_draws_the_attention_peak_and_the_gaussian():
    from rl.gaze_viz import cell_centre_px

    frame = np.zeros((64 * 2, 64 * 2, 3), np.uint8)
    attention = np.zeros((11, 11), np.float32)
    attention[5, 8] = 1.0  # row 5 (y), column 8 (x)
    gaze = {
        "attention": attention,
        "mu": np.array([[0.0, 0.0]]),
        "sigma": np.array([[0.2, 0.2]]),
        "rho": np.array([0.0]),
        "weight": np.array([1.0]),
    }
    out = gaze_overlay(frame, gaze, 2, num_layers=11).astype(int)
    x = cell_centre_px((8 / 10) * 2 - 1, 11) * 2
    y = cell_centre_px(0.0, 11) * 2
    assert out[int(y), int(x)].sum() > 150  # inferno's top, bright, over the peak cell's centre
    assert out[2, 2].sum() == 0  # outside the cells' span: the frame untouched
    cx = int(cell_centre_px(0.0, 11) * 2)
    radius = 0.2 * (cell_centre_px(1.0, 11) - cell_centre_px(-1.0, 11)) / 2 * 2  # 1 sigma in output pixels
    ring = out[cx, int(round(cx + radius)) - 1 : int(round(cx + radius)) + 2]
    assert any((p[1] > 200) & (p[2] > 200) & (p[0] < 60) for p in ring)  # cyan ellipse one sigma right of the centre


def test_frozen_run_records_its_encoder_and_refuses_another(tmp_path: Path, mmae_export: Path, monkeypatch):
    """The task's own export is found by default and recorded (resolved path, sha256); evaluation from
    another folder loads the recorded file, and refuses one whose sha256 differs."""
    root = mmae_export.parents[4]
    monkeypatch.chdir(root)
    cfg = tiny(tmp_path / "run", "mmae_rgb", steps=60, random_steps=30, checkpoint_every=30)
    inputs = run_inputs(Pack([cfg]).observer)
    digest = hashlib.sha256(mmae_export.read_bytes()).hexdigest()
    assert inputs == {
        "frozen_encoder": {
            "path": str(mmae_export.resolve()),
            "sha256": digest,
            "inputs": ["rgb"],
            "pool": "mean",
            "features": "standardized",
            "chosen_by": "default (the task's own)",
        },
        "saliency_model": None,
    }
    run_dir = sac_run(cfg)
    for record in ("config.json", "summary.json"):  # rl/workspace.py records what the run loaded in both
        assert json.loads((run_dir / record).read_text())[INPUTS_KEY] == inputs
    monkeypatch.chdir(tmp_path)  # the default path runs/mmae/rgb/reach-v3/encoder.pt is not here
    report = json.loads(evaluate(EvaluateConfig(run=str(run_dir), episodes=1)).read_text())
    assert report["inputs"]["frozen_encoder"]["sha256"] == digest
    other = tmp_path / "other.pt"
    shutil.copy(mmae_export, other)
    with open(other, "ab") as f:
        f.write(b"\0")  # the same weights, other bytes
    with pytest.raises(
        ValueError, match=r"records frozen encoder .* with sha256 .* pass --mmae with the file it recorded"
    ):
        evaluate(EvaluateConfig(run=str(run_dir), episodes=1, mmae=str(other)))


def test_a_run_from_before_mmae_features_loads_as_it_ran(tmp_path: Path, mmae_export: Path):
    """A run recorded before --mmae-features existed standardised only where its export had statistics: an export
    without them loads it raw, as it trained, where a run that recorded `standardized` is refused by name."""
    from pretrain.frozen import MissingStatisticsError

    bare = tmp_path / "bare.pt"
    blob = torch.load(mmae_export, weights_only=True)
    torch.save({**blob, "feature_stats": {}}, bare)
    run_dir = sac_run(
        tiny(tmp_path / "run", "mmae_rgb", steps=60, random_steps=30, mmae=str(bare), mmae_features="raw")
    )
    agent = torch.load(run_dir / "agent.pt", weights_only=True)
    for features in ("standardized", None):  # None: the key of an older config
        config = {k: v for k, v in agent["config"].items() if k != "mmae_features"}
        torch.save(
            {**agent, "config": config | ({"mmae_features": features} if features else {})}, run_dir / "agent.pt"
        )
        if features:
            with pytest.raises(MissingStatisticsError, match="--mmae-features raw"):
                load_agent(run_dir, mmae=str(bare))
        else:
            assert load_agent(run_dir, mmae=str(bare)).cfg.mmae_features == "raw"


def test_no_silent_fallback_to_the_pooled_encoder(tmp_path: Path, mmae_export: Path, monkeypatch):
    from rl.encoders import build_encoder

    monkeypatch.chdir(tmp_path)
    pooled = tmp_path / "runs/mmae/rgb/encoder.pt"
    pooled.parent.mkdir(parents=True)
    shutil.copy(mmae_export, pooled)
    cfg = tiny(tmp_path / "run", "mmae_rgb")
    with pytest.raises(FileNotFoundError) as err:
        build_encoder(cfg)
    message = str(err.value)
    assert "runs/mmae/rgb/reach-v3/encoder.pt" in message
    assert "`python -m pretrain.multimae --modalities rgb --task reach-v3 --out runs/mmae/rgb/reach-v3`" in message
    assert "--mmae runs/mmae/rgb/encoder.pt" in message
    enc = build_encoder(tiny(tmp_path / "run", "mmae_rgb", mmae="runs/mmae/rgb/encoder.pt"))
    assert enc.provenance["chosen_by"] == "--mmae" and enc.provenance["path"] == str(pooled.resolve())


def test_bad_requests_are_one_line_errors(cnn_run: Path, tmp_path: Path, capsys):
    for argv, message in (
        (
            [str(tmp_path / "nothing")],
            "not found (no agent.pt or checkpoint to load); train one with `python -m rl.sac --out",
        ),
        (["--run", str(cnn_run), "--overlay", "gaze", "--video"], "which has no gaze"),
        (["--run", str(cnn_run), "--overlay", "saliency"], "add --video"),
        (
            ["--run", str(cnn_run), "--checkpoint", "checkpoint-000000007.pt"],
            "--checkpoint checkpoint-000000007.pt not found",
        ),
        (["--policy", "random"], "give --task (e.g. --task reach-v3) or --run"),
        (["--policy", "random", "--task", "reach-v3", "--run", str(cnn_run)], "not both"),
        (["--policy", "random", "--task", "reach-v9"], "unknown task 'reach-v9'"),
        (["--policy", "random", "--run", str(tmp_path)], "config.json not found"),
        (["--policy", "random", "--run", str(cnn_run), "--overlay", "gaze", "--video"], "loads no agent"),
        (["--task", "reach-v3"], "--task is for --policy random"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err


def test_report_clips_gathers_one_clip_per_task_and_encoder(cnn_run: Path, tmp_path: Path):
    root = tmp_path / "sac"
    for seed in (1, 0):
        shutil.copytree(
            cnn_run, root / "reach-v3" / "cnn_rgb" / f"seed{seed}", ignore=shutil.ignore_patterns("evaluate")
        )
    (root / "reach-v3" / "state" / "seed0").mkdir(parents=True)  # no weights yet: no clip
    assert report_clips(root, tmp_path / "report") == {}  # no clip made without make=True
    clips = report_clips(root, tmp_path / "report", make=True)
    assert clips == {("reach-v3", "cnn_rgb"): tmp_path / "report" / "reach-v3_cnn_rgb.gif"}
    assert (root / "reach-v3" / "cnn_rgb" / "seed0" / "evaluate" / "clip.gif").is_file()  # the lowest seed's
    assert not (root / "reach-v3" / "cnn_rgb" / "seed1" / "evaluate").exists()
    from PIL import Image

    with Image.open(clips[("reach-v3", "cnn_rgb")]) as im:
        assert (im.n_frames, im.size) == (15, (192, 192))  # 30-step episodes, every 2nd step, 3x


def test_evaluation_runs_the_saliency_model_in_the_precision_training_recorded():
    """Evaluation sees the maps training saw: the saliency model's recorded precision (PiCANet on CUDA keeps fp32 in
    a bf16 pack), else, for runs recorded before it, the run's own precision, which the model followed then."""
    from types import SimpleNamespace

    from rl.evaluate import saliency_precision

    def loaded(record):
        return SimpleNamespace(cfg=SimpleNamespace(precision="bf16"), recorded_inputs=record)

    assert saliency_precision(loaded({"saliency_model": {"path": "best.pt", "precision": "fp32"}})) == "fp32"
    assert saliency_precision(loaded({"saliency_model": {"path": "student.pt"}})) == "bf16"
    assert saliency_precision(loaded({"saliency_model": None})) == saliency_precision(loaded(None)) == "bf16"
