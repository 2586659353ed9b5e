"""`python -m pipeline --preset demo|micro|cpu|paper [--tasks ...] [--backend ray --ray-address auto] [--nproc-per-node N]`:
the whole ViSaRL pipeline in one command.

collect frames -> oracle annotator (stands in for the human, `annotate_n` frames) -> export ->
train PiCANet -> distill the student -> evaluate it -> pseudo-label the frames -> pretrain MultiMAE
(rgb, and rgb+saliency) -> SAC grid (the preset's encoders, gaze included) -> gaze pictures -> the floor
(random actions on each task and seed's evaluation episodes, rl.evaluate --policy random) -> a clip of each
trained agent (`<run>/evaluate/clip.gif`, rl.evaluate) -> report.

Outputs go where each stage's own command writes by default (data/shards, data/annotations,
runs/saliency, runs/mmae, runs/sac, runs/report), below `--root`, so a bare `python -m rl.sac
--encoder mmae_rgbs` afterwards finds what the pipeline made. A stage whose outputs exist is
skipped, so re-running is cheap and an interrupted pipeline resumes where it stopped; a stage that
finds outputs of another preset says so instead of mixing them. The training stages run with
`--resume auto`, so a job killed mid-stage and requeued with the same command continues the stage.

The SAC grid runs as local processes or, with `--backend ray`, as Ray tasks on a cluster (rl.grid:
code shipped as the runtime_env, retried packs resume; `--grid-extra` passes more rl.grid flags);
the other stages run on this machine, pretraining across its GPUs with `--nproc-per-node N` (torchrun).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common.cli import from_flat, from_stored, int_list, one_line_errors, option, parse_config, parse_flags
from common.io import OutputError, atomic_write_json
from pipeline.presets import PRESETS

#: the short looping clip of one evaluation episode the pipeline writes in <run>/evaluate/ (rl.evaluate.clip)
CLIP_NAME = "clip.gif"


@dataclass
class PipelineConfig:
    """Run every stage of the ViSaRL pipeline, skipping stages whose outputs exist."""

    tasks: str = option("reach-v3", "comma-separated Meta-World tasks")
    stage_preset: str = option("demo", "preset passed to every stage (micro, demo, cpu, paper)")
    frames: int = option(2000, "frames collected per task")
    shard_size: int = option(500, "frames per shard")
    annotate_n: int = option(30, "frames the (oracle) annotator labels per task")
    encoders: str = option("gaze,cnn_rgb,mmae_rgbs,mmae_rgb", "SAC encoders to compare")
    seeds: str = option("0", "comma-separated SAC seeds")
    sac_steps: int = option(1500, "env steps per SAC run")
    sac_extra: str = option("", "extra rl.sac flags for every run")
    parallel: int = option(2, "SAC packs (processes) at once")
    pack: int = option(0, "SAC runs trained together in one process (0: rl.grid's default for the device)")
    workers: int = option(1, "frame-collection worker processes per task (0: one per core)")
    pretrain_extra: str = option("", "extra pretrain.multimae flags (e.g. a GPU budget)")
    probe_frames: int = option(
        1500, "frames the probe after pretraining fits on (a third as many more, of other episodes, are scored)"
    )
    nproc_per_node: int = option(
        0,
        "run pretrain.multimae under torchrun with this many processes (one per GPU of this machine; the global batch is split across them); 0: in this process",
    )
    backend: str = option(
        "local",
        "where the SAC grid's packs run: local (processes on this machine) or ray (tasks on a Ray cluster)",
        choices=["local", "ray"],
    )
    ray_address: str = option(
        "",
        "--backend ray: '' starts a Ray instance here, 'auto' joins the cluster this machine belongs to (`ray start`), or HOST:PORT",
    )
    grid_extra: str = option(
        "",
        "more rl.grid flags, e.g. '--storage shared --ray-pip requirements.txt --gpus-per-run 0.25' (see python -m rl.grid --help)",
    )
    max_minutes: float = option(
        0.0,
        "pause once this many minutes have passed: between stages, and SAC at an episode boundary with checkpoints; run the same command again to continue (0: no limit)",
    )
    root: str = option(".", "folder holding data/ and runs/ (default: this checkout)")

    def validate(self) -> "PipelineConfig":
        if (
            self.workers < 0
            or self.pack < 0
            or self.nproc_per_node < 0
            or self.parallel < 1
            or not self.max_minutes >= 0
        ):
            raise ValueError("workers, pack and nproc-per-node must be >= 0, parallel >= 1, max-minutes >= 0")
        if self.probe_frames < 30:
            raise ValueError(f"probe-frames must be >= 30, got {self.probe_frames}")
        if self.backend not in ("local", "ray"):
            raise ValueError(f"backend must be 'local' or 'ray', got {self.backend!r}")
        int_list(self.seeds, "--seeds")
        return self


class Paused(Exception):
    """The pipeline's time budget (--max-minutes) ran out; everything done so far is kept."""


