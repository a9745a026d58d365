"""A tiny HTTP server for the streamer: `GET /metrics` (Prometheus) and `GET /healthz`.

The streamer has no other HTTP API, so the standard library's threading server is enough; it
runs on its own daemon thread beside the publishing loop.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("streamer.http")

Health = Callable[[], tuple[bool, dict[str, Any]]]


class StatusServer:
    """/metrics from `registry`; /healthz answers 200 when `health()` says ok, else 503."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health) -> None:
        self.http = ThreadingHTTPServer((host, port), _handler(registry, health))
        self.http.daemon_threads = True
        self._thread = threading.Thread(
            target=self.http.serve_forever, name="streamer-http", daemon=True
        )

    @property
    def port(self) -> int:
        """The port listened on (the kernel's choice when 0 was asked for)."""
        return int(self.http.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def _handler(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "ecg-streamer"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("http: " + format, *args)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                return
            if path == "/healthz":
                ok, doc = health()
                code = 200 if ok else 503
            else:
                code, doc = 404, {"error": f"no such path {path}"}
            self._send(code, json.dumps(doc, separators=(",", ":")).encode(), "application/json")

    return Handler
