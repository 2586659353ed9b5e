"""The pipeline's cluster options: the SAC grid on a backend (--backend, --ray-address, --grid-extra),
pretraining under torchrun (--nproc-per-node), and stages that continue after a requeue (--resume auto)."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from pipeline.presets import PRESETS
from pipeline.run import PipelineConfig, grid_config, main, pretrain, pretrain_command


def test_the_paper_preset_goes_to_a_ray_cluster_with_one_command():
    cfg = PipelineConfig(
        **{**PRESETS["paper"], "backend": "ray", "ray_address": "auto", "grid_extra": "--storage shared"}
    )
    grid = grid_config(cfg, " --max-minutes 5")
    assert (grid.backend, grid.ray_address, grid.storage, grid.steps, grid.seeds) == (
        "ray",
        "auto",
        "shared",
        1_000_000,
        "0,1,2",
    )
    assert grid.extra == "--eval-episodes 50 --max-minutes 5" and len(grid.task_list) == 4


def test_bad_grid_flags_fail_before_any_stage(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "micro", "--root", str(tmp_path), "--grid-extra", "--storage nowhere"])
    assert exit_.value.code == 2 and "--storage" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_pretraining_under_torchrun(tmp_path, monkeypatch, capfd):
    """`--nproc-per-node 2`: the stage runs `torchrun --nproc-per-node 2 -m pretrain.multimae ... --resume auto`
    (2 CPU processes here, gloo)."""
    cfg = PipelineConfig(
        stage_preset="micro",
        nproc_per_node=2,
        pretrain_extra="--threads 1 --no-progress --epochs 2 --limit 0 --batch-size 8",
    )
    args = [
        "--data",
        str(tmp_path / "reach-v3"),
        "--modalities",
        "rgb",
        "--saliency",
        "oracle",
        "--out",
        str(tmp_path / "m"),
    ]
    command = pretrain_command(cfg, args)
    assert command[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    assert command[7] == "pretrain.multimae" and command[-2:] == ["--resume", "auto"]
    assert pretrain_command(PipelineConfig(stage_preset="micro"), args)[:2] == ["--preset", "micro"]  # in process

    # frames collected in a child process: MuJoCo's GL libraries loaded here would crash a later import of triton
    subprocess.run(
        [
            sys.executable,
            "-m",
            "data.collect",
            "--task",
            "reach-v3",
            "--frames",
            "160",
            "--shard-size",
            "40",
            "--episode-steps",
            "40",
            "--out",
            str(tmp_path / "reach-v3"),
        ],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pretrain(cfg, args)
    log = list(csv.DictReader(open(tmp_path / "m" / "train.csv")))
    assert [int(r["step"]) for r in log] == list(range(1, len(log) + 1)) and (tmp_path / "m" / "encoder.pt").exists()
    assert "2 process(es)" in capfd.readouterr().out  # the torchrun children's own report


def test_a_stage_killed_after_writing_its_outputs_runs_again(tmp_path, monkeypatch):
    """Training stages write best.pt / student.pt / encoder.pt before they finish: a requeued pipeline
    reruns a stage that started and never ended (it continues: --resume auto), and skips finished ones."""
    from pipeline.run import Stages

    monkeypatch.chdir(tmp_path)
    output = tmp_path / "best.pt"
    calls = []

    def killed() -> None:
        output.write_text("epoch 1 of 10")
        raise KeyboardInterrupt  # the job is killed mid-stage

    with pytest.raises(KeyboardInterrupt):
        Stages(PipelineConfig(), total=1).run("saliency.train", [output], killed)
    Stages(PipelineConfig(), total=1).run("saliency.train", [output], lambda: calls.append("continued"))
    Stages(PipelineConfig(), total=1).run("saliency.train", [output], lambda: calls.append("again"))
    assert calls == ["continued"]


@pytest.mark.parametrize(
    "flag, value, message",
    [
        (
            "--sac-extra",
            "--eval-episodess 5",
            "--sac-extra: unrecognized arguments: --eval-episodess 5 (see python -m rl.sac --help)",
        ),
        ("--sac-extra", "--critic-lr -1", "--sac-extra: critic-lr must be a finite number > 0"),
        (
            "--pretrain-extra",
            "--epochs two",
            "--pretrain-extra: argument --epochs: invalid int value: 'two' (see python -m pretrain.multimae --help)",
        ),
        (
            "--grid-extra",
            "--retries=-1",
            "--grid-extra: parallel and steps must be >= 1, pack and retries >= 0 (see python -m rl.grid --help)",
        ),
    ],
)
def test_pass_through_flags_are_parsed_before_any_stage(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "micro", "--root", str(tmp_path), f"{flag}={value}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()
