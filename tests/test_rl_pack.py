"""The packed engine: a run's data and learning do not depend on the runs packed beside it, a
killed pack resumes every run exactly, and runs that cannot stack are split into separate packs."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.cli import from_flat, replace_flat
from common.io import NonFiniteError
from rl.config import SACConfig
from rl.grid import GridConfig, Run, finished_status, is_finished, plan, plan_packs
from rl.replay import ReplayBuffer
from rl.workspace import PARTIAL_EVAL, Pack, PackTraining, checkpoint_steps, latest_checkpoint, train

from tiny import TINY_SAC

TINY = TINY_SAC | dict(batch_size=16, hidden_dim=64, replay_size=2000)


def configs(root: Path, encoder: str, seeds, steps: int, tag: str, **kw) -> list[SACConfig]:
    return [
        from_flat(SACConfig, **{**TINY, **kw, "steps": steps}, encoder=encoder, seed=s, out=str(root / f"{tag}{s}"))
        for s in seeds
    ]


@pytest.fixture
def index_streams(monkeypatch):
    """Every replay index draw, per (buffer, run): the rows relative to the run's block and the slots."""
    streams: dict[tuple[int, int], list[np.ndarray]] = {}
    original = ReplayBuffer.sample_indices

    def record(self, batch_size, run=0):
        rows, slots = original(self, batch_size, run)
        streams.setdefault((id(self), run), []).append(np.stack([rows - run * self.num_envs, slots]))
        return rows, slots

    monkeypatch.setattr(ReplayBuffer, "sample_indices", record)
    return streams


def replay(run_dir: Path, name: str) -> np.ndarray:
    ckpt = torch.load(latest_checkpoint(run_dir), weights_only=True)
    return np.load(run_dir / ckpt["replay"]["dir"] / f"{name}.npy")


def streams_of(streams, n_buffers_before: int) -> list[list[np.ndarray]]:
    keys = sorted(streams, key=lambda k: list(streams).index(k))
    return [streams[k] for k in keys[n_buffers_before:]]


