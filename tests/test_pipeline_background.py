"""pipeline.background: a detached, niced, logged experiment that a second start leaves alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import background
from pipeline.background import BackgroundConfig
from pipeline.table.config import BACKGROUND_NAME, LOG_FILE, TableConfig
from pipeline.table.runner import start_background


def sleeper(tmp_path: Path) -> list[str]:
    """A job that says hello and sleeps; its command names `tmp_path`, so no other test's job runs it too (a
    process running the very same command counts as the job started by hand)."""
    return [sys.executable, "-c", f"import time; print('hello from the job', flush=True); time.sleep(60)  # {tmp_path}"]


def wait_for(predicate, seconds: float = 20.0) -> None:
    deadline = time.time() + seconds
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def jobs():
    started: list[int] = []
    yield started
    for pid in started:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_the_job_runs_detached_niced_and_logged(tmp_path, jobs, capsys):
    cfg = BackgroundConfig(name="sleeper", nice=7, logs=str(tmp_path))
    pid = background.start(cfg, sleeper(tmp_path))
    jobs.append(pid)
    log = tmp_path / "sleeper.log"
    wait_for(lambda: "hello from the job" in log.read_text().splitlines())  # the job's line, not the start line
    assert os.getsid(pid) == pid  # its own session: the starting shell can end
    assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 7)  # nice adds
    autogroup = Path(f"/proc/{pid}/autogroup")
    if autogroup.exists():  # kernels with autogroups: the session's group is niced too
        assert autogroup.read_text().split()[-1] == "7"
    assert json.loads((tmp_path / "sleeper.pid").read_text())["pid"] == pid
    assert "started: " + " ".join(sleeper(tmp_path)) in log.read_text()
    out = capsys.readouterr().out
    assert f"sleeper started (pid {pid}, nice 7)" in out
    assert f"-m pipeline.background --stop --name sleeper --logs {tmp_path}    # stop it at a checkpoint" in out


def test_a_second_start_leaves_the_running_job_alone_and_a_later_one_starts_it_again(tmp_path, jobs, capsys):
    cfg = BackgroundConfig(name="sleeper", nice=5, logs=str(tmp_path))
    pid = background.start(cfg, sleeper(tmp_path))
    jobs.append(pid)
    wait_for(lambda: background.running_pid(tmp_path / "sleeper.pid") == pid)  # nice has exec'd the command
    assert background.start(cfg, sleeper(tmp_path)) == pid
    assert f"sleeper already runs (pid {pid})" in capsys.readouterr().out
    assert (tmp_path / "sleeper.log").read_text().count("started: ") == 1
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: background.running_pid(tmp_path / "sleeper.pid") is None)
    again = background.start(cfg, sleeper(tmp_path))
    jobs.append(again)
    assert again != pid and (tmp_path / "sleeper.log").read_text().count("started: ") == 2


def test_the_job_does_not_inherit_the_calling_makes_flags(tmp_path, jobs, monkeypatch):
    monkeypatch.setenv("MAKEFLAGS", "n")  # `make -n background` must not turn the detached make into a dry run
    monkeypatch.setenv("MAKELEVEL", "1")
    monkeypatch.setenv("VISARL_SEEN", "yes")
    show = "import os; print(os.environ.get('MAKEFLAGS'), os.environ.get('MAKELEVEL'), os.environ.get('VISARL_SEEN'))"
    jobs.append(background.start(BackgroundConfig(name="env", logs=str(tmp_path)), [sys.executable, "-c", show]))
    wait_for(lambda: "None None yes" in (tmp_path / "env.log").read_text().splitlines())


def test_a_pid_file_naming_another_program_is_not_taken_for_the_job(tmp_path):
    pid_file = tmp_path / "job.pid"
    pid_file.write_text(json.dumps({"pid": os.getpid(), "argv": ["make", "ablation-features"]}))
    assert background.running_pid(pid_file) is None  # this pid runs pytest, not the recorded command
    pid_file.write_text("not json")
    assert background.running_pid(pid_file) is None


def test_a_job_started_by_hand_is_found_by_its_command(tmp_path, jobs, capsys):
    by_hand = subprocess.Popen(sleeper(tmp_path), start_new_session=True, stdout=subprocess.DEVNULL)
    jobs.append(by_hand.pid)
    wait_for(lambda: background.command_of(by_hand.pid) == sleeper(tmp_path))
    assert background.start(BackgroundConfig(name="sleeper", logs=str(tmp_path)), sleeper(tmp_path)) == by_hand.pid
    assert f"sleeper already runs (pid {by_hand.pid})" in capsys.readouterr().out
    assert not (tmp_path / "sleeper.log").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--name", "x"], "name the command after --"),
        (["--name", "x", "--"], "name the command after --"),
        (["--name", "a/b", "--", "true"], "--name must be a plain file name"),
        (["--name", "x", "--nice", "20", "--", "true"], "--nice must be in 0..19"),
        (["--name", "x", "--", "no-such-program-here", "run"], "'no-such-program-here' is not a program on PATH"),
    ],
)
def test_bad_input_is_one_line_naming_the_fix(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        background.main([*argv[:2], "--logs", str(tmp_path), *argv[2:]])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


def test_the_table_started_in_the_background_is_not_started_twice(tmp_path, jobs, capsys):
    root = tmp_path / "root"
    cfg = TableConfig(root=str(root), results=str(tmp_path / "results")).validate()
    holder = background.start(BackgroundConfig(name=BACKGROUND_NAME, logs=str(root)), sleeper(tmp_path))
    jobs.append(holder)
    wait_for(lambda: background.running_pid(root / "table.pid") == holder)
    assert start_background(cfg, ["--root", str(root), "--background"]) == holder
    assert f"cpu-table already runs (pid {holder}); log: {root / LOG_FILE}" in capsys.readouterr().out


def test_help_lists_the_flags_without_a_command(capsys):
    with pytest.raises(SystemExit) as stop:
        background.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--name", "--nice", "--logs"))


def test_the_jobs_threads_wait_passively_unless_the_caller_says_otherwise(tmp_path, jobs, monkeypatch):
    """Spinning OpenMP threads on shared cores slowed 2-thread training ~3x: jobs get OMP_WAIT_POLICY=PASSIVE,
    and a policy the caller sets wins."""

    def show(name: str) -> list[str]:  # a command per job: the same one still running is "already runs"
        return [sys.executable, "-c", f"import os; print('policy', os.environ.get('OMP_WAIT_POLICY'))  # {name}"]

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    jobs.append(background.start(BackgroundConfig(name="passive", logs=str(tmp_path)), show("passive")))
    wait_for(lambda: "policy PASSIVE" in (tmp_path / "passive.log").read_text().splitlines())
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    jobs.append(background.start(BackgroundConfig(name="active", logs=str(tmp_path)), show("active")))
    wait_for(lambda: "policy ACTIVE" in (tmp_path / "active.log").read_text().splitlines())


#: a job as the long ones are: a parent that dies on SIGTERM (the table's orchestrator) and a child that, on SIGTERM,
#: takes a second to write its checkpoint, then exits (rl.workspace, pretrain.multimae)
CHECKPOINTING_CHILD = """
import pathlib, signal, sys, time
def on_term(*_):
    time.sleep(1.0)
    pathlib.Path(sys.argv[1]).write_text("checkpoint")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("child ready", flush=True)