class StageError(RuntimeError):
    """A stage's own process or runs failed (pretraining under torchrun, SAC runs); the message says where
    their output is. Rerunning the pipeline continues from what they kept."""


class Stages:
    """Runs named stages with progress lines and a record of what each did (runs/pipeline/stages.json)."""

    def __init__(self, cfg: PipelineConfig, total: int):
        self.cfg, self.total, self.done = cfg, total, 0
        self.record_path = Path("runs/pipeline/stages.json")
        self.record = json.loads(self.record_path.read_text()) if self.record_path.exists() else {}
        self.t0 = time.time()

    def minutes_left(self) -> float:
        """Minutes of the --max-minutes budget left (inf without a budget)."""
        if not self.cfg.max_minutes:
            return float("inf")
        return self.cfg.max_minutes - (time.time() - self.t0) / 60

    def run(self, name: str, outputs: list[Path], fn) -> None:
        """Run `fn` unless every path in `outputs` exists (then the stage is skipped) and the stage did not
        stop midway (training stages write their outputs before they finish: a killed one runs again and
        continues, `--resume auto`)."""
        self.done += 1
        head = f"[{self.done}/{self.total}] {name}"
        previous = self.record.get(name, {})
        if outputs and all(p.exists() for p in outputs) and previous.get("status") != "running":
            if previous.get("preset") not in (None, self.cfg.stage_preset):
                raise OutputError(
                    f"{', '.join(map(str, outputs))} came from preset {previous['preset']!r}, not "
                    f"{self.cfg.stage_preset!r}; delete them or use another --root"
                )
            print(f"{head}: skipped, outputs exist ({outputs[0]})", flush=True)
            return
        if self.minutes_left() <= 0:
            raise Paused(f"the {self.cfg.max_minutes:g}-minute budget ran out before {name}")
        print(
            f"{head} ..." + (" (continues where it stopped)" if previous.get("status") == "running" else ""), flush=True
        )
        self.record[name] = {"preset": self.cfg.stage_preset, "status": "running"}
        atomic_write_json(self.record_path, self.record)
        start = time.time()
        fn()
        took = time.time() - start
        self.record[name] = {"preset": self.cfg.stage_preset, "status": "done", "seconds": round(took, 1)}
        atomic_write_json(self.record_path, self.record)
        print(f"{head}: done in {took:.0f} s (total {time.time() - self.t0:.0f} s)", flush=True)


def write_pipeline_config(cfg: PipelineConfig) -> Path:
    """runs/pipeline/config.json: this invocation's flags (`--config` reads them back). An earlier invocation's
    other flags are kept beside it as config-1.json, config-2.json, ... (the stages they ran stay in runs/)."""
    path = Path("runs/pipeline/config.json")
    flags = json.loads(json.dumps(asdict(cfg)))  # as stored: tuples become lists
    if path.exists():
        try:
            same = json.loads(path.read_text()) == flags
        except ValueError:  # a damaged record is kept too, never overwritten
            same = False
        if not same:
            kept = next(
                path.with_name(f"config-{n}.json")
                for n in range(1, 10**6)
                if not path.with_name(f"config-{n}.json").exists()
            )
            os.replace(path, kept)
    return atomic_write_json(path, flags)


