"""Atomic file writes and safe checkpoint loads, with one-line errors for what users can fix.

* `atomic_write_bytes` / `atomic_write_json` / `atomic_torch_save`: a reader (or a kill at any
  moment) sees the old file or the new one, never half. A full disk raises `DiskFullError` (the old
  file and the folder are left as they were); `atomic_torch_save` refuses non-finite float tensors
  (`NonFiniteError`), so a diverged run never overwrites a good checkpoint or exports NaN weights.
* `safe_torch_load`: `torch.load(weights_only=True)` whose every failure is a `CheckpointError`
  naming the file and the reason, never PyTorch's advice to retry with `weights_only=False`.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space (or quota) left while writing; the message names the file and the fix."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged or holds what a weights-only load refuses."""


class ShardError(RuntimeError):
    """A shard folder or file is missing, corrupt, or lacks a field; the message names the file."""


class NonFiniteError(ValueError):
    """A loss or tensor is NaN or infinite: training diverged; the message says what was kept."""


class OutputError(ValueError):
    """An output file or folder cannot be used as asked: it exists, holds another run or other data,
    another process holds it, or it cannot be written; nothing in it is touched, the message names the fix."""


def is_disk_full(err: BaseException) -> bool:
    """True for ENOSPC / EDQUOT, also when a library only puts it in the message (h5py raises a
    RuntimeError naming errno 28 when it flushes onto a full disk)."""
    if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
        return True
    return isinstance(err, (OSError, RuntimeError)) and (
        "No space left on device" in str(err) or "Disk quota exceeded" in str(err)
    )


def failed_path(err: BaseException) -> str:
    """The file an OS-level error is about, from the exception or its message ('the output' if unknown)."""
    found = re.search(r"filename = '([^']+)'", str(err))
    return getattr(err, "filename", None) or (found.group(1) if found else "the output")


def disk_full_error(path: str | os.PathLike, err: OSError, size: int | None = None) -> DiskFullError:
    need = f" ({size / 1e6:.1f} MB)" if size else ""
    return DiskFullError(
        errno.ENOSPC,
        f"no space left on the device writing {path}{need}; the previous file, if any, "
        "is unchanged. Free some space or choose another --out, then run the command again",
    )


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write `payload` to a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(err):
            raise disk_full_error(path, err, len(payload)) from err
        raise
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the hidden `.<name>.*.tmp` files (and `.<name>.tmp` folders: a replay being saved) that a
    writer killed mid-write left in `folder` (atomic writes never leave one otherwise). Only for a folder
    no other process writes to (`exclusive_run_dir` calls it on taking the folder's lock): a writer's
    file in flight has the same name. Returns what was removed."""
    stale = sorted(Path(folder).glob(".?*.tmp"))
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def nonfinite_tensors(obj: Any, prefix: str = "") -> list[str]:
    """Names (dotted paths) of the floating-point tensors in a nested dict/list holding NaN or inf."""
    import torch

    if isinstance(obj, torch.Tensor):
        return [prefix or "tensor"] if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    return [name for k, v in items for name in nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k))]


def check_finite_loss(loss: float, where: str, kept: str) -> float:
    """Raise NonFiniteError if `loss` is NaN/inf: `where` says when, `kept` which checkpoint is intact."""
    if not math.isfinite(loss):
        raise NonFiniteError(
            f"training diverged: the loss is {loss} at {where}; stopped without saving. {kept} "
            "Lower the learning rate (or check the data) and run again"
        )
    return loss


def atomic_torch_save(obj: Any, path: str | os.PathLike, allow_nonfinite: bool = False) -> Path:
    """torch.save through a temp file, so a kill mid-save never leaves a corrupt checkpoint.

    Refuses (NonFiniteError, nothing written) if a float tensor holds NaN/inf, unless `allow_nonfinite`.
    """
    import torch

    bad = [] if allow_nonfinite else nonfinite_tensors(obj)
    if bad:
        raise NonFiniteError(
            f"refusing to write {path}: {len(bad)} tensor(s) hold NaN or inf "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); training diverged, "
            "the previous file (if any) is kept"
        )
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _load_reason(err: BaseException) -> str:
    """PyTorch's load error reduced to its cause, without the advice to load with weights_only=False."""
    text = str(err)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|Check the documentation|$)", text, re.S)
    if found:
        return (
            "it holds objects other than tensors and plain values, which a safe (weights-only) load refuses: "
            + " ".join(found.group(1).split())[:200]
        )
    if "zip archive" in text or "central directory" in text or isinstance(err, (EOFError, RuntimeError)):
        return f"it is damaged or not a PyTorch checkpoint ({text.split('. ')[0][:200]})"
    first = " ".join(s for s in text.split(". ") if "weights_only" not in s)
    return f"{type(err).__name__}: {first[:200]}"


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """`torch.load(path, weights_only=True)`; any failure is a one-line CheckpointError naming the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pickle-protocol notes: the outcome is what matters
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot load {what} {path}: {_load_reason(err)}") from None


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove a file can be written there; raise a clear error if not."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"cannot write to {path}: {err.strerror or err}. Choose another --out.") from err
    return path
