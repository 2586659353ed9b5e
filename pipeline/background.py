"""`python -m pipeline.background --name NAME [--nice 10] -- COMMAND ...`: start a long experiment detached;
`python -m pipeline.background --stop [--name NAME]`: stop the running ones, each at a checkpoint.

The command runs in a session of its own (it outlives the shell that started it, not the machine's session),
under `nice`, with its output appended to <logs>/<name>.log, and its scheduler autogroup given the same
niceness: with Linux autogroups CPU time is shared between sessions first, so nice alone would not rank a
detached job below the user's tests (common.runs.nice_own_session). <logs>/<name>.pid records what runs; a
second start of a name whose command still runs says so and starts nothing (exit 0), so `make background`
can be rerun at the start of every session. OpenMP threads wait passively (THREAD_ENV): on shared cores a
spinning wait made 2-thread training ~3x slower. Every experiment it starts resumes from its own checkpoints.

A hard kill (a machine's session ending) loses what each job did since its last checkpoint (SAC and pretraining
write one about every 20 minutes); `--stop` sends SIGTERM to each job's process group instead, on which SAC runs and
pretrainings save a checkpoint and exit, and waits until every process of the group has exited.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common.cli import fail, option, run_command
from common.io import atomic_write_json

#: what a calling make passes its sub-makes (flags such as -n, jobserver descriptors, depth)
MAKE_VARIABLES = frozenset({"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"})
#: set for every job unless the caller sets it: a background job shares the cores, and OpenMP threads that
#: spin at barriers burn the slices their descheduled sibling needs. Measured 2026-12-03 on the 2-core EPYC
#: beside the running jobs, in an autogroup at nice 10: the paper-size MultiMAE trained at 1.2 img/s on 2
#: spinning threads, 3.4 passive, 3.8 on 1 thread (the student's distillation: 12.5 s per batch vs 2.2 s);
#: with the cores to itself, passive and spinning matched (9.7-12.1 img/s, noise)
THREAD_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


@dataclass
class BackgroundConfig:
    """Start `-- COMMAND ...` detached, niced, logged to <logs>/<name>.log; nothing if it already runs. With --stop,
    stop the running jobs, each at a checkpoint."""

    name: str = option(
        "",
        "the experiment's name: its log is <logs>/<name>.log, its pid file <logs>/<name>.pid "
        "(with --stop: the one job to stop; default every job)",
    )
    nice: int = option(10, "niceness of the command and of its session's autogroup (0-19; higher yields more)")
    logs: str = option(
        "~/visarl-runs",
        "folder of the log and pid files (with --stop: folders, comma-separated, whose <name>.pid jobs are stopped)",
    )
    stop: bool = option(
        False,
        "stop the running jobs instead of starting one: SIGTERM to each job's process group (its SAC runs and "
        "pretrainings checkpoint and exit), then wait for every process of it to exit",
    )
    wait: float = option(
        1200.0,
        "with --stop: seconds to wait for the jobs to exit before saying which still run (a SAC run pauses after "
        "the episode or evaluation under way, then writes its checkpoint)",
    )

    def validate(self) -> None:
        named = bool(self.name) or not self.stop  # --stop without --name stops every job
        if named and (not self.name or "/" in self.name or self.name.startswith(".")):
            raise ValueError(f"--name must be a plain file name (e.g. ablation-features), got {self.name!r}")
        if not 0 <= self.nice <= 19:
            raise ValueError(f"--nice must be in 0..19, got {self.nice}")
        if not self.wait >= 0:
            raise ValueError(f"--wait must be >= 0 seconds, got {self.wait}")


def command_of(pid: int | str) -> list[str] | None:
    """The command line process `pid` runs, or None when there is no such process."""
    try:
        return [w.decode(errors="replace") for w in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]
    except OSError:
        return None


def group_alive(pgid: int) -> bool:
    """Whether a process of process group `pgid` still runs (zombies, exited but not yet reaped, do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # after the command's name in parentheses: state, ppid, pgrp, ...
            state, _ppid, pgrp = (entry / "stat").read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue  # exited while we looked
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False


def running_pid(pid_file: Path, command: list[str] | None = None) -> int | None:
    """The pid recorded in `pid_file` while that process still runs the recorded command, or while it has exited
    and processes of its group still run (a stopped job's packs writing their checkpoints: Linux allocates no pid
    still used as a group id, so that group is the job's); else, given `command`, a process that runs exactly it
    (one started by hand); else None."""
    try:
        record = json.loads(pid_file.read_text())
        pid, running, argv = int(record["pid"]), command_of(record["pid"]), record["argv"]
        starting = running is not None and running[:1] == ["nice"] and running[-len(argv) :] == argv  # before exec
        if running == argv or starting or (not running and group_alive(pid)):  # []: a zombie, or exec under way
            return pid
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if command and Path("/proc").is_dir():
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) != os.getpid() and command_of(proc.name) == command:
                return int(proc.name)
    return None


