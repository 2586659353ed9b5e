"""The click-to-Gaussian annotation page (Gradio): one frame at a time, every click saved at once.

`python -m annotate_app --task reach-v3 --frames data/shards/reach-v3 --annotator alice` serves alice alone,
without a login; `--users FILE` (or the VISARL_ANNOTATE_USERS variable, see `annotate_app.users`) serves a
team: each annotator logs in with their own name and password, and their clicks go to their own folder.

Each frame is shown re-rendered at the display size from its stored scene state (see
`annotate_app.render`), beside the saliency map its clicks build; the page says the task in one line.

The page binds to 127.0.0.1. Any other address needs logins (`--users`), or `--open-to-network`
to say explicitly that anyone who can reach the port may open the page and its API. `--auth
user:password` is refused: a password on the command line is visible to every user in `ps`.
Gradio's analytics are off.
"""

import ipaddress
import itertools
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from markdown_it import MarkdownIt
from PIL import Image

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: it reads this at import
import gradio as gr  # noqa: E402

from annotate_app.guard import MAX_BODY, RequestGuard, is_ip
from annotate_app.render import DisplayFrames, display_frames, enlarge, task_line
from annotate_app.store import (
    IDLE_CAP_S,
    MAX_CLICKS,
    ORACLE,
    SELECT_METHODS,
    AnnotationError,
    AnnotatorStore,
    FrameSet,
    check_name,
    click_array,
    create_or_load_frameset,
)
from annotate_app.users import USERS_ENV, Login, load_users
from common.cli import fail, option, parse_config
from data.clicks import clicks_to_map
from data.env import RENDER_QUALITIES
from data.shards import ALLOW_INCOMPLETE_HELP

SHORTCUTS = (
    ("z", "undo last click", "btn-undo"),
    ("c", "clear frame", "btn-clear"),
    ("ArrowLeft", "previous frame", "btn-prev"),
    ("ArrowRight", "next frame", "btn-next"),
    ("n", "next unannotated frame", "btn-next-un"),
    ("h", "hide / show the heat overlay", "chk-overlay"),
)

HEAD_JS = """
<script>
(() => {
  // Keyboard shortcuts: press the matching button (or checkbox) unless the user is typing.
  const keys = %s;
  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const t = e.target;
    if (t && (t.tagName === 'INPUT' && t.type !== 'checkbox' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
    const id = keys[e.key] || keys[e.key.toLowerCase()];
    if (!id) return;
    const host = document.getElementById(id);
    if (!host) return;
    const el = (host.tagName === 'BUTTON' || host.tagName === 'INPUT') ? host : host.querySelector('button, input');
    if (!el) return;
    e.preventDefault();
    el.click();
  });
  // Never lose a click: Gradio ignores clicks on the picture while its redrawn version is still
  // loading (naturalWidth 0) or while the <img> is being swapped (the click then lands on its
  // container). Hold such clicks and replay them on the picture, in order, once it has loaded.
  const held = [];
  const ready = (img) => img && img.complete && img.naturalWidth > 0;
  const flush = () => {
    const img = document.querySelector('#frame-view img');
    if (!ready(img)) { setTimeout(flush, 5); return; }
    while (held.length) {
      const [x, y] = held.shift();
      const ev = new MouseEvent('click', {bubbles: true, cancelable: true, clientX: x, clientY: y, view: window});
      ev.replayed = true;
      img.dispatchEvent(ev);
    }
  };
  document.addEventListener('click', (e) => {
    const view = e.target instanceof Element ? e.target.closest('#frame-view') : null;
    if (!view || e.replayed) return;
    const img = view.querySelector('img');
    if (e.target === img && ready(img) && held.length === 0) return;
    e.stopImmediatePropagation();
    e.preventDefault();
    held.push([e.clientX, e.clientY]);
    if (held.length === 1) flush();
  }, true);
  // Gradio applies the responses of overlapping events in the order their data is ready, not the
  // order they ran, so after rapid clicks an older view can be drawn last (49 clicks shown of 50
  // saved). Each view's status carries its revision; when the one shown is older than one already
  // drawn, ask the server for the current view (once per revision seen).
  let newest = 0, asked = 0;
  const check = () => {
    const stamp = document.querySelector('#status .view-rev');
    if (!stamp) return;
    const rev = Number(stamp.dataset.rev);
    if (rev >= newest) { newest = rev; return; }
    if (asked >= newest) return;
    const host = document.getElementById('btn-refresh');
    const button = host && (host.tagName === 'BUTTON' ? host : host.querySelector('button'));
    if (button) { asked = newest; button.click(); }
  };
  new MutationObserver(check).observe(document.documentElement, {childList: true, subtree: true, attributes: true, characterData: true});
})();
</script>
""" % ("{" + ", ".join(f"'{k}': '{i}'" for k, _, i in SHORTCUTS) + "}")

