"""rl.grid: the single-run command a grid builds, a worker's scratch copies of the pack's inputs, packs and their memory,
and the Ray instance a grid asks for."""

from __future__ import annotations

import hashlib
import sys
import types
from dataclasses import replace

import pytest

from common.cli import from_flat
from rl import grid
from rl.envs import PIXEL_WORKER_BYTES
from rl.grid import GridConfig, plan, run_config, sac_command
from rl.workspace import PACK_PROCESS_BYTES


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


def test_a_grid_runs_seed_by_seed_so_one_cut_short_holds_seeds_of_every_row(tmp_path, monkeypatch):
    """Every task and encoder of seed 0 before any of seed 1, packs in the order of their first run: a grid stopped
    early (a lost machine) holds as many seeds of each row as it can, not every seed of its first rows."""
    monkeypatch.chdir(tmp_path)
    grid_of = lambda pack: from_flat(  # noqa: E731
        GridConfig, tasks="reach-v3", encoders="state,cnn_rgb", seeds="0,1,2", steps=1000, pack=pack
    )
    runs = plan(grid_of(1))
    assert [(r.encoder, r.seed) for r in runs] == [(e, s) for s in range(3) for e in ("state", "cnn_rgb")]
    assert grid.plan_packs(grid_of(1), runs) == [[r] for r in runs]
    packs = grid.plan_packs(grid_of(2), runs)  # seeds of one encoder stack; packs start in the runs' order
    assert [(p[0].encoder, [r.seed for r in p]) for p in packs] == [
        ("state", [0, 1]),
        ("cnn_rgb", [0, 1]),
        ("state", [2]),
        ("cnn_rgb", [2]),
    ]


def test_a_grid_whose_packs_at_once_would_outgrow_ram_is_refused_before_anything_runs(tmp_path, monkeypatch):
    """Two packs of three cnn_rgb runs of 500k steps each write ~6.2 GB of frames per run (1M-slot buffers,
    filled as they run) beside 2 env workers per run (training, evaluation) and each pack's own process: 37.6 GiB at once, refused on a
    24 GiB machine; one run per pack, two at once, fits."""
    from rl import replay

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(replay, "physical_memory", lambda: 24 << 30)
    grid_of = lambda seeds, pack: from_flat(  # noqa: E731
        GridConfig,
        tasks="reach-v3",
        encoders="cnn_rgb",
        seeds=seeds,
        steps=500_000,
        pack=pack,
        parallel=2,
        sac_preset="paper",
    )
    cfg = grid_of("0,1,2,3,4,5", 3)
    packs = grid.plan_packs(cfg, plan(cfg))
    assert [len(p) for p in packs] == [3, 3]
    frames, workers = 3 * 501_001 * (12_288 + 4 * 4 + 8), 3 * 2 * PIXEL_WORKER_BYTES
    assert grid.pack_host_bytes(cfg, packs[0]) == PACK_PROCESS_BYTES + frames + workers
    with pytest.raises(ValueError, match=r"this grid's 2 pack\(s\) at once .* would hold 37\.6 GiB .* lower --pack"):
        grid.run_grid(cfg)
    assert not (tmp_path / "runs").exists()  # nothing started, no spec written
    single = grid_of("0,1", 1)
    grid.check_memory(single, grid.plan_packs(single, plan(single)))


def test_a_packs_memory_counts_its_pixel_env_workers(tmp_path, monkeypatch):
    """Each pixel env worker holds ~200 MB of its own (MuJoCo, Meta-World, software EGL): a pack holds
    --num-envs of them per run while it trains and --eval-envs more while it evaluates; state envs step
    in-process."""
    from rl import replay

    monkeypatch.chdir(tmp_path)
    cfg_of = lambda encoder, extra="": from_flat(  # noqa: E731
        GridConfig, tasks="reach-v3", encoders=encoder, seeds="0,1,2", steps=100_000, pack=3, extra=extra
    )
    bytes_of = lambda cfg: grid.pack_host_bytes(cfg, grid.plan_packs(cfg, plan(cfg))[0])  # noqa: E731
    base = bytes_of(cfg_of("cnn_rgb"))  # 1 training + 1 evaluation worker per run
    assert bytes_of(cfg_of("cnn_rgb", "--eval-envs 5")) == base + 3 * 4 * PIXEL_WORKER_BYTES
    assert bytes_of(cfg_of("cnn_rgb", "--eval-envs 50 --eval-episodes 10")) == base + 3 * 9 * PIXEL_WORKER_BYTES
    from rl.encoders import build_encoder
    from rl.observe import replay_fields
    from rl.workspace import host_bytes

    sac = run_config(cfg_of("cnn_rgb"), plan(cfg_of("cnn_rgb"))[0])
    enc = build_encoder(sac, sac.env.image_size)
    fields = replay_fields(enc.obs_keys, 0, sac.env.image_size)
    on_gpu = PACK_PROCESS_BYTES + 3 * 2 * PIXEL_WORKER_BYTES  # replay on a GPU: the process and its workers
    assert host_bytes(sac, fields, enc, 3, replay_on_host=False) == on_gpu
    assert host_bytes(sac, fields, enc, 3) == base
    state = bytes_of(cfg_of("state"))
    assert bytes_of(cfg_of("state", "--eval-envs 5")) == state  # no worker processes
    monkeypatch.setattr(replay, "physical_memory", lambda: 8 << 30)  # 7.35 GiB of 6.8 allowed; 3.52 GiB of it workers
    with pytest.raises(ValueError, match=r"this grid's 1 pack\(s\) at once .* env workers\) by its last step"):
        grid.run_grid(cfg_of("cnn_rgb", "--eval-envs 5"))
    grid.check_memory(cfg_of("cnn_rgb"), grid.plan_packs(cfg_of("cnn_rgb"), plan(cfg_of("cnn_rgb"))))


