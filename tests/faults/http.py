"""A small HTTP client over the standard library, for a portal served on loopback.

It keeps the session cookie, reads CSRF tokens from pages, and speaks enough tus 1.0 for the
fault tests. :func:`raw_patch` sends a PATCH over a raw socket at a pace the test controls,
so the test can kill the server (or drop the connection) at a known point mid-body.
"""

from __future__ import annotations

import base64
import http.client
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
TEMPLATE = re.compile(r'name="template_id" value="([0-9a-f]{64})"')
OFFSET_TYPE = "application/offset+octet-stream"
PASSWORD = "correct horse battery"
TIMEOUT = 20.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Client:
    port: int
    cookies: dict[str, str] = field(default_factory=dict)
    timeout: float = TIMEOUT

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout or self.timeout)
        try:
            sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
            if self.cookies:
                sent["Cookie"] = self.cookie_header()
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            data = response.read()
            for value in response.headers.get_all("Set-Cookie") or []:
                jar = SimpleCookie()
                jar.load(value)
                for name, morsel in jar.items():
                    self.cookies[name] = morsel.value
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        finally:
            conn.close()

    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def form(self, path: str, fields: dict[str, object]) -> Reply:
        body = urlencode(fields, doseq=True).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return self.request("POST", path, body, headers)

    def csrf(self, path: str) -> tuple[str, str]:
        page = self.get(path)
        assert page.status == 200, (path, page.status, page.text[:500])
        match = TOKEN.search(page.text)
        assert match, f"no CSRF token on {path}"
        return match.group(1), page.text

    def login(self, email: str, password: str = PASSWORD) -> None:
        token, _ = self.csrf("/login")
        reply = self.form("/login", {"csrf_token": token, "email": email, "password": password})
        assert reply.status == 303, (reply.status, reply.text[:500])

    def sign_consent(self, modules: tuple[str, ...] = ("research",)) -> None:
        token, page = self.csrf("/consent")
        template = TEMPLATE.search(page)
        assert template, "no consent template on /consent"
        reply = self.form(
            "/consent",
            {
                "csrf_token": token,
                "template_id": template.group(1),
                "modules": list(modules),
                "full_name": "Ada Donor",
            },
        )
        assert reply.status == 200, (reply.status, reply.text[:500])


class WsgiClient(Client):
    """The same client over an in-process app's Flask test client (no socket, no server)."""

    def __init__(self, app: Any) -> None:
        super().__init__(port=0)
        self.flask = app.test_client()

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        reply = self.flask.open(path, method=method, data=body, headers=headers or {})
        try:
            return Reply(
                reply.status_code, {k.lower(): v for k, v in reply.headers.items()}, reply.data
            )
        finally:
            reply.close()


class Tus:
    """tus 1.0 over :class:`Client`, as Uppy speaks it (CSRF token in ``X-CSRFToken``)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.token, _ = client.csrf("/donations/new")
        self.submission = secrets.token_hex(16)

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Tus-Resumable": "1.0.0", "X-CSRFToken": self.token, **extra}

    def create(self, length: int) -> Reply:
        meta = "submission " + base64.b64encode(self.submission.encode()).decode()
        return self.client.request(
            "POST",
            "/uploads/",
            headers=self.headers(**{"Upload-Length": str(length), "Upload-Metadata": meta}),
        )

    def patch(self, url: str, offset: int, body: bytes, timeout: float | None = None) -> Reply:
        headers = self.headers(**{"Upload-Offset": str(offset), "Content-Type": OFFSET_TYPE})
        return self.client.request("PATCH", url, body, headers, timeout=timeout)

    def head(self, url: str) -> Reply:
        return self.client.request("HEAD", url, headers=self.headers())

    def offset(self, url: str) -> int:
        reply = self.head(url)
        assert reply.status == 200, (reply.status, reply.text[:300])
        return int(reply.headers["upload-offset"])


def raw_patch(
    tus: Tus,
    url: str,
    offset: int,
    body: bytes,
    *,
    chunk: int = 64 << 10,
    pause: float = 0.01,
    on_sent: Callable[[int], bool] | None = None,
    timeout: float = TIMEOUT,
) -> tuple[int, Reply | None]:
    """PATCH ``body`` slowly over a raw socket; returns (bytes sent, the reply or None).

    After each chunk ``on_sent(bytes_sent)`` is called; when it returns False the client stops
    sending and closes the connection (a donor's connection dropping mid-body). A server that
    dies mid-body ends the sending too (the reply is then None).
    """
    headers = tus.headers(
        **{
            "Upload-Offset": str(offset),
            "Content-Type": OFFSET_TYPE,
            "Content-Length": str(len(body)),
            "Cookie": tus.client.cookie_header(),
            "Host": f"127.0.0.1:{tus.client.port}",
        }
    )
    head = f"PATCH {url} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock = socket.create_connection(("127.0.0.1", tus.client.port), timeout=timeout)
    sent = 0
    try:
        sock.sendall(head.encode("latin-1") + b"\r\n")
        while sent < len(body):
            piece = body[sent : sent + chunk]
            try:
                sock.sendall(piece)
            except OSError:
                return sent, None
            sent += len(piece)
            if on_sent is not None and not on_sent(sent):
                return sent, None
            if pause:
                time.sleep(pause)
        return sent, _read_reply(sock)
    finally:
        sock.close()


def _read_reply(sock: socket.socket) -> Reply | None:
    """The whole reply on the raw socket, or None when the server went away first."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                return None
            data += more
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            more = sock.recv(65536)
            if not more:
                break
            rest += more
        return Reply(status, headers, rest)
    except OSError:
        return None
