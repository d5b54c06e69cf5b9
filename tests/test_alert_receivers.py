"""Real servers on loopback that stand in for Slack, webhooks, Sentry and SMTP (no tests here).

* :class:`Receiver` — an HTTP server on ``127.0.0.1:<free port>`` that records every
  POST and answers from a script (``[500, 500, 500]`` then 200; ``"hang"`` never answers).
* :class:`SmtpServer` — aiosmtpd on a free port, optionally with STARTTLS and AUTH.
"""

from __future__ import annotations

import gzip
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import need

HANG = "hang"


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Records POSTs; answers the scripted statuses in order, then ``default``."""

    def __init__(self, script: list[int | str] | None = None, default: int | str = 200) -> None:
        self.script = list(script or [])
        self.default = default
        self.requests: list[Request] = []
        self.answered: list[int | str] = []
        self._cond = threading.Condition()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with receiver._cond:
                    answer = receiver.script.pop(0) if receiver.script else receiver.default
                    receiver.requests.append(Request(self.path, dict(self.headers), body))
                    receiver.answered.append(answer)
                    receiver._cond.notify_all()
                if answer == HANG:
                    receiver._release.wait(30)
                    return
                status = int(answer)
                reply = b"ok" if status < 400 else b"server says no"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook/secret-token"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Request]:
        """Wait until ``count`` requests arrived; the requests so far."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"receiver got {len(self.requests)} requests, expected {count}"
                    )
                self._cond.wait(left)
            return list(self.requests)

    def bodies(self) -> list[Any]:
        with self._cond:
            return [r.json() for r in self.requests]

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def make_receiver() -> Iterator[Any]:
    """Builds :class:`Receiver` servers and stops them after the test."""
    made: list[Receiver] = []

    def make(script: list[int | str] | None = None, default: int | str = 200) -> Receiver:
        receiver = Receiver(script, default)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def receiver(make_receiver: Any) -> Receiver:
    """One HTTP receiver that answers 200."""
    return make_receiver()  # type: ignore[no-any-return]


# -- SMTP -------------------------------------------------------------------------------


class SmtpServer:
    """aiosmtpd on 127.0.0.1 and a free port; keeps every message it accepts. ``refuse``: the
    addresses it answers 550 at RCPT."""

    def __init__(
        self,
        *,
        tls_context: ssl.SSLContext | None = None,
        login: tuple[str, str] | None = None,
        refuse: frozenset[str] = frozenset(),
    ) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages: list[Any] = []
        self.logins: list[str] = []
        self._cond = threading.Condition()
        server = self

        class Handler:
            async def handle_RCPT(
                self, smtp: Any, session: Any, envelope: Any, address: str, options: Any
            ) -> str:
                if address in refuse:
                    return "550 5.1.1 mailbox unavailable"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
                with server._cond:
                    server.messages.append(envelope)
                    server._cond.notify_all()
                return "250 OK"

        def authenticate(smtp: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            ok = login is not None and (data.login.decode(), data.password.decode()) == login
            if ok:
                self.logins.append(data.login.decode())
            return AuthResult(success=ok, handled=False)

        class FreePortController(Controller):  # type: ignore[misc]
            def _trigger_server(self) -> None:
                self.port = self.server.sockets[0].getsockname()[1]
                super()._trigger_server()

        options: dict[str, Any] = {}
        if tls_context is not None:
            options.update(tls_context=tls_context, require_starttls=True)
        if login is not None:
            options.update(authenticator=authenticate, auth_require_tls=tls_context is not None)
        self.controller = FreePortController(Handler(), hostname="127.0.0.1", port=0, **options)
        self.controller.start()

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"SMTP server got {len(self.messages)} messages")
                self._cond.wait(left)
            return list(self.messages)

    def close(self) -> None:
        self.controller.stop()


@dataclass
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        need("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            str(openssl),
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return Certificate(cert, key)
