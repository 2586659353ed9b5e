"""Annotation storage, frame selection, export, oracle and agreement (no browser)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from annotate_app.agreement import AgreementConfig, agreement_rows, annotator_clicks
from annotate_app.agreement import run as run_agreement
from annotate_app.app import Annotator, AppConfig, port_in_use
from annotate_app.app import main as app_main
from annotate_app.export import ExportConfig, collect_maps, export
from annotate_app.oracle import annotate_oracle
from annotate_app.store import AnnotationError, AnnotatorStore, check_name, create_or_load_frameset, load_frameset
from annotate_app.synthetic import synthetic_frame, synthetic_shards
from common.cli import parse_config
from data.shards import shard_name, write_manifest, write_shard_entry


@pytest.fixture
def shards(tmp_path):
    return synthetic_shards(tmp_path / "shards", frames=40, shard_size=20)


@pytest.fixture
def frames(tmp_path, shards):
    return create_or_load_frameset(tmp_path / "ann", "reach-v3", shards, n=6)


def pixel_of(click, size=64):
    return int(click["x"] * size), int(click["y"] * size)


# -- names ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../x", "/etc", "a/b", "a b", "", ".", "..", "al.ice", "x" * 65, "é"])
def test_bad_names_are_refused(bad):
    with pytest.raises(AnnotationError, match="letters, digits"):
        check_name(bad, "annotator")


def test_good_names_pass_and_cli_refuses_traversal(capsys):
    for good in ("alice", "Bob_2", "reach-v3", "a"):
        assert check_name(good) == good
    with pytest.raises(SystemExit) as exc:
        parse_config(AppConfig, ["--task", "reach-v3", "--annotator", "../x"])
    assert exc.value.code == 2
    assert "invalid annotator '../x'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(AppConfig, ["--task", "/etc", "--annotator", "alice"])
    assert "invalid task '/etc'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(AppConfig, ["--annotator", "oracle"])
    assert "reserved" in capsys.readouterr().err
    assert parse_config(AppConfig, ["--annotator", "alice"]).host == "127.0.0.1"


# -- frame selection ------------------------------------------------------------------------------
def test_selection_is_stored_and_identical_for_everyone(tmp_path, shards, frames):
    again = create_or_load_frameset(tmp_path / "ann", "reach-v3", None)
    assert again.keys == frames.keys and np.array_equal(again.images, frames.images)
    assert len(set(frames.keys)) == 6 and frames.images.shape == (6, 64, 64, 3)
    with pytest.raises(AnnotationError, match="already fixes"):
        create_or_load_frameset(tmp_path / "ann", "reach-v3", shards, n=10)
    # the same seed in a fresh root picks the same frames; another seed picks others
    same = create_or_load_frameset(tmp_path / "ann2", "reach-v3", shards, n=6)
    other = create_or_load_frameset(tmp_path / "ann3", "reach-v3", shards, n=6, seed=1)
    assert same.keys == frames.keys and other.keys != frames.keys


def test_diverse_selection_covers_rare_kinds_of_frames(tmp_path):
    rng = np.random.default_rng(0)
    kinds = [synthetic_frame(rng)[0] for _ in range(3)]
    order = [0] * 54 + [1] * 3 + [2] * 3  # one kind of frame dominates
    samples = [
        (
            f"00000-{i:05d}",
            {
                "rgb": kinds[k],
                "state": np.zeros(39, np.float32),
                "clicks": np.zeros((0, 2)),
                "meta": {"task": "reach-v3", "kind": k},
            },
        )
        for i, k in enumerate(order)
    ]
    entry = write_shard_entry(tmp_path / "s" / shard_name(0), samples)
    write_manifest(tmp_path / "s", {"status": "complete", "task": "reach-v3", "shards": [entry]})
    fs = create_or_load_frameset(tmp_path / "ann", "reach-v3", tmp_path / "s", n=3, method="diverse")
    picked = sorted(order[int(k.split("-")[1])] for k in fs.keys)
    assert picked == [0, 1, 2]


def test_bad_frame_folders_give_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnotationError, match="not a shard folder"):
        create_or_load_frameset(tmp_path / "ann", "reach-v3", tmp_path / "empty")
    with pytest.raises(AnnotationError, match="no such shard folder"):
        create_or_load_frameset(tmp_path / "ann", "reach-v3", tmp_path / "missing")
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / shard_name(0)).write_bytes(b"this is not a tar file" * 40)
    write_manifest(bad, {"status": "complete", "task": "reach-v3", "shards": [{"file": shard_name(0), "frames": 40}]})
    with pytest.raises(AnnotationError, match="shard-00000.tar"):
        create_or_load_frameset(tmp_path / "ann", "reach-v3", bad)
    other = synthetic_shards(tmp_path / "door", frames=10, task="door-open-v3")
    with pytest.raises(AnnotationError, match="door-open-v3"):
        create_or_load_frameset(tmp_path / "ann", "reach-v3", other)
    small = synthetic_shards(tmp_path / "small", frames=4)
    with pytest.raises(AnnotationError, match="fewer than"):
        create_or_load_frameset(tmp_path / "ann", "reach-v3", small, n=30)
    assert not (tmp_path / "ann" / "reach-v3" / "selection.json").exists()


# -- click files -----------------------------------------------------------------------------------
def test_every_operation_is_saved_and_the_history_kept(tmp_path, frames):
    store = AnnotatorStore(tmp_path / "ann", frames, "alice")
    store.add_click(0, 0.5, 0.25, seconds=2.0)
    rec = store.add_click(0, 0.1, 0.9, seconds=1.0)
    on_disk = json.loads(store.path(0).read_text())
    assert [pixel_of(c) for c in on_disk["clicks"]] == [(32, 16), (6, 57)]
    assert on_disk["seconds"] == pytest.approx(3.0) and on_disk["revision"] == 2
    rec = store.undo(0, [c["id"] for c in rec["clicks"]])
    assert [pixel_of(c) for c in rec["clicks"]] == [(32, 16)]
    assert rec["removed"][0]["how"] == "undo" and pixel_of(rec["removed"][0]) == (6, 57)
    rec = store.clear(0, [c["id"] for c in rec["clicks"]])
    assert rec["clicks"] == [] and len(rec["removed"]) == 2
    assert json.loads(store.path(0).read_text()) == rec
    with pytest.raises(AnnotationError, match="outside the image"):
        store.add_click(0, 1.2, 0.5)
    assert json.loads(store.path(0).read_text())["revision"] == rec["revision"]


def test_resume_done_and_next_unfinished(tmp_path, frames):
    store = AnnotatorStore(tmp_path / "ann", frames, "alice")
    assert store.resume_index() == 0
    store.add_click(0, 0.5, 0.5)
    assert store.resume_index() == 0  # clicked but not left: still in progress
    store.leave(0, 12.5)
    store.add_click(2, 0.5, 0.5)
    store.leave(2, 3.0)
    assert store.resume_index() == 1 and store.next_unfinished(0) == 1 and store.next_unfinished(1) == 3
    assert store.read(0)["done"] and store.read(0)["seconds"] == pytest.approx(12.5)
    store.leave(1, 1.0)  # left without clicks: not done
    assert not store.read(1)["done"]


def test_two_sessions_merge_and_never_drop_each_others_clicks(tmp_path, frames):
    a = AnnotatorStore(tmp_path / "ann", frames, "alice")
    b = AnnotatorStore(tmp_path / "ann", frames, "alice")  # a second browser tab / server
    ra = a.add_click(1, 0.2, 0.2, session="A")
    seen_by_a = [c["id"] for c in ra["clicks"]]
    b.add_click(1, 0.8, 0.8, session="B")
    rec = a.clear(1, seen_by_a)  # A clears what it saw; B's click stays
    assert [pixel_of(c) for c in rec["clicks"]] == [(51, 51)]
    rec = a.undo(1, seen_by_a)  # nothing A has seen is left: B's click stays
    assert len(rec["clicks"]) == 1


def test_writes_are_atomic(tmp_path, frames, monkeypatch):
    store = AnnotatorStore(tmp_path / "ann", frames, "alice")
    store.add_click(0, 0.5, 0.5)
    before = store.path(0).read_bytes()

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.add_click(0, 0.1, 0.1)
    assert store.path(0).read_bytes() == before
    assert not [p for p in store.dir.iterdir() if p.name.endswith(".tmp")]


KILL_LOOP = """
import sys, itertools
from annotate_app.store import AnnotatorStore, load_frameset
store = AnnotatorStore(sys.argv[1], load_frameset(sys.argv[1], "reach-v3"), "alice")
print("ready", flush=True)
for k in itertools.count():
    store.add_click(k % 2, (k % 97) / 97, 0.5)
