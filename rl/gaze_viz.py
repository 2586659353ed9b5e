"""Pictures of where a trained gaze agent looks, beside human saliency for the same frames.

    python -m rl.gaze_viz --run runs/sac/reach-v3/gaze/seed0 [--frames 8] [--seed 0] [--policy agent|expert]

Loads the run's SAC weights (agent.pt, else its latest checkpoint; `rl.evaluate.load_agent`), rolls out one evaluation episode of the
deterministic policy (or Meta-World's scripted expert, `--policy expert`), picks evenly spaced frames
and writes `<run>/gaze_strip.png`: row 1, each frame with the gaze attention (heat) and each Gaussian's
1- and 2-sigma ellipses; row 2, the same frames with the predicted human saliency
(`saliency.predictor.SaliencyPredictor` from runs/saliency/<task>/, or --saliency-model) or, when no
model exists, the oracle's maps (simulator clicks -> `data.clicks.clicks_to_map`), labelled as such.

The gaze lives on the trunk's 11 x 11 feature grid; a cell is drawn at the centre of its receptive
field (pixels 21.5 ... 41.5 of a 64-px frame, 10 px per grid unit), and every receptive field spans
43 px: the attention selects features that see most of the frame, centred where it is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

from common.cli import option, run_command  # noqa: E402
from common.figures import write_figure  # noqa: E402
from data.clicks import clicks_to_map  # noqa: E402
from data.env import make_env  # noqa: E402
from rl.evaluate import load_agent  # noqa: E402
from rl.gaze import GazeEncoder  # noqa: E402
from rl.observe import default_saliency_model  # noqa: E402


@dataclass
class GazeVizConfig:
    """Draw a trained gaze agent's attention over an episode's frames, beside human saliency."""

    run: str = option("runs/sac/reach-v3/gaze/seed0", "SAC run folder of a gaze encoder")
    frames: int = option(8, "frames in the strip (evenly spaced over the episode)")
    seed: int = option(0, "seed of the rolled-out episode (offset from the evaluation seeds)")
    policy: str = option("agent", "agent: the trained policy; expert: Meta-World's scripted policy")
    episode_steps: int = option(0, "steps to roll out (0: the run's max episode steps)")
    saliency_model: str = option(
        "", "saliency checkpoint (default runs/saliency/<task>/student.pt, else best.pt; none: oracle maps)"
    )
    out: str = option("", "output PNG (default <run>/gaze_strip.png)")

    def validate(self) -> "GazeVizConfig":
        if self.frames < 1:
            raise ValueError(f"--frames must be >= 1, got {self.frames}")
        if self.policy not in ("agent", "expert"):
            raise ValueError(f"--policy must be agent or expert, got {self.policy!r}")
        return self


def cell_centre_px(grid_value: np.ndarray | float, cells: int, num_layers: int = 11) -> np.ndarray | float:
    """Grid coordinate in [-1, 1] -> pixel coordinate (continuous, pixel i spans [i, i + 1]) of the
    receptive-field centre: the trunk's first conv has stride 2, the other num_layers - 1 are 3x3 valid."""
    j = (np.asarray(grid_value) + 1) / 2 * (cells - 1)
    return 2 * (j + num_layers - 1) + 1.5


def trunk_layers(encoder: GazeEncoder) -> int:
    return len(encoder.trunk.weights)


def draw_gaze(ax, frame: np.ndarray, gaze: dict[str, np.ndarray], num_layers: int) -> None:
    """One frame with the attention map (heat over the receptive-field centres) and Gaussian ellipses.

    gaze: attention [h, w]; for Gaussian heads also mu [K, 2], sigma [K, 2], rho [K], weight [K].
    """
    h, w = gaze["attention"].shape
    x0, x1 = cell_centre_px(-1.0, w, num_layers), cell_centre_px(1.0, w, num_layers)
    y0, y1 = cell_centre_px(-1.0, h, num_layers), cell_centre_px(1.0, h, num_layers)
    half_x, half_y = (x1 - x0) / (w - 1) / 2, (y1 - y0) / (h - 1) / 2
    ax.imshow(frame, extent=(0, frame.shape[1], frame.shape[0], 0))
    ax.imshow(
        gaze["attention"],
        cmap="inferno",
        alpha=0.45,
        interpolation="nearest",
        extent=(x0 - half_x, x1 + half_x, y1 + half_y, y0 - half_y),
    )
    if "mu" in gaze:
        scale = np.array([(x1 - x0) / 2, (y1 - y0) / 2])  # pixels per grid unit (x, y)
        for mu, sigma, rho, weight in zip(gaze["mu"], gaze["sigma"], gaze["rho"], gaze["weight"]):
            cov = np.array([[sigma[0] ** 2, rho * sigma[0] * sigma[1]], [rho * sigma[0] * sigma[1], sigma[1] ** 2]])
            cov_px = cov * np.outer(scale, scale)
            vals, vecs = np.linalg.eigh(cov_px)
            angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
            centre = (cell_centre_px(mu[0], w, num_layers), cell_centre_px(mu[1], h, num_layers))
            for n_sigma, style in ((1, "-"), (2, "--")):
                ax.add_patch(
                    Ellipse(
                        centre,
                        2 * n_sigma * np.sqrt(vals[1]),
                        2 * n_sigma * np.sqrt(vals[0]),
                        angle=angle,
                        fill=False,
                        color="cyan",
                        ls=style,
                        lw=0.6 + 1.4 * float(weight),
                    )
                )
            ax.plot(*centre, "c+", ms=5)
    ax.set_xlim(0, frame.shape[1])
    ax.set_ylim(frame.shape[0], 0)
    ax.set_axis_off()


