"""Issue #15, annotation app: never open to the network by accident, no analytics, click files checked field by field."""

import json
import os
import re
import time

import pytest

from annotate_app import app as app_module
from annotate_app.app import AppConfig
from annotate_app.app import main as app_main
from annotate_app.browser import free_port
from annotate_app.store import AnnotationError, AnnotatorStore, create_or_load_frameset
from annotate_app.synthetic import synthetic_shards
from annotate_app.users import hash_password
from common.cli import parse_config


@pytest.fixture
def store(tmp_path):
    shards = synthetic_shards(tmp_path / "shards", frames=20, shard_size=10)
    frames = create_or_load_frameset(tmp_path / "ann", "reach-v3", shards, n=4)
    return AnnotatorStore(tmp_path / "ann", frames, "alice")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "annotate.example.org"])
def test_non_loopback_host_without_auth_is_refused(host, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_config(AppConfig, ["--annotator", "alice", "--host", host])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert (
        f"--host {host} would serve the page and its API to anyone" in err
        and "--users" in err
        and "--open-to-network" in err
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--users", "team.txt", "--host", "0.0.0.0"],
        ["--annotator", "alice", "--host", "0.0.0.0", "--open-to-network"],
        ["--annotator", "alice", "--host", "127.0.0.1"],
        ["--annotator", "alice", "--host", "localhost"],
        ["--annotator", "alice", "--host", "::1"],
        ["--annotator", "alice", "--host", "127.0.0.5"],
    ],
)
def test_loopback_or_explicit_choices_are_accepted(argv, monkeypatch):
    monkeypatch.delenv("VISARL_ANNOTATE_USERS", raising=False)
    assert parse_config(AppConfig, argv).host == argv[3]


def test_the_users_variable_alone_makes_a_team_server(monkeypatch):
    monkeypatch.setenv("VISARL_ANNOTATE_USERS", "alice:pw,bob:pw2")
    assert parse_config(AppConfig, ["--host", "0.0.0.0"]).team  # logins: a non-loopback host is fine
    assert not parse_config(AppConfig, ["--annotator", "alice"]).team  # --annotator: alone, no login


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["--annotator", "alice", "--open-to-network"], "has no effect with --host 127.0.0.1"),
        (["--users", "t.txt", "--host", "0.0.0.0", "--open-to-network"], "has no effect with logins (--users)"),
        (["--annotator", "alice", "--users", "t.txt"], "pass one of them"),
        ([], "--annotator NAME (you alone, no login) or --users FILE"),
    ],
)
def test_flags_that_would_be_ignored_or_empty_are_refused(argv, reason, capsys, monkeypatch):
    monkeypatch.delenv("VISARL_ANNOTATE_USERS", raising=False)
    with pytest.raises(SystemExit) as exit_:
        parse_config(AppConfig, argv)
    assert exit_.value.code == 2 and reason in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--annotator", "alice"], ["--host", "0.0.0.0"], ["--users", "t.txt"]])
