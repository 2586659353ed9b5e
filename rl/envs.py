"""Training and evaluation envs for SAC: per-episode seeds, oracle saliency, state-only stepping.

Every env worker builds `data.env.make_env` and wraps it:
  * `EpisodeSeeds` reseeds each reset from (run seed, global episode index), so the episodes a run
    sees are a function of its seed and a resumed run continues exactly where it stopped;
  * `OracleSaliency` (with `--saliency oracle`) adds a "saliency" field, the oracle's clicks
    turned into a map by `data.clicks.clicks_to_map`, computed inside the worker;
  * encoders that read only the state get `StateOnlyMetaWorld`, which skips rendering (the
    renderer is ~15x the cost of a physics step on a CPU).
Vector envs use gymnasium's SAME_STEP autoreset (the episode's last observation in
`info["final_obs"]`), like `data.env.make_vector_env`, whose seeding convention they share.
"""
from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from data.clicks import clicks_to_map
from data.env import STATE_DIM, EnvConfig, PixelMetaWorld, make_env

TRAIN_SEED_STRIDE = 1_000_000
EVAL_SEED_BASE = 1_000_000_000  # evaluation episodes never share a seed with training episodes


class StateOnlyMetaWorld(PixelMetaWorld):
    """`PixelMetaWorld` whose observations hold only the 39-d state: no frame is rendered."""

    def __init__(self, config: EnvConfig | None = None, seed: int | None = None):
        super().__init__(config, seed)
        self.observation_space = gym.spaces.Dict(state=self.observation_space["state"])

    def _observe(self, mw_obs: np.ndarray) -> dict[str, np.ndarray]:
        return {"state": self._update_state(mw_obs)}


class EpisodeSeeds(gym.Wrapper):
    """Reset episode k of this worker with seed `base + offset + k * stride` unless a seed is given."""

    def __init__(self, env: gym.Env, base: int, offset: int, stride: int, first_episode: int = 0):
        super().__init__(env)
        self.base, self.offset, self.stride = base, offset, stride
        self.episode = first_episode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None:
            seed = self.base + self.offset + self.episode * self.stride
        self.episode += 1
        return self.env.reset(seed=seed, options=options)


class OracleSaliency(gym.ObservationWrapper):
    """Adds obs["saliency"]: uint8 [H, W], the oracle's clicks on the current frame as a map x 255."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        size = env.unwrapped.config.image_size
        self.observation_space = gym.spaces.Dict(
            {**env.observation_space.spaces, "saliency": gym.spaces.Box(0, 255, (size, size), np.uint8)}
        )
        self.rng = np.random.default_rng(0)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:  # the clicks of an episode are a function of its seed (exact resume)
            self.rng = np.random.default_rng([seed, 1])
        return super().reset(seed=seed, options=options)

    def observation(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        base = self.env.unwrapped
        saliency = clicks_to_map(base.oracle_clicks(self.rng), base.config.image_size)
        return {**obs, "saliency": np.round(saliency * 255.0).astype(np.uint8)}


def _worker(config: EnvConfig, pixels: bool, oracle: bool, base: int, offset: int, stride: int,
            first_episode: int) -> Callable[[], gym.Env]:
    def thunk() -> gym.Env:
        env: gym.Env = make_env(config) if pixels else StateOnlyMetaWorld(config)
        if oracle:
            env = OracleSaliency(env)
        return EpisodeSeeds(env, base, offset, stride, first_episode)

    return thunk


def make_envs(
    config: EnvConfig,
    num_envs: int,
    *,
    pixels: bool,
    oracle_saliency: bool,
    seed_base: int,
    first_episode: int = 0,
    asynchronous: bool = True,
) -> gym.vector.VectorEnv:
    """`num_envs` workers; worker i plays global episodes i, i + num_envs, ... seeded `seed_base + index`.

    `first_episode` is each worker's number of finished episodes (for resuming).
    """
    config.validate()
    if oracle_saliency and not pixels:
        raise ValueError("oracle saliency needs rendered pixels")
    fns = [_worker(config, pixels, oracle_saliency, seed_base, i, num_envs, first_episode) for i in range(num_envs)]
    kwargs = dict(autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    # State-only envs step at ~2k steps/s: subprocess round trips would cost more than they save.
    if asynchronous and pixels and num_envs > 1:
        return gym.vector.AsyncVectorEnv(fns, context="spawn", **kwargs)
    return gym.vector.SyncVectorEnv(fns, **kwargs)


def format_obs(raw: dict[str, np.ndarray], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Vector-env observations -> the encoder fields: pixels uint8 [N, 3, H, W], saliency uint8 [N, 1, H, W], state."""
    out: dict[str, np.ndarray] = {}
    for key in keys:
        if key == "pixels":
            out[key] = np.ascontiguousarray(raw["pixels"].transpose(0, 3, 1, 2))
        elif key == "saliency":
            if "saliency" in raw:
                out[key] = np.ascontiguousarray(raw["saliency"][:, None])
        elif key == "state":
            out[key] = np.asarray(raw["state"], np.float32).reshape(-1, STATE_DIM)
        else:
            raise KeyError(f"unknown observation field {key!r}; envs provide pixels, saliency and state")
    return out


def stack_final_obs(final: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """info["final_obs"] (object array of per-env dicts) at `rows` -> a batched dict."""
    items = [final[i] for i in rows]
    return {k: np.stack([it[k] for it in items]) for k in items[0]}
