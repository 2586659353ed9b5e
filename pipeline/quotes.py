"""`python -m pipeline.quotes RESULTS.md`: every report line a document quotes matches its regeneration.

A quote is a block of lines copied from a REPORT.md, between

    <!-- quoted from `python -m pipeline.report results/<experiment> [flags]` -->
    ...lines of the report...
    <!-- end of quote -->

Each quoted command is rerun (paths relative to the document's folder, the report written to a temporary
folder) and every non-blank line of the block must be a line of the regenerated REPORT.md.
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
    r"<!-- quoted from `python -m pipeline\.report ([^`]+)` -->\n(.*?)\n?<!-- end of quote -->", re.DOTALL
)


@dataclass
class QuotesConfig:
    """Check that the report lines a markdown document quotes match their regeneration."""

    document: str = option("RESULTS.md", "the markdown file holding the quotes", positional=True)


def quoted_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(the report command's arguments, the quoted non-blank lines) of every quote in `text`."""
    return [
        (args.strip(), [line.strip() for line in block.splitlines() if line.strip()])
        for args, block in QUOTE.findall(text)
    ]


def regenerate(args: str, base: Path, out: Path) -> str:
    """REPORT.md of `python -m pipeline.report <args>` run from `base`, written under `out`."""
    words = shlex.split(args)
    if "--out" in words:
        raise ValueError(f"quoted command `{args}` names --out: leave it out, the check writes to a temporary folder")
    cfg = parse_config(ReportConfig, words + ["--out", str(out)], module="pipeline.report")
    cfg.roots = ",".join(str(base / r) for r in cfg.roots.split(",") if r)
    cfg.pictures_root = str(base / cfg.pictures_root) if cfg.pictures_root else ""
    return write_report(cfg).read_text()


def mismatches(document: Path) -> tuple[int, list[str]]:
    """The number of quoted lines checked and, for each one its regeneration lacks, a line naming it."""
    blocks = quoted_blocks(document.read_text())
    checked, wrong, reports = 0, [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for args, lines in blocks:
            if args not in reports:
                reports[args] = set(
                    line.strip()
                    for line in regenerate(args, document.parent, Path(tmp) / str(len(reports))).splitlines()
                )
            checked += len(lines)
            wrong += [
                f"`python -m pipeline.report {args}` does not regenerate: {line}"
                for line in lines
                if line not in reports[args]
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
