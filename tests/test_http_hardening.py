"""HTTP hardening of the alerting service and the detector, over real HTTP servers on port 0:
every route needs the token, the dashboard's ?token= becomes a session cookie, uploads are
limited while they stream, malformed bodies get a 4xx, and the security headers are present."""

from __future__ import annotations

import http.client as httpclient
import json
import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from alerting.server import MAX_UPLOAD_BODY, SESSION_COOKIE
from alerting.service import AlertingService
from detector.anomaly import AnomalyConfig
from detector.scorer import OnnxScorer
from detector.service import DetectorService
from tests.helpers.alerting import TOKEN, http, make_config, metric_value, running_alerting
from tests.helpers.detector import detector_config, running_detector

# (method, path) of every alerting route but /healthz and the static files
ROUTES = [
    ("GET", "/"),
    ("GET", "/metrics"),
    ("GET", "/api/alarms"),
    ("GET", "/api/alarms/a1"),
    ("POST", "/api/alarms/a1/ack"),
    ("GET", "/api/beds"),
    ("GET", "/api/beds/1"),
    ("GET", "/api/beds/1/beats/x"),
    ("GET", "/api/beds/1/report.pdf"),
    ("POST", "/api/score"),
]
HEADERS = {
    "content-security-policy": "frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@pytest.fixture(scope="module")
def svc(broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertingService]:
    db = tmp_path_factory.mktemp("http-hard") / "a.db"
    cfg = make_config(broker, "http-hardening", db, metrics_token="prometheus-only-token")
    with running_alerting(cfg) as service:
        yield service


def _raw(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read the answer until the server closes or the timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        out = b""
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                out += data
                if b"\r\n\r\n" in out and b"Content-Length" not in out:
                    break
        except TimeoutError:
            pass
        return out


def _post_head(path: str, length: int) -> bytes:
    """The head of an authorised POST whose body (`length` bytes) is not sent."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _head_answer(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read the answer's head (status line and headers)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        out = b""
        while b"\r\n\r\n" not in out and (data := s.recv(65536)):
            out += data
        return out


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/") else 0


def _has_headers(headers: dict[str, str]) -> None:
    lower = {k.lower(): v for k, v in headers.items()}
    for name, part in HEADERS.items():
        assert part in lower.get(name, ""), (name, lower.get(name))


def test_every_route_refuses_a_missing_or_wrong_token(svc: AlertingService) -> None:
    before = metric_value(svc.port, "ecg_alerting_auth_failures_total")
    for method, path in ROUTES:
        for token in (None, "wrong-token-123"):
            status, headers, _ = http(
                svc.port, path, method=method, token=token, body=b"" if method == "POST" else None
            )
            assert status == 401, (method, path, token, status)
            _has_headers(headers)
    assert metric_value(svc.port, "ecg_alerting_auth_failures_total") >= before + 2 * len(ROUTES)
    # the API never takes ?token= (it would land in logs and history); the page swaps it
    assert http(svc.port, f"/api/beds?token={TOKEN}", token=None)[0] == 401
    assert http(svc.port, "/healthz", token=None)[0] == 200
    # /metrics takes the dashboard token or the metrics token, nothing else
    assert http(svc.port, "/metrics", token="prometheus-only-token")[0] == 200
    assert http(svc.port, "/api/beds", token="prometheus-only-token")[0] == 401


def test_the_page_swaps_the_token_for_an_httponly_session_cookie(svc: AlertingService) -> None:
    conn = httpclient.HTTPConnection("127.0.0.1", svc.port, timeout=10)
    conn.request("GET", f"/?token={TOKEN}&bed=3")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 303
    assert resp.getheader("Location") == "/?bed=3"  # the token left the URL, the rest stays
    cookie = resp.getheader("Set-Cookie") or ""
    assert cookie.startswith(f"{SESSION_COOKIE}=") and TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    session = cookie.split(";", 1)[0]
    for path in ("/", "/api/beds", "/api/alarms", "/metrics"):
        status, headers, _ = http(svc.port, path, token=None, headers={"Cookie": session})
        assert status == 200, path
    status, _, _ = http(
        svc.port, "/api/beds", token=None, headers={"Cookie": f"{SESSION_COOKIE}=forged"}
    )
    assert status == 401
    conn.request("GET", "/?token=wrong-token-123")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 401 and resp.getheader("Set-Cookie") is None
    conn.close()


def test_security_headers_on_pages_api_and_static(svc: AlertingService) -> None:
    for path, token in (
        ("/", TOKEN),
        ("/api/beds", TOKEN),
        ("/healthz", None),
        ("/static/app.js", None),
        ("/api/nothing", TOKEN),
    ):
        _, headers, _ = http(svc.port, path, token=token)
        _has_headers(headers)
    _, headers, _ = http(svc.port, "/", token=TOKEN)
    csp = {k.lower(): v for k, v in headers.items()}["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "*" not in csp


def test_a_chunked_upload_is_refused_once_past_the_limit(svc: AlertingService) -> None:
    """100 MB sent chunked (no Content-Length): the 413 comes before it has all been sent."""
    head = (
        f"POST /api/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    block = b"x" * (1 << 20)
    chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", svc.port), timeout=20) as s:
        s.sendall(head)
        s.settimeout(0.0)
        deadline = time.monotonic() + 60
        while sent < 100 * len(block) and time.monotonic() < deadline:
            try:
                answer += s.recv(65536)
                if answer:
                    break
            except BlockingIOError:
                pass
            try:
                sent += s.send(chunk[sent % len(chunk) :])
            except BlockingIOError:
                time.sleep(0.005)
            except (BrokenPipeError, ConnectionResetError):
                break
        s.settimeout(10)
        while b"\r\n\r\n" not in answer:
            data = s.recv(65536)
            if not data:
                break
            answer += data
    assert _status(answer) == 413, answer[:200]
    assert sent < 2 * MAX_UPLOAD_BODY, sent  # refused while streaming, not after buffering all
    assert metric_value(svc.port, "ecg_alerting_uploads_total", outcome="too_large") >= 1


def test_malformed_bodies_get_a_4xx_never_a_5xx(svc: AlertingService) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    for body in (nested, b'{"by": ' + b"9" * 5000 + b"}", b"\xff\xfe", b"{", b'{"by": 1e999}'):
        status, headers, _ = http(svc.port, "/api/alarms/x/ack", method="POST", body=body)
        assert 400 <= status < 500, (body[:20], status)
    # 1 MiB declared: refused from the headers (sending it all would race the server's close)
    status = _status(_head_answer(svc.port, _post_head("/api/alarms/x/ack", 1 << 20)))
    assert status == 413
    status, _, _ = http(
        svc.port,
        "/api/score",
        method="POST",
        body=b"--b\r\nbroken",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert 400 <= status < 500
    for query in ("?limit=" + "9" * 5000, "?since=1e999", "?since=nan", "?limit=-1"):
        assert http(svc.port, "/api/alarms" + query)[0] == 400, query
    # a negative Content-Length is refused by the HTTP layer at once
    raw = _raw(svc.port, _post_head("/api/alarms/x/ack", -5), timeout=5)
    assert 400 <= _status(raw) < 500, raw[:100]
    assert http(svc.port, "/healthz", token=None)[0] == 200


def test_a_body_that_stops_arriving_does_not_hold_the_handler(
    svc: AlertingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import alerting.http_body

    monkeypatch.setattr(alerting.http_body, "BODY_TIMEOUT_S", 1.0)
    start = time.monotonic()
    answer = _raw(svc.port, _post_head("/api/alarms/x/ack", 100) + b'{"by"', timeout=10)
    assert _status(answer) == 408 and time.monotonic() - start < 5


# ---------------------------------------------------------------- the detector's HTTP


@pytest.fixture(scope="module")
def detector(broker) -> Iterator[DetectorService]:
    with _detector(broker, "http-hardening", token="detector-test-token") as service:
        yield service


def _detector(broker: Any, ward: str, **overrides: Any) -> AbstractContextManager[DetectorService]:
    """The real detector with the autoencoder only (enough for the HTTP side)."""
    cfg = detector_config(broker, ward, **overrides)
    onnx = OnnxScorer(cfg.model_dir)
    return running_detector(cfg, scorer=onnx, anomaly=AnomalyConfig.from_manifest(onnx.manifest))


def _post(port: int, body: bytes, token: str | None, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    req = (
        f"POST /v1/score HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    return _raw(port, req)


def test_detector_score_needs_the_token_and_refuses_bad_bodies(detector: DetectorService) -> None:
    port = detector.http_port
    good = json.dumps({"fs": 360, "samples": [0.0] * 3600}).encode()
    assert _status(_post(port, good, None)) == 401
    assert _status(_post(port, good, "wrong-token-xyz")) == 401
    assert _status(_post(port, good, "detector-test-token")) == 200
    for body in (
        b"[" * 100_000,
        b'{"fs": ' + b"9" * 400 + b', "samples": [1, 2]}',
        b'{"fs": 1e999, "samples": [1]}',
        b'{"fs": 100000, "samples": [0, 1, 2]}',
        b'{"fs": NaN, "samples": [1]}',
        b"\xff",
    ):
        answer = _post(port, body, "detector-test-token")
        assert _status(answer) == 400, (body[:30], answer[:120])
    start = time.monotonic()
    answer = _raw(
        port,
        b"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        b"detector-test-token\r\nContent-Length: -1\r\n\r\n",
        timeout=10,
    )
    assert _status(answer) == 411 and time.monotonic() - start < 5  # not held
    answer = _raw(
        port,
        b"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        b"detector-test-token\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        timeout=10,
    )
    assert _status(answer) == 411
    assert b"nosniff" in answer and b"frame-ancestors 'none'" in answer


def test_detector_without_a_token_generates_one_and_prints_it_once(
    broker, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with _detector(broker, "http-gen") as service:
        assert len(service.token) >= 24
        body = json.dumps({"fs": 360, "samples": [0.0] * 3600}).encode()
        assert _status(_post(service.http_port, body, None)) == 401
        assert _status(_post(service.http_port, body, service.token)) == 200
    err = capfd.readouterr().err
    assert err.count(service.token) == 1
