"""The replay buffer's transitions are aligned across episode ends and ring wrap-around, a run's
replay stream survives a checkpoint, and it does not depend on the runs packed beside it."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rl.replay import ReplayBuffer


class SyntheticEnvs:
    """Vectorised toy env with known dynamics and SAME_STEP autoreset.

    obs = [x0, x1, t, episode id] (float32) plus a uint8 "frame" derived from it;
    next x = 0.5 x + a[:2], reward = x0 + 10 a[0] + t, terminated when x0 > 1.5, truncated at
    a per-episode random length; the final observation of an episode is returned in `final`.
    """

    def __init__(self, n: int, seed: int = 0):
        self.n, self.rng = n, np.random.default_rng(seed)
        self.episode = np.arange(n, dtype=np.float64)
        self.next_id = n
        self.state = np.zeros((n, 4))
        self.limit = np.zeros(n, np.int64)
        self.limits: dict[float, int] = {}  # episode id -> its length
        for i in range(n):
            self._reset(i)

    def _reset(self, i: int) -> None:
        self.state[i] = [self.rng.uniform(-1, 1), self.rng.uniform(-1, 1), 0.0, self.next_id]
        self.next_id += 1
        self.limit[i] = self.rng.integers(3, 12)
        self.limits[float(self.state[i, 3])] = int(self.limit[i])

    def obs(self, state: np.ndarray) -> dict[str, np.ndarray]:
        frame = (np.abs(state[:, :, None, None] * 40.0) % 256).astype(np.uint8)  # [n, 4, 1, 1]
        return {"state": state.astype(np.float32), "frame": np.repeat(frame, 2, axis=2)}

    @staticmethod
    def dynamics(state: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nxt = state.copy()
        nxt[..., :2] = 0.5 * state[..., :2] + action[..., :2]
        nxt[..., 2] = state[..., 2] + 1
        reward = state[..., 0] + 10 * action[..., 0] + state[..., 2]
        return nxt, reward, nxt[..., 0] > 1.5

    def step(self, action: np.ndarray):
        nxt, reward, terminated = self.dynamics(self.state, action)
        truncated = (nxt[:, 2] >= self.limit) & ~terminated
        done = terminated | truncated
        final = self.obs(nxt.copy())
        self.state = nxt
        for i in np.flatnonzero(done):
            self._reset(i)
        return self.obs(self.state.copy()), reward, terminated, done, final


def one_run(batch: dict) -> dict:
    """The first (only) run of a sampled batch: [1, B, ...] -> [B, ...]."""
    assert all(
        v.shape[0] == 1
        for v in (
            batch["action"],
            batch["reward"],
            batch["terminal"],
            *batch["obs"].values(),
            *batch["next_obs"].values(),
        )
    )
    return {k: {f: x[0] for f, x in v.items()} if isinstance(v, dict) else v[0] for k, v in batch.items()}


def check(batch: dict, envs: SyntheticEnvs) -> int:
    """Every sampled tuple [B, ...] obeys the known dynamics; returns how many were episode ends."""
    state = batch["obs"]["state"].double().numpy()
    action = batch["action"].double().numpy()
    nxt, reward, terminated = envs.dynamics(state, action)
    np.testing.assert_allclose(batch["next_obs"]["state"].numpy(), nxt.astype(np.float32), rtol=0, atol=1e-6)
    np.testing.assert_allclose(batch["reward"].numpy(), reward.astype(np.float32), rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(batch["terminal"].numpy(), terminated.astype(np.float32))
    assert (batch["next_obs"]["state"][:, 3] == batch["obs"]["state"][:, 3]).all(), "transition crosses episodes"
    frames = SyntheticEnvs.obs(None, batch["next_obs"]["state"].double().numpy())["frame"]
    np.testing.assert_array_equal(batch["next_obs"]["frame"].numpy(), frames)
    return int(terminated.sum())


@pytest.mark.parametrize("num_envs,capacity", [(1, 40), (3, 60), (4, 1000)])
def test_every_transition_aligned_across_episodes_and_wraparound(num_envs, capacity):
    envs = SyntheticEnvs(num_envs, seed=capacity)
    buf = ReplayBuffer({"state": ((4,), np.float32), "frame": ((4, 2, 1), np.uint8)}, 2, capacity, num_envs, seeds=1)
    buf.start(envs.obs(envs.state.copy()))
    rng = np.random.default_rng(2)
    ends = terminal = 0
    for step in range(400):
        action = rng.uniform(-1, 1, (num_envs, 2)).astype(np.float32)
        next_obs, reward, terminated, done, final = envs.step(action)
        buf.add(action, reward, terminated, next_obs, done, final)
        ends += int(done.sum())
        if step > 5:
            batch = buf.sample(64)
            assert batch["obs"]["frame"].shape == (1, 64, 4, 2, 1) and batch["obs"]["frame"].dtype == torch.uint8
            assert batch["action"].shape == (1, 64, 2) and batch["reward"].shape == (1, 64)
            terminal += check(one_run(batch), envs)
    assert ends > 30 and terminal > 0  # many episode ends (some terminal) went through the buffer
    assert 400 * num_envs > capacity  # the ring wrapped around
    # exhaustive: every valid slot (not only sampled ones) is aligned
    rows, slots = np.nonzero(buf.valid)
    nxt = (slots + 1) % buf.slots
    rows, slots, nxt = torch.from_numpy(rows), torch.from_numpy(slots), torch.from_numpy(nxt)
    batch = {
        "obs": {"state": buf.obs["state"][rows, slots], "frame": buf.obs["frame"][rows, slots]},
        "next_obs": {"state": buf.obs["state"][rows, nxt], "frame": buf.obs["frame"][rows, nxt]},
        "action": buf.action[rows, slots],
        "reward": buf.reward[rows, slots],
        "terminal": buf.terminal[rows, slots],
    }
    check(batch, envs)
    # each episode of L steps occupies L + 1 slots: all but the final/current observations are valid
    assert len(buf) >= buf.slots * num_envs * 0.7


def test_last_transition_of_episode_is_sampled_with_its_final_observation():
    envs = SyntheticEnvs(2, seed=5)
    buf = ReplayBuffer({"state": ((4,), np.float32), "frame": ((4, 2, 1), np.uint8)}, 2, 10_000, 2, seeds=3)
    buf.start(envs.obs(envs.state.copy()))
    action = np.zeros((2, 2), np.float32)  # x shrinks: only time-limit truncations
    for _ in range(30):
        next_obs, reward, terminated, done, final = envs.step(action)
        buf.add(action, reward, terminated, next_obs, done, final)
    batch = one_run(buf.sample(5000))
    check(batch, envs)
    state, nxt = batch["obs"]["state"].numpy(), batch["next_obs"]["state"].numpy()
    assert (batch["terminal"] == 0).all()
    # every finished episode's last transition (into its final observation, t = length) is there
    finished = [ep for ep in np.unique(state[:, 3]) if ep not in envs.state[:, 3]]
    assert len(finished) > 5
    for ep in finished:
        assert nxt[state[:, 3] == ep, 2].max() == envs.limits[float(ep)]


SPEC = {"state": ((4,), np.float32), "frame": ((4, 2, 1), np.uint8)}


def _feed(bufs: list[ReplayBuffer], envs: SyntheticEnvs, steps: int, seed: int = 0, start: bool = True) -> None:
    """Step `envs` with random actions, adding every transition to each buffer (their rows are envs' rows)."""
    if start:
        for buf in bufs:
            buf.start(envs.obs(envs.state.copy()))
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        act = rng.uniform(-1, 1, (envs.n, 2)).astype(np.float32)
        next_obs, reward, terminated, done, final = envs.step(act)
        for buf in bufs:
            buf.add(act, reward, terminated, next_obs, done, final)


def _assert_batches_equal(x: dict, y: dict) -> None:
    for k in ("action", "reward", "terminal"):
        torch.testing.assert_close(x[k], y[k], rtol=0, atol=0)
    for part in ("obs", "next_obs"):
        assert x[part].keys() == y[part].keys()
        for f in x[part]:
            assert x[part][f].dtype == y[part][f].dtype
            torch.testing.assert_close(x[part][f], y[part][f], rtol=0, atol=0)


def test_resume_state_roundtrip_is_exact(tmp_path: Path):
    envs = SyntheticEnvs(2, seed=7)
    a = ReplayBuffer(SPEC, 2, 50, 2, seeds=4)
    _feed([a], envs, 60)
    meta = a.save_run(0, tmp_path / "replay")
    assert sorted(p.name for p in (tmp_path / "replay").iterdir()) == [
        "action.npy",
        "obs.frame.npy",
        "obs.state.npy",
        "reward.npy",
        "terminal.npy",
    ]
    assert meta["bytes"] > 0 and meta["fields"] == ["frame", "state"]
    # the bookkeeping goes into the checkpoint (.pt, loaded with weights_only)
    blob = io.BytesIO()
    torch.save(meta, blob)
    blob.seek(0)
    meta = torch.load(blob, weights_only=True)
    b = ReplayBuffer(SPEC, 2, 50, 2, seeds=99)
    b.load_run(0, tmp_path / "replay", meta)
    np.testing.assert_array_equal(b.valid, a.valid)
    np.testing.assert_array_equal(b.pos, a.pos)
    np.testing.assert_array_equal(b.filled, a.filled)
    for k in SPEC:
        torch.testing.assert_close(b.obs[k], a.obs[k], rtol=0, atol=0)
    # the replay streams continue identically: the same indices and contents, also after more steps
    for _ in range(3):
        _assert_batches_equal(a.sample(32), b.sample(32))
    _feed([a, b], envs, 25, seed=1, start=False)
    for _ in range(3):
        _assert_batches_equal(a.sample(32), b.sample(32))
    # a folder from another buffer shape is refused
    with pytest.raises(ValueError, match="does not match"):
        ReplayBuffer(SPEC, 2, 50, 1, seeds=4).load_run(0, tmp_path / "replay", meta)


def test_a_run_in_a_pack_replays_exactly_as_alone(tmp_path: Path):
    """Run 1 of a pack seeded [4, 9] draws the same indices and contents as a pack of one seeded 9."""
    E = 3
    envs0, envs1 = SyntheticEnvs(E, seed=11), SyntheticEnvs(E, seed=12)
    pack = ReplayBuffer(SPEC, 2, 90, E, seeds=[4, 9])
    alone = ReplayBuffer(SPEC, 2, 90, E, seeds=9)
    assert (
        pack.runs == 2
        and pack.obs["frame"].shape == (2 * E, 30, 4, 2, 1)
        and alone.obs["frame"].shape == (E, 30, 4, 2, 1)
    )
    cat = lambda a, b: {k: np.concatenate([a[k], b[k]]) for k in a}  # noqa: E731  (run 0's rows, then run 1's)
    pack.start(cat(envs0.obs(envs0.state.copy()), envs1.obs(envs1.state.copy())))
    alone.start(envs1.obs(envs1.state.copy()))
    rng0, rng1 = np.random.default_rng(0), np.random.default_rng(1)
    for step in range(80):
        a0, a1 = (r.uniform(-1, 1, (E, 2)).astype(np.float32) for r in (rng0, rng1))
        o0, r0, t0, d0, f0 = envs0.step(a0)
        o1, r1, t1, d1, f1 = envs1.step(a1)
        # the pack's rows: run 0's envs, then run 1's (the same data the pack of one gets)
        pack.add(
            np.concatenate([a0, a1]),
            np.concatenate([r0, r1]),
            np.concatenate([t0, t1]),
            cat(o0, o1),
            np.concatenate([d0, d1]),
            cat(f0, f1),
        )
        alone.add(a1, r1, t1, o1, d1, f1)
        if step > 4 and step % 5 == 0:
            rows, slots = pack.sample_indices(16, run=1)
            rows_alone, slots_alone = alone.sample_indices(16, run=0)
            np.testing.assert_array_equal(rows, rows_alone + E)  # run 1 owns rows E .. 2E - 1
            np.testing.assert_array_equal(slots, slots_alone)
            pack.sample_indices(16, run=0)  # drawing run 0's indices does not move run 1's generator
            batch, single = pack.sample(24), alone.sample(24)
            assert batch["action"].shape == (2, 24, 2) and batch["obs"]["state"].shape == (2, 24, 4)
            _assert_batches_equal(
                {k: {f: x[1:] for f, x in v.items()} if isinstance(v, dict) else v[1:] for k, v in batch.items()},
                single,
            )
            check(
                one_run(
                    {k: {f: x[:1] for f, x in v.items()} if isinstance(v, dict) else v[:1] for k, v in batch.items()}
                ),
                envs0,
            )
            check(one_run(single), envs1)
    np.testing.assert_array_equal(pack.valid[E:], alone.valid)
    assert len(pack) == int(pack.valid[:E].sum()) + len(alone)
    # run 1's checkpoint from the pack restores a pack of one that continues the same stream
    meta = pack.save_run(1, tmp_path / "run1")
    restored = ReplayBuffer(SPEC, 2, 90, E, seeds=123)
    restored.load_run(0, tmp_path / "run1", meta)
    _assert_batches_equal(restored.sample(24), alone.sample(24))


def test_sampling_an_empty_buffer_says_so():
    buf = ReplayBuffer({"state": ((4,), np.float32)}, 2, 10, 1)
    buf.start({"state": np.zeros((1, 4), np.float32)})
    with pytest.raises(RuntimeError, match="no complete transition"):
        buf.sample(4)
    with pytest.raises(ValueError, match="too small"):
        ReplayBuffer({"state": ((4,), np.float32)}, 2, 5, 4)


def test_a_full_disk_while_saving_a_replay_is_an_error_that_leaves_nothing(tmp_path: Path, monkeypatch):
    """Issue #27: a memory map over a sparse file died with SIGBUS on a full disk, leaving a partial
    replay-<step>/; the blocks are now allocated first, so ENOSPC is an error and the save leaves nothing."""
    import errno
    import os

    from common.io import DiskFullError
    from common.runs import exclusive_run_dir

    a = ReplayBuffer(SPEC, 2, 50, 2, seeds=4)
    _feed([a], SyntheticEnvs(2, seed=7), 30)
    a.save_run(0, tmp_path / "replay-000000050")  # the previous checkpoint's
    kept = {p.name: p.read_bytes() for p in (tmp_path / "replay-000000050").iterdir()}

    def no_room(fd, offset, size):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(DiskFullError, match=r"no space left on the device writing .*replay-000000100/obs.state.npy"):
        a.save_run(0, tmp_path / "replay-000000100")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replay-000000050"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "replay-000000050").iterdir()} == kept
    monkeypatch.undo()
    (tmp_path / ".replay-000000100.tmp").mkdir()  # a save cut off by a kill: removed when the run folder is taken
    (tmp_path / ".replay-000000100.tmp" / "action.npy").write_bytes(b"\0" * 100)
    with exclusive_run_dir(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "replay-000000050"]


def test_remove_replays_except_deletes_the_previous_and_orphaned_replays(tmp_path: Path):
    from rl.replay import remove_replays_except

    for step in (100, 150, 200):  # 150: an orphan whose checkpoint .pt was never written
        (tmp_path / f"replay-{step:09d}").mkdir()
        (tmp_path / f"replay-{step:09d}" / "action.npy").write_bytes(b"\0")
    (tmp_path / "checkpoint-000000200.pt").write_bytes(b"\0")
    gone = remove_replays_except(tmp_path, "replay-000000200")
    assert [p.name for p in gone] == ["replay-000000100", "replay-000000150"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000000200.pt", "replay-000000200"]


REPLAY_ON_A_FULL_DISK = """
import json, sys
from pathlib import Path

import numpy as np

from common.io import DiskFullError
from rl.replay import ReplayBuffer

disk, rng = Path(sys.argv[1]), np.random.default_rng(0)
spec = {"frame": ((32, 32, 3), np.uint8)}
buf = ReplayBuffer(spec, 2, 400, 2)
frames = lambda: {"frame": rng.integers(0, 256, (2, 32, 32, 3), np.uint8)}
buf.start(frames())


def feed(steps):
    for _ in range(steps):
        buf.add(rng.uniform(-1, 1, (2, 2)).astype(np.float32), np.zeros(2), np.zeros(2), frames())


read = lambda folder: {p.name: p.read_bytes() for p in folder.iterdir()}
feed(10)
meta = buf.save_run(0, disk / "replay-000000010")  # ~70 kB: fits
kept = read(disk / "replay-000000010")
feed(90)
try:
    buf.save_run(0, disk / "replay-000000100")  # ~620 kB: does not
    error = None
except DiskFullError as err:
    error = str(err)
restored = ReplayBuffer(spec, 2, 400, 2)
restored.load_run(0, disk / "replay-000000010", meta)
same = bool((restored.obs["frame"][:, :11] == buf.obs["frame"][:, :11]).all())
same &= bool((restored.action[:, :10] == buf.action[:, :10]).all())
print(json.dumps({"error": error, "kept": read(disk / "replay-000000010") == kept, "restored": same}))
"""


def test_a_replay_saved_onto_a_real_full_disk_is_an_error_that_leaves_the_previous_one_whole(tmp_path: Path):
    """Issue #27 on a real full disk (a 300 kB tmpfs, tests/small_disk.py): the memory map's page faults
    are what died with SIGBUS, which patching posix_fallocate above cannot show."""
    import json
    import sys

    from small_disk import run_on_small_disk, small_disk_or_skip

    small_disk_or_skip()
    disk = tmp_path / "disk"
    disk.mkdir()
    run = run_on_small_disk(disk, 300, [sys.executable, "-c", REPLAY_ON_A_FULL_DISK, str(disk)])
    assert run.returncode == 0, run.stderr[-2000:]  # before: killed by SIGBUS (sh reports 135)
    result = json.loads(run.stdout)
    assert f"no space left on the device writing {disk}/replay-000000100/obs.frame.npy (0.6 MB)" in result["error"]
    assert run.left == ["replay-000000010"]  # no replay-000000100/, no hidden temp folder
    assert result["kept"] and result["restored"]


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads resident memory from Linux's /proc")
def test_a_cpu_buffer_holds_memory_for_the_slots_written_not_its_capacity():
    """A 1.2 GiB frame buffer costs nothing until written: a CNN run's 1M-slot buffer (~12 GB) must not
    be committed at its first step, where a run of 100k steps only ever writes a tenth of it."""
    fields = {"pixels": ((3, 64, 64), np.uint8)}
    before = _resident_bytes()
    buf = ReplayBuffer(fields, action_dim=4, capacity=100_000, seeds=0)
    assert buf.obs["pixels"].nbytes == 100_000 * 12_288 and (buf.obs["pixels"][0, 99_999] == 0).all()
    assert _resident_bytes() - before < 64 << 20  # the zeroed pages are not touched
    obs = {"pixels": np.full((1, 3, 64, 64), 7, np.uint8)}
    buf.start(obs)
    for _ in range(4_000):  # 4,000 slots x 12 KiB ~ 47 MiB written
        buf.add(np.zeros((1, 4)), np.zeros(1), np.zeros(1), obs)
    grown = _resident_bytes() - before
    assert 40 << 20 < grown < 120 << 20
    assert int(buf.obs["pixels"][0, 4_000].sum()) == 7 * 12_288 and int(buf.obs["pixels"][0, 4_001].sum()) == 0


def test_bytes_needed_counts_the_slots_a_run_of_that_length_writes():
    fields = {"pixels": ((3, 64, 64), np.uint8)}
    per_slot = 12_288 + 4 * 4 + 8
    assert ReplayBuffer.bytes_needed(fields, 4, 1_000_000, runs=2) == 2 * 1_000_000 * per_slot
    # 100k steps in 200 episodes of 500: 100,000 observations + 200 final ones + the first
    assert ReplayBuffer.bytes_needed(fields, 4, 1_000_000, 2, steps=100_000) == 2 * 100_201 * per_slot
    # 2 envs: 50k steps and 100 episodes each; never more than the capacity
    assert ReplayBuffer.bytes_needed(fields, 4, 1_000_000, 1, num_envs=2, steps=100_000) == 2 * 50_101 * per_slot
    assert ReplayBuffer.bytes_needed(fields, 4, 50_000, 1, steps=100_000) == 50_000 * per_slot


def test_replay_that_would_outgrow_ram_is_refused_with_the_fix(monkeypatch):
    from rl import replay

    monkeypatch.setattr(replay, "physical_memory", lambda: 16 << 30)
    replay.check_host_memory(13 << 30, "a pack", "fix it")  # 13 of 16 GiB: under the 85 % share
    with pytest.raises(ValueError) as err:
        replay.check_host_memory(14 << 30, "this pack of 3 run(s)", "lower --replay-size")
    assert str(err.value) == (
        "this pack of 3 run(s) would hold 14.0 GiB (processes, replay, encoder buffers, env workers) by its last step, more "
        "than 85% of this machine's "
        "16.0 GiB of RAM; lower --replay-size"
    )


def test_a_cgroup_memory_cap_is_the_memory_replay_may_use(tmp_path):
    from rl import replay

    ram = replay.physical_memory(())
    assert ram == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    uncapped, v1_cap = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    uncapped.write_text("max\n")  # cgroup v2 without a cap
    v1_cap.write_text(f"{4 << 30}\n")
    assert replay.physical_memory([uncapped]) == ram
    assert replay.physical_memory([uncapped, v1_cap, tmp_path / "absent"]) == min(ram, 4 << 30)
