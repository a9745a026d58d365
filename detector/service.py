"""Detector service: MQTT in/out around `DetectorEngine`, plus /metrics, /healthz, /v1/score.

Threads: one worker thread runs paho's network loop and the engine (messages are decoded, fed,
batched and scored in paho's message callback, so no queue and no GIL hand-over per message
stand between the socket and the pipelines), publishes, and reconnects with exponential
backoff; a small HTTP server thread serves Prometheus metrics, health and uploads.
"""

from __future__ import annotations

import cProfile
import hmac
import json
import logging
import math
import secrets
import select
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import numpy as np
import paho.mqtt.client as mqtt
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from detector.anomaly import AnomalyConfig
from detector.classifier import BeatClassifier
from detector.config import DetectorConfig, parse_args
from detector.engine import DetectorEngine, Publication, Scorer
from detector.metrics import DetectorMetrics
from detector.mqtt_client import MAX_INFLIGHT, MAX_QUEUED, BufferedClient, BufferedSocket
from detector.scorer import ModelMismatchError, OnnxScorer
from ecgcommon import mqtt_auth
from ecgcommon.protocol import DecodeError, parse_json
from ecgcommon.settings import load_or_exit
from ecgcommon.shutdown import stop_on_signals
from ecgcommon.subjects import parse_bus
from ecgcommon.topics import subscription

log = logging.getLogger("detector")
MAX_BODY_BYTES = 64 * 1024 * 1024
HTTP_TIMEOUT_S = 30.0
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)


