"""The Meta-World pixel environment every stage uses.

`make_env(EnvConfig(task="reach-v3"))` gives a gymnasium env whose observations are
{"pixels": uint8 [H, W, 3] upright, "state": float32 [39]}, with `info["success"]` passed through
and object/goal positions re-randomised every episode from the env's own seeded RNG (as the
paper's code does), so a seed reproduces a whole run.

Rendering uses one `mujoco.Renderer` per env; it makes its own GL context current before every
render, so several envs in one process render correctly. `render_quality="fast"` (the default)
switches off shadows, reflections and multisampling and tessellates primitives coarsely: >10x the
default render speed at 64x64 on a CPU, at the price of flatter frames (no shadow under the gripper, no reflection on the table).
Data collection and RL must use the same setting; the manifest records it.

`scene_state()` records what re-renders the current frame exactly (at any size): the seed of the
episode's reset (which fixes the object/goal placement), Meta-World's placement vector as a check,
and MuJoCo's physics state; `restore_scene()` puts an env (of any image size) back in that scene.
"""

from __future__ import annotations

import atexit
import weakref
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from common.cli import option
from data.gl import GL_HINT, configure_headless_gl

# Here and not only in data/__init__: a folder named `data/` in the working directory (a pipeline
# root holds data/shards) shadows this package's __init__ under an editable install.
configure_headless_gl()

import mujoco  # noqa: E402
from metaworld.env_dict import ALL_V3_ENVIRONMENTS  # noqa: E402

TASKS: tuple[str, ...] = tuple(sorted(ALL_V3_ENVIRONMENTS))
CAMERAS: tuple[str, ...] = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
RENDER_QUALITIES: tuple[str, ...] = ("fast", "default")
STATE_DIM = 39
# MuJoCo state saved per frame: time, qpos, qvel, act, plugin state and the mocap pose (the arm's hand
# is a mocap-driven body); everything a render depends on besides the model placement set at reset.
SCENE_SPEC = int(
    mujoco.mjtState.mjSTATE_FULLPHYSICS | mujoco.mjtState.mjSTATE_MOCAP_POS | mujoco.mjtState.mjSTATE_MOCAP_QUAT
)


class SceneError(ValueError):
    """A stored scene state that cannot reproduce its frame here (another task or Meta-World version)."""


@dataclass
class EnvConfig:
    """How frames are produced; identical settings are required between collection and RL."""

    task: str = option("reach-v3", "Meta-World v3 task name, e.g. reach-v3")
    image_size: int = option(64, "square frame size in pixels")
    camera: str = option("corner", f"camera, one of {', '.join(CAMERAS)}")
    render_quality: str = option("fast", "fast: no shadows/reflections/multisampling (~10x faster); default: MuJoCo's")
    max_episode_steps: int = option(500, "steps before truncated=True")
    goal_observable: bool = option(True, "include the goal position in the state vector (pixels always show it)")

    def validate(self) -> "EnvConfig":
        check_task(self.task)
        if self.camera not in CAMERAS:
            raise ValueError(f"unknown camera {self.camera!r}; valid cameras: {', '.join(CAMERAS)}")
        if self.render_quality not in RENDER_QUALITIES:
            raise ValueError(f"render_quality must be one of {RENDER_QUALITIES}, got {self.render_quality!r}")
        if not 8 <= self.image_size <= 2048:
            raise ValueError(f"image_size must be in [8, 2048], got {self.image_size}")
        if self.max_episode_steps < 1:
            raise ValueError("max_episode_steps must be >= 1")
        return self


def check_task(task: str) -> str:
    """Return `task` if it is a Meta-World v3 task; else raise naming the valid ones."""
    if task not in ALL_V3_ENVIRONMENTS:
        raise ValueError(f"unknown task {task!r}; valid Meta-World v3 tasks: {', '.join(TASKS)}")
    return task


# Renderers still open at interpreter exit must be freed before MuJoCo's own atexit hook tears
# EGL down (else every exit prints EGL_NOT_INITIALIZED tracebacks). atexit runs hooks in reverse
# order of registration, so ours is registered right after the first GL context exists.
_OPEN_ENVS: "weakref.WeakSet[PixelMetaWorld]" = weakref.WeakSet()
_EXIT_HOOK_REGISTERED = False


def _close_open_renderers() -> None:
    for env in list(_OPEN_ENVS):
        env.close_renderer()


def _register_exit_hook() -> None:
    global _EXIT_HOOK_REGISTERED
    if not _EXIT_HOOK_REGISTERED:
        atexit.register(_close_open_renderers)
        _EXIT_HOOK_REGISTERED = True


