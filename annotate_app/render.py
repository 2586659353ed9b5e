"""Sharp frames for the annotation page: each selected frame re-rendered at the display size.

A frame whose shard sample stored its scene state (`data.collect` does) is re-rendered by MuJoCo at
the display size from that state, with the collection's camera and render settings (the quality
mode, fast or default, can be chosen). Before a re-render is trusted, the same state is rendered at
the stored frame's size and must equal the stored frame pixel for pixel (tolerance 0: on one machine
the replay is exact); otherwise, or with no scene state (folders collected before scene states
existed, synthetic frames), the page shows the stored frame enlarged by nearest neighbour, and says so
once. Clicks are normalised coordinates either way, so the maps do not depend on what is shown.

Renders are cached as PNG under `<root>/<task>/renders/<quality>-<size>px/<key>.png`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from annotate_app.store import FrameSet, task_dir
from common.io import atomic_write_bytes
from data.shards import png_bytes

TASK_LINES = {
    "reach-v3": "reach: move the gripper to the red goal ball",
    "drawer-open-v3": "drawer open: grab the drawer's handle and pull the drawer open",
    "door-open-v3": "door open: grab the door's handle and swing the door open",
    "faucet-open-v3": "faucet open: turn the faucet's handle to open it",
}


def task_line(task: str) -> str:
    """What the task asks, in one line (a generic line for tasks without a written one)."""
    if task in TASK_LINES:
        return TASK_LINES[task]
    name = task.removesuffix("-v3").replace("-", " ")
    return f"{name}: the gripper must {name} (Meta-World task {task})"


def enlarge(img: np.ndarray, factor: int) -> np.ndarray:
    """uint8 [H, W, 3] -> [H*f, W*f, 3], every pixel a f x f block (nearest neighbour)."""
    return np.repeat(np.repeat(img, factor, 0), factor, 1)


@dataclass
class DisplayFrames:
    """The pictures the page shows, one per selected frame, all of one size."""

    images: list[np.ndarray]  # N x uint8 [H*scale, W*scale, 3]
    rendered: list[bool]  # True: re-rendered from the scene state; False: the stored frame enlarged
    note: str = ""  # why some frames are enlarged ("" when all are re-rendered)


def render_dir(root: str | Path, task: str, quality: str, size: int) -> Path:
    return task_dir(root, task) / "renders" / f"{quality}-{size}px"


def display_frames(frames: FrameSet, root: str | Path, scale: int, quality: str | None = None) -> DisplayFrames:
    """Each frame at `scale` times its stored size: re-rendered (cached) where its scene state
    reproduces it, else enlarged. `quality` is "fast" or "default" (None: the collection's)."""
    h, size = frames.height, frames.height * scale
    enlarged = [enlarge(img, scale) for img in frames.images]
    render = frames.info.get("render")
    if frames.scenes is None or not render or frames.width != h:
        return DisplayFrames(
            enlarged,
            [False] * len(frames),
            f"the shard folder {frames.info.get('frames_dir', '?')} stores no "
            "scene states (collected before they existed, or synthetic): frames are the stored "
            f"{h}-px frames enlarged; collect with `python -m data.collect` for sharp frames",
        )
    quality = quality or render["render_quality"]
    cache = render_dir(root, frames.task, quality, size)
    images, rendered, problems = list(enlarged), [False] * len(frames), []
    renderer = None
    try:
        for i, key in enumerate(frames.keys):
            if not frames.has_scene[i]:
                problems.append(f"frame {i + 1}: no scene state")
                continue
            path = cache / f"{key}.png"
            cached = _read_png(path, size)
            if cached is None:
                if renderer is None:
                    renderer = SceneRenderer(frames.task, render["camera"], h, render["render_quality"], size, quality)
                cached, why = renderer.render(frames.scenes[i], frames.images[i])
                if cached is None:
                    problems.append(f"frame {i + 1}: {why}")
                    continue
                atomic_write_bytes(path, png_bytes(cached))
            images[i], rendered[i] = cached, True
    except (RuntimeError, ValueError) as err:  # no GL, an unknown task or layout: every frame left enlarged
        problems.append(f"re-rendering failed ({err})")
    finally:
        if renderer is not None:
            renderer.close()
    note = ""
    if problems:
        note = (
            f"{len(frames) - sum(rendered)} of {len(frames)} frames show the stored {h}-px frame enlarged: "
            + "; ".join(problems[:3])
            + (" ..." if len(problems) > 3 else "")
        )
    return DisplayFrames(images, rendered, note)


class SceneRenderer:
    """Two envs of the task: one at the stored size to check a scene state, one at the display size."""

    def __init__(self, task: str, camera: str, stored_size: int, stored_quality: str, size: int, quality: str):
        from data.env import EnvConfig, PixelMetaWorld

        self.check = PixelMetaWorld(
            EnvConfig(task=task, camera=camera, image_size=stored_size, render_quality=stored_quality)
        )
        self.large = PixelMetaWorld(EnvConfig(task=task, camera=camera, image_size=size, render_quality=quality))

    def render(self, scene: np.ndarray, stored: np.ndarray) -> tuple[np.ndarray | None, str]:
        """The large render of `scene`, or None and why when its small render differs from `stored`."""
        from data.env import SceneError

        try:
            self.check.restore_scene(scene)
        except SceneError as err:
            return None, str(err)
        differ = int(np.any(self.check.render() != stored, axis=-1).sum())
        if differ:
            return None, (
                f"its re-render differs from the stored frame in {differ} pixels "
                "(another Meta-World version or GL driver?)"
            )
        self.large.restore_scene(scene)
        return self.large.render(), ""

    def close(self) -> None:
        self.check.close()
        self.large.close()


def _read_png(path: Path, size: int) -> np.ndarray | None:
    """A cached render, or None if absent, unreadable or of another size (then it is rendered again)."""
    try:
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
    except (OSError, ValueError):
        return None
    return img if img.shape == (size, size, 3) else None
