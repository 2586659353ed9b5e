"""The oracle annotator: simulated clicks from the simulator's geometry.

For every frame it projects task-relevant 3-D points (gripper tip, task object, goal) through the
camera's intrinsics and extrinsics into the upright image, drops points hidden behind other
geometry or outside the image, and returns them as normalised clicks, exactly what a human
annotator's clicks are. Like the paper's annotators (25 +- 5.8 clicks per frame, more saliency
near the gripper tip) most clicks go to the gripper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.gl import configure_headless_gl

configure_headless_gl()  # before MuJoCo is imported (see data.env)

import mujoco  # noqa: E402

# Geom groups MuJoCo draws by default; collision-only geoms (higher groups) cannot hide anything.
_VISIBLE_GROUPS = np.array([1, 1, 1, 0, 0, 0], np.uint8)


@dataclass(frozen=True)
class Part:
    """A task-relevant region: 3-D anchor points, the spread of clicks around them, a share."""

    name: str
    anchors: np.ndarray  # [K, 3] world points the clicks are spread over
    spread: float  # metres: std of the 3-D jitter around a sampled anchor
    share: float  # fraction of the frame's clicks


def camera_pose(model: mujoco.MjModel, data: mujoco.MjData, cam_id: int) -> tuple[np.ndarray, np.ndarray, float]:
    """World position, rotation (columns: camera x right, y up, z backward) and vertical fov (deg)."""
    return data.cam_xpos[cam_id].copy(), data.cam_xmat[cam_id].reshape(3, 3).copy(), float(model.cam_fovy[cam_id])


def project_points(env, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points [N, 3] -> normalised upright image coordinates [N, 2] (x right, y down) and depth [N].

    Pinhole model of MuJoCo's camera; the 180-degree rotation matches `PixelMetaWorld.render`.
    Points behind the camera get depth <= 0.
    """
    pos, rot, fovy = camera_pose(env.model, env.data, env.camera_id)
    rel = (np.asarray(points, np.float64) - pos) @ rot  # camera frame: [N, 3]
    depth = -rel[:, 2]  # the camera looks along its -z axis
    focal = 0.5 / np.tan(np.deg2rad(fovy) / 2)  # in units of the image height
    safe = np.where(depth > 1e-6, depth, 1e-6)
    x_cam = 0.5 + focal * rel[:, 0] / safe  # raw render: x right
    y_cam = 0.5 - focal * rel[:, 1] / safe  # raw render: y down
    uv = np.stack([1.0 - x_cam, 1.0 - y_cam], axis=1)  # rotate 180 degrees to upright
    return uv, depth


def is_visible(env, points: np.ndarray, tolerance: float) -> np.ndarray:
    """True where no drawn geometry lies between the camera and the point (within `tolerance` m)."""
    pos, _, _ = camera_pose(env.model, env.data, env.camera_id)
    geom_id = np.zeros(1, np.int32)
    visible = np.zeros(len(points), bool)
    for i, p in enumerate(np.asarray(points, np.float64)):
        ray = p - pos
        dist = float(np.linalg.norm(ray))
        hit = mujoco.mj_ray(env.model, env.data, pos, ray / dist, _VISIBLE_GROUPS, 1, -1, geom_id)
        visible[i] = hit < 0 or hit >= dist - tolerance
    return visible


def task_parts(env) -> list[Part]:
    """Gripper, object and goal for any Meta-World task (reach tasks have no object to click)."""
    mw = env.mw
    tip = np.asarray(mw.tcp_center, np.float64)
    pads = np.stack([mw.data.body("leftpad").xpos, mw.data.body("rightpad").xpos])
    hand = np.asarray(mw.data.body("hand").xpos, np.float64)
    # More anchors at the tip than up the hand: clicks concentrate near the gripper tip.
    gripper = np.concatenate([np.repeat(tip[None], 4, 0), pads, hand[None]])
    parts = [Part("gripper", gripper, 0.008, 0.55)]
    if not env.config.task.startswith("reach"):
        obj = np.asarray(mw._get_pos_objects()[:3], np.float64)
        parts.append(Part("object", obj[None], 0.012, 0.30))
    goal = getattr(mw, "_target_pos", None)
    if goal is not None and np.all(np.isfinite(goal)) and np.abs(goal).max() < 5:
        parts.append(Part("goal", np.asarray(goal, np.float64)[None], 0.006, 0.15))
    total = sum(p.share for p in parts)
    return [Part(p.name, p.anchors, p.spread, p.share / total) for p in parts]


def oracle_clicks(
    env,
    rng: np.random.Generator,
    mean_clicks: float = 25.0,
    std_clicks: float = 5.8,
    max_tries: int = 4,
) -> np.ndarray:
    """Clicks for the env's current frame: float32 [N, 2] normalised (x, y), visible points only."""
    n_total = int(np.clip(round(rng.normal(mean_clicks, std_clicks)), 5, 60))
    clicks = []
    for part in task_parts(env):
        want = max(1, int(round(part.share * n_total)))
        got: list[np.ndarray] = []
        for _ in range(max_tries):
            anchors = part.anchors[rng.integers(0, len(part.anchors), want)]
            pts = anchors + rng.normal(0.0, part.spread, anchors.shape)
            uv, depth = project_points(env, pts)
            inside = (depth > 0) & np.all((uv >= 0) & (uv < 1), axis=1)
            keep = inside & is_visible(env, pts, tolerance=2.5 * part.spread + 0.01)
            got.extend(uv[keep])
            if len(got) >= want:
                break
        clicks.extend(got[:want])
    return np.asarray(clicks, np.float32).reshape(-1, 2)
