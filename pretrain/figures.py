"""Pictures of a pretraining run: the reconstruction grid (as in MultiMAE/ViSaRL Fig. 6) and the loss curve."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from common.figures import write_figure  # noqa: E402
from pretrain.model import CHANNELS, MultiMAE, patchify, unpatchify  # noqa: E402


@torch.no_grad()
def reconstruction_grid(
    model: MultiMAE, inputs: dict[str, torch.Tensor], path: str | Path, seed: int = 0, title: str = ""
) -> Path:
    """Rows = frames; per modality: input, masked input (grey = masked), prediction with visible patches pasted."""
    cfg = model.cfg
    was_training = model.training
    model.eval()
    gen = torch.Generator(next(model.parameters()).device).manual_seed(seed)
    _, _, preds, visible = model(inputs, generator=gen)
    model.train(was_training)
    L, p = cfg.grid**2, cfg.patch_size
    columns: list[tuple[str, np.ndarray, str | None]] = []
    for m_i, m in enumerate(cfg.modalities):
        C = CHANNELS[m]
        target = patchify(inputs[m].float(), p)  # [B, L, C*p*p]
        vis = visible[:, m_i * L : (m_i + 1) * L, None].float()  # [B, L, 1]
        masked = unpatchify(target * vis + 0.5 * (1 - vis), p, C)  # [B, C, H, W]
        pasted = unpatchify(target * vis + model.to_pixels(m, preds[m]).clamp(0, 1) * (1 - vis), p, C)
        cmap = None if C == 3 else "inferno"
        for name, img in (
            (f"{m}", inputs[m]),
            (f"{m} masked ({int(vis[0].sum())} visible)", masked),
            (f"{m} predicted", pasted),
        ):
            columns.append((name, img.float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy(), cmap))
    n = columns[0][1].shape[0]
    fig, axes = plt.subplots(n, len(columns), figsize=(1.6 * len(columns), 1.6 * n), squeeze=False)
    for c, (name, imgs, cmap) in enumerate(columns):
        for r in range(n):
            ax = axes[r, c]
            img = imgs[r] if imgs.shape[-1] == 3 else imgs[r, ..., 0]
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(name.replace(" (", "\n("), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    return write_figure(fig, path, dpi=80)


def loss_curve(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """Training loss (per logged step) and held-out masked-patch error per epoch -> PNG."""
    run_dir = Path(run_dir)
    train = list(csv.DictReader(open(run_dir / "train.csv")))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = [int(float(r["step"])) for r in train]
    for key in ("loss", "loss_rgb", "loss_saliency", "loss_rgb_norm"):
        if train and key in train[0] and train[0][key] != "":
            axes[0].plot(steps, [float(r[key]) for r in train], label=key, lw=1)
    (
        axes[0].set_yscale("log"),
        axes[0].set_xlabel("step"),
        axes[0].set_title("training loss (masked patches)"),
        axes[0].legend(fontsize=7),
    )
    if (run_dir / "eval.csv").exists():
        ev = list(csv.DictReader(open(run_dir / "eval.csv")))
        ep = [int(float(r["epoch"])) for r in ev]
        for key, label in (
            ("rgb_mse", "model"),
            ("rgb_mse_mean_patch", "mean patch (train)"),
            ("rgb_mse_visible_mean", "mean of visible patches"),
        ):
            if ev and key in ev[0]:
                axes[1].plot(ep, [float(r[key]) for r in ev], marker="o", ms=3, label=label)
        (
            axes[1].set_yscale("log"),
            axes[1].set_xlabel("epoch"),
            axes[1].set_title(
                ("held-out" if ev and ev[-1].get("held_out") == "True" else "training-frame") + " masked-patch RGB MSE"
            ),
            axes[1].legend(fontsize=7),
        )
    return write_figure(fig, path or run_dir / "loss_curve.png", dpi=80)
