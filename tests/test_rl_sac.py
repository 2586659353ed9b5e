"""SAC end to end on reach-v3 with tiny settings: every encoder, frozen weights, exact resume, bad input."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from common.cli import from_flat
from common.hub import file_sha256
from common.io import NonFiniteError
from rl.config import PRESETS, SACConfig
from rl.observe import choose_saliency_model
from rl.sac import main, run
from rl.workspace import latest_checkpoint

from tiny import TINY_MMAE, TINY_SAC


def tiny(tmp_path: Path, encoder: str, **kw) -> SACConfig:
    return from_flat(SACConfig, **{**TINY_SAC, "encoder": encoder, "out": str(tmp_path / encoder), **kw}).validate()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict[str, Path]:
    """A tiny real MultiMAE encoder export and a tiny student saliency checkpoint."""
    from pretrain.frozen import encoder_blob, identity_statistics
    from pretrain.model import ModelConfig, MultiMAE
    from saliency.predictor import save_checkpoint
    from saliency.student import StudentConfig, StudentNet

    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    paths = {}
    for name, modalities in (("rgb", ("rgb",)), ("rgbs", ("rgb", "saliency"))):
        cfg = ModelConfig(modalities=modalities, **TINY_MMAE)
        model = MultiMAE(cfg, decoders=False)
        paths[name] = root / "runs/mmae" / name / "reach-v3" / "encoder.pt"  # the task's own, where rl.sac looks
        paths[name].parent.mkdir(parents=True)
        torch.save(encoder_blob(model, identity_statistics(model.cfg)), paths[name])
    paths["saliency"] = root / "runs/saliency/reach-v3/student.pt"
    paths["saliency"].parent.mkdir(parents=True)
    save_checkpoint(paths["saliency"], StudentNet(StudentConfig(width=4)), "student")
    paths["root"] = root
    return paths


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


ENCODERS = [
    "state",
    "cnn_rgb",
    "cnn_saliency",
    "cnn_rgb_x_saliency",
    "cnn_rgbs",
    "mmae_rgb",
    "mmae_rgbs_po",
    "mmae_rgbs",
]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_encoder_trains_and_writes_its_run(tmp_path, encoder, pretrained):
    mmae = {"mmae_rgb": "rgb"}.get(encoder, "rgbs")
    cfg = tiny(tmp_path, encoder, mmae=str(pretrained[mmae]) if encoder.startswith("mmae") else "")
    run_dir = run(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 150 and summary["encoder"] == encoder and summary["eval_episodes"] == 1
    assert 0.0 <= summary["success_rate"] <= 1.0 and "CPU" in summary["device"]
    metrics = rows(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in metrics] == [50, 100, 150]
    assert int(metrics[-1]["updates"]) == 100  # one update per env step after the 50 random ones
    assert math.isfinite(float(metrics[-1]["critic_loss"])) and float(metrics[-1]["steps_per_s"]) > 0
    assert [int(r["step"]) for r in rows(run_dir / "eval.csv")] == [150]
    assert (run_dir / "tb").is_dir() and json.loads((run_dir / "config.json").read_text())["encoder"] == encoder
    ckpt_path = latest_checkpoint(run_dir)
    assert ckpt_path.name == "checkpoint-000000150.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    replay = run_dir / ckpt["replay"]["dir"]
    stored = {p.name.removeprefix("obs.").removesuffix(".npy"): np.load(p) for p in replay.glob("obs.*.npy")}
    if encoder.startswith("mmae"):  # frozen: the buffer holds float32 embeddings, no frames
        assert set(stored) == {"embedding"} and stored["embedding"].dtype == np.float32
        assert stored["embedding"].shape[-1] == 32
    elif encoder == "state":
        assert set(stored) == {"state"}
    else:
        assert all(v.dtype == np.uint8 for v in stored.values())
        assert ("saliency" in stored) == (encoder != "cnn_rgb")
    assert int(ckpt["replay"]["valid"].sum()) == 150  # 3 episodes of 50 transitions, each with its final obs
    assert ckpt["replay"]["bytes"] == sum(np.load(p, mmap_mode="r").nbytes for p in replay.glob("*.npy"))


def test_frozen_encoder_is_never_trained(tmp_path, pretrained):
    """A frozen encoder's embeddings come from the buffer: the agent holds no encoder weights and
    no optimiser sees them, while its critic trains."""
    run_dir = run(tiny(tmp_path, "mmae_rgbs", mmae=str(pretrained["rgbs"])))
    model = torch.load(run_dir / "agent.pt", weights_only=True)["model"]
    assert not [k for k in model if k.startswith("encoder.")]
    ckpt = torch.load(latest_checkpoint(run_dir), weights_only=True)
    assert ckpt["agent"]["num_updates"] == 100
    critic_params = len([k for k in model if k.startswith("critic.")])
    assert len(ckpt["agent"]["critic_opt"]["state"]) == critic_params  # the critic's parameters, nothing else
    embeddings = np.load(run_dir / ckpt["replay"]["dir"] / "obs.embedding.npy")
    assert np.isfinite(embeddings).all() and embeddings.std(axis=(0, 1)).max() > 0


def test_predicted_saliency_and_default_paths(tmp_path, pretrained, monkeypatch):
    """The bare command's defaults find runs/mmae/rgbs/<task>/encoder.pt and runs/saliency/<task>/student.pt."""
    monkeypatch.chdir(pretrained["root"])
    argv = [
        "--encoder",
        "mmae_rgbs",
        "--preset",
        "micro",
        "--saliency",
        "predictor",
        "--steps",
        "100",
        "--max-episode-steps",
        "50",
        "--random-steps",
        "50",
        "--out",
        str(tmp_path / "run"),
    ]
    run_dir = main(argv)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["saliency"].endswith("runs/saliency/reach-v3/student.pt") and summary["steps"] == 100
    # both records name the student file the run loaded, resolved, with the sha256 of its bytes
    student = pretrained["saliency"]
    config = json.loads((run_dir / "config.json").read_text())
    for record in (summary, config):
        used = record["inputs"]["saliency_model"]
        assert (used["path"], used["sha256"]) == (str(student.resolve()), file_sha256(student))
        assert used["chosen_by"] == "default (the task's student)"
        assert used["precision"] == config["precision"] == "fp32"  # the one it ran in (conftest: auto is fp32)


