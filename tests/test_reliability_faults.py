"""Issue #27: the failures and minors of a 58-probe fault run, each kept as a test that failed before its fix."""

import errno
import json
import os
import shutil

import numpy as np
import pytest
import torch

from annotate_app.synthetic import synthetic_shards
from common.cli import one_line_errors
from common.io import OutputError
from data.shards import (
    ShardError,
    check_shard,
    load_arrays,
    read_manifest,
    shard_name,
    write_manifest,
    write_shard_entry,
)
from saliency import label
from saliency.config import LabelConfig, from_preset
from saliency.predictor import save_checkpoint
from saliency.student import StudentConfig, StudentNet


# -- refusals exit 2 with one line -----------------------------------------------------------------------
def test_a_refusal_raised_as_a_message_exits_2_on_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info, one_line_errors():
        raise SystemExit("error: out.h5 exists; pass --overwrite to replace it")
    assert (
        exit_info.value.code == 2
        and capsys.readouterr().err == "error: out.h5 exists; pass --overwrite to replace it\n"
    )
    with pytest.raises(SystemExit) as exit_info, one_line_errors():  # a status given as a number stays what it was
        raise SystemExit(3)
    assert exit_info.value.code == 3


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_read_only_out_is_one_line_naming_the_file(capsys, code):
    with pytest.raises(SystemExit) as exit_info, one_line_errors():
        raise OSError(code, os.strerror(code), "/ro/run/config.json")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: cannot access /ro/run/config.json: ") and "choose another --out" in err


# -- shard keys are unique in a folder ---------------------------------------------------------------------
@pytest.fixture
def synthetic(tmp_path):
    return synthetic_shards(tmp_path / "reach-v3", frames=60, shard_size=20)


def test_a_shard_copied_under_another_name_is_refused_by_every_reader(synthetic):
    # shard-00002.tar replaced by a copy of shard-00000.tar, the manifest updated to match it: its keys repeat
    shutil.copy(synthetic / "shard-00000.tar", synthetic / "shard-00002.tar")
    m = read_manifest(synthetic)
    m["shards"][2] = {**m["shards"][0], "file": "shard-00002.tar"}
    write_manifest(synthetic, m)
    with pytest.raises(ShardError, match=r"shard-00002.tar: sample key '00000-00000' belongs to another shard"):
        load_arrays(synthetic)
    with pytest.raises(ShardError, match="belongs to another shard"):
        check_shard(synthetic / "shard-00002.tar", 20)


def test_a_key_repeated_within_a_shard_is_refused(tmp_path):
    sample = {"rgb": np.zeros((8, 8, 3), np.uint8), "state": np.zeros(39), "clicks": np.zeros((0, 2)), "meta": {}}
    entry = write_shard_entry(
        tmp_path / shard_name(0), [("00000-00000", sample), ("00000-00001", sample), ("00000-00000", sample)]
    )
    with pytest.raises(ShardError, match="sample key '00000-00000' appears twice"):
        check_shard(tmp_path / shard_name(0), entry["frames"])


# -- saliency.label: labels always of the frames beside them ----------------------------------------------
@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(
        tmp_path_factory.mktemp("model") / "student.pt", StudentNet(StudentConfig(width=4, input_size=64)), "student"
    )


def _label_main(student, src, out, capsys, *more):
    with pytest.raises(SystemExit) as exit_info:
        label.main(
            [
                "--preset",
                "micro",
                "--model",
                str(student),
                "--data",
                str(src),
                "--out",
                str(out),
                "--threads",
                "1",
                *more,
            ]
        )
    return exit_info.value.code, capsys.readouterr().err


