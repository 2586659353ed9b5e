"""The replay buffer's transitions are aligned across episode ends and ring wrap-around."""
import io

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


def check(batch: dict, envs: SyntheticEnvs) -> int:
    """Every sampled tuple obeys the known dynamics; returns how many were episode ends."""
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
    buf = ReplayBuffer({"state": ((4,), np.float32), "frame": ((4, 2, 1), np.uint8)}, 2, capacity, num_envs, seed=1)
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
            terminal += check(batch, envs)
    assert ends > 30 and terminal > 0  # many episode ends (some terminal) went through the buffer
    assert 400 * num_envs > capacity  # the ring wrapped around
    # exhaustive: every valid slot (not only sampled ones) is aligned
    rows, slots = np.nonzero(buf.valid)
    nxt = (slots + 1) % buf.slots
    batch = {"obs": {"state": torch.from_numpy(buf.obs["state"][rows, slots]), "frame": torch.from_numpy(buf.obs["frame"][rows, slots])},
             "next_obs": {"state": torch.from_numpy(buf.obs["state"][rows, nxt]), "frame": torch.from_numpy(buf.obs["frame"][rows, nxt])},
             "action": torch.from_numpy(buf.action[rows, slots]), "reward": torch.from_numpy(buf.reward[rows, slots]),
             "terminal": torch.from_numpy(buf.terminal[rows, slots])}
    check(batch, envs)
    # each episode of L steps occupies L + 1 slots: all but the final/current observations are valid
    assert len(buf) >= buf.slots * num_envs * 0.7


def test_last_transition_of_episode_is_sampled_with_its_final_observation():
    envs = SyntheticEnvs(2, seed=5)
    buf = ReplayBuffer({"state": ((4,), np.float32), "frame": ((4, 2, 1), np.uint8)}, 2, 10_000, 2, seed=3)
    buf.start(envs.obs(envs.state.copy()))
    action = np.zeros((2, 2), np.float32)  # x shrinks: only time-limit truncations
    for _ in range(30):
        next_obs, reward, terminated, done, final = envs.step(action)
        buf.add(action, reward, terminated, next_obs, done, final)
    batch = buf.sample(5000)
    check(batch, envs)
    state, nxt = batch["obs"]["state"].numpy(), batch["next_obs"]["state"].numpy()
    assert (batch["terminal"] == 0).all()
    # every finished episode's last transition (into its final observation, t = length) is there
    finished = [ep for ep in np.unique(state[:, 3]) if ep not in envs.state[:, 3]]
    assert len(finished) > 5
    for ep in finished:
        assert nxt[state[:, 3] == ep, 2].max() == envs.limits[float(ep)]


def test_resume_state_roundtrip_is_exact():
    envs = SyntheticEnvs(2, seed=7)
    spec = {"state": ((4,), np.float32), "frame": ((4, 2, 1), np.uint8)}
    a = ReplayBuffer(spec, 2, 50, 2, seed=4)
    a.start(envs.obs(envs.state.copy()))
    rng = np.random.default_rng(0)
    for _ in range(60):
        act = rng.uniform(-1, 1, (2, 2)).astype(np.float32)
        next_obs, reward, terminated, done, final = envs.step(act)
        a.add(act, reward, terminated, next_obs, done, final)
    buf = torch.load(io.BytesIO(_save(a.state_dict())), weights_only=True)
    b = ReplayBuffer(spec, 2, 50, 2, seed=99)
    b.load_state_dict(buf)
    x, y = a.sample(32), b.sample(32)
    for k in ("action", "reward", "terminal"):
        torch.testing.assert_close(x[k], y[k])
    torch.testing.assert_close(x["next_obs"]["state"], y["next_obs"]["state"])


def _save(obj) -> bytes:
    f = io.BytesIO()
    torch.save(obj, f)
    return f.getvalue()


def test_sampling_an_empty_buffer_says_so():
    buf = ReplayBuffer({"state": ((4,), np.float32)}, 2, 10, 1)
    buf.start({"state": np.zeros((1, 4), np.float32)})
    with pytest.raises(RuntimeError, match="no complete transition"):
        buf.sample(4)
    with pytest.raises(ValueError, match="too small"):
        ReplayBuffer({"state": ((4,), np.float32)}, 2, 5, 4)