def test_a_password_on_the_command_line_is_refused(argv, capsys):
    """Before: `--auth alice:PW` served the page, and every user of the machine could read PW in `ps`.
    Now: refused with one line (exit 2) naming the users file and variable instead."""
    with pytest.raises(SystemExit) as exit_:
        parse_config(AppConfig, [*argv, "--auth", "alice:secret-pw"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("error: --auth is refused")
    assert "visible to every user of this machine in ps" in err and "--users FILE" in err
    assert "VISARL_ANNOTATE_USERS" in err and "secret-pw" not in err


def test_open_to_network_warns_and_analytics_are_off(store, tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_launch(self, **kwargs):  # record what would be served instead of serving it
        seen.update(kwargs, analytics=self.analytics_enabled)

    monkeypatch.setattr(app_module.gr.Blocks, "launch", fake_launch)
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    app_main(
        [
            "--task",
            "reach-v3",
            "--annotator",
            "alice",
            "--out",
            str(tmp_path / "ann"),
            "--host",
            "0.0.0.0",
            "--open-to-network",
            "--port",
            str(free_port()),
        ]
    )
    assert seen["server_name"] == "0.0.0.0" and seen["auth"] is None and seen["analytics"] is False
    assert "warning: --open-to-network: anyone who can reach 0.0.0.0" in capsys.readouterr().err
    seen.clear()
    app_main(["--task", "reach-v3", "--annotator", "alice", "--out", str(tmp_path / "ann"), "--port", str(free_port())])
    assert seen["server_name"] == "127.0.0.1" and seen["analytics"] is False
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "field, value, want",
    [
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
    ],
)
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
        with pytest.raises(
            AnnotationError, match=re.escape(f"{path.name}: ") + ".*" + re.escape(f"{shown!r} must be {want}")
        ):
            action()
    assert path.read_text() == before  # nothing written over the bad file
    problems = store.check_all()
    assert len(problems) == 1 and "\n" not in problems[0]


def test_app_start_with_a_bad_click_file_is_a_clear_error(store, tmp_path, monkeypatch, capsys):
    def served(self, **kwargs):
        raise AssertionError("the app started serving despite a bad click file")

    monkeypatch.setattr(app_module.gr.Blocks, "launch", served)
    store.add_click(1, 0.5, 0.5)
    rec = json.loads(store.path(1).read_text()) | {"removed": "oops"}
    store.path(1).write_text(json.dumps(rec))
    with pytest.raises(SystemExit) as refused:
        app_main(
            ["--task", "reach-v3", "--annotator", "alice", "--out", str(tmp_path / "ann"), "--port", str(free_port())]
        )
    assert refused.value.code == 2
    assert re.search(
        r"(?s)need attention:.*reach-v3/alice/.*\.json: field 'removed' must be a list", capsys.readouterr().err
    )


def test_frames_flag_that_would_be_ignored_is_refused(store, tmp_path):
    """Once a task's frames are chosen, --frames naming another folder would be ignored: refused with the reason."""
    other = synthetic_shards(tmp_path / "other", frames=20, shard_size=10, seed=1)
    with pytest.raises(AnnotationError, match=r"already fixes this task's frames .*frames_dir"):
        create_or_load_frameset(tmp_path / "ann", "reach-v3", other)
    same = create_or_load_frameset(tmp_path / "ann", "reach-v3", tmp_path / "shards")  # the stored folder: fine
    assert same.keys == store.frames.keys


# -- issue #27: the annotation server under abuse --------------------------------------------------
PASSWORD = "correct-horse"
BOB_PASSWORD = "battery staple"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from annotate_app.browser import start_server

    tmp = tmp_path_factory.mktemp("guarded")
    shards = synthetic_shards(tmp / "shards", frames=10)
    users = tmp / "team.txt"
    users.write_text(f"# the team\nalice:{PASSWORD}\nbob:{hash_password(BOB_PASSWORD)}\n")
    users.chmod(0o600)
    port = free_port()
    args = [
        "--task",
        "reach-v3",
        "--frames",
        str(shards),
        "--n",
        "3",
        "--out",
        str(tmp / "ann"),
        "--users",
        str(users),
    ]
    proc = start_server(args, port, tmp / "server.log")
    yield {"url": f"http://127.0.0.1:{port}", "port": port}
    proc.kill()
    proc.wait()


def _login(client, password: str, name: str = "alice"):
    return client.post("/login", data={"username": name, "password": password})


def _logged_in(client):
    """Log in with the right password, waiting out a lockout another test left."""
    for _ in range(3):
        r = _login(client, PASSWORD)
        if r.status_code != 429:
            break
        time.sleep(float(r.headers["Retry-After"]) + 0.1)
    assert r.status_code == 200
    return client


def test_password_guessing_is_throttled_per_address(server):
    """Before: ~780 wrong passwords a second were each checked (HTTP 400). Now a wrong password makes
    the next try from that address wait (1 s, doubling per failure up to 5 min): tries in the
    meantime get 429 and are never checked, so guessing runs at a few tries per minute."""
    import httpx

    with httpx.Client(base_url=server["url"], timeout=10) as client:
        assert _login(client, "guess-0").status_code == 400
        codes, t0 = [], time.monotonic()
        while time.monotonic() - t0 < 0.6:
            codes.append(_login(client, f"guess-{len(codes) + 1}").status_code)
        assert len(codes) >= 5 and set(codes) == {429}  # as many as a loaded CPU sends in 0.6 s: none checked
        refused = _login(client, PASSWORD)  # locked out: not even the right password is checked yet
        assert refused.status_code == 429 and "try again in" in refused.text
        time.sleep(float(refused.headers["Retry-After"]) + 0.1)
        assert _login(client, PASSWORD).status_code == 200  # a success clears the address's failures
        assert _login(client, "typo").status_code == 400  # ... so the next wrong try waits 1 s again
        assert 0 < float(_login(client, PASSWORD).headers["Retry-After"]) <= 1


def test_a_team_server_logs_each_annotator_in_and_throttles_across_names(server):
    """With several annotators (plain and hashed passwords in the users file), a wrong password for
    one name makes the address wait for every name: guessing cannot spread over the team's names."""
    import httpx

    with httpx.Client(base_url=server["url"], timeout=10) as client:
        _logged_in(client)  # waits out what the test above left
        assert _login(client, BOB_PASSWORD, "bob").status_code == 200  # a hashed password
        assert _login(client, PASSWORD, "bob").status_code == 400  # alice's password is not bob's
        assert _login(client, PASSWORD, "alice").status_code == 429  # the address waits, whatever the name
        assert _login(client, "x", "carol").status_code == 429
        time.sleep(1.1)
        assert _login(client, "x", "carol").status_code == 400  # an unknown name is a wrong try too
        time.sleep(2.1)
        assert _login(client, BOB_PASSWORD, "bob").status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.nip.io"])
def test_requests_for_a_foreign_host_name_are_refused(server, host):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 sends Host: evil.example.
    Before: served. Now: 403 for any Host that is not an IP address, localhost or an --allowed-hosts name."""
    import httpx

    with httpx.Client(base_url=server["url"], timeout=10) as client:
        bad = client.get("/", headers={"Host": host})
        assert bad.status_code == 403 and "--allowed-hosts" in bad.text
        for good in (f"127.0.0.1:{server['port']}", f"localhost:{server['port']}"):
            assert client.get("/", headers={"Host": good}).status_code == 200


def test_request_bodies_are_capped(server):
    """Before: a 2 MiB upload was accepted and stored. Now any request body over 1 MiB is refused
    (413) before it is read, and one without a declared length is refused (411)."""
    import httpx

    with httpx.Client(base_url=server["url"], timeout=30) as client:
        _logged_in(client)
        small = client.post("/gradio_api/upload", files={"files": ("small.bin", b"\0" * 1000)})
        assert small.status_code == 200  # a logged-in upload under the cap still works
        big = client.post("/gradio_api/upload", files={"files": ("big.bin", b"\0" * (2 << 20))})
        assert big.status_code == 413 and "1 MiB" in big.text

        def chunks():
            yield b"x" * 1024

        assert (
            client.post(
                "/gradio_api/upload", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"}
            ).status_code
            == 411
        )


def test_a_huge_click_file_no_longer_slows_every_click(store, monkeypatch):
    """Before: every handler re-read every frame's file, so one 300,000-click file (37 MB) made every
    click take 1.6-16 s. Now files are re-read only when they change (size, mtime, inode), and a frame
    accepts at most MAX_CLICKS clicks, refused before its file is rewritten."""
    import uuid

    import numpy as np

    from annotate_app.app import Annotator
    from annotate_app.store import MAX_CLICKS

    store.add_click(0, 0.5, 0.5)
    rec = json.loads(store.path(0).read_text())
    xy = np.random.default_rng(0).random((50_000, 2))  # 6 MB: enough to see a re-read; the probe used 300,000
    rec["clicks"] = [
        {"x": float(x), "y": float(y), "t": 1.0 + i, "id": uuid.uuid4().hex, "session": "s"}
        for i, (x, y) in enumerate(xy)
    ]
    store.path(0).write_text(json.dumps(rec))
    ann = Annotator(store, 256)
    _, _, _, state = ann.new_session()  # opens frame 2 (frame 1 is not done): reads every file once
    reads = []
    real_read = type(store.path(0)).read_bytes
    monkeypatch.setattr(type(store.path(0)), "read_bytes", lambda self: reads.append(self.name) or real_read(self))
    state["index"] = 1
    for k in range(3):
        _, _, status, state = ann.click(state, True, 10.0 + k, 10.0)
    assert "Clicks on this frame:</strong> 3" in status
    assert f"{store.frames.keys[0]}.json" not in reads  # the big file is not read again
    before = store.path(0).stat()
    state["index"] = 0
    _, _, status, _ = ann.click(state, True, 5.0, 5.0)
    assert f"at most {MAX_CLICKS}" in status and store.path(0).stat().st_mtime_ns == before.st_mtime_ns


def test_allowed_host_names_add_a_named_host_and_ips_need_none():
    from annotate_app.app import allowed_host_names
    from annotate_app.guard import host_name

    cfg = parse_config(
        AppConfig,
        [
            "--annotator",
            "a",
            "--host",
            "Lab-PC.example",
            "--open-to-network",
            "--allowed-hosts",
            "annotate.example, other",
        ],
    )
    assert allowed_host_names(cfg) == ("annotate.example", "other", "lab-pc.example")
    assert allowed_host_names(parse_config(AppConfig, ["--annotator", "a"])) == ()
    assert [host_name(h) for h in ("[::1]:7860", "Example.org:80", "10.0.0.2", "::1")] == [
        "::1",
        "example.org",
        "10.0.0.2",
        "::1",
    ]


def test_the_login_throttle_remembers_a_bounded_number_of_addresses_and_keeps_an_active_attacker():
    """Issue #27: every address that ever tried stayed in the table for good (memory grew with each)."""
    from annotate_app.guard import LoginThrottle

    throttle = LoginThrottle(base_s=100.0, max_addresses=3)
    assert throttle.try_start("attacker") == 0
    throttle.finish("attacker", False)  # waits 100 s now
    for i in range(10):  # tries from 10 other addresses, the attacker retrying between them
        address = f"10.0.0.{i}"
        assert throttle.try_start(address) == 0
        throttle.finish(address, False)
        assert throttle.try_start("attacker") > 90  # refused unchecked, as before
        assert len(throttle._by_address) <= 3
    assert list(throttle._by_address) == ["10.0.0.8", "10.0.0.9", "attacker"]
    assert throttle.try_start("10.0.0.0") == 0  # forgotten: its next try is checked at once
    checking = LoginThrottle(max_addresses=1)
    assert checking.try_start("a") == 0 and checking.try_start("b") == 0  # "a" is being checked: kept
    checking.finish("a", False)
    checking.finish("b", True)
    assert list(checking._by_address) == ["a"]