@torch.no_grad()
def gaze_of(encoder: GazeEncoder, frames: np.ndarray) -> list[dict[str, np.ndarray]]:
    """uint8 frames [N, H, W, 3] -> per frame: attention [h, w] (+ mu, sigma, rho, weight for Gaussian heads)."""
    device = next(encoder.parameters()).device
    pixels = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).to(device)  # [N, 3, H, W]
    out = {k: v[0] for k, v in encoder.attention(pixels[None]).items()}  # the first (only) run of the pack
    keys = ["attention"] + ([k for k in ("mu", "sigma", "rho", "weight") if k in out] if "mu" in out else [])
    return [{k: out[k][i].cpu().numpy() for k in keys} for i in range(len(frames))]


def gaze_strip(
    encoder: GazeEncoder,
    frames: np.ndarray,
    saliency: np.ndarray | None,
    saliency_label: str,
    out: str | Path,
    title: str = "",
    steps: list[int] | None = None,
) -> Path:
    """Write the two-row figure for uint8 frames [N, H, W, 3] and saliency maps float [N, H, W] in [0, 1]."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
    if saliency is not None and saliency.shape != frames.shape[:3]:
        raise ValueError(f"saliency maps {saliency.shape} must match the frames {frames.shape[:3]}")
    n = len(frames)
    gazes = gaze_of(encoder, frames)
    rows = 2 if saliency is not None else 1
    fig, axes = plt.subplots(rows, n, figsize=(1.6 * n, 1.75 * rows + 0.5), squeeze=False)
    layers = trunk_layers(encoder)
    for i in range(n):
        draw_gaze(axes[0, i], frames[i], gazes[i], layers)
        if steps is not None:
            axes[0, i].set_title(f"t={steps[i]}", fontsize=7)
        if saliency is not None:
            axes[1, i].imshow(frames[i])
            axes[1, i].imshow(saliency[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            axes[1, i].set_axis_off()
    axes[0, 0].text(
        -0.08, 0.5, "gaze", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right", fontsize=8
    )
    if saliency is not None:
        axes[1, 0].text(
            -0.08, 0.5, "saliency", transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right", fontsize=8
        )
    fig.suptitle(f"{title}\nrow 2: {saliency_label}" if saliency is not None else title, fontsize=8)
    return write_figure(fig, out, dpi=150)


def rollout(cfg: Any, agent, policy: str, seed: int, steps: int, n_frames: int) -> dict[str, Any]:
    """One episode; evenly spaced frames [n, H, W, 3], their step indices and oracle clicks."""
    from metaworld.policies import ENV_POLICY_MAP

    from rl.envs import EVAL_SEED_BASE

    env = make_env(cfg.env)
    expert = ENV_POLICY_MAP[cfg.env.task]() if policy == "expert" else None
    rng = np.random.default_rng(seed)
    keep = set(np.linspace(0, steps - 1, n_frames).round().astype(int).tolist())
    frames, clicks, kept = [], [], []
    try:
        obs, _ = env.reset(seed=EVAL_SEED_BASE + 777 + seed)
        for t in range(steps):
            if t in keep:
                frames.append(obs["pixels"])
                clicks.append(env.oracle_clicks(rng))
                kept.append(t)
            if expert is not None:
                action = expert.get_action(env.raw_state)
            else:
                pixels = torch.from_numpy(np.ascontiguousarray(obs["pixels"].transpose(2, 0, 1)[None, None]))
                action = agent.act({"pixels": pixels})[0, 0].numpy()  # [R=1, N=1, A]: the mean action
            obs, _, _, truncated, _ = env.step(action)
            if truncated:
                break
    finally:
        env.close()
    return {"frames": np.stack(frames), "steps": kept, "clicks": clicks}


def saliency_maps(task: str, frames: np.ndarray, clicks: list[np.ndarray], model: str) -> tuple[np.ndarray, str]:
    """Predicted maps if a saliency model exists (the RL observation path's predictor), else the oracle's maps;
    with a label saying which."""
    from rl.observe import load_predictor

    try:
        predictor, path = load_predictor(task, model, device="cpu")
    except FileNotFoundError:
        maps = np.stack([clicks_to_map(c, frames.shape[1], frames.shape[2]) for c in clicks])
        return maps, f"ORACLE saliency (simulator clicks; no saliency model at {model or default_saliency_model(task)})"
    return predictor(frames), f"predicted human saliency ({path})"


def run(cfg: GazeVizConfig) -> Path:
    cfg.validate()
    run_dir = Path(cfg.run)
    loaded = load_agent(run_dir)
    if not isinstance(loaded.encoder, GazeEncoder):
        raise ValueError(f"{run_dir} trained encoder {loaded.cfg.encoder!r}, which has no gaze; pick a gaze run")
    sac_cfg, agent = loaded.cfg, loaded.agent
    steps = cfg.episode_steps or sac_cfg.env.max_episode_steps
    ep = rollout(sac_cfg, agent, cfg.policy, cfg.seed, steps, cfg.frames)
    sal, label = saliency_maps(sac_cfg.env.task, ep["frames"], ep["clicks"], cfg.saliency_model)
    title = f"{sac_cfg.encoder} on {sac_cfg.env.task} ({run_dir}), {cfg.policy} policy, episode seed {cfg.seed}"
    out = gaze_strip(agent.encoder, ep["frames"], sal, label, cfg.out or run_dir / "gaze_strip.png", title, ep["steps"])
    print(f"wrote {out}")
    return out


def main(argv: list[str] | None = None) -> Path:
    return run_command(GazeVizConfig, run, argv)


if __name__ == "__main__":
    main()
