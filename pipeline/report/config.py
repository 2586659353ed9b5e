"""The report's command settings (`ReportConfig`) and the seeds planned per cell (`PlannedSeeds`)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from common.cli import int_list, option
from pipeline import stats


@dataclass(frozen=True)
class PlannedSeeds:
    """--planned-seeds parsed: 'N' for every (encoder, task), or 'task/encoder=N' entries whose fnmatch patterns are
    tried in order (an encoder row with settings, 'mmae_rgbs [precision=bf16]', is matched as its encoder)."""

    entries: tuple[tuple[str, int], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> PlannedSeeds:
        entries = []
        for entry in (e.strip() for e in spec.split(",") if e.strip()):
            pattern, _, count = entry.rpartition("=") if "=" in entry else ("*", "", entry)
            pattern, count = pattern.strip(), count.strip()
            if not count.isdecimal() or not (pattern == "*" or re.fullmatch(r"[\w.*?-]+/[\w.*?-]+", pattern)):
                raise ValueError(
                    f"--planned-seeds entry {entry!r} is not N or task/encoder=N (fnmatch patterns of a task and an "
                    "encoder without its settings, e.g. 'reach-v3/*=10,*=5'): give the seeds planned per encoder and task"
                )
            entries.append((pattern, int(count)))
        return cls(tuple(entries))

    def __call__(self, encoder: str, task: str) -> int:
        """The seeds planned for `encoder` on `task` (0: not stated)."""
        cell = f"{task}/{encoder.partition(' ')[0]}"
        return next((n for pattern, n in self.entries if pattern == "*" or fnmatch.fnmatchcase(cell, pattern)), 0)

    def cells(self) -> list[tuple[str, str]]:
        """The (encoder, task) the entries name exactly (no pattern): planned whether or not they have runs."""
        named = [p.split("/") for p, _ in self.entries if not any(c in p for c in "*?")]
        return [(encoder, task) for task, encoder in named]


@dataclass
class ReportConfig:
    """Write REPORT.md (+ PNGs) comparing every SAC run below the given roots (finished, and in progress so far)."""

    roots: str = option(
        "runs/sac",
        "comma-separated folders searched for summary.json (also as leading words: `python -m pipeline.report results/cpu-table runs/sac`)",
        positional=True,
    )
    out: str = option("runs/report", "folder for REPORT.md and its pictures")
    pictures_root: str = option(
        "",
        "folder searched for stage pictures (saliency, mmae, gaze) and probe results; '' = the folder above the first root when that is a `sac` folder (runs/sac -> runs), else the first root",
    )
    title: str = option("ViSaRL vs Gaze on the Prize on Meta-World", "report title")
    reps: int = option(
        stats.REPS,
        "stratified bootstrap resamples (rliable) for the aggregates, probabilities of improvement and profiles",
    )
    seed: int = option(0, "seed of the bootstrap resamples (the same seed regenerates the same report)")
    planned_seeds: str = option(
        "",
        "seeds planned per encoder and task: N for all, or 'task/encoder=N' entries (fnmatch patterns, the first "
        "that matches counts; an encoder's settings are not part of it), e.g. 'reach-v3/*=10,*/cnn_rgb=3,*=5'; '' = "
        "not stated. A cell with fewer reads 'n of N' and the report says its verdicts are interim "
        "(`make cpu-table-report` gives the CPU table's plan)",
    )
    seeds: str = option(
        "",
        "read only these seeds of every row, comma-separated (e.g. '0,1,2'): a snapshot that runs finished later do "
        "not change, for quoting an interim report; '' = every seed",
    )

    @property
    def seed_filter(self) -> frozenset[int] | None:
        """The seeds --seeds keeps, None for all."""
        return frozenset(int_list(self.seeds, "--seeds")) if self.seeds.strip() else None

    def validate(self) -> None:
        if not [r for r in self.roots.split(",") if r]:
            raise ValueError(
                "--roots is empty: name the folders holding the runs, e.g. `python -m pipeline.report results/cpu-table`"
            )
        PlannedSeeds.parse(self.planned_seeds)  # a malformed spec is refused before anything is read
        _ = self.seed_filter  # so is a malformed --seeds
        if self.reps < 100:
            raise ValueError(
                f"--reps {self.reps} is too few for a 95 % interval's tails: use >= 100 (default {stats.REPS})"
            )

    def picture_folder(self) -> Path:
        """The folder searched for pictures and probes (see pictures_root)."""
        if self.pictures_root:
            return Path(self.pictures_root)
        first = Path(self.roots.split(",")[0])
        return first.parent if first.name == "sac" else first
