"""Training and evaluation envs for SAC: per-episode seeds, oracle saliency, state-only stepping.

Every env worker builds `data.env.make_env` and wraps it:
  * `EpisodeSeeds` reseeds each reset from (run seed, global episode index), so the episodes a run
    sees are a function of its seed and a resumed run continues exactly where it stopped;
  * `OracleSaliency` (with `--saliency oracle`) adds a "saliency" field, the oracle's clicks
    turned into a map by `data.clicks.clicks_to_map`, computed inside the worker;
  * encoders that read only the state get `StateOnlyMetaWorld`, which skips rendering (the
    renderer is ~15x the cost of a physics step on a CPU).
The envs of every run of a pack live in one vector env (run-major). Vector envs use gymnasium's
SAME_STEP autoreset (the episode's last observation in `info["final_obs"]`). Workers import only
this module and the env (~0.3 GB), not the trainer's torch and encoders (see `_spawn_without_main`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
from collections.abc import Callable, Iterator, Sequence

import gymnasium as gym
import numpy as np

from data.clicks import clicks_to_map
from data.env import EnvConfig, PixelMetaWorld, make_env
from data.gl import serial_rasterizer

ACTION_DIM = 4  # Meta-World's Sawyer arm: end-effector x, y, z displacement and gripper effort
#: private RAM of one pixel env worker (MuJoCo, Meta-World and Mesa's software EGL context): 195-200 MB
#: Private_Dirty in /proc/<pid>/smaps_rollup on reach-v3 at 64-224 px, with or without oracle saliency
PIXEL_WORKER_BYTES = 200 << 20
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


def env_thunk(
    config: EnvConfig, pixels: bool, oracle: bool, base: int, offset: int, stride: int, first_episode: int
) -> Callable[[], gym.Env]:
    """The constructor of a vector env's worker `offset` of `stride`: pixels or state, with the oracle's saliency if
    asked, its episode k (`first_episode` first, on a resume) seeded `base + offset + k * stride` (EpisodeSeeds)."""

    def thunk() -> gym.Env:
        if multiprocessing.parent_process() is not None:  # a worker: SIGTERM/SIGINT to the whole process
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # group are for the trainer, which pauses at an
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # episode boundary and then closes its workers
        if pixels:
            serial_rasterizer()  # a frame per step, back to back: throughput, not latency
        env: gym.Env = make_env(config) if pixels else StateOnlyMetaWorld(config)
        if oracle:
            env = OracleSaliency(env)
        return EpisodeSeeds(env, base, offset, stride, first_episode)

    return thunk


@contextlib.contextmanager
def _spawn_without_main() -> Iterator[None]:
    """Processes spawned inside skip re-importing the parent's __main__ module.

    A spawned child imports the parent's main module (`python -m rl.workspace`: torch, the encoders,
    ~0.5 GB and seconds of CPU per env worker) in case the process object refers to it. Env thunks
    live in this module, so multiprocessing is told there is no main module to import."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.update(saved)


def make_envs(
    config: EnvConfig,
    num_envs: int,
    *,
    pixels: bool,
    oracle_saliency: bool,
    seed_bases: Sequence[int],
    first_episodes: Sequence[int] | None = None,
    asynchronous: bool = True,
) -> gym.vector.VectorEnv:
    """`num_envs` workers for each run of a pack, run-major (run r's envs are r*num_envs ... r*num_envs + num_envs - 1).

    Worker i of run r plays that run's global episodes i, i + num_envs, ... seeded
    `seed_bases[r] + index`, so a run's episodes depend on its seed alone, never on the runs beside
    it. `first_episodes[r]` is each of run r's workers' number of finished episodes (for resuming).
    Pixel envs step in subprocesses (gymnasium AsyncVectorEnv, observations in shared memory).
    """
    config.validate()
    if oracle_saliency and not pixels:
        raise ValueError("oracle saliency needs rendered pixels")
    first_episodes = list(first_episodes or [0] * len(seed_bases))
    fns = [
        env_thunk(config, pixels, oracle_saliency, base, i, num_envs, first)
        for base, first in zip(seed_bases, first_episodes)
        for i in range(num_envs)
    ]
    kwargs = dict(autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    # Pixel envs render in workers (even one: it renders while the agent updates). State-only envs step
    # at ~2k steps/s: subprocess round trips would cost more than they save.
    if asynchronous and pixels:
        with _spawn_without_main():  # gymnasium starts its workers in the constructor
            return gym.vector.AsyncVectorEnv(fns, context="spawn", shared_memory=True, **kwargs)
    return gym.vector.SyncVectorEnv(fns, **kwargs)
