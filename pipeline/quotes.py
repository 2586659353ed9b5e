"""`python -m pipeline.quotes RESULTS.md`: every report line a document quotes matches its regeneration.

A quote is a block of lines copied from a REPORT.md, between

    <!-- quoted from `python -m pipeline.report results/<experiment> [flags]` -->
    ...lines of the report...
    <!-- end of quote -->

or, for the CPU table's report (`make cpu-table-report`), `python -m pipeline.table [flags] --report` with its
folder left out. Each quoted command is rerun (pipeline.report's paths relative to the document's folder, the
table's --results relative to the checkout as always; the report written to a temporary folder, the table's from
its committed results alone, as on a fresh clone) and every non-blank line of the block must be a line of the
regenerated REPORT.md.
"""

from __future__ import annotations

import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common.cli import option, parse_config, run_command
from pipeline.report.config import ReportConfig
from pipeline.report.writer import write_report

QUOTE = re.compile(
    r"<!-- quoted from `python -m (pipeline\.(?:report|table) [^`]+)` -->\n(.*?)\n?<!-- end of quote -->", re.DOTALL
)


@dataclass
class QuotesConfig:
    """Check that the report lines a markdown document quotes match their regeneration."""

    document: str = option("RESULTS.md", "the markdown file holding the quotes", positional=True)


def quoted_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(the quoted command less `python -m`, e.g. 'pipeline.report results/demo'; the quoted non-blank lines) of
    every quote in `text`."""
    return [
        (" ".join(command.split()), [line.strip() for line in block.splitlines() if line.strip()])
        for command, block in QUOTE.findall(text)
    ]


def quoted_results(command: str, base: Path) -> list[Path]:
    """The results folders a quoted command reads, pipeline.report's relative to `base` (the document's folder)."""
    module, *words = shlex.split(command)
    if module == "pipeline.report":
        return [base / r for r in parse_config(ReportConfig, words, module=module).roots.split(",") if r]
    from pipeline.table.config import TableConfig, results_path

    return [results_path(parse_config(TableConfig, table_words(command), module=module).results)]


def table_words(command: str) -> list[str]:
    """A quoted `pipeline.table ... --report`'s flags less that last --report, which must name no folder."""
    module, *words = shlex.split(command)
    if words[-1:] != ["--report"] or "--root" in words or any(w.startswith("--root=") for w in words):
        raise ValueError(
            f"quoted command `{command}` must end in a bare --report and name no --root: the check writes the "
            "report to a temporary folder from the committed results alone"
        )
    return words[:-1]


def regenerate(command: str, base: Path, out: Path) -> str:
    """REPORT.md of `python -m <command>` run from `base`, written under `out`."""
    module, *words = shlex.split(command)
    if module == "pipeline.table":
        return regenerate_table(command, out)
    if "--out" in words:
        raise ValueError(
            f"quoted command `{command}` names --out: leave it out, the check writes to a temporary folder"
        )
    cfg = parse_config(ReportConfig, words + ["--out", str(out)], module=module)
    cfg.roots = ",".join(str(base / r) for r in cfg.roots.split(",") if r)
    cfg.pictures_root = str(base / cfg.pictures_root) if cfg.pictures_root else ""
    return write_report(cfg).read_text()


def regenerate_table(command: str, out: Path) -> str:
    """REPORT.md of a quoted `pipeline.table ... --report` under a root that does not exist, so that it reads the
    settings its results recorded, as on a fresh clone (its --results is relative to the checkout, as always)."""
    from pipeline.table.config import table_config
    from pipeline.table.report import write_table_report

    return write_table_report(
        table_config([*table_words(command), "--root", str(out / "no-root"), "--report", str(out)])
    ).read_text()


def mismatches(document: Path) -> tuple[int, list[str]]:
    """The number of quoted lines checked and, for each one its regeneration lacks, a line naming it."""
    blocks = quoted_blocks(document.read_text())
    checked, wrong, reports = 0, [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for command, lines in blocks:
            if command not in reports:
                reports[command] = set(
                    line.strip()
                    for line in regenerate(command, document.parent, Path(tmp) / str(len(reports))).splitlines()
                )
            checked += len(lines)
            wrong += [
                f"`python -m {command}` does not regenerate: {line}" for line in lines if line not in reports[command]
            ]
    return checked, wrong


def check(cfg: QuotesConfig) -> int:
    """Raise ValueError naming the first lines that do not match; returns the number of lines checked."""
    checked, wrong = mismatches(Path(cfg.document))
    if wrong:
        raise ValueError(
            f"{len(wrong)} of {checked} quoted lines in {cfg.document} differ from their regeneration; "
            f"first: {wrong[0]}"
        )
    return checked


def main(argv: list[str] | None = None) -> None:
    def say(cfg: QuotesConfig) -> None:
        checked = check(cfg)
        print(
            f"{checked} quoted report lines in {cfg.document} match their regeneration"
            if checked
            else f"{cfg.document} quotes no report lines (no `<!-- quoted from ... -->` block): nothing to check"
        )

    run_command(QuotesConfig, say, argv)


if __name__ == "__main__":
    main()
