"""Issue #26: one annotation server for a team; each login clicks into its own folder, passwords never on the command line."""

import json
import re

import gradio as gr
import pytest

from annotate_app import app as app_module
from annotate_app.agreement import agreement_rows, annotator_clicks
from annotate_app.app import main as app_main
from annotate_app.browser import free_port
from annotate_app.store import AnnotatorStore, load_frameset
from annotate_app.synthetic import synthetic_shards
from annotate_app.users import USERS_ENV, Login, hash_password, load_users, parse_users


def _users_file(path, text: str, mode: int = 0o600):
    path.write_text(text)
    path.chmod(mode)
    return path


# -- the users file and variable --------------------------------------------------------------------
def test_users_file_holds_plain_and_hashed_passwords(tmp_path):
    hashed = hash_password("battery staple")
    assert hashed.startswith("scrypt$16384$8$1$") and "battery" not in hashed
    assert hash_password("battery staple") != hashed  # a fresh salt each time
    path = _users_file(tmp_path / "team.txt", f"# lab team\n\nalice:pa:ss word\n  bob:{hashed}  \n")
    users = load_users(path, environ={})
    assert users == {"alice": "pa:ss word", "bob": hashed}  # the password is what follows the first ':'
    login = Login(users)
    assert login("alice", "pa:ss word") and login("bob", "battery staple")
    assert not login("alice", "battery staple") and not login("bob", hashed) and not login("bob", "")
    assert not login("carol", "pa:ss word") and not login("oracle", "x")


def test_the_variable_lists_users_by_commas_or_lines_and_the_file_wins(tmp_path):
    env = {USERS_ENV: "alice:a1, bob:b2\ncarol:c3"}
    assert load_users(None, environ=env) == {"alice": "a1", "bob": "b2", "carol": "c3"}
    path = _users_file(tmp_path / "team.txt", "dave:d4\n")
    assert load_users(path, environ=env) == {"dave": "d4"}
    with pytest.raises(ValueError, match=f"no users: pass --users FILE or set {USERS_ENV}"):
        load_users(None, environ={})


@pytest.mark.parametrize(
    "text, want",
    [
        ("alice\n", "entry 1 is not name:password"),
        ("alice:\n", "entry 1 is not name:password"),
        ("# c\nal ice:pw\n", "entry 2: invalid annotator 'al ice'"),
        ("../x:pw\n", "invalid annotator '../x'"),
        ("oracle:pw\n", "'oracle' is reserved for the simulator"),
        ("alice:a\nalice:b\n", "entry 2: 'alice' is listed twice"),
        ("bob:scrypt$1$2\n", "malformed scrypt hash; make it again with python -m annotate_app.users bob"),
        ("# nobody\n\n", "lists no annotator"),
    ],
)
def test_bad_users_lines_name_the_entry_and_the_fix(text, want):
    with pytest.raises(ValueError, match=re.escape(want)):
        parse_users(text, "users file team.txt")


def test_a_users_file_others_may_read_is_refused(tmp_path):
    path = _users_file(tmp_path / "team.txt", "alice:pw\n", mode=0o644)
    with pytest.raises(ValueError, match=r"may be read by other users \(mode 644\); run chmod 600 .*team\.txt"):
        load_users(path, environ={})
    with pytest.raises(FileNotFoundError, match="users file .*nope.txt does not exist"):
        load_users(tmp_path / "nope.txt", environ={})


def test_the_server_refuses_a_bad_users_file_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(app_module.gr.Blocks, "launch", lambda self, **kw: pytest.fail("served"))
    path = _users_file(tmp_path / "team.txt", "alice:pw\n", mode=0o640)
    with pytest.raises(SystemExit) as exit_:
        app_main(["--users", str(path), "--out", str(tmp_path / "ann"), "--port", str(free_port())])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "run chmod 600" in err


# -- one server, several annotators ---------------------------------------------------------------
@pytest.fixture
def team_server(tmp_path, monkeypatch):
    """`python -m annotate_app --users FILE` up to the launch: the page, and what launch was given."""
    shards = synthetic_shards(tmp_path / "shards", frames=12, shard_size=6)
    path = _users_file(tmp_path / "team.txt", f"alice:a-secret\nbob:{hash_password('b-secret')}\n")
    seen = {}

    def fake_launch(self, **kwargs):
        seen.update(kwargs, demo=self)

    monkeypatch.setattr(app_module.gr.Blocks, "launch", fake_launch)
    root = tmp_path / "ann"
    argv = ["--frames", str(shards), "--n", "3", "--out", str(root), "--users", str(path), "--host", "0.0.0.0"]
    app_main([*argv, "--port", str(free_port())])
    return seen, root


