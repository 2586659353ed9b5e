"""Train SAC on a Meta-World task with one of the paper's encoders.

    python -m rl.sac --task reach-v3 --encoder cnn_rgb --steps 1000000 --seed 0 [--preset cpu] [--num-envs 4]

Writes runs/sac/<task>/<encoder>/seed<k>/: config.json, metrics.csv (training curve, steps/s),
eval.csv (success rate of the deterministic policy on fresh seeds), tb/ (TensorBoard),
checkpoint.pt (resumable with --resume, saved at episode boundaries), agent.pt (final weights)
and summary.json. One SAC update per env step; frozen encoders run once per env step and the
replay buffer stores their embeddings.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import rl.gaze  # noqa: F401  (registers the gaze encoders)
from data.cli import parse_config
from data.env import STATE_DIM, EnvConfig
from data.io import atomic_torch_save, atomic_write_json
from data.runs import MetricLogger, device_description, prepare_run_dir
from rl.agent import SAC
from rl.config import PRESETS, SACConfig
from rl.encoders import Encoder, build_encoder
from rl.envs import EVAL_SEED_BASE, TRAIN_SEED_STRIDE, format_obs, make_envs, stack_final_obs
from rl.replay import ReplayBuffer

ACTION_DIM = 4


def saliency_command(task: str) -> str:
    return f"python -m saliency.train --annotations data/annotations/{task}.npz"


def default_saliency_model(task: str) -> Path:
    root = Path("runs/saliency") / task
    return root / "student.pt" if (root / "student.pt").exists() else root / "best.pt"


class Observer:
    """Env observations -> encoder fields (with predicted saliency) -> what the replay buffer stores."""

    def __init__(self, encoder: Encoder, cfg: SACConfig, device: torch.device):
        self.encoder, self.device = encoder, device
        self.keys = tuple(encoder.obs_keys)
        self.predictor = None
        if "saliency" in self.keys and cfg.saliency == "predictor":
            path = Path(cfg.saliency_model) if cfg.saliency_model else default_saliency_model(cfg.task)
            if not path.exists():
                raise FileNotFoundError(
                    f"encoder {cfg.encoder!r} needs a saliency model, but {path} does not exist; train one with "
                    f"`{saliency_command(cfg.task)}` (writes best.pt; `python -m saliency.distill` adds student.pt), "
                    "pass --saliency-model PATH, or use --saliency oracle")
            from saliency.predictor import SaliencyPredictor

            self.predictor = SaliencyPredictor.load(str(path))
            self.saliency_model = str(path)
        else:
            self.saliency_model = cfg.saliency if "saliency" in self.keys else ""
        self.pixels = "pixels" in self.keys or "saliency" in self.keys
        self.oracle = "saliency" in self.keys and self.predictor is None

    def fields(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encoder fields of a batch of raw observations (saliency predicted here when needed)."""
        obs = format_obs(raw, self.keys)
        if self.predictor is not None:
            with torch.no_grad():
                sal = self.predictor(raw["pixels"])  # [N, H, W] float in [0, 1]
            sal = torch.as_tensor(sal).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
            obs["saliency"] = sal.cpu().numpy()[:, None]
        return obs

    def to_torch(self, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v).to(self.device) for k, v in obs.items()}

    def store(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What the buffer keeps: the embedding for frozen encoders (computed once), else the fields."""
        if not self.encoder.frozen:
            return obs
        with torch.no_grad():
            emb = self.encoder(self.to_torch(obs))
        return {"embedding": emb.to(torch.float16).cpu().numpy()}

    def specs(self, image_size: int) -> dict[str, tuple[tuple[int, ...], Any]]:
        if self.encoder.frozen:
            return {"embedding": ((self.encoder.out_dim,), np.float16)}
        shapes = {"pixels": ((3, image_size, image_size), np.uint8), "saliency": ((1, image_size, image_size), np.uint8),
                  "state": ((STATE_DIM,), np.float32)}
        return {k: shapes[k] for k in self.keys}


def env_config(cfg: SACConfig) -> EnvConfig:
    return EnvConfig(task=cfg.task, image_size=cfg.image_size, camera=cfg.camera,
                     render_quality=cfg.render_quality, max_episode_steps=cfg.max_episode_steps)


def evaluate(agent: SAC, observer: Observer, cfg: SACConfig) -> dict[str, float]:
    """`cfg.eval_episodes` episodes of the deterministic policy on fixed evaluation seeds.

    Success = any success within the episode. The seeds never overlap training seeds and are the
    same at every evaluation, so curves compare policies rather than draws of goals.
    """
    n_envs = min(cfg.eval_envs or cfg.num_envs, cfg.eval_episodes)
    envs = make_envs(env_config(cfg), n_envs, pixels=observer.pixels, oracle_saliency=observer.oracle,
                     seed_base=EVAL_SEED_BASE + cfg.seed * TRAIN_SEED_STRIDE)
    start = time.time()
    agent.eval()
    try:
        raw, _ = envs.reset()
        episode = np.arange(n_envs)  # global index of each env's running episode
        ret, succ = np.zeros(n_envs), np.zeros(n_envs)
        returns, successes = [], []
        while len(returns) < cfg.eval_episodes:
            stored = observer.store(observer.fields(raw))
            action = agent.act(observer.to_torch(stored), deterministic=True).cpu().numpy()
            raw, reward, term, trunc, info = envs.step(action)
            done = term | trunc
            ret += reward
            succ = np.maximum(succ, step_success(info, done))
            for i in np.flatnonzero(done):
                if episode[i] < cfg.eval_episodes:
                    returns.append(ret[i])
                    successes.append(succ[i])
                episode[i] += n_envs
                ret[i] = succ[i] = 0.0
    finally:
        envs.close()
        agent.train()
    return {"success_rate": float(np.mean(successes)), "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)), "episodes": len(returns), "eval_s": round(time.time() - start, 2)}


def step_success(info: dict[str, Any], done: np.ndarray) -> np.ndarray:
    """info["success"] of the step just taken (for ended episodes it sits in final_info)."""
    success = np.asarray(info.get("success", np.zeros(len(done))), np.float64).copy()
    if done.any() and "final_info" in info:
        final = info["final_info"]
        success = np.where(final.get("_success", done), np.asarray(final.get("success", success), np.float64), success)
    return success


class Checkpointer:
    """checkpoint.pt: everything an exact --resume needs; written atomically, weights_only-loadable."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "checkpoint.pt"

    def save(self, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self.path)

    def load(self) -> dict[str, Any] | None:
        return torch.load(self.path, map_location="cpu", weights_only=True) if self.path.exists() else None


def run(cfg: SACConfig) -> Path:
    """Train (or resume) one SAC run; returns its run folder."""
    cfg.validate()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    run_dir = cfg.run_dir()
    ckpt = Checkpointer(run_dir)
    state = None
    if cfg.resume:
        state = ckpt.load()
        if state is not None:
            diffs = cfg.differences(state["config"])
            if diffs:
                raise SystemExit(f"error: {ckpt.path} was trained with another config; differences: " + "; ".join(diffs))
    elif (run_dir / "config.json").exists():
        raise SystemExit(f"error: {run_dir} already holds a run; pass --resume to continue it or choose another --out")

    torch.manual_seed(cfg.seed)
    encoder = build_encoder(cfg, cfg.image_size, STATE_DIM).to(device)
    observer = Observer(encoder, cfg, device)
    agent = SAC(encoder, ACTION_DIM, cfg).to(device)
    buffer = ReplayBuffer(observer.specs(cfg.image_size), ACTION_DIM, cfg.replay_size, cfg.num_envs, seed=cfg.seed)
    rng = np.random.default_rng([cfg.seed, 2])
    step, episodes, wall_before = 0, 0, 0.0
    if state is not None:
        agent.load_training_state(state["agent"])
        encoder.load_extra_state(state["encoder_extra"])
        buffer.load_state_dict(state["buffer"])
        rng.bit_generator.state = state["rng_numpy"]
        torch.set_rng_state(state["rng_torch"])
        step, episodes, wall_before = int(state["step"]), int(state["episodes"]), float(state["wall_s"])
    prepare_run_dir(run_dir, cfg, resume=cfg.resume)
    metrics_log, eval_log = MetricLogger(run_dir, "metrics"), MetricLogger(run_dir, "eval", tensorboard=False)
    aux_log = MetricLogger(run_dir, "aux") if (run_dir / "aux.csv").exists() else None
    for log in (metrics_log, eval_log, aux_log):
        if log is not None:
            log.truncate_after(step if state is not None else -1)
    print(f"SAC {cfg.encoder} on {cfg.task}, seed {cfg.seed}, {device_description()}; run folder {run_dir}"
          + (f" (resumed at step {step})" if state is not None else ""), flush=True)

    n = cfg.num_envs
    envs = make_envs(env_config(cfg), n, pixels=observer.pixels, oracle_saliency=observer.oracle,
                     seed_base=cfg.seed * TRAIN_SEED_STRIDE, first_episode=episodes // n)
    raw, _ = envs.reset()
    obs = observer.fields(raw)
    stored = observer.store(obs)
    buffer.start(stored)
    ep_return, ep_success, ep_len = np.zeros(n), np.zeros(n), np.zeros(n, np.int64)
    recent_returns: list[float] = []
    recent_success: list[float] = []
    last_metrics: dict[str, torch.Tensor] = {}
    aux: dict[str, float] = {}
    next_log = (step // cfg.log_every + 1) * cfg.log_every
    next_eval = (step // cfg.eval_every + 1) * cfg.eval_every if cfg.eval_every else math.inf
    next_ckpt = (step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
    t0, t_log, steps_at_log = time.time(), time.time(), step
    last_eval: dict[str, float] | None = None

    def save_checkpoint() -> None:
        ckpt.save({
            "config": dataclasses.asdict(cfg), "step": step, "episodes": episodes,
            "wall_s": wall_before + time.time() - t0, "agent": agent.training_state(),
            "encoder_extra": encoder.extra_state(), "buffer": buffer.state_dict(),
            "rng_numpy": rng.bit_generator.state, "rng_torch": torch.get_rng_state(),
        })

    def do_eval() -> dict[str, float]:
        result = evaluate(agent, observer, cfg)
        eval_log.log(step, **result)
        print(f"step {step}: eval success {result['success_rate']:.2f} return {result['return_mean']:.1f} "
              f"({result['episodes']} episodes, {result['eval_s']} s)", flush=True)
        return result

    try:
        while step < cfg.steps:
            learning = step >= cfg.random_steps  # uniform random actions and no updates before that
            if not learning:
                action = rng.uniform(-1.0, 1.0, (n, ACTION_DIM)).astype(np.float32)
            else:
                action = agent.act(observer.to_torch(stored)).cpu().numpy()
            raw, reward, term, trunc, info = envs.step(action)
            done = term | trunc
            next_obs = observer.fields(raw)
            next_stored = observer.store(next_obs)
            final_stored = None
            if done.any():
                ended = np.flatnonzero(done)
                final = observer.store(observer.fields(stack_final_obs(info["final_obs"], ended)))
                final_stored = {k: np.zeros_like(v) for k, v in next_stored.items()}
                for k in final_stored:
                    final_stored[k][ended] = final[k]
            buffer.add(action, reward, term, next_stored, done, final_stored)
            encoder.on_env_step(obs, reward, done)
            step += n
            ep_return += reward
            ep_len += 1
            ep_success = np.maximum(ep_success, step_success(info, done))
            for i in np.flatnonzero(done):
                recent_returns.append(ep_return[i])
                recent_success.append(ep_success[i])
                episodes += 1
                ep_return[i] = ep_success[i] = ep_len[i] = 0
            obs, stored = next_obs, next_stored

            if learning:
                for _ in range(n):
                    last_metrics.update(agent.update(buffer.sample(cfg.batch_size, device)))
                    aux = encoder.auxiliary_update(agent.num_updates) or aux

            if step >= next_log:
                now = time.time()
                row = {
                    "episodes": episodes,
                    "episode_return": float(np.mean(recent_returns)) if recent_returns else math.nan,
                    "episode_success": float(np.mean(recent_success)) if recent_success else math.nan,
                    "steps_per_s": round((step - steps_at_log) / max(now - t_log, 1e-9), 2),
                    "updates": agent.num_updates,
                    "alpha": float(agent.log_alpha.detach().exp()),
                }
                for k in ("critic_loss", "actor_loss", "alpha_loss", "q_mean", "entropy"):
                    row[k] = float(last_metrics[k]) if k in last_metrics else math.nan
                metrics_log.log(step, **row)
                if aux:  # auxiliary losses of encoders with their own learning signal (gaze)
                    aux_log = aux_log or MetricLogger(run_dir, "aux")
                    aux_log.log(step, **{k: float(v) for k, v in aux.items()})
                recent_returns, recent_success = [], []
                t_log, steps_at_log = now, step
                next_log = (step // cfg.log_every + 1) * cfg.log_every
            if step >= next_eval and step < cfg.steps:
                last_eval = do_eval()
                next_eval = (step // cfg.eval_every + 1) * cfg.eval_every
            if step >= next_ckpt and not ep_len.any():  # only at episode boundaries: exact resume
                save_checkpoint()
                next_ckpt = (step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
    finally:
        envs.close()

    if not ep_len.any():
        save_checkpoint()
    wall = wall_before + time.time() - t0
    last_eval = do_eval()
    atomic_torch_save({"config": dataclasses.asdict(cfg), "step": step, "model": agent.state_dict()},
                      run_dir / "agent.pt")
    atomic_write_json(run_dir / "summary.json", {
        "task": cfg.task, "encoder": cfg.encoder, "seed": cfg.seed, "steps": step, "preset": cfg.preset,
        "success_rate": last_eval["success_rate"], "return_mean": last_eval["return_mean"],
        "eval_episodes": last_eval["episodes"], "wall_time_s": round(wall, 1),
        "steps_per_s": round(step / max(wall, 1e-9), 2), "device": device_description(),
        "saliency": observer.saliency_model, "hidden_dim": cfg.hidden_dim, "num_envs": cfg.num_envs,
    })
    metrics_log.close()
    if aux_log is not None:
        aux_log.close()
    print(f"done: {step} steps in {wall:.0f} s, final success {last_eval['success_rate']:.2f}; outputs in {run_dir}")
    return run_dir


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_config(SACConfig, argv, presets=PRESETS)
    try:
        return run(cfg)
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