# The status is rendered to HTML here and shown by gr.HTML, so the view's revision stamp (a hidden span that
# HEAD_JS reads) reaches the page as written, outside Markdown's sanitiser and asynchronous renderer.
_STATUS_MARKDOWN = MarkdownIt("commonmark", {"html": False})


def status_html(markdown: str) -> str:
    """The status panel's HTML from its Markdown (raw HTML in it, as from an error message, is escaped)."""
    return _STATUS_MARKDOWN.render(markdown)


CSS = """
#frame-view img { image-rendering: pixelated; cursor: crosshair; }
#map-view img { image-rendering: pixelated; }
#frame-view .icon-button-wrapper, #map-view .icon-button-wrapper { display: none !important; }
#status { font-size: 1.05rem; }
.shortcut-table td, .shortcut-table th { padding: 2px 10px; }
"""


@dataclass
class AppConfig:
    """Serve the saliency annotation page for one task: to one annotator (--annotator) or to a team (--users)."""

    task: str = option("reach-v3", "task name (letters, digits, - and _)")
    annotator: str = option(
        "", "your name (letters, digits, - and _): the page serves you alone, without a login; or use --users"
    )
    users: str = option(
        "",
        f"file of a team's annotators, one name:password (or name:scrypt$... from python -m annotate_app.users NAME) a line, chmod 600; each logs in and clicks into their own folder (default without --annotator: the {USERS_ENV} variable, entries separated by commas or newlines)",
    )
    frames: str = option(
        "",
        "shard folder to choose frames from (default: data/shards/<task>); used only the first time a task is opened",
    )
    n: int | None = option(None, "frames per task, chosen once and stored (default 30)")
    select: str | None = option(
        None, f"how frames are chosen the first time: {', '.join(SELECT_METHODS)} (default random)"
    )
    seed: int | None = option(None, "seed of the frame choice (default 0)")
    out: str = option("data/annotations", "annotations root folder")
    host: str = option(
        "127.0.0.1",
        "address to bind; any non-loopback address (0.0.0.0: every interface) needs --users or --open-to-network",
    )
    port: int = option(7860, "port to serve on")
    auth: str = option(
        "", f"refused (a password on the command line is visible in ps): use --users FILE or {USERS_ENV}"
    )
    allowed_hosts: str = option(
        "",
        "comma-separated host names the page may be opened under besides IP addresses, localhost and --host (e.g. annotate.lab.example); other Host headers get 403 (DNS rebinding)",
    )
    open_to_network: bool = option(
        False,
        "serve a non-loopback --host without logins (--users): anyone who can reach the port may read the frames and add clicks",
    )
    allow_incomplete: bool = option(False, ALLOW_INCOMPLETE_HELP)
    display_size: int = option(
        512,
        "frames are shown at about this many pixels (the largest multiple of the frame size not above it): re-rendered from their scene states, else enlarged",
    )
    render_quality: str | None = option(
        None,
        f"quality of the re-rendered frames: {' or '.join(RENDER_QUALITIES)} (MuJoCo's shadows, reflections, multisampling); default: the collection's",
    )

    @property
    def team(self) -> bool:
        """Logins decide the annotator: --users, or no --annotator and the users variable set."""
        return bool(self.users) or (not self.annotator and bool(os.environ.get(USERS_ENV)))

    def validate(self) -> "AppConfig":
        if self.auth:
            raise ValueError(
                "--auth is refused: a password on the command line is visible to every user of this machine in ps; "
                f"put name:password lines in a file only you can read (chmod 600) and pass --users FILE, or set {USERS_ENV}"
            )
        if self.annotator and self.users:
            raise ValueError(
                "--annotator serves one annotator without a login and --users a team with logins; pass one of them"
            )
        if not self.annotator and not self.team:
            raise ValueError(
                f"--annotator NAME (you alone, no login) or --users FILE (a team, each logs in; or set {USERS_ENV}) is required"
            )
        names = [("task", self.task)] + ([("annotator", self.annotator)] if self.annotator else [])
        for what, name in names:
            check_name(name, what)
        if self.annotator == ORACLE:
            raise ValueError(f"annotator name {ORACLE!r} is reserved for the simulator (python -m annotate_app.oracle)")
        if self.select is not None and self.select not in SELECT_METHODS:
            raise ValueError(f"--select must be one of {', '.join(SELECT_METHODS)}, got {self.select!r}")
        if self.open_to_network and (is_loopback(self.host) or self.team):
            raise ValueError(
                f"--open-to-network has no effect with {'logins (--users)' if self.team else f'--host {self.host}'}: "
                "it only allows a non-loopback --host without logins; drop it"
            )
        if not is_loopback(self.host) and not self.team and not self.open_to_network:
            raise ValueError(
                f"--host {self.host} would serve the page and its API to anyone who can reach port {self.port}, "
                f"with no password: give logins with --users FILE (or {USERS_ENV}), or pass --open-to-network if that is intended"
            )
        if not 1 <= self.port <= 65535:
            raise ValueError(f"--port must be in 1..65535, got {self.port}")
        if not 64 <= self.display_size <= 2048:
            raise ValueError(f"--display-size must be in [64, 2048], got {self.display_size}")
        if self.render_quality is not None and self.render_quality not in RENDER_QUALITIES:
            raise ValueError(
                f"--render-quality must be one of {', '.join(RENDER_QUALITIES)}, got {self.render_quality!r}"
            )
        return self


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1): reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def _heat_lut() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["jet"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.float32)  # [256, 3]


