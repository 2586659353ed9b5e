"""common.progress: a tqdm bar on a terminal, plain lines (no carriage returns) in a log file."""

from __future__ import annotations

import io
import time

import pytest
from tqdm import tqdm

from common.progress import LineProgress, line_interval, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_file_gets_lines_without_carriage_returns():
    log = io.StringIO()
    with progress(total=10, desc="label", unit="frame", file=log, every_s=3600) as bar:
        assert isinstance(bar, LineProgress)
        for _ in range(10):
            bar.update(1)
            bar.set_postfix({"loss": 0.5}, refresh=True)
        tqdm.write("a message between lines", file=log)
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # the first state when it starts, the message, the last state when it closes: nothing in between (every 3600 s)
    assert lines[0].startswith("label: 0% 0/10 frame [00:00") and lines[1] == "a message between lines"
    assert len(lines) == 3 and lines[2].startswith("label: 100% 10/10 frame [") and lines[2].endswith(", loss=0.5]")


def test_a_line_every_interval():
    log = io.StringIO()
    bar = progress(total=None, unit="step", file=log, every_s=0.05)
    for _ in range(3):
        time.sleep(0.12)  # > mininterval and > every_s: each update shows
        bar.update(5)
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 5 and lines[-1].startswith("15 step [") and " step/s" in lines[-1]  # start, 3 updates, close


def test_iterating_and_unit_scale():
    log = io.StringIO()
    assert list(progress(range(4), desc="epochs", file=log, every_s=3600)) == [0, 1, 2, 3]
    assert log.getvalue().splitlines()[-1].startswith("epochs: 100% 4/4 it [")
    log = io.StringIO()
    with progress(total=2_000_000, initial=1_500_000, unit="env-step", unit_scale=True, file=log, every_s=3600) as bar:
        bar.update(500_000)
    assert log.getvalue().splitlines()[-1].startswith("100% 2.00M/2.00M env-step [")


def test_a_terminal_gets_tqdms_bar_and_disable_stays_silent():
    term = Terminal()
    with progress(total=3, file=term) as bar:
        assert type(bar) is tqdm
        bar.update(3)
    assert "\r" in term.getvalue()  # tqdm's redraws, on a terminal only
    log = io.StringIO()
    with progress(total=3, file=log, disable=True) as bar:
        bar.update(3)
    assert log.getvalue() == ""


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("VISARL_PROGRESS_SECONDS", "5")
    assert line_interval() == 5.0
    for bad in ("0", "soon", "inf"):
        monkeypatch.setenv("VISARL_PROGRESS_SECONDS", bad)
        with pytest.raises(ValueError, match="VISARL_PROGRESS_SECONDS"):
            line_interval()
