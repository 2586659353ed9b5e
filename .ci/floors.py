"""Print pyproject.toml's dependencies pinned at their floors (`name>=X` -> `name==X`), one per line, for
`pip install -c` (`make check-floors`). A dependency without a floor (`pandas<3`) is printed as declared."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


def floor_pins(pyproject: Path) -> list[str]:
    """The `[project] dependencies` of `pyproject`, each with a floor pinned at it."""
    pins = []
    for requirement in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        match = FLOOR.match(requirement)
        pins.append(f"{match[1]}=={match[3]}" if match else requirement)
    return pins


if __name__ == "__main__":
    print("\n".join(floor_pins(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml"))))
