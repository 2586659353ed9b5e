"""How well can any predictor score against the oracle? `python -m saliency.ceiling --task reach-v3`.

The oracle's clicks are random (jittered around the gripper, object and goal), so each stored map
is one draw. On states of the collection's behaviour policy this draws `samples` click sets per
state: the mean of `samples - 1` maps (an estimate of the best possible prediction, the expected
map) is scored against the remaining independent draw with `saliency.metrics.evaluate`, exactly
as a trained model is scored. Needs no rendering: clicks come from the simulator geometry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from common.cli import from_flat, option, run_command
from data.clicks import clicks_to_map
from data.collect import BehaviourPolicy, CollectConfig
from data.env import make_env
from saliency.metrics import score_maps


@dataclass
class CeilingConfig:
    """Score the oracle's expected map against independent oracle draws (an upper bound on F / MAE)."""

    task: str = option("reach-v3", "Meta-World task")
    frames: int = option(300, "states to score")
    samples: int = option(9, "click draws per state (all but one are averaged)")
    size: int = option(64, "map resolution")
    seed: int = option(0, "seed")

    def validate(self) -> "CeilingConfig":
        if self.frames < 1 or self.samples < 2:
            raise ValueError("frames must be >= 1 and samples >= 2")
        return self


def run(cfg: CeilingConfig) -> dict[str, float]:
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    collect_cfg = from_flat(CollectConfig, task=cfg.task, frames=cfg.frames, episode_steps=150)
    env = make_env(collect_cfg.env)
    policy = BehaviourPolicy(collect_cfg, rng)
    preds, gts, fixations = [], [], []
    while len(gts) < cfg.frames:
        env.reset(seed=int(rng.integers(2**31 - 1)))
        policy.new_episode()
        for _ in range(collect_cfg.env.max_episode_steps):
            draws = [env.oracle_clicks(rng) for _ in range(cfg.samples)]
            maps = np.stack([clicks_to_map(c, cfg.size) for c in draws])
            preds.append(maps[1:].mean(0))
            gts.append(maps[0])
            fixations.append(draws[0])
            if len(gts) >= cfg.frames:
                break
            env.step_state_only(policy.act(env.raw_state))
    env.close()
    scores = score_maps(np.stack(preds), np.stack(gts), fixations)
    print(
        json.dumps(
            {
                "task": cfg.task,
                "frames": cfg.frames,
                "samples": cfg.samples,
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()},
            }
        )
    )
    return scores


def main(argv=None) -> None:
    run_command(CeilingConfig, run, argv)


if __name__ == "__main__":
    main()
