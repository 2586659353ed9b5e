"""The experiment grid: `python -m rl.grid --tasks reach-v3,drawer-open-v3 --encoders all --seeds 0,1,2 --steps N [--pack N]`.

Every (task, encoder, seed) is an independent SAC run with its own run folder
(`<out>/<task>/<encoder>/seed<k>`). A run whose summary.json reports at least the asked steps is
skipped; one that was started before is resumed; others start fresh. Runs are packed: up to
`--pack` runs whose networks stack (same task and settings, encoders of the same kind: seeds of one
encoder, or frozen encoders of one embedding size) train in lockstep in one process
(`python -m rl.workspace`, rl/workspace.py); runs that cannot stack go to separate packs. Packs
execute as local processes (`--parallel` at once, GPUs assigned round-robin) or, with `--backend
ray`, as Ray tasks on a cluster (`ray start --head` on one machine, `ray start --address HEAD:6379`
on the others, then `--ray-address auto`), each asking for `--cpus-per-run` CPUs and `--gpus-per-run`
GPUs per pack. Ray workers send their runs' small result files back, so results gather under
`--out` on the driver even without a shared disk.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from common.cli import parse_config
from common.io import atomic_write_json
from data.env import check_task
from rl.encoders import TABLE_I

ALL_ENCODERS = (*TABLE_I, "gaze")
RESULT_FILES = ("summary.json", "eval.csv", "metrics.csv", "config.json", "stdout.log")


@dataclass
class GridConfig:
    """Run the comparison grid of SAC runs, resumably, locally or on a Ray cluster."""

    tasks: str = field(default="reach-v3", metadata={"help": "comma-separated Meta-World tasks"})
    encoders: str = field(default="all", metadata={"help": f"comma-separated encoders, or 'all' ({', '.join(ALL_ENCODERS)})"})
    seeds: str = field(default="0", metadata={"help": "comma-separated seeds"})
    steps: int = field(default=100_000, metadata={"help": "env steps per run"})
    pack: int = field(default=0, metadata={"help": "runs trained together in one process (0: 24 with a GPU, 4 without)"})
    sac_preset: str = field(default="cpu", metadata={"help": "rl.sac preset for every run (micro, demo, cpu, paper)"})
    out: str = field(default="runs/sac", metadata={"help": "root of the run folders"})
    parallel: int = field(default=1, metadata={"help": "local backend: packs (processes) at once"})
    backend: str = field(default="local", metadata={"help": "local (subprocesses) or ray"})
    ray_address: str = field(default="", metadata={"help": "ray backend: '' starts a local instance, 'auto' joins a running cluster"})
    cpus_per_run: float = field(default=1.0, metadata={"help": "ray backend: CPUs each pack asks for"})
    gpus_per_run: float = field(default=0.0, metadata={"help": "ray backend: GPUs each pack asks for"})
    extra: str = field(default="", metadata={"help": "extra flags for every rl.sac run, e.g. '--saliency oracle --eval-episodes 10'"})

    def validate(self) -> "GridConfig":
        for t in self.task_list:
            check_task(t)
        from rl.encoders import ENCODERS

        unknown = [e for e in self.encoder_list if e not in ENCODERS]
        if unknown:
            raise ValueError(f"unknown encoder(s) {unknown}; valid: {', '.join(sorted(ENCODERS))}, or 'all'")
        if self.backend not in ("local", "ray"):
            raise ValueError("backend must be 'local' or 'ray'")
        if self.parallel < 1 or self.steps < 1 or self.pack < 0:
            raise ValueError("parallel and steps must be >= 1, pack >= 0")
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
    """The single-run command of `run` (what a pack of one executes)."""
    cmd = [sys.executable, "-m", "rl.sac", "--task", run.task, "--encoder", run.encoder, "--seed", str(run.seed),
           "--steps", str(cfg.steps), "--preset", cfg.sac_preset, "--out", str(run.run_dir)]
    if (run.run_dir / "config.json").exists():  # started before: continue from its checkpoint, if any
        cmd.append("--resume")
    return cmd + cfg.extra.split()


def run_config(cfg: GridConfig, run: Run):
    """The SACConfig of `run`: exactly what `sac_command` would parse."""
    from rl.config import PRESETS, SACConfig

    return parse_config(SACConfig, sac_command(cfg, run)[3:], presets=PRESETS)


def default_pack_size() -> int:
    import torch

    return 24 if torch.cuda.is_available() else 4


def plan_packs(cfg: GridConfig, runs: list[Run]) -> list[list[Run]]:
    """Runs grouped into packs of at most `cfg.pack` whose networks stack (rl.workspace.pack_key);
    runs that cannot stack with others, or whose encoder cannot be built here, get packs of their own."""
    from rl.encoders import build_encoder
    from rl.workspace import checkpoint_steps, pack_key

    size = cfg.pack or default_pack_size()
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        sac = run_config(cfg, run)
        try:
            # runs resume together only from a step they all hold: group by their newest checkpoint too
            steps = checkpoint_steps(run.run_dir)
            key = (*pack_key(sac, build_encoder(sac, sac.image_size)), steps[-1] if steps else None)
        except (FileNotFoundError, ValueError):  # a missing pretrained model: the run reports it alone
            key = ("alone", run.name)
        groups.setdefault(key, []).append(run)
    return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]


def write_spec(cfg: GridConfig, pack: list[Run]) -> Path:
    """<out>/packs/<name>.json: the pack's run configs (read by `python -m rl.workspace --spec`)."""
    items = []
    for run in pack:
        sac = run_config(cfg, run)
        items.append({**dataclasses.asdict(sac), "preset": sac.preset})
    name = hashlib.sha1(",".join(r.name for r in pack).encode()).hexdigest()[:10]
    return atomic_write_json(Path(cfg.out) / "packs" / f"{pack[0].task}-{pack[0].encoder}-{name}.json", items)