def _label(student, src, out):
    return label.run(from_preset(LabelConfig, "micro", model=str(student), data=str(src), out=str(out), threads=1))


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("killed", [False, True])
def test_labels_of_a_source_recollected_under_the_same_name_are_never_taken_as_done(
    synthetic, student, tmp_path, capsys, killed
):
    out = _label(student, synthetic, tmp_path / "sal")
    if killed:  # killed after 2 of 3 shards: no manifest yet
        (out / "manifest.json").unlink()
        (out / "shard-00002.tar").unlink()
    before = _snapshot(out)
    shutil.rmtree(synthetic)
    synthetic_shards(synthetic, frames=60, shard_size=20, seed=1)  # same name and sizes, other frames
    code, err = _label_main(student, synthetic, out, capsys)
    assert code == 2 and err.count("\n") == 1
    assert "holds labels of other frames than" in err and "shard-00000.tar and 2 more changed" in err
    assert _snapshot(out) == before  # the old labels are kept, nothing mixed in


def _old_format_marker(out, old_format):
    """Rewrite `out`'s labelling.json as labelling wrote it before it recorded its source's checksums, or
    as it writes it for a source collected before shards had checksums."""
    marker = json.loads((out / label.MARKER).read_text())
    if old_format == "no source checksums in the marker":
        del marker["source_shards"]
    else:
        marker["source_shards"] = {name: [frames, None] for name, (frames, _) in marker["source_shards"].items()}
    (out / label.MARKER).write_text(json.dumps(marker))


OLD_FORMATS = ["no source checksums in the marker", "a source without checksums"]


@pytest.mark.parametrize("old_format", OLD_FORMATS)
def test_an_old_labelled_set_of_the_same_frames_is_checked_by_content_and_upgraded(
    synthetic, student, tmp_path, capsys, old_format
):
    out = _label(student, synthetic, tmp_path / "sal")
    shards = {name: data for name, data in _snapshot(out).items() if name.endswith(".tar")}
    _old_format_marker(out, old_format)
    capsys.readouterr()
    _label(student, synthetic, out)  # before: refused outright / taken as done unchecked
    assert "comparing 3 labelled shards with" in capsys.readouterr().out
    assert {name: data for name, data in _snapshot(out).items() if name.endswith(".tar")} == shards  # none redone
    recorded = json.loads((out / label.MARKER).read_text())["source_shards"]
    assert recorded == {e["file"]: [e["frames"], e["sha256"]] for e in read_manifest(synthetic)["shards"]}
    _label(student, synthetic, out)
    assert "comparing" not in capsys.readouterr().out  # the checksums recorded: no second comparison


@pytest.mark.parametrize("old_format", OLD_FORMATS)
def test_an_old_labelled_set_of_a_recollected_source_is_refused(synthetic, student, tmp_path, capsys, old_format):
    out = _label(student, synthetic, tmp_path / "sal")
    _old_format_marker(out, old_format)
    before = _snapshot(out)
    shutil.rmtree(synthetic)
    synthetic_shards(synthetic, frames=60, shard_size=20, seed=1)  # same name and sizes, other frames
    code, err = _label_main(student, synthetic, out, capsys)
    assert code == 2 and err.count("\n") == 1  # before: the old labels taken as done (a source without checksums)
    assert f"{out} holds labels of other frames than {synthetic} has now" in err
    assert "shard-00000.tar and 2 more changed since" in err and f"delete {out}" in err
    assert _snapshot(out) == before


def test_labelling_resumes_after_a_kill_when_the_source_is_unchanged(synthetic, student, tmp_path):
    out = _label(student, synthetic, tmp_path / "sal")
    good = load_arrays(out, need_saliency=True)
    (out / "manifest.json").unlink()
    (out / "shard-00001.tar").unlink()
    _label(student, synthetic, out)
    again = load_arrays(out, need_saliency=True)
    assert again["keys"] == good["keys"] and np.array_equal(again["saliency"], good["saliency"])


def test_labelling_into_an_existing_collection_is_refused_and_leaves_it_readable(synthetic, student, tmp_path, capsys):
    other = synthetic_shards(tmp_path / "other", frames=40, shard_size=20, seed=2)
    before = _snapshot(other)
    code, err = _label_main(student, synthetic, other, capsys)
    assert code == 2 and "holds shards that saliency.label did not write" in err
    assert _snapshot(other) == before and len(load_arrays(other)["keys"]) == 40