def start(cfg: BackgroundConfig, command: list[str], env: dict[str, str] | None = None) -> int:
    """Start `command` detached (see the module docstring) in `env` (default this one's); its pid, or the pid
    already running it."""
    if shutil.which(command[0]) is None:
        raise ValueError(f"{command[0]!r} is not a program on PATH: name the command to run after --")
    folder = Path(cfg.logs).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    log, pid_file = folder / f"{cfg.name}.log", folder / f"{cfg.name}.pid"
    pid = running_pid(pid_file, command)
    if pid is not None:
        print(f"{cfg.name} already runs (pid {pid})" + (f"; log: {log}" if log.exists() else ""))
        return pid
    argv = ["nice", "-n", str(cfg.nice), *command]
    # a job started from make is a top-level run of its own: not a dry run (-n) or a share of the caller's -j
    env = {**THREAD_ENV, **{k: v for k, v in (os.environ if env is None else env).items() if k not in MAKE_VARIABLES}}
    with open(log, "ab") as out:
        out.write(f"\n[{time.strftime('%Y-%m-%d %H:%M:%S')}] started: {' '.join(command)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
        )
    try:  # the new session's autogroup (absent where the kernel has none)
        Path(f"/proc/{proc.pid}/autogroup").write_text(str(cfg.nice))
    except OSError:
        pass
    # nice execs the command in place: the pid's cmdline becomes the command's own
    atomic_write_json(pid_file, {"pid": proc.pid, "argv": command, "started": time.time()})
    print(
        f"{cfg.name} started (pid {proc.pid}, nice {cfg.nice}); log: {log}\n"
        f"  tail -f {log}    # follow it\n  {sys.executable} -m pipeline.background --stop --name {cfg.name} --logs "
        f"{folder}    # stop it at a checkpoint (it resumes when started again)"
    )
    return proc.pid


def stop(cfg: BackgroundConfig) -> list[str]:
    """SIGTERM to the process group of every running job recorded in a <logs> folder (or of --name's alone), then
    wait up to --wait seconds until every process of each group has exited. Returns the names still running."""
    folders = dict.fromkeys(Path(f).expanduser().resolve() for f in cfg.logs.split(",") if f)
    pid_files = [p for f in folders for p in ([f / f"{cfg.name}.pid"] if cfg.name else sorted(f.glob("*.pid")))]
    # named by their pid file's stem, its path where two folders hold the same name
    stems = [p.stem for p in pid_files]
    running = {
        (p.stem if stems.count(p.stem) == 1 else str(p)): pid for p in pid_files if (pid := running_pid(p)) is not None
    }
    if not running:
        print(
            f"no background job {cfg.name + ' ' if cfg.name else ''}runs (pid files in {', '.join(map(str, folders))})"
        )
        return []
    for name, pid in running.items():
        try:
            os.killpg(pid, signal.SIGTERM)  # the job leads its own session and group: it and every child
        except ProcessLookupError:
            continue
        print(
            f"{name} (pid {pid}): SIGTERM sent to its process group; waiting for it to checkpoint and exit", flush=True
        )
    deadline = time.monotonic() + cfg.wait
    while (alive := [n for n, pid in running.items() if group_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    for name in running:
        if name not in alive:
            print(f"{name} stopped; it resumes from its checkpoints when started again")
    for name in alive:
        print(
            f"{name} still runs after {cfg.wait:g} s (a checkpoint still being written?): wait, or `kill -KILL -- "
            f"-{running[name]}`, which loses what it did since its last checkpoint"
        )
    return alive


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    flags = argv[: argv.index("--")] if "--" in argv else argv  # this command's own, not the job's
    if "--stop" in flags:
        if "--" in argv:
            fail("--stop stops the running jobs and takes no command: drop what follows --")
        if run_command(BackgroundConfig, stop, argv):
            sys.exit(1)  # some still run: the caller (a session's last step) should not take them for stopped
        return 0
    if {"-h", "--help"} & set(flags):
        return run_command(BackgroundConfig, lambda cfg: 0, ["--help"])  # prints the flags and exits
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        fail("name the command after --, e.g. python -m pipeline.background --name demo -- make demo")
    split = argv.index("--")
    return run_command(BackgroundConfig, lambda cfg: start(cfg, argv[split + 1 :]), argv[:split])


if __name__ == "__main__":
    main()