def test_a_pack_of_rgb_only_and_rgb_saliency_runs_predicts_and_records_saliency_for_its_readers_alone(
    tmp_path, pretrained, monkeypatch
):
    """RGB+S PO and ViSaRL share a pack (one frozen export): the student runs on ViSaRL's frames alone, and only
    ViSaRL's records name it; the PO run read none."""
    from rl.workspace import train
    from saliency.predictor import SaliencyPredictor

    monkeypatch.chdir(pretrained["root"])
    frames_per_call = []
    predict = SaliencyPredictor.__call__

    def counted(self, frames):
        frames_per_call.append(len(frames))
        return predict(self, frames)

    monkeypatch.setattr(SaliencyPredictor, "__call__", counted)
    settings = dict(saliency="predictor", steps=100, eval_envs=1, eval_episodes=2)
    po, visarl = train([tiny(tmp_path / "po", "mmae_rgbs_po", **settings), tiny(tmp_path, "mmae_rgbs", **settings)])
    assert frames_per_call and max(frames_per_call) == 1  # one env per run: ViSaRL's frame, never PO's beside it
    for name in ("config.json", "summary.json"):
        assert json.loads((po / name).read_text())["inputs"]["saliency_model"] is None
        used = json.loads((visarl / name).read_text())["inputs"]["saliency_model"]
        assert used["path"] == str(pretrained["saliency"].resolve())
    assert json.loads((po / "summary.json").read_text())["saliency"] == ""
    assert json.loads((visarl / "summary.json").read_text())["saliency"].endswith("reach-v3/student.pt")


def test_predicted_saliency_fills_the_rows_of_the_runs_that_read_it_and_zeros_the_others():
    """Rows of a run whose encoder reads no saliency get zeros, without the predictor seeing their frames."""
    from rl.observe import Observer

    cfg = tiny(Path("unused"), "mmae_rgbs", saliency="oracle")
    observer = Observer(
        ("pixels", "saliency"),
        [None, None, None],
        cfg,
        torch.device("cpu"),
        2,
        readers=[("pixels",), ("pixels", "saliency"), ("pixels",)],
    )
    seen = []
    observer.predictor = lambda frames: seen.append(frames.copy()) or np.ones(frames.shape[:3], np.float32)
    pixels = np.arange(6, dtype=np.uint8)[:, None, None, None].repeat(8, 1).repeat(8, 2).repeat(3, 3)  # row k: k
    saliency = observer.fields({"pixels": pixels}, np.repeat(np.arange(3), 2))["saliency"]  # [6, 1, 8, 8]
    assert [int(s.max()) for s in saliency] == [0, 0, 255, 255, 0, 0]
    assert len(seen) == 1 and seen[0][:, 0, 0, 0].tolist() == [2, 3]  # run 1's frames alone
    assert observer.fields({"pixels": pixels})["saliency"].min() == 255  # no rows given: every frame


