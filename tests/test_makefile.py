"""`make help`: every target the Makefile defines is listed with what it does, and plain `make` prints that list."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make(*goals: str) -> str:
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(ROOT), *goals], capture_output=True, text=True, check=True
    ).stdout


def test_help_lists_every_target_with_a_description_and_is_the_default_goal():
    text = (ROOT / "Makefile").read_text()
    rules = {m for m in re.findall(r"^([a-z][a-z0-9-]*):(?!=)", text, re.M) if not re.search(rf"^{m}:.*:=", text, re.M)}
    listed = make("help")
    described = dict(re.findall(r"^  (\S+) +(\S.*)$", listed, re.M))
    assert {"help", "demo", "test", "cpu-table", "background-stop"} <= rules
    assert set(described) == rules, f"without a '## description' on their line: {sorted(rules - set(described))}"
    assert "ruff" in described["test"] and "checkpoint" in described["background-stop"]
    assert make() == listed
