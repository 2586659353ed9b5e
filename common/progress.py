"""Progress of long jobs: a tqdm bar on a terminal, a plain line every N seconds in a log file.

    from common.progress import progress
    with progress(total=n, desc="label", unit="frame") as bar:   # the arguments of tqdm(...)
        bar.update(k); bar.set_postfix({"loss": 0.1}, refresh=False)

tqdm redraws its bar with carriage returns, which pile up in a log file (a scheduler's, `> run.log`,
an rl.grid pack's stdout.log). When the output is not a terminal, `progress` returns a `LineProgress`:
the same object, which writes `desc: 45% 450/1000 frame [00:10<00:12, 45.0 frame/s, loss=0.1]` as a
line of its own at most every `every_s` seconds (default 30, or $VISARL_PROGRESS_SECONDS) and once more
when it closes, and never a carriage return.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

from tqdm import tqdm

#: seconds between lines when the output is not a terminal (unless $VISARL_PROGRESS_SECONDS says otherwise)
DEFAULT_EVERY_S = 30.0


def line_interval() -> float:
    """$VISARL_PROGRESS_SECONDS (a finite number > 0), else DEFAULT_EVERY_S."""
    text = os.environ.get("VISARL_PROGRESS_SECONDS", "")
    try:
        value = float(text) if text else DEFAULT_EVERY_S
    except ValueError:
        raise ValueError(f"VISARL_PROGRESS_SECONDS must be a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"VISARL_PROGRESS_SECONDS must be a finite number > 0, got {text!r}")
    return value


class LineProgress(tqdm):
    """A tqdm whose display is a plain line, written at most every `every_s` seconds and when it closes."""

    def __init__(self, *args: Any, every_s: float | None = None, **kwargs: Any):
        self.every_s = line_interval() if every_s is None else every_s
        self._last_line = -math.inf
        self._lines = 0
        kwargs.update(dynamic_ncols=False, ncols=None, ascii=True)
        super().__init__(*args, **kwargs)

    def line(self) -> str:
        """The current state: description, count (and share and time left when the total is known), rate, postfix."""
        d = self.format_dict
        unit = d.get("unit") or "it"
        rate = d["rate"] if d["rate"] else (d["n"] - d["initial"]) / d["elapsed"] if d["elapsed"] else None
        scale = d.get("unit_scale") is True

        def fmt(value: float) -> str:
            return tqdm.format_sizeof(value) if scale and value >= 1000 else f"{value:g}"

        count = f"{fmt(d['n'])}/{fmt(d['total'])}" if d["total"] else fmt(d["n"])
        share = f"{100 * d['n'] / d['total']:.0f}% " if d["total"] else ""
        left = ""
        if d["total"] and rate:
            left = f"<{tqdm.format_interval(max(d['total'] - d['n'], 0) / rate)}"
        speed = f", {tqdm.format_sizeof(rate) if scale else f'{rate:.3g}'} {unit}/s" if rate else ""
        postfix = f", {d['postfix']}" if d.get("postfix") else ""
        prefix = f"{d['prefix']}: " if d.get("prefix") else ""
        return f"{prefix}{share}{count} {unit} [{tqdm.format_interval(d['elapsed'])}{left}{speed}{postfix}]"

    def display(self, msg: str | None = None, pos: int | None = None, final: bool = False) -> bool:
        now = time.monotonic()
        if msg == "" or (not final and now - self._last_line < self.every_s):
            return False
        self._last_line = now
        self._lines += 1
        self.fp.write(self.line() + "\n")
        self.fp.flush()
        return True

    def clear(self, nolock: bool = False) -> None:
        """Nothing to erase: lines stay (tqdm.write calls this before printing)."""

    def moveto(self, n: int) -> None:
        """No cursor movement in a log file."""

    def close(self) -> None:
        if getattr(self, "disable", True):
            return
        self.display(final=True)  # the last state, always
        self.disable = True
        self._decr_instances(self)


def is_terminal(file: Any) -> bool:
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed file
        return False


def progress(*args: Any, every_s: float | None = None, **kwargs: Any) -> tqdm:
    """`tqdm(*args, **kwargs)` on a terminal, else a `LineProgress` (a line every `every_s` seconds, no carriage returns).

    `disable=True` gives a silent bar as tqdm does; tqdm's `disable=None` (off unless a terminal) is not needed:
    off a terminal the bar becomes lines."""
    file = kwargs.get("file") or sys.stderr
    if kwargs.get("disable") is None:
        kwargs["disable"] = False
    if kwargs["disable"] or is_terminal(file):
        return tqdm(*args, **kwargs)
    return LineProgress(*args, every_s=every_s, **kwargs)
