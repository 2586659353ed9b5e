"""What the GPU node needs and lacks, packed small enough to travel with the checkout.

The node has Python 3.12 with torch (CUDA), timm, h5py, pillow, numpy, matplotlib and tqdm, and no
network. It lacks Meta-World, MuJoCo, gymnasium, PyOpenGL, glfw, WebDataset and the vendor-neutral
GL libraries (libglvnd) that MUJOCO_GL=egl needs. What travels (tracked files + carried folders)
must stay under 64 MiB, and the Meta-World wheel alone is 37 MB: textures and meshes of tasks we
never run. `python -m pipeline.bundle` (on a machine with a package index) writes <out>/:

  wheels/   the node's Python's wheels of the packages above, at the versions installed here;
            Meta-World's rebuilt with only the asset files the chosen tasks' models load
  debs/     libglvnd's EGL/GL .deb files (amd64)
  setup.sh  run once on the node: installs the wheels into <out>/site, unpacks the .debs, ldconfig
  env.sh    source it on the node: PYTHONPATH and MUJOCO_GL=egl

and checks the total against the limit. On the node: `sh .gpu/setup.sh && . .gpu/env.sh`, then
`python -m pipeline --preset gpu` (the device tool: carry [".gpu"]).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from common.cli import option, run_command
from data.tasks import PAPER_TASKS

#: distributions the node lacks (versions: those installed here, which the tests ran)
NODE_LACKS = (
    "metaworld",
    "mujoco",
    "gymnasium",
    "PyOpenGL",
    "glfw",
    "webdataset",
    "braceexpand",
    "Farama-Notifications",
)
#: libglvnd's libraries: MuJoCo's EGL backend loads libEGL.so.1, which dispatches to the NVIDIA driver
GL_DEBS = ("libegl1", "libglvnd0", "libopengl0", "libgl1", "libglx0", "libgles2")
#: files in Meta-World's wheel that only a model that names them loads
ASSET_SUFFIXES = {".png", ".jpg", ".jpeg", ".stl", ".obj", ".msh", ".skn"}
MIB = 1 << 20


@dataclass
class BundleConfig:
    """Download and trim what the GPU node lacks into one folder that travels with the checkout."""

    tasks: str = option(",".join(PAPER_TASKS), "comma-separated Meta-World tasks whose assets the bundle keeps")
    out: str = option(".gpu", "bundle folder (git-ignored; the device tool's carry)")
    python_version: str = option("3.12", "the node's Python (the wheels' tag)")
    limit_mib: float = option(64.0, "what may travel: tracked files + the bundle, MiB")

    @property
    def task_list(self) -> list[str]:
        return [t for t in self.tasks.split(",") if t]


def used_assets(tasks: list[str]) -> set[str]:
    """Paths, relative to Meta-World's package folder, of every mesh, texture, height field and skin
    file the tasks' MuJoCo models load (includes resolved by MuJoCo's own parser)."""
    import metaworld
    import mujoco
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    root = Path(metaworld.__file__).resolve().parent
    unknown = [t for t in tasks if t not in ALL_V3_ENVIRONMENTS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; e.g. {', '.join(PAPER_TASKS)}")
    used: set[str] = set()
    for task in tasks:
        model = Path(ALL_V3_ENVIRONMENTS[task]().model_name)
        spec = mujoco.MjSpec.from_file(str(model))
        groups = ((spec.meshes, spec.meshdir), (spec.textures, spec.texturedir), (spec.hfields, ""), (spec.skins, ""))
        for items, folder in groups:
            for item in items:
                for name in [item.file, *getattr(item, "cubefiles", [])]:
                    if name:
                        used.add((model.parent / folder / name).resolve().relative_to(root).as_posix())
    return used


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def trim_wheel(src: Path, dst: Path, package: str, keep: set[str]) -> tuple[int, int]:
    """Copy wheel `src` to `dst` without the asset files of `package` not in `keep` (paths relative to
    the package folder), with a RECORD that lists exactly what remains. Returns (files dropped, bytes dropped)."""
    dropped = dropped_bytes = 0
    rows: list[list[str]] = []
    record_name = None
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst.with_suffix(".tmp"), "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            name = info.filename
            if name.endswith(".dist-info/RECORD"):
                record_name = name
                continue
            inside = name[len(package) + 1 :] if name.startswith(package + "/") else None
            if inside is not None and Path(name).suffix.lower() in ASSET_SUFFIXES and inside not in keep:
                dropped, dropped_bytes = dropped + 1, dropped_bytes + info.file_size
                continue
            data = zin.read(info)
            zout.writestr(info, data)
            rows.append([name, _record_hash(data), str(len(data))])
        if record_name is None:
            raise ValueError(f"{src} has no .dist-info/RECORD: not a wheel")
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([*rows, [record_name, "", ""]])
        zout.writestr(record_name, text.getvalue())
    dst.with_suffix(".tmp").replace(dst)
    return dropped, dropped_bytes


def _pip_download(requirements: list[str], folder: Path, python_version: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "-d",
        str(folder),
    ]
    for platform in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"):
        cmd += ["--platform", platform]
    if subprocess.run(cmd + requirements).returncode != 0:
        raise OSError(
            f"pip download of {', '.join(requirements)} failed (a package index must be reachable here); the bundle is unchanged"
        )


SETUP = """#!/bin/sh
# Run on the GPU node: the wheels into site/ beside this script, libglvnd into /.
set -e
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m pip install -q --no-index --no-deps --target "$here/site" "$here"/wheels/*.whl
SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
for deb in "$here"/debs/*.deb; do $SUDO dpkg -x "$deb" /; done
$SUDO ldconfig
echo "installed; now, from the checkout's root: . {out}/env.sh"
"""
ENV = """# source from the checkout's root on the GPU node
export PYTHONPATH="$PWD/{out}/site:$PWD${{PYTHONPATH:+:$PYTHONPATH}}"
export MUJOCO_GL=egl
"""


def tracked_bytes() -> int:
    """Bytes of the files git tracks in this checkout (what always travels)."""
    listed = subprocess.run(["git", "ls-files", "-z"], capture_output=True)
    if listed.returncode != 0:
        raise ValueError("run it from the project's git checkout: what travels is its tracked files plus the bundle")
    names = listed.stdout.split(b"\0")
    return sum(Path(n.decode()).stat().st_size for n in names if n and Path(n.decode()).is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def bundle(cfg: BundleConfig) -> Path:
    """Write (or rewrite) the bundle; returns its folder."""
    out = Path(cfg.out)
    if out.is_absolute() or ".." in out.parts:
        raise ValueError(f"--out {cfg.out}: must be a folder inside the checkout, which is what travels (e.g. .gpu)")
    keep = used_assets(cfg.task_list)
    out.mkdir(parents=True, exist_ok=True)
    # built beside the bundle and swapped in only when complete: a failed download keeps the old bundle
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir=out) as fresh:
        raw, wheels, debs = Path(tmp), Path(fresh) / "wheels", Path(fresh) / "debs"
        wheels.mkdir(), debs.mkdir()
        _pip_download([f"{name}=={metadata.version(name)}" for name in NODE_LACKS], raw, cfg.python_version)
        for whl in sorted(raw.glob("*.whl")):  # the untrimmed Meta-World wheel never enters the bundle
            target = wheels / whl.name
            if whl.name.lower().startswith("metaworld-"):
                n, size = trim_wheel(whl, target, "metaworld", keep)
                print(
                    f"{whl.name}: {whl.stat().st_size / MIB:.1f} -> {target.stat().st_size / MIB:.1f} MiB "
                    f"({n} asset files of other tasks dropped, {size / MIB:.1f} MiB; kept {len(keep)} for {cfg.tasks})"
                )
            else:
                shutil.copyfile(whl, target)
        if subprocess.run(["apt-get", "download", *GL_DEBS], cwd=debs, capture_output=True).returncode != 0:
            raise OSError(
                f"apt-get download {' '.join(GL_DEBS)} failed (needs a Debian package source); {out} is unchanged"
            )
        for name in ("wheels", "debs"):  # downloads only: a bundle of other versions must not linger
            shutil.rmtree(out / name, ignore_errors=True)
            (Path(fresh) / name).rename(out / name)
    (out / "setup.sh").write_text(SETUP.format(out=out.as_posix()))
    (out / "env.sh").write_text(ENV.format(out=out.as_posix()))
    total, tracked = folder_bytes(out), tracked_bytes()
    print(
        f"bundle {out}: {total / MIB:.1f} MiB; tracked files {tracked / MIB:.1f} MiB; "
        f"together {(total + tracked) / MIB:.1f} of {cfg.limit_mib:g} MiB"
    )
    if total + tracked > cfg.limit_mib * MIB:
        raise ValueError(
            f"the bundle and the tracked files take {(total + tracked) / MIB:.1f} MiB, over the "
            f"{cfg.limit_mib:g} MiB that travel: bundle fewer --tasks or untrack large files"
        )
    return out


def main(argv=None) -> None:
    out = run_command(BundleConfig, bundle, argv, errors=(OSError,))
    print(f"bundle: {out}; on the node: sh {out}/setup.sh && . {out}/env.sh")


if __name__ == "__main__":
    main()
