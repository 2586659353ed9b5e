"""Committed raw results: pipeline.keep copies what a report needs, pipeline.quotes checks RESULTS.md against it."""

import json
import re
from pathlib import Path

import pytest

from pipeline.keep import KeepConfig, keep
from pipeline.quotes import QuotesConfig, check, mismatches, quoted_blocks, quoted_results, regenerate

REPO = Path(__file__).resolve().parents[1]


def _sac_run(root: Path, encoder: str, seed: int, successes: list[float], finished: bool = True) -> Path:
    """A run folder as rl.workspace leaves it, heavy files included."""
    d = root / "runs" / "sac" / "reach-v3" / encoder / f"seed{seed}"
    (d / "replay-1000").mkdir(parents=True)
    (d / "replay-1000" / "obs.npy").write_bytes(b"\0" * 4096)
    (d / "checkpoint-1000.pt").write_bytes(b"\0" * 4096)
    (d / "tb").mkdir()
    (d / "tb" / "events.out").write_bytes(b"\0" * 64)
    (d / "config.json").write_text(json.dumps({"task": "reach-v3", "encoder": encoder, "seed": seed, "steps": 1000}))
    (d / "metrics.csv").write_text("step,critic_loss\n500,1.0\n1000,0.5\n")
    rows = [f"{250 * (i + 1)},1.0,{v},{1000 * v}" for i, v in enumerate(successes)]
    (d / "eval.csv").write_text("\n".join(["step,wall_s,success_rate,return_mean", *rows]) + "\n")
    if finished:
        (d / "agent.pt").write_bytes(b"\0" * 4096)
        (d / "summary.json").write_text(
            json.dumps(
                {
                    "task": "reach-v3",
                    "encoder": encoder,
                    "seed": seed,
                    "steps": 1000,
                    "preset": "micro",
                    "success_rate": successes[-1],
                    "eval_episodes": 20,
                    "wall_time_s": 60.0,
                    "steps_per_s": 16.7,
                    "device": "CPU test",
                }
            )
        )
    return d


def test_keep_copies_what_the_report_reads_and_nothing_heavy(tmp_path):
    source, out = tmp_path / "runs_here", tmp_path / "results" / "exp"
    _sac_run(source, "mmae_rgb", 0, [0.1, 0.2, 0.3, 0.4])
    running = _sac_run(source, "mmae_rgbs", 0, [0.2, 0.3], finished=False)
    (source / "runs" / "sac" / "reach-v3" / "mmae_rgb" / "seed0" / "metrics.csv").write_text(
        "x" * 3000
    )  # over the limit below
    (source / "mmae" / "rgbs").mkdir(parents=True)
    (source / "mmae" / "rgbs" / "probe_rgb.json").write_text("{}")
    (source / "mmae" / "rgbs" / "config.json").write_text("{}")  # another stage's folder: not a SAC run
    written = keep(KeepConfig(source=str(source), out=str(out), max_metrics_kib=1))
    # a run's summary.json is written after its other files: a keep killed midway leaves the run unfinished
    assert [p.name for p in written][-1] == "summary.json" and len(written) == 7
    kept = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert kept == [
        "mmae/rgbs/probe_rgb.json",
        "runs/sac/reach-v3/mmae_rgb/seed0/config.json",
        "runs/sac/reach-v3/mmae_rgb/seed0/eval.csv",
        "runs/sac/reach-v3/mmae_rgb/seed0/summary.json",
        "runs/sac/reach-v3/mmae_rgbs/seed0/config.json",
        "runs/sac/reach-v3/mmae_rgbs/seed0/eval.csv",
        "runs/sac/reach-v3/mmae_rgbs/seed0/metrics.csv",
    ]
    assert keep(KeepConfig(source=str(source), out=str(out))) == [
        out / "runs/sac/reach-v3/mmae_rgb/seed0/metrics.csv"
    ]  # new limit
    with open(running / "eval.csv", "a") as f:  # the running run evaluated again: its kept eval.csv grows
        f.write("750,1.0,0.5,500.0\n")
    assert keep(KeepConfig(source=str(source), out=str(out))) == [out / "runs/sac/reach-v3/mmae_rgbs/seed0/eval.csv"]
    (running / "eval.csv").write_text(
        "step,wall_s,success_rate,return_mean\n250,1.0,0.9,900.0\n"
    )  # contradicts what was kept
    with pytest.raises(
        ValueError,
        match=r"already holds a different result.*another folder \(--out; for the CPU table, --results\).*"
        r"retrained on purpose.*delete its kept copy",
    ):
        keep(KeepConfig(source=str(source), out=str(out)))
    assert "750,1.0,0.5" in (out / "runs/sac/reach-v3/mmae_rgbs/seed0/eval.csv").read_text()  # nothing kept was lost
    with pytest.raises(FileNotFoundError, match="no SAC run"):
        keep(KeepConfig(source=str(source / "mmae"), out=str(tmp_path / "elsewhere")))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        keep(KeepConfig(source=str(tmp_path / "nope"), out=str(tmp_path / "elsewhere")))