def test_a_bad_model_leaves_no_marker_so_the_corrected_rerun_runs(synthetic, student, tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(b"not a checkpoint at all" * 10)
    code, err = _label_main(student.parent / "missing.pt", synthetic, tmp_path / "sal", capsys)  # also no trace
    assert code == 2
    code, err = _label_main(evil, synthetic, tmp_path / "sal", capsys)
    assert code == 2 and "evil.pt" in err and not (tmp_path / "sal" / label.MARKER).exists()
    out = _label(student, synthetic, tmp_path / "sal")
    assert len(load_arrays(out, need_saliency=True)["saliency"]) == 60


# -- saliency.train / saliency.distill --resume refuse changed flags -------------------------------------
def test_train_and_distill_resume_refuse_changed_flags(synthetic, tmp_path, capsys):
    from saliency import distill, train
    from saliency.data import build_oracle_annotations, save_annotations

    annotations = save_annotations(tmp_path / "ann.npz", build_oracle_annotations(synthetic, 6, seed=0, pool=40))
    run_dir = tmp_path / "sal"
    argv = [
        "--preset",
        "micro",
        "--annotations",
        str(annotations),
        "--out",
        str(run_dir),
        "--threads",
        "1",
        "--epochs",
        "1",
    ]
    train.main(argv)
    config, last = (run_dir / "config.json").read_bytes(), (run_dir / "last.pt").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        train.main([*argv, "--epochs", "2", "--lr", "1e30", "--resume"])
    err = capsys.readouterr().err
    assert (
        exit_info.value.code == 2 and "last.pt was made with other flags (--lr: checkpoint 0.0003 vs now 1e+30)" in err
    )
    assert (run_dir / "config.json").read_bytes() == config and (run_dir / "last.pt").read_bytes() == last
    train.main([*argv, "--epochs", "2", "--threads", "2", "--resume"])  # more epochs and other threads: allowed

    argv = [
        "--preset",
        "micro",
        "--teacher",
        str(run_dir / "best.pt"),
        "--data",
        str(synthetic),
        "--threads",
        "1",
        "--epochs",
        "1",
        "--frames",
        "40",
    ]
    distill.main(argv)
    student = (run_dir / "student.pt").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        distill.main([*argv, "--epochs", "2", "--frames", "60", "--resume", "auto"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "(--frames: checkpoint 40 vs now 60)" in err
    assert (run_dir / "student.pt").read_bytes() == student


def test_the_readme_row_names_every_flag_a_resume_may_change():
    from pathlib import Path

    from saliency.train import RESUMABLE

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `saliency.train --resume --lr 1e30`"))
    listed = row.split("resume with the same flags, or start a new run in another --out` (")[1].split(")")[0]
    named = {flag.replace("_", "-") for flag in RESUMABLE - {"resume", "out"}}
    assert sorted(f.strip("`").lstrip("-") for f in listed.removesuffix(" may change").split(", ")) == sorted(named)


# -- data.to_hdf5: a full disk is an error, not a crash; two conversions never clobber each other ---------
FULL_DISK = """
import errno, os, sys
real, used = os.write, {"bytes": 0}

def small_disk(fd, data):  # a device with 150 kB free
    used["bytes"] += len(data)
    if used["bytes"] > 150_000:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(fd, data)

os.write = small_disk
from data.to_hdf5 import main
main(["--shards", sys.argv[1], "--out", sys.argv[2]])
"""


def test_to_hdf5_on_a_full_disk_is_one_line_exit_2_and_leaves_nothing(synthetic, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "h5" / "x.h5"
    out.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(synthetic), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    # a failed os.write is handled by _StopOnError; before the fix HDF5's own C driver wrote the file and
    # this patch never fired (exit 0): the crash itself is reproduced on a real small disk below
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == _no_space(out)
    assert list(out.parent.iterdir()) == []


def _no_space(out) -> str:
    return (
        f"error: no space left on the device writing {out}; the previous file, if any, is unchanged. "
        "Free some space or choose another --out, then run the command again"
    )


def test_to_hdf5_on_a_real_full_disk_is_one_line_exit_2_and_leaves_nothing(synthetic, tmp_path):
    import sys

    from small_disk import run_on_small_disk, small_disk_or_skip

    small_disk_or_skip()
    disk = tmp_path / "disk"
    disk.mkdir()
    out = disk / "x.h5"  # the file needs ~415 kB, the disk holds 150 kB
    run = run_on_small_disk(
        disk, 150, [sys.executable, "-m", "data.to_hdf5", "--shards", str(synthetic), "--out", str(out)]
    )
    assert run.returncode == 2, run.stderr[-2000:]  # before: the right error, then SIGSEGV (exit 139)
    assert run.stderr.strip().splitlines()[-1] == _no_space(out) and "Traceback" not in run.stderr
    assert run.left == []


def test_two_conversions_to_one_out_never_replace_or_delete_each_others_files(synthetic, tmp_path, monkeypatch):
    import h5py

    from data import to_hdf5

    out, real = tmp_path / "x.h5", to_hdf5._write
    winner = {}

    def race(file, *args):  # the other conversion runs and finishes while this one writes
        real(file, *args)
        if not winner:
            winner["bytes"] = b""
            winner["bytes"] = to_hdf5.convert(
                to_hdf5.ToHdf5Config(shards=str(synthetic), out=str(out)), progress=False
            ).read_bytes()

    monkeypatch.setattr(to_hdf5, "_write", race)
    with pytest.raises(OutputError, match="x.h5 was written meanwhile .* it is kept: pass --overwrite"):
        to_hdf5.convert(to_hdf5.ToHdf5Config(shards=str(synthetic), out=str(out)), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reach-v3", "x.h5"] and out.read_bytes() == winner["bytes"]
    with h5py.File(out) as h5:
        assert h5["frames"].shape == (60, 64, 64, 3) and h5["keys"][0] == b"00000-00000"


# -- metrics.csv: truncating on resume is atomic -------------------------------------------------------------
def test_truncate_after_keeps_every_row_when_killed_mid_rewrite(tmp_path, monkeypatch):
    from common import runs

    logger = runs.MetricLogger(tmp_path, tensorboard=False)
    for step in (10, 20, 30):
        logger.log(step, loss=step / 10)
    before = (tmp_path / "metrics.csv").read_text()

    class Killed(BaseException):
        pass

    class KilledWriter:
        def __init__(self, *args, **kwargs):
            pass

        def writerows(self, rows):
            raise Killed  # the process dies after the file was opened, before the rows are written

    with monkeypatch.context() as m:
        m.setattr(runs.csv, "writer", KilledWriter)
        with pytest.raises(Killed):
            runs.MetricLogger(tmp_path, tensorboard=False).truncate_after(20)
    assert (tmp_path / "metrics.csv").read_text() == before  # before: 0 bytes, every row lost
    runs.MetricLogger(tmp_path, tensorboard=False).truncate_after(20)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,wall_s,loss" and [r.split(",")[0] for r in rows[1:]] == ["10", "20"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_resumed_logger_continues_the_runs_wall_clock(tmp_path):
    """wall_s is the run's time, not its process's: after a resume it goes on from the checkpoint's row
    (it restarted at 0, so a run's wall time per stage read from its CSV lost every earlier session)."""
    from common import runs

    (tmp_path / "metrics.csv").write_text("step,wall_s,loss\n10,500.0,1.0\n20,900.0,0.9\n30,1300.0,0.8\n")
    logger = runs.MetricLogger(tmp_path, tensorboard=False)
    logger.truncate_after(20)  # the checkpoint was at 20: the row at 30 came from the killed process
    logger.log(30, loss=0.7)
    rows = [r.split(",") for r in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == ["10", "20", "30"]
    assert 900.0 <= float(rows[-1][1]) < 960.0


def test_a_logged_again_step_replaces_its_row_only_when_the_new_one_is_in_hand(tmp_path):
    """An evaluation played again (its run killed between the row and summary.json) replaces the old row of its
    step, whatever came between; until its new row is logged the old one stays, so a second kill loses nothing."""
    from common import runs

    logger = runs.MetricLogger(tmp_path, "eval", tensorboard=False)
    for step, success in ((50, 0.1), (100, 0.2), (100, 0.3)):  # an older file that already holds the step twice
        logger.log(step, success_rate=success)
    again = runs.MetricLogger(tmp_path, "eval", tensorboard=False)
    again.truncate_after(100)  # the resume at the checkpoint of step 100 keeps both rows of that step
    assert [r.split(",")[0] for r in (tmp_path / "eval.csv").read_text().splitlines()[1:]] == ["50", "100", "100"]
    again.log_replacing(100, success_rate=0.4)
    rows = [r.split(",") for r in (tmp_path / "eval.csv").read_text().splitlines()[1:]]
    assert [(r[0], r[2]) for r in rows] == [("50", "0.1"), ("100", "0.4")]


def test_tensorboard_drops_a_killed_runs_points_after_its_checkpoint_and_a_replayed_steps_old_point(tmp_path):
    """After a resume TensorBoard shows nothing the killed process logged past the checkpoint, and after a replay one
    point per step, the new row's; the writer, whose own file held an old point, goes on logging. Another logger of
    the run (a SAC run's metrics beside its evaluations) keeps every point at those steps, and its open file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from common import runs

    def points(tag: str) -> list[tuple[int, float]]:
        events = EventAccumulator(str(tmp_path / "tb"))
        events.Reload()
        return [(e.step, round(e.value, 6)) for e in events.Scalars(tag)]

    killed = [runs.MetricLogger(tmp_path, name) for name in ("metrics", "eval")]
    for step, success in ((50, 0.1), (100, 0.2), (120, 0.3)):
        for log in killed:
            log.log(step, success_rate=success)
    for log in killed:
        log.close()
    metrics, again = (runs.MetricLogger(tmp_path, name) for name in ("metrics", "eval"))
    metrics.truncate_after(100)
    again.truncate_after(99)  # the checkpoint was at 100, its evaluation stopped: the point at 100 goes too
    assert points("eval/success_rate") == [(50, 0.1)] and points("metrics/success_rate") == [(50, 0.1), (100, 0.2)]
    again.log_replacing(100, success_rate=0.4)
    metrics.log(150, success_rate=0.5)
    again.log(150, success_rate=0.5)
    again.log_replacing(150, success_rate=0.6)  # the old point is in this writer's own file
    metrics.log(200, success_rate=0.7)
    again.log(200, success_rate=0.7)
    for log in (metrics, again):
        log.close()
    assert points("eval/success_rate") == [(50, 0.1), (100, 0.4), (150, 0.6), (200, 0.7)]
    assert points("metrics/success_rate") == [(50, 0.1), (100, 0.2), (150, 0.5), (200, 0.7)]


# -- bad settings are one-line errors, not tracebacks -------------------------------------------------------
def _python(code_or_module: list[str], **env):
    import subprocess
    import sys

    env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *code_or_module], capture_output=True, text=True, env=env, timeout=120)


def test_an_unknown_mujoco_gl_is_one_line_exit_2(tmp_path):
    out = tmp_path / "frames"
    proc = _python(["-m", "data.collect", "--frames", "20", "--out", str(out)], MUJOCO_GL="foo")
    assert proc.returncode == 2 and proc.stderr.startswith("error: MUJOCO_GL='foo' is not a rendering backend")
    assert proc.stderr.count("\n") == 1 and not out.exists()


def test_an_unknown_mujoco_gl_is_a_value_error_for_code_importing_the_library():
    """Library code raises (before: SystemExit from inside the import); only a command exits."""
    probe = "try:\n    import data.env\nexcept ValueError as err:\n    print(type(err).__name__, err)"
    proc = _python(["-c", probe], MUJOCO_GL="foo")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("StartupError MUJOCO_GL='foo' is not a rendering backend MuJoCo knows")


@pytest.mark.parametrize(
    "config, argv, message",
    [
        ("rl.grid:GridConfig", ["--seeds", "0,x"], "--seeds takes comma-separated integers, got '0,x'"),
        ("pipeline.run:PipelineConfig", ["--seeds", "0,x"], "--seeds takes comma-separated integers, got '0,x'"),
        ("pretrain.config:PretrainConfig", ["--figure-every", "0"], "--figure-every and --log-every must be >= 1"),
    ],
)
def test_bad_flag_values_are_one_line_exit_2(config, argv, message, capsys):
    import importlib

    from common.cli import parse_config

    module, name = config.split(":")
    with pytest.raises(SystemExit) as exit_info:  # parsing only: nothing runs, whatever the outcome
        parse_config(getattr(importlib.import_module(module), name), argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1


def test_running_out_of_memory_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info, one_line_errors():
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 32000000000 bytes.\nmore"
        )
    err = capsys.readouterr().err
    assert (
        exit_info.value.code == 2
        and err.startswith("error: out of memory ([enforce fail")
        and "lower --batch-size" in err
    )


# -- rl.grid: a rerun's stdout.log holds this pack's output only once -------------------------------------
def test_a_packs_output_is_appended_to_each_runs_log_without_another_runs_history(tmp_path):
    from rl.grid import _execute

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (a / "stdout.log").write_text("history of run a\n")
    assert _execute(["-c", "print('pack output')"], ["a", "b"], str(tmp_path)) == 0
    assert (a / "stdout.log").read_text() == "history of run a\npack output\n"
    assert (b / "stdout.log").read_text() == "pack output\n"  # before: run a's history too


# -- figures are written atomically: a full disk names the file and keeps the previous figure -------------
def test_a_figure_on_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from PIL import Image

    from common.figures import write_figure
    from common.io import DiskFullError

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = write_figure(fig, tmp_path / "figures" / "recon.png")
    before = path.read_bytes()
    assert Image.open(path).size[0] > 100

    def no_room(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_room)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    with pytest.raises(DiskFullError, match=r"writing .*figures/recon.png"):
        write_figure(fig, path)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["recon.png"]


# -- saliency.evaluate excludes the frames a model saw, not their positions -------------------------------
def test_evaluate_scores_a_fresh_folder_whose_keys_repeat_the_training_folders(synthetic, tmp_path, capsys):
    from saliency import distill, evaluate, train
    from saliency.data import build_oracle_annotations, save_annotations

    annotations = save_annotations(tmp_path / "ann.npz", build_oracle_annotations(synthetic, 6, seed=0, pool=40))
    run_dir = tmp_path / "sal"
    train.main(
        [
            "--preset",
            "micro",
            "--annotations",
            str(annotations),
            "--out",
            str(run_dir),
            "--threads",
            "1",
            "--epochs",
            "1",
        ]
    )
    distill.main(
        [
            "--preset",
            "micro",
            "--teacher",
            str(run_dir / "best.pt"),
            "--data",
            str(synthetic),
            "--threads",
            "1",
            "--epochs",
            "1",
            "--frames",
            "60",
        ]
    )  # the student saw every frame of `synthetic`
    fresh = synthetic_shards(tmp_path / "fresh", frames=60, shard_size=20, seed=1)  # same keys, other frames
    argv = ["--preset", "micro", "--model", str(run_dir / "student.pt"), "--threads", "1", "--n", "60"]
    evaluate.main([*argv, "--data", str(fresh), "--out", str(tmp_path / "eval")])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (
        metrics["metrics"]["n"] == 60 and metrics["metrics"]["first_key"] == "00000-00000"
    )  # before: refused, every key seen
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([*argv, "--data", str(synthetic), "--out", str(tmp_path / "eval2")])
    assert exit_info.value.code == 2 and "every frame of" in capsys.readouterr().err
