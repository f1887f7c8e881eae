"""A local webhook receiver for alert tests: an HTTP server on 127.0.0.1 in a thread of the test
process, recording every POST; `answers` scripts the status codes (and delays) it replies with."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """What the server received, and what it answers next."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[tuple[int, float]] = []  # (status, seconds to wait first), in order
        self.headers: dict[str, str] = {}
        self.lock = threading.Lock()
        self.url = ""

    def next_answer(self) -> tuple[int, float]:
        with self.lock:
            return self.answers.pop(0) if self.answers else (200, 0.0)

    def bodies(self, event: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            found = [r["body"] for r in self.requests]
        return [b for b in found if event is None or b.get("event") == event]


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    """Start the receiver; it is shut down (and its thread joined) when the block ends."""
    received = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            status, delay = received.next_answer()
            with received.lock:
                received.requests.append(
                    {
                        "path": self.path,
                        "body": json.loads(raw or b"{}"),
                        "content_type": self.headers.get("Content-Type"),
                        "status": status,
                    }
                )
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                for key, value in received.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    received.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token"
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