def _handlers(demo) -> dict:
    return {f.api_name: f.fn for f in demo.fns.values() if isinstance(f.api_name, str)}


def _click(fns, state, name: str, x: float, y: float):
    event = gr.SelectData(None, {"index": [x, y], "value": None, "selected": True})
    return fns["click"](state, True, event, gr.Request(username=name))


def test_each_login_clicks_into_its_own_folder_and_sessions_never_mix(team_server):
    seen, root = team_server
    assert seen["server_name"] == "0.0.0.0" and seen["auth"]("alice", "a-secret") and seen["auth"]("bob", "b-secret")
    assert not seen["auth"]("alice", "b-secret") and not seen["auth"]("bob", "a-secret")
    fns = _handlers(seen["demo"])
    _, _, status, alice = _click(fns, {}, "alice", 10.0, 20.0)
    assert "Frame 1 of 3 · alice" in status and "Clicks on this frame:</strong> 1" in status
    _, _, status, bob = _click(fns, {}, "bob", 30.0, 40.0)
    assert "Frame 1 of 3 · bob" in status and "Clicks on this frame:</strong> 1" in status  # not alice's click
    _, _, _, alice = _click(fns, alice, "alice", 11.0, 21.0)
    _, _, _, bob = fns["next"](bob, True, gr.Request(username="bob"))
    _, _, status, bob = _click(fns, bob, "bob", 50.0, 60.0)
    assert "Frame 2 of 3 · bob" in status
    # bob's login with alice's session (another tab, a replayed request): a fresh session of bob's
    _, _, status, mixed = fns["undo"](dict(alice), True, gr.Request(username="bob"))
    assert mixed["annotator"] == "bob" and mixed["sid"] != alice["sid"] and "Nothing to undo" in status
    frames = load_frameset(root, "reach-v3")
    a, b = AnnotatorStore(root, frames, "alice"), AnnotatorStore(root, frames, "bob")
    assert [len(a.read(i)["clicks"]) for i in range(3)] == [2, 0, 0]
    assert [len(b.read(i)["clicks"]) for i in range(3)] == [1, 1, 0]
    files = sorted(p.relative_to(root / "reach-v3").as_posix() for p in (root / "reach-v3").glob("*/*.json"))
    assert files == [f"alice/{frames.keys[0]}.json", f"bob/{frames.keys[0]}.json", f"bob/{frames.keys[1]}.json"]
    rec = json.loads((root / "reach-v3" / "alice" / f"{frames.keys[0]}.json").read_text())
    assert rec["annotator"] == "alice" and {c["session"] for c in rec["clicks"]} == {alice["sid"]}
    with pytest.raises(gr.Error, match="not logged in as an annotator of this server"):
        _click(fns, {}, "mallory", 1.0, 1.0)
    # the agreement report reads every annotator folder of the task: the team's pair and each vs the oracle
    rows = agreement_rows(frames, annotator_clicks(root, frames))
    assert {(r["pred"], r["reference"], r["frame"]) for r in rows if r["reference"] != "oracle"} == {
        ("alice", "bob", 0)
    }
    assert {r["pred"] for r in rows if r["reference"] == "oracle"} == {"alice", "bob"}


def test_a_single_annotator_server_needs_no_login(tmp_path, monkeypatch):
    shards = synthetic_shards(tmp_path / "shards", frames=12, shard_size=6)
    monkeypatch.setenv(USERS_ENV, "bob:pw")  # --annotator wins: alice alone, no login
    seen = {}
    monkeypatch.setattr(app_module.gr.Blocks, "launch", lambda self, **kw: seen.update(kw, demo=self))
    root = tmp_path / "ann"
    app_main(
        ["--frames", str(shards), "--n", "3", "--out", str(root), "--annotator", "alice", "--port", str(free_port())]
    )
    assert seen["auth"] is None and seen["server_name"] == "127.0.0.1"
    _, _, status, _ = _click(_handlers(seen["demo"]), {}, None, 10.0, 20.0)
    assert "Frame 1 of 3 · alice" in status
    assert [p.parent.name for p in (root / "reach-v3").glob("*/*.json")] == ["alice"]


def test_the_hash_command_prints_a_line_the_server_accepts(monkeypatch, capsys):
    from annotate_app import users as users_module

    typed = iter(["battery staple", "battery staple", "one", "two"])
    monkeypatch.setattr(users_module.getpass, "getpass", lambda prompt="": next(typed))
    users_module.main(["bob"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("bob:scrypt$") and Login(parse_users(line, "test"))("bob", "battery staple")
    with pytest.raises(SystemExit) as exit_:  # the two passwords differ
        users_module.main(["bob"])
    assert exit_.value.code == 2 and "differ" in capsys.readouterr().err
