"""Evaluate and watch a trained SAC agent: success and return per episode, and a video of the episodes.

    python -m rl.evaluate --run runs/sac/reach-v3/mmae_rgbs/seed0 [--checkpoint PATH] [--episodes 10] [--seed S]
                          [--video] [--overlay saliency|gaze] [--video-format mp4|gif|webp]
    python -m rl.evaluate --policy random --task reach-v3 [--episodes 50] [--seed S]   # the floor: no learning

Loads any run folder (any encoder; a run of a pack; a finished run's agent.pt, else its newest
checkpoint, or --checkpoint), rolls out the deterministic policy (the mean action) through the
training observation path (rl/observe.py: the same saliency source and frozen encoder), and writes
`<run>/evaluate/<checkpoint>-seed<S>-<N>ep.json`: success (any success within the episode) and
return of every episode, their means, the episode seeds and the input files it loaded (path and
sha256; a file that differs from the one the run recorded in config.json is refused) and, under
"config", its own flags (`--config <that json>` reruns the evaluation).

Episode k is seeded `EVAL_SEED_BASE + S * TRAIN_SEED_STRIDE + k`, as the training evaluations seed
them: with the default S (the run's own seed) the first N episodes are those of the run's eval.csv,
so the numbers agree with its final evaluation. `--policy random` plays uniform random actions instead (each
episode's own generator, seeded by the episode's seed; no weights, nothing to load but the run's config.json, or
none with `--task`): on the same episodes, the floor a trained policy's success and return read against; it
writes `random-seed<S>-<N>ep.json` (rl.outcome.random_policy_file), in `<run>/evaluate` or
`runs/evaluate/<task>`. `--video` writes the episodes as MP4 (imageio's ffmpeg), animated GIF or WebP (Pillow),
each frame upscaled `--scale` times (nearest: the policy's pixels, large enough to see the gripper) with a caption
(episode, step, return, success); `--overlay saliency` draws the saliency map the agent saw (or, for encoders
without saliency, the run's saliency source), `--overlay gaze` the attention and Gaussians of a gaze encoder.

`load_agent(run_dir)` is the one loader of a trained agent (rl/gaze_viz.py uses it too); `clip(run_dir, out)`
writes a short looping clip of one episode (the pipeline's `<run>/evaluate/clip.gif`), and
`report_clips(sac_root, out)` gathers one per task and encoder for a report.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.cli import flat_dict, from_stored, option, run_command
from common.io import atomic_write_bytes, atomic_write_json, safe_torch_load

OVERLAYS = ("none", "saliency", "gaze")
POLICIES = ("agent", "random")
VIDEO_FORMATS = ("mp4", "gif", "webp")


@dataclass
class EvaluateConfig:
    """Evaluate a trained SAC agent's deterministic policy at fixed seeds; optionally write a video of its episodes."""

    run: str = option(
        "",
        "SAC run folder (rl.sac / rl.grid output); `python -m rl.evaluate DIR` is short for --run DIR",
        positional=True,
    )
    policy: str = option(
        "agent",
        "agent: the run's trained policy (its mean action); random: uniform random actions on the same episodes, "
        "no weights loaded (the floor a trained policy reads against)",
        choices=list(POLICIES),
    )
    task: str = option(
        "",
        "with --policy random and no --run: the Meta-World task (its other env settings: data.env.EnvConfig's defaults)",
    )
    checkpoint: str = option(
        "",
        "weights to load: agent.pt or a checkpoint-<step>.pt (default: the run's agent.pt, else its newest checkpoint)",
    )
    episodes: int = option(10, "evaluation episodes")
    seed: int | None = option(
        None,
        "evaluation seed S: episode k is seeded EVAL_SEED_BASE + S * TRAIN_SEED_STRIDE + k (default: the run's own seed, the episodes of its eval.csv)",
    )
    episode_steps: int = option(0, "steps per episode (0: the run's --max-episode-steps)")
    video: bool = option(False, "write a video of the episodes beside the JSON")
    overlay: str = option(
        "none",
        "drawn over the video: none, saliency (the map the agent saw, or the run's saliency source) or gaze (a gaze encoder's attention and Gaussians)",
        choices=list(OVERLAYS),
    )
    video_format: str = option(
        "mp4", "mp4 (imageio + imageio-ffmpeg), gif or webp (animated, Pillow)", choices=list(VIDEO_FORMATS)
    )
    video_episodes: int = option(0, "episodes in the video, the first ones (0: every evaluated episode)")
    frame_stride: int = option(1, "keep every this many steps in the video")
    scale: int = option(4, "video frames are the observations upscaled this many times (nearest neighbour)")
    fps: int = option(20, "video frames per second")
    mmae: str = option(
        "",
        "frozen MultiMAE encoder to load (default: the file the run recorded in config.json, else its --mmae or default path)",
    )
    saliency_model: str = option(
        "",
        "saliency checkpoint to load (default: the file the run recorded, else its --saliency-model or default path)",
    )
    device: str = option("cpu", "torch device: cpu, cuda, auto")
    out: str = option("", "output folder (default <run>/evaluate; --policy random --task T: runs/evaluate/T)")

    @property
    def recorded_episodes(self) -> int:
        """Episodes the video shows: the first --video-episodes (0: all) of those evaluated; none without --video."""
        return min(self.video_episodes or self.episodes, self.episodes) if self.video else 0

    def validate(self) -> "EvaluateConfig":
        if self.policy not in POLICIES:
            raise ValueError(f"--policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.policy == "random":
            if bool(self.run) == bool(self.task):
                raise ValueError(
                    "--policy random plays one task: give --task (e.g. --task reach-v3) or --run (the run whose task, "
                    "episode length and seed it takes), not both"
                )
            if self.overlay != "none" or self.checkpoint:
                raise ValueError("--policy random loads no agent: drop --overlay and --checkpoint")
        elif self.task:
            raise ValueError("--task is for --policy random; the agent's task is its run's (--run)")
        elif not self.run:
            raise ValueError(
                "--run is required: the SAC run folder to evaluate, e.g. --run runs/sac/reach-v3/cnn_rgb/seed0"
            )
        for name in ("episodes", "frame_stride", "scale", "fps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.video_episodes < 0 or self.episode_steps < 0:
            raise ValueError("--video-episodes and --episode-steps must be >= 0")
        if self.overlay not in OVERLAYS:
            raise ValueError(f"--overlay must be one of {', '.join(OVERLAYS)}, got {self.overlay!r}")
        if self.video_format not in VIDEO_FORMATS:
            raise ValueError(f"--video-format must be one of {', '.join(VIDEO_FORMATS)}, got {self.video_format!r}")
        if self.overlay != "none" and not self.video:
            raise ValueError(f"--overlay {self.overlay} draws over the video: add --video")
        return self


@dataclass
class LoadedAgent:
    """A trained agent ready to act: its config, the SAC networks (a pack of one, eval mode), the encoder
    (inside the agent when trained, beside it when frozen) and where the weights came from."""

    cfg: Any
    agent: Any
    encoder: Any
    checkpoint: Path
    step: int
    recorded_inputs: dict[str, Any] | None

    @property
    def run_dir(self) -> Path:
        return self.checkpoint.parent


def weights_path(run_dir: Path, checkpoint: str = "") -> Path:
    """--checkpoint (a path, or a name inside the run folder), else agent.pt, else the newest checkpoint."""
    from rl.workspace import latest_checkpoint

    if checkpoint:
        path = Path(checkpoint)
        path = path if path.exists() or path.is_absolute() else run_dir / checkpoint
        if not path.is_file():
            raise FileNotFoundError(
                f"--checkpoint {checkpoint} not found (looked in {run_dir} too); pass agent.pt or a "
                "checkpoint-<step>.pt of the run"
            )
        return path
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"run folder {run_dir} not found (no agent.pt or checkpoint to load); train one with "
            f"`python -m rl.sac --out {run_dir}`"
        )
    path = run_dir / "agent.pt" if (run_dir / "agent.pt").exists() else latest_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(
            f"{run_dir} holds neither agent.pt nor a checkpoint; train one with "
            f"`python -m rl.sac --out {run_dir}` (checkpoints come every --checkpoint-every steps)"
        )
    return path


def recorded_inputs(run_dir: Path) -> dict[str, Any] | None:
    """The input files a run recorded in its config.json (rl/provenance.py), None for runs made before."""
    from rl.provenance import INPUTS_KEY

    path = run_dir / "config.json"
    try:
        return json.loads(path.read_text()).get(INPUTS_KEY) if path.is_file() else None
    except json.JSONDecodeError:
        raise ValueError(f"{path} is not valid JSON; restore it or pass --checkpoint of another run") from None


def _prefer_recorded(given: str, recorded: dict[str, Any] | None, configured: str) -> str:
    """An input path: the one given now, else the recorded file when it is still there, else the run's setting."""
    if given:
        return given
    path = (recorded or {}).get("path")
    return path if path and Path(path).is_file() else configured


def load_agent(
    run_dir: str | Path,
    checkpoint: str = "",
    device: str | torch.device = "cpu",
    mmae: str = "",
    saliency_model: str = "",
) -> LoadedAgent:
    """The trained agent of a run folder (any encoder; agent.pt or a checkpoint), on `device` in eval mode.

    Frozen encoders and saliency models are loaded from the files the run recorded when they exist
    (else its config's paths, or `mmae` / `saliency_model` when given)."""
    from pretrain.frozen import MissingStatisticsError
    from rl.agent import SAC
    from rl.config import SACConfig
    from rl.encoders import build_encoder
    from rl.envs import ACTION_DIM
    from rl.workspace import resolve_device

    run_dir = Path(run_dir)
    path = weights_path(run_dir, checkpoint)
    ckpt = safe_torch_load(path, what="SAC checkpoint")
    if not isinstance(ckpt, dict) or "config" not in ckpt or not ("model" in ckpt or "agent" in ckpt):
        raise ValueError(
            f"{path} is not a SAC agent.pt or checkpoint (no config and weights); pass one that rl.sac wrote"
        )
    cfg = from_stored(SACConfig, ckpt["config"])
    recorded = recorded_inputs(path.parent)
    cfg.mmae = _prefer_recorded(mmae, (recorded or {}).get("frozen_encoder"), cfg.mmae)
    if cfg.saliency == "predictor":
        cfg.saliency_model = _prefer_recorded(
            saliency_model, (recorded or {}).get("saliency_model"), cfg.saliency_model
        )
    device = resolve_device(str(device))
    try:
        encoder = build_encoder(cfg, cfg.env.image_size, runs=1)
    except MissingStatisticsError:
        if "mmae_features" in ckpt["config"]:
            raise
        # a run from before --mmae-features: it standardised only where the export had statistics
        cfg.mmae_features = "raw"
        encoder = build_encoder(cfg, cfg.env.image_size, runs=1)
    agent = SAC(None if encoder.frozen else encoder, encoder.out_dim, ACTION_DIM, cfg, runs=1)
    try:
        agent.load_state_dict(ckpt["model"] if "model" in ckpt else ckpt["agent"]["model"])
    except RuntimeError as err:
        raise ValueError(
            f"{path}: weights do not fit encoder {cfg.encoder!r} with this code ({str(err).splitlines()[0][:200]})"
        ) from None
    return LoadedAgent(
        cfg, agent.to(device).eval(), encoder.to(device).eval(), path, int(ckpt.get("step", 0)), recorded
    )


def make_observer(loaded: LoadedAgent, saliency: bool = False):
    """The run's observation path (rl/observe.py) for a pack of one env; `saliency` adds the map to it even
    when the encoder reads none (for the overlay)."""
    from rl.observe import Observer

    keys = tuple(dict.fromkeys((*loaded.encoder.obs_keys, *(("saliency",) if saliency else ()))))
    device = next(loaded.agent.parameters()).device
    frozen = [loaded.encoder if loaded.encoder.frozen else None]
    return Observer(keys, frozen, loaded.cfg, device, 1, saliency_precision(loaded))


def saliency_precision(loaded: LoadedAgent) -> str:
    """The precision the run's saliency model ran in, so evaluation sees the maps training saw: as its inputs
    record says, else (runs recorded before it) the run's own, which the model followed then."""
    record = (loaded.recorded_inputs or {}).get("saliency_model") or {}
    return record.get("precision") or getattr(loaded.cfg, "precision", "fp32")


def episode_seed_base(seed: int) -> int:
    """The seed of evaluation episode 0 (episode k: + k) of a run of seed `seed`, as rl/workspace.py's evaluations
    seed them."""
    from rl.envs import EVAL_SEED_BASE, TRAIN_SEED_STRIDE

    return EVAL_SEED_BASE + seed * TRAIN_SEED_STRIDE


def play(
    env_cfg: Any,
    base: int,
    episodes: int,
    act: Callable[[dict[str, Any], int, bool], tuple[np.ndarray, np.ndarray | None]],
    *,
    pixels: bool = False,
    oracle_saliency: bool = False,
    record: int = 0,
    stride: int = 1,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`episodes` episodes on one env, episode k seeded `base` + k, each action `act(raw, k, kept)` -> (action
    [1, A], and when `kept` (this frame goes in a recording) the saliency map [H, W] in [0, 1] the policy saw, or
    None). Returns (per episode: seed, success, return, steps; per recorded episode (the first `record`): frames
    uint8 [T, H, W, 3], saliency [T, H, W] or None, and step, return so far and success so far per kept frame)."""
    from rl.envs import make_envs
    from rl.workspace import step_success

    envs = make_envs(
        env_cfg,
        1,
        pixels=pixels or record > 0,
        oracle_saliency=oracle_saliency,
        seed_bases=[base],
        asynchronous=False,
    )
    results: list[dict[str, Any]] = []
    videos: list[dict[str, Any]] = []
    current: dict[str, list] = {"frames": [], "saliency": [], "captions": []}
    ret, success, t = 0.0, 0.0, 0
    try:
        raw, _ = envs.reset()
        while len(results) < episodes:
            kept = len(results) < record and t % stride == 0
            action, saliency = act(raw, len(results), kept)
            if kept:
                current["frames"].append(np.array(raw["pixels"][0]))
                if saliency is not None:
                    current["saliency"].append(saliency)
                current["captions"].append((t, ret, success))
            raw, reward, term, trunc, info = envs.step(action)
            done = term | trunc
            ret += float(reward[0])
            success = max(success, float(step_success(info, done)[0]))
            t += 1
            if done[0]:
                k = len(results)
                results.append({"episode": k, "seed": base + k, "success": success, "return": ret, "steps": t})
                if k < record:
                    videos.append(
                        {
                            "frames": np.stack(current["frames"]),
                            "captions": current["captions"],
                            "saliency": np.stack(current["saliency"]) if current["saliency"] else None,
                            "episode": k,
                            "success": success,
                            "return": ret,
                        }
                    )
                current = {"frames": [], "saliency": [], "captions": []}
                ret, success, t = 0.0, 0.0, 0
    finally:
        envs.close()
    return results, videos


def episode_env(env_cfg: Any, episode_steps: int = 0) -> Any:
    """The env settings of an evaluation: `env_cfg` with `episode_steps` per episode when given (else its own)."""
    return replace(env_cfg, max_episode_steps=episode_steps) if episode_steps else env_cfg


@torch.no_grad()
def rollout(
    loaded: LoadedAgent,
    observer: Any,
    episodes: int,
    seed: int | None = None,
    episode_steps: int = 0,
    record: int = 0,
    stride: int = 1,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`episodes` episodes of the deterministic policy through the run's observation path (`play`'s returns)."""
    rows = np.zeros(1, np.int64)

    def act(raw: dict[str, Any], episode: int, kept: bool) -> tuple[np.ndarray, np.ndarray | None]:
        fields = observer.fields(raw)
        stored = observer.store(fields, rows)
        action = loaded.agent.act(observer.per_run(stored, 1))[0].cpu().numpy()  # [N=1, A]: the mean action
        shown = kept and "saliency" in fields
        return action, fields["saliency"][0, 0].float().cpu().numpy() / 255.0 if shown else None  # [H, W]

    env_cfg = episode_env(loaded.cfg.env, episode_steps)
    base = episode_seed_base(loaded.cfg.seed if seed is None else seed)
    return play(
        env_cfg,
        base,
        episodes,
        act,
        pixels=observer.pixels,
        oracle_saliency=observer.oracle,
        record=record,
        stride=stride,
    )


def random_rollout(
    env_cfg: Any, base: int, episodes: int, record: int = 0, stride: int = 1
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`episodes` episodes of uniform random actions in [-1, 1] (SAC's exploration before it learns), episode k's
    drawn from a generator seeded `base` + k (the episode's seed): the same actions whatever episodes came before."""
    from rl.envs import ACTION_DIM

    rng: dict[int, np.random.Generator] = {}

    def act(raw: dict[str, Any], episode: int, kept: bool) -> tuple[np.ndarray, None]:
        if episode not in rng:
            rng.clear()
            rng[episode] = np.random.default_rng(base + episode)
        return rng[episode].uniform(-1.0, 1.0, (1, ACTION_DIM)).astype(np.float32), None

    return play(env_cfg, base, episodes, act, record=record, stride=stride)


# -- pictures --------------------------------------------------------------------------------------


def _colormap(values: np.ndarray, name: str) -> np.ndarray:
    """float [...] in [0, 1] -> uint8 RGB [..., 3] through a matplotlib colormap."""
    from matplotlib import colormaps

    return (colormaps[name](np.clip(values, 0.0, 1.0))[..., :3] * 255).astype(np.uint8)


def _blend(image: np.ndarray, heat: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    alpha = np.asarray(alpha, np.float32)[..., None] if np.ndim(alpha) else alpha
    return np.round(image * (1 - alpha) + heat * alpha).astype(np.uint8)


def saliency_overlay(big: np.ndarray, saliency: np.ndarray, scale: int, alpha: float = 0.45) -> np.ndarray:
    """An upscaled frame [H*s, W*s, 3] with a saliency map [H, W] in [0, 1] (bilinear to the frame) drawn in jet."""
    from PIL import Image

    h, w = saliency.shape
    smooth = np.asarray(Image.fromarray(saliency.astype(np.float32)).resize((w * scale, h * scale), Image.BILINEAR))
    return _blend(big, _colormap(smooth, "jet"), alpha)


def gaze_overlay(
    big: np.ndarray, gaze: dict[str, np.ndarray], scale: int, num_layers: int, alpha: float = 0.45
) -> np.ndarray:
    """An upscaled frame with a gaze encoder's attention (inferno, each grid cell over its receptive-field
    centre, as in rl/gaze_viz.py) and each Gaussian's 1-sigma ellipse and centre (cyan)."""
    from PIL import Image, ImageDraw

    from rl.gaze_viz import cell_centre_px

    attention = gaze["attention"]  # [h, w]
    h, w = attention.shape
    x0, x1 = cell_centre_px(-1.0, w, num_layers), cell_centre_px(1.0, w, num_layers)
    y0, y1 = cell_centre_px(-1.0, h, num_layers), cell_centre_px(1.0, h, num_layers)
    dx, dy = (x1 - x0) / (w - 1), (y1 - y0) / (h - 1)  # pixels between cell centres
    u = (np.arange(big.shape[1]) + 0.5) / scale  # frame coordinate of every output column
    v = (np.arange(big.shape[0]) + 0.5) / scale
    col, row = np.floor((u - x0) / dx + 0.5).astype(int), np.floor((v - y0) / dy + 0.5).astype(int)
    inside = (row[:, None] >= 0) & (row[:, None] < h) & (col[None] >= 0) & (col[None] < w)
    peak = float(attention.max()) or 1.0
    cells = attention[np.clip(row, 0, h - 1)[:, None], np.clip(col, 0, w - 1)[None]] / peak  # [H*s, W*s]
    out = _blend(big, _colormap(cells, "inferno"), np.where(inside, alpha, 0.0))
    if "mu" not in gaze:
        return out
    image = Image.fromarray(out)
    draw = ImageDraw.Draw(image)
    grid_scale = np.array([(x1 - x0) / 2, (y1 - y0) / 2])  # pixels per grid unit (x, y)
    angles = np.linspace(0, 2 * np.pi, 49)
    circle = np.stack([np.cos(angles), np.sin(angles)])  # [2, 49]
    for mu, sigma, rho, weight in zip(gaze["mu"], gaze["sigma"], gaze["rho"], gaze["weight"]):
        cov = np.array([[sigma[0] ** 2, rho * sigma[0] * sigma[1]], [rho * sigma[0] * sigma[1], sigma[1] ** 2]])
        cov_px = cov * np.outer(grid_scale, grid_scale) + 1e-9 * np.eye(2)
        centre = np.array([cell_centre_px(mu[0], w, num_layers), cell_centre_px(mu[1], h, num_layers)])
        ring = (centre[:, None] + np.linalg.cholesky(cov_px) @ circle) * scale  # [2, 49] output pixels
        draw.line([tuple(p) for p in ring.T], fill=(0, 255, 255), width=max(1, round(1 + 2 * float(weight))))
        cx, cy = centre * scale
        draw.line([(cx - 4, cy), (cx + 4, cy)], fill=(0, 255, 255))
        draw.line([(cx, cy - 4), (cx, cy + 4)], fill=(0, 255, 255))
    return np.asarray(image)


def caption(frame: np.ndarray, text: str) -> np.ndarray:
    """`text` in white on a dark band at the top of the frame."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((3, 2), text)
    draw.rectangle((0, 0, image.width, box[3] + 2), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255))
    return np.asarray(image)


def video_frames(episode: dict[str, Any], scale: int, overlay: str = "none", encoder: Any = None) -> list[np.ndarray]:
    """A recorded episode's frames, upscaled `scale` times, with the overlay and a caption each."""
    frames = episode["frames"]  # [T, H, W, 3]
    gazes = None
    if overlay == "gaze":
        from rl.gaze_viz import gaze_of, trunk_layers

        gazes, layers = gaze_of(encoder, frames), trunk_layers(encoder)
    out = []
    for i, frame in enumerate(frames):
        big = frame.repeat(scale, axis=0).repeat(scale, axis=1)
        if overlay == "saliency":
            big = saliency_overlay(big, episode["saliency"][i], scale)
        elif gazes is not None:
            big = gaze_overlay(big, gazes[i], scale, layers)
        t, ret, success = episode["captions"][i]
        out.append(
            caption(big, f"episode {episode['episode']}  t={t}  return {ret:.0f}" + ("  SUCCESS" if success else ""))
        )
    return out


def write_video(frames: list[np.ndarray], path: str | Path, fps: int = 20) -> Path:
    """uint8 frames [H, W, 3] -> `path` atomically: .mp4 (H.264 through imageio-ffmpeg), .gif or .webp (animated, Pillow)."""
    path = Path(path)
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        try:
            import imageio.v3 as iio
            import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary imageio writes MP4 with)
        except ImportError:
            raise ValueError(
                "writing MP4 needs imageio and imageio-ffmpeg: `pip install imageio imageio-ffmpeg`, or pass "
                "--video-format gif|webp"
            ) from None
        payload = iio.imwrite(
            "<bytes>", np.stack(frames), extension=".mp4", fps=fps, codec="libx264", macro_block_size=2
        )
    elif suffix in (".gif", ".webp"):
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        buffer = io.BytesIO()
        extra = {"quality": 80, "method": 4} if suffix == ".webp" else {"optimize": False}
        images[0].save(
            buffer,
            format=suffix[1:].upper(),
            save_all=True,
            append_images=images[1:],
            duration=max(1, round(1000 / fps)),
            loop=0,
            **extra,
        )
        payload = buffer.getvalue()
    else:
        raise ValueError(f"video {path}: the suffix must be .mp4, .gif or .webp")
    return atomic_write_bytes(path, payload)


# -- the command -----------------------------------------------------------------------------------


def _summary(results: list[dict[str, Any]]) -> dict[str, float]:
    returns = [r["return"] for r in results]
    return {
        "success_rate": float(np.mean([r["success"] for r in results])),
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
    }


def write_report(cfg: EvaluateConfig, report: dict[str, Any], path: Path) -> Path:
    """Write `report` with the flags under "config" (`python -m rl.evaluate --config <report>.json` reruns
    the evaluation) to `path`, atomically."""
    return atomic_write_json(path, {**report, "config": flat_dict(cfg)})


def evaluate(cfg: EvaluateConfig) -> Path:
    """Evaluate the run of `cfg` (or, `--policy random`, random actions on its episodes or its task's); returns the
    JSON written (and the video beside it with --video)."""
    from rl.gaze import GazeEncoder
    from rl.provenance import check_inputs, run_inputs

    cfg.validate()
    if cfg.policy == "random":
        return evaluate_random(cfg)
    loaded = load_agent(cfg.run, cfg.checkpoint, cfg.device, cfg.mmae, cfg.saliency_model)
    if cfg.overlay == "gaze" and not isinstance(loaded.encoder, GazeEncoder):
        raise ValueError(
            f"--overlay gaze: {cfg.run} trained encoder {loaded.cfg.encoder!r}, which has no gaze; "
            "use --overlay saliency or none"
        )
    observer = make_observer(loaded, saliency=cfg.overlay == "saliency")
    inputs = run_inputs(observer)
    check_inputs(loaded.recorded_inputs, inputs, f"{loaded.run_dir / 'config.json'}")
    results, videos = rollout(
        loaded, observer, cfg.episodes, cfg.seed, cfg.episode_steps, cfg.recorded_episodes, cfg.frame_stride
    )
    seed = loaded.cfg.seed if cfg.seed is None else cfg.seed
    report = {
        "run": str(loaded.run_dir),
        "policy": "agent",
        "checkpoint": str(loaded.checkpoint),
        "step": loaded.step,
        "task": loaded.cfg.env.task,
        "encoder": loaded.cfg.encoder,
        "seed": seed,
        "episode_steps": cfg.episode_steps or loaded.cfg.env.max_episode_steps,
        "inputs": inputs,
    }
    out = Path(cfg.out) if cfg.out else loaded.run_dir / "evaluate"
    what = f"{loaded.cfg.encoder} on {loaded.cfg.env.task} ({loaded.checkpoint}, step {loaded.step})"
    return finish(
        cfg,
        report,
        results,
        videos,
        out / f"{loaded.checkpoint.stem}-seed{seed}-{cfg.episodes}ep",
        what,
        loaded.encoder,
    )


def evaluate_random(cfg: EvaluateConfig) -> Path:
    """`--policy random`: uniform random actions (`random_rollout`) on the episodes of --run's evaluations (its task,
    episode length and seed) or of --task's at data.env.EnvConfig's defaults."""
    from data.env import EnvConfig
    from rl.config import SACConfig
    from rl.outcome import random_policy_file

    if cfg.run:
        path = Path(cfg.run) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: --policy random --run takes the run's task, episode length and seed from its "
                "config.json; give a run folder rl.sac wrote, or --task instead of --run"
            )
        run_cfg = from_stored(SACConfig, json.loads(path.read_text()))
        env_cfg, own_seed, out = run_cfg.env, run_cfg.seed, Path(cfg.run) / "evaluate"
    else:
        env_cfg, own_seed, out = EnvConfig(task=cfg.task), 0, Path("runs/evaluate") / cfg.task
    env_cfg = episode_env(env_cfg, cfg.episode_steps)
    env_cfg.validate()  # an unknown task is named before any env starts
    seed = own_seed if cfg.seed is None else cfg.seed
    results, videos = random_rollout(
        env_cfg, episode_seed_base(seed), cfg.episodes, cfg.recorded_episodes, cfg.frame_stride
    )
    report = {
        "run": cfg.run or None,
        "policy": "random",
        "checkpoint": None,
        "step": 0,
        "task": env_cfg.task,
        "encoder": None,
        "seed": seed,
        "episode_steps": env_cfg.max_episode_steps,
        "inputs": {},
    }
    out = Path(cfg.out) if cfg.out else out
    stem = out / Path(random_policy_file(seed, cfg.episodes)).stem
    return finish(cfg, report, results, videos, stem, f"random actions on {env_cfg.task}")


def finish(
    cfg: EvaluateConfig,
    report: dict[str, Any],
    results: list[dict[str, Any]],
    videos: list[dict[str, Any]],
    stem: Path,
    what: str,
    encoder: Any = None,
) -> Path:
    """Write an evaluation's video (--video) and its JSON report (`report`, the episodes' summary and episodes, the
    device) at `stem`.<suffix>; print a line of it; return the JSON's path."""
    from common.runs import device_description

    video_path = None
    if cfg.video:
        frames = [f for episode in videos for f in video_frames(episode, cfg.scale, cfg.overlay, encoder)]
        overlay = "" if cfg.overlay == "none" else f"-{cfg.overlay}"
        video_path = write_video(frames, stem.with_name(f"{stem.name}{overlay}.{cfg.video_format}"), cfg.fps)
    report = {
        **report,
        **_summary(results),
        "episodes": results,
        "device": device_description(),
        "video": str(video_path) if video_path else None,
    }
    path = write_report(cfg, report, stem.with_name(f"{stem.name}.json"))
    print(
        f"{what}: success {report['success_rate']:.2f}, return {report['return_mean']:.1f} +- "
        f"{report['return_std']:.1f} over {len(results)} episodes (seed {report['seed']}); wrote {path}"
        + (f" and {video_path}" if video_path else ""),
        flush=True,
    )
    return path


def clip(
    run_dir: str | Path,
    out: str | Path,
    max_steps: int = 100,
    stride: int = 2,
    scale: int = 3,
    fps: int = 15,
    overlay: str = "none",
    seed: int | None = None,
) -> Path:
    """A short looping clip of the first evaluation episode of a run, for a report: `out` (.gif, .webp or .mp4),
    its first `max_steps` steps (at most the run's episode length), every `stride`-th, upscaled `scale` times."""
    loaded = load_agent(run_dir)
    observer = make_observer(loaded, saliency=overlay == "saliency")
    steps = min(max_steps, loaded.cfg.env.max_episode_steps)
    _, videos = rollout(loaded, observer, 1, seed, steps, record=1, stride=stride)
    return write_video(video_frames(videos[0], scale, overlay, loaded.encoder), out, fps)


def report_clips(
    sac_root: str | Path, out: str | Path, make: bool = False, name: str = "clip.gif"
) -> dict[tuple[str, str], Path]:
    """One clip per (task, encoder) of the runs below `sac_root` (<task>/<encoder>/seed<k>/, the lowest seed with
    weights), copied to `out`/<task>_<encoder>.gif for a self-contained report: the run's evaluate/<name>
    (the pipeline writes it), else, with `make`, a new one (`clip`, a few seconds each)."""
    from rl.workspace import checkpoint_steps

    chosen: dict[tuple[str, str], Path] = {}
    for run_dir in sorted(
        Path(sac_root).glob("*/*/seed*"), key=lambda d: (d.parent, int(d.name[4:]) if d.name[4:].isdigit() else 0)
    ):
        has_weights = (run_dir / "agent.pt").exists() or checkpoint_steps(run_dir)
        if has_weights and run_dir.name[4:].isdigit():
            chosen.setdefault((run_dir.parent.parent.name, run_dir.parent.name), run_dir)
    clips: dict[tuple[str, str], Path] = {}
    for (task, encoder), run_dir in chosen.items():
        source = run_dir / "evaluate" / name
        if not source.exists() and make:
            clip(run_dir, source, overlay="gaze" if encoder.startswith("gaze") else "none")
        if source.exists():
            target = Path(out) / f"{task}_{encoder}{source.suffix}"
            atomic_write_bytes(target, source.read_bytes())  # a clip is a few hundred KiB
            clips[(task, encoder)] = target
    return clips


def main(argv: list[str] | None = None) -> Path:
    return run_command(EvaluateConfig, evaluate, argv)


if __name__ == "__main__":
    main()
