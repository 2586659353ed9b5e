"""Nested typed configs: inner fields are flat flags, presets and config.json use the flat names."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from common.cli import as_flags, check_finite, flat_dict, from_flat, nested, parse_config, replace_flat, run_command
from common.runs import prepare_run_dir


@dataclass
class Inner:
    k: int = field(default=16, metadata={"help": "neighbours"})
    weight: float = field(default=0.1, metadata={"help": "loss weight"})
    on: bool = field(default=True, metadata={"help": "switch"})


@dataclass
class Env:
    task: str = field(default="reach-v3", metadata={"help": "task"})
    max_episode_steps: int = field(default=500, metadata={"help": "episode length"})


@dataclass
class Outer:
    steps: int = field(default=10, metadata={"help": "steps"})
    env: Env = nested(Env, rename={"max_episode_steps": "episode_steps"}, max_episode_steps=150)
    gaze: Inner = nested(Inner, prefix="gaze_")


PRESETS = {"fast": {"steps": 2, "gaze_k": 4, "episode_steps": 40}}


def test_inner_fields_are_flat_flags_with_renames_prefixes_and_outer_defaults():
    cfg = parse_config(Outer, ["--gaze-k", "3", "--episode-steps", "7", "--task", "door-open-v3", "--no-gaze-on"])
    assert cfg == Outer(steps=10, env=Env("door-open-v3", 7), gaze=Inner(k=3, weight=0.1, on=False))
    assert parse_config(Outer, []).env.max_episode_steps == 150  # the outer config's default, not Env's 500
    assert Env().max_episode_steps == 500


def test_presets_use_flat_names_and_explicit_flags_win():
    cfg = parse_config(Outer, ["--preset", "fast", "--gaze-k", "9"], presets=PRESETS)
    assert (cfg.steps, cfg.gaze.k, cfg.env.max_episode_steps) == (2, 9, 40)


def test_flat_dict_round_trips_and_replace_changes_only_what_is_named():
    cfg = Outer(steps=3, env=Env("faucet-open-v3", 20), gaze=Inner(k=2, weight=0.5, on=False))
    flat = flat_dict(cfg)
    assert flat == {
        "steps": 3,
        "task": "faucet-open-v3",
        "episode_steps": 20,
        "gaze_k": 2,
        "gaze_weight": 0.5,
        "gaze_on": False,
    }
    assert from_flat(Outer, flat) == cfg
    assert replace_flat(cfg, gaze_k=8) == Outer(
        steps=3, env=Env("faucet-open-v3", 20), gaze=Inner(k=8, weight=0.5, on=False)
    )
    assert cfg.gaze.k == 2  # a copy, not an edit
    with pytest.raises(TypeError, match="no field.*gaze_bogus"):
        from_flat(Outer, gaze_bogus=1)


def test_non_finite_values_of_inner_fields_are_refused_by_flag_name(capsys):
    with pytest.raises(ValueError, match="--gaze-weight must be a finite number"):
        check_finite(Outer(gaze=Inner(weight=float("nan"))))
    with pytest.raises(SystemExit) as exit_info:
        parse_config(Outer, ["--gaze-weight", "inf"])
    assert exit_info.value.code == 2 and "--gaze-weight: must be a finite number" in capsys.readouterr().err


def test_help_lists_every_inner_flag(capsys):
    with pytest.raises(SystemExit):
        parse_config(Outer, ["--help"])
    text = capsys.readouterr().out
    for flag in ("--task", "--episode-steps", "--gaze-k", "--gaze-weight", "--gaze-on", "--steps"):
        assert flag in text
    assert "--max-episode-steps" not in text and "(default: 150)" in text


@dataclass
class WithPercent:
    share: float = field(default=0.5, metadata={"help": "within 2 %: a literal percent sign"})


def test_help_prints_a_percent_sign_literally(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_config(WithPercent, ["--help"])
    assert stop.value.code == 0 and "within 2 %: a literal percent sign (default: 0.5)" in capsys.readouterr().out


def test_config_json_is_flat(tmp_path):
    prepare_run_dir(tmp_path / "run", Outer(gaze=Inner(k=5)))
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["gaze_k"] == 5 and stored["episode_steps"] == 150 and "gaze" not in stored and "env" not in stored


@dataclass
class WithRoots:
    roots: str = field(default="runs/sac", metadata={"help": "folders", "positional": True})
    out: str = field(default="runs/report", metadata={"help": "output"})


def test_leading_words_fill_the_positional_field():
    assert parse_config(WithRoots, ["a", "b", "--out", "x"]) == WithRoots(roots="a,b", out="x")
    assert parse_config(WithRoots, ["--roots", "c"]) == WithRoots(roots="c")
    assert parse_config(WithRoots, []) == WithRoots()


def test_as_flags_is_the_inverse_of_the_parser():
    cfg = Outer(steps=3, env=Env("door-open-v3", 20), gaze=Inner(k=2, weight=0.5, on=False))
    words = as_flags(flat_dict(cfg))
    assert "--no-gaze-on" in words and words[words.index("--episode-steps") + 1] == "20"
    assert parse_config(Outer, words) == cfg


def test_run_command_returns_the_result_and_turns_user_errors_into_one_line(capsys):
    assert run_command(WithRoots, lambda cfg: cfg.roots.split(","), ["a", "b"]) == ["a", "b"]

    def fails(cfg):
        raise FileNotFoundError(f"{cfg.roots} holds no runs; run `python -m rl.grid` first")

    with pytest.raises(SystemExit) as exit_info:
        run_command(WithRoots, fails, ["x"])
    assert (
        exit_info.value.code == 2
        and capsys.readouterr().err == "error: x holds no runs; run `python -m rl.grid` first\n"
    )


def test_config_reruns_a_runs_config_json_under_preset_and_flags(tmp_path, capsys):
    """--config PATH: defaults < the file < --preset < explicit flags; its recorded preset is kept."""
    run = prepare_run_dir(tmp_path / "run", Outer(steps=7, env=Env("door-open-v3", 20), gaze=Inner(k=5, on=False)))
    stored = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(
        json.dumps({**stored, "inputs": {"frozen_encoder": None}})
    )  # rl/provenance.py's record
    again = parse_config(Outer, ["--config", str(run / "config.json")])
    assert again == Outer(steps=7, env=Env("door-open-v3", 20), gaze=Inner(k=5, on=False))
    assert parse_config(Outer, ["--config", str(run / "config.json"), "--gaze-k", "9"]).gaze.k == 9
    presets = {"small": {"steps": 2, "gaze_weight": 0.7}}
    mixed = parse_config(
        Outer, ["--config", str(run / "config.json"), "--preset", "small", "--steps", "4"], presets=presets
    )
    assert (mixed.steps, mixed.gaze.weight, mixed.gaze.k, mixed.env.task) == (4, 0.7, 5, "door-open-v3")
    (tmp_path / "other.json").write_text(json.dumps({"steps": 3, "lr": 0.1, "task": "reach-v3"}))
    for path, message in (
        (tmp_path / "other.json", "sets lr, which Outer does not have"),
        (tmp_path / "missing.json", "missing.json not found"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_config(Outer, ["--config", str(path)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and err.count("\n") == 1


def test_config_keeps_the_recorded_preset_of_a_sac_run(tmp_path):
    from rl.config import PRESETS, SACConfig

    cfg = parse_config(
        SACConfig, ["--preset", "micro", "--encoder", "cnn_rgbs", "--gaze-k", "4", "--out", "a"], presets=PRESETS
    )
    run = prepare_run_dir(tmp_path / "run", cfg)
    stored = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**stored, "preset": cfg.preset}))
    again = parse_config(SACConfig, ["--config", str(run / "config.json"), "--out", "b"], presets=PRESETS)
    assert flat_dict(again) == {**flat_dict(cfg), "out": "b"} and again.preset == "micro"


def test_parse_flags_raises_naming_the_pass_through_flag():
    from common.cli import parse_flags

    assert parse_flags(Outer, ["--gaze-k", "3"], what="--x-extra").gaze.k == 3
    with pytest.raises(
        ValueError, match=r"^--x-extra: unrecognized arguments: --gaze-kk 3 \(see python -m outer --help\)$"
    ):
        parse_flags(Outer, ["--gaze-kk", "3"], command="python -m outer", what="--x-extra")
    with pytest.raises(ValueError, match=r"^--x-extra: argument --steps: invalid int value: 'ten'"):
        parse_flags(Outer, ["--steps", "ten"], command="python -m outer", what="--x-extra")
    with pytest.raises(ValueError, match=r"unrecognized arguments: --gaze 3"):  # a prefix of --gaze-k: taken only whole
        parse_flags(Outer, ["--gaze", "3"], command="python -m outer", what="--x-extra")
