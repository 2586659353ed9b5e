"""The experiment grid: `python -m rl.grid --tasks reach-v3,drawer-open-v3 --encoders all --seeds 0,1,2 --steps N [--pack N]`.

Every (task, encoder, seed) is an independent SAC run with its own run folder
(`<out>/<task>/<encoder>/seed<k>`). A run whose summary.json reports at least the asked steps, or that it
diverged (a final outcome: rl/outcome.py), is skipped; one that was started before is resumed; others start fresh. Runs are packed: up to
`--pack` runs whose networks stack (same task and settings, encoders of the same kind: seeds of one
encoder, or frozen encoders of one embedding size) train in lockstep in one process
(`python -m rl.workspace`, rl/workspace.py); runs that cannot stack go to separate packs. Packs
execute as local processes (`--parallel` at once, GPUs assigned round-robin) or, with `--backend
ray`, as Ray tasks on a cluster (`ray start --head` on one machine, `ray start --address HEAD:6379`
on the others, then `--ray-address auto`). Every pack runs with `--resume auto`, so a pack whose
worker or node died is retried (`--retries`) and continues from its newest checkpoint; rows logged
after that checkpoint are dropped, none is duplicated. SIGTERM pauses a local grid: its running packs write a
checkpoint and exit, queued ones do not start, and a rerun continues (`make background-stop` relies on it).

On Ray, the workers get this checkout as the runtime_env working_dir (`--ray-working-dir`, plus
`--ray-pip` / `--ray-conda` for their Python environment), each pack asks for `--cpus-per-run`
CPUs and its share of a GPU (by default runs/24, the packed engine's runs per GPU), and the run
folders live either on storage every node mounts at the driver's path (`--storage shared`:
retries resume on any node) or travel with the pack (`--storage driver`: the driver's folders go to
the worker, and come back whole, checkpoints, agent.pt and tb/ included, when the pack ends; a
retry resumes from what its node holds).

Runs start seed by seed: every task and encoder of the first seed, then of the next (packs in the order of their
first run), so a grid cut short (a session's end, a lost machine) holds as many seeds of every row as it can, not
all the seeds of the first rows and none of the last.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from common.cli import flat_dict, int_list, one_line_errors, option, parse_config, parse_flags
from common.io import atomic_write_bytes, atomic_write_json
from common.precision import PRECISION_HELP, check_precision, precision_field
from common.runs import on_main_thread
from data.env import check_task
from rl import outcome
from rl.encoders import TABLE_I

ALL_ENCODERS = (*TABLE_I, "gaze")
CHECKOUT = Path(__file__).resolve().parent.parent
#: runs per pack, and so per GPU, when packs go to GPUs (24 seeds of a frozen encoder fill an H100)
GPU_PACK = 24
#: never uploaded as the Ray working_dir: data and results travel by --storage
#: a pack's process starts through this: it gets SIGKILL when the process that started it dies
#: (PR_SET_PDEATHSIG, kept across exec), so a killed Ray worker leaves no trainer writing beside its retry
DIE_WITH_PARENT = (
    "import ctypes, os, sys\ntry:\n    ctypes.CDLL(None).prctl(1, 9)\nexcept (OSError, AttributeError):\n"
    "    pass\nos.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)
UPLOAD_EXCLUDES = [".git", ".venv", "runs", "data/shards", "data/annotations", "artifacts", "*.egg-info", "__pycache__"]


@dataclass
class GridConfig:
    """Run the comparison grid of SAC runs, resumably, locally or on a Ray cluster."""

    tasks: str = option("reach-v3", "comma-separated Meta-World tasks")
    encoders: str = option("all", f"comma-separated encoders, or 'all' ({', '.join(ALL_ENCODERS)})")
    seeds: str = option("0", "comma-separated seeds")
    steps: int = option(100_000, "env steps per run")
    pack: int = option(0, "runs trained together in one process (0: 24 with a GPU, 4 without)")
    sac_preset: str = option("cpu", "rl.sac preset for every run (micro, demo, cpu, paper)")
    out: str = option("runs/sac", "root of the run folders")
    parallel: int = option(1, "local backend: packs (processes) at once")
    backend: str = option("local", "local (subprocesses) or ray", choices=["local", "ray"])
    ray_address: str = option(
        "",
        "ray backend: '' starts a local instance of its own (RAY_ADDRESS is not read), 'auto' joins a running cluster, or HOST:PORT",
    )
    ray_working_dir: str = option(
        "",
        "ray backend: the code workers run: '' uploads this checkout (without runs/, data/shards, .venv, .git) as the runtime_env working_dir; a path or URI (a shared checkout, a .zip on S3) is passed to Ray as is; 'none': every node has this checkout at the driver's path",
    )
    ray_pip: str = option(
        "",
        "ray backend: runtime_env pip for the workers, a requirements file or comma-separated packages (default: the nodes' own Python)",
    )
    ray_conda: str = option(
        "", "ray backend: runtime_env conda for the workers, an environment name or environment.yml"
    )
    storage: str = option(
        "driver",
        "ray backend: where run folders live: 'shared' (the driver's folder is mounted at the same path on every node; workers write there and a retry on any node resumes) or 'driver' (each pack's folders are copied to its worker and come back whole when it ends; a retry resumes from what its node holds)",
        choices=["driver", "shared"],
    )
    scratch: str = option(
        "",
        "ray backend, --storage driver: node-local folder holding the packs' run folders (default: <tmp>/visarl-grid)",
    )
    retries: int = option(
        3, "ray backend: times a pack whose worker or node died runs again (it continues from its checkpoint)"
    )
    cpus_per_run: float = option(1.0, "ray backend: CPUs each pack (one process) asks for")
    gpus_per_run: float = option(
        -1.0,
        f"ray backend: GPUs each pack asks for; -1: its share of a GPU, runs in the pack / {GPU_PACK} (the packed engine's runs per GPU), on a cluster with GPUs, else 0",
    )
    precision: str = precision_field(PRECISION_HELP + "; passed to every rl.sac run")
    extra: str = option("", "extra flags for every rl.sac run, e.g. '--saliency oracle --eval-episodes 10'")

    def validate(self) -> "GridConfig":
        for t in self.task_list:
            check_task(t)
        from rl.encoders import ENCODERS

        unknown = [e for e in self.encoder_list if e not in ENCODERS]
        if unknown:
            raise ValueError(f"unknown encoder(s) {unknown}; valid: {', '.join(sorted(ENCODERS))}, or 'all'")
        check_precision(self.precision)
        if self.backend not in ("local", "ray"):
            raise ValueError("backend must be 'local' or 'ray'")
        if self.storage not in ("driver", "shared"):
            raise ValueError(f"storage must be 'driver' or 'shared', got {self.storage!r}")
        if self.parallel < 1 or self.steps < 1 or self.pack < 0 or self.retries < 0:
            raise ValueError("parallel and steps must be >= 1, pack and retries >= 0")
        int_list(self.seeds, "--seeds")
        return self

    @property
    def task_list(self) -> list[str]:
        return [t for t in self.tasks.split(",") if t]

    @property
    def encoder_list(self) -> list[str]:
        return list(ALL_ENCODERS) if self.encoders == "all" else [e for e in self.encoders.split(",") if e]

    @property
    def seed_list(self) -> list[int]:
        return int_list(self.seeds, "--seeds")


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
    """Every (task, encoder, seed), seed by seed."""
    return [
        Run(t, e, s, Path(cfg.out) / t / e / f"seed{s}")
        for s in cfg.seed_list
        for t in cfg.task_list
        for e in cfg.encoder_list
    ]


def is_finished(run: Run, steps: int) -> bool:
    """Its summary.json reaches `steps`, or it diverged (a final outcome at any budget: rl.outcome)."""
    return outcome.is_finished(run.run_dir, steps)


def finished_status(run: Run) -> str:
    """'done', or 'diverged at step N' for a run whose outcome is its divergence."""
    diverged = outcome.diverged(run.run_dir)
    return (
        f"diverged at step {diverged.get('step')} (counted as 0 success; {run.run_dir / outcome.SUMMARY})"
        if diverged
        else "done"
    )


def sac_command(cfg: GridConfig, run: Run) -> list[str]:
    """The single-run command of `run` (what a pack of one executes)."""
    cmd = [
        sys.executable,
        "-m",
        "rl.sac",
        "--task",
        run.task,
        "--encoder",
        run.encoder,
        "--seed",
        str(run.seed),
        "--steps",
        str(cfg.steps),
        "--preset",
        cfg.sac_preset,
        "--out",
        str(run.run_dir),
        "--precision",
        cfg.precision,
    ]
    if (run.run_dir / "config.json").exists():  # started before: continue from its checkpoint, if any
        cmd += ["--resume", "auto"]
    return cmd + shlex.split(cfg.extra)  # as the pipeline splits its pass-through flags: quotes group words


def run_config(cfg: GridConfig, run: Run):
    """The SACConfig of `run`: exactly what `sac_command` would parse."""
    from rl.config import PRESETS, SACConfig

    return parse_config(SACConfig, sac_command(cfg, run)[3:], presets=PRESETS)


def default_pack_size(gpus: bool | None = None) -> int:
    """Runs per pack when --pack is 0: GPU_PACK with GPUs (this machine's, or the cluster's: `gpus`), else 4."""
    import torch

    return GPU_PACK if (torch.cuda.is_available() if gpus is None else gpus) else 4


def check_sac_flags(cfg: GridConfig, what: str) -> None:
    """Parse the rl.sac command of every planned run as rl.sac will (one seed: seeds differ only in --seed and
    --out); a bad flag is a ValueError naming `what`, the flag that passed it through (e.g. --sac-extra)."""
    from rl.config import PRESETS, SACConfig

    for run in (r for r in plan(cfg) if r.seed == cfg.seed_list[0]):
        parse_flags(SACConfig, sac_command(cfg, run)[3:], presets=PRESETS, command="python -m rl.sac", what=what)


def plan_packs(cfg: GridConfig, runs: list[Run], gpus: bool | None = None) -> list[list[Run]]:
    """Runs grouped into packs of at most `cfg.pack` whose networks stack (rl.workspace.pack_key);
    runs that cannot stack with others, or whose encoder cannot be built here, get packs of their own."""
    from rl.encoders import build_encoder
    from rl.workspace import checkpoint_steps, pack_key

    size = cfg.pack or default_pack_size(gpus)
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        sac = run_config(cfg, run)
        try:
            # runs resume together only from a step they all hold: group by their newest checkpoint too
            steps = checkpoint_steps(run.run_dir)
            key = (*pack_key(sac, build_encoder(sac, sac.env.image_size)), steps[-1] if steps else None)
        except (FileNotFoundError, ValueError):  # a missing pretrained model: the run reports it alone
            key = ("alone", run.name)
        groups.setdefault(key, []).append(run)
    packs = [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]
    order = {run.name: i for i, run in enumerate(runs)}
    return sorted(packs, key=lambda pack: order[pack[0].name])  # in the runs' order (seed by seed: `plan`)


def pack_host_bytes(cfg: GridConfig, pack: list[Run]) -> int:
    """Bytes the pack holds in RAM by its last step (rl.workspace.host_bytes; 0 when its encoder cannot be built
    here: the pack then reports that itself)."""
    from rl.encoders import build_encoder
    from rl.observe import replay_fields
    from rl.workspace import host_bytes

    sac = run_config(cfg, pack[0])  # the runs of a pack share everything but seed and folder
    try:
        enc = build_encoder(sac, sac.env.image_size)
    except (FileNotFoundError, ValueError):
        return 0
    fields = replay_fields(enc.obs_keys, enc.out_dim if enc.frozen else 0, sac.env.image_size)
    return host_bytes(sac, fields, enc, len(pack))


def check_memory(cfg: GridConfig, packs: list[list[Run]]) -> None:
    """Refuse a local grid whose `--parallel` largest packs would together outgrow this machine's RAM by their
    last step (each pack checks itself too; this sees the packs beside it)."""
    from rl.replay import check_host_memory

    if cfg.backend != "local" or not packs:
        return
    needs = sorted((pack_host_bytes(cfg, p) for p in packs), reverse=True)
    at_once = min(cfg.parallel, len(packs))
    check_host_memory(
        sum(needs[:at_once]),
        f"this grid's {at_once} pack(s) at once (--parallel {cfg.parallel}, up to {max(map(len, packs))} runs per pack)",
        "lower --pack or --parallel, or pass a smaller --replay-size or --eval-envs in --extra (from pipeline.table: "
        "--pack, --cnn-pack, --parallel, --eval-envs or --sac-extra)",
    )


def write_spec(cfg: GridConfig, pack: list[Run]) -> Path:
    """<out>/packs/<name>.json: the pack's run configs (read by `python -m rl.workspace --spec`)."""
    items = []
    for run in pack:
        sac = run_config(cfg, run)
        items.append({**flat_dict(sac), "preset": sac.preset})
    name = hashlib.sha1(",".join(r.name for r in pack).encode()).hexdigest()[:10]
    return atomic_write_json(Path(cfg.out) / "packs" / f"{pack[0].task}-{pack[0].encoder}-{name}.json", items)


