"""Run directories: config.json, metrics as CSV and TensorBoard, append-safe across resumes."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import io
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Iterator

from common.cli import flat_dict, resume_mode
from common.io import (
    OutputError,
    atomic_write_bytes,
    atomic_write_json,
    check_writable_dir,
    remove_stale_temporaries,
)


def code_version() -> str:
    """The git commit of this checkout (with '+dirty' if modified), or 'unknown'."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def nice_own_session(autogroup: str | Path = "/proc/self/autogroup") -> bool:
    """Give a session leader's scheduler autogroup its niceness; True when set.

    With Linux autogroups (/proc/sys/kernel/sched_autogroup_enabled, on by default) CPU time is shared
    fairly between sessions first, and nice only ranks the processes within one: a job detached into its
    own session under `nice -n 19` still took as much CPU as the user's tests (measured: 31-44 % of the 2
    cores vs 14 % for a nice 10 job of another session). Only a session leader (a detached job) does this,
    so an interactive shell's group is never changed; where autogroups do not exist it does nothing.
    """
    niceness = os.nice(0)
    if niceness <= 0 or os.getsid(0) != os.getpid():
        return False
    try:
        Path(autogroup).write_text(str(niceness))
    except OSError:
        return False
    return True


def device_description() -> str:
    """A human-readable description of the compute device (recorded beside every figure and in every run's summary):
    on a CPU its model name and native bf16 units, which tell apart two machines of one name (the AMD EPYC Zen 3
    and Zen 4 that both ran the CPU table)."""
    import platform

    import torch

    from common.cpuinfo import cpu_bf16_units, cpu_model

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    units = ", ".join(cpu_bf16_units()) or "none"
    return (
        f"CPU {cpu_model() or platform.processor() or platform.machine()} ({platform.machine()}, bf16 units: {units})"
        f" x{os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    )


def write_config(path: str | Path, config: Any, resume: bool | str = False, allow_existing: bool = False) -> Path:
    """Write `config` (a config dataclass, flattened, or a flat dict) and the code version to `path`
    atomically: the file `--config` reads back (common.cli.stored_values).

    An existing file is another run's record: refused unless `resume` (True or 'auto', see
    common.cli.resume_mode; the caller checks the checkpoint's config) or `allow_existing` (the caller
    has checked that the stored run is this one, as a collection's manifest does).
    """
    path = Path(path)
    cfg = flat_dict(config) if dataclasses.is_dataclass(config) else dict(config)  # flat: the flags that made it
    if path.exists() and not allow_existing and not resume_mode(resume):
        where = path.parent if path.name == "config.json" else path
        raise OutputError(
            f"{where} already holds a run; pass --resume (or --resume auto) to continue it or choose another --out"
        )
    return atomic_write_json(path, {**cfg, "code_version": code_version()})


def prepare_run_dir(out: str | Path, config: Any, resume: bool | str = False, allow_existing: bool = False) -> Path:
    """Create the run folder and write its config.json (`write_config`, which refuses a folder that
    already holds a run unless `resume` or `allow_existing`)."""
    out = check_writable_dir(out)
    write_config(out / "config.json", config, resume, allow_existing)
    return out


def on_main_thread() -> bool:
    """Whether signal handlers can be installed here (Python allows it on the main thread only)."""
    return threading.current_thread() is threading.main_thread()


_HELD: dict[Path, list[int]] = {}  # run folder -> [lock file descriptor, nesting depth] held by this process


@contextlib.contextmanager
def exclusive_run_dir(run_dir: str | Path) -> Iterator[Path]:
    """Hold `run_dir` for this process while the block runs: a second process training into the same
    folder (the same command started twice, a requeued job while the first still runs) stops with an
    error naming the holder instead of interleaving rows and checkpoints. The lock is the kernel's
    (fcntl.lockf on `<run_dir>/.lock`): a killed process leaves none behind, and processes it forks
    (env workers) do not inherit it. Re-entrant within one process. On taking the lock it deletes the
    temp files of atomic writes a killed holder left half-written (a checkpoint, a shard, a manifest).
    A folder it created and nothing filled (a run refused before it started) is removed again."""
    created = not Path(run_dir).exists()
    path = check_writable_dir(run_dir).resolve()
    if path in _HELD:
        _HELD[path][1] += 1
    else:
        fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputError(
                f"{run_dir} is in use by {holder}; wait for it to end (or stop it), "
                "then run the same command again: it continues where it stopped"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        _HELD[path] = [fd, 1]
        remove_stale_temporaries(path)
    try:
        yield Path(run_dir)
    finally:
        _HELD[path][1] -= 1
        if not _HELD[path][1]:
            fd = _HELD.pop(path)[0]
            if created and [p.name for p in path.iterdir()] == [".lock"]:
                with contextlib.suppress(OSError):  # still locked here, so no other process is inside
                    (path / ".lock").unlink()
                    path.rmdir()
            os.close(fd)  # closing the descriptor releases the lock


class MetricLogger:
    """Append rows to `<run>/<name>.csv` (header fixed by the first row) and to TensorBoard."""

    def __init__(self, run_dir: str | Path, name: str = "metrics", tensorboard: bool = True):
        self.path = Path(run_dir) / f"{name}.csv"
        self._fields: list[str] | None = None
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="") as f:
                self._fields = next(csv.reader(f), None)
        self._tb = self._open_tensorboard() if tensorboard else None
        self._start = time.time()

    def _open_tensorboard(self):
        """A SummaryWriter on <run>/tb (a new event file), or None where tensorboard is not installed."""
        try:
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter(str(self.path.parent / "tb"))
        except Exception:  # tensorboard is optional at run time
            return None

    def log(self, step: int, **metrics: Any) -> None:
        row = {"step": step, "wall_s": round(time.time() - self._start, 3), **metrics}
        if self._fields is None:
            self._fields = list(row)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self._fields)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self._fields, extrasaction="ignore").writerow(row)
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{self.path.stem}/{k}", v, step)

    def log_replacing(self, step: int, **metrics: Any) -> None:
        """Log `step`'s row in place of any logged before at that step (an evaluation played again after a kill that
        left its row); the old row goes only once its replacement is in hand."""
        self._keep_rows(lambda s: s != step)
        self._drop_tensorboard(lambda s: s == step)
        self.log(step, **metrics)

    def elapsed(self) -> float:
        """The run's wall seconds so far, as the next row's `wall_s` would say."""
        return time.time() - self._start

    def truncate_after(self, step: int, wall_s: float | None = None) -> None:
        """On resume: drop rows (and TensorBoard scalars) logged after the checkpoint's step, so none is
        duplicated, and continue `wall_s` (a run's wall time, not its process's) from `wall_s`, the
        checkpoint's, when given, else from the last kept row."""
        if wall_s is not None:
            self._start = time.time() - wall_s
        self._drop_tensorboard(lambda s: s > step)
        header, keep = self._keep_rows(lambda s: s <= step)
        if wall_s is None and keep and "wall_s" in header:
            self._start = time.time() - float(keep[-1][header.index("wall_s")])

    def _keep_rows(self, keep: Callable[[float], bool]) -> tuple[list[str], list[list[str]]]:
        """Keep the CSV rows whose step `keep` accepts (the file rewritten only if one goes); (header, kept rows)."""
        if not self.path.exists():
            return [], []
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return [], []
        header, body = rows[0], rows[1:]
        kept = [r for r in body if r and keep(float(r[0]))]
        if len(kept) < len(body):
            text = io.StringIO(newline="")
            csv.writer(text).writerows([header, *kept])
            atomic_write_bytes(self.path, text.getvalue().encode())  # a kill mid-rewrite keeps every old row
        return header, kept

    def _drop_tensorboard(self, drop: Callable[[int], bool]) -> None:
        """Rewrite the event files of <run>/tb without this logger's summaries (its tags, `<name>/...`) whose step
        `drop` accepts (a killed run's after its checkpoint, or a step logged again; TensorBoard's purge_step would
        hide this attempt's events too when loggers open late). The other loggers of the run keep every point and
        their open files: only files holding this logger's tags are rewritten, its own writer's among them, which
        is closed first and opened anew after."""
        tb = self.path.parent / "tb"
        if self._tb is None or not tb.is_dir():
            return
        from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.record_writer import RecordWriter

        prefix = f"{self.path.stem}/"

        def dropped(record: bytes) -> bool:
            event = Event.FromString(record)
            values = event.summary.value if event.HasField("summary") else []
            return bool(values) and all(v.tag.startswith(prefix) for v in values) and drop(event.step)

        self._tb.flush()
        rewrites = {}
        for path in sorted(tb.glob("events.out.tfevents.*")):
            records = list(RawEventFileLoader(str(path)).Load())
            keep = [r for r in records if not dropped(r)]
            if len(keep) < len(records):
                rewrites[path] = keep
        if not rewrites:
            return
        self._tb.close()  # a file replaced under an open writer would take its later summaries with the old inode
        for path, keep in rewrites.items():
            tmp = path.with_name(f".{path.name}.part")
            with open(tmp, "wb") as f:
                writer = RecordWriter(f)
                for record in keep:
                    writer.write(record)
            tmp.replace(path)
        self._tb = self._open_tensorboard()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
