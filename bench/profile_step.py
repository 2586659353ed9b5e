"""Where a packed SAC step spends its CPU time (torch.profiler), at one precision:

    python bench/profile_step.py [--precision fp32] [--runs 3] [--hidden 1024] [--batch 128] [--steps 3] [--threads 1]
                                 [--only mmae_rgbs] [--shapes 8]

(a) mmae_rgbs: a pack of `--runs` runs (rl.workspace.Pack) makes one step on synthetic 64x64 frames,
    one per run: the student saliency model and the frozen MultiMAE encoder on the step's frames
    (Observer.observe), the actors' act, the replay add, a replay sample and one packed SAC update.
(b) cnn_rgb: one packed update of a pack of `--runs` runs (replay sample, the CNN trunk and SAC
    networks forward and backward through the critic, AdamW).

Both at hidden `--hidden`, batch `--batch`, from replay buffers filled with random transitions (no env
stepping: an env step + render is another process's work in a pack, bench/rl_throughput.py --profile
times it). The encoder, saliency model and SAC networks are those the commands build, at the pack's
`--precision` (the runs' own flag). Frozen encoders read runs/mmae/rgbs/encoder.pt and the student
runs/saliency/reach-v3/student.pt when present, else random-init models of the same size (same cost).
Prints, per step kind, the wall time and CPU time of each phase and the top ops by self CPU time as
markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rl_throughput import student_model
from torch.profiler import ProfilerActivity, profile, record_function

from common.cli import OneLineParser, from_flat
from rl.config import SACConfig
from rl.envs import ACTION_DIM
from rl.workspace import Pack

from precision_columns import load_average, machine_lines
from sac_pixels import encoder_export

PHASES = ("saliency + frozen encoder", "act", "replay add", "replay sample", "update")


def build_pack(encoder: str, args: argparse.Namespace, root: Path, extra: dict) -> Pack:
    """A pack of `args.runs` runs of `encoder` at the bench's hidden width, batch and precision (seeds 0..R-1)."""
    cfgs = [
        from_flat(
            SACConfig,
            encoder=encoder,
            seed=s,
            hidden_dim=args.hidden,
            batch_size=args.batch,
            replay_size=2_000,
            torch_threads=args.threads,
            device="cpu",
            precision=args.precision,
            out=str(root / encoder / f"seed{s}"),
            **extra,
        )
        for s in range(args.runs)
    ]
    return Pack(cfgs)


def random_stored(pack: Pack, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random stored fields of one step of every run [R*E, ...] in the buffer's dtypes."""
    rows = pack.runs * pack.envs_per_run
    out = {}
    for key, (shape, dtype) in pack.observer.specs(pack.cfg.env.image_size).items():
        if np.dtype(dtype) == np.uint8:
            out[key] = torch.randint(0, 256, (rows, *shape), generator=gen, dtype=torch.uint8)
        else:
            out[key] = torch.randn(rows, *shape, generator=gen)
    return out


def fill(pack: Pack, transitions: int, seed: int = 0) -> None:
    """`transitions` random transitions per row (no episode ends), enough for batches to be drawn."""
    gen = torch.Generator().manual_seed(seed)
    rows = pack.runs * pack.envs_per_run
    pack.buffer.start(random_stored(pack, gen))
    for _ in range(transitions):
        action = torch.rand(rows, ACTION_DIM, generator=gen).mul_(2).sub_(1).numpy()
        pack.buffer.add(action, torch.rand(rows, generator=gen).numpy(), np.zeros(rows, bool), random_stored(pack, gen))


def frozen_step(pack: Pack, frames: np.ndarray) -> Callable[[], None]:
    """One packed step of a frozen-encoder pack on `frames` [R*E, 64, 64, 3] uint8, env step left out."""
    run_of_row = np.repeat(np.arange(pack.runs), pack.envs_per_run)
    rows = len(run_of_row)
    update = update_step(pack)

    def step() -> None:
        with record_function("saliency + frozen encoder"):
            _, stored = pack.observer.observe({"pixels": frames}, run_of_row)
        with record_function("act"):
            action = (
                pack.agent.act(pack.observer.per_run(stored), pack.noise.normal(1, ACTION_DIM)).flatten(0, 1).numpy()
            )
        with record_function("replay add"):
            pack.buffer.add(action, np.zeros(rows, np.float32), np.zeros(rows, bool), stored)
        update()

    return step


def update_step(pack: Pack) -> Callable[[], None]:
    """One packed SAC update as rl.workspace makes it (sample, update, the encoder's auxiliary update)."""

    def step() -> None:
        with record_function("replay sample"):
            batch = pack.buffer.sample(pack.cfg.batch_size)
        with record_function("update"):
            pack.agent.update(batch, pack.noise.normal(2, pack.cfg.batch_size, ACTION_DIM).transpose(0, 1))
            if pack.encoder is not None:
                with pack.agent.autocast():
                    pack.encoder.auxiliary_update(pack.agent.num_updates)

    return step


def profiled(step: Callable[[], None], steps: int, shapes: bool = False) -> tuple[profile, float]:
    """(the profiler of `steps` calls after one warm-up call, wall ms per call under the profiler); `shapes` records
    each op's input shapes too (`shape_rows`)."""
    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=shapes) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t0) * 1000 / steps
    return prof, wall


