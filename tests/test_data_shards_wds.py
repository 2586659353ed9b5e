"""Issue #14, shards through webdataset: the same files as the hand-written tar code, read back checked,
and pretraining ranks that decode only their share of the shards."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

import pretrain.data
from data.shards import (
    ShardError,
    check_shard,
    decode_sample,
    encode_sample,
    iter_samples,
    load_arrays,
    pixels_sha256,
    raw_pipeline,
    shard_name,
    verified_shards,
    write_manifest,
    write_shard_entry,
)
from pretrain.data import load_frames, load_split, split_episodes


def _samples(
    shard: int, n: int, rng: np.random.Generator, saliency: bool = False, episode_len: int = 7
) -> list[tuple[str, dict]]:
    """`n` random samples of shard `shard`, in episodes of `episode_len` frames (as data.collect numbers them)."""
    out = []
    for j in range(n):
        sample = {
            "rgb": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
            "state": rng.standard_normal(39).astype(np.float32),
            "clicks": rng.random((int(rng.integers(0, 4)), 2)).astype(np.float32),
            "meta": {
                "task": "reach-v3",
                "shard": shard,
                "episode": j // episode_len,
                "step": j % episode_len,
                "reward": 0.5,
                "success": 0.0,
                "policy": "expert",
            },
        }
        if saliency:
            sample["saliency"] = rng.random((16, 16)).astype(np.float32)
        out.append((f"{shard:05d}-{j:05d}", sample))
    return out


def _old_write(path: Path, samples: list[tuple[str, dict]]) -> None:
    """The hand-written tarfile writer that data.shards used before webdataset (its exact code)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, sample in samples:
            members = encode_sample(key, sample)
            members.pop("__key__")
            for suffix, payload in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size, info.mode, info.mtime = len(payload), 0o644, 0
                tar.addfile(info, io.BytesIO(payload))
    path.write_bytes(buf.getvalue())


def _members(path: Path) -> dict[str, tuple]:
    """Every member of a tar: name -> (bytes, mode, mtime, owner, group, uid, gid, type)."""
    with tarfile.open(path) as tar:
        return {
            m.name: (tar.extractfile(m).read(), m.mode, m.mtime, m.uname, m.gname, m.uid, m.gid, m.type) for m in tar
        }


def _folder(out: Path, sizes: list[int], seed: int = 0, old: bool = False) -> Path:
    """A shard folder with one shard per entry of `sizes`, written by the new (or the old) writer."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    entries = []
    for s, n in enumerate(sizes):
        samples = _samples(s, n, rng, episode_len=int(rng.integers(4, 9)))
        if old:
            _old_write(out / shard_name(s), samples)
            entries.append(check_shard(out / shard_name(s), n))
        else:
            entries.append(write_shard_entry(out / shard_name(s), samples))
    write_manifest(
        out,
        {
            "format": "visarl-shards/1",
            "status": "complete",
            "task": "reach-v3",
            "frames": sum(sizes),
            "shards": entries,
        },
    )
    return out


def test_the_pixels_digest_follows_the_frames_not_the_shards_other_bytes(tmp_path):
    """The same frames collected on another CPU can record rewards that differ in their last digits (its BLAS kernels
    round otherwise): the shards' checksums then differ, the pixels digest does not; one pixel more changes it."""
    rng = np.random.default_rng(5)
    samples = _samples(0, 3, rng) + _samples(1, 3, rng)

    def folder(name: str, samples: list[tuple[str, dict]]) -> Path:
        out = tmp_path / name
        out.mkdir()
        entries = [write_shard_entry(out / shard_name(i), samples[i * 3 : i * 3 + 3]) for i in range(2)]
        write_manifest(out, {"format": "visarl-shards/1", "status": "complete", "frames": 6, "shards": entries})
        return out

    rounded = [(key, {**sample, "meta": {**sample["meta"], "reward": 0.5000000000000001}}) for key, sample in samples]
    brighter = [(key, {**sample, "rgb": sample["rgb"].copy()}) for key, sample in samples]
    brighter[4][1]["rgb"][3, 7, 1] ^= 1
    digests = {name: pixels_sha256(folder(name, s)) for name, s in [("a", samples), ("b", rounded), ("c", brighter)]}
    assert (tmp_path / "a/shard-00000.tar").read_bytes() != (tmp_path / "b/shard-00000.tar").read_bytes()
    assert digests["a"] == digests["b"] != digests["c"] and len(digests["a"]) == 64


