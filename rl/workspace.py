"""The training loop of a pack: R independent SAC runs trained in lockstep by one process.

Each step, every run's envs step together (one vector env, worker processes across the cores),
saliency and frozen encoders run once on all frames (rl/observe.py), and one update of the packed
agent is one SAC update of every run (rl/agent.py). The update runs while the env workers render
the step (it samples transitions up to the previous step), so rendering and learning overlap. Each run stays a run: its own seed, env seeds,
exploration noise and replay indices (none depend on the runs beside it), its own folder with
config.json, metrics.csv, eval.csv, aux.csv (gaze), tb/ (TensorBoard), checkpoint-<step>.pt with
replay-<step>/ (resumable), agent.pt and summary.json. A stop during an evaluation waits for its round of
episodes (every env between episodes), leaves the episodes played in eval-partial.json and the pack goes on
from there when resumed: a 50-episode final evaluation is ~15 % of a CPU table run.

    python -m rl.workspace --spec pack.json [--resume auto]   # the runs of a pack (rl.grid writes these)

A pack resumes from the newest step at which every run has a checkpoint: checkpoints of a step
are written for all runs before the previous step's are deleted, so a kill at any moment leaves
a step that every run holds. A run that diverges (non-finite weights, losses or actions) stops at once, the
others go on; its summary.json records the outcome (rl/outcome.py) and `--resume auto` leaves it out from then on.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from common.cli import RESUME_HELP, OneLineParser, flat_dict, from_flat, one_line_errors, resume_mode, should_resume
from common.io import NonFiniteError, atomic_torch_save, atomic_write_json, nonfinite_tensors, safe_torch_load
from common.precision import resolve_precision
from common.progress import progress
from common.runs import MetricLogger, device_description, exclusive_run_dir, on_main_thread, prepare_run_dir
from rl.agent import SAC, GraphedUpdates, RunNoise
from rl.config import PACK_FIELDS, SACConfig
from rl.encoders import Encoder, build_encoder
from rl.envs import ACTION_DIM, EVAL_SEED_BASE, PIXEL_WORKER_BYTES, TRAIN_SEED_STRIDE, make_envs
from rl.observe import Observer, renders
from rl.outcome import DIVERGED, SUMMARY, checkpoint_steps, divergence, read_summary
from rl.provenance import INPUTS_KEY, run_inputs
from rl.replay import ReplayBuffer, check_host_memory, remove_replays_except

LOG_KEYS = ("critic_loss", "actor_loss", "alpha_loss", "q_mean", "entropy")
#: a run's evaluation stopped between rounds: its step, length, rounds played and their episodes' outcomes
PARTIAL_EVAL = "eval-partial.json"


def resolve_device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


#: private RAM of a pack's own process before its buffers fill: torch and the env libraries imported (~320 MB
#: Private_Dirty in /proc/<pid>/smaps_rollup after `import rl.workspace`), its networks, optimisers and a
#: frozen encoder (tens of MB), the allocator's slack
PACK_PROCESS_BYTES = 400 << 20


def host_bytes(cfg: SACConfig, fields: dict, encoder: Encoder, runs: int, replay_on_host: bool = True) -> int:
    """Host RAM a pack of `runs` runs of `cfg` holds by its last step: its own process, the CPU replay of
    `fields` (filled as it runs; none when it lives on a GPU), the encoder's (one run's, `runs` times) own
    buffers, and the pixel env workers of training and of an evaluation at once (state-only envs step in-process)."""
    replay = ReplayBuffer.bytes_needed(
        fields, ACTION_DIM, cfg.replay_size, runs, cfg.num_envs, cfg.steps, cfg.env.max_episode_steps
    ) * int(replay_on_host)
    workers = runs * (cfg.num_envs + cfg.eval_envs_per_run) if renders(encoder.obs_keys) else 0
    return PACK_PROCESS_BYTES + replay + runs * encoder.host_memory(cfg.steps) + workers * PIXEL_WORKER_BYTES


def pack_key(cfg: SACConfig, encoder: Encoder) -> tuple:
    """Runs with equal keys can train in one pack: same settings apart from seed, folder and the
    encoder of the same kind (networks of equal shapes)."""
    shared = {k: v for k, v in flat_dict(cfg).items() if k not in PACK_FIELDS}
    return (encoder.pack_signature(), json.dumps(shared, sort_keys=True, default=str))


# -- checkpoints ---------------------------------------------------------------------------------------


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / f"checkpoint-{step:09d}.pt"


def latest_checkpoint(run_dir: Path) -> Path | None:
    steps = checkpoint_steps(run_dir)
    return checkpoint_path(run_dir, steps[-1]) if steps else None


def step_success(info: dict[str, Any], done: np.ndarray) -> np.ndarray:
    """info["success"] of the step just taken (for ended episodes it sits in final_info)."""
    success = np.asarray(info.get("success", np.zeros(len(done))), np.float64).copy()
    if done.any() and "final_info" in info:
        final = info["final_info"]
        success = np.where(final.get("_success", done), np.asarray(final.get("success", success), np.float64), success)
    return success


class Pack:
    """The runs of one process: configs, folders, networks, replay, envs and per-run bookkeeping."""

    def __init__(self, cfgs: list[SACConfig]):
        if not cfgs:
            raise ValueError("a pack needs at least one run")
        for cfg in cfgs:
            cfg.validate()
        self.cfgs, self.cfg, self.runs = cfgs, cfgs[0], len(cfgs)
        dirs = [c.run_dir() for c in cfgs]
        if len(set(dirs)) != len(dirs):
            raise ValueError(f"runs of a pack need distinct folders, got {[str(d) for d in dirs]}")
        self.run_dirs = dirs
        for cfg, run_dir in zip(cfgs, dirs):
            refuse_diverged(run_dir, cfg.resume)
        if self.cfg.torch_threads:
            torch.set_num_threads(self.cfg.torch_threads)
        self.device = resolve_device(self.cfg.device)
        requested = self.cfg.precision  # the saliency predictor resolves `auto` by its own rule
        for cfg in cfgs:  # config.json records what ran: bf16 or fp32
            cfg.precision = resolve_precision(cfg.precision, self.device)
        self.precision = self.cfg.precision
        self.envs_per_run = self.cfg.num_envs
        self.states = self._load_checkpoints()

        # every run initialised alone under its own seed, then stacked
        singles: list[tuple[Encoder, SAC]] = []
        for cfg in cfgs:
            torch.manual_seed(cfg.seed)
            enc = build_encoder(cfg, cfg.env.image_size, runs=1)
            singles.append((enc, SAC(None if enc.frozen else enc, enc.out_dim, ACTION_DIM, cfg, runs=1)))
        keys = {pack_key(c, e) for c, (e, _) in zip(cfgs, singles)}
        if len(keys) > 1:
            raise ValueError(
                "these runs cannot share a pack (encoders of different kinds or other settings differ); "
                "rl.grid splits such runs into separate packs"
            )
        frozen = singles[0][0].frozen
        self.encoder = (
            None if frozen else build_encoder(self.cfg, self.cfg.env.image_size, runs=self.runs).to(self.device)
        )
        self.agent = SAC(
            self.encoder, singles[0][0].out_dim, ACTION_DIM, self.cfg, runs=self.runs, precision=self.precision
        )
        self.agent.load_run_states([a.run_state(0) for _, a in singles])
        self.agent.to(self.device)
        if self.encoder is not None:
            self.encoder.load_extra_state([e.extra_state(0) for e, _ in singles])
        obs_keys = tuple(dict.fromkeys(k for e, _ in singles for k in e.obs_keys))
        self.observer = Observer(
            obs_keys,
            [e if e.frozen else None for e, _ in singles],
            self.cfg,
            self.device,
            self.envs_per_run,
            requested,
            readers=[e.obs_keys for e, _ in singles],
        )
        self.inputs = [run_inputs(self.observer, r) for r in range(self.runs)]  # the files each run loaded
        specs = self.observer.specs(self.cfg.env.image_size)
        storage = "cpu"
        if self.device.type == "cuda":  # on the device where it fits (embeddings, states), beside half the free memory
            need = ReplayBuffer.bytes_needed(specs, ACTION_DIM, self.cfg.replay_size, self.runs)
            storage = self.device if need < 0.5 * torch.cuda.mem_get_info(self.device)[0] else "cpu"
        # a replay on the GPU still leaves the env workers and the encoder's buffers on the host
        check_host_memory(
            host_bytes(self.cfg, specs, singles[0][0], self.runs, replay_on_host=storage == "cpu"),
            f"this pack of {self.runs} run(s) of {self.cfg.steps:,} steps (--replay-size {self.cfg.replay_size:,})",
            "lower --replay-size or --eval-envs, or run fewer runs per pack (rl.grid --pack)",
        )
        self.buffer = ReplayBuffer(
            specs, ACTION_DIM, self.cfg.replay_size, self.envs_per_run, seeds=[c.seed for c in cfgs], storage=storage
        )
        self.action_rngs = [np.random.default_rng([c.seed, 2]) for c in cfgs]
        self.noise = RunNoise([c.seed for c in cfgs])
        self.step, self.episodes, self.wall_before = 0, [0] * self.runs, [0.0] * self.runs
        #: per run, (returns, successes) of the episodes ended since the last metrics row, as checkpointed
        self.unlogged: list[tuple[list[float], list[float]]] = [([], []) for _ in range(self.runs)]
        if self.states is not None:
            self._restore()
        self.partial_evals = self._load_partial_evals()
        self.diverged: dict[int, str] = {}  # run -> why it stopped; it is never checkpointed again
        self.started = time.time()

    # -- outcome ---------------------------------------------------------------------------------
    def summary(self, run: int, wall: float, result: dict[str, Any]) -> dict[str, Any]:
        """summary.json of run `run` at the pack's step: `wall` seconds of this process (wall_time_s: of every
        process that ran it, its evaluations included), its final evaluation."""
        c, run_wall = self.cfgs[run], self.wall_before[run] + wall
        return {
            "task": c.env.task,
            "encoder": c.encoder,
            "seed": c.seed,
            "steps": self.step,
            "preset": c.preset,
            "success_rate": result["success_rate"],
            "return_mean": result["return_mean"],
            "eval_episodes": result["episodes"],
            "wall_time_s": round(run_wall, 1),
            "steps_per_s": round(self.step / max(run_wall, 1e-9), 2),
            "device": device_description(),
            "saliency": self.observer.saliency_model if "saliency" in self.observer.readers[run] else "",
            "hidden_dim": c.hidden_dim,
            "num_envs": c.num_envs,
            "pack": self.runs,
            "precision": c.precision,
            INPUTS_KEY: self.inputs[run],
        }

    def mark_diverged(self, run: int, why: str) -> None:
        """Stop run `run` (the others go on): no more logs or checkpoints, its last good checkpoint kept, and its
        outcome recorded at once (rl.outcome: a summary.json with success 0 and "diverged")."""
        if run in self.diverged:
            return
        kept = checkpoint_steps(self.run_dirs[run])
        self.diverged[run] = f"{self.run_dirs[run]}: {why}; its last good checkpoint is kept"
        tqdm.write(f"error: {self.diverged[run]}", file=sys.stderr)
        summary = self.summary(
            run, time.time() - self.started, {"success_rate": 0.0, "return_mean": None, "episodes": 0}
        )
        summary[DIVERGED] = {
            "step": self.step,
            "why": why,
            "checkpoint": kept[-1] if kept else None,
            "budget": self.cfgs[run].steps,  # the steps it was asked for (a report counts it to its row's budget)
        }
        atomic_write_json(self.run_dirs[run] / SUMMARY, summary)

    def packed_update(self) -> Callable[..., dict[str, float]]:
        """The packed SAC update as the pack's loop runs it: CUDA-graphed where it can be, else eager."""
        encoder = self.encoder
        graphed = self.device.type == "cuda" and self.cfg.cuda_graphs and (encoder is None or encoder.graph_safe)
        return GraphedUpdates(self.agent) if graphed else self.agent.update

    def checked_actions(self, action: np.ndarray, step: int) -> np.ndarray:
        """`action` [R * N, A] with a run whose actions are NaN/inf marked diverged and every diverged run's zeroed.

        Detected here, on the host copy the env needs anyway, a diverged run stops at once rather than
        at the next log, and MuJoCo never receives a non-finite control (it warns and resets the
        simulation) while the pack's other runs go on.
        """
        per_run = action.reshape(self.runs, -1)  # [R, N * A], a view: zeroing writes into `action`
        for r in np.flatnonzero(~np.isfinite(per_run).all(1)):
            self.mark_diverged(int(r), f"non-finite action at step {step}")
        if self.diverged:
            per_run[sorted(self.diverged)] = 0.0
        return action

    # -- resume ----------------------------------------------------------------------------------
    def _load_checkpoints(self) -> list[dict[str, Any]] | None:
        """Every run's checkpoint at the newest step they all hold (None: a fresh start)."""
        have = []
        for cfg, run_dir in zip(self.cfgs, self.run_dirs):
            if not cfg.resume and (run_dir / "config.json").exists():
                raise ValueError(
                    f"{run_dir} already holds a run; pass --resume (or --resume auto) to continue it or choose another --out"
                )
            have.append(set(checkpoint_steps(run_dir)) if cfg.resume else set())
        if not any(have):
            for cfg, run_dir in zip(self.cfgs, self.run_dirs):  # bare --resume needs a checkpoint
                should_resume(cfg.resume, False, run_dir / "checkpoint-*.pt")
            return None
        common = set.intersection(*have)
        if not common and all(c.resume == "auto" for c in self.cfgs) and not all(have):
            # killed while the first checkpoints were written: 'auto' starts the pack over
            print("note: no checkpoint step held by every run of the pack; starting over", flush=True)
            return None
        if not common:
            raise ValueError(
                "these runs hold no checkpoint at a common step ("
                + "; ".join(f"{d}: {sorted(h) or 'none'}" for d, h in zip(self.run_dirs, have))
                + "); resume them in separate packs (rl.grid --pack 1)"
            )
        step = max(common)
        states = []
        for cfg, run_dir in zip(self.cfgs, self.run_dirs):
            path = checkpoint_path(run_dir, step)
            state = safe_torch_load(path, what="SAC checkpoint")
            diffs = cfg.differences(state["config"])
            if diffs:
                raise ValueError(f"{path} was trained with another config; differences: " + "; ".join(diffs))
            states.append(state)
        return states

    def _restore(self) -> None:
        states = self.states
        self.agent.load_run_states([s["agent"] for s in states])
        if self.encoder is not None:
            self.encoder.load_extra_state([s["encoder_extra"] for s in states])
        for r, (s, run_dir) in enumerate(zip(states, self.run_dirs)):
            self.buffer.load_run(r, run_dir / s["replay"]["dir"], s["replay"])
            self.action_rngs[r].bit_generator.state = s["rng_numpy"]
        self.noise.load([s["noise"] for s in states])
        self.step = int(states[0]["step"])
        self.episodes = [int(s["episodes"]) for s in states]
        self.wall_before = [float(s["wall_s"]) for s in states]
        self.unlogged = [(list(s.get("unlogged_returns", [])), list(s.get("unlogged_successes", []))) for s in states]

    def _load_partial_evals(self) -> list[dict[str, Any] | None]:
        """Each run's evaluation stopped at this very step (its eval-partial.json), whose seconds that no checkpoint
        counts join the run's wall time; one of another step is deleted (an older checkpoint was resumed, or the
        run started over: its policy is not the one evaluated)."""
        partials: list[dict[str, Any] | None] = []
        for r, run_dir in enumerate(self.run_dirs):
            path = run_dir / PARTIAL_EVAL
            partial = json.loads(path.read_text()) if path.exists() else None
            if partial is not None and partial.get("step") != self.step:
                path.unlink()
                partial = None
            if partial is not None:
                self.wall_before[r] += partial["uncounted_s"]
            partials.append(partial)
        return partials

    def pending_eval(self) -> tuple[int, list[int]]:
        """(episodes, runs) of an evaluation of this step a stop interrupted ((0, []): none). A pack regrouped since
        can hold runs that finished theirs: they play along, unlogged."""
        runs = [r for r, p in enumerate(self.partial_evals) if p]
        return max((self.partial_evals[r]["episodes"] for r in runs), default=0), runs

    def clear_partial_evals(self) -> None:
        """The evaluation of this step is logged: its partial records go."""
        for run_dir in self.run_dirs:
            (run_dir / PARTIAL_EVAL).unlink(missing_ok=True)
        self.partial_evals = [None] * self.runs

    def save_checkpoints(self, wall: float, unlogged: Sequence[tuple[list[float], list[float]]] | None = None) -> int:
        """checkpoint-<step>.pt + replay-<step>/ for every live run, then older ones removed; returns bytes written.
        `unlogged`: per run, the episodes ended since the last metrics row (a resumed run logs them in its next
        row, as the run would have without the kill)."""
        unlogged = unlogged or [([], [])] * self.runs
        total, learned = 0, {}
        for r in range(self.runs):  # a run that diverged since the last log is caught before anything is written
            if r not in self.diverged:
                learned[r] = {
                    "agent": self.agent.run_state(r),
                    "encoder_extra": self.encoder.extra_state(r) if self.encoder is not None else {},
                }
                if bad := nonfinite_tensors(learned[r]):
                    self.mark_diverged(r, f"non-finite weights at step {self.step} ({', '.join(bad[:2])})")
        live = [r for r in range(self.runs) if r not in self.diverged]
        for r in live:
            run_dir, name = self.run_dirs[r], f"replay-{self.step:09d}"
            if checkpoint_path(run_dir, self.step).exists():  # resumed at this very step: it holds this state already
                continue
            replay = self.buffer.save_run(r, run_dir / name)
            state = {
                "config": flat_dict(self.cfgs[r]),
                "step": self.step,
                "episodes": self.episodes[r],
                "wall_s": self.wall_before[r] + wall,
                "unlogged_returns": [float(x) for x in unlogged[r][0]],
                "unlogged_successes": [float(x) for x in unlogged[r][1]],
                **learned[r],
                "replay": {**replay, "dir": name},
                "rng_numpy": self.action_rngs[r].bit_generator.state,
                "noise": self.noise.state(r),
            }
            path = atomic_torch_save(state, checkpoint_path(run_dir, self.step))
            total += replay["bytes"] + path.stat().st_size
        for r in live:  # only once every run holds this step
            for old in checkpoint_steps(self.run_dirs[r]):
                if old != self.step:
                    checkpoint_path(self.run_dirs[r], old).unlink(missing_ok=True)
            remove_replays_except(self.run_dirs[r], f"replay-{self.step:09d}")  # orphans of a cut-off save too
        return total

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, episodes: int, stop: Callable[[], bool] | None = None) -> list[dict[str, float]] | None:
        """`episodes` episodes of each run's deterministic policy on fixed evaluation seeds.

        Success = any success within the episode. The seeds never overlap training seeds and are the
        same at every evaluation, so curves compare policies rather than draws of goals.

        `stop` is asked between rounds (every env between episodes): once it says so, each run's episodes so
        far go to its eval-partial.json and None is returned. An evaluation of as many episodes at this step
        (after a resume from this step's checkpoint) goes on from them: episode k's seed is a function of k, so
        the rounds left are the ones an uninterrupted evaluation would have played.
        """
        cfg = self.cfg
        per_run = cfg.eval_envs_for(episodes)
        carried = [
            p if p and (p["step"], p["episodes"], p["per_run"]) == (self.step, episodes, per_run) else None
            for p in self.partial_evals
        ]
        rounds = [p["rounds"] if p else 0 for p in carried]
        envs = make_envs(
            cfg.env,
            per_run,
            pixels=self.observer.pixels,
            oracle_saliency=self.observer.oracle,
            seed_bases=[EVAL_SEED_BASE + c.seed * TRAIN_SEED_STRIDE for c in self.cfgs],
            first_episodes=rounds,
        )
        start = time.time()
        run_of_row = np.repeat(np.arange(self.runs), per_run)
        if self.encoder is not None:
            self.encoder.eval()
        try:
            raw, _ = envs.reset()
            episode = np.concatenate([np.arange(per_run) + k * per_run for k in rounds])  # each env's next episode
            ret, succ = np.zeros(len(run_of_row)), np.zeros(len(run_of_row))
            returns: list[list[float]] = [list(p["returns"]) if p else [] for p in carried]
            successes: list[list[float]] = [list(p["successes"]) if p else [] for p in carried]
            between_rounds = True
            while min(len(s) for s in successes) < episodes:
                if between_rounds and stop is not None and stop():
                    self._save_partial_evals(
                        episodes, per_run, episode[::per_run] // per_run, returns, successes, carried, start
                    )
                    return None
                stored = self.observer.store(self.observer.fields(raw, run_of_row), run_of_row)
                action = self.agent.act(self.observer.per_run(stored, per_run)).flatten(0, 1).cpu().numpy()
                raw, reward, term, trunc, info = envs.step(self.checked_actions(action, self.step))
                done = term | trunc
                ret += reward
                succ = np.maximum(succ, step_success(info, done))
                for i in np.flatnonzero(done):
                    r = run_of_row[i]
                    if episode[i] < episodes:
                        returns[r].append(ret[i])
                        successes[r].append(succ[i])
                    episode[i] += per_run
                    ret[i] = succ[i] = 0.0
                between_rounds = bool(done.all())  # Meta-World episodes all run to the time limit
        finally:
            envs.close()
            if self.encoder is not None:
                self.encoder.train()
        took = time.time() - start
        return [
            {
                "success_rate": float(np.mean(s)),
                "return_mean": float(np.mean(r)),
                "return_std": float(np.std(r)),
                "episodes": len(r),
                "eval_s": round(took + (p["seconds"] if p else 0.0), 2),
            }
            for r, s, p in zip(returns, successes, carried)
        ]

    def _save_partial_evals(
        self,
        episodes: int,
        per_run: int,
        rounds: np.ndarray,
        returns: list[list[float]],
        successes: list[list[float]],
        carried: list[dict[str, Any] | None],
        start: float,
    ) -> None:
        """Each live run's stopped evaluation as its eval-partial.json. Its seconds count in the run's wall time
        through the checkpoint the pause writes next, unless this step's checkpoint exists already (the final
        evaluation's, or a resumed one's): then they are carried as "uncounted_s", with those carried before."""
        took = time.time() - start
        for r, run_dir in enumerate(self.run_dirs):
            if r in self.diverged:
                continue
            before = self.partial_evals[r] or {}  # its uncounted seconds joined the wall time at load, whatever it was
            seconds = took + (carried[r] or {}).get("seconds", 0.0)  # the rounds it goes on from: theirs
            counted = not checkpoint_path(run_dir, self.step).exists()
            self.partial_evals[r] = {
                "step": self.step,
                "episodes": episodes,
                "per_run": per_run,
                "rounds": int(rounds[r]),
                "returns": [float(x) for x in returns[r]],
                "successes": [float(x) for x in successes[r]],
                "seconds": round(seconds, 2),
                "uncounted_s": 0.0 if counted else round(took + before.get("uncounted_s", 0.0), 2),
            }
            atomic_write_json(run_dir / PARTIAL_EVAL, self.partial_evals[r])


