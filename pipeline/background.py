"""`python -m pipeline.background --name NAME [--nice 10] -- COMMAND ...`: start a long experiment detached.

The command runs in a session of its own (it outlives the shell that started it, not the machine's session),
under `nice`, with its output appended to <logs>/<name>.log, and its scheduler autogroup given the same
niceness: with Linux autogroups CPU time is shared between sessions first, so nice alone would not rank a
detached job below the user's tests (common.runs.nice_own_session). <logs>/<name>.pid records what runs; a
second start of a name whose command still runs says so and starts nothing (exit 0), so `make background`
can be rerun at the start of every session. OpenMP threads wait passively (THREAD_ENV): on shared cores a
spinning wait made 2-thread training ~3x slower. Every experiment it starts resumes from its own checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
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
    """Start `-- COMMAND ...` detached, niced, logged to <logs>/<name>.log; nothing if it already runs."""

    name: str = option("", "the experiment's name: its log is <logs>/<name>.log, its pid file <logs>/<name>.pid")
    nice: int = option(10, "niceness of the command and of its session's autogroup (0-19; higher yields more)")
    logs: str = option("~/visarl-runs", "folder of the log and pid files")

    def validate(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"--name must be a plain file name (e.g. ablation-features), got {self.name!r}")
        if not 0 <= self.nice <= 19:
            raise ValueError(f"--nice must be in 0..19, got {self.nice}")


def command_of(pid: int | str) -> list[str] | None:
    """The command line process `pid` runs, or None when there is no such process."""
    try:
        return [w.decode(errors="replace") for w in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]
    except OSError:
        return None


def running_pid(pid_file: Path, command: list[str] | None = None) -> int | None:
    """The pid recorded in `pid_file` while that process still runs the recorded command; else, given `command`,
    a process that runs exactly it (one started by hand); else None."""
    try:
        record = json.loads(pid_file.read_text())
        if command_of(record["pid"]) == record["argv"]:
            return int(record["pid"])
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
        f"  tail -f {log}    # follow it\n  kill -- -{proc.pid}    # stop it (it resumes when started again)"
    )
    return proc.pid


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if {"-h", "--help"} & set(argv[: argv.index("--") if "--" in argv else len(argv)]):
        return run_command(BackgroundConfig, lambda cfg: 0, ["--help"])  # prints the flags and exits
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        fail("name the command after --, e.g. python -m pipeline.background --name demo -- make demo")
    split = argv.index("--")
    return run_command(BackgroundConfig, lambda cfg: start(cfg, argv[split + 1 :]), argv[:split])


if __name__ == "__main__":
    main()
