"""HTTP API, websocket feed and dashboard of the alerting service (Starlette, served by uvicorn).

Thin adapter: ward state comes from the sans-I/O `WardHub`, alarms from an `AlarmDesk` (the
service's policy + store + broadcast), uploads are parsed by `ecgcommon.upload` and scored by the
detector's `POST /v1/score`. Every route except /healthz and the static assets needs the token
(one check, `_Guard`, in front of every route): `Authorization: Bearer <token>`, or the dashboard's
session cookie. The page swaps a `?token=` for that cookie (HttpOnly, SameSite=Strict) with a
redirect, so the token leaves the address bar and the history; /metrics also takes the metrics
token. Bodies are read with a size limit while they stream in; malformed ones get a 4xx; every
response carries the security headers (CSP self only, no framing, nosniff, no referrer).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from alerting.hub import Decimator, WardHub
from ecgcommon.upload import MAX_UPLOAD_BYTES, UploadError, parse_upload

log = logging.getLogger(__name__)

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
PRIORITIES = ("high", "medium", "low", "technical")
STATES = ("active", "acknowledged", "latched", "ended", "open")
MAX_LIMIT = 1000
# Uploaded signals are sent back for display at about this rate (the beats keep full precision).
UPLOAD_DISPLAY_HZ = 180.0
# A JSON body (acknowledgement) larger than this is refused while it streams in.
MAX_JSON_BODY = 64 * 1024
# An upload (multipart: the file plus a few fields) larger than this is refused while streaming.
MAX_UPLOAD_BODY = MAX_UPLOAD_BYTES + 65536
# A body still arriving after this long is refused (a slow client never holds a handler).
BODY_TIMEOUT_S = 30.0
SESSION_COOKIE = "ecg_session"
PUBLIC_PATHS = ("/healthz",)
# The websocket sends a heartbeat this often with the service's bus state; the page shows OFFLINE
# when heartbeats stop (3 s) or say the bus is down, never stale LIVE values (docs/faults.md).
HEARTBEAT_S = 1.0
PUBLIC_PREFIXES = ("/static/",)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class AlarmDesk(Protocol):
    """What the API needs from the alarm side (implemented by the service on policy + store)."""

    def list_alarms(
        self,
        *,
        bed: str | None,
        priority: str | None,
        state: str | None,
        since: float | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Alarms newest first, as `Alarm.to_dict()`; state "open" means not ended."""
        ...

    def get_alarm(self, alarm_id: str) -> dict[str, Any] | None: ...

    def acknowledge(self, alarm_id: str, by: str) -> tuple[str, dict[str, Any] | None]:
        """Ack through the policy, then store, metrics and broadcast.

        Returns ("ok", alarm), ("unknown", None) or ("closed", alarm) for an ended alarm.
        """
        ...