def test_a_missing_student_falls_back_to_picanet_and_says_so(tmp_path, pretrained, monkeypatch, capsys):
    """Without runs/saliency/<task>/student.pt the run reads best.pt: its first lines and its records say why."""
    best = tmp_path / "runs/saliency/reach-v3/best.pt"
    best.parent.mkdir(parents=True)
    best.write_bytes(pretrained["saliency"].read_bytes())  # a predictor checkpoint: its kind is in the file
    monkeypatch.chdir(tmp_path)
    argv = ["--encoder", "cnn_rgbs", "--preset", "micro", "--saliency", "predictor", "--steps", "60"]
    run_dir = main([*argv, "--max-episode-steps", "30", "--random-steps", "30", "--out", str(tmp_path / "run")])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("saliency model:")]
    why = "default (no runs/saliency/reach-v3/student.pt, so the task's PiCANet"
    assert len(lines) == 1 and lines[0].startswith(f"saliency model: runs/saliency/reach-v3/best.pt ({why}")
    assert lines[0].endswith("), fp32")  # the precision the model runs in
    for name in ("config.json", "summary.json"):
        used = json.loads((run_dir / name).read_text())["inputs"]["saliency_model"]
        assert used["path"] == str(best.resolve()) and used["chosen_by"].startswith(why)
    assert choose_saliency_model("reach-v3", str(best)) == (best, "--saliency-model")


def test_vector_envs_one_update_per_env_step(tmp_path):
    run_dir = run(
        tiny(
            tmp_path,
            "cnn_rgb",
            num_envs=2,
            steps=140,
            random_steps=100,
            eval_episodes=2,
            eval_envs=1,
            log_every=20,
            max_episode_steps=35,
        )
    )
    metrics = rows(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in metrics] == list(range(20, 141, 20))
    assert int(metrics[-1]["updates"]) == 40 and int(metrics[-1]["episodes"]) == 4
    assert json.loads((run_dir / "summary.json").read_text())["eval_episodes"] == 2


def test_the_last_evaluation_plays_final_eval_episodes(tmp_path):
    """--final-eval-episodes: the evaluations on the way play --eval-episodes, the one at --steps (summary.json's)
    plays more; envs per run never exceed an evaluation's episodes."""
    run_dir = run(tiny(tmp_path, "state", eval_every=50, eval_episodes=2, final_eval_episodes=5, eval_envs=2))
    evals = rows(run_dir / "eval.csv")
    assert [(int(r["step"]), int(r["episodes"])) for r in evals] == [(50, 2), (100, 2), (150, 5)]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval_episodes"] == 5 and summary["success_rate"] == float(evals[-1]["success_rate"])
    cfg = tiny(tmp_path, "state", eval_episodes=2, final_eval_episodes=5, eval_envs=3)
    assert (cfg.last_eval_episodes, cfg.eval_envs_for(2), cfg.eval_envs_for(5), cfg.eval_envs_per_run) == (5, 2, 3, 3)
    assert tiny(tmp_path, "state", eval_episodes=4).last_eval_episodes == 4  # 0: as the others


def test_gaze_encoder_runs_through_the_hooks(tmp_path):
    """rl/gaze.py's encoders plug in through the registry; their auxiliary losses land in aux.csv."""
    cfg = main(
        [
            "--encoder",
            "gaze",
            "--gaze-components",
            "2",
            "--preset",
            "micro",
            "--steps",
            "100",
            "--random-steps",
            "50",
            "--max-episode-steps",
            "50",
            "--log-every",
            "50",
            "--out",
            str(tmp_path / "g"),
        ]
    )
    config = json.loads((cfg / "config.json").read_text())
    assert config["gaze_components"] == 2 and config["encoder"] == "gaze"
    aux = rows(cfg / "aux.csv")
    assert [int(r["step"]) for r in aux] == [100] and len(aux[0]) > 2


