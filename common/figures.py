"""Saving matplotlib figures the same way in every stage."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common.io import atomic_write_bytes  # noqa: E402


def write_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, save (atomically, creating the folder) and close `fig`; returns the path. A full disk
    is a DiskFullError naming `path`, and the previous figure stays whole."""
    path = Path(path)
    try:
        if fig.get_layout_engine() is None:  # a figure laid out by its own engine (constrained) keeps it
            fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