"""


def test_sigkill_mid_writing_leaves_valid_files(tmp_path, frames):
    proc = subprocess.Popen([sys.executable, "-c", KILL_LOOP, str(tmp_path / "ann")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.6)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = AnnotatorStore(tmp_path / "ann", frames, "alice")
    recs = [store.read(0), store.read(1)]
    assert all(r["revision"] == len(r["clicks"]) for r in recs)
    assert sum(len(r["clicks"]) for r in recs) > 10


def test_corrupt_or_stale_files_are_reported_not_overwritten(tmp_path, frames, capsys):
    store = AnnotatorStore(tmp_path / "ann", frames, "alice")
    store.path(0).write_text("{not json")
    with pytest.raises(AnnotationError, match=r"00000.*unreadable JSON.*move it away"):
        store.add_click(0, 0.5, 0.5)
    assert store.path(0).read_text() == "{not json"
    store.add_click(1, 0.5, 0.5)
    rec = json.loads(store.path(1).read_text())
    rec["clicks"][0]["x"] = 3.0
    store.path(1).write_text(json.dumps(rec))
    rec2 = json.loads(store.path(1).read_text()) | {"task": "door-open-v3"}
    store.add_click(2, 0.5, 0.5)
    store.path(2).write_text(json.dumps(rec2 | {"key": frames.keys[2]}))
    problems = store.check_all()
    assert len(problems) == 3
    assert "bad click" in problems[1] and "task is 'door-open-v3'" in problems[2]
    with pytest.raises(SystemExit) as refused:
        app_main(["--task", "reach-v3", "--annotator", "alice", "--out", str(tmp_path / "ann")])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and err.startswith("error: ") and "need attention" in err
    assert len(err.strip().splitlines()) >= 4  # one line per file that needs attention


@pytest.mark.filterwarnings("ignore:click at:UserWarning")
def test_app_refuses_a_busy_port_and_clicks_outside(tmp_path, frames, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        with pytest.raises(SystemExit) as refused:
            app_main(["--task", "reach-v3", "--annotator", "bob", "--out", str(tmp_path / "ann"), "--port", str(port)])
        assert refused.value.code == 2
        assert re.fullmatch(f"error: port {port} .* already in use.*free port\n", capsys.readouterr().err)
    ann = Annotator(AnnotatorStore(tmp_path / "ann", frames, "bob"), display_size=512)
    assert ann.scale == 8 and (ann.disp_h, ann.disp_w) == (512, 512)
    _, _, status, fresh = ann.undo({}, True)  # an event before the page's load event starts a session
    assert fresh["index"] == 0 and "Frame 1 of 6" in status
    _, _, _, state = ann.new_session()
    img, _, status, state = ann.click(state, True, 600.0, 10.0)
    assert "outside" in status and not ann.store.path(0).exists()
    img, heat, status, state = ann.click(state, True, 10 * 8 + 4, 20 * 8 + 4)
    assert pixel_of(ann.store.read(0)["clicks"][0]) == (10, 20)
    assert "Clicks on this frame:</strong> 1" in status and img.shape == (512, 512, 3)
    assert heat.shape == (256, 256, 3)  # the map panel: the 64x64 map, 4x
    hidden, _, _, _ = ann.toggle(state, False)
    assert not np.array_equal(hidden, img)
    ann.store.path(4).write_text("{broken")  # another frame's file goes bad while the app runs
    _, _, status, _ = ann.click(state, True, 5.0, 5.0)
    assert "Clicks on this frame:</strong> 2" in status and "frame(s) 5" in status
    _, _, status, state = ann.goto(state, True, "unfinished")  # frames 2..4 are next; 5 is reported
    assert state["index"] == 1 and "frame(s) 5" in status


# -- export, oracle, agreement --------------------------------------------------------------------
def test_export_maps_peak_at_the_clicks(tmp_path, frames):
    root = tmp_path / "ann"
    alice, bob = AnnotatorStore(root, frames, "alice"), AnnotatorStore(root, frames, "bob")
    alice.add_click(0, 10.5 / 64, 20.5 / 64)
    bob.add_click(0, 40.5 / 64, 50.5 / 64)
    alice.add_click(3, 5.5 / 64, 60.5 / 64)
    out = export(ExportConfig(task="reach-v3", root=str(root), annotator="alice"))
    with np.load(out) as z:
        assert z["images"].dtype == np.uint8 and z["images"].shape == (2, 64, 64, 3)
        assert z["maps"].dtype == np.float32 and z["maps"].shape == (2, 64, 64)
        assert z["maps"].max() == pytest.approx(1.0) and z["maps"].min() >= 0
        assert list(z["keys"]) == [frames.keys[0], frames.keys[3]] and list(z["annotators"]) == ["alice", "alice"]
        assert np.unravel_index(z["maps"][0].argmax(), (64, 64)) == (20, 10)
        assert np.unravel_index(z["maps"][1].argmax(), (64, 64)) == (60, 5)
        assert np.array_equal(z["images"][1], frames.images[3])
    pooled = collect_maps(root, "reach-v3", "all", "pool")
    assert list(pooled["annotators"]) == ["alice,bob", "alice"] and list(pooled["n_clicks"]) == [2, 1]
    m = pooled["maps"][0]
    assert m[20, 10] == pytest.approx(1.0, abs=0.01) and m[50, 40] == pytest.approx(1.0, abs=0.01)
    rows = collect_maps(root, "reach-v3", "all", "rows")
    assert list(rows["annotators"]) == ["alice", "bob", "alice"]
    # a later export with fewer maps never silently replaces a bigger one
    with pytest.raises(AnnotationError, match="--overwrite"):
        export(ExportConfig(task="reach-v3", root=str(root), annotator="bob", out=str(out)))
    export(ExportConfig(task="reach-v3", root=str(root), annotator="bob", out=str(out), overwrite=True))
    with pytest.raises(AnnotationError, match="no annotations by 'carol'"):
        collect_maps(root, "reach-v3", "carol")


def test_oracle_fills_the_same_files_and_exports(tmp_path, shards):
    root = tmp_path / "ann"
    out = annotate_oracle("reach-v3", shards, root, n=5)
    fs = load_frameset(root, "reach-v3")
    store = AnnotatorStore(root, fs, "oracle")
    for i in range(5):
        rec = store.read(i)
        assert rec["done"] and np.allclose([[c["x"], c["y"]] for c in rec["clicks"]], fs.oracle_clicks[i])
    revisions = [store.read(i)["revision"] for i in range(5)]
    annotate_oracle("reach-v3", None, root)  # idempotent: files untouched
    assert [store.read(i)["revision"] for i in range(5)] == revisions
    assert len(list(out.glob("*.json"))) == 5
    arrays = collect_maps(root, "reach-v3", "all")  # no humans yet: the oracle
    assert list(arrays["annotators"]) == ["oracle"] * 5
    from data.shards import oracle_maps

    assert np.allclose(arrays["maps"], oracle_maps(fs.oracle_clicks, 64))


def test_agreement_of_a_perfect_and_a_shifted_annotator(tmp_path, shards, capsys):
    root = tmp_path / "ann"
    fs = create_or_load_frameset(root, "reach-v3", shards, n=4)
    perfect, shifted = AnnotatorStore(root, fs, "perfect"), AnnotatorStore(root, fs, "shifted")
    for i in range(3):
        for x, y in fs.oracle_clicks[i]:
            perfect.add_click(i, x, y)
            shifted.add_click(i, min(x + 8 / 64, 1.0), y)
    rows = agreement_rows(fs, annotator_clicks(root, fs))
    vs_oracle = [r for r in rows if r["pred"] == "perfect" and r["reference"] == "oracle"]
    assert len(vs_oracle) == 3
    for r in vs_oracle:
        assert r["cc"] == pytest.approx(1.0) and r["sim"] == pytest.approx(1.0)
        assert r["kld"] == pytest.approx(0.0, abs=1e-6) and r["auc"] > 0.99 and r["nss"] > 5
    shifted_rows = [r for r in rows if r["pred"] == "shifted" and r["reference"] == "oracle"]
    assert all(r["cc"] < 0.3 and r["kld"] > 1.0 for r in shifted_rows)
    assert {(r["pred"], r["reference"]) for r in rows} == {
        ("perfect", "shifted"),
        ("perfect", "oracle"),
        ("shifted", "oracle"),
    }
    csv_path = run_agreement(AgreementConfig(task="reach-v3", root=str(root), figure_frames=2))
    assert len(csv_path.read_text().splitlines()) == 1 + 9
    assert (csv_path.parent / "agreement.png").stat().st_size > 10_000
    assert "| all pairs |" in capsys.readouterr().out


def test_agreement_csv_is_replaced_whole_or_not_at_all(tmp_path, shards, monkeypatch):
    """Issue #27: agreement.csv was rewritten in place: a run killed while writing left it empty."""
    from annotate_app import agreement

    root = tmp_path / "ann"
    fs = create_or_load_frameset(root, "reach-v3", shards, n=2)
    store = AnnotatorStore(root, fs, "perfect")
    for x, y in fs.oracle_clicks[0]:
        store.add_click(0, x, y)
    csv_path = run_agreement(AgreementConfig(task="reach-v3", root=str(root), figure_frames=0))
    before = csv_path.read_text()
    assert len(before.splitlines()) == 2  # header, perfect vs oracle on frame 0

    class Killed(BaseException):
        pass

    class KilledWriter(agreement.csv.DictWriter):
        def writerows(self, rows):
            raise Killed  # the process dies while the rows are written

    with monkeypatch.context() as m:
        m.setattr(agreement.csv, "DictWriter", KilledWriter)
        with pytest.raises(Killed):
            run_agreement(AgreementConfig(task="reach-v3", root=str(root), figure_frames=0))
    assert csv_path.read_text() == before and not list(csv_path.parent.glob(".agreement.csv.*"))


@pytest.mark.parametrize("module", ["export", "oracle", "agreement"])
def test_annotation_commands_refuse_with_one_line_and_status_2(module, tmp_path, capsys):
    """Before: an AnnotationError (here: no frames chosen for the task yet) left these commands through
    sys.exit with status 1, the status of a bug. Now: one line and status 2, as every other refusal."""
    import importlib

    main = importlib.import_module(f"annotate_app.{module}").main
    argv = ["--task", "reach-v3", "--root", str(tmp_path / "ann")]
    if module == "oracle":
        argv += ["--frames", str(tmp_path / "no-shards")]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
