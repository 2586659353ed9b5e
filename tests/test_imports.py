"""The house's import rules, read from the source: data flows one way (a package imports only the packages
before it, and common/), and no module-level import circle exists."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["common", "data", "annotate_app", "saliency", "pretrain", "rl", "pipeline"]


def imports(path: Path, module_level_only: bool) -> set[str]:
    """Project modules `path` imports (`from rl import gaze` is rl.gaze)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module in ORDER else [node.module]
            out |= set(names)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.split(".")[0] in ORDER}


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): p for pkg in ORDER for p in (ROOT / pkg).glob("*.py")}


def test_data_flows_one_way():
    wrong = [
        f"{mod} imports {dep}"
        for mod, path in modules().items()
        for dep in imports(path, False)
        if ORDER.index(dep.split(".")[0]) > ORDER.index(mod.split(".")[0])
    ]
    assert not wrong, wrong


def test_no_module_level_import_circle():
    graph = {mod: {d for d in imports(path, True) if d in modules()} for mod, path in modules().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph[mod]):
            if state.get(dep) == 1:
                circles.append(" -> ".join(path[path.index(dep) :] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert not circles, circles