def run(cfg: PipelineConfig) -> Path:
    """Run every stage not yet done, in order; returns the report's path."""
    from data.env import check_task
    from pipeline.report.config import ReportConfig
    from pipeline.report.writer import write_report

    tasks = [check_task(t) for t in cfg.tasks.split(",") if t]
    encoders = cfg.encoders.split(",")
    seeds = len(int_list(cfg.seeds, "--seeds"))
    n_gaze = len(tasks) * seeds * sum(e.startswith("gaze") for e in encoders)
    stages = Stages(cfg, total=len(tasks) * 7 + 4 + n_gaze + len(tasks) * (len(encoders) + seeds))
    write_pipeline_config(cfg)
    for task in tasks:
        data_stages(stages, cfg, task)
        saliency_stages(stages, cfg, task)
    pretrain_stages(stages, cfg, tasks)
    sac_stages(stages, cfg)
    report = Path("runs/report/REPORT.md")
    stages.run(
        "pipeline.report",
        [],
        lambda: write_report(ReportConfig(roots="runs/sac", out="runs/report", pictures_root="runs")),
    )
    return report


def data_stages(stages: Stages, cfg: PipelineConfig, task: str) -> None:
    """Collect the task's frames, click them with the oracle annotator and export the clicks."""
    from annotate_app.export import ExportConfig, export
    from annotate_app.oracle import annotate_oracle
    from data.collect import CollectConfig, collect

    shards, npz = Path("data/shards") / task, Path("data/annotations") / f"{task}.npz"
    stages.run(
        f"collect {task}",
        [shards / "manifest.json"] if _complete(shards) else [],
        lambda: collect(
            from_flat(
                CollectConfig,
                task=task,
                frames=cfg.frames,
                shard_size=cfg.shard_size,
                out=str(shards),
                workers=cfg.workers or os.cpu_count() or 1,
            )
        ),
    )
    stages.run(f"oracle annotator {task}", [npz], lambda: annotate_oracle(task, shards, n=cfg.annotate_n))
    stages.run(f"export annotations {task}", [npz], lambda: export(ExportConfig(task=task)))


def saliency_stages(stages: Stages, cfg: PipelineConfig, task: str) -> None:
    """Train PiCANet on the task's clicks, distil the student, evaluate it and label every frame."""
    from saliency import distill, evaluate, label, train
    from saliency.config import DistillConfig, EvalConfig, LabelConfig, TrainConfig, from_preset

    p = cfg.stage_preset
    shards, labelled = Path("data/shards") / task, Path(f"data/shards/{task}-sal")
    npz, sal = Path("data/annotations") / f"{task}.npz", Path("runs/saliency") / task
    stages.run(
        f"saliency.train {task}",
        [sal / "best.pt"],
        lambda: train.run(from_preset(TrainConfig, p, annotations=str(npz), out=str(sal), resume="auto")),
    )
    stages.run(
        f"saliency.distill {task}",
        [sal / "student.pt"],
        lambda: distill.run(
            from_preset(DistillConfig, p, teacher=str(sal / "best.pt"), data=str(shards), resume="auto")
        ),
    )
    stages.run(
        f"saliency.evaluate {task}",
        [sal / "eval" / "metrics.json"],
        lambda: evaluate.run(
            from_preset(EvalConfig, p, model=str(sal / "student.pt"), data=str(shards), out=str(sal / "eval"))
        ),
    )
    stages.run(
        f"saliency.label {task}",
        [labelled / "manifest.json"] if _complete(labelled) else [],
        lambda: label.run(
            from_preset(LabelConfig, p, model=str(sal / "student.pt"), data=str(shards), out=str(labelled))
        ),
    )


