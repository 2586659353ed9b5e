"""`python -m pipeline.keep runs/cpu_slice --out results/<experiment>`: the raw results a report reads, to commit.

Copies, with their layout below the source, what `pipeline.report` needs and nothing heavy: of every SAC
run folder (a `summary.json`, or a `config.json` naming an encoder) its `config.json`, `summary.json`,
`eval.csv`, and `metrics.csv` when it is small; and every probe result (`mmae/**/probe_*.json`).
Never checkpoints, replay, `agent.pt` or `tb/`. Then `python -m pipeline.report results/<experiment>`
regenerates every table and figure from the repository alone.

A file already kept is replaced only by an identical one or one that extends it (an `eval.csv` that
grew while the run went on), or, for a run kept unfinished, by a CSV that holds every kept row's
results again (a resumed run rewrites the rows after its checkpoint: the same results, other wall
times), or by a config.json that differs only in the code version that resumed it, in the settings rl.sac lets
a resumed run change that do not change how it computes (its steps, evaluations, logging and checkpoint intervals,
threads; not its precision or device) and in settings that code added at their defaults; a kept file that the
source contradicts is refused, never overwritten.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from common.cli import flat_dict, option, run_command
from common.io import atomic_write_bytes
from rl.provenance import INPUTS_KEY

RUN_FILES = ("config.json", "summary.json", "eval.csv")
#: where pretrain.probe writes its results below a run root (what pipeline.report reads as probes)
PROBE_GLOB = "mmae/**/probe_*.json"
#: what the CPU table keeps of each task's preparation (pipeline.table.plan.keep_preparation,
#: pipeline.table.carry.carry_models), read by pipeline.report: its MultiMAEs' probes, the saliency student's
#: evaluation against the oracle maps (and its Fig. 7), the wall time of each step, the sha256 of its carried models
#: and of the frames each encoder learnt from
KEPT_PROBES = "mmae/*/{task}/probe_*.json"
KEPT_SALIENCY_EVAL = "saliency/{task}/eval/metrics.json"
KEPT_SALIENCY_PICTURE = "saliency/{task}/eval/fig7.png"
KEPT_STAGES = "{task}/stages.json"
KEPT_MODELS = "{task}/models.json"
#: CSV columns that time a run rather than say what it did: they differ when a resumed run recomputes a row
TIMING_COLUMNS = frozenset({"wall_s", "eval_s", "steps_per_s", "pack_steps_per_s"})
#: config.json fields that say which code last ran the run, not what it ran: a run resumed by a later commit
#: rewrites them (its results so far are checked row by row, as for any resumed run)
PROVENANCE_KEYS = frozenset({"code_version"})
#: rl.sac's resumable settings (rl.config.RESUMABLE_FIELDS) that change how a run computes: a run kept unfinished
#: and resumed under another value of them is not kept again as the same run
COMPUTING_RESUMABLE = frozenset({"precision", "device", "preset"})


@dataclass
class KeepConfig:
    """Copy the raw results of the SAC runs (and probes) below a folder into results/<experiment>."""

    source: str = option("runs", "folder holding the run folders (searched recursively)", positional=True)
    out: str = option("", "where to keep them, results/<experiment> (required)")
    max_metrics_kib: int = option(512, "keep a run's metrics.csv only when it is at most this many KiB")

    def validate(self) -> None:
        if not self.out:
            raise ValueError("--out is required: name the experiment's folder, e.g. --out results/cpu-table")


def run_folders(source: Path) -> list[Path]:
    """SAC run folders below `source`: a summary.json, or a config.json that names an encoder."""
    folders = {p.parent for p in source.glob("**/summary.json")}
    for config in source.glob("**/config.json"):
        try:
            if "encoder" in json.loads(config.read_text()):
                folders.add(config.parent)
        except json.JSONDecodeError as err:
            raise ValueError(f"{config} is not valid JSON ({err}); repair or remove that run folder") from err
    return sorted(folders)


def results_by_step(payload: bytes) -> dict[str, dict[str, str]]:
    """A run's CSV as {step: {column: value}} without its timing columns."""
    rows = csv.DictReader(io.StringIO(payload.decode()))
    return {r["step"]: {k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows}


def recomputed(kept: bytes, payload: bytes) -> bool:
    """True if `payload` holds every row of `kept` with the same results (timing columns aside)."""
    try:
        old, new = results_by_step(kept), results_by_step(payload)
    except (UnicodeDecodeError, csv.Error, KeyError):
        return False
    return all(new.get(step) == row for step, row in old.items())


def sac_defaults() -> dict:
    """rl.sac's settings at their defaults, as a config.json records them (imported here only: it loads torch)."""
    from rl.config import SACConfig

    return json.loads(json.dumps(flat_dict(SACConfig()), default=str))


def resumable_fields() -> frozenset[str]:
    """rl.sac's settings a resumed run may change without changing how it computes: its steps, evaluations,
    logging and checkpoint intervals, threads (rl.config.RESUMABLE_FIELDS less COMPUTING_RESUMABLE; imported here
    only: rl.config loads torch)."""
    from rl.config import RESUMABLE_FIELDS

    return RESUMABLE_FIELDS - COMPUTING_RESUMABLE


def same_settings(kept: bytes, payload: bytes) -> bool:
    """True if two config.json files differ at most in PROVENANCE_KEYS, in the settings rl.sac lets a resumed run
    change (`resumable_fields`: a run kept unfinished, resumed to more steps), in settings the newer adds at their
    default (code that resumed the run added the option; its default is the behaviour before it, as rl.sac's
    resume check assumes) and in what the newer's inputs record adds about the same files (`as_recorded_then`),
    the newer not naming uncommitted code."""
    try:
        old, new = json.loads(kept), json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not (isinstance(old, dict) and isinstance(new, dict)) or str(new.get("code_version", "")).endswith("+dirty"):
        return False  # uncommitted code resumed it: not a recorded version of the experiment
    ignored = PROVENANCE_KEYS | resumable_fields()
    added = new.keys() - old.keys() - ignored
    if added:
        defaults = sac_defaults()
        if any(k not in defaults or new[k] != defaults[k] for k in added):
            return False
    settings = lambda c: {k: v for k, v in c.items() if k not in ignored | added}  # noqa: E731
    if INPUTS_KEY in new:
        new = {**new, INPUTS_KEY: as_recorded_then(old.get(INPUTS_KEY), new[INPUTS_KEY])}
    return settings(old) == settings(new)


def as_recorded_then(old: object, new: object) -> object:
    """`new`'s inputs record less the keys each file's record gained since `old` (newer code describes the same
    files more fully, e.g. the saliency model's precision); the files themselves (path, sha256) still compare."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    return {
        k: {f: v[f] for f in v if f in old[k]} if isinstance(v, dict) and isinstance(old.get(k), dict) else v
        for k, v in new.items()
    }


def checked_payload(src: Path, dst: Path, provisional: bool = False) -> bytes | None:
    """src's bytes if dst should take them, None if dst already holds them. A dst that src does not extend
    (same bytes, or src starts with them) is refused (ValueError), unless it is `provisional` (a file of a
    run kept unfinished) and src holds its results again (a CSV) or its settings (config.json, resumed by
    later code): nothing kept is lost."""
    payload = src.read_bytes()
    if not dst.exists():
        return payload
    kept = dst.read_bytes()
    if kept == payload:
        return None
    resumed = provisional and (
        (dst.suffix == ".csv" and recomputed(kept, payload))
        or (dst.name == "config.json" and same_settings(kept, payload))
    )
    if not payload.startswith(kept) and not resumed:
        retrained = (
            f", or, if that run was retrained on purpose (a diverged run whose summary.json was deleted), delete its "
            f"kept copy {dst.parent} first: a kept result is never overwritten"
            if dst.name in (*RUN_FILES, "metrics.csv")
            else ""
        )
        raise ValueError(
            f"{dst} already holds a different result than {src}; keep this experiment in another folder "
            f"(--out; for the CPU table, --results){retrained}"
        )
    return payload


def keep_file(src: Path, dst: Path, provisional: bool = False) -> bool:
    """Copy src to dst atomically unless dst already holds it (checked_payload); True if written."""
    payload = checked_payload(src, dst, provisional)
    if payload is not None:
        atomic_write_bytes(dst, payload)
    return payload is not None


def keep(cfg: KeepConfig) -> list[Path]:
    """Copy the raw results; returns the files written."""
    source, out = Path(cfg.source), Path(cfg.out)
    if not source.is_dir():
        raise FileNotFoundError(
            f"no such folder: {source}; give the folder holding the run folders, e.g. runs/cpu_slice"
        )
    runs = run_folders(source)
    files = [f for run in runs for f in (run / name for name in RUN_FILES) if f.exists()]
    files += [
        m for run in runs if (m := run / "metrics.csv").exists() and m.stat().st_size <= cfg.max_metrics_kib * 1024
    ]
    files += sorted(source.glob(PROBE_GLOB))
    if not any(f.name == "summary.json" or f.name == "eval.csv" for f in files):
        raise FileNotFoundError(f"no SAC run with a summary.json or eval.csv below {source}; nothing to keep")
    unfinished = {run for run in runs if not (out / run.relative_to(source) / "summary.json").exists()}
    # every file is checked before any is written: a refused one leaves the kept files as they were
    writes = [
        (out / f.relative_to(source), payload)
        for f in files
        if (payload := checked_payload(f, out / f.relative_to(source), provisional=f.parent in unfinished)) is not None
    ]
    # a run's summary.json last: a keep killed midway leaves that run unfinished (provisional), so the next keep may
    # take its resumed CSVs, rather than finished with older CSVs that would then be refused
    writes.sort(key=lambda w: w[0].name == "summary.json")
    for dst, payload in writes:
        atomic_write_bytes(dst, payload)
    return [dst for dst, _ in writes]


def main(argv: list[str] | None = None) -> None:
    run_command(
        KeepConfig,
        lambda cfg: print(
            f"kept {len(keep(cfg))} new or grown files under {cfg.out}; "
            f"`python -m pipeline.report {cfg.out}` reads them"
        ),
        argv,
    )


if __name__ == "__main__":
    main()