class ServerMetrics:
    """The HTTP side's Prometheus metrics, registered in the registry passed in."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ws_clients = Gauge(
            "ecg_alerting_websocket_clients",
            "Dashboard websocket clients connected",
            registry=registry,
        )
        self.ws_dropped = Counter(
            "ecg_alerting_websocket_frames_dropped_total",
            "Waveform frames dropped for slow websocket clients",
            registry=registry,
        )
        self.ws_cut = Counter(
            "ecg_alerting_websocket_clients_cut_total",
            "Websocket clients disconnected because they could not keep up",
            registry=registry,
        )
        self.uploads = Counter(
            "ecg_alerting_uploads_total",
            "ECG uploads for scoring by outcome",
            ["outcome"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "ecg_alerting_auth_failures_total",
            "Requests refused for a missing or wrong token",
            registry=registry,
        )


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


class _Auth:
    """Constant-time token checks: a bearer token, the dashboard's session cookie (derived from
    the token, so the token itself is never stored in the browser) or, where allowed, `?token=`."""

    def __init__(self, token: str, metrics_token: str = "") -> None:
        if not token:
            raise ValueError("token must be non-empty")
        self._token = token.encode()
        self._metrics = metrics_token.encode() if metrics_token else None
        self.session = hmac.new(self._token, b"ecg-dashboard-session", hashlib.sha256).hexdigest()

    def _bearer(self, conn: HTTPConnection) -> str:
        header = conn.headers.get("authorization", "")
        return header[7:].strip() if header[:7].lower() == "bearer " else ""

    def token_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "replace"), self._token)

    def ok(self, conn: HTTPConnection, allow_query: bool, metrics: bool = False) -> bool:
        bearer = self._bearer(conn)
        if bearer:
            if (
                metrics
                and self._metrics is not None
                and hmac.compare_digest(bearer.encode("utf-8", "replace"), self._metrics)
            ):
                return True
            return self.token_ok(bearer)
        cookie = conn.cookies.get(SESSION_COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode("utf-8", "replace"), self.session.encode()):
            return True
        query = conn.query_params.get("token", "") if allow_query else ""
        return bool(query) and self.token_ok(query)


class _TooLarge(Exception):
    """A request body refused while it streamed in: over its limit (413) or too slow (408)."""

    def __init__(self, message: str, status: int = 413) -> None:
        super().__init__(message)
        self.status = status


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, read as it streams in and refused (`_TooLarge`) as soon as it passes `limit`
    bytes, whatever Content-Length says (a chunked upload has none)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge(f"body of {declared} bytes is over the {limit} byte limit")
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):  # a client that stops sending is let go
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise _TooLarge(f"body is over the {limit} byte limit")
    except ClientDisconnect:
        raise _TooLarge("the client left before its body ended", 400) from None
    except TimeoutError:
        raise _TooLarge(f"the body did not arrive within {BODY_TIMEOUT_S:g} s", 408) from None
    return bytes(body)


class _Guard:
    """ASGI middleware in front of every route: the token check (one place for all routes),
    the `?token=` -> session cookie swap of the page, and the security headers."""

    def __init__(self, app: ASGIApp, auth: _Auth, on_refused: Callable[[], None]) -> None:
        self.app = app
        self.auth = auth
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the websocket checks its token itself (denial response)
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        conn = HTTPConnection(scope)

        async def send_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in have]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send_headers)
            return
        if path == "/" and "token" in conn.query_params:
            await self._swap(conn, scope, receive, send_headers)
            return
        allow_query = path == "/ws" or path.endswith("/report.pdf")
        if not self.auth.ok(conn, allow_query=allow_query, metrics=path == "/metrics"):
            self.on_refused()
            resp = _error(401, "missing or wrong token", **{"WWW-Authenticate": "Bearer"})
            await resp(scope, receive, send_headers)
            return
        await self.app(scope, receive, send_headers)

    async def _swap(self, conn: HTTPConnection, scope: Scope, receive: Receive, send: Send) -> None:
        """`/?token=...`: a right token becomes the session cookie and the browser is sent to
        the same page without it (303), so it stays out of the address bar and history."""
        if not self.auth.token_ok(conn.query_params.get("token", "")):
            self.on_refused()
            resp: Response = _error(401, "missing or wrong token", **{"WWW-Authenticate": "Bearer"})
        else:
            rest = [(k, v) for k, v in conn.query_params.multi_items() if k != "token"]
            query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in rest)
            resp = Response(
                status_code=303,
                headers={
                    "Location": "/" + ("?" + query if query else ""),
                    "Cache-Control": "no-store",
                },
            )
            resp.set_cookie(
                SESSION_COOKIE,
                self.auth.session,
                httponly=True,
                samesite="strict",
                path="/",
                secure=scope.get("scheme") == "https",
            )
        await resp(scope, receive, send)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _parse_float(params: Mapping[str, str], name: str) -> float | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number (unix seconds), got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {raw!r}")
    return value


def create_app(
    hub: WardHub,
    desk: AlarmDesk,
    token: str,
    registry: CollectorRegistry,
    *,
    detector_url: str,
    score_timeout_s: float = 30.0,
    health: Callable[[], dict[str, Any]] | None = None,
    metrics: ServerMetrics | None = None,
    report: Callable[[str], Callable[[], bytes]] | None = None,
    metrics_token: str = "",
    detector_token: str = "",
) -> Starlette:
    """The Starlette app. `health()` adds fields to /healthz (e.g. the MQTT connection);
    `report(bed)` collects a bed's PDF alarm report and returns the function that renders it
    (run in a worker thread; NotImplementedError -> 501). `metrics_token` is also accepted on
    /metrics; `detector_token` is sent to the detector's `POST /v1/score`."""
    auth = _Auth(token, metrics_token)
    m = metrics or ServerMetrics(registry)
    score_url = detector_url.rstrip("/") + "/v1/score"

    async def index(request: Request) -> Response:
        return FileResponse(DASHBOARD_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def healthz(request: Request) -> Response:
        body: dict[str, Any] = {
            "status": "ok",
            "ward": hub.ward,
            "beds": len(hub.bed_names()),
            "websocket_clients": hub.n_subscribers,
        }
        if health is not None:
            body.update(health())
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    async def metrics_route(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def list_alarms(request: Request) -> Response:
        q = request.query_params
        priority = q.get("priority") or None
        state = q.get("state") or None
        if priority is not None and priority not in PRIORITIES:
            return _error(400, f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
        if state is not None and state not in STATES:
            return _error(400, f"state must be one of {', '.join(STATES)}, got {state!r}")
        try:
            since = _parse_float(q, "since")
        except ValueError as exc:
            return _error(400, str(exc))
        try:
            limit = int(q.get("limit") or 100)
        except ValueError:
            return _error(400, f"limit must be an integer, got {q['limit']!r}")
        if not 1 <= limit <= MAX_LIMIT:
            return _error(400, f"limit must be 1-{MAX_LIMIT}, got {limit}")
        alarms = desk.list_alarms(
            bed=q.get("bed") or None, priority=priority, state=state, since=since, limit=limit
        )
        return JSONResponse({"alarms": alarms})

    async def get_alarm(request: Request) -> Response:
        alarm = desk.get_alarm(request.path_params["alarm_id"])
        if alarm is None:
            return _error(404, f"no alarm {request.path_params['alarm_id']!r}")
        return JSONResponse(alarm)

    async def ack(request: Request) -> Response:
        alarm_id = request.path_params["alarm_id"]
        by = "dashboard"
        try:
            body = await _read_limited(request, MAX_JSON_BODY)
        except _TooLarge as exc:
            return _error(exc.status, str(exc))
        if body.strip():
            try:
                doc = json.loads(body)
            except (ValueError, RecursionError):
                return _error(400, 'body must be JSON like {"by": "nurse name"} or empty')
            if not isinstance(doc, dict) or not isinstance(doc.get("by", by), str):
                return _error(400, 'body must be JSON like {"by": "nurse name"} or empty')
            by = (doc.get("by") or by).strip()[:80] or by
        outcome, alarm = desk.acknowledge(alarm_id, by)
        if outcome == "unknown":
            return _error(404, f"no open alarm {alarm_id!r}")
        if outcome == "closed":
            return JSONResponse(
                {"error": f"alarm {alarm_id!r} has already ended", "alarm": alarm}, status_code=409
            )
        return JSONResponse({"alarm": alarm})

    async def beds(request: Request) -> Response:
        return JSONResponse({"ward": hub.ward, "beds": hub.beds()})

    async def bed(request: Request) -> Response:
        summary = hub.bed_summary(request.path_params["bed"])
        if summary is None:
            return _error(404, f"no bed {request.path_params['bed']!r} in ward {hub.ward!r}")
        return JSONResponse(summary)

    async def beat(request: Request) -> Response:
        bed_name, beat_id = request.path_params["bed"], request.path_params["beat_id"]
        detail = hub.beat_detail(bed_name, beat_id)
        if detail is None:
            return _error(404, f"beat {beat_id!r} of bed {bed_name!r} is not a recent beat")
        return JSONResponse(detail)

    async def bed_report(request: Request) -> Response:
        if report is None:
            return _error(404, "PDF reports are not enabled")
        bed_name = request.path_params["bed"]
        if hub.bed_summary(bed_name) is None and not desk.list_alarms(
            bed=bed_name, priority=None, state=None, since=None, limit=1
        ):
            return _error(404, f"no bed {bed_name!r} in ward {hub.ward!r}")
        try:
            pdf = await asyncio.to_thread(report(bed_name))
        except NotImplementedError as exc:
            return _error(501, str(exc))
        return Response(
            pdf,
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="alarms-{hub.ward}-{bed_name}.pdf"'},
        )

    async def score(request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            m.uploads.labels("bad_file").inc()
            return _error(
                400,
                "send the file as multipart/form-data (field 'file'; "
                "optional fields 'fs' in Hz and 'lead')",
            )
        try:
            raw = await _read_limited(request, MAX_UPLOAD_BODY)
        except _TooLarge as exc:
            m.uploads.labels("too_large" if exc.status == 413 else "bad_file").inc()
            return _error(
                exc.status, f"upload refused: {exc} (files up to {MAX_UPLOAD_BYTES} bytes)"
            )
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        files: dict[str, bytes] = {}
        try:
            async with Request(request.scope, replay).form(
                max_files=8, max_fields=16, max_part_size=MAX_UPLOAD_BYTES
            ) as form:
                for item in form.getlist("file"):
                    if isinstance(item, UploadFile):
                        files[item.filename or "upload.csv"] = await item.read()
                fs = form.get("fs")
                lead = form.get("lead")
        except (HTTPException, ValueError, KeyError) as exc:  # malformed multipart
            m.uploads.labels("bad_file").inc()
            return _error(400, f"the multipart body cannot be read: {exc}")
        try:
            upload = parse_upload(
                files,
                fs if isinstance(fs, str) else None,
                lead=lead if isinstance(lead, str) else None,
            )
        except UploadError as exc:
            m.uploads.labels("bad_file").inc()
            return _error(400, str(exc))
        try:
            result = await asyncio.to_thread(
                _post_json, score_url, upload.score_request(), score_timeout_s, detector_token
            )
        except _DetectorError as exc:
            m.uploads.labels("detector_error").inc()
            return _error(exc.status, str(exc))
        beats = result.get("beats") if isinstance(result, dict) else None
        if not isinstance(beats, list):
            m.uploads.labels("detector_error").inc()
            return _error(502, "the detector's answer has no 'beats' list")
        m.uploads.labels("ok").inc()
        dec = Decimator(upload.fs, UPLOAD_DISPLAY_HZ)
        shown = dec.feed(upload.samples)
        n_anom = sum(1 for b in beats if isinstance(b, dict) and b.get("anomalous"))
        hrs = [b.get("hr_bpm") for b in beats if isinstance(b, dict)]
        hrs = [h for h in hrs if isinstance(h, int | float) and math.isfinite(h)]
        return JSONResponse(
            {
                "name": upload.name,
                "kind": upload.kind,
                "fs": upload.fs,
                "lead": upload.lead,
                "leads": list(upload.leads),
                "n_samples": int(upload.samples.size),
                "duration_s": round(upload.duration_s, 3),
                "signal": {
                    "fs": dec.fs_out,
                    "factor": dec.factor,
                    "y": np.round(shown, 4).tolist(),
                },
                "beats": beats,
                "summary": {
                    "n_beats": len(beats),
                    "n_anomalous": n_anom,
                    "median_hr_bpm": round(float(np.median(hrs)), 1) if hrs else None,
                },
            }
        )

    async def ws(websocket: WebSocket) -> None:
        if not auth.ok(websocket, allow_query=True):  # query: scripts; the page sends its cookie
            m.auth_failures.inc()
            if "websocket.http.response" in websocket.scope.get("extensions", {}):
                await websocket.send_denial_response(
                    _error(401, "missing or wrong token", **{"WWW-Authenticate": "Bearer"})
                )
            else:
                await websocket.close(code=1008)
            return
        await websocket.accept()
        ready = asyncio.Event()
        sub = hub.subscribe(ready.set)
        m.ws_clients.inc()
        reader = asyncio.create_task(_drain_incoming(websocket))
        loop = asyncio.get_running_loop()
        next_heartbeat = loop.time()
        waiter: asyncio.Task[Any] | None = None
        try:
            while not reader.done():
                waiter = asyncio.create_task(ready.wait())
                await asyncio.wait(
                    {waiter, reader},
                    return_when=asyncio.FIRST_COMPLETED,
                    timeout=max(0.0, next_heartbeat - loop.time()),
                )
                waiter.cancel()
                ready.clear()
                if sub.overflowed:
                    m.ws_cut.inc()
                    await websocket.close(code=1013, reason="too slow, reconnect")
                    break
                before = sub.dropped
                for text in sub.drain():
                    await websocket.send_text(text)
                m.ws_dropped.inc(max(0, sub.dropped - before))
                sub.dropped = 0
                if loop.time() >= next_heartbeat:
                    await websocket.send_text(_heartbeat(health))
                    next_heartbeat = loop.time() + HEARTBEAT_S
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:  # also on cancellation at shutdown: leave no task of this client behind
            hub.unsubscribe(sub)
            m.ws_clients.dec()
            if waiter is not None:
                waiter.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/metrics", metrics_route),
        Route("/api/alarms", list_alarms),
        Route("/api/alarms/{alarm_id}", get_alarm),
        Route("/api/alarms/{alarm_id}/ack", ack, methods=["POST"]),
        Route("/api/beds", beds),
        Route("/api/beds/{bed}", bed),
        Route("/api/beds/{bed}/beats/{beat_id}", beat),
        Route("/api/beds/{bed}/report.pdf", bed_report),
        Route("/api/score", score, methods=["POST"]),
        WebSocketRoute("/ws", ws),
        Mount("/static", StaticFiles(directory=DASHBOARD_DIR), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(_Guard, auth=auth, on_refused=m.auth_failures.inc)
    return app


def _heartbeat(health: Callable[[], dict[str, Any]] | None) -> str:
    """The heartbeat frame: the service is alive, and whether its bus connection is up."""
    state = health() if health is not None else {}
    up = state.get("status", "ok") == "ok"
    return json.dumps(
        {
            "type": "heartbeat",
            "t": round(time.time(), 3),
            "bus_connected": up,
            "status": state.get("status", "ok"),
        },
        separators=(",", ":"),
    )


async def _drain_incoming(websocket: WebSocket) -> None:
    """Read (and ignore) client messages until it disconnects; the feed is server -> client."""
    while True:
        msg = await websocket.receive()
        if msg["type"] == "websocket.disconnect":
            return


class _DetectorError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _post_json(url: str, body: dict[str, Any], timeout_s: float, token: str = "") -> Any:
    """POST JSON to the detector; errors become `_DetectorError` with an HTTP status to return."""
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(detail).get("error", detail)
        if 400 <= exc.code < 500:
            raise _DetectorError(
                400, f"the detector refused the signal ({exc.code}): {detail}"
            ) from None
        raise _DetectorError(
            502, f"the detector failed while scoring ({exc.code}): {detail}"
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise _DetectorError(502, f"the detector at {url} cannot be reached: {exc}") from None
    except ValueError:
        raise _DetectorError(502, "the detector's answer is not JSON") from None