def test_resume_continues_exactly(tmp_path):
    kw = dict(
        encoder="state",
        steps=150,
        random_steps=50,
        max_episode_steps=50,
        batch_size=16,
        hidden_dim=32,
        eval_every=0,
        eval_episodes=1,
        log_every=25,
        checkpoint_every=50,
        torch_threads=1,
    )
    straight = run(from_flat(SACConfig, **kw, out=str(tmp_path / "a")))
    run(from_flat(SACConfig, **{**kw, "steps": 100}, out=str(tmp_path / "b")))
    resumed = run(from_flat(SACConfig, **kw, out=str(tmp_path / "b"), resume=True))
    a = torch.load(straight / "agent.pt", weights_only=True)["model"]
    b = torch.load(resumed / "agent.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [int(r["step"]) for r in rows(resumed / "metrics.csv")]
    assert steps == list(range(25, 151, 25))  # rows after the checkpoint were not duplicated
    ra, rb = rows(straight / "metrics.csv"), rows(resumed / "metrics.csv")
    assert [r["critic_loss"] for r in ra] == [r["critic_loss"] for r in rb]


def test_a_checkpoint_deletes_replay_folders_of_checkpoints_never_written(tmp_path):
    """Issue #27: a replay-<step>/ whose checkpoint .pt was never written (the run killed or the disk full
    between the two) was kept for good, since a checkpoint only removed the replays of older .pt files."""
    import shutil

    run_dir = run(tiny(tmp_path, "state", steps=100))
    shutil.copytree(run_dir / "replay-000000100", run_dir / "replay-000000075")  # the orphan
    run(tiny(tmp_path, "state", steps=150, resume=True))
    saved = sorted(p.name for p in run_dir.iterdir() if p.name.startswith(("replay-", "checkpoint-")))
    assert saved == ["checkpoint-000000150.pt", "replay-000000150"]  # before: replay-000000075 too


def test_resume_refuses_another_config_and_existing_runs(tmp_path):
    cfg = tiny(tmp_path, "state", steps=50, random_steps=20)
    run(cfg)
    with pytest.raises(ValueError, match="already holds a run"):
        run(tiny(tmp_path, "state", steps=50, random_steps=20))
    with pytest.raises(ValueError, match=r"hidden_dim: checkpoint 32 vs now 64"):
        run(tiny(tmp_path, "state", steps=100, random_steps=20, hidden_dim=64, resume=True))


def test_bad_names_list_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        main(["--task", "reach-v9"])
    assert "valid Meta-World v3 tasks" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--encoder", "resnet"])
    err = capsys.readouterr().err
    assert "unknown encoder 'resnet'" in err and all(e in err for e in ENCODERS)


def test_missing_pretrained_models_name_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for flags, command in (
        (
            ["--encoder", "mmae_rgbs"],
            "python -m pretrain.multimae --modalities rgb,saliency --task reach-v3 --out runs/mmae/rgbs/reach-v3`",
        ),
        (
            ["--encoder", "mmae_rgb"],
            "python -m pretrain.multimae --modalities rgb --task reach-v3 --out runs/mmae/rgb/reach-v3`",
        ),
        (
            ["--encoder", "cnn_rgbs", "--preset", "micro", "--saliency", "predictor"],
            "python -m saliency.train --annotations data/annotations/reach-v3.npz",
        ),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(flags)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and command in err and err.count("\n") == 1


def test_non_finite_settings_and_ignored_flags_are_refused(capsys):
    for flags, message in (
        (["--critic-lr", "inf"], "--critic-lr: must be a finite number"),
        (["--actor-lr", "nan"], "--actor-lr: must be a finite number"),
        (["--critic-lr", "-1"], "critic-lr must be a finite number > 0, got -1"),
        (
            ["--saliency", "oracle", "--saliency-model", "x.pt"],
            "--saliency-model is read only with --saliency predictor",
        ),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["--encoder", "state", *flags])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and "Traceback" not in err
    with pytest.raises(ValueError, match="alpha-lr must be a finite number > 0, got inf"):
        from_flat(SACConfig, encoder="state", alpha_lr=float("inf")).validate()


def test_a_diverging_run_stops_keeps_its_checkpoint_and_exports_nothing(tmp_path, monkeypatch):
    """A NaN loss stops the run at its first NaN action with a clear error; the last good checkpoint stays, no agent.pt."""
    from rl.agent import SAC

    update = SAC.update

    def poisoned(self, batch, noise):
        if self.num_updates >= 60:  # from update 61 (step 100), after the checkpoint at step 100; NaN actor at step 102
            batch["reward"] = batch["reward"] * float("nan")
        return update(self, batch, noise)

    monkeypatch.setattr(SAC, "update", poisoned)
    cfg = tiny(tmp_path, "state", steps=200, random_steps=40)
    with pytest.raises(NonFiniteError, match="non-finite action at step 102"):
        run(cfg)
    run_dir = cfg.run_dir()
    assert latest_checkpoint(run_dir).name == "checkpoint-000000100.pt" and not (run_dir / "agent.pt").exists()
    assert [int(r["step"]) for r in rows(run_dir / "metrics.csv")] == [50, 100]


def test_help_documents_every_field_and_gaze_flags(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--gaze-components", "--gaze-return-margin", "--num-envs", "--saliency-model", "--mmae", "--preset"):
        assert flag in out
    assert set(PRESETS) == {"micro", "demo", "cpu", "paper"} and PRESETS["cpu"]["hidden_dim"] == 256
    cfg = from_flat(SACConfig, encoder="state")
    assert (cfg.hidden_dim, cfg.batch_size, cfg.init_temperature, cfg.random_steps, cfg.log_std_min) == (
        1024,
        128,
        0.1,
        1000,
        -10.0,
    )
    assert np.isclose(cfg.tau, 0.005) and cfg.actor_update_every == cfg.target_update_every == 2


def test_a_batch_larger_than_the_replay_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["--encoder", "state", "--batch-size", "200000", "--replay-size", "100000", "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--batch-size 200000 exceeds --replay-size 100000" in err
    assert err.count("\n") == 1 and not out.exists()