class DetectorService:
    """The running detector; `start()`, then `stop()` (or `run_forever(stop_event)`)."""

    def __init__(
        self,
        config: DetectorConfig,
        registry: CollectorRegistry | None = None,
        scorer: Scorer | None = None,
        anomaly: AnomalyConfig | None = None,
        classifier: BeatClassifier | None = None,
    ) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = DetectorMetrics(self.registry)
        if scorer is None:
            onnx = OnnxScorer(Path(config.model_dir))
            scorer = onnx
            anomaly = anomaly or AnomalyConfig.from_manifest(onnx.manifest)
            # the beat-class network lives next to the autoencoder; refused when it mismatches
            classifier = classifier or BeatClassifier(Path(config.model_dir))
        if anomaly is None:
            raise ValueError("anomaly config is needed with a custom scorer")
        self.engine = DetectorEngine(
            scorer,
            anomaly,
            anomaly.threshold(config.profile),
            self.metrics,
            config,  # a DetectorConfig is the engine's EngineSettings and more
            classifier=classifier,
        )
        # POST /v1/score needs this token; without one configured, a fresh one is printed once
        self.token = config.token or secrets.token_urlsafe(24)
        self._token_generated = not config.token
        self.connected = threading.Event()
        self._stopping = threading.Event()
        self._outbox: list[Publication] = []
        self.client = self._make_client()
        self.http = ThreadingHTTPServer((config.http_host, config.http_port), _handler(self))
        self.http.daemon_threads = True
        self._worker = threading.Thread(
            target=self._profiled, args=("worker", self._work), name="detector-worker", daemon=True
        )
        if parse_bus(config.bus).is_nats:  # the distributed bus instead (detector/nats_link.py)
            from detector.nats_link import NatsWorker

            self._worker = threading.Thread(
                target=self._profiled,
                args=("worker", NatsWorker(self).run),
                name="detector-nats",
                daemon=True,
            )
        self._http_thread = threading.Thread(
            target=self.http.serve_forever, name="detector-http", daemon=True
        )

    @property
    def http_port(self) -> int:
        return int(self.http.server_address[1])

    # ------------------------------------------------------------------ MQTT callbacks
    def _make_client(self) -> BufferedClient:
        m = self.config.mqtt
        c = BufferedClient(mqtt.CallbackAPIVersion.VERSION2, client_id=m.client_id)
        c.gather_writes = True  # the worker flushes once per turn (_loop_once)
        mqtt_auth.apply_files(c, m.username, m.password_file, m.ca_file)
        c.max_queued_messages_set(MAX_QUEUED)
        c.max_inflight_messages_set(MAX_INFLIGHT)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        return c

    def _on_connect(
        self, client: mqtt.Client, _ud: object, _flags: object, rc: object, _props: object = None
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("broker refused the connection: %s", rc)
            return
        ward = self.config.ward
        client.subscribe(
            [
                (subscription("samples", ward=ward), self.config.qos_in),
                (subscription("status", ward=ward), 1),
            ]
        )
        self.connected.set()
        self.metrics.up.set(1)
        log.info(
            "connected to %s:%s, subscribed to ward %r",
            self.config.mqtt.host,
            self.config.mqtt.port,
            ward,
        )

    def _on_disconnect(
        self, _client: mqtt.Client, _ud: object, _flags: object, rc: object, _props: object = None
    ) -> None:
        self.connected.clear()
        self.metrics.up.set(0)
        if not self._stopping.is_set():
            log.warning("disconnected from the broker (%s); reconnecting with backoff", rc)

    def _on_message(self, _client: mqtt.Client, _ud: object, msg: mqtt.MQTTMessage) -> None:
        # same thread as the network loop: no queue, no GIL hand-over per message
        payload = cast(bytes, msg.payload)  # paho hands over bytes; its stubs add bytearray
        self._outbox += self.engine.handle(msg.topic, payload, time.monotonic(), bool(msg.retain))

    def _profiled(self, name: str, target: Callable[[], None]) -> None:
        """Run a thread's body, under cProfile when `cprofile_out` is set (benchmarks)."""
        if not self.config.cprofile_out:
            target()
            return
        prof = cProfile.Profile()
        prof.enable()
        try:
            target()
        finally:
            prof.disable()
            prof.dump_stats(f"{self.config.cprofile_out}.{name}")

    # ------------------------------------------------------------------ the worker
    def _publish(self, pubs: list[Publication]) -> None:
        for p in pubs:
            self.client.publish(p.topic, p.payload, p.qos, p.retain)

    def _loop_once(self, timeout: float) -> mqtt.MQTTErrorCode:
        """One turn of paho's external-event-loop API (socket, loop_read/write/misc): unlike
        `Client.loop`, it needs no wake-up socket pair (a send() per publish), since the
        publishing thread is this one. What the last turn published (and acked) is written first,
        in one send()."""
        client = self.client
        client.flush()
        sock = client.socket()
        if sock is None:
            return mqtt.MQTT_ERR_NO_CONN
        buffered = isinstance(sock, BufferedSocket) and sock.pending() > 0
        try:
            readable, writable, _ = select.select(
                [sock], [sock] if client.want_write() else [], [], 0.0 if buffered else timeout
            )
        except (OSError, ValueError):  # the socket closed under us
            readable, writable = [], []
        rc = mqtt.MQTT_ERR_SUCCESS
        if readable or buffered:
            rc = client.loop_read()
        if rc == mqtt.MQTT_ERR_SUCCESS and writable and client.socket() is not None:
            rc = client.loop_write()
            client.flush()
        if rc == mqtt.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        return rc

    def _work(self) -> None:
        """One thread does it all: paho's network loop (messages are handled in its callback),
        the batching deadlines, publication, and reconnection with exponential backoff."""
        client, engine, cfg = self.client, self.engine, self.config.mqtt
        backoff = cfg.reconnect_min_s
        connected_once = False
        while not self._stopping.is_set():
            if client.socket() is None:  # not connected: (re)connect, backing off on failure
                try:
                    if connected_once:
                        client.reconnect()
                    else:
                        client.connect(cfg.host, cfg.port, cfg.keepalive_s)
                        connected_once = True
                    backoff = cfg.reconnect_min_s
                except OSError as exc:
                    log.warning(
                        "cannot reach the broker at %s:%s (%s); retrying in %.1f s",
                        cfg.host,
                        cfg.port,
                        exc,
                        backoff,
                    )
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, cfg.reconnect_max_s)
                    continue
            deadline = engine.next_deadline()
            now = time.monotonic()
            timeout = 0.2 if deadline is None else min(0.2, max(0.0, deadline - now))
            rc = self._loop_once(timeout)
            try:
                self._outbox += engine.tick(time.monotonic())
            except Exception:  # never let the worker die
                self.metrics.bad_messages.labels("internal_error").inc()
                log.exception("error in tick")
            pubs, self._outbox = self._outbox, []
            self._publish(pubs)
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN) and client.socket() is None:
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, cfg.reconnect_max_s)
        # shutdown: score what waits, publish it, leave cleanly
        self._publish(self._outbox + engine.flush(time.monotonic()))
        self._outbox = []
        if client.socket() is not None:
            for _ in range(10):  # let QoS 1 events go out
                self._loop_once(0.05)
            client.disconnect()
            self._loop_once(0.1)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._token_generated:  # printed once, never logged
            print(
                f"detector: POST /v1/score token (set ECG_DETECTOR_TOKEN to choose one): "
                f"{self.token}",
                file=sys.stderr,
                flush=True,
            )
        self._http_thread.start()
        self._worker.start()
        log.info(
            "detector up: MQTT %s:%s, HTTP %s:%d",
            self.config.mqtt.host,
            self.config.mqtt.port,
            self.config.http_host,
            self.http_port,
        )

    def stop(self) -> None:
        """Finish the waiting work, publish it, disconnect, stop serving."""
        self._stopping.set()
        self._worker.join(timeout=15)
        self.http.shutdown()
        self.http.server_close()

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        alive = self._worker.is_alive()
        connected = self.connected.is_set()
        return alive and connected, {
            "status": "ok" if alive and connected else "unavailable",
            "worker_alive": alive,
            "mqtt_connected": connected,
            "beds": len(self.engine.beds),
        }