def _assert_same(decoded: dict, key: str, sample: dict) -> None:
    assert decoded["key"] == key and decoded["meta"] == sample["meta"]
    for field in ("rgb", "state", "clicks"):
        expected = np.asarray(sample[field])
        assert decoded[field].dtype == expected.dtype and np.array_equal(
            decoded[field], expected.reshape(decoded[field].shape)
        ), field
    if "saliency" in sample:
        assert np.array_equal(decoded["saliency"], np.round(sample["saliency"] * 255).astype(np.uint8))


def test_a_shard_of_the_old_writer_reads_identically(tmp_path):
    samples = _samples(0, 20, np.random.default_rng(1), saliency=True)
    _old_write(tmp_path / "old.tar", samples)
    decoded = list(iter_samples(tmp_path / "old.tar"))
    assert len(decoded) == 20
    for d, (key, sample) in zip(decoded, samples):
        _assert_same(d, key, sample)
    folder = _folder(tmp_path / "f", [13, 9], old=True)
    again = load_arrays(folder)  # through the manifest checks, sha256 of the old bytes included
    assert again["rgb"].shape == (22, 16, 16, 3) and again["keys"][13] == "00001-00000"


def test_the_new_writer_gives_the_old_members_and_is_deterministic(tmp_path):
    samples = _samples(3, 25, np.random.default_rng(2), saliency=True)
    _old_write(tmp_path / "old.tar", samples)
    entry = write_shard_entry(tmp_path / "new.tar", samples)
    old, new = _members(tmp_path / "old.tar"), _members(tmp_path / "new.tar")
    assert len(new) == 25 * 5 and new == old  # every member: name, bytes, mode, mtime, owner, type
    assert (tmp_path / "new.tar").stat().st_size == (tmp_path / "old.tar").stat().st_size
    assert entry == {
        "file": "new.tar",
        "frames": 25,
        "sha256": hashlib.sha256((tmp_path / "new.tar").read_bytes()).hexdigest(),
    }
    write_shard_entry(tmp_path / "again.tar", samples)
    assert (tmp_path / "again.tar").read_bytes() == (tmp_path / "new.tar").read_bytes()
    for d, (key, sample) in zip(iter_samples(tmp_path / "new.tar"), samples):
        _assert_same(d, key, sample)


KILLED_WRITER = """
import os, signal, sys
import numpy as np
from data.shards import write_shard_entry
sys.path.insert(0, sys.argv[2])
from test_data_shards_wds import _samples

def samples():
    for i, s in enumerate(_samples(0, 50, np.random.default_rng(0))):
        if i == 30:
            os.kill(os.getpid(), signal.SIGKILL)  # killed mid-shard, as by the OOM killer
        yield s

write_shard_entry(sys.argv[1], samples())
"""


def test_a_killed_or_failed_write_leaves_no_file_under_the_final_name(tmp_path):
    target = tmp_path / "shard-00000.tar"
    tests = Path(__file__).parent
    r = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(target), str(tests)], capture_output=True, text=True, cwd=tests.parent
    )
    assert r.returncode == -9, r.stderr[-2000:]
    assert not target.exists()

    def failing():
        yield from _samples(0, 5, np.random.default_rng(0))
        raise RuntimeError("the simulator crashed")

    with pytest.raises(RuntimeError, match="simulator crashed"):
        write_shard_entry(target, failing())
    assert list(tmp_path.iterdir()) == []


def test_damaged_shards_fail_with_one_line_errors_through_the_pipeline(tmp_path):
    folder = _folder(tmp_path / "f", [10, 10], old=True)
    shard = folder / "shard-00001.tar"
    payload = shard.read_bytes()
    with tarfile.open(shard) as tar:
        rgb = [m for m in tar if m.name.endswith("rgb.png")][3]
    shard.write_bytes(payload[: rgb.offset_data + 100])  # cut inside a member's data
    with pytest.raises(ShardError, match=r"shard-00001.tar: checksum mismatch .*re-run `python -m data.collect") as err:
        load_arrays(folder)
    assert "\n" not in str(err.value)
    with pytest.raises(
        ShardError, match=r"shard-00001.tar: corrupt or truncated shard \(unexpected end of data\); regen"
    ) as err:
        check_shard(shard, 10, repair="regenerate it")  # no checksum to compare: the tar structure itself
    assert "\n" not in str(err.value) and " @ " not in str(err.value)
    shard.write_bytes(payload[: rgb.offset])  # whole members, then nothing: no end-of-archive marker
    with pytest.raises(ShardError, match=r"corrupt or truncated shard \(the end-of-archive marker is missing\)"):
        check_shard(shard, 10)