def _execute(cmd: list[str], run_dirs: list[str], cwd: str, gpu: int | None = None) -> tuple[int, dict[str, dict[str, bytes]]]:
    """Run one pack's command, its output appended to every run's stdout.log; return code and result files."""
    paths = [Path(cwd) / d for d in run_dirs]
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": str(gpu)} if gpu is not None else {}))
    log_path = paths[0] / "stdout.log"
    with open(log_path, "ab") as log:
        code = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    for path in paths[1:]:  # every run folder keeps the pack's log
        with open(path / "stdout.log", "ab") as log:
            log.write(log_path.read_bytes())
    files = {str(d): {name: (p / name).read_bytes() for name in RESULT_FILES if (p / name).exists()}
             for d, p in zip(run_dirs, paths)}
    return code, files


def _gather(run: Run, files: dict[str, bytes]) -> None:
    """Write result files sent back by a remote worker, unless this machine already has them."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():
        target = run.run_dir / name
        if not target.exists() or target.stat().st_size < len(payload):
            target.write_bytes(payload)


def run_grid(cfg: GridConfig) -> dict[str, str]:
    """Execute the grid; returns {run name: 'skipped' | 'done' | 'paused' | 'failed (code N)'}."""
    cfg.validate()
    runs = plan(cfg)
    status = {r.name: "skipped" for r in runs if is_finished(r, cfg.steps)}
    todo = [r for r in runs if r.name not in status]
    packs = plan_packs(cfg, todo)
    print(f"grid: {len(runs)} runs, {len(status)} already finished, {len(todo)} to run in {len(packs)} pack(s) "
          f"({cfg.backend})", flush=True)
    cwd = str(Path.cwd())
    t0 = time.time()
    commands = [[sys.executable, "-m", "rl.workspace", "--spec", str(write_spec(cfg, p))] for p in packs]

    def record(pack: list[Run], code: int) -> None:
        for run in pack:
            if code:
                status[run.name] = f"failed (code {code}, see {run.run_dir / 'stdout.log'})"
            else:  # a run paused by --max-minutes ends without its summary: the next grid resumes it
                status[run.name] = "done" if is_finished(run, cfg.steps) else "paused"
            print(f"[{len(status)}/{len(runs)}] {run.name}: {status[run.name]} ({time.time() - t0:.0f} s)", flush=True)

    if cfg.backend == "local":
        import torch

        gpus = torch.cuda.device_count()
        with ThreadPoolExecutor(cfg.parallel) as pool:
            futures = {pool.submit(_execute, cmd, [str(r.run_dir) for r in p], cwd, i % gpus if gpus else None): p
                       for i, (cmd, p) in enumerate(zip(commands, packs))}
            for fut in as_completed(futures):
                record(futures[fut], fut.result()[0])
    else:
        try:
            import ray
        except ImportError as err:
            raise SystemExit("error: --backend ray needs Ray: pip install 'visarl[cluster]'") from err

        ray.init(address=cfg.ray_address or None, ignore_reinit_error=True, include_dashboard=False,
                 log_to_driver=False, **({} if cfg.ray_address else {"num_cpus": max(1, int(cfg.cpus_per_run * cfg.parallel))}))
        remote = ray.remote(num_cpus=cfg.cpus_per_run, num_gpus=cfg.gpus_per_run)(_execute)
        refs = {remote.remote(cmd, [str(r.run_dir) for r in p], cwd): p for cmd, p in zip(commands, packs)}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            code, files = ray.get(ready[0])
            for run in refs[ready[0]]:
                _gather(run, files.get(str(run.run_dir), {}))
            record(refs[ready[0]], code)
        if not cfg.ray_address:
            ray.shutdown()
    return status


def main(argv=None) -> None:
    cfg = parse_config(GridConfig, argv)
    status = run_grid(cfg)
    failed = [k for k, v in status.items() if v.startswith("failed")]
    paused = [k for k, v in status.items() if v == "paused"]
    print(f"grid finished: {len(status) - len(failed) - len(paused)} ok, {len(paused)} paused (run again to continue), "
          f"{len(failed)} failed; results under {cfg.out}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