def test_a_gaze_packs_memory_counts_its_return_buffers(tmp_path, monkeypatch):
    """Gaze runs hold a return buffer of trunk features beside the replay (~9.5 KB per entry, up to
    --gaze-buffer-size entries): the memory check counts it."""
    from rl.encoders import build_encoder
    from rl.gaze_buffer import ReturnBuffer

    monkeypatch.chdir(tmp_path)
    cfg_of = lambda encoder: from_flat(  # noqa: E731
        GridConfig, tasks="reach-v3", encoders=encoder, seeds="0,1", steps=500_000, pack=2, sac_preset="paper"
    )
    gaze, cnn = cfg_of("gaze"), cfg_of("cnn_rgb")
    gaze_pack, cnn_pack = grid.plan_packs(gaze, plan(gaze))[0], grid.plan_packs(cnn, plan(cnn))[0]
    sac = grid.run_config(gaze, gaze_pack[0])
    enc = build_encoder(sac, sac.env.image_size)
    c = enc.feat_shape[0]  # keys of c values, the head's pooled input of c x pool x pool
    per_run = ReturnBuffer.bytes_needed(enc.settings.buffer_size, enc.feat_shape, c, c * enc.head.pool**2)
    assert enc.host_memory(500_000) == per_run > 800 << 20  # the buffer fills: 100k entries
    assert grid.pack_host_bytes(gaze, gaze_pack) == grid.pack_host_bytes(cnn, cnn_pack) + 2 * per_run


def test_a_run_that_diverged_is_final_for_the_grid_and_every_longer_one(tmp_path, monkeypatch, capsys):
    """A pack that lost a run to divergence exits 1, yet its runs are all finished: the diverged one by its
    outcome (rl.outcome). The grid reports it diverged, not failed (exit 0: a long experiment goes on), and a
    longer grid skips it rather than resuming it, while it resumes the healthy run."""
    import json

    monkeypatch.chdir(tmp_path)
    cfg_of = lambda steps: from_flat(  # noqa: E731
        GridConfig, tasks="reach-v3", encoders="state", seeds="0,1", steps=steps, pack=2
    )
    ran: list[list[str]] = []

    def pack_that_loses_seed_1(cmd, run_dirs, cwd, gpu=None, env=None):
        ran.append(run_dirs)
        for d in run_dirs:
            summary = {"task": "reach-v3", "encoder": "state", "seed": int(d[-1]), "success_rate": 0.5, "steps": 1000}
            if d.endswith("seed1"):
                summary |= {
                    "steps": 600,
                    "success_rate": 0.0,
                    "diverged": {"step": 600, "why": "nan", "checkpoint": 500},
                }
            (tmp_path / d).mkdir(parents=True, exist_ok=True)
            (tmp_path / d / "summary.json").write_text(json.dumps(summary))
        return 1

    monkeypatch.setattr(grid, "_execute", pack_that_loses_seed_1)
    status = grid.run_grid(cfg_of(1000))
    assert status["reach-v3/state/seed0"] == "done"
    assert status["reach-v3/state/seed1"].startswith("diverged at step 600 (counted as 0 success;")
    grid.main(["--tasks", "reach-v3", "--encoders", "state", "--seeds", "0,1", "--steps", "1000", "--pack", "2"])
    assert "grid finished: 1 ok, 1 diverged (final: counted as 0 success), 0 paused" in capsys.readouterr().out
    monkeypatch.setattr(grid, "_execute", lambda cmd, run_dirs, *a, **k: ran.append(run_dirs) or 0)
    status = grid.run_grid(cfg_of(2000))
    assert ran[-1] == ["runs/sac/reach-v3/state/seed0"]  # only the healthy run trains on
    assert status["reach-v3/state/seed1"].startswith("skipped: diverged at step 600")