time.sleep(60)
"""


def checkpointing_job(checkpoint: Path) -> list[str]:
    parent = (
        f"import subprocess, sys; subprocess.run([sys.executable, '-c', {CHECKPOINTING_CHILD!r}, {str(checkpoint)!r}])"
    )
    return [sys.executable, "-c", parent]


def test_stop_terms_every_process_of_each_job_and_waits_for_their_checkpoints(tmp_path, jobs, capsys):
    table_root = tmp_path / "table_root"  # the CPU table records its job in its own root: a second folder
    starts = {"sac": (tmp_path, tmp_path / "sac.ckpt"), "table": (table_root, tmp_path / "table.ckpt")}
    for name, (logs, checkpoint) in starts.items():
        jobs.append(background.start(BackgroundConfig(name=name, logs=str(logs)), checkpointing_job(checkpoint)))
        wait_for(lambda logs=logs, name=name: "child ready" in (logs / f"{name}.log").read_text().splitlines())
    stale = tmp_path / "finished.pid"  # a job that ended long ago: its pid file is left, nothing is signalled
    stale.write_text(json.dumps({"pid": os.getpid(), "argv": ["make", "precision-check-sac"]}))
    capsys.readouterr()

    background.main(["--stop", "--logs", f"{tmp_path},{table_root}", "--wait", "30"])

    # stop returned only after each child wrote its checkpoint and exited, not when the parent died
    assert all(checkpoint.read_text() == "checkpoint" for _, checkpoint in starts.values())
    assert not any(background.group_alive(pid) for pid in jobs)
    out = capsys.readouterr().out
    for name, pid in zip(starts, jobs):
        assert f"{name} (pid {pid}): SIGTERM sent to its process group" in out
        assert f"{name} stopped; it resumes from its checkpoints when started again" in out
    assert "finished" not in out


def test_stop_alone_by_name_and_a_job_that_outlives_the_wait_is_named_with_exit_1(tmp_path, jobs, capsys):
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring', flush=True); time.sleep(60)",
    ]
    jobs.append(background.start(BackgroundConfig(name="stubborn", logs=str(tmp_path)), stubborn))
    jobs.append(background.start(BackgroundConfig(name="other", logs=str(tmp_path)), sleeper(tmp_path)))
    wait_for(lambda: "ignoring" in (tmp_path / "stubborn.log").read_text().splitlines())
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        background.main(["--stop", "--name", "stubborn", "--logs", str(tmp_path), "--wait", "0.5"])
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert "stubborn still runs after 0.5 s" in out and f"kill -KILL -- -{jobs[0]}" in out
    assert "other" not in out and background.group_alive(jobs[1])  # --name stops that job alone


def test_stop_with_nothing_running_says_so(tmp_path, capsys):
    background.main(["--stop", "--logs", str(tmp_path)])
    assert f"no background job runs (pid files in {tmp_path.resolve()})" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--stop", "--", "true"], "--stop stops the running jobs and takes no command"),
        (["--stop", "--name", "a/b"], "--name must be a plain file name"),
        (["--stop", "--wait", "-1"], "--wait must be >= 0 seconds"),
    ],
)
def test_bad_stop_input_is_one_line_naming_the_fix(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        background.main([*argv, "--logs", str(tmp_path)] if "--" not in argv else argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_a_job_whose_leader_exited_while_its_children_checkpoint_still_runs(tmp_path, jobs, capsys):
    """A second stop (or start) in the window where the job's first process has died and its packs still write
    their checkpoints finds the job by its process group: it neither says nothing runs nor starts another copy."""
    checkpoint = tmp_path / "slow.ckpt"
    slow = checkpointing_job(checkpoint)
    slow[2] = slow[2].replace("time.sleep(1.0)", "time.sleep(3.0)")
    jobs.append(pid := background.start(BackgroundConfig(name="slow", logs=str(tmp_path)), slow))
    wait_for(lambda: "child ready" in (tmp_path / "slow.log").read_text().splitlines())
    os.killpg(pid, signal.SIGTERM)
    wait_for(lambda: not background.command_of(pid))  # the parent died (gone, or a zombie: pytest started it)
    assert not checkpoint.exists() and background.running_pid(tmp_path / "slow.pid") == pid
    assert background.start(BackgroundConfig(name="slow", logs=str(tmp_path)), slow) == pid  # no second copy
    capsys.readouterr()
    background.main(["--stop", "--logs", str(tmp_path), "--wait", "30"])
    assert f"slow (pid {pid}): SIGTERM sent" in capsys.readouterr().out
    assert checkpoint.read_text() == "checkpoint" and background.running_pid(tmp_path / "slow.pid") is None


def test_the_same_name_in_two_folders_is_two_jobs(tmp_path, jobs, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    for logs in (first, second):
        jobs.append(background.start(BackgroundConfig(name="job", logs=str(logs)), sleeper(logs)))
    wait_for(lambda: all(background.running_pid(logs / "job.pid") for logs in (first, second)))
    capsys.readouterr()
    background.main(["--stop", "--name", "job", "--logs", f"{first},{second}", "--wait", "30"])
    out = capsys.readouterr().out
    assert f"{first / 'job.pid'} stopped" in out and f"{second / 'job.pid'} stopped" in out
    assert not any(background.group_alive(pid) for pid in jobs)
