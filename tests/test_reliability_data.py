"""Issue #15, shards: damaged, missing or incomplete data is never read silently; re-collecting repairs it."""

import errno
import io
import json
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from common.cli import from_flat
from common.io import DiskFullError, atomic_write_json
from data.collect import CollectConfig, collect
from data.shards import MANIFEST, ShardError, load_arrays, read_manifest, verified_shards, write_manifest
from data.to_hdf5 import ToHdf5Config, convert

SETTINGS = {"task": "reach-v3", "frames": 300, "shard_size": 100, "episode_steps": 40}
ARGS = ["--task", "reach-v3", "--frames", "300", "--shard-size", "100", "--episode-steps", "40"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    out = tmp_path_factory.mktemp("rel") / "reach-v3"
    collect(from_flat(CollectConfig, **SETTINGS, out=str(out)), progress=False)
    return out


@pytest.fixture
def folder(pristine, tmp_path):
    """A fresh copy of the complete 3-shard folder, free to damage."""
    return shutil.copytree(pristine, tmp_path / "reach-v3")


def _member_offset(path, suffix: str, index: int = 1) -> int:
    """Byte offset of the data of the `index`-th member whose name ends with `suffix`."""
    with tarfile.open(path) as tar:
        return [m for m in tar if m.name.endswith(suffix)][index].offset_data


def _flip(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _readers(folder, tmp_path):
    """Every shard reader of data/: the loader and the HDF5 export (labelling: test_reliability_saliency)."""
    return {
        "load_arrays": lambda: load_arrays(folder),
        "to_hdf5": lambda: convert(ToHdf5Config(shards=str(folder), out=str(tmp_path / "x.h5")), progress=False),
    }


def test_manifest_lists_a_checksum_per_shard(pristine):
    shards = read_manifest(pristine)["shards"]
    assert [s["file"] for s in shards] == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]
    assert all(len(s["sha256"]) == 64 and s["frames"] == 100 for s in shards)


@pytest.mark.parametrize(
    "damage, match",
    [
        ("missing", r"shard-00001.tar: missing .*python -m data.collect --out .* --task reach-v3 --frames 300"),
        ("header", r"shard-00001.tar: checksum mismatch"),
        ("state", r"shard-00001.tar: checksum mismatch"),
        ("clicks", r"shard-00001.tar: checksum mismatch"),
    ],
)
def test_damaged_or_missing_shards_are_refused_by_every_reader(folder, tmp_path, damage, match):
    shard = folder / "shard-00001.tar"
    if damage == "missing":
        shard.unlink()
    elif damage == "header":
        _flip(shard, _member_offset(shard, "rgb.png", 40) - 512 + 100)  # a header mid-shard: tar reads it as the end
    else:
        _flip(
            shard,
            _member_offset(shard, f"{damage}.npy", 7) + 200
            if damage == "state"
            else _member_offset(shard, "clicks.npy", 7) + 140,
        )
    for name, read in _readers(folder, tmp_path).items():
        with pytest.raises(ShardError, match=match):
            read()
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.h5.tmp").exists()


def test_damaged_header_is_caught_without_checksums(folder):
    """Legacy manifests (no sha256) still catch a header damaged mid-shard: data follows the 'end'."""
    m = read_manifest(folder)
    write_manifest(folder, {**m, "shards": [{k: v for k, v in s.items() if k != "sha256"} for s in m["shards"]]})
    shard = folder / "shard-00001.tar"
    _flip(shard, _member_offset(shard, "rgb.png", 40) - 512 + 100)
    with (
        pytest.warns(UserWarning, match="no checksums.*python -m data.collect"),
        pytest.raises(ShardError, match="damaged tar header"),
    ):
        load_arrays(folder)


def test_incomplete_collection_is_refused_unless_asked_for(folder, tmp_path):
    m = read_manifest(folder)
    (folder / "shard-00002.tar").unlink()
    write_manifest(folder, {**m, "status": "in_progress", "frames_written": 200, "shards": m["shards"][:2]})
    for read in _readers(folder, tmp_path).values():
        with pytest.raises(ShardError, match=r"incomplete collection \(200 of 300 frames.*--allow-incomplete"):
            read()
    assert len(load_arrays(folder, allow_incomplete=True)["keys"]) == 200
    out = convert(
        ToHdf5Config(shards=str(folder), out=str(tmp_path / "part.h5"), allow_incomplete=True), progress=False
    )
    assert out.exists()


def test_unlisted_shard_in_a_complete_folder_is_refused(folder):
    shutil.copy(folder / "shard-00000.tar", folder / "shard-00007.tar")
    with pytest.raises(ShardError, match="shard-00007.tar: not listed in manifest.json"):
        verified_shards(folder)


def test_recollecting_regenerates_only_missing_or_damaged_shards(folder, pristine):
    (folder / "shard-00000.tar").unlink()
    _flip(folder / "shard-00001.tar", _member_offset(folder / "shard-00001.tar", "state.npy", 3) + 150)
    untouched = (folder / "shard-00002.tar").stat().st_mtime_ns
    r = subprocess.run(
        [sys.executable, "-m", "data.collect", *ARGS, "--out", str(folder)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (
        "shard-00001.tar: checksum mismatch with manifest.json (the file is damaged or was changed after it was written); regenerating it"
        in r.stderr
    )
    assert (folder / "shard-00002.tar").stat().st_mtime_ns == untouched
    for name in ("shard-00000.tar", "shard-00001.tar"):  # the same bytes as the original collection
        assert (folder / name).read_bytes() == (pristine / name).read_bytes()
    assert read_manifest(folder)["shards"] == read_manifest(pristine)["shards"]


def test_recollecting_removes_what_a_killed_writer_left_half_written(folder, pristine):
    """SIGKILL between an atomic write's temp file and its rename leaves `.<name>.*.tmp` behind."""
    stale = [folder / ".manifest.json.k9_x2a1q.tmp", folder / ".shard-00001.tar.3vb8zz0p.tmp"]
    for path in stale:
        path.write_bytes(b"half written")
    collect(from_flat(CollectConfig, **SETTINGS, out=str(folder)), progress=False)
    assert not any(p.exists() for p in stale)
    assert read_manifest(folder)["shards"] == read_manifest(pristine)["shards"]


def test_legacy_manifest_stays_readable_and_recollecting_adds_checksums(folder, pristine):
    m = read_manifest(folder)
    write_manifest(folder, {**m, "shards": [{"file": s["file"], "frames": s["frames"]} for s in m["shards"]]})
    with pytest.warns(UserWarning, match="no checksums"):
        assert len(load_arrays(folder)["keys"]) == 300
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*.tar")}
    collect(from_flat(CollectConfig, **SETTINGS, out=str(folder)), progress=False)
    assert read_manifest(folder)["shards"] == read_manifest(pristine)["shards"]
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*.tar")} == stamps  # checked, not rewritten


def test_cli_errors_are_one_line_with_status_2(folder, tmp_path):
    (folder / "shard-00001.tar").unlink()
    r = subprocess.run(
        [sys.executable, "-m", "data.to_hdf5", "--shards", str(folder), "--out", str(tmp_path / "x.h5")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "shard-00001.tar: missing" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "data.collect", "--expert-frac", "nan"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: argument --expert-frac: must be a finite number, got 'nan' (see python -m data.collect --help)"
    )


def test_full_disk_is_a_one_line_error_and_keeps_the_old_file(tmp_path, monkeypatch, capsys):
    target = tmp_path / "state.json"
    atomic_write_json(target, {"v": 1})

    def full(fd):  # what the kernel says when the device is full; /dev/full gives the same errno
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("common.io.os.fsync", full)
    with pytest.raises(DiskFullError, match=r"no space left on the device writing .*state.json"):
        atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["state.json"]
    from data.collect import main

    with pytest.raises(SystemExit) as exit_:
        main([*ARGS, "--out", str(tmp_path / "full")])
    err = capsys.readouterr().err
    assert (
        exit_.value.code == 2 and err.startswith("error: no space left on the device writing") and err.count("\n") == 1
    )


def test_os_level_enospc_from_a_library_is_one_line(capsys):
    from common.cli import one_line_errors

    with pytest.raises(SystemExit) as exit_, one_line_errors():
        with open("/dev/full", "wb") as f:  # a real ENOSPC from the kernel, not from common.io
            f.write(b"x" * 10)
            f.flush()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: no space left on the device") and err.count("\n") == 1


def test_manifest_that_is_not_a_manifest_is_a_shard_error(folder):
    (folder / MANIFEST).write_text(json.dumps(["not", "a", "manifest"]))
    with pytest.raises(ShardError, match="not a shard manifest"):
        load_arrays(folder)
    (folder / MANIFEST).write_bytes(b"\xff\xfe{")
    with pytest.raises(ShardError, match="corrupt manifest"):
        load_arrays(folder)


def test_npy_fields_cannot_smuggle_pickles(folder):
    """A shard whose state.npy holds a pickled object (and a checksum to match) is refused on decode."""
    from data.shards import check_shard

    src = folder / "shard-00000.tar"
    buf = io.BytesIO()
    with tarfile.open(src) as tin, tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tout:
        for m in tin:
            payload = tin.extractfile(m).read()
            if m.name == "00000-00000.state.npy":
                obj = io.BytesIO()
                np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
                payload, m.size = obj.getvalue(), len(obj.getvalue())
            tout.addfile(m, io.BytesIO(payload))
    src.write_bytes(buf.getvalue())
    m = read_manifest(folder)
    m["shards"][0] = check_shard(src, 100)
    write_manifest(folder, m)
    with pytest.raises(ShardError, match=r"00000-00000.*corrupt.*pickle"):
        load_arrays(folder)


def test_hdf5_full_disk_error_is_one_line(capsys):
    """h5py reports a full disk as a RuntimeError that only names errno 28 in its text (seen on a full tmpfs)."""
    from common.cli import one_line_errors

    with pytest.raises(SystemExit) as exit_, one_line_errors():
        raise RuntimeError(
            "Disable slist on flush dest failure failed (file write failed: time = Mon Nov 23 2026\n, "
            "filename = '/data/x.h5.tmp', file descriptor = 3, errno = 28, error message = 'No space left on device')"
        )
    err = capsys.readouterr().err
    assert (
        exit_.value.code == 2
        and err.startswith("error: no space left on the device writing /data/x.h5.tmp;")
        and err.count("\n") == 1
    )
    with pytest.raises(RuntimeError, match="unrelated"), one_line_errors():
        raise RuntimeError("unrelated bug")  # anything else keeps its traceback