def pack_command(spec: Path | str) -> list[str]:
    """The pack's command: `--resume auto` so that a rerun (a retried Ray task, a requeued job) continues."""
    return ["-m", "rl.workspace", "--spec", str(spec), "--resume", "auto"]


class Stopping:
    """SIGTERM to a local grid pauses it: the running packs get SIGTERM too (rl.workspace checkpoints at its next
    episode boundary and exits) and the grid waits for them, alive, since its death would SIGKILL them
    (DIE_WITH_PARENT); packs not yet started are not started. Their runs are reported paused."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.lock = threading.RLock()  # a second SIGTERM may run the handler again inside the first one
        self.packs: set[subprocess.Popen] = set()

    def __reduce__(self) -> tuple[type, tuple]:
        """A fresh one where Ray ships _execute by value (rl.grid run as __main__) to a worker: no stop requested,
        no pack of this process, and no lock to pickle."""
        return Stopping, ()

    def __call__(self, signum: int, _frame: object) -> None:
        self.requested.set()
        with self.lock:
            for proc in self.packs:  # a signal to the grid alone reaches its packs too
                proc.send_signal(signal.SIGTERM)

    def start(self, argv: list[str], **kwargs: object) -> subprocess.Popen | None:
        """Popen(argv), or None once a stop was requested."""
        with self.lock:
            if self.requested.is_set():
                return None
            proc = subprocess.Popen(argv, **kwargs)
            self.packs.add(proc)
            return proc

    def wait(self, proc: subprocess.Popen) -> int:
        """The pack's exit code; 0 for one that SIGTERM ended while the grid is stopping: before rl.workspace set
        its handler (starting up), it resumes from its newest checkpoint like a paused one."""
        code = proc.wait()
        with self.lock:
            self.packs.discard(proc)
        return 0 if code == -signal.SIGTERM and self.requested.is_set() else code


#: the packs this process runs; SIGTERM reaches them through it where rl.grid installed it as the handler
STOPPING = Stopping()


def _execute(
    cmd: list[str], run_dirs: list[str], cwd: str, gpu: int | None = None, env: dict[str, str] | None = None
) -> int:
    """Run one pack's command (this Python, `cmd` its arguments), its output appended to every run's stdout.log;
    once the grid is stopping (`Stopping`), start nothing and return 0 (its runs count as paused)."""
    paths = [Path(cwd) / d for d in run_dirs]
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
    env = dict(env or os.environ, **({"CUDA_VISIBLE_DEVICES": str(gpu)} if gpu is not None else {}))
    log_path = paths[0] / "stdout.log"
    with open(log_path, "ab") as log:
        start = log.tell()  # what the first run's log held before: its own history, not this pack's
        proc = STOPPING.start(
            [sys.executable, "-c", DIE_WITH_PARENT, *cmd], cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        if proc is None:
            return 0
        code = STOPPING.wait(proc)
    with open(log_path, "rb") as log:
        log.seek(start)
        output = log.read()
    for path in paths[1:]:  # every run folder keeps this pack's output (once)
        with open(path / "stdout.log", "ab") as log:
            log.write(output)
    return code


# -- the Ray backend ------------------------------------------------------------------------------------


def relative(path: Path | str) -> Path:
    """`path` as a path below a worker's root: relative paths stay, absolute ones lose their anchor."""
    path = Path(path)
    return Path(*path.parts[1:]) if path.is_absolute() else path


