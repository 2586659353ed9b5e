"""The steps of the plan (`Step`) and the project commands they run, with their arguments."""

from __future__ import annotations

import math
import multiprocessing
import shlex
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.table.config import ALL_ROWS, CNN_ROWS, REACH, TableConfig, flag_value, longest_first, run_precision


@dataclass
class Step:
    """One idempotent step: a project command run in the root (or an in-process copy), done or not."""

    key: str
    phase: str
    argv: list[str] = field(default_factory=list)  # `python -m <module> ...` words after `python`
    done: bool = False
    blocked: str = ""  # why it cannot run yet (an undecided budget)
    marker: bool = False  # done is recorded in table.json once the command succeeds and `made` holds
    made: bool = False  # its outputs are there (what `done` is, less the marker)
    action: Callable[[], object] | None = None  # in-process step (copying probe results)
    note: str = ""  # what an in-process step does
    kept: tuple[str, ...] = ()  # the folders this step fills (the git line adding them is printed after it)
    wave: tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...], int] | None = (
        None  # a table grid: tasks, rows, seeds, budget
    )
    decides_budget: bool = False  # a state pilot's chunk: the budget rule reads it, and the plan after it follows
    sized: bool = False  # an rl.grid whose --pack `best_pack` chose (--pack 0)

    def command(self) -> str:
        if self.blocked:
            return f"(waits: {self.blocked})"
        return f"python {shlex.join(self.argv)}" if self.argv else self.note


def seeds_text(seeds: Sequence[int]) -> str:
    return ",".join(map(str, seeds))


def evaluations(cfg: TableConfig, state_pilot: bool) -> tuple[int, int, int]:
    """(interval, episodes, episodes of the last one) of a state pilot's evaluations or a table run's (the mmae_rgbs
    pilot's too: no rule reads its curve, and evaluating it as often as the state pilot would double its env steps)."""
    if state_pilot:  # the budget rule reads every evaluation alike
        return cfg.pilot_eval_every, cfg.pilot_eval_episodes, cfg.pilot_eval_episodes
    return cfg.eval_every, cfg.eval_episodes, cfg.final_eval_episodes


#: the rl.sac flags of a run's evaluations (`grid_evaluations`)
EVALUATION_FLAGS = ("--eval-every", "--eval-episodes", "--final-eval-episodes")


def grid_evaluations(argv: Sequence[str]) -> tuple[int, int, int]:
    """(interval, episodes, episodes of the last one) of an rl.grid command's runs, as its --extra rl.sac flags set
    them (`sac_flags`; a flag given twice counts as argparse reads it, the last; no --final-eval-episodes, or 0: the
    others' count, as rl.sac reads it)."""
    words = shlex.split(next(a.removeprefix("--extra=") for a in argv if a.startswith("--extra=")))
    values = {}
    for i, word in enumerate(words):
        name, eq, value = word.partition("=")
        if name in EVALUATION_FLAGS:
            values[name] = value if eq else words[i + 1]
    every, episodes = int(values["--eval-every"]), int(values["--eval-episodes"])
    return every, episodes, int(values.get("--final-eval-episodes", 0)) or episodes


def sac_flags(cfg: TableConfig, state_pilot: bool = False) -> str:
    """rl.grid's --extra of a table grid (the mmae_rgbs pilot's too) or of the state pilot: the table's SAC settings,
    then --sac-extra."""
    eval_every, episodes, last = evaluations(cfg, state_pilot)
    final = "" if state_pilot else f" --final-eval-episodes {last}"
    return (
        f"--hidden-dim {cfg.hidden_dim} --eval-every {eval_every} --eval-episodes {episodes}{final} --eval-envs "
        f"{cfg.eval_envs} --checkpoint-every {cfg.checkpoint_every} --torch-threads 1 --mmae-features {cfg.mmae_features} {cfg.sac_extra}"
    ).strip()


def random_policy_argv(cfg: TableConfig, task: str, seed: int, out: Path) -> list[str]:
    """rl.evaluate's arguments for random actions on `task`'s last-evaluation episodes of a run of seed `seed`: as
    many, as long as the table's runs play them (--sac-extra's --max-episode-steps, else rl.sac's default)."""
    length = flag_value(shlex.split(cfg.sac_extra), "--max-episode-steps")
    return [
        *("--policy", "random", "--task", task, "--seed", str(seed)),
        *("--episodes", str(cfg.final_eval_episodes), "--out", str(out)),
        *(("--episode-steps", length) if length else ()),
    ]


def grid_argv(
    cfg: TableConfig, tasks: Sequence[str], rows: Sequence[str], seeds: Sequence[int], steps: int, out: str, extra: str
) -> list[str]:
    """rl.grid's arguments for `rows` x `seeds` on `tasks` to `steps`, with rl.sac flags `extra`. The grid starts
    runs seed by seed in the order of --encoders: the rows go longest first (`longest_first`)."""
    return [
        "--tasks",
        ",".join(tasks),
        "--encoders",
        ",".join(longest_first(rows)),
        "--seeds",
        seeds_text(seeds),
        "--steps",
        str(steps),
        "--sac-preset",
        "paper",
        "--pack",
        str(cfg.cnn_pack if set(rows) & set(CNN_ROWS) else cfg.pack or 1),
        "--parallel",
        str(cfg.parallel),
        "--precision",
        run_precision(cfg),
        "--out",
        out,
        f"--extra={extra}",
    ]


