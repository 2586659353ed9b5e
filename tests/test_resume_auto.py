"""`--resume auto` on the four long jobs: it starts when there is no checkpoint and resumes when there is
one, so a requeued job reruns the same command; bare `--resume` without a checkpoint is a one-line error."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from common.cli import from_flat
from data.collect import CollectConfig, collect
from pretrain import train as pretrain
from rl import sac
from saliency import data as sdata
from saliency import distill
from saliency import train as sal_train

RL = [
    "--preset",
    "micro",
    "--encoder",
    "state",
    "--random-steps",
    "50",
    "--max-episode-steps",
    "50",
    "--log-every",
    "25",
    "--checkpoint-every",
    "50",
    "--hidden-dim",
    "32",
    "--batch-size",
    "16",
]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "reach-v3"
    collect(
        from_flat(CollectConfig, task="reach-v3", frames=80, shard_size=40, out=str(out), episode_steps=40),
        progress=False,
    )
    return out


def steps_of(path: Path) -> list[int]:
    return [int(float(r["step"])) for r in csv.DictReader(open(path))]


def refused_bare(capsys, main, argv: list[str]) -> str:
    """Run `main(argv + ['--resume'])` on a folder without a checkpoint: exit 2, one line naming the fix."""
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--resume"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "--resume auto" in err, err
    return err


def test_rl_sac(tmp_path, capsys):
    out = ["--out", str(tmp_path / "run")]
    assert "not found" in refused_bare(capsys, sac.main, [*RL, "--steps", "100", *out])
    assert not (tmp_path / "run" / "config.json").exists()  # a refusal leaves no run behind
    sac.main([*RL, "--steps", "100", *out, "--resume", "auto"])
    assert "resumed" not in capsys.readouterr().out
    half_written = tmp_path / "run" / ".checkpoint-000000125.pt.qz81_x0c.tmp"  # the last run was killed mid-save
    half_written.write_bytes(b"\0" * 1000)
    sac.main([*RL, "--steps", "150", *out, "--resume", "auto"])
    assert not half_written.exists()
    assert "resumed at step 100" in capsys.readouterr().out
    assert steps_of(tmp_path / "run" / "metrics.csv") == [25, 50, 75, 100, 125, 150]
    with pytest.raises(SystemExit) as exit_:
        sac.main([*RL, "--steps", "150", *out])
    assert exit_.value.code == 2 and "already holds a run" in capsys.readouterr().err


def test_pretrain(shards, tmp_path, capsys):
    argv = [
        "--preset",
        "micro",
        "--data",
        str(shards),
        "--modalities",
        "rgb",
        "--saliency",
        "oracle",
        "--out",
        str(tmp_path / "m"),
        "--threads",
        "1",
        "--no-progress",
        "--limit",
        "0",
        "--epochs",
        "2",
    ]
    assert "checkpoint.pt not found" in refused_bare(capsys, pretrain.main, argv)
    pretrain.main([*argv, "--max-steps", "2", "--resume", "auto"])
    assert steps_of(tmp_path / "m" / "train.csv")[-1] == 2
    pretrain.main([*argv, "--resume", "auto"])
    steps = steps_of(tmp_path / "m" / "train.csv")
    assert steps == sorted(set(steps)) and steps[0] == 1 and steps[-1] > 2
    with pytest.raises(SystemExit):
        pretrain.main(argv)
    assert "already holds a run" in capsys.readouterr().err


def test_saliency_train_and_distill(shards, tmp_path, capsys):
    annotations = tmp_path / "ann.npz"
    sdata.save_annotations(annotations, sdata.build_oracle_annotations(shards, 6, seed=0, pool=40))
    run_dir = tmp_path / "sal"
    argv = ["--preset", "micro", "--annotations", str(annotations), "--out", str(run_dir), "--threads", "1"]
    assert "last.pt not found" in refused_bare(capsys, sal_train.main, argv)
    assert not (run_dir / "config.json").exists()
    sal_train.main([*argv, "--epochs", "1", "--resume", "auto"])
    sal_train.main([*argv, "--epochs", "2", "--resume", "auto"])
    assert "resuming" in capsys.readouterr().out and steps_of(run_dir / "train.csv") == [1, 2]

    argv = ["--preset", "micro", "--teacher", str(run_dir / "best.pt"), "--data", str(shards), "--threads", "1"]
    assert "distill-student-last.pt not found" in refused_bare(capsys, distill.main, argv)
    distill.main([*argv, "--epochs", "1", "--resume", "auto"])
    with pytest.raises(SystemExit) as exit_:
        distill.main([*argv, "--epochs", "2"])  # an existing student is not overwritten by accident
    assert exit_.value.code == 2 and "--resume auto" in capsys.readouterr().err
    distill.main([*argv, "--epochs", "2", "--resume", "auto"])
    assert "resuming" in capsys.readouterr().out and steps_of(run_dir / "distill-student.csv") == [1, 2]