def _tar(path: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(path, arcname=".")
    return buf.getvalue()


def _newest_step(names) -> int:
    return max((int(m.group(1)) for n in names if (m := outcome.CHECKPOINT.search(str(n)))), default=-1)


def _untar(payload: bytes, path: Path, keep_newer: bool) -> None:
    """Replace folder `path` by the tar `payload`; with `keep_newer`, a folder holding a newer checkpoint
    (left by a killed attempt on this node) is kept."""
    with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
        names = tar.getnames()
        if keep_newer and path.is_dir() and _newest_step(p.name for p in path.iterdir()) > _newest_step(names):
            return
        fresh = path.with_name(path.name + ".incoming")
        shutil.rmtree(fresh, ignore_errors=True)
        tar.extractall(fresh, filter="data")
    shutil.rmtree(path, ignore_errors=True)
    fresh.rename(path)


def pack_inputs(cfg: GridConfig, pack: list[Run]) -> list[Path]:
    """Files the pack reads besides its run folders (frozen MultiMAE exports, saliency predictors) that exist here."""
    from rl.encoders import build_encoder, mmae_path
    from rl.observe import default_saliency_model

    found: dict[Path, None] = {}
    for run in pack:
        sac = run_config(cfg, run)
        if run.encoder.startswith("mmae"):
            found[mmae_path(sac)] = None
        try:
            needs_saliency = sac.saliency == "predictor" and "saliency" in build_encoder(sac).obs_keys
        except (FileNotFoundError, ValueError):
            needs_saliency = False
        if needs_saliency:
            found[Path(sac.saliency_model) if sac.saliency_model else default_saliency_model(run.task)] = None
    return [p for p in found if p.is_file()]


def _ray_pack(
    spec_name: str, spec: list[dict], storage: str, driver_cwd: str, scratch: str, uploads: dict[str, bytes]
) -> tuple[int, dict[str, bytes]]:
    """One pack as a Ray task. Its run folders live below the driver's folder (`shared`) or a node-local
    root (`driver`: `uploads` {relative path: file or tarred folder} land there first, and the run
    folders go back whole as tar bytes). Returns the exit code and {run folder: tar bytes}."""
    code_dir = os.getcwd()  # the runtime_env working_dir (or the driver's checkout)
    if storage == "shared":
        root = Path(driver_cwd)
        if not root.is_dir():
            raise FileNotFoundError(
                f"--storage shared: {root} is not mounted on node {socket.gethostname()}; "
                "mount it at the driver's path on every node or use --storage driver"
            )
    else:
        root = (
            Path(scratch or tempfile.gettempdir()) / "visarl-grid" / hashlib.sha1(driver_cwd.encode()).hexdigest()[:12]
        )
        for rel, payload in uploads.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if rel.endswith("/"):
                _untar(payload, target, keep_newer=True)
            elif not target.exists() or target.read_bytes() != payload:
                atomic_write_bytes(target, payload)  # a pack on this node may be reading the old copy
    run_dirs = [str(relative(item["out"])) if storage == "driver" else item["out"] for item in spec]
    spec = [{**item, "out": d} for item, d in zip(spec, run_dirs)]
    spec_path = atomic_write_json(root / (relative(spec_name) if storage == "driver" else spec_name), spec)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (code_dir, os.environ.get("PYTHONPATH", "")) if p))
    code = _execute(pack_command(spec_path), run_dirs, str(root), env=env)
    if storage == "shared":
        return code, {}
    folders = {d: _tar(root / d) for d in run_dirs}
    ended = all(outcome.is_finished(root / d, int(item.get("steps", 0))) for d, item in zip(run_dirs, spec))
    if code == 0 or ended:  # the driver gets them whole; a failed pack's stay for a retry on this node (one whose
        # runs all ended, a diverged one among them, has nothing left to retry)
        for d in run_dirs:
            shutil.rmtree(root / d, ignore_errors=True)
    return code, folders


