"""Real alert receivers on 127.0.0.1: an HTTP webhook that records POSTs and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Webhook:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """An HTTP server that answers ``status`` to every POST and keeps path, headers and raw body."""
    received = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            received.requests.append({"path": self.path, "headers": dict(self.headers),
                                      "body": self.rfile.read(length).decode()})
            self.send_response(received.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    received.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/gradesync"
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class SmtpSink:
    port: int
    login: str
    password: str
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[dict[str, Any]] = field(default_factory=list)
    authenticated: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server with AUTH LOGIN/PLAIN (no TLS, like a local relay) that keeps every message."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    sink = SmtpSink(port=_free_port(), login="alerts", password="smtp-Pass-4567")

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            sink.envelopes.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos)})
            sink.messages.append(message_from_bytes(envelope.content, policy=policy.default))
            return "250 OK"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = auth_data.login.decode() == sink.login and auth_data.password.decode() == sink.password
        if ok:
            sink.authenticated.append(auth_data.login.decode())
        return AuthResult(success=ok)

    controller = Controller(Handler(), hostname="127.0.0.1", port=sink.port, authenticator=authenticator,
                            auth_require_tls=False)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
