"""Drive the annotation page in headless Debian Chromium (browser tests, latency benchmark, screenshot).

Needs the `playwright` Python package and /usr/bin/chromium (`apt-get install -y chromium`);
never `playwright install`.
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], port: int, log: Path, timeout: float = 90.0) -> subprocess.Popen:
    """`python -m annotate_app ARGS --port PORT` in the background; returns once the page answers and the answer is
    this server's (it has printed its address, so it found the port free: a server of a test run beside this one,
    started on the same port, does not pass for it)."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    own = f":{port} in a browser".encode()  # annotate_app's "Open http://HOST:PORT in a browser ..."
    with open(log, "ab") as f:
        start = f.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", "annotate_app", *args, "--port", str(port)],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"annotation server exited with {proc.returncode}:\n{Path(log).read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                if r.status == 200 and own in Path(log).read_bytes()[start:] and proc.poll() is None:
                    return proc
                time.sleep(0.25)
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"annotation server did not answer within {timeout:.0f} s:\n{Path(log).read_text()[-3000:]}")


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def log_in(page, url: str, name: str, password: str) -> None:
    """Fill and send Gradio's login form at `url` (the page's session then carries the login cookie)."""
    page.goto(url)
    page.get_by_label(re.compile("username", re.I)).fill(name)
    page.get_by_label(re.compile("password", re.I)).fill(password)
    page.get_by_role("button", name=re.compile("login", re.I)).click()
    page.locator("#frame-view img").wait_for(state="visible", timeout=60_000)


class AnnotationPage:
    """A Playwright page on the app with helpers that click frame pixels and wait for the saved state."""

    def __init__(self, page, url: str, frame_size: int = 64):
        self.page, self.frame_size = page, frame_size
        page.goto(url)
        self.image = page.locator("#frame-view img")
        self.image.wait_for(state="visible", timeout=60_000)
        self.wait_status("Frame ")

    def status(self) -> str:
        return self.page.locator("#status").inner_text()

    def wait_status(self, *parts: str, timeout: float = 20_000) -> str:
        """Wait until the status text contains every part (e.g. 'Frame 2 of', 'Clicks on this frame: 3')."""
        from playwright.sync_api import TimeoutError as PageTimeout

        try:
            self.page.wait_for_function(
                "parts => { const s = document.querySelector('#status');"
                " return !!s && parts.every(p => s.innerText.includes(p)); }",
                arg=list(parts),
                timeout=timeout,
            )
        except PageTimeout as err:
            raise PageTimeout(
                f"status never showed {list(parts)} in {timeout / 1000:.0f} s; it shows {self.status()!r}"
            ) from err
        return self.status()

    def clicks_shown(self) -> int:
        return int(re.search(r"Clicks on this frame:\s*(\d+)", self.status()).group(1))

    def frame_shown(self) -> int:
        return int(re.search(r"Frame (\d+) of", self.status()).group(1))

    def click_pixel(self, col: int, row: int, wait: bool = True) -> None:
        """Click the centre of stored-frame pixel (col, row) on the displayed picture."""
        self.click_fraction((col + 0.5) / self.frame_size, (row + 0.5) / self.frame_size, wait)

    def click_fraction(self, x: float, y: float, wait: bool = True) -> None:
        """Click the picture at normalised (x, y), as a click's saved coordinates."""
        box = self.image.bounding_box()
        before = self.clicks_shown()
        self.page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])
        if wait:  # until the saved count grows (another session's clicks may arrive with ours)
            self.page.wait_for_function(
                "n => { const m = /Clicks on this frame:\\s*(\\d+)/.exec(document.querySelector('#status').innerText);"
                " return !!m && Number(m[1]) > n; }",
                arg=before,
                timeout=20_000,
            )

    def press(self, key: str) -> None:
        self.page.locator("body").press(key)