def test_a_run_kept_unfinished_may_be_kept_again_after_it_resumed(tmp_path):
    """A killed run resumes from its checkpoint and rewrites the rows after it: the same results, other
    wall times. Kept while it ran, its CSVs are replaced by those that hold every kept result again;
    one that changes a result is refused, and a finished run's files are final."""
    source, out = tmp_path / "runs_here", tmp_path / "results" / "exp"
    running = _sac_run(source, "mmae_rgbs", 0, [0.2, 0.3, 0.5], finished=False)
    keep(KeepConfig(source=str(source), out=str(out)))
    kept = out / "runs/sac/reach-v3/mmae_rgbs/seed0/eval.csv"
    header = "step,wall_s,success_rate,return_mean\n"
    resumed = header + "250,1.0,0.2,200.0\n500,1.0,0.3,300.0\n750,7.5,0.5,500.0\n1000,9.0,0.6,600.0\n"
    (running / "eval.csv").write_text(resumed)  # 750 re-evaluated after the resume (another wall_s), then 1000
    assert keep(KeepConfig(source=str(source), out=str(out))) == [kept]
    assert kept.read_text() == resumed
    (running / "eval.csv").write_text(resumed.replace("750,7.5,0.5", "750,7.5,0.4"))  # a result changed
    with pytest.raises(ValueError, match="already holds a different result"):
        keep(KeepConfig(source=str(source), out=str(out)))
    assert kept.read_text() == resumed
    (running / "eval.csv").write_text(resumed)
    (running / "summary.json").write_text(json.dumps({"task": "reach-v3", "encoder": "mmae_rgbs", "seed": 0}))
    keep(KeepConfig(source=str(source), out=str(out)))  # finished: summary.json kept, the run's files are final
    (running / "eval.csv").write_text(resumed.replace("1000,9.0", "1000,9.5"))
    with pytest.raises(ValueError, match="already holds a different result"):
        keep(KeepConfig(source=str(source), out=str(out)))


def test_a_run_resumed_by_later_code_is_kept_again_and_a_changed_setting_is_refused(tmp_path):
    """A resumed run's config.json names the commit that resumed it: for a run kept unfinished that alone
    does not make it another experiment; any other changed setting does."""
    source, out = tmp_path / "runs_here", tmp_path / "results" / "exp"
    running = _sac_run(source, "mmae_rgbs", 0, [0.2], finished=False)
    config = running / "config.json"
    settings = {**json.loads(config.read_text()), "code_version": "aaaaaaa", "lr": 1e-4}
    config.write_text(json.dumps(settings))
    keep(KeepConfig(source=str(source), out=str(out)))
    kept = out / "runs/sac/reach-v3/mmae_rgbs/seed0/config.json"
    config.write_text(json.dumps({**settings, "code_version": "bbbbbbb"}))
    assert keep(KeepConfig(source=str(source), out=str(out))) == [kept]
    assert json.loads(kept.read_text())["code_version"] == "bbbbbbb"
    config.write_text(json.dumps({**settings, "code_version": "ccccccc+dirty"}))  # uncommitted code resumed it
    with pytest.raises(ValueError, match="already holds a different result"):
        keep(KeepConfig(source=str(source), out=str(out)))
    config.write_text(json.dumps({**settings, "code_version": "ccccccc", "lr": 3e-4}))
    with pytest.raises(ValueError, match="already holds a different result"):
        keep(KeepConfig(source=str(source), out=str(out)))
    assert json.loads(kept.read_text()) == {**settings, "code_version": "bbbbbbb"}
    # resumed further (rl.sac's resumable settings: more steps, a longer last evaluation): the same run, kept again
    longer = {**settings, "code_version": "bbbbbbb", "steps": 2 * settings["steps"], "final_eval_episodes": 50}
    config.write_text(json.dumps(longer))
    assert keep(KeepConfig(source=str(source), out=str(out))) == [kept]
    config.write_text(json.dumps({**longer, "precision": "bf16" if longer.get("precision") != "bf16" else "fp32"}))
    with pytest.raises(ValueError, match="already holds a different result"):  # resumable, but it computes otherwise
        keep(KeepConfig(source=str(source), out=str(out)))
    settings = {**longer, "code_version": "aaaaaaa"}
    # a new code version beside a changed result: both refused, the kept config.json left as it was
    config.write_text(json.dumps({**settings, "code_version": "ddddddd"}))
    eval_csv = running / "eval.csv"
    eval_csv.write_text(eval_csv.read_text().replace("0.2", "0.9"))
    with pytest.raises(ValueError, match="eval.csv already holds a different result"):
        keep(KeepConfig(source=str(source), out=str(out)))
    assert json.loads(kept.read_text())["code_version"] == "bbbbbbb"


