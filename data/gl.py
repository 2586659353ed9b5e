"""Headless OpenGL selection for MuJoCo: EGL first, OSMesa as the fallback."""

from __future__ import annotations

import ctypes.util
import os
import sys

from common.cli import StartupError

#: the values MuJoCo accepts for MUJOCO_GL on Linux (mujoco/gl_context.py), rendering off included
VALID_BACKENDS = (
    "egl",
    "osmesa",
    "glfw",
    "glx",
    "enable",
    "enabled",
    "on",
    "true",
    "1",
    "disable",
    "disabled",
    "off",
    "false",
    "0",
)


def configure_headless_gl() -> str:
    """Set MUJOCO_GL (and PYOPENGL_PLATFORM) before MuJoCo is imported; return the backend.

    A user's explicit MUJOCO_GL is respected; one MuJoCo does not know is a StartupError (a ValueError;
    a command started with it exits 2 with one line) instead of MuJoCo's traceback at import.
    Otherwise EGL is used when libEGL can be found (Mesa's llvmpipe renders on a CPU-only machine),
    else OSMesa when libOSMesa can be found.
    """
    backend = os.environ.get("MUJOCO_GL")
    if backend and backend.lower().strip() not in VALID_BACKENDS:
        raise StartupError(
            f"MUJOCO_GL={backend!r} is not a rendering backend MuJoCo knows; set it to one of egl, osmesa, glfw "
            "(or unset it to choose automatically)"
        )
    if not backend:
        if ctypes.util.find_library("EGL"):
            backend = "egl"
        elif ctypes.util.find_library("OSMesa"):
            backend = "osmesa"
        else:
            backend = "egl"  # the render call will fail with the hint below
        if "mujoco" in sys.modules:
            print(
                "warning: mujoco was imported before data/; MUJOCO_GL may be ignored",
                file=sys.stderr,
            )
        os.environ["MUJOCO_GL"] = backend
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
        load_triton_before_mesa()
    return backend


def serial_rasterizer() -> None:
    """Rasterize on the rendering thread (Mesa llvmpipe's LP_NUM_THREADS=0), unless LP_NUM_THREADS is set.

    For processes that render frame after frame (RL env workers, collection): llvmpipe's default hands each
    frame to one rasterizer thread per core, whose hand-offs cost more than they save at 64 px: a 64-px fast
    frame takes ~20 % less CPU and wall time on one thread, pixel for pixel the same, while a core has time
    to spare (`bench/render_threads.py`). On a machine the runs already saturate (the CPU table's two packs
    of 3 on 2 cores) env-steps/s did not change (BENCHMARKS.md): the hand-offs cost only spare time there.
    Not for latency-bound renders: the annotation app's 512-px frames take 1.3-1.6x the wall time on one
    thread. llvmpipe reads the variable at the process's first GL context: call this before its first renderer.
    """
    os.environ.setdefault("LP_NUM_THREADS", "0")


def load_triton_before_mesa() -> None:
    """Import triton (when installed) before Mesa renders. Both carry an LLVM; triton loaded after Mesa's
    llvmpipe segfaults the process, which torch does lazily at its first optimiser (a frame rendered, then
    `torch.optim.Adam(...)`: crash; the other order works). Here, not at the first renderer: OSMesa's LLVM
    is loaded as soon as mujoco is imported. ~0.1 s once torch is imported."""
    import importlib.util

    if "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401


GL_HINT = (
    "headless rendering failed. Install an OpenGL backend: libEGL (Debian: libegl1, with Mesa's "
    "libegl-mesa0) or OSMesa (`apt-get install -y libosmesa6`, then MUJOCO_GL=osmesa)."
)
