"""The experiment grid: `python -m rl.grid --tasks reach-v3,drawer-open-v3 --encoders all --seeds 0,1,2 --steps N`.

Every (task, encoder, seed) is an independent `python -m rl.sac` run with its own run folder
(`<out>/<task>/<encoder>/seed<k>`). A run whose summary.json reports at least the asked steps is
skipped; one with a checkpoint is resumed with `--resume`; others start fresh. Runs execute as local
processes (`--parallel` at once) or, with `--backend ray`, as Ray tasks on a cluster (`ray start
--head` on one machine, `ray start --address HEAD:6379` on the others, then `--ray-address auto`),
each asking for `--cpus-per-run` CPUs and `--gpus-per-run` GPUs. Ray workers send their run folder's
small result files back, so results gather under `--out` on the driver even without a shared disk.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from data.cli import parse_config
from data.env import check_task

TABLE_I_ENCODERS = ("cnn_rgb", "cnn_saliency", "cnn_rgb_x_saliency", "cnn_rgbs", "mmae_rgb", "mmae_rgbs_po", "mmae_rgbs")
ALL_ENCODERS = (*TABLE_I_ENCODERS, "gaze")
RESULT_FILES = ("summary.json", "eval.csv", "metrics.csv", "config.json", "stdout.log")


@dataclass
class GridConfig:
    """Run the comparison grid of SAC runs, resumably, locally or on a Ray cluster."""

    tasks: str = field(default="reach-v3", metadata={"help": "comma-separated Meta-World tasks"})
    encoders: str = field(default="all", metadata={"help": f"comma-separated encoders, or 'all' ({', '.join(ALL_ENCODERS)})"})
    seeds: str = field(default="0", metadata={"help": "comma-separated seeds"})
    steps: int = field(default=100_000, metadata={"help": "env steps per run"})
    sac_preset: str = field(default="cpu", metadata={"help": "rl.sac preset for every run (micro, demo, cpu, paper)"})
    out: str = field(default="runs/sac", metadata={"help": "root of the run folders"})
    parallel: int = field(default=1, metadata={"help": "local backend: runs at once"})
    backend: str = field(default="local", metadata={"help": "local (subprocesses) or ray"})
    ray_address: str = field(default="", metadata={"help": "ray backend: '' starts a local instance, 'auto' joins a running cluster"})
    cpus_per_run: float = field(default=1.0, metadata={"help": "ray backend: CPUs each run asks for"})
    gpus_per_run: float = field(default=0.0, metadata={"help": "ray backend: GPUs each run asks for"})
    extra: str = field(default="", metadata={"help": "extra flags for every rl.sac run, e.g. '--saliency oracle --eval-episodes 10'"})

    def validate(self) -> "GridConfig":
        for t in self.task_list:
            check_task(t)
        from rl.encoders import ENCODERS
        import rl.sac  # noqa: F401  (registers every encoder, gaze included)

        unknown = [e for e in self.encoder_list if e not in ENCODERS]
        if unknown:
            raise ValueError(f"unknown encoder(s) {unknown}; valid: {', '.join(sorted(ENCODERS))}, or 'all'")
        if self.backend not in ("local", "ray"):
            raise ValueError("backend must be 'local' or 'ray'")
        if self.parallel < 1 or self.steps < 1:
            raise ValueError("parallel and steps must be >= 1")
        return self

    @property
    def task_list(self) -> list[str]:
        return [t for t in self.tasks.split(",") if t]

    @property
    def encoder_list(self) -> list[str]:
        return list(ALL_ENCODERS) if self.encoders == "all" else [e for e in self.encoders.split(",") if e]

    @property
    def seed_list(self) -> list[int]:
        return [int(s) for s in self.seeds.split(",") if s != ""]


@dataclass(frozen=True)
class Run:
    task: str
    encoder: str
    seed: int
    run_dir: Path

    @property
    def name(self) -> str:
        return f"{self.task}/{self.encoder}/seed{self.seed}"


def plan(cfg: GridConfig) -> list[Run]:
    return [Run(t, e, s, Path(cfg.out) / t / e / f"seed{s}")
            for t in cfg.task_list for e in cfg.encoder_list for s in cfg.seed_list]


def is_finished(run: Run, steps: int) -> bool:
    summary = run.run_dir / "summary.json"
    if not summary.exists():
        return False
    try:
        return json.loads(summary.read_text()).get("steps", 0) >= steps
    except json.JSONDecodeError:
        return False


def sac_command(cfg: GridConfig, run: Run) -> list[str]:
    cmd = [sys.executable, "-m", "rl.sac", "--task", run.task, "--encoder", run.encoder, "--seed", str(run.seed),
           "--steps", str(cfg.steps), "--preset", cfg.sac_preset, "--out", str(run.run_dir)]
    if (run.run_dir / "config.json").exists():  # started before: continue from its checkpoint, if any
        cmd.append("--resume")
    return cmd + cfg.extra.split()


def _execute(cmd: list[str], run_dir: str, cwd: str) -> tuple[int, dict[str, bytes]]:
    """Run one rl.sac command, its output appended to <run>/stdout.log; return code and result files."""
    path = Path(cwd) / run_dir
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "stdout.log", "ab") as log:
        code = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT).returncode
    files = {name: (path / name).read_bytes() for name in RESULT_FILES if (path / name).exists()}
    return code, files


def _gather(run: Run, files: dict[str, bytes]) -> None:
    """Write result files sent back by a remote worker, unless this machine already has them."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():
        target = run.run_dir / name
        if not target.exists() or target.stat().st_size < len(payload):
            target.write_bytes(payload)


