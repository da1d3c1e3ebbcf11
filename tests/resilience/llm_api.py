"""A real local HTTP "LLM API" for the resilience tests: stdlib http.server on a free port.

``POST /v1/complete`` with ``{"prompt": ...}`` answers ``{"text": "echo: <prompt>"}``, unless
failures were scripted with :meth:`LLMAPI.fail_next` (status, optional ``Retry-After``).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LLMAPI:
    """The server's script and what it saw; ``url`` is its base address."""

    def __init__(self) -> None:
        self.url = ""
        self.requests = 0
        self._failures: deque[tuple[int, str | None]] = deque()
        self._lock = threading.Lock()

    def fail_next(self, count: int, status: int = 503, retry_after: str | None = None) -> None:
        """Answer the next ``count`` requests with ``status`` (and ``Retry-After``)."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * count)

    def _next(self) -> tuple[int, str | None]:
        with self._lock:
            self.requests += 1
            return self._failures.popleft() if self._failures else (200, None)


@contextmanager
def serve_llm_api() -> Iterator[LLMAPI]:
    """Run the fake LLM API on 127.0.0.1 (a free port) for the duration of the block."""
    api = LLMAPI()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, retry_after = api._next()
            payload = (json.dumps({"text": f"echo: {body['prompt']}"}) if status == 200
                       else json.dumps({"error": "overloaded"})).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass  # keep test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