def display_scale(frames: FrameSet, display_size: int) -> int:
    """The integer factor from the stored frame size to the display size (at least 1)."""
    return max(1, display_size // max(frames.height, frames.width))


class Annotator:
    """Server-side logic of the page; every handler returns (frame picture, map picture, status, session state)."""

    def __init__(self, store: AnnotatorStore, display_size: int = 512, display: DisplayFrames | None = None):
        self.store = store
        self.frames: FrameSet = store.frames
        h, w = self.frames.height, self.frames.width
        self.scale = display_scale(self.frames, display_size)
        self.disp_h, self.disp_w = h * self.scale, w * self.scale
        # the heat overlay is computed in (q x q) cells and enlarged: ~q^2 times less work
        self.q = next(q for q in (4, 2, 1) if self.disp_h % q == 0 and self.disp_w % q == 0)
        self.map_scale = max(1, self.scale // 2)  # the map panel: half the frame's display size
        self._lut = _heat_lut()
        if display is None:  # no re-rendering asked: the stored frames enlarged
            display = DisplayFrames(
                [enlarge(img, self.scale) for img in self.frames.images], [False] * len(self.frames)
            )
        if any(img.shape != (self.disp_h, self.disp_w, 3) for img in display.images):
            raise ValueError(f"display frames must all be {self.disp_h}x{self.disp_w} pixels")
        self.display = display
        self._maps: dict[int, tuple[tuple, np.ndarray, np.ndarray, np.ndarray]] = {}  # see maps()

    # drawing ----------------------------------------------------------------------------------
    def maps(self, index: int, rec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A record's clicks [K, 2], overlay map [Hd/q, Wd/q] and exported-size map [H, W], kept per
        frame until its clicks change (a refused or repeated view of a frame draws without recomputing)."""
        key = (rec["revision"], rec["updated"], len(rec["clicks"]))
        hit = self._maps.get(index)
        if hit is None or hit[0] != key:
            clicks = click_array(rec)
            hit = (
                key,
                clicks,
                clicks_to_map(clicks, self.disp_h // self.q, self.disp_w // self.q),
                clicks_to_map(clicks, self.frames.height, self.frames.width),
            )
            self._maps[index] = hit
        return hit[1], hit[2], hit[3]

    def draw(self, index: int, clicks: np.ndarray, overlay: bool, m: np.ndarray | None = None) -> np.ndarray:
        """The frame with the heat overlay (map `m` [Hd/q, Wd/q], computed if not given) and click markers."""
        out = self.display.images[index].copy()  # uint8 [Hd, Wd, 3]
        if overlay and len(clicks):
            q = self.q
            if m is None:
                m = clicks_to_map(clicks, self.disp_h // q, self.disp_w // q)  # [Hd/q, Wd/q]
            heat = np.take(self._lut, np.round(m * 255).astype(np.uint8), axis=0)  # [Hd/q, Wd/q, 3]
            alpha = (0.65 * np.sqrt(m))[..., None]  # [Hd/q, Wd/q, 1]
            rows, cols = np.nonzero(alpha[..., 0] > 0.5 / 255)  # blend only the cells the map reaches
            if len(rows):
                r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
                tint = enlarge(heat[r0:r1, c0:c1] * alpha[r0:r1, c0:c1], q)  # [hq*q, wq*q, 3]
                keep = enlarge(1.0 - alpha[r0:r1, c0:c1], q)  # [hq*q, wq*q, 1]
                box = out[r0 * q : r1 * q, c0 * q : c1 * q]
                box[:] = (box * keep + tint).astype(np.uint8)
        for x, y in clicks[
            -MAX_CLICKS:
        ]:  # a hollow 7x7 marker (dark, then white ring) with a dark centre pixel; the newest
            # MAX_CLICKS only: a frame holds no more unless its file was edited by hand, and they would cover it all
            cx, cy = min(int(x * self.disp_w), self.disp_w - 1), min(int(y * self.disp_h), self.disp_h - 1)
            for r, colour in ((3, 20), (2, 255)):
                y0, y1, x0, x1 = (
                    max(cy - r, 0),
                    min(cy + r + 1, self.disp_h),
                    max(cx - r, 0),
                    min(cx + r + 1, self.disp_w),
                )
                inner = out[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].copy()
                out[y0:y1, x0:x1] = colour
                out[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] = inner  # keep what lies inside the ring visible
            out[cy, cx] = 20
        return out

    def draw_map(self, clicks: np.ndarray, m: np.ndarray | None = None) -> np.ndarray:
        """The saliency map the clicks build at the stored frame size (what export writes), coloured."""
        if m is None:
            m = clicks_to_map(clicks, self.frames.height, self.frames.width)  # [H, W]
        return enlarge(np.take(self._lut, np.round(m * 255).astype(np.uint8), axis=0).astype(np.uint8), self.map_scale)

    def status(self, index: int, rec: dict[str, Any], message: str = "") -> str:
        flags = self.store.done_flags()
        done = sum(f is True for f in flags)
        n = len(self.frames)
        state = "done" if rec["done"] else ("in progress" if rec["clicks"] else "not started")
        lines = [
            f"### Frame {index + 1} of {n} · {self.store.annotator}",
            f"**Clicks on this frame:** {len(rec['clicks'])} &nbsp;·&nbsp; **Frames done:** {done} of {n}",
            f"Frame `{self.frames.keys[index]}` ({state}), {rec['seconds']:.0f} s spent on it",
        ]
        bad = [str(i + 1) for i, f in enumerate(flags) if f is None]
        if bad:
            lines.append(f"> **Unreadable annotation file(s) for frame(s) {', '.join(bad)}**: open them to see why.")
        if message:
            lines.append(f"> {message}")
        return status_html("\n\n".join(lines))

    def view(self, state: dict[str, Any], overlay: bool, message: str = "", rec: dict[str, Any] | None = None):
        index = state["index"]
        if rec is None:
            rec = self.store.read(index)
        state["seen"] = [c["id"] for c in rec["clicks"]]
        state["message"] = message
        clicks, overlay_map, frame_map = self.maps(index, rec)
        return (
            self.draw(index, clicks, overlay, overlay_map),
            self.draw_map(clicks, frame_map),
            self.status(index, rec, message),
            state,
        )

    # time ---------------------------------------------------------------------------------------
    @staticmethod
    def _elapsed(state: dict[str, Any]) -> float:
        now = time.time()
        dt = min(now - state.get("tick", now), IDLE_CAP_S)
        state["tick"] = now
        return max(dt, 0.0)

    # handlers -----------------------------------------------------------------------------------
    def new_session(self, overlay: bool = True):
        state = {
            "annotator": self.store.annotator,
            "sid": uuid.uuid4().hex[:12],
            "index": self.store.resume_index(),
            "tick": time.time(),
            "seen": [],
        }
        done = sum(f is True for f in self.store.done_flags())
        msg = (
            f"Resumed at the first unfinished frame ({done} done)."
            if done
            else "Click the pixels that matter for the task."
        )
        return self._safe(state, overlay, lambda: msg)

    def _safe(self, state: dict[str, Any], overlay: bool, action):
        if "index" not in state:  # an event that beat the page's load event: start the session here
            state.update(sid=uuid.uuid4().hex[:12], index=self.store.resume_index(), tick=time.time(), seen=[])
        try:
            result = action()
        except AnnotationError as err:
            gr.Warning(str(err))
            try:
                return self.view(state, overlay, f"**Not saved:** {err}")
            except AnnotationError:
                none = np.zeros((0, 2), np.float32)
                return (
                    self.draw(state["index"], none, False),
                    self.draw_map(none),
                    status_html(f"### Frame {state['index'] + 1} of {len(self.frames)}\n\n> **Error:** {err}"),
                    state,
                )
        if isinstance(result, tuple):
            rec, message = result
            return self.view(state, overlay, message, rec)
        return self.view(state, overlay, result)

    def click(self, state: dict[str, Any], overlay: bool, px: float, py: float):
        def act():
            if not (0 <= px < self.disp_w and 0 <= py < self.disp_h):
                raise AnnotationError(
                    f"click at ({px}, {py}) lies outside the {self.disp_w}x{self.disp_h} image; ignored"
                )
            x, y = (px + 0.5) / self.disp_w, (py + 0.5) / self.disp_h
            rec = self.store.add_click(state["index"], x, y, session=state["sid"], seconds=self._elapsed(state))
            return rec, ""

        return self._safe(state, overlay, act)

    def undo(self, state, overlay):
        def act():
            seen = state.get("seen") or []
            rec = self.store.undo(state["index"], seen, seconds=self._elapsed(state))
            return rec, "Undid the last click." if seen else "Nothing to undo on this frame."

        return self._safe(state, overlay, act)

    def clear(self, state, overlay):
        def act():
            rec = self.store.clear(state["index"], state.get("seen") or [], seconds=self._elapsed(state))
            return rec, "Cleared this frame (the removed clicks stay in the file's history)."

        return self._safe(state, overlay, act)

    def goto(self, state, overlay, target: str):
        def act():
            n, i = len(self.frames), state["index"]
            self.store.leave(i, self._elapsed(state))
            if target == "prev":
                j, msg = (i - 1, "") if i > 0 else (i, "This is the first frame.")
            elif target == "next":
                j, msg = (i + 1, "") if i < n - 1 else (i, "This is the last frame; press n for any unannotated one.")
            else:
                nxt = self.store.next_unfinished(i)
                j, msg = (nxt, "") if nxt is not None else (i, f"All {n} frames are done. Thank you!")
            state["index"] = j
            return msg

        return self._safe(state, overlay, act)

    def toggle(self, state, overlay):
        return self._safe(state, overlay, lambda: "")

    def refresh(self, state, overlay):
        """The current view again, with the last message (the page asks when it drew an older view last)."""
        return self._safe(state, overlay, lambda: state.get("message", ""))


class Team:
    """The Annotator each request works for: its login's (a team server) or the one annotator's (no login).

    The frames and their display pictures are shared; stores, map caches and sessions are per annotator.
    A session remembers whose it is, so a browser tab that logs in as someone else starts afresh.
    """

    def __init__(
        self,
        stores: list[AnnotatorStore],
        display_size: int = 512,
        display: DisplayFrames | None = None,
        login: bool = False,
    ):
        first = Annotator(stores[0], display_size, display)
        self.by_name = {first.store.annotator: first}
        for store in stores[1:]:
            self.by_name[store.annotator] = Annotator(store, display_size, first.display)
        self.login = login
        if not login and len(stores) != 1:
            raise ValueError("a server without logins serves exactly one annotator")

    def __len__(self) -> int:
        return len(self.by_name)

    @property
    def any(self) -> Annotator:
        """An annotator of the team, for what every annotator shares (frames, display)."""
        return next(iter(self.by_name.values()))

    def of(self, username: str | None) -> Annotator:
        """The request's annotator: the logged-in name's, or the single annotator's when there is no login."""
        if not self.login:
            return self.any
        if username not in self.by_name:  # Gradio lets no request without a login through; this is a backstop
            raise gr.Error(f"not logged in as an annotator of this server (got {username!r}); reload the page")
        return self.by_name[username]

    def handle(self, request: gr.Request | None, state: dict[str, Any], act: Callable[[Annotator, dict], tuple]):
        """Run `act(annotator, state)` for the request's annotator, starting a new session if `state` is someone else's."""
        ann = self.of(getattr(request, "username", None))
        if state.get("annotator") != ann.store.annotator:
            state = {"annotator": ann.store.annotator}  # an empty session: _safe starts it
        return act(ann, state)


class PictureFiles:
    """Frame pictures handed to Gradio as files we encode ourselves, JPEG at quality 95 without chroma
    subsampling (visually lossless): 2 ms and ~70 kB for a sharp 512-px render, where PNG takes
    15-75 ms (its row filters dominate) and ~180 kB, too slow for a click round trip under 150 ms.
    Gradio copies each file into its cache at once, so only the last few are kept here."""

    KEEP = 64

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="visarl-annotate-")
        self._count = itertools.count()

    def __call__(self, img: np.ndarray) -> str:
        n = next(self._count)  # atomic under the GIL: concurrent handlers get distinct files
        path = Path(self._dir.name) / f"{n:09d}.jpg"
        Image.fromarray(img).save(
            path, format="JPEG", quality=95, subsampling=0
        )  # a transient copy for Gradio, not saved data
        (Path(self._dir.name) / f"{n - self.KEEP:09d}.jpg").unlink(missing_ok=True)
        return str(path)


def shortcut_markdown() -> str:
    rows = "\n".join(
        f"| <kbd>{'←' if k == 'ArrowLeft' else '→' if k == 'ArrowRight' else k}</kbd> | {what} |"
        for k, what, _ in SHORTCUTS
    )
    return "**Keyboard shortcuts**\n\n| key | action |\n|---|---|\n" + rows


def frames_line(ann: Annotator, quality: str | None) -> str:
    """One line on what the pictures are: re-renders (size, quality) or enlarged stored frames (and why)."""
    n, shown = len(ann.frames), sum(ann.display.rendered)
    h = ann.frames.height
    if shown == n:
        return (
            f"Frames re-rendered at {ann.disp_w} px from the simulator state of each {h}-px frame "
            f"({quality} rendering); clicks are saved as fractions of the picture."
        )
    return f"**Note:** {ann.display.note}."


def picture(elem_id: str, fmt: str, height: int, width: int) -> gr.Image:
    """A picture the page draws into: not an input, no label, buttons or frame."""
    return gr.Image(
        value=None,
        interactive=False,
        show_label=False,
        buttons=[],
        format=fmt,
        elem_id=elem_id,
        height=height,
        width=width,
        container=False,
    )


def view_handler(team: Team) -> Callable:
    """`handler(act)`: a Gradio handler running `act(annotator, state, overlay)` for the request's
    annotator; it returns (frame, map, status, state) with the frame as a file we encoded and the status
    stamped with the view's revision (HEAD_JS compares them)."""
    files = PictureFiles()
    revisions = itertools.count(1)

    def handler(act: Callable[[Annotator, dict, bool], tuple]):
        def run(st, ov, request: gr.Request):
            frame, heat_map, status_text, st = team.handle(request, st, lambda a, s: act(a, s, ov))
            stamp = f'<span class="view-rev" data-rev="{next(revisions)}" hidden></span>'
            return files(frame), heat_map, status_text + stamp, st

        return run

    return handler


def build_app(
    stores: AnnotatorStore | list[AnnotatorStore],
    display_size: int = 512,
    display: DisplayFrames | None = None,
    quality: str | None = None,
    login: bool = False,
):
    """The Gradio Blocks page for one annotator's store, or with `login` for a team's stores, each
    request going to its login's store (launch with `launch_kwargs()` and auth)."""
    team = Team(stores if isinstance(stores, list) else [stores], display_size, display, login)
    ann = team.any  # what every annotator shares: frames, display size
    store = ann.store
    title = f"Saliency annotation · {store.task} · " + (f"team of {len(team)}" if login else store.annotator)
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        state = gr.State({})
        gr.Markdown(
            f"## {title}\n"
            f"**Task:** {task_line(store.task)}\n\n"
            "Click every pixel that matters for solving the task (the arm, the object, the goal...). "
            "Each click adds a Gaussian to this frame's saliency map and is saved immediately. "
            + frames_line(ann, quality),
            elem_id="task-header",
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=0, min_width=ann.disp_w):
                image = picture("frame-view", "jpeg", ann.disp_h, ann.disp_w)
            map_h, map_w = ann.frames.height * ann.map_scale, ann.frames.width * ann.map_scale
            with gr.Column(scale=0, min_width=map_w):
                gr.Markdown(f"**Saliency map of this frame** ({ann.frames.height}x{ann.frames.width}, as exported)")
                heat = picture("map-view", "png", map_h, map_w)
            with gr.Column(scale=1, min_width=300):
                status = gr.HTML(elem_id="status", js_on_load=None)
                with gr.Row():
                    undo = gr.Button("Undo last click (z)", elem_id="btn-undo", size="sm")
                    clear = gr.Button("Clear frame (c)", elem_id="btn-clear", size="sm", variant="stop")
                with gr.Row():
                    prev = gr.Button("← Previous", elem_id="btn-prev", size="sm")
                    nxt = gr.Button("Next →", elem_id="btn-next", size="sm")
                nxt_un = gr.Button("Next unannotated (n)", elem_id="btn-next-un", variant="primary")
                overlay = gr.Checkbox(value=True, label="Show heat overlay (h)", elem_id="chk-overlay")
                refresh = gr.Button("Redraw", elem_id="btn-refresh", visible="hidden")
                gr.Markdown(shortcut_markdown(), elem_classes=["shortcut-table"])
        outs = [image, heat, status, state]
        common = dict(
            outputs=outs,
            show_progress="hidden",
            trigger_mode="multiple",
            concurrency_id="annotate",
            concurrency_limit=1,
        )
        handler = view_handler(team)

        def on_select(st, ov, evt: gr.SelectData, request: gr.Request):
            x, y = evt.index
            return handler(lambda a, s, o: a.click(s, o, float(x), float(y)))(st, ov, request)

        def on_load(ov, request: gr.Request):
            return handler(lambda a, s, o: a.new_session(o))({}, ov, request)

        image.select(on_select, inputs=[state, overlay], api_name="click", **common)
        undo.click(handler(lambda a, s, o: a.undo(s, o)), inputs=[state, overlay], api_name="undo", **common)
        clear.click(handler(lambda a, s, o: a.clear(s, o)), inputs=[state, overlay], api_name="clear", **common)
        prev.click(handler(lambda a, s, o: a.goto(s, o, "prev")), inputs=[state, overlay], api_name="prev", **common)
        nxt.click(handler(lambda a, s, o: a.goto(s, o, "next")), inputs=[state, overlay], api_name="next", **common)
        nxt_un.click(
            handler(lambda a, s, o: a.goto(s, o, "unfinished")),
            inputs=[state, overlay],
            api_name="next_unannotated",
            **common,
        )
        overlay.change(handler(lambda a, s, o: a.toggle(s, o)), inputs=[state, overlay], api_name="overlay", **common)
        refresh.click(handler(lambda a, s, o: a.refresh(s, o)), inputs=[state, overlay], api_name="refresh", **common)
        demo.load(on_load, inputs=[overlay], outputs=outs, show_progress="hidden")
    return demo


def launch_kwargs(allowed_hosts: tuple[str, ...] = ()) -> dict[str, Any]:
    """Page assets and the request guard (Host check, body cap, login throttle: `annotate_app.guard`)."""
    from starlette.middleware import Middleware

    return {
        "head": HEAD_JS,
        "css": CSS,
        "theme": gr.themes.Soft(),
        "max_file_size": MAX_BODY,
        "app_kwargs": {"middleware": [Middleware(RequestGuard, allowed_hosts=allowed_hosts)]},
    }


def allowed_host_names(cfg: AppConfig) -> tuple[str, ...]:
    """--allowed-hosts, plus --host when it is a name rather than an address."""
    names = [h.strip().lower() for h in cfg.allowed_hosts.split(",") if h.strip()]
    if not is_ip(cfg.host.strip("[]")):
        names.append(cfg.host.lower())
    return tuple(names)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def open_stores(cfg: AppConfig, names: list[str]) -> list[AnnotatorStore]:
    """The task's frames (chosen the first time) and the checked store of each annotator in `names`."""
    frames = create_or_load_frameset(
        cfg.out, cfg.task, cfg.frames or None, cfg.n, cfg.select, cfg.seed, cfg.allow_incomplete
    )
    return [open_store(cfg.out, frames, name) for name in names]


def open_store(root: str, frames: FrameSet, annotator: str) -> AnnotatorStore:
    """One annotator's store, refused if any of its files needs attention (stray files are noted)."""
    store = AnnotatorStore(root, frames, annotator)
    problems = store.check_all()
    if problems:
        raise AnnotationError("stored annotations need attention:\n  " + "\n  ".join(problems))
    stray = sorted(p.name for p in store.dir.glob("*.json") if p.stem not in set(frames.keys))
    if stray:
        print(
            f"note: {len(stray)} file(s) in {store.dir} belong to no selected frame and are ignored: "
            f"{', '.join(stray[:5])}{' ...' if len(stray) > 5 else ''}",
            file=sys.stderr,
        )
    return store


def main(argv=None) -> None:
    cfg = parse_config(AppConfig, argv, description=AppConfig.__doc__)
    try:
        users = load_users(cfg.users or None) if cfg.team else {}
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    try:
        stores = open_stores(cfg, sorted(users) or [cfg.annotator])
    except AnnotationError as err:
        fail(str(err), keep_lines=True)
    store = stores[0]
    if port_in_use(cfg.host, cfg.port):
        fail(
            f"port {cfg.port} on {cfg.host} is already in use (another annotation server?); pass --port with a free port"
        )
    frames = store.frames
    scale = display_scale(frames, cfg.display_size)
    quality = cfg.render_quality or (frames.info.get("render") or {}).get("render_quality")
    print(f"Preparing {len(frames)} frames at {frames.height * scale} px ...", flush=True)
    display = display_frames(frames, cfg.out, scale, quality)
    if display.note:  # said once, here and in the page header
        print(f"note: {display.note}", file=sys.stderr, flush=True)
    demo = build_app(stores, cfg.display_size, display, quality, login=bool(users))
    auth = Login(users) if users else None
    for s in stores:
        done = sum(r["done"] for r in s.records())
        print(
            f"Annotating {len(frames)} frames of {cfg.task} as {s.annotator} ({done} done); "
            f"clicks are saved to {Path(s.dir).resolve()}",
            flush=True,
        )
    login = " (each annotator logs in with their name and password)" if users else ""
    print(f"Open http://{cfg.host}:{cfg.port} in a browser{login} (Ctrl+C stops the server).", flush=True)
    if not is_loopback(cfg.host) and not auth:
        print(
            f"warning: --open-to-network: anyone who can reach {cfg.host}:{cfg.port} can open the page and add clicks "
            f"as {cfg.annotator}",
            file=sys.stderr,
            flush=True,
        )
    try:
        demo.queue(default_concurrency_limit=1).launch(
            server_name=cfg.host,
            server_port=cfg.port,
            auth=auth,
            auth_message="Log in with your annotator name and password." if auth else None,
            show_error=True,
            quiet=True,
            footer_links=[],
            **launch_kwargs(allowed_host_names(cfg)),
        )
    except OSError as err:
        fail(f"cannot serve on {cfg.host}:{cfg.port} ({err}); pass --port with a free port or a valid --host")


if __name__ == "__main__":
    main()