def test_pipeline_split_across_dataloader_workers_reads_every_sample_once(tmp_path):
    shards = verified_shards(_folder(tmp_path / "f", [6, 5, 4, 3]))
    alone = [s["__key__"] for s in raw_pipeline(shards)]
    loader = wds.WebLoader(raw_pipeline(shards).compose(wds.map(decode_sample)), num_workers=2, batch_size=None)
    assert len(alone) == 18 and sorted(s["key"] for s in loader) == sorted(alone)


@pytest.fixture
def root(tmp_path) -> Path:
    """Five shards of uneven sizes and episode lengths (an odd count: the ranks' shares differ)."""
    return _folder(tmp_path / "data" / "reach-v3", [40, 33, 40, 25, 38], seed=5)


def test_ranks_decode_disjoint_shares_with_the_same_held_out_split_and_steps(root, monkeypatch):
    frames, _ = load_frames(root, "oracle")
    train, val = split_episodes(frames, 0.2, seed=3)  # the single-process split
    # ... the held-out episodes chosen as before this change (load_arrays, episode ids, then a seeded draw)
    episodes = [(m["shard"], m["episode"]) for m in load_arrays(root)["meta"]]
    ids = {e: k for k, e in enumerate(dict.fromkeys(episodes))}
    group = torch.tensor([ids[e] for e in episodes])
    groups = torch.unique(group)
    chosen = groups[torch.randperm(len(groups), generator=torch.Generator().manual_seed(3))[: round(len(groups) * 0.2)]]
    assert torch.equal(val.index, torch.nonzero(torch.isin(group, chosen)).squeeze(1)) and 0 < len(val) < len(frames)
    one = load_split(root, "oracle", 0.2, seed=3)
    assert torch.equal(one.train.index, train.index) and torch.equal(one.val.index, val.index)
    assert torch.equal(one.train.rgb, train.rgb) and torch.equal(one.train.saliency, train.saliency)

    decoded: dict[int, set[str]] = {}
    real = pretrain.data.decode_sample

    def spy(raw, source=None):
        decoded.setdefault(rank, set()).add(Path(raw["__url__"]).name)
        return real(raw, source)

    monkeypatch.setattr(pretrain.data, "decode_sample", spy)
    splits = []
    for rank in (0, 1):
        splits.append(load_split(root, "oracle", 0.2, seed=3, rank=rank, world=2))
    r0, r1 = splits
    # each rank holds only its own shards' training frames: disjoint, together the whole training set
    assert not set(r0.train.index.tolist()) & set(r1.train.index.tolist())
    assert sorted(r0.train.index.tolist() + r1.train.index.tolist()) == train.index.tolist()
    for r in splits:
        pos = torch.searchsorted(train.index, r.train.index)
        assert torch.equal(r.train.rgb, train.rgb[pos]) and torch.equal(r.train.saliency, train.saliency[pos])
        assert torch.equal(r.train.state, train.state[pos]) and torch.equal(r.train.group, train.group[pos])
    # rank 1 decoded images of its shards only (and the first frame, for the frame size)
    assert decoded[1] == {"shard-00000.tar", "shard-00001.tar", "shard-00003.tar"} and len(r1.train) < len(train)
    # the held-out frames: the single-process ones, on rank 0
    assert torch.equal(r0.val.index, val.index) and torch.equal(r0.val.rgb, val.rgb) and len(r1.val) == 0
    # both ranks know every share, so they take the same number of steps per epoch
    assert r0.train_counts == r1.train_counts == [len(r0.train), len(r1.train)] and sum(r0.train_counts) == len(train)
    local_batch = 8
    assert min(r0.train_counts) // local_batch == min(r1.train_counts) // local_batch > 0
    assert r0.info == r1.info == one.info


def test_every_rank_refuses_a_damaged_shard_and_too_many_ranks(root):
    payload = bytearray((root / "shard-00002.tar").read_bytes())
    payload[5000] ^= 0xFF
    (root / "shard-00002.tar").write_bytes(bytes(payload))
    for rank in (0, 1):  # shard 2 is rank 0's: rank 1 refuses it too, instead of waiting for rank 0 in DDP
        with pytest.raises(ShardError, match=r"shard-00002.tar: checksum mismatch"):
            load_split(root, None, 0.2, rank=rank, world=2)
    with pytest.raises(ShardError, match=r"5 shard\(s\) for 6 processes"):
        load_split(root, None, 0.2, rank=0, world=6)