def pretrain_stages(stages: Stages, cfg: PipelineConfig, tasks: list[str]) -> None:
    """Pretrain the MultiMAE encoders (RGB + saliency, RGB alone), each probed right after."""
    from pretrain.gate import encoder_paths, probe_gate

    for name, modalities in (("rgbs", "rgb,saliency"), ("rgb", "rgb")):
        out = Path("runs/mmae") / name
        # one MultiMAE per task (out/<task>/ when there are several); the linear probe runs right after
        # pretraining (table printed, probe_*.json beside each encoder, loud warning if worse than random init)
        stages.run(
            f"pretrain.multimae {name}",
            list(encoder_paths(out, tasks).values()),
            lambda: (
                [
                    pretrain(
                        cfg,
                        ["--data", "data/shards", "--task", t, "--modalities", modalities, "--out", str(path.parent)],
                    )
                    for t, path in encoder_paths(out, tasks).items()
                ],
                probe_gate(
                    out, tasks, modalities, fit_frames=cfg.probe_frames, score_frames=max(10, cfg.probe_frames // 3)
                ),
            ),
        )


def sac_stages(stages: Stages, cfg: PipelineConfig) -> None:
    """The SAC grid, then the gaze pictures of its gaze runs and one evaluation clip per encoder and task."""
    from rl import evaluate as evaluate_agent
    from rl import gaze_viz
    from rl.grid import plan, run_grid

    def sac_grid() -> None:
        budget = f" --max-minutes {max(stages.minutes_left(), 0.01):.2f}" if cfg.max_minutes else ""
        _check_grid(run_grid(grid_config(cfg, budget)))

    stages.run("rl.grid", [], sac_grid)
    gaze_runs = [r.run_dir for r in plan(grid_config(cfg)) if r.encoder.startswith("gaze")]
    for run_dir in gaze_runs:
        stages.run(
            f"rl.gaze_viz {run_dir}",
            [run_dir / "gaze_strip.png"],
            lambda run_dir=run_dir: gaze_viz.run(gaze_viz.GazeVizConfig(run=str(run_dir), frames=6)),
        )
    for run in (r for r in plan(grid_config(cfg)) if r.encoder == cfg.encoders.split(",")[0]):
        random_policy_stage(stages, run)  # the floor of each task and seed
    first_seed = int(cfg.seeds.split(",")[0])
    for run in (r for r in plan(grid_config(cfg)) if r.seed == first_seed):  # one clip per encoder and task
        out = run.run_dir / "evaluate" / CLIP_NAME
        stages.run(
            f"rl.evaluate clip {run.run_dir}",
            [out],
            lambda run=run, out=out: evaluate_agent.clip(
                run.run_dir, out, overlay="gaze" if run.encoder.startswith("gaze") else "none"
            ),
        )


def random_policy_stage(stages: Stages, run) -> None:
    """Random actions on the final-evaluation episodes of a finished rl.grid `run` (its task, seed, episode length
    and count): the floor its task's rows read against in the report (`<task>/random_policy/` beside them)."""
    from rl import evaluate as evaluate_agent
    from rl.config import SACConfig
    from rl.outcome import RANDOM_POLICY, random_policy_file

    episodes = from_stored(SACConfig, json.loads((run.run_dir / "config.json").read_text())).last_eval_episodes
    out = run.run_dir.parent.parent / RANDOM_POLICY
    stages.run(
        f"rl.evaluate --policy random {run.task} seed {run.seed}",
        [out / random_policy_file(run.seed, episodes)],
        lambda: evaluate_agent.evaluate(
            evaluate_agent.EvaluateConfig(run=str(run.run_dir), policy="random", episodes=episodes, out=str(out))
        ),
    )


def pretrain_command(cfg: PipelineConfig, args: list[str]) -> list[str]:
    """pretrain.multimae's arguments for this pipeline; under torchrun (`--nproc-per-node N`) the whole command."""
    args = ["--preset", cfg.stage_preset, *args, *shlex.split(cfg.pretrain_extra), "--resume", "auto"]
    if not cfg.nproc_per_node:
        return args
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(cfg.nproc_per_node),
        "-m",
        "pretrain.multimae",
        *args,
    ]


