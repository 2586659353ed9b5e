"""Saving matplotlib figures the same way in every stage."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, save (creating the folder) and close `fig`; returns the path."""
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
