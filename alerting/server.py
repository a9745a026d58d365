"""HTTP API, websocket feed and dashboard of the alerting service (Starlette, served by uvicorn).

Thin adapter, assembled here from small routers: ward state comes from the sans-I/O `WardHub`
(`api_beds.py`, `api_dashboard.py`), alarms from an `AlarmDesk`, the core (`api_alarms.py`),
uploads are parsed by `ecgcommon.upload` and scored by the detector's `POST /v1/score`
(`api_score.py`). Every route except /healthz and the static assets needs the token, checked in
one place in front of every route and the websocket (`auth.AuthGuard`), which also adds the
security headers. Bodies are read with a size limit while they stream in (`http_body.py`);
malformed ones get a 4xx.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from alerting.api_alarms import MAX_JSON_BODY, AlarmDesk, alarm_routes
from alerting.api_beds import ReportMaker, bed_routes
from alerting.api_dashboard import dashboard_routes
from alerting.api_score import MAX_UPLOAD_BODY, score_routes
from alerting.auth import SECURITY_HEADERS, SESSION_COOKIE, AuthGuard, TokenAuth
from alerting.hub import WardHub
from alerting.metrics import ServerMetrics

__all__ = [
    "MAX_JSON_BODY",
    "MAX_UPLOAD_BODY",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "AlarmDesk",
    "ServerMetrics",
    "create_app",
]


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
    report: ReportMaker | None = None,
    metrics_token: str = "",
    detector_token: str = "",
) -> Starlette:
    """The Starlette app. `health()` adds fields to /healthz (e.g. the MQTT connection);
    `report(bed)` collects a bed's PDF alarm report and returns the function that renders it
    (run in a worker thread; NotImplementedError -> 501). `metrics_token` is also accepted on
    /metrics; `detector_token` is sent to the detector's `POST /v1/score`."""
    auth = TokenAuth(token, metrics_token)
    m = metrics or ServerMetrics(registry)
    routes: list[BaseRoute] = [
        *_ops_routes(hub, registry, health),
        *alarm_routes(desk),
        *bed_routes(hub, desk, report),
        *score_routes(detector_url, m.uploads, timeout_s=score_timeout_s, token=detector_token),
        *dashboard_routes(hub, m, health),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(AuthGuard, auth=auth, on_refused=m.auth_failures.inc)
    return app


def _ops_routes(
    hub: WardHub, registry: CollectorRegistry, health: Callable[[], dict[str, Any]] | None
) -> list[Route]:
    """/healthz (public: 503 while degraded) and /metrics (Prometheus text)."""

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

    return [Route("/healthz", healthz), Route("/metrics", metrics_route)]