def op_rows(
    prof: profile, steps: int, top: int
) -> tuple[list[tuple[str, float, float]], list[tuple[str, float, float, float]]]:
    """(phases: (name, CPU ms per step with children, Python ms per step outside torch ops),
    top ops by self CPU time: (op, self CPU ms per step, share of all self CPU time, calls per step))."""
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    phases = [
        (e.key, e.cpu_time_total / 1000 / steps, e.self_cpu_time_total / 1000 / steps)
        for e in events
        if e.key in PHASES
    ]
    phases.sort(key=lambda p: PHASES.index(p[0]))
    ops = sorted((e for e in events if e.key not in PHASES), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return phases, [
        (e.key, e.self_cpu_time_total / 1000 / steps, e.self_cpu_time_total / total, e.count / steps) for e in ops
    ]


def shape_rows(prof: profile, steps: int, top: int) -> list[tuple[str, str, float, float]]:
    """The `top` (op, input shapes) pairs by self CPU time: (op, its first input's shape, self CPU ms per step, calls
    per step). Where a bf16 step's casts go: `aten::copy_` of a weight's shape is autocast converting it."""
    events = [e for e in prof.key_averages(group_by_input_shape=True) if e.key not in PHASES and e.input_shapes]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        (e.key, str(e.input_shapes[0]), e.self_cpu_time_total / 1000 / steps, e.count / steps) for e in events[:top]
    ]


def report(title: str, prof: profile, wall_ms: float, steps: int, top: int, shapes: int = 0) -> None:
    phases, ops = op_rows(prof, steps, top)
    print(f"\n### {title}\n\nwall {wall_ms:.1f} ms per step under the profiler (mean of {steps})\n")
    print("| phase | CPU ms per step (with its ops) | of which Python outside torch ops |\n|---|---|---|")
    for name, cpu, own in phases:
        print(f"| {name} | {cpu:.1f} | {own:.1f} |")
    print(
        f"\n| op (top {top} by self CPU time) | self CPU ms per step | share of self CPU | calls per step |\n|---|---|---|---|"
    )
    for name, ms, share, calls in ops:
        print(f"| `{name}` | {ms:.2f} | {100 * share:.1f} % | {calls:.1f} |")
    if shapes:
        print(
            f"\n| op (top {shapes} by self CPU time, by input shape) | first input | self CPU ms per step | calls per step |"
        )
        print("|---|---|---|---|")
        for name, shape, ms, calls in shape_rows(prof, steps, shapes):
            print(f"| `{name}` | {shape} | {ms:.2f} | {calls:.1f} |")


def main(argv: list[str] | None = None) -> None:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="the packs' precision")
    p.add_argument("--runs", type=int, default=3, help="runs per pack")
    p.add_argument("--hidden", type=int, default=1024, help="SAC hidden width")
    p.add_argument("--batch", type=int, default=128, help="SAC batch size")
    p.add_argument("--steps", type=int, default=3, help="profiled steps of each kind (after one warm-up step)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--top", type=int, default=15, help="ops listed per step kind")
    p.add_argument("--only", default="mmae_rgbs,cnn_rgb", help="step kinds to profile: mmae_rgbs, cnn_rgb or both")
    p.add_argument(
        "--shapes", type=int, default=0, help="also list the top N ops by input shape (records shapes: a little slower)"
    )
    args = p.parse_args(argv)
    kinds = args.only.split(",")
    if not kinds or any(k not in ("mmae_rgbs", "cnn_rgb") for k in kinds):
        p.error(f"--only takes mmae_rgbs, cnn_rgb or both, got {args.only!r}")
    if min(args.runs, args.hidden, args.batch, args.steps, args.threads, args.top) < 1 or args.shapes < 0:
        p.error("--runs, --hidden, --batch, --steps, --threads and --top must be >= 1")
    torch.set_num_threads(args.threads)
    print(machine_lines())
    print(
        f"precision {args.precision}, {args.runs} runs per pack, hidden {args.hidden}, batch {args.batch}, "
        f"torch threads {args.threads}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        notes = []
        if "mmae_rgbs" in kinds:
            rgbs, rgbs_desc = encoder_export("rgbs", tmp)
            student, student_desc = student_model(tmp)
            notes.append(f"mmae_rgbs: {rgbs_desc}; saliency: {student_desc}")
            pack = build_pack("mmae_rgbs", args, tmp, dict(mmae=rgbs, saliency_model=student))
            fill(pack, 2 * args.batch)
            frames = np.random.default_rng(0).integers(
                0, 256, (args.runs * pack.envs_per_run, 64, 64, 3), dtype=np.uint8
            )
            prof, wall = profiled(frozen_step(pack, frames), args.steps, args.shapes > 0)
            report(
                f"(a) mmae_rgbs packed step ({args.runs} runs: saliency + frozen encoder on {len(frames)} frames, "
                f"act, one packed update), {args.precision}",
                prof,
                wall,
                args.steps,
                args.top,
                args.shapes,
            )
            del pack
        if "cnn_rgb" in kinds:
            pack = build_pack("cnn_rgb", args, tmp, {})
            fill(pack, 2 * args.batch)
            prof, wall = profiled(update_step(pack), args.steps, args.shapes > 0)
            title = f"(b) cnn_rgb packed update ({args.runs} runs), {args.precision}"
            report(title, prof, wall, args.steps, args.top, args.shapes)
        for note in notes:
            print(f"\n{note}")
    print(f"load average after (1, 5, 15 min): {load_average()}")


if __name__ == "__main__":
    main()