#: a pack as rl.workspace is on SIGTERM: it takes a moment to write its checkpoint, then exits 0 (paused)
PAUSING_PACK = """
import json, pathlib, signal, sys, time
out = pathlib.Path(json.loads(pathlib.Path(sys.argv[1]).read_text())[0]["out"])
def pause(*_):
    time.sleep(0.5)
    (out / "checkpoint").write_text("saved")
    sys.exit(0)
signal.signal(signal.SIGTERM, pause)
(out / "started").write_text("yes")
time.sleep(60)
"""


def test_sigterm_pauses_a_local_grid_after_its_running_pack_checkpointed_and_starts_no_other(
    tmp_path, monkeypatch, capsys
):
    """The grid outlives its pack on SIGTERM (its death would SIGKILL the pack: DIE_WITH_PARENT), passes the
    signal on to it, waits for its checkpoint, starts no queued pack, and restores the previous handler."""
    import os
    import signal
    import threading
    import time

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(grid, "pack_command", lambda spec: ["-c", PAUSING_PACK, str(spec)])
    cfg = from_flat(GridConfig, tasks="reach-v3", encoders="state", seeds="0,1", steps=1000, pack=1, parallel=1)
    first, second = (tmp_path / "runs/sac/reach-v3/state" / f"seed{s}" for s in (0, 1))

    def terminate_once_started() -> None:
        deadline = time.time() + 60
        while not (first / "started").exists() and time.time() < deadline:
            time.sleep(0.05)
        if (first / "started").exists() and signal.getsignal(signal.SIGTERM) is grid.STOPPING:  # never pytest itself
            os.kill(os.getpid(), signal.SIGTERM)  # the grid's process alone, as `kill <grid pid>` would

    before = signal.getsignal(signal.SIGTERM)
    terminator = threading.Thread(target=terminate_once_started, daemon=True)
    terminator.start()
    status = grid.run_grid(cfg)
    terminator.join()
    assert (first / "checkpoint").read_text() == "saved"  # the pack was waited for, not killed
    assert not (second / "started").exists()  # the queued pack never started
    assert status == {"reach-v3/state/seed0": "paused", "reach-v3/state/seed1": "paused"}
    assert (
        "grid: stopped on SIGTERM; run it again to continue (each pack from its newest checkpoint)"
        in capsys.readouterr().out
    )
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_stop_state_travels_to_a_ray_worker_fresh():
    """Ray pickles _execute with its globals when rl.grid runs as __main__: STOPPING arrives as a new one."""
    import pickle

    grid.STOPPING.requested.set()
    try:
        copy = pickle.loads(pickle.dumps(grid.STOPPING))
    finally:
        grid.STOPPING.requested.clear()
    assert isinstance(copy, grid.Stopping) and copy is not grid.STOPPING
    assert not copy.requested.is_set() and copy.packs == set()


class _Started(Exception):
    """Raised by the fake Ray once the grid has asked it for an instance."""


def test_a_ray_grid_without_an_address_asks_for_an_instance_of_its_own_with_whole_cpus(tmp_path, monkeypatch):
    """`ray.init(address="local")`: a new instance even where RAY_ADDRESS or this machine names another, with
    ceil(cpus-per-run x parallel) CPUs (int() gave 1.5 one CPU, where no pack could ever be scheduled); a process
    connected to Ray already is refused, since the grid would shut that instance down at its end."""
    calls = []

    def init(**kwargs):
        calls.append(kwargs)
        raise _Started

    fake = types.SimpleNamespace(init=init, is_initialized=lambda: False)
    monkeypatch.setitem(sys.modules, "ray", fake)
    cfg = GridConfig(encoders="state", seeds="0", steps=10, sac_preset="micro", backend="ray", out=str(tmp_path))
    with pytest.raises(_Started):
        grid.run_grid(replace(cfg, cpus_per_run=1.5, parallel=1))
    assert (calls[0]["address"], calls[0]["num_cpus"]) == ("local", 2)
    with pytest.raises(_Started):
        grid.run_grid(replace(cfg, ray_address="auto"))
    assert calls[1]["address"] == "auto" and "num_cpus" not in calls[1]  # a running cluster keeps its own CPUs
    fake.is_initialized = lambda: True
    with pytest.raises(ValueError, match="connected to Ray already: pass that instance's address"):
        grid.run_grid(cfg)
    assert len(calls) == 2