def test_a_run_resumed_by_code_that_added_a_setting_at_its_default_is_kept_again(tmp_path):
    """Code that adds an rl.sac option records it in the config.json of every run it resumes: at its default
    (the behaviour before the option) the run is the same experiment; at another value, or a key rl.sac does
    not know, it is not."""
    from rl.config import SACConfig

    source, out = tmp_path / "runs_here", tmp_path / "results" / "exp"
    running = _sac_run(source, "mmae_rgbs", 0, [0.2], finished=False)
    config = running / "config.json"
    older = {k: v for k, v in json.loads(config.read_text()).items() if k != "gaze_return_discount"}
    config.write_text(json.dumps({**older, "code_version": "aaaaaaa"}))  # written before the option existed
    keep(KeepConfig(source=str(source), out=str(out)))
    kept = out / "runs/sac/reach-v3/mmae_rgbs/seed0/config.json"
    default = SACConfig().gaze.return_discount
    for refused in ({"gaze_return_discount": 0.5}, {"gaze_return_discount": default, "no_such_option": 1}):
        config.write_text(json.dumps({**older, "code_version": "bbbbbbb", **refused}))
        with pytest.raises(ValueError, match="already holds a different result"):
            keep(KeepConfig(source=str(source), out=str(out)))
    config.write_text(json.dumps({**older, "code_version": "bbbbbbb", "gaze_return_discount": default}))
    assert keep(KeepConfig(source=str(source), out=str(out))) == [kept]
    assert json.loads(kept.read_text())["gaze_return_discount"] == default


def test_a_run_resumed_by_code_that_records_its_inputs_more_fully_is_kept_again(tmp_path):
    """Newer code records more about the same files (the saliency model's precision): the run is the same
    experiment; another file (path or sha256) is not."""
    source, out = tmp_path / "runs_here", tmp_path / "results" / "exp"
    running = _sac_run(source, "mmae_rgbs", 0, [0.2], finished=False)
    config = running / "config.json"
    student = {"path": "/x/student.pt", "sha256": "ab" * 32, "chosen_by": "default (the task's student)"}
    older = {**json.loads(config.read_text()), "code_version": "aaaaaaa"}
    older["inputs"] = {"frozen_encoder": None, "saliency_model": student}
    config.write_text(json.dumps(older))
    keep(KeepConfig(source=str(source), out=str(out)))
    kept = out / "runs/sac/reach-v3/mmae_rgbs/seed0/config.json"
    fuller = {
        **older,
        "code_version": "bbbbbbb",
        "inputs": {**older["inputs"], "saliency_model": {**student, "precision": "bf16"}},
    }
    config.write_text(json.dumps(fuller))
    assert keep(KeepConfig(source=str(source), out=str(out))) == [kept]
    assert json.loads(kept.read_text())["inputs"]["saliency_model"]["precision"] == "bf16"
    other = {**fuller, "inputs": {**older["inputs"], "saliency_model": {**student, "sha256": "cd" * 32}}}
    config.write_text(json.dumps(other))
    with pytest.raises(ValueError, match="already holds a different result"):
        keep(KeepConfig(source=str(source), out=str(out)))


def _quote(command: str, lines: list[str]) -> str:
    return "\n".join([f"<!-- quoted from `python -m {command}` -->", *lines, "<!-- end of quote -->"])


def test_quoted_report_lines_are_checked_against_their_regeneration(tmp_path):
    source = tmp_path / "runs_here"
    for seed, values in enumerate([[0.2, 0.55], [0.1, 0.15], [0.3, 0.35]]):
        _sac_run(source, "mmae_rgb", seed, values)
    keep(KeepConfig(source=str(source), out=str(tmp_path / "results" / "exp")))
    from pipeline.report.config import ReportConfig
    from pipeline.report.writer import write_report

    report = write_report(
        ReportConfig(roots=str(tmp_path / "results" / "exp"), out=str(tmp_path / "report"), reps=200)
    ).read_text()
    row = next(line for line in report.splitlines() if line.startswith("| reach-v3 | MMAE RGB |"))
    aggregate = next(line for line in report.splitlines() if line.startswith("| MMAE RGB (3 x 1) |"))
    assert "| 0.55 / 0.15 / 0.35 | 0.35 [-0.15, 0.85] |" in row
    document = tmp_path / "RESULTS.md"
    document.write_text(
        "# Results\n\nSome prose.\n\n"
        + _quote("pipeline.report results/exp --reps 200", [row, "", aggregate])
        + "\n\nMore prose.\n"
    )
    assert quoted_blocks(document.read_text()) == [("pipeline.report results/exp --reps 200", [row, aggregate])]
    assert check(QuotesConfig(document=str(document))) == 2
    document.write_text(
        _quote("pipeline.report results/exp --reps 200", [row.replace("0.85]", "0.80]")])
    )  # a number edited by hand
    checked, wrong = mismatches(document)
    assert checked == 1 and len(wrong) == 1 and "0.80]" in wrong[0] and "results/exp --reps 200" in wrong[0]
    with pytest.raises(ValueError, match="1 of 1 quoted lines .* differ"):
        check(QuotesConfig(document=str(document)))


