"""Click round-trip latency of the annotation page in headless Chromium.

    python bench/annotate_latency.py [--clicks 60] [--frames data/shards/reach-v3 | --synthetic] [--screenshot PATH]

Starts the real app (a subprocess on a free port, annotations in a temporary folder), clicks the
frame `--clicks` times with Playwright and times each click from the mouse event until the page shows
the new click count AND the redrawn overlay image has loaded (what the annotator sees). Frames come
from `--frames` if given, else from a small reach-v3 collection made here (with scene states, so the
page shows 512-px re-renders); `--synthetic` uses synthetic 64-px frames (shown enlarged). Prints
median / p90 / max and a BENCHMARKS.md row. `--screenshot` also saves a picture of the page with the
oracle's clicks on a fresh frame.
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from annotate_app.browser import AnnotationPage, free_port, launch_browser, start_server
from annotate_app.store import load_frameset
from annotate_app.synthetic import synthetic_shards
from common.cli import from_flat
from data.collect import CollectConfig, collect

TARGET_MS = 150.0

DONE_JS = """([n, old]) => {
  const s = document.querySelector('#status'), img = document.querySelector('#frame-view img');
  const m = s && /Clicks on this frame:\\s*(\\d+)/.exec(s.innerText);
  return !!m && Number(m[1]) >= n && img.src !== old && img.complete && img.naturalWidth > 0;
}"""


def measure(ap: AnnotationPage, n_clicks: int, rng: np.random.Generator) -> list[float]:
    times = []
    # distinct pixels per frame: a repeated click on one pixel redraws an identical picture
    pixels = rng.permutation(np.stack(np.meshgrid(np.arange(2, 62), np.arange(2, 62)), -1).reshape(-1, 2))
    for k in range(n_clicks):
        count, old = ap.clicks_shown(), ap.image.get_attribute("src")
        box = ap.image.bounding_box()
        col, row = pixels[k]
        t0 = time.perf_counter()
        ap.page.mouse.click(box["x"] + (col + 0.5) * box["width"] / 64, box["y"] + (row + 0.5) * box["height"] / 64)
        ap.page.wait_for_function(DONE_JS, arg=[count + 1, old], polling=2, timeout=20_000)
        times.append((time.perf_counter() - t0) * 1000)
        if (k + 1) % 20 == 0:  # keep the map readable and the file small: a fresh frame every 20 clicks
            frame = ap.frame_shown()
            ap.page.click("#btn-next")
            ap.wait_status(f"Frame {frame + 1} of")
    return times


def screenshot(ap: AnnotationPage, root: Path, path: Path) -> None:
    """A fresh frame clicked where the simulator oracle clicks (gripper, goal: ~25 clicks, like a person)."""
    before = ap.frame_shown()
    ap.page.click("#btn-next-un")
    ap.page.wait_for_function("f => !document.querySelector('#status').innerText.includes(`Frame ${f} of`)", arg=before)
    index = ap.frame_shown() - 1
    for x, y in load_frameset(root, "reach-v3").oracle_clicks[index]:
        ap.click_fraction(float(x), float(y))
    path.parent.mkdir(parents=True, exist_ok=True)
    ap.page.screenshot(path=str(path), full_page=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clicks", type=int, default=60, help="timed clicks (after 5 warm-up clicks)")
    p.add_argument("--frames", default="", help="shard folder to annotate (default: 60 reach-v3 frames collected here)")
    p.add_argument(
        "--synthetic", action="store_true", help="annotate synthetic 64-px frames (no scene states: enlarged)"
    )
    p.add_argument("--screenshot", default="", help="also save a screenshot of the page here")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.frames:
            frames, what = args.frames, args.frames
        elif args.synthetic:
            frames, what = str(synthetic_shards(tmp / "shards", frames=60)), "synthetic 64x64, enlarged"
        else:
            frames = str(
                collect(
                    from_flat(
                        CollectConfig,
                        task="reach-v3",
                        frames=60,
                        shard_size=60,
                        episode_steps=50,
                        out=str(tmp / "reach-v3"),
                    ),
                    progress=False,
                )
            )
            what = "reach-v3, re-rendered at 512 px (fast)"
        n = max(4, args.clicks // 20 + 3)
        server_args = [
            "--task",
            "reach-v3",
            "--frames",
            frames,
            "--annotator",
            "alice",
            "--n",
            str(n),
            "--out",
            str(tmp / "ann"),
        ]
        port = free_port()
        proc = start_server(server_args, port, tmp / "server.log")
        try:
            with sync_playwright() as pw:
                browser = launch_browser(pw)
                ap = AnnotationPage(
                    browser.new_page(viewport={"width": 1320, "height": 760}), f"http://127.0.0.1:{port}"
                )
                rng = np.random.default_rng(0)
                measure(ap, 5, rng)  # warm-up
                times = measure(ap, args.clicks, rng)
                if args.screenshot:
                    screenshot(ap, tmp / "ann", Path(args.screenshot))
                browser.close()
        finally:
            proc.kill()
            proc.wait()
    q = statistics.quantiles(times, n=10)
    result = {
        "clicks": len(times),
        "median_ms": statistics.median(times),
        "p90_ms": q[-1],
        "max_ms": max(times),
        "mean_ms": statistics.fmean(times),
        "target_ms": TARGET_MS,
        "frames": what,
        "device": f"CPU {platform.machine()} ({os.cpu_count()} cores), headless Chromium",
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=2))
    verdict = "met" if result["median_ms"] < TARGET_MS else f"MISSED by {result['median_ms'] - TARGET_MS:.0f} ms"
    print(
        f"\n| click round-trip (click -> count + overlay shown), median of {len(times)} | "
        f"{result['median_ms']:.0f} ms (p90 {result['p90_ms']:.0f}, max {result['max_ms']:.0f}) | < {TARGET_MS:.0f} ms: {verdict} | "
        f"load avg {result['load_average_1min']} on {os.cpu_count()} cores |"
    )


if __name__ == "__main__":
    main()