def with_pack(argv: Sequence[str], pack: int) -> list[str]:
    """An rl.grid command's argv with --pack `pack`."""
    i = list(argv).index("--pack")
    return [*argv[: i + 1], str(pack), *argv[i + 2 :]]


def pretrain_argv(cfg: TableConfig, task: str, modalities: str, out: str) -> list[str]:
    """pretrain.multimae's arguments for one encoder of `task` (--pretrain-extra after the table's settings)."""
    epochs = pretrain_epochs(cfg.pretrain_images, cfg.frames)
    return (
        ["--data", f"shards/{task}-sal", "--preset", cfg.pretrain_preset]
        + ["--modalities", modalities, "--epochs", str(epochs), *shlex.split(cfg.pretrain_extra)]
        + ["--precision", run_precision(cfg), "--resume", "auto", "--out", out]
    )


def probe_argv(cfg: TableConfig, task: str, encoder_dir: str, inputs: str) -> list[str]:
    """pretrain.probe's arguments for one probe of the encoder in `encoder_dir` (--probe-extra last)."""
    return ["--encoder", f"{encoder_dir}/encoder.pt", "--data", f"shards/{task}-sal"] + [
        "--inputs",
        inputs,
        "--threads",
        "2",
        "--precision",
        "fp32",  # RL's frozen encoders run in float32 whatever --precision (rl/observe.py): the probe reads the same
        *shlex.split(cfg.probe_extra),
    ]


def check_pass_through(cfg: TableConfig) -> None:
    """Parse --sac-extra, --pretrain-extra and --probe-extra inside the commands the table runs, as those
    commands will (pipeline.run's check): a typo is a ValueError naming the flag now, before any step
    runs, not hours later when its step comes (`--help` among them too). Their parsers import torch:
    `check_pass_through_apart` runs this in a process of its own."""
    try:
        check_pass_through_flags(cfg)
    except SystemExit as stop:  # argparse's --help / --version: printed, then exit
        raise ValueError(
            "--sac-extra, --pretrain-extra and --probe-extra pass flags on to the commands the table runs; --help "
            "there prints that command's help and exits (see it with `python -m rl.sac --help`, `python -m "
            "pretrain.multimae --help` or `python -m pretrain.probe --help`)"
        ) from stop


def check_pass_through_flags(cfg: TableConfig) -> None:
    """The parses of `check_pass_through`."""
    from common.cli import parse_flags
    from pretrain.config import parse_pretrain_flags
    from pretrain.probe import ProbeConfig
    from rl.grid import GridConfig, check_sac_flags

    for rows, pilot in ((ALL_ROWS, False), (["state", "mmae_rgbs"], True)):  # the table's grids, then the pilots'
        extra = sac_flags(cfg, pilot)
        argv = grid_argv(cfg, [REACH], rows, [0], cfg.eval_every, "runs/sac", extra)
        check_sac_flags(parse_flags(GridConfig, argv, command="python -m rl.grid", what="--sac-extra"), "--sac-extra")
    for name, modalities in (("rgbs", "rgb,saliency"), ("rgb", "rgb")):
        parse_pretrain_flags(pretrain_argv(cfg, REACH, modalities, f"runs/mmae/{name}/{REACH}"), "--pretrain-extra")
    for name, inputs, _ in PROBES:
        argv = probe_argv(cfg, REACH, f"runs/mmae/{name}/{REACH}", inputs)
        parse_flags(ProbeConfig, argv, command="python -m pretrain.probe", what="--probe-extra")


def check_pass_through_apart(cfg: TableConfig) -> None:
    """`check_pass_through` in a short-lived process (its error raised here): the orchestrator runs for days
    beside the jobs it starts and would otherwise hold torch (~300 MB) that no memory check counts."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            pool.submit(check_pass_through, cfg).result()
        except BrokenProcessPool as err:  # killed (e.g. out of memory) or crashed while importing
            raise RuntimeError(
                f"the check of the pass-through flags died before it answered ({err}); run it again"
            ) from err


#: (model, --inputs, probe file label) of the three probes per task: ViSaRL, PO, MMAE RGB
PROBES = (("rgbs", "", "rgb+saliency"), ("rgbs", "rgb", "rgb"), ("rgb", "", "rgb"))
#: the share of the frames pretrain.multimae holds out (whole episodes) from its training
PRETRAIN_VAL_FRACTION = 0.05


def pretrain_epochs(images: int, frames: int, val_fraction: float = PRETRAIN_VAL_FRACTION) -> int:
    """Epochs giving at least `images` training images from `frames` frames (pretrain.multimae holds out
    `val_fraction` of the episodes)."""
    return math.ceil(images / (frames * (1 - val_fraction)))


def pretrained_images(cfg: TableConfig) -> float:
    """The images each MultiMAE trains on: its `pretrain_epochs` over the frames it does not hold out."""
    return pretrain_epochs(cfg.pretrain_images, cfg.frames) * cfg.frames * (1 - PRETRAIN_VAL_FRACTION)


def git_line(folders: Sequence[str], what: str) -> str:
    return f"git add {shlex.join(folders)} && git commit -m {shlex.quote(f'{folders[0]}: {what}')}"