def run_grid(cfg: GridConfig) -> dict[str, str]:
    """Execute the grid; returns {run name: 'skipped' | 'done' | 'failed (code N)'}."""
    cfg.validate()
    runs = plan(cfg)
    status = {r.name: "skipped" for r in runs if is_finished(r, cfg.steps)}
    todo = [r for r in runs if r.name not in status]
    print(f"grid: {len(runs)} runs, {len(status)} already finished, {len(todo)} to run ({cfg.backend})", flush=True)
    cwd = str(Path.cwd())
    t0 = time.time()

    def record(run: Run, code: int) -> None:
        status[run.name] = "done" if code == 0 else f"failed (code {code}, see {run.run_dir / 'stdout.log'})"
        print(f"[{len(status)}/{len(runs)}] {run.name}: {status[run.name]} ({time.time() - t0:.0f} s)", flush=True)

    if cfg.backend == "local":
        with ThreadPoolExecutor(cfg.parallel) as pool:
            futures = {pool.submit(_execute, sac_command(cfg, r), str(r.run_dir), cwd): r for r in todo}
            for fut in as_completed(futures):
                record(futures[fut], fut.result()[0])
    else:
        import ray

        ray.init(address=cfg.ray_address or None, ignore_reinit_error=True, include_dashboard=False,
                 log_to_driver=False, **({} if cfg.ray_address else {"num_cpus": max(1, int(cfg.cpus_per_run * cfg.parallel))}))
        remote = ray.remote(num_cpus=cfg.cpus_per_run, num_gpus=cfg.gpus_per_run)(_execute)
        refs = {remote.remote(sac_command(cfg, r), str(r.run_dir), cwd): r for r in todo}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            code, files = ray.get(ready[0])
            _gather(refs[ready[0]], files)
            record(refs[ready[0]], code)
        if not cfg.ray_address:
            ray.shutdown()
    return status


def main(argv=None) -> None:
    cfg = parse_config(GridConfig, argv)
    status = run_grid(cfg)
    failed = [k for k, v in status.items() if v.startswith("failed")]
    print(f"grid finished: {len(status) - len(failed)} ok, {len(failed)} failed; results under {cfg.out}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