def runtime_env(cfg: GridConfig) -> dict:
    """The Ray runtime_env of the workers: code (working_dir), Python packages (pip/conda), MUJOCO_GL."""
    env: dict = {"env_vars": {"MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}}
    if cfg.ray_working_dir == "none":
        env["env_vars"]["PYTHONPATH"] = str(CHECKOUT)
    elif cfg.ray_working_dir:
        env["working_dir"] = cfg.ray_working_dir
    else:
        env.update(working_dir=str(CHECKOUT), excludes=UPLOAD_EXCLUDES)
    if cfg.ray_pip:
        env["pip"] = cfg.ray_pip if cfg.ray_pip.endswith(".txt") else [p for p in cfg.ray_pip.split(",") if p]
    if cfg.ray_conda:
        env["conda"] = cfg.ray_conda
    return env


def pack_gpus(cfg: GridConfig, pack: list[Run], cluster_gpus: float) -> float:
    """GPUs a pack asks Ray for: --gpus-per-run, or its share of one GPU (GPU_PACK runs fill one)."""
    if cfg.gpus_per_run >= 0:
        return cfg.gpus_per_run
    return min(1.0, len(pack) / GPU_PACK) if cluster_gpus else 0.0


def _run_ray(cfg: GridConfig, packs: list[list[Run]], specs: list[Path], record) -> None:
    import ray

    remote = ray.remote(max_retries=cfg.retries, num_cpus=cfg.cpus_per_run)(_ray_pack)
    gpus = ray.cluster_resources().get("GPU", 0)
    driver_cwd = str(Path.cwd())
    refs = {}
    for pack, spec in zip(packs, specs):
        uploads = {}
        if cfg.storage == "driver":
            uploads = {str(relative(p)): p.read_bytes() for p in pack_inputs(cfg, pack)}
            uploads |= {f"{relative(r.run_dir)}/": _tar(r.run_dir) for r in pack if r.run_dir.is_dir()}
        ref = remote.options(num_gpus=pack_gpus(cfg, pack, gpus)).remote(
            str(spec), json.loads(spec.read_text()), cfg.storage, driver_cwd, cfg.scratch, uploads
        )
        refs[ref] = pack
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        pack = refs[ready[0]]
        try:
            code, folders = ray.get(ready[0])
        except (ray.exceptions.RayError, FileNotFoundError) as err:  # retries spent, or storage missing
            print(f"error: {pack[0].name}'s pack failed on Ray: {' '.join(str(err).split())[:500]}", flush=True)
            record(pack, -1)
            continue
        for run in pack:
            if str(relative(run.run_dir)) in folders:
                _untar(folders[str(relative(run.run_dir))], run.run_dir, keep_newer=False)
        record(pack, code)


def run_grid(cfg: GridConfig) -> dict[str, str]:
    """Execute the grid; returns {run name: 'skipped' | 'done' | 'paused' | 'failed (code N)'}."""
    cfg.validate()
    runs = plan(cfg)
    status = {
        r.name: "skipped" if finished_status(r) == "done" else f"skipped: {finished_status(r)}"
        for r in runs
        if is_finished(r, cfg.steps)
    }
    todo = [r for r in runs if r.name not in status]
    gpus = None
    if cfg.backend == "ray":
        try:
            import ray
        except ImportError as err:
            raise ValueError("--backend ray needs Ray: pip install 'visarl[cluster]'") from err
        if not cfg.ray_address and ray.is_initialized():  # the grid would use that instance, then shut it down
            raise ValueError(
                "--ray-address '' starts a Ray instance of its own, but this process is connected to Ray already: "
                "pass that instance's address (or 'auto')"
            )
        ray.init(  # "local": '' starts an instance of its own, never joins one RAY_ADDRESS or this machine names
            address=cfg.ray_address or "local",
            ignore_reinit_error=True,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env=runtime_env(cfg),
            **({} if cfg.ray_address else {"num_cpus": max(1, math.ceil(cfg.cpus_per_run * cfg.parallel))}),
        )
        gpus = ray.cluster_resources().get("GPU", 0) > 0
    packs = plan_packs(cfg, todo, gpus)
    check_memory(cfg, packs)
    print(
        f"grid: {len(runs)} runs, {len(status)} already finished, {len(todo)} to run in {len(packs)} pack(s) "
        f"({cfg.backend})",
        flush=True,
    )
    t0 = time.time()
    specs = [write_spec(cfg, p) for p in packs]

    def record(pack: list[Run], code: int) -> None:
        for run in pack:
            if is_finished(run, cfg.steps):  # a pack that lost a run to divergence exits 1; the rest finished
                status[run.name] = finished_status(run)
            elif code:
                status[run.name] = f"failed (code {code}, see {run.run_dir / 'stdout.log'})"
            else:  # a run paused by --max-minutes ends without its summary: the next grid resumes it
                status[run.name] = "paused"
            print(f"[{len(status)}/{len(runs)}] {run.name}: {status[run.name]} ({time.time() - t0:.0f} s)", flush=True)

    if cfg.backend == "local":
        import torch

        n_gpus, cwd = torch.cuda.device_count(), str(Path.cwd())
        installed = on_main_thread()
        previous = signal.signal(signal.SIGTERM, STOPPING) if installed else None
        try:
            with ThreadPoolExecutor(cfg.parallel) as pool:
                futures = {
                    pool.submit(
                        _execute, pack_command(spec), [str(r.run_dir) for r in p], cwd, i % n_gpus if n_gpus else None
                    ): p
                    for i, (spec, p) in enumerate(zip(specs, packs))
                }
                for fut in as_completed(futures):
                    record(futures[fut], fut.result())
        finally:
            if installed:  # None: the previous handler was not set from Python; the default stands for it
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
            stopped = STOPPING.requested.is_set()
            STOPPING.requested.clear()  # a later grid in this process starts its packs
        if stopped:
            print(
                "grid: stopped on SIGTERM; run it again to continue (each pack from its newest checkpoint)", flush=True
            )
    else:
        try:
            _run_ray(cfg, packs, specs, record)
        finally:
            if not cfg.ray_address:
                ray.shutdown()
    return status


def main(argv=None) -> None:
    cfg = parse_config(GridConfig, argv)
    with one_line_errors():
        status = run_grid(cfg)
    failed = [k for k, v in status.items() if v.startswith("failed")]
    paused = [k for k, v in status.items() if v == "paused"]
    diverged = [k for k, v in status.items() if v.startswith(("diverged", "skipped: diverged"))]
    print(
        f"grid finished: {len(status) - len(failed) - len(paused) - len(diverged)} ok, {len(diverged)} diverged "
        f"(final: counted as 0 success), {len(paused)} paused (run again to continue), {len(failed)} failed; "
        f"results under {cfg.out}"
    )
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
