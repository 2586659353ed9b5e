"""pipeline.table: the command: recorded settings, refusals before anything runs, the lock, --background."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common.cli import parse_config
from common.cpuinfo import AUTO_ENV
from pipeline.table import runner
from pipeline.table.commands import check_pass_through, sac_flags
from pipeline.table.config import (
    CHECKOUT,
    LOG_FILE,
    SETTINGS_FILE,
    STATE_FILE,
    TableConfig,
    adopt_recorded,
    results_path,
)
from pipeline.table.folder import Folder
from pipeline.table.runner import background_command, dry_run_text, main
from pipeline.table.status import lock_holder, status_text

from table_roots import config, folders, write

HOLDER = textwrap.dedent("""
    import sys, time
    from common.runs import exclusive_run_dir
    with exclusive_run_dir(sys.argv[1]):
        print("held", flush=True)
        time.sleep(600)
""")


def test_a_second_copy_is_refused_while_one_holds_the_root(tmp_path, capsys):
    root = tmp_path / "root"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        for flags in (["--background"], []):
            with pytest.raises(SystemExit) as stop:
                main([*folders(tmp_path), "--phase", "A", *flags])
            assert stop.value.code == 2
            err = capsys.readouterr().err
            assert err.startswith(f"error: {root} is in use by pid {proc.pid}") and len(err.strip().splitlines()) == 1
        assert lock_holder(root).startswith(f"pid {proc.pid}")
        assert f"running: pid {proc.pid}" in status_text(config(tmp_path))
        assert not (root / LOG_FILE).exists() and not (root / STATE_FILE).exists()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert lock_holder(root) is None


def test_a_background_start_is_refused_at_once_for_what_its_run_would_refuse(tmp_path, capsys, monkeypatch):
    """`make cpu-table` detaches the run: changed settings, a phase waiting for budgets no selected phase
    decides, and a new root beside results another root kept are refused before it detaches (one line, exit 2),
    not in a log nobody reads; nothing is started."""
    started = []
    monkeypatch.setattr(runner, "start", lambda *a, **k: started.append(a) or 1)
    monkeypatch.setattr(runner, "check_pass_through_apart", check_pass_through)  # not a spawn per call (~5 s)
    root, results = tmp_path / "root", tmp_path / "results" / "cpu-table"
    base = ["--root", str(root), "--results", str(results), "--carry", str(tmp_path / "carry"), "--background"]

    def refused(*flags: str) -> str:
        with pytest.raises(SystemExit) as stop:
            main([*base, *flags])
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        return err

    write(results / "reach-v3/state/seed0/summary.json", "{}")  # kept by a root this machine no longer has
    assert "is a new root (no table.json), but" in refused("--phase", "A")
    assert "--results results/cpu-table-2" in refused("--phase", "A")
    (results / "reach-v3/state/seed0/summary.json").unlink()
    assert "waits for" in refused("--phase", "C") and "--phase B" in refused("--phase", "C")
    folder = Folder(config(tmp_path))
    folder.check_settings()
    folder.save()
    assert "--hidden-dim 256 (started with 1024)" in refused("--phase", "A", "--hidden-dim", "256")
    assert not started
    main([*base, "--phase", "A"])
    assert len(started) == 1


def test_a_root_continues_with_the_settings_it_recorded_unless_a_flag_changes_them(tmp_path, capsys, monkeypatch):
    """Flags left out take the root's recorded design (make cpu-table passes none); a flag that contradicts it is
    refused. `--precision auto` is recorded as what it ran: a root started in fp32 is not continued in bf16 on a
    machine where auto would mean bf16."""
    monkeypatch.setenv(AUTO_ENV, "fp32")
    folder = Folder(config(tmp_path, hidden_dim=256))
    folder.check_settings()
    folder.save()
    assert folder.state["settings"]["precision"] == "fp32" and folder.state["settings"]["hidden_dim"] == 256
    base = folders(tmp_path)
    main([*base, "--status"])
    assert "SAC hidden 256" in capsys.readouterr().out
    monkeypatch.setenv(AUTO_ENV, "bf16")  # e.g. a later session on a machine with AMX
    assert adopt_recorded(config(tmp_path), base).precision == "fp32"
    Folder(adopt_recorded(config(tmp_path), base)).check_settings()
    with pytest.raises(ValueError, match=r"--precision 'bf16' \(started with 'fp32'\)"):
        Folder(adopt_recorded(config(tmp_path), [*base, "--precision", "auto"])).check_settings()
    with pytest.raises(ValueError, match=r"--hidden-dim 1024 \(started with 256\); leave those flags out"):
        Folder(adopt_recorded(config(tmp_path), [*base, "--hidden-dim=1024"])).check_settings()
    faster = "--batch-size 512 --warmup-epochs 2 --threads=16 --no-progress"  # speed flags may differ by machine
    Folder(config(tmp_path, pretrain_extra=faster, hidden_dim=256, precision="fp32")).check_settings()
    with pytest.raises(ValueError, match=r"--pretrain-extra '--batch-size 256 --threads 16' \(started with"):
        other = "--batch-size 256 --threads 16"
        Folder(config(tmp_path, pretrain_extra=other, hidden_dim=256, precision="fp32")).check_settings()
    given = tmp_path / "design.json"  # a --config file's values are given as much as flags are
    given.write_text(json.dumps({"hidden_dim": 1024}))
    for words in (["--config", str(given)], [f"--config={given}"]):
        cfg = parse_config(TableConfig, [*base, *words])
        with pytest.raises(ValueError, match=r"--hidden-dim 1024 \(started with 256\)"):
            Folder(adopt_recorded(cfg, [*base, *words])).check_settings()


def test_a_root_started_before_mmae_features_was_recorded_goes_on_with_raw_features(tmp_path):
    """--mmae-features became a FROZEN table setting when standardised features became the default (issue #24): a root
    that recorded its settings before then ran raw features, and its later SAC grids keep them; a new root takes the
    default."""
    folder = Folder(config(tmp_path))
    folder.check_settings()
    assert folder.state["settings"]["mmae_features"] == "standardized"
    assert "--mmae-features standardized" in sac_flags(folder.cfg)
    del folder.state["settings"]["mmae_features"]  # as an older root recorded them
    folder.save()
    base = folders(tmp_path)
    older = adopt_recorded(config(tmp_path), base)
    assert older.mmae_features == "raw" and "--mmae-features raw" in sac_flags(older)
    again = Folder(older)
    again.check_settings()
    assert again.state["settings"]["mmae_features"] == "raw"
    with pytest.raises(ValueError, match=r"--mmae-features 'standardized' \(started with 'raw'\)"):
        Folder(config(tmp_path)).check_settings()


def test_a_root_started_before_pilot_eval_episodes_was_recorded_keeps_its_pilots_on_its_eval_episodes(tmp_path):
    """--pilot-eval-episodes split from --eval-episodes (the table's evaluations went to 10 episodes, the pilots'
    stayed at 20): a root, or a results folder, that recorded its settings before then ran its pilots on its
    --eval-episodes, and its pilots (resumed chunk by chunk, read by the budget rule) keep that; its settings.json
    gains the setting at that value, and nothing it recorded changes."""
    folder = Folder(config(tmp_path, eval_episodes=7))
    folder.check_settings()
    folder.record_settings()
    settings = tmp_path / "results" / SETTINGS_FILE
    assert json.loads(settings.read_text())["pilot_eval_episodes"] == 20  # a new root: the default
    for recorded in (folder.state["settings"], older := json.loads(settings.read_text())):
        del recorded["pilot_eval_episodes"]  # as an older root recorded them
    older["a_setting_no_longer_frozen"] = "kept"  # what the file records stays, whatever this version knows of
    folder.save()
    settings.write_text(json.dumps(older))
    base = folders(tmp_path)
    adopted = adopt_recorded(config(tmp_path), base)
    assert (adopted.eval_episodes, adopted.pilot_eval_episodes) == (7, 7)
    assert "--eval-episodes 7" in sac_flags(adopted, state_pilot=True)
    again = Folder(adopted)
    again.check_settings()
    assert again.state["settings"]["pilot_eval_episodes"] == 7
    again.record_settings()
    assert json.loads(settings.read_text()) == {**older, "pilot_eval_episodes": 7}
    with pytest.raises(ValueError, match=r"--pilot-eval-episodes 20 \(started with 7\)"):
        argv = [*base, "--pilot-eval-episodes", "20"]
        Folder(adopt_recorded(parse_config(TableConfig, argv), argv)).check_settings()
    # a new machine's root (no table.json) takes the split setting from the results folder's settings.json
    (tmp_path / "root" / STATE_FILE).unlink()
    settings.write_text(json.dumps(older))
    assert adopt_recorded(config(tmp_path), base).pilot_eval_episodes == 7
    argv = [*base, "--pilot-eval-episodes", "10"]  # and refuses another value: the results' pilots ran on 7
    with pytest.raises(ValueError, match=r"--pilot-eval-episodes 10 \(they have 7\); leave those flags out"):
        Folder(adopt_recorded(parse_config(TableConfig, argv), argv)).check_start()


def test_background_command_is_the_same_run_without_background():
    argv = ["--phase", "A", "--background", "--root", "runs/x"]
    assert background_command(argv) == [
        sys.executable,
        "-m",
        "pipeline.table",
        "--phase",
        "A",
        "--root",
        "runs/x",
    ]


def test_bad_settings_are_one_line_errors(capsys):
    for argv, words in (
        (["--reach-steps", "110000"], "--reach-steps (110000) must be a multiple of --eval-every"),
        (["--pilot-eval-every", "15000"], "--budget-cap (500000) must be a multiple of --pilot-eval-every (15000)"),
        (["--first-seeds", "6"], "seeds must grow"),
        (["--status", "--dry-run"], "exclude each other"),
        (["--extra-tasks", "pick-place-v3"], "pick-place-v3 not among"),
    ):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, words, apart",
    [
        ("--sac-extra", "--actor-lr 1e-4 --hiden-dim 64", "--sac-extra: unrecognized arguments: --hiden-dim 64", True),
        (
            "--sac-extra",
            "--actor-lr inf",
            "--sac-extra: argument --actor-lr: must be a finite number, got 'inf'",
            False,
        ),
        ("--pretrain-extra", "--batch-size 512 --warmpu-epochs 2", "--pretrain-extra: unrecognized arguments", False),
        ("--probe-extra", "--fit-frames ten", "--probe-extra: argument --fit-frames: invalid int value: 'ten'", False),
    ],
)
def test_a_bad_pass_through_flag_stops_before_anything_runs(tmp_path, capsys, monkeypatch, flag, value, words, apart):
    ran = []
    monkeypatch.setattr(runner, "run", ran.append)
    if not apart:  # the same parse in this process (a spawned one imports torch again: ~5 s a call); the first case
        monkeypatch.setattr(runner, "check_pass_through_apart", check_pass_through)  # keeps the spawn
    monkeypatch.setattr(runner, "dry_run_text", lambda cfg: ran.append(cfg) or "")
    argv = [*folders(tmp_path), "--phase", "A"]
    for mode in ([], ["--dry-run"]):
        with pytest.raises(SystemExit) as stop:
            main([*argv, *mode, f"{flag}={value}"])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.startswith("error: ") and words in err and len(err.splitlines()) == 1
    assert ran == [] and not (tmp_path / "root").exists()
    main([*argv, "--sac-extra=--actor-lr 3e-4", "--probe-extra=--fit-frames 300", "--dry-run"])
    assert len(ran) == 1  # good flags pass


def test_the_table_offers_the_frozen_feature_choices_rl_accepts():
    """TableConfig repeats rl.encoders.MMAE_FEATURES (pipeline.table must not import torch, rl.encoders does): the
    same choices, the same default."""
    import dataclasses

    from rl.encoders import MMAE_FEATURES

    (spec,) = [f for f in dataclasses.fields(TableConfig) if f.name == "mmae_features"]
    assert tuple(spec.metadata["choices"]) == MMAE_FEATURES and spec.default == MMAE_FEATURES[0]


def test_the_orchestrator_does_not_load_torch(tmp_path):
    """pipeline.table runs for days beside the jobs it starts: torch would hold ~300 MB for nothing. Neither
    its start (the pass-through flags are parsed in a process of their own), nor planning (shard manifests),
    nor keeping probes loads it; nor Meta-World and MuJoCo (a second of every `--status`)."""
    code = (
        "import sys; from pipeline.table.runner import main; from pipeline.keep import keep_file; "
        f"main(['--root', {str(tmp_path / 'root')!r}, '--dry-run']); "
        "print(*(m in sys.modules for m in ('torch', 'matplotlib', 'metaworld', 'mujoco')))"
    )
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "False False False False"


def test_results_are_relative_to_the_checkout_and_pilots_beside_them(tmp_path, monkeypatch):
    """Kept results land in the checkout (where they are committed) from any working directory, and a trailing
    slash does not put the pilots inside the table's folder (which the report would then read as table rows)."""
    monkeypatch.chdir(tmp_path)
    cfg = TableConfig(root=str(tmp_path / "root"), results="results/cpu-table/").validate()
    assert cfg.results == "results/cpu-table"
    assert CHECKOUT == Path(__file__).resolve().parents[1]  # the repository, whatever module holds CHECKOUT
    assert Folder(cfg).results == CHECKOUT / "results" / "cpu-table"
    assert results_path(str(tmp_path / "elsewhere")) == tmp_path / "elsewhere"


def test_help_passed_through_and_a_contradicting_dry_run_are_one_line_refusals(tmp_path, capsys):
    """`--sac-extra=--help` would print rl.sac's help and exit inside the flag check's own process (which
    once left the orchestrator waiting forever): one line naming where the help is. A dry run refuses the
    settings a run would refuse."""
    base = folders(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main([*base, "--dry-run", "--sac-extra=--help"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "python -m rl.sac --help" in err
    with pytest.raises(SystemExit):  # the command is named as it is run, not by the module holding main
        main([*base, "--phase", "Z"])
    assert capsys.readouterr().err.strip().endswith("(see python -m pipeline.table --help)")
    folder = Folder(config(tmp_path))
    folder.check_settings()
    folder.save()
    with pytest.raises(ValueError, match=r"--hidden-dim 256 \(started with 1024\)"):
        dry_run_text(config(tmp_path, hidden_dim=256))
