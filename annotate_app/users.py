"""The annotators of a team server and their passwords, never from the command line (where `ps` shows them).

A users file (`--users FILE`, mode 600) or the environment variable VISARL_ANNOTATE_USERS holds one
annotator a line (in the variable, lines or comma-separated entries); blank lines and `#` comments
are skipped:

    alice:correct-horse                         name:password
    bob:scrypt$16384$8$1$<salt hex>$<key hex>   name:salted scrypt hash (`python -m annotate_app.users bob`)

Names pass the annotator-name check (`oracle` is reserved for the simulator). Each name logs in
with its own password and its clicks go to its own folder, `<task>/<name>/`.

`python -m annotate_app.users NAME` asks for a password twice and prints NAME's hashed line.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from annotate_app.store import ORACLE, check_name
from common.cli import fail, option, parse_config

USERS_ENV = "VISARL_ANNOTATE_USERS"
SCRYPT = (16384, 8, 1)  # n, r, p: ~16 MiB and ~50 ms a check
HASH_RE = re.compile(r"^scrypt\$(\d+)\$(\d+)\$(\d+)\$([0-9a-f]{32})\$([0-9a-f]{64})$")


def hash_password(password: str, salt: bytes | None = None) -> str:
    """'scrypt$n$r$p$salt$key' with a fresh random salt (hex)."""
    salt = secrets.token_bytes(16) if salt is None else salt
    n, r, p = SCRYPT
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${key.hex()}"


def password_matches(stored: str, password: str) -> bool:
    """`password` against a stored plain password or scrypt hash, in constant time."""
    m = HASH_RE.fullmatch(stored)
    if m is None:
        return hmac.compare_digest(stored.encode(), password.encode())
    n, r, p = (int(v) for v in m.group(1, 2, 3))
    key = hashlib.scrypt(password.encode(), salt=bytes.fromhex(m[4]), n=n, r=r, p=p, maxmem=256 << 20, dklen=32)
    return hmac.compare_digest(key.hex(), m[5])


def check_user_name(name: str) -> str:
    """The annotator-name check of the store, and `oracle` reserved (ValueError otherwise)."""
    check_name(name, "annotator")
    if name == ORACLE:
        raise ValueError(f"the name {ORACLE!r} is reserved for the simulator; choose another")
    return name


def parse_users(text: str, source: str, separators: str = "\n") -> dict[str, str]:
    """{name: stored password} from the users lines of `source` (a file name or the variable's name)."""
    users: dict[str, str] = {}
    for number, line in enumerate(re.split(f"[{re.escape(separators)}]", text), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password = line.partition(":")
        where = f"{source} entry {number}"
        if not sep or not password:
            raise ValueError(f"{where} is not name:password (both non-empty)")
        try:
            check_user_name(name)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
        if name in users:
            raise ValueError(f"{where}: {name!r} is listed twice; keep one line per annotator")
        if password.startswith("scrypt$") and not HASH_RE.fullmatch(password):
            raise ValueError(f"{where}: malformed scrypt hash; make it again with python -m annotate_app.users {name}")
        users[name] = password
    if not users:
        raise ValueError(f"{source} lists no annotator; add lines name:password")
    return users


def load_users(path: str | Path | None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The users of `path` (refused if group or others may read it), else of VISARL_ANNOTATE_USERS."""
    environ = os.environ if environ is None else environ
    if path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"users file {path} does not exist")
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ValueError(
                f"users file {path} may be read by other users (mode {mode & 0o777:o}); run chmod 600 {path}"
            )
        return parse_users(path.read_text(), f"users file {path}")
    if not environ.get(USERS_ENV):
        raise ValueError(f"no users: pass --users FILE or set {USERS_ENV}")
    return parse_users(environ[USERS_ENV], USERS_ENV, separators="\n,")


class Login:
    """Gradio's `auth` callable: True if `password` is the stored one of `name`."""

    def __init__(self, users: dict[str, str]):
        self.users = users
        self._unknown = hash_password(secrets.token_hex(8))  # unknown names cost a hash check too

    def __call__(self, name: str, password: str) -> bool:
        known = name in self.users
        return password_matches(self.users.get(name, self._unknown), password) and known


@dataclass
class HashConfig:
    """Print an annotator's users-file line with a salted scrypt hash of a password typed twice (not echoed)."""

    name: str = option("", "the annotator's name (letters, digits, - and _)", positional=True)

    def validate(self) -> "HashConfig":
        check_user_name(self.name)
        return self


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(HashConfig, argv, description=HashConfig.__doc__)
    password = getpass.getpass(f"password for {cfg.name}: ")
    if not password or password != getpass.getpass("again: "):
        fail("the two passwords differ or are empty; run again")
    print(f"{cfg.name}:{hash_password(password)}")


if __name__ == "__main__":
    main()
