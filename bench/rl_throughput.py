"""Packed RL throughput: N SAC runs in one process (rl.workspace) beside the same N runs as separate processes,
fp32 and bf16 side by side.

    python bench/rl_throughput.py [--encoders mmae_rgbs,cnn_rgb,gaze] [--packs 1,4] [--hidden 256] [--steps 200]
                                  [--rounds 1] [--threads 1] [--device cpu] [--precision fp32,bf16] [--profile]
                                  [--baseline-checkout DIR] [--parallel 1]

Aggregate env-steps/s with one update per env step per run (reach-v3 64x64, batch 128, the given
MLP width), measured in the learning phase only (after the random steps), from each run's
metrics.csv. For every encoder and N: one packed process of N runs (`python -m rl.workspace`) and
N concurrent `python -m rl.sac` processes (their rates summed), alternated within each round so
machine noise hits both alike. `--parallel P --no-separate` times P packed processes of N runs at once instead, as
`rl.grid --parallel P` (pipeline.table's packs) runs them: which pack size keeps every core busiest. Frozen encoders read runs/mmae/<name>/encoder.pt when present, else
a randomly initialised paper-size export (identical cost); mmae_rgbs reads the student saliency
model runs/saliency/reach-v3/student.pt when present, else a randomly initialised student (identical
cost). `--profile` adds where a packed step's time goes (env step, saliency + frozen encoder,
replay sample, update), per run, for each N.

Every measurement runs at each `--precision` (the runs' own `--precision` flag: bf16 autocast of the
encoders' and the SAC networks' matmuls and convolutions, common/precision.py), the precisions
adjacent and alternating (ABBA over rounds) so machine noise hits both alike; the table gives each
precision's rate and the bf16/fp32 speed ratio. The before-packing baseline has no --precision: it
runs in fp32 only.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common.cli import OneLineParser, as_flags, flat_dict, from_flat
from rl.config import SACConfig

from precision_columns import (
    PRECISION_LIST_HELP,
    headers,
    load_average,
    machine_lines,
    parse_precisions,
    round_order,
    side_by_side,
)
from sac_pixels import encoder_export

RANDOM = 200


def student_model(tmp: Path) -> tuple[str, str]:
    path = Path("runs/saliency/reach-v3/student.pt")
    if path.exists():
        return str(path), f"student {path}"
    from saliency.predictor import save_checkpoint
    from saliency.student import StudentConfig, StudentNet

    out = tmp / "student.pt"
    save_checkpoint(out, StudentNet(StudentConfig()), "student")
    return str(out), "random-init student (no runs/saliency model yet)"


def learning_rate(run_dir: Path) -> float:
    """env-steps/s of one run between its first metrics row after the random phase and its last row."""
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) > RANDOM]
    return (int(rows[-1]["step"]) - int(rows[0]["step"])) / (float(rows[-1]["wall_s"]) - float(rows[0]["wall_s"]))


def configs(
    encoder: str, n: int, args, root: Path, extra: dict, precision: str, first_seed: int = 0
) -> list[SACConfig]:
    return [
        from_flat(
            SACConfig,
            encoder=encoder,
            seed=first_seed + s,
            hidden_dim=args.hidden,
            steps=RANDOM + args.steps,
            random_steps=RANDOM,
            log_every=50,
            eval_every=0,
            eval_episodes=1,
            checkpoint_every=10**9,
            replay_size=20_000,
            torch_threads=args.threads,
            device=args.device,
            precision=precision,
            out=str(root / f"seed{first_seed + s}"),
            **extra,
        )
        for s in range(n)
    ]


def packed(encoder: str, n: int, args, root: Path, extra: dict, precision: str) -> float:
    """--parallel processes at once (as rl.grid --parallel starts packs), each a pack of N runs on seeds of its own;
    their rates summed."""
    root.mkdir(parents=True)
    procs = []
    for p in range(args.parallel):
        cfgs = configs(encoder, n, args, root, extra, precision, first_seed=p * n)
        spec = root / f"pack{p}.json"
        spec.write_text(json.dumps([flat_dict(c) for c in cfgs]))
        cmd = [sys.executable, "-m", "rl.workspace", "--spec", str(spec)]
        procs.append((cfgs[0].run_dir(), subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    failed = [proc for _, proc in procs if proc.wait() != 0]
    if failed:
        raise RuntimeError(failed[0].stderr.read().decode()[-2000:])
    return sum(n * learning_rate(run_dir) for run_dir, _ in procs)


def separate(encoder: str, n: int, args, root: Path, extra: dict, precision: str, checkout: str = "") -> float:
    """N concurrent `python -m rl.sac` processes (of `checkout`, another working tree, when given), rates summed."""
    procs = []
    for cfg in configs(encoder, n, args, root, extra, precision):
        defaults = flat_dict(SACConfig())
        # bool flags left out: a --baseline-checkout may predate some of them (and --precision: it runs fp32)
        flags = as_flags(
            {
                k: v
                for k, v in flat_dict(cfg).items()
                if v != defaults[k] and not isinstance(v, bool) and not (checkout and k == "precision")
            }
        )
        procs.append(
            (
                cfg.run_dir(),
                subprocess.Popen(
                    [sys.executable, "-m", "rl.sac", *flags],
                    cwd=checkout or None,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                ),
            )
        )
    for _, p in procs:
        if p.wait() != 0:
            raise RuntimeError(p.stderr.read().decode()[-2000:])
    return sum(learning_rate(d) for d, _ in procs)


def profile(encoder: str, n: int, args, root: Path, extra: dict, precision: str, steps: int = 60) -> dict[str, float]:
    """Milliseconds per packed step in each phase, after RANDOM filled the buffer."""
    import numpy as np

    from rl.workspace import Pack, make_envs

    torch.set_num_threads(args.threads)
    pack = Pack(configs(encoder, n, args, root, extra, precision))
    cfg, obs_ = pack.cfg, pack.observer
    envs = make_envs(
        cfg.env, 1, pixels=obs_.pixels, oracle_saliency=obs_.oracle, seed_bases=[c.seed for c in pack.cfgs]
    )
    rows = np.arange(n)
    # CUDA runs asynchronously: without a sync, one phase's kernels are charged to the next phase that waits on them
    sync = torch.cuda.synchronize if torch.device(cfg.device).type == "cuda" else (lambda: None)
    update = pack.packed_update()  # CUDA-graphed on a GPU, as rl.workspace runs it
    raw, _ = envs.reset()
    obs, stored = obs_.observe(raw, rows)
    pack.buffer.start(stored)
    times = dict.fromkeys(("env step", "saliency + frozen encoder", "act", "replay sample", "update"), 0.0)
    for t in range(RANDOM + steps):
        timed = t >= RANDOM
        sync()
        t0 = time.perf_counter()
        noise = pack.noise.normal(1, 4, device=pack.device)
        action = pack.agent.act(obs_.per_run(stored), noise).flatten(0, 1).cpu().numpy()
        t1 = time.perf_counter()
        raw, reward, term, trunc, info = envs.step(action)
        t2 = time.perf_counter()
        nobs, nstored = obs_.observe(raw, rows)
        done = term | trunc
        pack.buffer.add(action, reward, term, nstored, done, obs_.final_stored(info, done, nstored, rows))
        sync()
        t3 = time.perf_counter()
        if pack.encoder is not None:
            pack.encoder.on_env_step(obs_.per_run(obs), reward.reshape(n, 1), done.reshape(n, 1))
        obs, stored = nobs, nstored
        if t >= 2:
            sync()
            t4 = time.perf_counter()
            batch = pack.buffer.sample(cfg.batch_size, pack.device)
            sync()
            t5 = time.perf_counter()
            update(batch, pack.noise.normal(2, cfg.batch_size, 4, device=pack.device).transpose(0, 1))
            if pack.encoder is not None:
                with pack.agent.autocast():  # as rl.workspace runs it: at the pack's precision
                    pack.encoder.auxiliary_update(pack.agent.num_updates)
            sync()
            t6 = time.perf_counter()
            if timed:
                for k, dt in zip(times, (t2 - t1, t3 - t2, t1 - t0, t5 - t4, t6 - t5)):
                    times[k] += dt
    envs.close()
    return {k: 1000 * v / steps for k, v in times.items()}


def main() -> None:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoders", default="mmae_rgbs,cnn_rgb,gaze,state")
    p.add_argument("--packs", default="1,4", help="comma-separated N")
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="packed processes at once, each of N runs (rl.grid --parallel; pipeline.table runs 2): rates summed",
    )
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--steps", type=int, default=200, help="timed learning steps per run")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32,bf16", help=PRECISION_LIST_HELP)
    p.add_argument("--no-separate", action="store_true", help="only the packed processes")
    p.add_argument(
        "--baseline-checkout",
        default="",
        help="also time N separate processes of the rl.sac in this "
        "working tree (e.g. `git worktree add /tmp/old d6771a0`, the single-run loop before packing; fp32 only)",
    )
    p.add_argument("--profile", action="store_true", help="also time the phases of a packed step")
    args = p.parse_args()
    if args.parallel < 1 or (args.parallel > 1 and not args.no_separate):
        p.error("--parallel must be >= 1, and > 1 only with --no-separate (the separate column times one pack's runs)")
    torch.set_num_threads(args.threads)
    try:
        precisions = parse_precisions(args.precision, "cuda" if args.device.startswith("cuda") else "cpu")
    except ValueError as err:
        p.error(str(err))
    encoders = args.encoders.split(",")
    packs = [int(x) for x in args.packs.split(",")]
    results: dict[tuple[str, int, str, str], list[float]] = {}
    notes: dict[str, str] = {}
    print(machine_lines(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rgb, rgb_desc = encoder_export("rgb", tmp)
        rgbs, rgbs_desc = encoder_export("rgbs", tmp)
        student, student_desc = student_model(tmp)
        extra = {
            "mmae_rgb": dict(mmae=rgb),
            "mmae_rgbs": dict(mmae=rgbs, saliency_model=student),
            "cnn_rgbs": dict(saliency_model=student),
        }
        notes = {"mmae_rgb": rgb_desc, "mmae_rgbs": f"{rgbs_desc}; saliency: {student_desc}", "cnn_rgbs": student_desc}
        k = 0
        for rnd in range(args.rounds):
            for enc in encoders:
                for n in packs:
                    modes = [("packed", packed), ("separate", separate)]
                    if args.baseline_checkout:
                        modes.append(("baseline", lambda *a: separate(*a, checkout=args.baseline_checkout)))
                    for mode, fn in modes:
                        if mode != "packed" and (args.no_separate or (n == 1 and mode == "separate")):
                            continue
                        for prec in round_order(precisions, rnd):
                            if mode == "baseline" and prec != "fp32":
                                continue
                            k += 1
                            v = fn(enc, n, args, tmp / f"r{k}", extra.get(enc, {}), prec)
                            results.setdefault((enc, n, mode, prec), []).append(v)
                            print(f"round {rnd}: {enc} N={n} {mode} {prec}: {v:.1f} env-steps/s", flush=True)
        prof: dict[tuple[str, int], dict[str, dict[str, float]]] = {}
        if args.profile:
            for enc in encoders:
                for n in packs:
                    for prec in precisions:
                        k += 1
                        prof.setdefault((enc, n), {})[prec] = profile(
                            enc, n, args, tmp / f"p{k}", extra.get(enc, {}), prec
                        )
    print(f"load average after (1, 5, 15 min): {load_average()}")
    print(
        f"\nreach-v3 64x64, 1 env per run, hidden {args.hidden}, batch 128, one update per env step, {args.steps} "
        f"timed learning steps per run, torch threads {args.threads}, median of {args.rounds} round(s); env-steps/s "
        "summed over the runs\n"
    )

    def median(enc: str, n: int, mode: str) -> dict[str, float]:
        return {q: statistics.median(results[(enc, n, mode, q)]) for q in precisions if (enc, n, mode, q) in results}

    cols = (
        ["encoder", "N"]
        + headers(f"packed ({args.parallel} process{'es' * (args.parallel > 1)})", precisions)
        + headers("separate (N processes)", precisions)
        + [f"packed / separate {q}" for q in precisions]
        + ["before packing (N processes, fp32)", "packed / before (fp32)"]
    )
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for enc in encoders:
        for n in packs:
            a, b, old = median(enc, n, "packed"), median(enc, n, "separate"), median(enc, n, "baseline").get("fp32")
            cells = [enc, str(n)] + side_by_side(a, precisions) + side_by_side(b, precisions)
            cells += [f"{a[q] / b[q]:.2f}x" if q in b else "-" for q in precisions]
            cells += [f"{old:.1f}", f"{a['fp32'] / old:.2f}x"] if old and "fp32" in a else ["-", "-"]
            print("| " + " | ".join(cells) + " |")
    for enc, note in notes.items():
        if enc in encoders:
            print(f"\n{enc}: {note}")
    if prof:
        keys = list(next(iter(next(iter(prof.values())).values())))
        print("\nms per packed step (one env step and one update of every run), and per run:\n")
        cols = ["encoder", "N", "precision", *keys, "total", "per run", "bf16/fp32 speed (total)"]
        print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
        for (enc, n), by_prec in prof.items():
            totals = {q: sum(t.values()) for q, t in by_prec.items()}
            for q, t in by_prec.items():
                ratio = side_by_side(totals, precisions, time_like=True)[-1] if q == "bf16" and "fp32" in totals else ""
                print(
                    f"| {enc} | {n} | {q} | "
                    + " | ".join(f"{v:.1f}" for v in t.values())
                    + f" | {totals[q]:.1f} | {totals[q] / n:.1f} | {ratio} |"
                )


if __name__ == "__main__":
    main()