def pretrain(cfg: PipelineConfig, args: list[str]) -> None:
    """Pretrain in this process, or under torchrun (`torchrun --nproc-per-node N -m pretrain.multimae ...`).

    The one stage called with flags rather than a config: the same command runs in torchrun's processes,
    and --pretrain-extra holds pretrain.multimae flags."""
    command = pretrain_command(cfg, args)
    if not cfg.nproc_per_node:
        from pretrain.train import main as pretrain_main

        pretrain_main(command)
        return
    print(f"  torchrun: {shlex.join(command)}", flush=True)
    code = subprocess.run(command).returncode
    if code:
        raise StageError(
            f"pretraining under torchrun failed (exit {code}, its output is above); the same "
            "command continues from its checkpoint"
        )


def grid_config(cfg: PipelineConfig, sac_extra: str = ""):
    """The rl.grid config of the SAC stage: the pipeline's settings, then --grid-extra's flags."""
    from rl.grid import GridConfig

    return parse_config(GridConfig, grid_argv_of(cfg, sac_extra))


def grid_argv_of(cfg: PipelineConfig, sac_extra: str = "") -> list[str]:
    """rl.grid's arguments for the SAC stage: the pipeline's settings, then --grid-extra's flags."""
    return [
        "--tasks",
        cfg.tasks,
        "--encoders",
        cfg.encoders,
        "--seeds",
        cfg.seeds,
        "--steps",
        str(cfg.sac_steps),
        "--sac-preset",
        cfg.stage_preset,
        "--out",
        "runs/sac",
        "--parallel",
        str(cfg.parallel),
        "--pack",
        str(cfg.pack),
        "--backend",
        cfg.backend,
        "--ray-address",
        cfg.ray_address,
        f"--extra={cfg.sac_extra + sac_extra}",
        *shlex.split(cfg.grid_extra),
    ]


def _complete(folder: Path) -> bool:
    """A shard folder whose manifest says every shard is written."""
    manifest = folder / "manifest.json"
    return manifest.exists() and json.loads(manifest.read_text()).get("status") == "complete"


def _check_grid(status: dict[str, str]) -> None:
    failed = {k: v for k, v in status.items() if v.startswith("failed")}
    if failed:
        raise StageError("SAC runs failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    paused = [k for k, v in status.items() if v == "paused"]
    if paused:
        raise Paused(f"{len(paused)} SAC run(s) paused at an episode boundary with their checkpoints")


def check_pass_through(cfg: PipelineConfig) -> None:
    """Parse --grid-extra, --sac-extra (for every planned run) and --pretrain-extra against their stage's config, as
    the stages will: a typo fails now, with a one-line error naming the flag, not hours later at its stage."""
    from dataclasses import replace

    from pretrain.config import parse_pretrain_flags
    from rl.grid import GridConfig, check_sac_flags

    grid = parse_flags(GridConfig, grid_argv_of(cfg), command="python -m rl.grid", what="--grid-extra")
    check_sac_flags(grid, what="--sac-extra")
    for modalities in ("rgb,saliency", "rgb"):
        for task in (t for t in cfg.tasks.split(",") if t):
            argv = pretrain_command(replace(cfg, nproc_per_node=0), ["--task", task, "--modalities", modalities])
            parse_pretrain_flags(argv, what="--pretrain-extra")


def main(argv=None) -> None:
    cfg = parse_config(PipelineConfig, argv, presets=PRESETS)
    with one_line_errors():  # exit 2 before any stage runs
        check_pass_through(cfg)
    root = Path(cfg.root)
    root.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with contextlib.chdir(root), one_line_errors(StageError):
        try:
            report = run(cfg)
        except Paused as why:
            print(f"\nPAUSED after {(time.time() - start) / 60:.1f} min: {why}; run the same command again to continue")
            return
    print(f"\npipeline finished in {(time.time() - start) / 60:.1f} min; report: {root / report}")


if __name__ == "__main__":
    main()