def _score_request(service: DetectorService, body: bytes) -> dict[str, Any]:
    """Validate a /v1/score body and score it; ValueError says what is wrong."""
    try:
        doc = parse_json(body)  # the wire's limits: no 400-digit integers, no NaN, no deep nests
    except DecodeError as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError('body must be a JSON object {"fs": Hz, "samples": [mV, ...]}')
    fs = doc.get("fs")
    if isinstance(fs, bool) or not isinstance(fs, int | float) or not math.isfinite(fs):
        raise ValueError("'fs' must be a number of Hz")
    samples = doc.get("samples")
    if not isinstance(samples, list):
        raise ValueError("'samples' must be a list of numbers (mV, one lead)")
    x = np.asarray(samples) if samples else np.zeros(0)
    if x.dtype.kind not in "iuf" or x.ndim != 1:
        raise ValueError("'samples' must be a flat list of numbers (mV, one lead)")
    beats = service.engine.score_signal(x.astype(np.float64), float(fs))
    return {
        "fs": float(fs),
        "n_samples": int(x.size),
        "n_beats": len(beats),
        "threshold": service.engine.threshold,
        "beats": beats,
    }


class _Handler(BaseHTTPRequestHandler):
    """/metrics, /healthz and POST /v1/score of one `DetectorService` (set by `_handler`)."""

    service: DetectorService
    server_version = "ecg-detector"
    timeout = HTTP_TIMEOUT_S  # a client that stops sending never holds a handler

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("http: " + format, *args)

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self._send_rest(body, ctype)

    def _send_rest(self, body: bytes, ctype: str = "application/json") -> None:
        """Headers after the status line (and any header of the caller's), then the body."""
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, doc: Any) -> None:
        self._send(code, json.dumps(doc, separators=(",", ":")).encode())

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.service.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok, doc = self.service.healthy()
            self._json(200 if ok else 503, doc)
        else:
            self._json(404, {"error": f"no such path {path}"})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path != "/v1/score":
            self._json(404, {"error": f"no such path {path}"})
            return
        self.close_connection = True  # a refused body is never read: do not reuse the socket
        if not self._authorised():
            return
        body = self._body()
        if body is None:
            return
        try:
            self._json(200, _score_request(self.service, body))
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
        except Exception:
            log.exception("scoring an upload failed")
            self._json(500, {"error": "internal error while scoring"})

    def _authorised(self) -> bool:
        """The bearer token matches (constant time); else 401 sent and counted."""
        given = self.headers.get("Authorization", "")
        given = given[7:].strip() if given[:7].lower() == "bearer " else ""
        if hmac.compare_digest(given.encode("utf-8", "replace"), self.service.token.encode()):
            return True
        self.service.metrics.bad_messages.labels("http_auth").inc()
        self.send_response(401)
        self.send_header("WWW-Authenticate", "Bearer")
        self._send_rest(b'{"error":"missing or wrong token"}')
        return False

    def _body(self) -> bytes | None:
        """The request body, read only with a sane Content-Length; else None, the error sent."""
        if self.headers.get("Transfer-Encoding"):
            self._json(411, {"error": "send the body with a Content-Length, not chunked"})
            return None
        raw = self.headers.get("Content-Length", "")
        if not raw.strip().isdigit():  # also refuses a negative length
            self._json(411, {"error": "a Content-Length of 0 or more bytes is required"})
            return None
        length = int(raw)
        if length > MAX_BODY_BYTES:
            self._json(413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"})
            return None
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self._json(408, {"error": "the body did not arrive in time"})
            return None
        if len(body) < length:
            self._json(400, {"error": f"body ended after {len(body)} of {length} bytes"})
            return None
        return body


def _handler(service: DetectorService) -> type[BaseHTTPRequestHandler]:
    """The HTTP handler class of `service` (the stdlib server makes one per request)."""
    return type("Handler", (_Handler,), {"service": service})


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: `python -m detector`."""
    config = load_or_exit(parse_args, argv, log)
    if config is None:
        return 2
    try:
        service = DetectorService(config)
    except mqtt_auth.CredentialError as exc:
        log.error("%s", exc)
        return 2
    except (ModelMismatchError, KeyError, ValueError) as exc:
        log.error("cannot load the model from %s: %s", config.model_dir, exc)
        return 2
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.http_host, config.http_port, exc)
        return 2
    stop = stop_on_signals(log)
    service.start()
    stop.wait()
    service.stop()
    log.info("stopped")
    return 0
