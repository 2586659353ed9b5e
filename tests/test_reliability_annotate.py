"""Issue #15, annotation app: never open to the network by accident, no analytics, click files checked field by field."""
import json
import os
import re
import socket

import pytest

from annotate_app import app as app_module
from annotate_app.app import AppConfig
from annotate_app.app import main as app_main
from annotate_app.store import AnnotationError, AnnotatorStore, create_or_load_frameset
from annotate_app.synthetic import synthetic_shards
from common.cli import parse_config


@pytest.fixture
def store(tmp_path):
    shards = synthetic_shards(tmp_path / "shards", frames=20, shard_size=10)
    frames = create_or_load_frameset(tmp_path / "ann", "reach-v3", shards, n=4)
    return AnnotatorStore(tmp_path / "ann", frames, "alice")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "annotate.example.org"])
def test_non_loopback_host_without_auth_is_refused(host, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_config(AppConfig, ["--annotator", "alice", "--host", host])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert f"--host {host} would serve the page and its API to anyone" in err and "--auth" in err and "--open-to-network" in err


@pytest.mark.parametrize("argv", [
    ["--host", "0.0.0.0", "--auth", "ann:secret"],
    ["--host", "0.0.0.0", "--open-to-network"],
    ["--host", "127.0.0.1"], ["--host", "localhost"], ["--host", "::1"], ["--host", "127.0.0.5"],
])
def test_loopback_or_explicit_choices_are_accepted(argv):
    assert parse_config(AppConfig, ["--annotator", "alice", *argv]).host == argv[1]


@pytest.mark.parametrize("argv, reason", [
    (["--open-to-network"], "has no effect with --host 127.0.0.1"),
    (["--host", "0.0.0.0", "--auth", "a:b", "--open-to-network"], "has no effect with --auth"),
    (["--host", "0.0.0.0", "--auth", "user:"], "both non-empty"),
])
def test_flags_that_would_be_ignored_or_empty_are_refused(argv, reason, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_config(AppConfig, ["--annotator", "alice", *argv])
    assert exit_.value.code == 2 and reason in capsys.readouterr().err


def test_open_to_network_warns_and_analytics_are_off(store, tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_launch(self, **kwargs):  # record what would be served instead of serving it
        seen.update(kwargs, analytics=self.analytics_enabled)

    monkeypatch.setattr(app_module.gr.Blocks, "launch", fake_launch)
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    app_main(["--task", "reach-v3", "--annotator", "alice", "--out", str(tmp_path / "ann"), "--host", "0.0.0.0",
              "--open-to-network", "--port", str(_free_port())])
    assert seen["server_name"] == "0.0.0.0" and seen["auth"] is None and seen["analytics"] is False
    assert "warning: --open-to-network: anyone who can reach 0.0.0.0" in capsys.readouterr().err
    seen.clear()
    app_main(["--task", "reach-v3", "--annotator", "alice", "--out", str(tmp_path / "ann"), "--port", str(_free_port())])
    assert seen["server_name"] == "127.0.0.1" and seen["analytics"] is False
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("field, value, want", [
    ("seconds", "abc", "a number >= 0"),
    ("seconds", -3, "a number >= 0"),
    ("removed", "x", "a list of removed clicks"),
    ("done", "yes", "true or false"),
    ("revision", "3", "an integer >= 0"),
    ("updated", "yesterday", "a time in seconds or null"),
    ("clicks", {"x": 0.5}, "a list of clicks"),
    ("clicks.0.t", "now", "a time in seconds"),
    ("clicks.0.id", 5, "a non-empty string"),
    ("clicks.0.x", None, "a number in [0, 1]"),
    ("removed.0", 7, "an object with x, y, t"),
    ("frame_index", -1, "an integer >= 0"),
])
def test_click_files_with_wrong_field_types_name_file_and_field(store, field, value, want):
    store.add_click(0, 0.25, 0.5)
    store.undo(0)
    store.add_click(0, 0.5, 0.5)
    path = store.path(0)
    rec = json.loads(path.read_text())
    target, *rest = field.split(".")
    if rest:
        node = rec[target][int(rest[0])]
        if len(rest) == 2:
            node[rest[1]] = value
        else:
            rec[target][int(rest[0])] = value
    else:
        rec[target] = value
    path.write_text(json.dumps(rec))
    before = path.read_text()
    shown = field.replace(".0", "[0]", 1)
    for action in (lambda: store.read(0), lambda: store.undo(0), lambda: store.add_click(0, 0.1, 0.1), store.records):
        with pytest.raises(AnnotationError, match=re.escape(f"{path.name}: ") + ".*" + re.escape(f"{shown!r} must be {want}")):
            action()
    assert path.read_text() == before  # nothing written over the bad file
    problems = store.check_all()
    assert len(problems) == 1 and "\n" not in problems[0]


def test_app_start_with_a_bad_click_file_is_a_clear_error(store, tmp_path, monkeypatch):
    def served(self, **kwargs):
        raise AssertionError("the app started serving despite a bad click file")

    monkeypatch.setattr(app_module.gr.Blocks, "launch", served)
    store.add_click(1, 0.5, 0.5)
    rec = json.loads(store.path(1).read_text()) | {"removed": "oops"}
    store.path(1).write_text(json.dumps(rec))
    with pytest.raises(SystemExit, match=r"(?s)need attention:.*reach-v3/alice/.*\.json: field 'removed' must be a list"):
        app_main(["--task", "reach-v3", "--annotator", "alice", "--out", str(tmp_path / "ann"), "--port", str(_free_port())])


def test_frames_flag_that_would_be_ignored_is_refused(store, tmp_path):
    """Once a task's frames are chosen, --frames naming another folder would be ignored: refused with the reason."""
    other = synthetic_shards(tmp_path / "other", frames=20, shard_size=10, seed=1)
    with pytest.raises(AnnotationError, match=r"already fixes this task's frames .*frames_dir"):
        create_or_load_frameset(tmp_path / "ann", "reach-v3", other)
    same = create_or_load_frameset(tmp_path / "ann", "reach-v3", tmp_path / "shards")  # the stored folder: fine
    assert same.keys == store.frames.keys