def test_packed_state_run_is_bit_identical_to_the_same_run_alone(tmp_path, index_streams):
    """400 env steps, 350 updates: observations, actions, replay indices and weights are identical."""
    packed = train(configs(tmp_path, "state", (0, 1, 2), 400, "p"))
    pack_streams = dict(index_streams)
    alone = train(configs(tmp_path, "state", (1,), 400, "a"))
    (pack_buffer,) = {k[0] for k in pack_streams}
    alone_buffer = next(k[0] for k in index_streams if k[0] != pack_buffer)
    ours, theirs = index_streams[(pack_buffer, 1)], index_streams[(alone_buffer, 0)]
    assert len(ours) == len(theirs) == 350 and all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    assert not np.array_equal(index_streams[(pack_buffer, 0)][0], ours[0])  # runs draw their own indices
    for name in ("obs.state", "action", "reward"):
        np.testing.assert_array_equal(replay(packed[1], name), replay(alone[0], name))
    a = torch.load(packed[1] / "agent.pt", weights_only=True)["model"]
    b = torch.load(alone[0] / "agent.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with open(packed[1] / "metrics.csv", newline="") as f, open(alone[0] / "metrics.csv", newline="") as g:
        assert [r["critic_loss"] for r in csv.DictReader(f)] == [r["critic_loss"] for r in csv.DictReader(g)]


def test_packed_cnn_run_is_bit_identical_to_the_run_alone(tmp_path, index_streams):
    """The trunk convolves each run of a pack alone (rl/nets.py), so a packed CNN run computes exactly
    what it computes alone: the same replay indices, random-phase frames and, after 50 updates through
    the 11-layer trunk, the same weights bit for bit (with one grouped convolution over the runs the
    kernels differed and so did the float sums, by up to 1.3e-2 of the update in the trunk)."""
    packed = train(configs(tmp_path, "cnn_rgb", (0, 1), 100, "p"))
    buffers = list(dict.fromkeys(k[0] for k in index_streams))
    alone = train(configs(tmp_path, "cnn_rgb", (1,), 100, "a"))
    alone_buffer = next(k[0] for k in index_streams if k[0] not in buffers)
    ours, theirs = index_streams[(buffers[0], 1)], index_streams[(alone_buffer, 0)]
    assert len(ours) == 50 and all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    random_phase = slice(0, 50)
    np.testing.assert_array_equal(
        replay(packed[1], "obs.pixels")[:, random_phase], replay(alone[0], "obs.pixels")[:, random_phase]
    )
    a = torch.load(packed[1] / "agent.pt", weights_only=True)["model"]
    b = torch.load(alone[0] / "agent.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = torch.load(packed[0] / "agent.pt", weights_only=True)["model"]  # the pack's other run differs
    assert not torch.equal(other["encoder.trunk.weights.3"], b["encoder.trunk.weights.3"])


def test_killed_pack_resumes_every_run_exactly(tmp_path):
    straight = train(configs(tmp_path, "state", (3, 4), 150, "s"))
    cut = configs(tmp_path, "state", (3, 4), 100, "r")
    train(cut)  # as if killed after the checkpoint at step 100
    resumed = train([replace_flat(c, steps=150, resume=True) for c in cut])
    for a_dir, b_dir in zip(straight, resumed):
        a = torch.load(a_dir / "agent.pt", weights_only=True)["model"]
        b = torch.load(b_dir / "agent.pt", weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)
        with open(b_dir / "metrics.csv", newline="") as f:
            assert [int(r["step"]) for r in csv.DictReader(f)] == [50, 100, 150]  # no duplicated rows
        assert [p.name for p in b_dir.glob("checkpoint-*.pt")] == ["checkpoint-000000150.pt"]
        assert [p.name for p in b_dir.glob("replay-*")] == ["replay-000000150"]


def test_checkpoints_come_by_minutes_too_so_a_hard_kill_loses_little(tmp_path, capsys, monkeypatch):
    """--checkpoint-minutes saves at the first episode boundary once that many minutes passed since the
    last save, whatever --checkpoint-every says: at a few env-steps/s, 10k steps between checkpoints are
    an hour or more of training that a kill without warning (a session's hard end) threw away."""
    from rl import workspace

    clock = [1_000.0]

    def tick() -> float:  # every call of the loop's clock is one simulated second
        clock[0] += 1.0
        return clock[0]

    monkeypatch.setattr(workspace.time, "time", tick)
    by_steps = configs(tmp_path, "state", (0,), 150, "s", checkpoint_every=10_000, checkpoint_minutes=0)
    train(by_steps)
    assert "step 50: checkpoints written" not in capsys.readouterr().out
    by_minutes = configs(tmp_path, "state", (0,), 150, "m", checkpoint_every=10_000, checkpoint_minutes=0.001)
    train(by_minutes)
    out = capsys.readouterr().out
    assert "step 50: checkpoints written" in out and "step 100: checkpoints written" in out
    assert [p.name for p in by_minutes[0].run_dir().glob("checkpoint-*.pt")] == ["checkpoint-000000150.pt"]
    with pytest.raises(ValueError, match="checkpoint-minutes must be a finite number >= 0"):
        configs(tmp_path, "state", (0,), 150, "x", checkpoint_minutes=-1)[0].validate()


def test_a_run_resumed_between_metrics_rows_logs_what_it_would_have_logged(tmp_path):
    """A checkpoint between two metrics rows (--checkpoint-minutes fires at any episode boundary) keeps the
    episodes ended since the last row: the resumed run's next row counts them, so its metrics.csv is the
    uninterrupted run's, timing columns aside (pipeline.keep re-keeps such a run only if it is)."""
    timing = {"wall_s", "steps_per_s", "pack_steps_per_s"}

    def rows(run_dir: Path) -> list[dict[str, str]]:
        with open(run_dir / "metrics.csv", newline="") as f:
            return [{k: v for k, v in r.items() if k not in timing} for r in csv.DictReader(f)]

    straight = train(configs(tmp_path, "state", (3, 4), 200, "s", log_every=100))
    cut = configs(tmp_path, "state", (3, 4), 150, "r", log_every=100)
    train(cut)  # as if killed after a checkpoint at step 150, an episode after the row at 100
    resumed = train([replace_flat(c, steps=200, resume=True) for c in cut])
    for a_dir, b_dir in zip(straight, resumed):
        assert [r["step"] for r in rows(b_dir)] == ["100", "200"]
        assert rows(b_dir) == rows(a_dir)


def test_a_pack_resumes_from_the_newest_step_every_run_holds(tmp_path):
    """A kill while a step's checkpoints are written leaves runs at different steps: the pack resumes
    from the newest step they all hold."""
    cfgs = configs(tmp_path, "state", (0, 1), 100, "k")
    train(cfgs)
    run0 = cfgs[0].run_dir()
    ckpt = torch.load(run0 / "checkpoint-000000100.pt", weights_only=True)
    torch.save({**ckpt, "step": 150}, run0 / "checkpoint-000000150.pt")  # only run 0 reached step 150
    pack = Pack([replace_flat(c, steps=200, resume=True) for c in cfgs])
    assert pack.step == 100
    (cfgs[1].run_dir() / "checkpoint-000000100.pt").unlink()
    with pytest.raises(ValueError, match="no checkpoint at a common step"):
        Pack([replace_flat(c, steps=200, resume=True) for c in cfgs])


def test_runs_that_cannot_stack_are_split_not_refused(tmp_path):
    grid = GridConfig(
        encoders="state,cnn_rgb,cnn_rgbs", seeds="0,1,2", steps=100, sac_preset="micro", out=str(tmp_path), pack=2
    )
    packs = plan_packs(grid, plan(grid))
    assert sorted((p[0].encoder, len(p)) for p in packs) == [
        ("cnn_rgb", 1),
        ("cnn_rgb", 2),
        ("cnn_rgbs", 1),
        ("cnn_rgbs", 2),
        ("state", 1),
        ("state", 2),
    ]
    with pytest.raises(ValueError, match="cannot share a pack"):
        Pack([*configs(tmp_path, "cnn_rgb", (0,), 100, "x"), *configs(tmp_path, "cnn_rgbs", (1,), 100, "y")])


def test_a_pack_whose_memory_would_outgrow_ram_is_refused_at_its_start(tmp_path, monkeypatch):
    """The pack checks its host memory at its last step against the machine's RAM: two cnn_rgb runs of 100
    steps write 2 x 103 frame slots (~2.5 MB) beside their env workers (one training, one evaluation each)
    and the pack's own process; on a (pretend) machine 2 MiB larger than those need that is refused, naming the fix."""
    from rl import replay
    from rl.envs import PIXEL_WORKER_BYTES
    from rl.workspace import PACK_PROCESS_BYTES

    workers = (PACK_PROCESS_BYTES + 2 * 2 * PIXEL_WORKER_BYTES) / replay.HOST_MEMORY_SHARE  # RAM whose 85 % they take
    monkeypatch.setattr(replay, "physical_memory", lambda: int(workers) + (2 << 20))
    with pytest.raises(ValueError, match=r"this pack of 2 run\(s\) of 100 steps .* lower --replay-size"):
        Pack(configs(tmp_path, "cnn_rgb", (0, 1), 100, "s", device="cpu"))  # CPU replay: checked
    monkeypatch.setattr(replay, "physical_memory", lambda: int(workers) + (4 << 20))
    assert Pack(configs(tmp_path, "cnn_rgb", (0, 1), 100, "t", device="cpu")).buffer.slots == 2000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graphed_updates_equal_eager_updates():
    """Updates replayed from CUDA graphs (every schedule variant) compute what eager updates compute."""
    from rl.agent import SAC, GraphedUpdates
    from rl.encoders import build_encoder

    cfg = from_flat(SACConfig, encoder="state", hidden_dim=64)
    agents = []
    for _ in range(2):
        torch.manual_seed(0)
        agents.append(SAC(build_encoder(cfg), 39, 4, cfg, runs=3).cuda())
    graphed = GraphedUpdates(agents[1])
    gen = torch.Generator(device="cuda").manual_seed(1)
    for _ in range(12):
        obs = {"state": torch.randn(3, 32, 39, device="cuda", generator=gen)}
        nxt = {"state": torch.randn(3, 32, 39, device="cuda", generator=gen)}
        batch = {
            "obs": obs,
            "next_obs": nxt,
            "action": torch.rand(3, 32, 4, device="cuda", generator=gen) * 2 - 1,
            "reward": torch.randn(3, 32, device="cuda", generator=gen),
            "terminal": torch.zeros(3, 32, device="cuda"),
        }
        noise = torch.randn(2, 3, 32, 4, device="cuda", generator=gen)
        a, b = agents[0].update(batch, noise), graphed(batch, noise)
        torch.testing.assert_close(a["critic_loss"], b["critic_loss"], atol=1e-5, rtol=1e-4)
    assert not graphed.disabled and len(graphed.graphs) == 2 and agents[1].num_updates == 12
    for (k, x), y in zip(agents[0].state_dict().items(), agents[1].state_dict().values()):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4, msg=k)


def test_max_minutes_pauses_at_an_episode_boundary_and_resume_finishes_exactly(tmp_path):
    """A time-boxed pack (a 10-minute command on a lent GPU) pauses with checkpoints and no exports;
    --resume finishes the runs exactly as an uninterrupted pack."""
    straight = train(configs(tmp_path, "state", (0, 1), 150, "s"))
    boxed = configs(tmp_path, "state", (0, 1), 150, "b", max_minutes=1e-9)  # out of time at the first boundary
    dirs = train(boxed)
    assert [p.name for p in dirs[0].glob("checkpoint-*.pt")] == ["checkpoint-000000050.pt"]
    assert not (dirs[0] / "agent.pt").exists() and not (dirs[0] / "summary.json").exists()
    for _ in range(2):  # each command advances one episode
        train([replace_flat(c, resume=True) for c in boxed])
    final = train([replace_flat(c, resume=True, max_minutes=0.0) for c in boxed])
    for a_dir, b_dir in zip(straight, final):
        a = torch.load(a_dir / "agent.pt", weights_only=True)["model"]
        b = torch.load(b_dir / "agent.pt", weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)


def sigterm_in_evaluation(monkeypatch, step: int, after_rounds: int) -> None:
    """SIGTERM arrives as the evaluation at `step` starts; the pack hears it between rounds, after `after_rounds`."""
    evaluate_pack, evaluate_training = Pack.evaluate, PackTraining.evaluate

    def pack_evaluate(self, episodes, stop=None):
        asked = itertools.count()
        late = (lambda: next(asked) >= after_rounds and stop()) if stop and self.step == step else stop
        return evaluate_pack(self, episodes, late)

    def training_evaluate(self, episodes):
        if self.pack.step == step:
            self.stop_signal.append("SIGTERM")
        return evaluate_training(self, episodes)

    monkeypatch.setattr(Pack, "evaluate", pack_evaluate)
    monkeypatch.setattr(PackTraining, "evaluate", training_evaluate)


def eval_rows(run_dir: Path) -> list[tuple]:
    if not (run_dir / "eval.csv").exists():
        return []
    with open(run_dir / "eval.csv") as f:
        return [(r["step"], r["episodes"], r["success_rate"], r["return_mean"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("stopped_at", [100, 150], ids=["periodic", "final"])
def test_a_stop_during_an_evaluation_keeps_its_rounds_and_the_resume_goes_on_exactly(tmp_path, monkeypatch, stopped_at):
    """A stop during an evaluation (a session's end during a 50-episode final one) pauses after the round it is in:
    the episodes played wait in eval-partial.json and the resumed pack plays only the rounds left, so its
    evaluations and weights equal an uninterrupted pack's. Their seconds count in the wall time: through the
    pause's checkpoint (periodic), or carried in the file where this step's checkpoint exists already (final)."""
    settings = dict(eval_every=100, eval_episodes=6, final_eval_episodes=4, eval_envs=2)  # 3 rounds, then 2
    straight = train(configs(tmp_path, "state", (0, 1), 150, "s", **settings))
    stopped = configs(tmp_path, "state", (0, 1), 150, "b", **settings)
    sigterm_in_evaluation(monkeypatch, stopped_at, after_rounds=1)
    dirs = train(stopped)
    partial = json.loads((dirs[1] / PARTIAL_EVAL).read_text())
    assert (partial["step"], partial["rounds"], len(partial["successes"])) == (stopped_at, 1, 2)
    assert (partial["uncounted_s"] > 0) == (stopped_at == 150)
    assert checkpoint_steps(dirs[1]) == [stopped_at] and not (dirs[1] / "summary.json").exists()
    assert [row[0] for row in eval_rows(dirs[1])] == ["100"] * (stopped_at == 150)
    monkeypatch.undo()
    checkpoint = torch.load(latest_checkpoint(dirs[1]), weights_only=True)
    resumed = Pack([replace_flat(c, resume=True) for c in stopped])  # its wall: the checkpoint's and the uncounted
    assert resumed.wall_before[1] == pytest.approx(checkpoint["wall_s"] + partial["uncounted_s"])
    del resumed
    final = train([replace_flat(c, resume=True) for c in stopped])
    for a_dir, b_dir in zip(straight, final):
        assert eval_rows(b_dir) == eval_rows(a_dir) and [r[:2] for r in eval_rows(b_dir)] == [
            ("100", "6"),
            ("150", "4"),
        ]
        assert not (b_dir / PARTIAL_EVAL).exists()
        a = torch.load(a_dir / "agent.pt", weights_only=True)["model"]
        b = torch.load(b_dir / "agent.pt", weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)
        summary = json.loads((b_dir / "summary.json").read_text())
        assert summary["success_rate"] == json.loads((a_dir / "summary.json").read_text())["success_rate"]


def test_a_pending_evaluation_is_logged_once_for_the_runs_that_wait_on_it(tmp_path, monkeypatch):
    """A pack regrouped since a stop can hold a run that finished its evaluation of the step (it plays along,
    unlogged), and a kill between a row and the partial file's removal leaves a row the resume replaces."""
    settings = dict(eval_every=100, eval_episodes=6, eval_envs=2)
    straight = train(configs(tmp_path, "state", (0, 1), 150, "s", **settings))
    stopped = configs(tmp_path, "state", (0, 1), 150, "b", **settings)
    sigterm_in_evaluation(monkeypatch, 100, after_rounds=1)
    dirs = train(stopped)
    monkeypatch.undo()
    (dirs[0] / PARTIAL_EVAL).unlink()  # run 0 finished its evaluation at 100 before the stop
    done = "100,1.0,1.0,-1.0,0.0,6,1.0\n"
    with open(dirs[0] / "eval.csv", "a") as f:
        f.write("step,wall_s,success_rate,return_mean,return_std,episodes,eval_s\n" + done)
    leftover = (dirs[0] / "eval.csv").read_text().splitlines()[-1]
    with open(dirs[1] / "eval.csv", "a") as f:  # run 1's row written, then killed before the file's removal
        f.write("step,wall_s,success_rate,return_mean,return_std,episodes,eval_s\n" + done)
    final = train([replace_flat(c, resume=True) for c in stopped])
    assert [r[0] for r in eval_rows(final[0])] == ["100", "150"]
    assert (final[0] / "eval.csv").read_text().splitlines()[1] == leftover  # its own row, not logged again
    assert eval_rows(final[1]) == eval_rows(straight[1])


def test_a_run_killed_before_its_summary_evaluates_its_last_step_once(tmp_path):
    """A kill between the last evaluation's row and summary.json (a session's hard end) leaves the row; the rerun
    evaluates that step anew from the checkpoint finish() saved before it, and its row replaces the old one, so
    eval.csv holds the step once (the CPU table's budget rule reads every row: a step twice would count as two
    evaluations in a row)."""
    settings = dict(eval_every=50, eval_episodes=2, eval_envs=2)
    dirs = train(configs(tmp_path, "state", (0, 1), 100, "k", **settings))
    rows = [eval_rows(d) for d in dirs]
    for d in dirs:
        (d / "summary.json").unlink()
        (d / "agent.pt").unlink()
    again = train([replace_flat(c, resume=True) for c in configs(tmp_path, "state", (0, 1), 100, "k", **settings)])
    for d, before in zip(again, rows):
        assert [r[0] for r in eval_rows(d)] == ["50", "100"]
        assert [r[2] for r in eval_rows(d)] == [r[2] for r in before]  # the same success: fixed evaluation seeds
        assert (d / "summary.json").exists()


def test_sigterm_pauses_at_an_episode_boundary_and_the_rerun_finishes(tmp_path):
    """SIGTERM to the whole process group (a scheduler's or Ray's notice) pauses the pack with
    checkpoints, like --max-minutes; the same command with --resume auto then finishes it, one row per
    logged step. Pixel env workers ignore the signal, so the trainer can still reach the boundary."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "rl.sac",
        "--preset",
        "micro",
        "--encoder",
        "cnn_rgb",
        "--steps",
        "100000",
        "--hidden-dim",
        "16",
        "--batch-size",
        "4",
        "--log-every",
        "50",
        "--out",
        str(run),
        "--resume",
        "auto",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    metrics = run / "metrics.csv"
    deadline = time.time() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) > 2) and time.time() < deadline:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)  # the trainer and its env workers alike
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "on SIGTERM; checkpoints written" in out, out
    paused_at = checkpoint_steps(run)[-1]
    assert paused_at % 100 == 0 and paused_at > 0  # micro episodes are 100 steps: a boundary
    assert not (run / "summary.json").exists()
    steps = [int(r["step"]) for r in csv.DictReader(open(metrics))]
    assert steps[-1] >= paused_at  # rows after the checkpoint are dropped on resume, not duplicated
    cmd[cmd.index("100000")] = str(paused_at + 100)
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    steps = [int(r["step"]) for r in csv.DictReader(open(metrics))]
    assert steps == list(range(50, paused_at + 101, 50))
    assert json.loads((run / "summary.json").read_text())["steps"] == paused_at + 100


def test_a_diverging_run_stops_at_once_and_its_pack_mates_finish_untouched(tmp_path, monkeypatch):
    """Run 1's loss turns NaN at update 61 (step 110): it stops at its first NaN action (step 112) with its
    clean step-100 checkpoint, no NaN control ever reaches MuJoCo, and run 0 finishes exactly as alone."""
    from rl.agent import SAC

    update = SAC.update

    def poison_run_1(self, batch, noise):
        if self.runs == 2 and self.num_updates >= 60:
            batch["reward"] = batch["reward"] * torch.tensor([[1.0], [float("nan")]])  # [R, B]: run 1 only
        return update(self, batch, noise)

    monkeypatch.setattr(SAC, "update", poison_run_1)
    monkeypatch.chdir(tmp_path)  # MuJoCo logs unstable simulations (NaN controls) to ./MUJOCO_LOG.TXT
    cfgs = configs(tmp_path, "state", (0, 1), 200, "d")
    with pytest.raises(NonFiniteError) as stop:
        train(cfgs)
    message = str(stop.value)
    assert f"{cfgs[1].run_dir()}: non-finite action at step 112" in message and str(cfgs[0].run_dir()) not in message
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    healthy, diverged = cfgs[0].run_dir(), cfgs[1].run_dir()
    assert [p.name for p in diverged.glob("checkpoint-*.pt")] == ["checkpoint-000000100.pt"]
    kept = torch.load(diverged / "checkpoint-000000100.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in kept["agent"]["model"].values())
    assert not (diverged / "agent.pt").exists()
    summary = json.loads((diverged / "summary.json").read_text())  # its outcome, written when it was caught
    assert summary["diverged"] == {
        "step": 112,
        "why": "non-finite action at step 112",
        "checkpoint": 100,
        "budget": 200,
    }
    assert summary["success_rate"] == 0.0 and summary["steps"] == 112 and summary["seed"] == 1
    with open(diverged / "metrics.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [50, 100]
    # final at any budget: a grid skips it, and resuming it is refused with the way to retrain it
    assert is_finished(Run("reach-v3", "state", 1, diverged), 400)
    assert finished_status(Run("reach-v3", "state", 1, diverged)).startswith("diverged at step 112 (counted as 0")
    with pytest.raises(
        ValueError,
        match=r"diverged at step 112 \(non-finite action at step 112\); that is its outcome.*checkpoint \(step 100\), delete its summary.json",
    ):
        Pack([replace_flat(cfgs[1], steps=400, resume="auto")])
    # a pack retried whole (Ray retries the spec it was given) goes on with its healthy runs only
    assert train([replace_flat(cfgs[1], steps=400, resume="auto")]) == []
    alone = train(configs(tmp_path, "state", (0,), 200, "a"))[0]
    a = torch.load(healthy / "agent.pt", weights_only=True)["model"]
    b = torch.load(alone / "agent.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_whose_weights_went_nan_since_the_last_log_is_not_checkpointed(tmp_path):
    cfgs = configs(tmp_path, "state", (0, 1), 100, "w")
    train(cfgs)
    pack = Pack([replace_flat(c, steps=200, resume=True) for c in cfgs])
    with torch.no_grad():
        next(iter(pack.agent.actor.parameters()))[1].fill_(float("nan"))  # [R, ...]: run 1's slice only
    pack.step = 150
    pack.save_checkpoints(wall=1.0)
    assert list(pack.diverged) == [1] and "non-finite weights at step 150 (agent.model.actor." in pack.diverged[1]
    assert [p.name for p in cfgs[0].run_dir().glob("checkpoint-*.pt")] == ["checkpoint-000000150.pt"]
    assert [p.name for p in cfgs[1].run_dir().glob("checkpoint-*.pt")] == ["checkpoint-000000100.pt"]
    assert [p.name for p in cfgs[1].run_dir().glob("replay-*")] == ["replay-000000100"]
