"""Alert receivers for tests: a real HTTP server and a real SMTP server on loopback."""

from __future__ import annotations

import email
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from .stacks import free_port

ALL = {"webhook", "slack", "email"}


@dataclass
class Inbox:
    """Everything the receivers got: (channel, received at, text)."""

    messages: list[tuple[str, float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, channel: str, text: str) -> None:
        with self.lock:
            self.messages.append((channel, time.time(), text))

    def about(self, needle: str) -> list[tuple[str, float, str]]:
        with self.lock:
            return [m for m in self.messages if needle in m[2]]

    def wait_for(self, needle: str, channels: set[str], timeout: float) -> dict[str, float]:
        """When each channel first received a message containing `needle`."""
        deadline = time.monotonic() + timeout
        while True:
            got = {c: t for c, t, _ in reversed(self.about(needle))}
            if channels <= set(got):
                return got
            assert time.monotonic() < deadline, f"only {sorted(got)} got {needle!r}"
            time.sleep(0.2)


class _SMTPHandler:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message: Message = email.message_from_bytes(envelope.content)
        parts = [message] if not message.is_multipart() else list(message.walk())
        text = "".join(
            p.get_payload(decode=True).decode()
            for p in parts
            if p.get_content_type() == "text/plain"
        )
        self.inbox.add("email", f"To: {','.join(envelope.rcpt_tos)}\n{message['Subject']}\n{text}")
        return "250 OK"


@contextmanager
def alert_receivers() -> Iterator[tuple[Inbox, dict[str, str]]]:
    """An HTTP server (webhook, slack paths) and an SMTP server on loopback, and the
    FLEETFLOW_ALERT_* settings pointing at them; both stopped on exit."""
    box = Inbox()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            # Kept as text a reader would see (a run name may hold "…" and quotes).
            box.add(self.path.strip("/"), json.dumps(body, ensure_ascii=False))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    http = HTTPServer(("127.0.0.1", free_port()), Hook)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    smtp = Controller(_SMTPHandler(box), hostname="127.0.0.1", port=free_port())
    smtp.start()
    base = f"http://127.0.0.1:{http.server_port}"
    env = {
        "FLEETFLOW_ALERT_WEBHOOK_URL": f"{base}/webhook",
        "FLEETFLOW_ALERT_SLACK_URL": f"{base}/slack",
        "FLEETFLOW_ALERT_SMTP_HOST": "127.0.0.1",
        "FLEETFLOW_ALERT_SMTP_PORT": str(smtp.port),
        "FLEETFLOW_ALERT_SMTP_SECURITY": "none",
        "FLEETFLOW_ALERT_EMAIL_TO": "ops@example.org",
    }
    try:
        yield box, env
    finally:
        smtp.stop()
        http.shutdown()
        http.server_close()
