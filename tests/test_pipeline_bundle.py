"""The GPU node's bundle: Meta-World's wheel trimmed to the assets the tasks load still renders
every task exactly as the full install does, and installs with pip from its rebuilt RECORD."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import metaworld
import pytest

from data.tasks import PAPER_TASKS
from pipeline.bundle import ASSET_SUFFIXES, BundleConfig, bundle, trim_wheel, used_assets

REPO = Path(__file__).resolve().parents[1]
RENDER = """
import hashlib, json, metaworld
from data.env import EnvConfig, make_env
frames = {}
for task in %r:
    env = make_env(EnvConfig(task=task))
    obs, _ = env.reset(seed=3)
    obs, *_ = env.step(env.action_space.sample() * 0)
    frames[task] = hashlib.sha256(obs["pixels"].tobytes()).hexdigest()
    env.close()
print(json.dumps({"metaworld": metaworld.__file__, "frames": frames}))
"""


def _installed_wheel(path: Path) -> Path:
    """The installed Meta-World as a wheel (the files its RECORD lists, inside site-packages)."""
    dist = metadata.distribution("metaworld")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in dist.files:
            if not f.as_posix().startswith("..") and "__pycache__" not in f.parts:
                z.write(f.locate(), f.as_posix())
    return path


def _render(tasks, pythonpath: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*pythonpath, str(REPO)]))
    done = subprocess.run(
        [sys.executable, "-c", RENDER % (list(tasks),)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_used_assets_are_the_few_files_the_task_models_load():
    root = Path(metaworld.__file__).parent
    used = used_assets(list(PAPER_TASKS))
    assert "assets/textures/wood2.png" in used and "assets/objects/meshes/table/tablebody.stl" in used
    assert all((root / p).is_file() for p in used)
    everything = [p for p in root.rglob("*") if p.suffix.lower() in ASSET_SUFFIXES]
    kept_bytes = sum((root / p).stat().st_size for p in used)
    assert len(used) < len(everything) / 3 and kept_bytes < 0.25 * sum(p.stat().st_size for p in everything)
    assert used_assets(["reach-v3"]) < used  # the door and faucet meshes belong to their tasks only


def test_the_trimmed_wheel_installs_and_renders_every_task_as_the_full_install(tmp_path):
    full = _installed_wheel(tmp_path / "metaworld-3.1.1-py3-none-any.whl")
    trimmed = tmp_path / "trimmed" / full.name
    trimmed.parent.mkdir()
    dropped, dropped_bytes = trim_wheel(full, trimmed, "metaworld", used_assets(list(PAPER_TASKS)))
    assert dropped > 100 and trimmed.stat().st_size < full.stat().st_size / 4
    with zipfile.ZipFile(trimmed) as z:  # RECORD lists exactly the files left
        record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        rows = list(csv.reader(io.StringIO(z.read(record).decode())))
        assert sorted(r[0] for r in rows) == sorted(z.namelist())
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site), str(trimmed)],
        check=True,
        capture_output=True,
    )
    ours, reference = _render(PAPER_TASKS, [str(site)]), _render(PAPER_TASKS, [])
    assert ours["metaworld"].startswith(str(site)) and not reference["metaworld"].startswith(str(site))
    assert ours["frames"] == reference["frames"]


def test_a_bundle_outside_the_checkout_or_of_unknown_tasks_is_refused_before_any_download():

    with pytest.raises(ValueError, match="inside the checkout"):
        bundle(BundleConfig(out="/tmp/gpu-bundle"))
    with pytest.raises(ValueError, match="unknown task.*reach-v3"):
        bundle(BundleConfig(tasks="reach-v9", out=".gpu-never-written"))
    assert not Path(".gpu-never-written").exists()
