"""An ASGI middleware in front of the annotation server: Host check, body cap, login throttle.

- **Host header.** A request is served only if its Host is an IP address, `localhost`, or a name
  given with `--allowed-hosts` (or as `--host`). DNS rebinding (a page on evil.example whose name is
  made to resolve to 127.0.0.1) sends `Host: evil.example` and gets 403.
- **Request bodies.** A request with a body must declare its length (411 otherwise) and stay under
  `max_body` bytes (413, refused before any byte of it is read). The page's own requests are a few
  hundred bytes; it takes no uploads.
- **Logins.** Each wrong password from an address makes that address wait before its next try
  (1 s, doubling per further failure, at most 5 min) and only one try per address is checked at a
  time; tries that come early get 429 with `Retry-After` and are not checked. A right password clears
  the address's count.
"""

from __future__ import annotations

import ipaddress
import json
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 1 << 20  # bytes: 1 MiB
LOGIN_PATHS = ("/login", "/login/")
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def host_name(host_header: str) -> str:
    """'example.org:7860' -> 'example.org'; '[::1]:7860' -> '::1'; lower case."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass
class _Failures:
    count: int = 0
    not_before: float = 0.0  # time.monotonic() of the next try that will be checked
    busy: bool = False  # a try from this address is being checked


@dataclass
class LoginThrottle:
    """Per-address waits after wrong passwords (see the module docstring). At most `max_addresses`
    addresses are remembered: beyond them the one whose last try is oldest is forgotten (never one
    being checked), so tries from many addresses cannot grow the table without bound, and an address
    that keeps trying stays at the front and keeps its wait."""

    base_s: float = 1.0
    max_s: float = 300.0
    max_addresses: int = 10_000
    _by_address: OrderedDict[str, _Failures] = field(default_factory=OrderedDict)  # oldest try first
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def try_start(self, address: str) -> float:
        """0 if a try from `address` may be checked now (and marks it busy), else the seconds to wait."""
        with self._lock:
            f = self._by_address.setdefault(address, _Failures())
            self._by_address.move_to_end(address)
            if len(self._by_address) > self.max_addresses:
                self._forget_oldest(keep=address)
            wait = f.not_before - time.monotonic()
            if f.busy:
                return max(wait, self.base_s)
            if wait > 0:
                return wait
            f.busy = True
            return 0.0

    def _forget_oldest(self, keep: str) -> None:
        """Drop the address whose last try is oldest among those not being checked, `keep` aside."""
        oldest = next((a for a, f in self._by_address.items() if not f.busy and a != keep), None)
        if oldest is not None:
            del self._by_address[oldest]

    def finish(self, address: str, succeeded: bool | None) -> None:
        """Record the try's outcome (None: neither, e.g. a malformed request)."""
        with self._lock:
            f = self._by_address[address]
            f.busy = False
            if succeeded:
                del self._by_address[address]
            elif succeeded is False:
                f.count += 1
                f.not_before = time.monotonic() + min(self.base_s * 2 ** (f.count - 1), self.max_s)


class RequestGuard:
    """The middleware; `allowed_hosts` are host names (not IPs) served besides localhost."""

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: tuple[str, ...] = (),
        max_body: int = MAX_BODY,
        throttle: LoginThrottle | None = None,
    ):
        self.app = app
        self.allowed = {"localhost", *(h.lower() for h in allowed_hosts)}
        self.max_body = max_body
        self.throttle = throttle or LoginThrottle()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        name = host_name(headers.get("host", ""))
        if not (is_ip(name) or name in self.allowed or name.endswith(".localhost")):
            return await self._refuse(
                scope,
                send,
                403,
                f"Host {headers.get('host', '')!r} is not this server's name "
                "(a DNS-rebinding page?); start the app with --allowed-hosts NAME to serve it under that name",
            )
        if scope["type"] == "http" and scope["method"] in BODY_METHODS:
            length = headers.get("content-length")
            if length is None:
                return await self._refuse(scope, send, 411, "a request body must declare its Content-Length")
            if not length.isdigit() or int(length) > self.max_body:
                return await self._refuse(
                    scope,
                    send,
                    413,
                    f"request body of {length} bytes is over the {self.max_body / (1 << 20):g} MiB this server accepts",
                )
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in LOGIN_PATHS:
            return await self._login(scope, receive, send)
        await self.app(scope, receive, send)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        address = (scope.get("client") or ("?",))[0]
        wait = self.throttle.try_start(address)
        if wait > 0:
            seconds = math.ceil(wait)
            return await self._refuse(
                scope,
                send,
                429,
                f"too many wrong passwords from {address}; try again in {seconds} s",
                {"retry-after": str(seconds)},
            )
        status = 0

        async def watch(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:  # Gradio answers 400 for wrong credentials, 200 for right ones
            self.throttle.finish(address, True if status == 200 else False if status == 400 else None)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, detail: str, extra: dict[str, str] | None = None) -> None:
        if scope["type"] == "websocket":  # close the handshake: 1008 policy violation
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