class PixelMetaWorld(gym.Env):
    """A Meta-World v3 task with upright pixel + state observations and re-randomised goals."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, config: EnvConfig | None = None, seed: int | None = None):
        self.config = cfg = (config or EnvConfig()).validate()
        mw = ALL_V3_ENVIRONMENTS[cfg.task]()
        # Re-randomise object/goal positions at every reset from the env's seeded RNG, and keep
        # the goal in Meta-World's own observation (its scripted policies and oracle need it).
        mw._freeze_rand_vec = False
        mw.seeded_rand_vec = True
        mw._set_task_called = True
        mw._partially_observable = False
        mw.__dict__.pop("sawyer_observation_space", None)
        mw.max_path_length = max(mw.max_path_length, cfg.max_episode_steps)
        self.mw = mw
        self.model, self.data = mw.model, mw.data
        self.camera_id = self.model.camera(cfg.camera).id
        self.render_mode = "rgb_array"
        size = cfg.image_size
        self.observation_space = gym.spaces.Dict(
            pixels=gym.spaces.Box(0, 255, (size, size, 3), np.uint8),
            state=gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._renderer: mujoco.Renderer | None = None
        self._scene_option = mujoco.MjvOption()
        self._steps = 0
        self._state = np.zeros(STATE_DIM, np.float32)
        self._mw_obs = np.zeros(STATE_DIM)
        self._reset_seed: int | None = None  # the seed of the last reset, if it had one
        self.seed(0 if seed is None else seed)
        _OPEN_ENVS.add(self)

    # -- seeding and rendering -------------------------------------------------------------
    def seed(self, seed: int) -> None:
        self.mw.seed(int(seed))
        self.action_space.seed(int(seed))

    def _make_renderer(self) -> mujoco.Renderer:
        size, vis = self.config.image_size, self.model.vis
        if self.config.render_quality == "fast":
            vis.quality.shadowsize = 0
            vis.quality.offsamples = 0
            # Coarser tessellation of primitive geoms: invisible at 64 px, ~1.4x faster on llvmpipe.
            vis.quality.numslices, vis.quality.numstacks, vis.quality.numquads = 8, 4, 1
            vis.global_.offwidth, vis.global_.offheight = size, size
        else:
            vis.global_.offwidth = max(vis.global_.offwidth, size)
            vis.global_.offheight = max(vis.global_.offheight, size)
        try:
            renderer = mujoco.Renderer(self.model, size, size)
        except Exception as err:  # the GL stack is missing or broken
            raise RuntimeError(f"{GL_HINT} ({type(err).__name__}: {err})") from err
        _register_exit_hook()
        return renderer

    def _update_scene(self) -> mujoco.Renderer:
        if self._renderer is None:
            self._renderer = self._make_renderer()
        self._renderer.update_scene(self.data, camera=self.camera_id, scene_option=self._scene_option)
        if self.config.render_quality == "fast":
            flags = self._renderer.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        return self._renderer

    def render(self) -> np.ndarray:
        """The current frame, uint8 [H, W, 3], upright (corner cameras render upside-down)."""
        img = self._update_scene().render()
        return np.ascontiguousarray(img[::-1, ::-1])

    def render_segmentation(self) -> np.ndarray:
        """Per-pixel (object id, object type) int32 [H, W, 2], oriented like `render()`."""
        renderer = self._update_scene()
        renderer.enable_segmentation_rendering()
        try:
            seg = renderer.render()
        finally:
            renderer.disable_segmentation_rendering()
        return np.ascontiguousarray(seg[::-1, ::-1])

    # -- gym API ---------------------------------------------------------------------------
    def _update_state(self, mw_obs: np.ndarray) -> np.ndarray:
        """Keep Meta-World's observation (for its experts) and return the agent's state vector."""
        self._mw_obs = mw_obs
        state = np.asarray(mw_obs, np.float32).copy()
        if not self.config.goal_observable:
            state[-3:] = 0.0
        self._state = state
        return state

    def _observe(self, mw_obs: np.ndarray) -> dict[str, np.ndarray]:
        return {"pixels": self.render(), "state": self._update_state(mw_obs)}

    def _reset_sim(self, seed: int | None) -> np.ndarray:
        super().reset(seed=seed)
        if seed is not None:
            self.seed(seed)
        self._reset_seed = None if seed is None else int(seed)
        self._steps = 0
        self.mw.reset()
        # Meta-World's reset places goal and objects without refreshing the derived positions it then
        # reads: the reset frame showed the previous placement (reach: the goal; drawer, faucet: the
        # object too) and drawer/faucet's state vector was stale. A forward pass refreshes them (qpos
        # and qvel stay as they are), then the observation is read again as Meta-World's reset builds it.
        mujoco.mj_forward(self.model, self.data)
        mw_obs = self.mw._get_obs()
        self.mw._prev_obs = mw_obs[:18].copy()
        mw_obs[18:36] = self.mw._prev_obs
        return mw_obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return self._observe(self._reset_sim(seed)), {"success": 0.0}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        mw_obs, reward, _, _, info = self.mw.step(action)
        self._steps += 1
        truncated = self._steps >= self.config.max_episode_steps
        info = dict(info, success=float(info.get("success", 0.0)))
        # Meta-World never terminates: reaching the time limit is truncation, not a terminal state.
        return self._observe(mw_obs), float(reward), False, truncated, info

    def step_state_only(self, action) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        """Step without rendering (for policies that need no pixels); returns state, reward, truncated, info."""
        action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        mw_obs, reward, _, _, info = self.mw.step(action)
        self._steps += 1
        return self._update_state(mw_obs), float(reward), self._steps >= self.config.max_episode_steps, info

    @property
    def raw_state(self) -> np.ndarray:
        """Meta-World's last observation (goal included), as its scripted policies expect it."""
        return self._mw_obs

    @property
    def elapsed_steps(self) -> int:
        return self._steps

    def oracle_clicks(self, rng: np.random.Generator | None = None, **kwargs) -> np.ndarray:
        """Simulated annotator clicks for the current frame, see `data.oracle.oracle_clicks`."""
        from data.oracle import oracle_clicks

        return oracle_clicks(self, rng if rng is not None else np.random.default_rng(), **kwargs)

    # -- scene states: re-render a frame at another size ------------------------------------
    def scene_dtype(self) -> np.dtype:
        """The structured dtype of this task's scene states (fixed sizes per task)."""
        n_rand = self.mw._random_reset_space.low.size
        n_state = mujoco.mj_stateSize(self.model, SCENE_SPEC)
        return np.dtype(
            [
                ("reset_seed", "<i8"),
                ("step", "<i8"),
                ("spec", "<i4"),
                ("rand_vec", "<f8", (n_rand,)),
                ("physics", "<f8", (n_state,)),
            ]
        )

    def scene_state(self) -> np.ndarray:
        """What re-renders the current frame exactly: a 0-d structured array (see `scene_dtype`).

        Replaying the episode's seeded reset reproduces the model placement (object, goal) and,
        for the reset frame itself, the render state Meta-World's reset leaves (its first frame is
        drawn before the placement's kinematics are recomputed); later frames add the physics state.
        """
        if self._reset_seed is None:
            raise SceneError("reset the env with a seed (reset(seed=...)) to record replayable scene states")
        scene = np.zeros((), self.scene_dtype())
        scene["reset_seed"], scene["step"], scene["spec"] = self._reset_seed, self._steps, SCENE_SPEC
        scene["rand_vec"] = self.mw._last_rand_vec
        physics = np.empty(mujoco.mj_stateSize(self.model, SCENE_SPEC))
        mujoco.mj_getState(self.model, self.data, physics, SCENE_SPEC)
        scene["physics"] = physics
        return scene

    def restore_scene(self, scene: np.ndarray) -> None:
        """Put this env (any image size, camera or render quality) in the scene `scene_state` recorded."""
        scene = np.asarray(scene)
        want = self.scene_dtype()
        if scene.dtype != want:
            raise SceneError(
                f"scene state of another layout ({scene.dtype}) than {self.config.task}'s ({want}); "
                "was it recorded for another task?"
            )
        if int(scene["spec"]) != SCENE_SPEC:
            raise SceneError(f"scene state saved with MuJoCo state spec {int(scene['spec'])}, expected {SCENE_SPEC}")
        self._reset_sim(int(scene["reset_seed"]))  # no render: the caller renders at its own size
        if not np.array_equal(self.mw._last_rand_vec, scene["rand_vec"]):
            raise SceneError(
                f"replaying reset seed {int(scene['reset_seed'])} of {self.config.task} places objects "
                "elsewhere than when the frame was recorded (another Meta-World version?)"
            )
        if int(scene["step"]) > 0:  # a stepped frame: Meta-World's step ends with mj_forward, so do we
            mujoco.mj_setState(self.model, self.data, np.ascontiguousarray(scene["physics"]), SCENE_SPEC)
            mujoco.mj_forward(self.model, self.data)
        self._steps = int(scene["step"])

    def close_renderer(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def close(self) -> None:
        self.close_renderer()
        self.mw.close()


def make_env(config: EnvConfig | None = None, seed: int | None = None, **overrides) -> PixelMetaWorld:
    """Build one pixel env; `overrides` set EnvConfig fields (e.g. task="drawer-open-v3")."""
    cfg = config or EnvConfig()
    if overrides:
        cfg = EnvConfig(**{**cfg.__dict__, **overrides})
    return PixelMetaWorld(cfg, seed=seed)