def test_the_cpu_tables_report_is_quoted_from_its_committed_results_alone(tmp_path, monkeypatch):
    results = tmp_path / "results" / "cpu-table"
    for seed, value in enumerate([0.2, 0.4, 0.9]):
        run = _sac_run(tmp_path / "made", "mmae_rgbs", seed, [value])
        kept = results / "reach-v3" / "mmae_rgbs" / f"seed{seed}"
        kept.mkdir(parents=True)
        for name in ("config.json", "eval.csv", "summary.json"):
            (kept / name).write_bytes((run / name).read_bytes())
    (results / "settings.json").write_text(json.dumps({"hidden_dim": 256, "precision": "fp32"}))
    # this machine's root, recording other settings, is not read: the quote regenerates as on a fresh clone
    monkeypatch.setenv("HOME", str(tmp_path))
    root = tmp_path / "visarl-runs" / "cpu_table"
    root.mkdir(parents=True)
    (root / "table.json").write_text(json.dumps({"settings": {"hidden_dim": 1024}}))
    command = f"pipeline.table --results {results} --report"
    report = regenerate(command, tmp_path, tmp_path / "report")
    row = next(line for line in report.splitlines() if line.startswith("| reach-v3 | MMAE RGB+Saliency (ViSaRL) |"))
    assert (
        "| 0, 1, 2 (3 of 10) | 0.20 / 0.40 / 0.90 | 0.50 [-0.40, 1.40] |" in row
        and "hidden 256 (the paper's: 1024)" in report
    )
    assert quoted_results(command, tmp_path) == [results]
    document = tmp_path / "RESULTS.md"
    document.write_text(_quote(command, [row]))
    assert check(QuotesConfig(document=str(document))) == 1
    document.write_text(_quote(command, [row.replace("| 0.50 [", "| 0.55 [")]))  # a number edited by hand
    checked, wrong = mismatches(document)
    assert checked == 1 and len(wrong) == 1 and command in wrong[0]
    for bad in (f"{command} {tmp_path}", f"pipeline.table --root {root} --report"):
        document.write_text(_quote(bad, [row]))
        with pytest.raises(ValueError, match="must end in a bare --report and name no --root"):
            check(QuotesConfig(document=str(document)))


def test_every_number_results_md_quotes_from_a_committed_experiment_regenerates():
    document = REPO / "RESULTS.md"
    blocks = quoted_blocks(document.read_text())
    if not blocks:
        pytest.skip(
            "RESULTS.md quotes no committed results/<experiment> yet (the CPU slice's raw results are lost); "
            "this check starts with the first quote"
        )
    for command, _ in blocks:
        for root in quoted_results(command, REPO):
            assert root.is_dir(), f"RESULTS.md quotes `python -m {command}` but {root} is not committed"
    checked, wrong = mismatches(document)
    assert not wrong, "\n".join(wrong[:5])
    assert checked >= len(blocks)


def test_the_committed_cpu_table_report_is_its_regeneration(tmp_path):
    """docs/cpu-table/ (RESULTS.md shows its pictures) is `make cpu-table-report` of the committed results, at the
    seeds its first line names: a report that no longer regenerates word for word has to be made again."""
    committed = (REPO / "docs" / "cpu-table" / "REPORT.md").read_text()
    only = re.search(r"only seeds ([\d, ]+) of each row", committed)
    seeds = f" --report-seeds {only.group(1).replace(' ', '')}" if only else ""
    assert regenerate(f"pipeline.table{seeds} --report", REPO, tmp_path) == committed, (
        f'regenerate it: make cpu-table-report TABLE_FLAGS="{seeds.strip()}" TABLE_REPORT=docs/cpu-table'
    )
    assert {p.name for p in tmp_path.glob("*.png")} == {p.name for p in (REPO / "docs" / "cpu-table").glob("*.png")}