def train(cfgs: list[SACConfig]) -> list[Path]:
    """Train (or resume) the runs of one pack in lockstep; returns their run folders."""
    cfgs = live_runs(cfgs)
    if not cfgs:
        return []
    with contextlib.ExitStack() as held:  # no other process trains into these folders meanwhile
        for c in cfgs:
            held.enter_context(exclusive_run_dir(c.run_dir()))
        return _train(cfgs)


def _train(cfgs: list[SACConfig]) -> list[Path]:
    return PackTraining(Pack(cfgs)).run()


class Every:
    """Due once the step reaches the next multiple of `every` (DrQ-v2's `Every`); steps advance by the envs
    per run, so a multiple can be passed rather than hit. `every` 0: never due."""

    def __init__(self, every: int, step: int):
        self.every = every
        self.take(step)

    def due(self, step: int) -> bool:
        return step >= self.next

    def take(self, step: int) -> None:
        """Done at `step`: due again at the next multiple after it."""
        self.next = (step // self.every + 1) * self.every if self.every else math.inf


class Episodes:
    """Each env's running episode (return, success, length) and the episodes each run finished since the last log."""

    def __init__(self, run_of_row: np.ndarray, runs: int):
        self.run_of_row, self.runs = run_of_row, runs
        n = len(run_of_row)
        self.ret, self.success, self.length = np.zeros(n), np.zeros(n), np.zeros(n, np.int64)
        self.returns: list[list[float]] = [[] for _ in range(runs)]
        self.successes: list[list[float]] = [[] for _ in range(runs)]

    @property
    def at_boundary(self) -> bool:
        """No env is inside an episode: the moment a checkpoint resumes exactly."""
        return not self.length.any()

    def record(self, reward: np.ndarray, info: dict[str, Any], done: np.ndarray) -> list[int]:
        """Add one vector step; returns the runs whose episodes ended (one entry per ended env)."""
        self.ret += reward
        self.length += 1
        self.success = np.maximum(self.success, step_success(info, done))
        ended = []
        for i in np.flatnonzero(done):
            r = int(self.run_of_row[i])
            self.returns[r].append(self.ret[i])
            self.successes[r].append(self.success[i])
            self.ret[i] = self.success[i] = self.length[i] = 0
            ended.append(r)
        return ended

    def unlogged(self) -> list[tuple[list[float], list[float]]]:
        """Per run, (returns, successes) of the episodes ended since the last drain, kept."""
        return list(zip(self.returns, self.successes))

    def drain(self) -> tuple[list[list[float]], list[list[float]]]:
        """(returns, successes) per run of the episodes ended since the last drain, then forgets them."""
        out = self.returns, self.successes
        self.returns, self.successes = [[] for _ in range(self.runs)], [[] for _ in range(self.runs)]
        return out


class PackTraining:
    """The training loop of a pack, DrQ-v2's loop in named steps: act, step the envs (the agent updates while
    they render), then the scheduled log, evaluation and checkpoint; a pause (SIGTERM, --max-minutes) or the
    end writes what a run leaves behind."""

    def __init__(self, pack: Pack):
        self.pack, self.cfg = pack, pack.cfg
        cfg = pack.cfg
        self.resumed = pack.states is not None
        self.update = pack.packed_update()
        for c, run_dir, inputs in zip(pack.cfgs, pack.run_dirs, pack.inputs):
            prepare_run_dir(run_dir, {**flat_dict(c), INPUTS_KEY: inputs}, resume=c.resume)
        self.metrics_logs = [MetricLogger(d, "metrics") for d in pack.run_dirs]
        self.eval_logs = [
            MetricLogger(d, "eval") for d in pack.run_dirs
        ]  # success, return, eval time in TensorBoard too
        self.aux_logs: list[MetricLogger | None] = [
            MetricLogger(d, "aux") if (d / "aux.csv").exists() else None for d in pack.run_dirs
        ]
        for r in range(pack.runs):  # each run's clock goes on from its checkpoint's wall time
            for log in (self.metrics_logs[r], self.eval_logs[r], self.aux_logs[r]):
                if log is not None:
                    # a stopped evaluation of this step is logged when it ends: a row of it is a kill's leftover
                    pending = log is self.eval_logs[r] and pack.partial_evals[r] is not None
                    log.truncate_after(pack.step - pending if self.resumed else -1, pack.wall_before[r])
        self.run_of_row = np.repeat(np.arange(pack.runs), pack.envs_per_run)
        self.episodes = Episodes(self.run_of_row, pack.runs)
        self.episodes.returns = [list(returns) for returns, _ in pack.unlogged]
        self.episodes.successes = [list(successes) for _, successes in pack.unlogged]
        self.log_every = Every(cfg.log_every, pack.step)
        self.eval_every = Every(cfg.eval_every, pack.step)
        self.checkpoint_every = Every(cfg.checkpoint_every, pack.step)
        self.last_update: dict[str, torch.Tensor] = {}  # the newest update's metrics [R] per name
        self.aux: list[dict[str, float]] = []  # the newest auxiliary (gaze) metrics, one dict per run
        self.last_success = math.nan
        self.stop_signal: list[str] = []  # SIGTERM (a scheduler's or Ray's notice) pauses like --max-minutes
        self.steps_at_log = pack.step

    def logs(self) -> list[MetricLogger]:
        return [log for log in (*self.metrics_logs, *self.eval_logs, *self.aux_logs) if log is not None]

    @property
    def all_diverged(self) -> bool:
        return len(self.pack.diverged) == self.pack.runs

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> list[Path]:
        pack, cfg = self.pack, self.cfg
        names = ", ".join(f"{c.encoder}/seed{c.seed}" for c in pack.cfgs)
        print(
            f"SAC pack of {pack.runs} on {cfg.env.task} ({names}), {device_description()}, {pack.precision}, "
            f"replay on {pack.buffer.storage}" + (f" (resumed at step {pack.step})" if self.resumed else ""),
            flush=True,
        )
        self.envs = make_envs(
            cfg.env,
            pack.envs_per_run,
            pixels=pack.observer.pixels,
            oracle_saliency=pack.observer.oracle,
            seed_bases=[c.seed * TRAIN_SEED_STRIDE for c in pack.cfgs],
            first_episodes=[e // pack.envs_per_run for e in pack.episodes],
        )
        raw, _ = self.envs.reset()
        self.obs, self.stored = pack.observer.observe(raw, self.run_of_row)
        pack.buffer.start(self.stored)
        self.t0 = self.t_log = self.last_checkpoint = time.time()
        previous_handler = (
            signal.signal(signal.SIGTERM, lambda signum, _: self.stop_signal.append(signal.Signals(signum).name))
            if on_main_thread()
            else None
        )
        self.bar = progress(
            total=cfg.steps * pack.runs,
            initial=pack.step * pack.runs,
            unit="env-step",
            unit_scale=True,
            dynamic_ncols=True,
            desc=f"pack of {pack.runs} {cfg.encoder}",
            disable=None,
            file=sys.stdout,
        )
        paused = False
        try:  # a stop is heard until the end: the last evaluation pauses between its rounds too
            try:
                episodes, runs = pack.pending_eval()
                if episodes and pack.step < cfg.steps:  # this step's stopped evaluation goes on first
                    paused = self.evaluate(episodes, runs) is None
                while not paused and pack.step < cfg.steps:
                    action = self.act()
                    if self.all_diverged:
                        break
                    self.step_envs(action)
                    if self.log_every.due(pack.step):
                        self.log()
                        if self.all_diverged:
                            break
                    if self.eval_every.due(pack.step) and pack.step < cfg.steps:
                        self.evaluate(cfg.eval_episodes)  # None: stopped, so the checkpoint below pauses
                    paused = self.maybe_checkpoint()
            finally:
                self.envs.close()
                self.bar.close()
            return self.pause() if paused else self.finish()
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)

    def act(self) -> np.ndarray:
        """Actions [R * E, A]: uniform random during the random steps, else each run's policy with its own noise."""
        pack = self.pack
        if pack.step < self.cfg.random_steps:
            return np.concatenate(
                [rng.uniform(-1.0, 1.0, (pack.envs_per_run, ACTION_DIM)).astype(np.float32) for rng in pack.action_rngs]
            )
        noise = pack.noise.normal(pack.envs_per_run, ACTION_DIM, device=pack.device)
        action = pack.agent.act(pack.observer.per_run(self.stored), noise).flatten(0, 1).cpu().numpy()
        return pack.checked_actions(action, pack.step)

    def step_envs(self, action: np.ndarray) -> None:
        """One vector-env step of every run; the agent's updates run while the env workers render it."""
        pack, R, E = self.pack, self.pack.runs, self.pack.envs_per_run
        learning = pack.step >= self.cfg.random_steps
        overlapped = hasattr(self.envs, "step_async")
        if overlapped:
            self.envs.step_async(action)
        if learning:  # E updates per env step of every run, from transitions up to the previous step
            for _ in range(E):
                self.update_agent()
        raw, reward, term, trunc, info = self.envs.step_wait() if overlapped else self.envs.step(action)
        done = term | trunc
        next_obs, next_stored = pack.observer.observe(raw, self.run_of_row)
        pack.buffer.add(
            action,
            reward,
            term,
            next_stored,
            done,
            pack.observer.final_stored(info, done, next_stored, self.run_of_row),
        )
        if pack.encoder is not None:
            pack.encoder.on_env_step(pack.observer.per_run(self.obs), reward.reshape(R, E), done.reshape(R, E))
        pack.step += E
        self.bar.update(R * E)
        for r in self.episodes.record(reward, info, done):
            pack.episodes[r] += 1
        self.obs, self.stored = next_obs, next_stored

    def update_agent(self) -> None:
        """One SAC update of every run (and the encoder's own auxiliary step, e.g. gaze's contrastive one)."""
        pack, cfg = self.pack, self.cfg
        noise = pack.noise.normal(2, cfg.batch_size, ACTION_DIM, device=pack.device).transpose(0, 1)
        self.last_update.update(self.update(pack.buffer.sample(cfg.batch_size, pack.device), noise))
        if pack.encoder is not None:
            with pack.agent.autocast():
                self.aux = pack.encoder.auxiliary_update(pack.agent.num_updates) or self.aux

    def log(self) -> None:
        """A metrics row per live run; a run whose temperature or critic loss is non-finite stops here."""
        pack, step = self.pack, self.pack.step
        now = time.time()
        sps = (step - self.steps_at_log) * pack.runs / max(now - self.t_log, 1e-9)
        values = {k: v.float().cpu().tolist() for k, v in self.last_update.items()}
        alpha = pack.agent.log_alpha.detach().exp().cpu().tolist()
        returns, successes = self.episodes.drain()
        for r in range(pack.runs):
            if r in pack.diverged:
                continue
            row = {
                "episodes": pack.episodes[r],
                "episode_return": float(np.mean(returns[r])) if returns[r] else math.nan,
                "episode_success": float(np.mean(successes[r])) if successes[r] else math.nan,
                "steps_per_s": round(sps / pack.runs, 2),
                "pack_steps_per_s": round(sps, 2),
                "updates": pack.agent.num_updates,
                "alpha": alpha[r],
                **{k: values[k][r] if k in values else math.nan for k in LOG_KEYS},
            }
            if not (math.isfinite(row["alpha"]) and ("critic_loss" not in values or math.isfinite(row["critic_loss"]))):
                pack.mark_diverged(
                    r, f"non-finite loss at step {step} (critic loss {row['critic_loss']}, alpha {row['alpha']})"
                )
                continue
            self.metrics_logs[r].log(step, **row)
            if self.aux:  # auxiliary losses of encoders with their own learning signal (gaze)
                self.aux_logs[r] = self.aux_logs[r] or MetricLogger(pack.run_dirs[r], "aux")
                self.aux_logs[r].log(step, **{k: float(v) for k, v in self.aux[r].items()})
        done_success = [s for r in range(pack.runs) for s in successes[r]]
        if done_success:
            self.last_success = float(np.mean(done_success))
        self.bar.set_postfix({"env-steps/s": f"{sps:.0f}", "success": f"{self.last_success:.2f}"}, refresh=False)
        self.t_log, self.steps_at_log = now, step
        self.log_every.take(step)

    def evaluate(self, episodes: int, runs: Sequence[int] | None = None) -> list[dict[str, float]] | None:
        """Evaluate every run on `episodes` episodes (rl.workspace.Pack.evaluate), log it for `runs` (default: all)
        and say it. None when a stop (SIGTERM, --max-minutes) came between its rounds: a stop is heard there only
        at an episode boundary of training, where the pause's checkpoint (or this step's, there already) resumes it."""
        pack = self.pack
        results = pack.evaluate(episodes, self.out_of_time if self.episodes.at_boundary else None)
        if results is None:
            tqdm.write(f"step {pack.step}: evaluation stopped between rounds, to go on when resumed", file=sys.stdout)
            return None
        live = [r for r in (range(pack.runs) if runs is None else runs) if r not in pack.diverged]
        for r in live:  # in place of a row of this step a kill left (before summary.json: finish() evaluates anew)
            self.eval_logs[r].log_replacing(pack.step, **results[r])
        pack.clear_partial_evals()
        tqdm.write(
            f"step {pack.step}: eval success "
            + " ".join("-" if r in pack.diverged else f"{res['success_rate']:.2f}" for r, res in enumerate(results))
            + f" ({results[0]['episodes']} episodes per run, {results[0]['eval_s']} s)",
            file=sys.stdout,
        )
        if live:
            self.last_success = float(np.mean([results[r]["success_rate"] for r in live]))
        self.eval_every.take(pack.step)
        return results

    def out_of_time(self) -> bool:
        return bool(self.stop_signal) or bool(
            self.cfg.max_minutes and time.time() - self.t0 >= 60 * self.cfg.max_minutes
        )

    def maybe_checkpoint(self) -> bool:
        """Checkpoints when due or out of time, only at an episode boundary (exact resume); True: pause now."""
        pack = self.pack
        out_of_time = self.out_of_time()
        minutes = self.cfg.checkpoint_minutes
        overdue = bool(minutes) and time.time() - self.last_checkpoint >= 60 * minutes
        if not (self.checkpoint_every.due(pack.step) or overdue or out_of_time) or not self.episodes.at_boundary:
            return False
        size = pack.save_checkpoints(time.time() - self.t0, self.episodes.unlogged())
        tqdm.write(f"step {pack.step}: checkpoints written, {size / 2**20:.1f} MiB", file=sys.stdout)
        self.checkpoint_every.take(pack.step)
        self.last_checkpoint = time.time()
        return out_of_time and pack.step < self.cfg.steps

    # -- the ends --------------------------------------------------------------------------------
    def pause(self) -> list[Path]:
        for log in self.logs():
            log.close()
        wall = time.time() - self.t0
        why = f"on {self.stop_signal[0]}" if self.stop_signal else f"(--max-minutes {self.cfg.max_minutes:g})"
        print(
            f"paused at step {self.pack.step} of {self.cfg.steps} after {wall / 60:.1f} min {why}; "
            "checkpoints written: run again with --resume (or --resume auto) to continue",
            flush=True,
        )
        return self.pack.run_dirs

    def finish(self) -> list[Path]:
        """Last checkpoints and evaluation, then each live run's agent.pt and summary.json (its wall time with
        every evaluation); a stop during the evaluation pauses instead (`evaluate`)."""
        pack, step = self.pack, self.pack.step
        if self.episodes.at_boundary and not self.all_diverged:
            size = pack.save_checkpoints(time.time() - self.t0, self.episodes.unlogged())
            print(
                f"checkpoints at step {step}: {size / 2**20:.1f} MiB for {pack.runs - len(pack.diverged)} run(s)",
                flush=True,
            )
        results = self.evaluate(self.cfg.last_eval_episodes) if not self.all_diverged else []
        if results is None:
            return self.pause()
        wall = time.time() - self.t0
        for log in self.logs():
            log.close()
        for r, (c, run_dir) in enumerate(zip(pack.cfgs, pack.run_dirs)):
            if r in pack.diverged:
                continue
            atomic_torch_save(
                {"config": flat_dict(c), "step": step, "model": pack.agent.run_state(r)["model"]}, run_dir / "agent.pt"
            )
            summary = pack.summary(r, wall, results[r])
            atomic_write_json(run_dir / SUMMARY, summary)
            print(
                f"done: {c.encoder}/seed{c.seed}, {step} steps in {summary['wall_time_s']:.0f} s, final success "
                f"{results[r]['success_rate']:.2f}; outputs in {run_dir}",
                flush=True,
            )
        if pack.diverged:  # their summary.json holds the outcome (rl.outcome); rl.grid reads it, not this exit code
            raise NonFiniteError("training diverged: " + "; ".join(pack.diverged.values()))
        return pack.run_dirs


def refuse_diverged(run_dir: Path, resume: bool | str) -> None:
    """A run that diverged is final (rl.outcome): resuming it is refused, with how to retrain it anyway."""
    diverged = divergence(read_summary(run_dir)) if resume else None
    if diverged:
        kept = diverged.get("checkpoint")
        raise ValueError(
            f"{run_dir} diverged at step {diverged.get('step')} ({diverged.get('why')}); that is its outcome "
            f"(summary.json, success counted as 0). To train it again from its last good checkpoint "
            f"({'step ' + str(kept) if kept is not None else 'none: from scratch'}), delete its summary.json "
            "(and its kept copy, if pipeline.keep kept it under results/); a resume repeats its steps exactly, so "
            "under the same settings it will most likely diverge there again"
        )


def live_runs(cfgs: list[SACConfig]) -> list[SACConfig]:
    """The runs of a spec resumed with `--resume auto` less those that diverged (a retried pack, e.g. on Ray, goes
    on with its healthy runs); an explicit `--resume` of a diverged run is refused (`refuse_diverged`)."""
    live = []
    for cfg in cfgs:
        if cfg.resume == "auto" and divergence(read_summary(cfg.run_dir())):
            print(f"note: {cfg.run_dir()} diverged before (its summary.json); it stays as it is", flush=True)
        else:
            live.append(cfg)
    return live


def load_spec(path: str | Path) -> list[SACConfig]:
    """A pack spec (JSON list of SACConfig fields, as rl.grid writes them) -> configs."""
    items = json.loads(Path(path).read_text())
    cfgs = []
    for item in items:
        try:
            cfg = from_flat(SACConfig, {k: v for k, v in item.items() if k != "preset"})
        except TypeError as err:
            raise ValueError(f"{path}: {err}") from None
        cfg.preset = item.get("preset", "")
        cfgs.append(cfg)
    return cfgs


def main(argv: list[str] | None = None) -> list[Path]:
    parser = OneLineParser(
        prog="python -m rl.workspace",
        description="Train the SAC runs of a pack spec (JSON list of rl.sac configs) in one process.",
    )
    parser.add_argument("--spec", required=True, help="pack spec written by rl.grid")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        type=resume_mode,
        metavar="auto",
        help="for every run of the spec (default: the spec's own setting): " + RESUME_HELP,
    )
    args = parser.parse_args(argv)
    with one_line_errors():
        cfgs = load_spec(args.spec)
        for cfg in cfgs if args.resume is not None else ():
            cfg.resume = args.resume
        return train(cfgs)


if __name__ == "__main__":
    main()
