"""The ward dashboard: the page, its static assets and the websocket feed from the `WardHub`.

The feed sends the hub's frames as they come (a client too slow for its queue is cut, 1013) and
a heartbeat every HEARTBEAT_S with the service's bus state; the page shows OFFLINE when
heartbeats stop (3 s) or say the bus is down, never stale LIVE values (docs/faults.md). The
token is checked in front of it (`alerting/auth.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from alerting.hub import Subscriber, WardHub
from alerting.metrics import ServerMetrics

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
HEARTBEAT_S = 1.0
Health = Callable[[], dict[str, Any]]


def dashboard_routes(hub: WardHub, m: ServerMetrics, health: Health | None) -> list[BaseRoute]:
    """The page (`/`), its assets (`/static`) and the websocket feed (`/ws`)."""

    async def index(request: Request) -> Response:
        return FileResponse(DASHBOARD_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        ready = asyncio.Event()
        sub = hub.subscribe(ready.set)
        m.ws_clients.inc()
        reader = asyncio.create_task(_drain_incoming(websocket))
        try:
            await _feed(websocket, sub, ready, reader, m, health)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:  # also on cancellation at shutdown: leave no task of this client behind
            hub.unsubscribe(sub)
            m.ws_clients.dec()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    return [
        Route("/", index),
        WebSocketRoute("/ws", ws),
        Mount("/static", StaticFiles(directory=DASHBOARD_DIR), name="static"),
    ]


async def _feed(
    websocket: WebSocket,
    sub: Subscriber,
    ready: asyncio.Event,
    reader: asyncio.Task[None],
    m: ServerMetrics,
    health: Health | None,
) -> None:
    """Send the subscriber's frames and the heartbeats until the client leaves or is cut."""
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
                return
            before = sub.dropped
            for text in sub.drain():
                await websocket.send_text(text)
            m.ws_dropped.inc(max(0, sub.dropped - before))
            sub.dropped = 0
            if loop.time() >= next_heartbeat:
                await websocket.send_text(_heartbeat(health))
                next_heartbeat = loop.time() + HEARTBEAT_S
    finally:
        if waiter is not None:
            waiter.cancel()


def _heartbeat(health: Health | None) -> str:
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
