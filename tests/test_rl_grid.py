"""rl.grid: the single-run command a grid builds, and a worker's scratch copies of the pack's inputs."""

from __future__ import annotations

import hashlib

from common.cli import from_flat
from rl import grid
from rl.grid import GridConfig, plan, run_config, sac_command


def test_extra_keeps_a_quoted_value_in_one_word(tmp_path, monkeypatch):
    """--extra is split as a shell would (shlex, like the pipeline's pass-through flags): a quoted path with a space is one value."""
    monkeypatch.chdir(tmp_path)
    cfg = from_flat(
        GridConfig,
        tasks="reach-v3",
        encoders="cnn_rgbs",
        extra="--saliency-model 'runs/my models/student.pt' --eval-episodes 3",
    )
    run = plan(cfg)[0]
    assert sac_command(cfg, run)[-4:] == ["--saliency-model", "runs/my models/student.pt", "--eval-episodes", "3"]
    sac = run_config(cfg, run)
    assert (sac.saliency_model, sac.eval_episodes) == ("runs/my models/student.pt", 3)


def test_a_changed_upload_replaces_the_scratch_copy_atomically(tmp_path, monkeypatch):
    """A newer input file on the driver replaces the node's scratch copy by rename: a pack still reading
    the old copy keeps reading whole old bytes (an in-place write would change them under it)."""
    driver = str(tmp_path / "driver")
    root = tmp_path / "scratch" / "visarl-grid" / hashlib.sha1(driver.encode()).hexdigest()[:12]
    copy = root / "runs/saliency/reach-v3/student.pt"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"old model")
    monkeypatch.setattr(grid, "_execute", lambda *args, **kwargs: 0)  # no pack runs: only the uploads matter
    with open(copy, "rb") as reader:
        code, folders = grid._ray_pack(
            "spec.json", [], "driver", driver, str(tmp_path / "scratch"), {"runs/saliency/reach-v3/student.pt": b"new"}
        )
        assert reader.read() == b"old model"
    assert (code, folders) == (0, {}) and copy.read_bytes() == b"new"
    assert not list(copy.parent.glob(".*.tmp"))  # no temporary left behind
