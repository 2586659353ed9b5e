"""SAC throughput: our `state` encoder loop vs Stable-Baselines3 SAC at identical settings, side by side.

    python bench/sac_speed.py [--hidden 1024 256] [--steps 600] [--rounds 2] [--threads 1]

Both learners run on the same env (reach-v3, 39-d state, no rendering: `rl.envs.StateOnlyMetaWorld`),
batch 128, one gradient update per env step, two hidden layers of the given width, 1000 random
steps first, the same torch thread count. SB3 updates actor and targets every step; our loop is
timed with the same (`identical`) and with the paper's every-2-steps schedule (`paper`). Only the
learning phase (after the random steps) is timed. Configurations alternate within each round so
machine noise hits all of them alike; the median over rounds is reported.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import torch

from common.cli import from_flat
from common.runs import device_description
from data.env import EnvConfig
from rl.config import SACConfig
from rl.envs import StateOnlyMetaWorld

RANDOM = 1000


def ours(hidden: int, steps: int, every: int, out: Path) -> float:
    """Env-steps/s of `python -m rl.sac --encoder state` between step RANDOM and RANDOM + steps (metrics.csv)."""
    from rl.sac import run

    cfg = from_flat(
        SACConfig,
        encoder="state",
        hidden_dim=hidden,
        steps=RANDOM + steps,
        random_steps=RANDOM,
        log_every=100,
        eval_every=0,
        eval_episodes=1,
        checkpoint_every=10**9,
        replay_size=100_000,
        actor_update_every=every,
        target_update_every=every,
        out=str(out),
    )
    with open(run(cfg) / "metrics.csv") as f:
        wall = {int(r["step"]): float(r["wall_s"]) for r in csv.DictReader(f)}
    return steps / (wall[RANDOM + steps] - wall[RANDOM])


class StateBox(gym.ObservationWrapper):
    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = env.observation_space["state"]

    def observation(self, obs):
        return obs["state"]


def sb3(hidden: int, steps: int) -> float:
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    env = gym.wrappers.TimeLimit(StateBox(StateOnlyMetaWorld(EnvConfig("reach-v3"), seed=0)), 500)
    marks: dict[str, float] = {}

    class Clock(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == RANDOM:
                marks["start"] = time.time()
            return True

    model = SAC(
        "MlpPolicy",
        env,
        learning_rate=1e-4,
        buffer_size=100_000,
        learning_starts=RANDOM,
        batch_size=128,
        tau=0.005,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        ent_coef="auto_0.1",
        policy_kwargs=dict(net_arch=[hidden, hidden]),
        seed=0,
        device="cpu",
    )
    model.learn(RANDOM + steps, callback=Clock())
    return steps / (time.time() - marks["start"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, nargs="+", default=[1024, 256])
    p.add_argument("--steps", type=int, default=600, help="timed learning steps per measurement (a multiple of 100)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads for both learners")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[tuple[int, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for hidden in args.hidden:
                for name in ("sb3", "identical", "paper"):
                    if name == "sb3":
                        v = sb3(hidden, args.steps)
                    else:
                        v = ours(hidden, args.steps, 1 if name == "identical" else 2, Path(tmp) / f"{name}{hidden}r{r}")
                    results.setdefault((hidden, name), []).append(v)
                    print(f"round {r} hidden {hidden} {name}: {v:.1f} env-steps/s", flush=True)
    print(
        f"\ndevice: {device_description()}; {args.steps} timed learning steps after {RANDOM} random, "
        f"median of {args.rounds} rounds, torch threads {args.threads}\n"
    )
    print(
        "| hidden | SB3 SAC steps/s | ours, identical schedule | ours, paper schedule (actor/target every 2) | speed-up identical | speed-up paper |"
    )
    print("|---|---|---|---|---|---|")
    for hidden in args.hidden:
        m = {n: statistics.median(results[(hidden, n)]) for n in ("sb3", "identical", "paper")}
        print(
            f"| {hidden} | {m['sb3']:.1f} | {m['identical']:.1f} | {m['paper']:.1f} | "
            f"{m['identical'] / m['sb3']:.2f}x | {m['paper'] / m['sb3']:.2f}x |"
        )


if __name__ == "__main__":
    main()
