"""A real full disk for tests: a command run in a child whose folder is a fresh, small tmpfs.

Patching `os.write` or `os.posix_fallocate` reaches only the Python calls a fix makes; a crash in a C
library's own writes (HDF5's driver, a memmap's page faults) needs the kernel's ENOSPC. The child
mounts the tmpfs in a mount namespace of its own (`unshare -m`, or `-rm` through a user namespace
where not root), so nothing is mounted outside it, and the tmpfs goes when the child ends: what the
command left on it is listed by the child and returned.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_SHELL = """
mount -t tmpfs -o size="$1"k tmpfs "$2" || exit 97
disk=$2
shift 2
"$@"
code=$?
echo "$MARKER"
ls -A "$disk"
exit $code
"""
_MARKER = "--- left on the small disk:"


@dataclass
class SmallDiskRun:
    returncode: int
    stdout: str  # the command's stdout, without the listing
    stderr: str
    left: list[str]  # names left in the disk folder when the command ended


@functools.cache
def _unshare() -> tuple[list[str] | None, str]:
    """The unshare command that can mount a tmpfs here, or None and why not."""
    if not shutil.which("unshare"):
        return None, "no unshare(1) here"
    reasons = []
    for flags in (["-m"], ["-rm"]) if os.geteuid() == 0 else (["-rm"],):
        with tempfile.TemporaryDirectory() as probe:
            proc = subprocess.run(
                ["unshare", *flags, "sh", "-c", 'mount -t tmpfs -o size=16k tmpfs "$0"', probe],
                capture_output=True,
                text=True,
                timeout=30,
            )
        if proc.returncode == 0:
            return ["unshare", *flags], ""
        reasons.append(f"unshare {' '.join(flags)}: {proc.stderr.strip() or proc.returncode}")
    return None, "cannot mount a tmpfs in a mount namespace here (" + "; ".join(reasons) + ")"


def small_disk_or_skip() -> None:
    """Skip the calling test where a small tmpfs cannot be mounted (no unshare, no namespaces allowed)."""
    import pytest

    unshare, reason = _unshare()
    if unshare is None:
        pytest.skip(reason)


def run_on_small_disk(disk: Path, kilobytes: int, argv: list[str], timeout: float = 180) -> SmallDiskRun:
    """Run `argv` in a child where the existing folder `disk` is a fresh tmpfs of `kilobytes` KiB; the
    project's code comes first on the child's path."""
    unshare, reason = _unshare()
    if unshare is None:
        raise RuntimeError(reason)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "MARKER": _MARKER, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [*unshare, "sh", "-c", _SHELL, "sh", str(kilobytes), str(disk), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=root,
    )
    if proc.returncode == 97:
        raise RuntimeError(f"mounting the small disk failed: {proc.stderr.strip()}")
    stdout, _, listing = proc.stdout.rpartition(_MARKER + "\n")
    return SmallDiskRun(proc.returncode, stdout, proc.stderr, listing.split())
