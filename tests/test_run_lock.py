"""One process per run folder: a second job training into a held folder is refused; a killed holder frees it."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from common.io import OutputError
from common.runs import exclusive_run_dir, nice_own_session

HOLDER = textwrap.dedent("""
    import os, sys, time
    from common.runs import exclusive_run_dir
    with exclusive_run_dir(sys.argv[1]):
        child = os.fork()  # like an env worker: forked while the folder is held
        if child == 0:
            time.sleep(600)
            os._exit(0)
        print(child, flush=True)
        time.sleep(600)
""")


@pytest.fixture
def holder(tmp_path):
    """A process holding tmp_path/run (and a child it forked meanwhile); yields (process, child pid)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    yield proc, child
    for pid in (proc.pid, child):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def test_a_held_folder_is_refused_and_a_killed_holder_frees_it(tmp_path, holder):
    proc, child = holder
    in_flight = tmp_path / "run" / ".checkpoint.pt.x81kq0za.tmp"  # the holder's atomic write, not yet renamed
    in_flight.write_bytes(b"half")
    with pytest.raises(OutputError, match=rf"run is in use by pid {proc.pid} on .*run the same command again"):
        with exclusive_run_dir(tmp_path / "run"):
            pass
    assert in_flight.exists()  # a refused process touches nothing
    proc.kill()
    proc.wait()
    os.kill(child, 0)  # the forked child still lives, and does not hold the folder
    with exclusive_run_dir(tmp_path / "run") as run:
        assert (run / ".lock").read_text() == f"pid {os.getpid()} on {os.uname().nodename}\n"
        assert not in_flight.exists()  # what the killed holder left half-written is gone


def test_reentrant_and_an_unused_new_folder_is_removed(tmp_path):
    with exclusive_run_dir(tmp_path / "a"):
        with exclusive_run_dir(tmp_path / "a"):  # the same process may enter again
            pass
        assert (tmp_path / "a" / ".lock").exists()
    assert not (tmp_path / "a").exists()  # created here, nothing written: no trace left
    with exclusive_run_dir(tmp_path / "b") as run:
        (run / "config.json").write_text("{}")
    assert sorted(p.name for p in run.iterdir()) == [".lock", "config.json"]


def test_rl_sac_refuses_a_folder_another_process_trains_into(tmp_path, holder, capsys):
    proc, _ = holder
    run = tmp_path / "run"
    args = ["--preset", "micro", "--encoder", "state", "--steps", "200", "--out", str(run), "--resume", "auto"]
    from rl.sac import main

    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and f"in use by pid {proc.pid}" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written beside the holder's lock
    proc.kill()
    proc.wait()
    main(args)  # the holder is gone: the same command runs
    assert json.loads((run / "summary.json").read_text())["steps"] == 200


def test_collect_label_and_distill_refuse_a_folder_another_process_writes(tmp_path, holder):
    """Shard folders (data.collect, saliency.label) and the student's folder (saliency.distill) are held too:
    a second job stops before reading or writing anything."""
    from data.collect import CollectConfig, collect
    from saliency.config import DistillConfig, LabelConfig
    from saliency.distill import run as distill
    from saliency.label import run as label

    proc, _ = holder
    run = tmp_path / "run"
    jobs = {
        "collect": lambda: collect(CollectConfig(frames=10, out=str(run)), progress=False),
        "label": lambda: label(
            LabelConfig(data=str(tmp_path / "absent"), model=str(tmp_path / "absent.pt"), out=str(run))
        ),
        "distill": lambda: distill(DistillConfig(teacher=str(tmp_path / "absent.pt"), out=str(run / "student.pt"))),
    }
    for name, job in jobs.items():
        with pytest.raises(OutputError, match=rf"run is in use by pid {proc.pid}"):
            job()
        assert sorted(p.name for p in run.iterdir()) == [".lock"], name


def test_a_detached_niced_job_nices_its_own_session_only(tmp_path, monkeypatch):
    autogroup = tmp_path / "autogroup"
    autogroup.write_text("/autogroup-7 nice 0\n")
    monkeypatch.setattr(os, "nice", lambda inc: 19)
    monkeypatch.setattr(os, "getsid", lambda pid: 4242)
    monkeypatch.setattr(os, "getpid", lambda: 4242)  # a session leader: the job --background detached
    assert nice_own_session(autogroup) and autogroup.read_text() == "19"
    autogroup.write_text("/autogroup-7 nice 0\n")
    monkeypatch.setattr(os, "getpid", lambda: 4243)  # a process of the user's shell session: left alone
    assert not nice_own_session(autogroup) and autogroup.read_text() == "/autogroup-7 nice 0\n"
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    monkeypatch.setattr(os, "nice", lambda inc: 0)  # not niced: nothing to pass on
    assert not nice_own_session(autogroup)
    monkeypatch.setattr(os, "nice", lambda inc: 19)
    assert not nice_own_session(tmp_path / "no-such-dir" / "autogroup")  # no autogroups (or not Linux)
