"""`/api/alarms`: list, read and acknowledge alarms through the `AlarmDesk` (the core).

Every route first waits until the changes committed so far are stored (`when_stored`), so what
it reads from the store is up to date, and an acknowledgement is durable before its 200.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alerting.alarms import AlarmQuery, AlarmState, Priority
from alerting.auth import error_response
from alerting.http_body import BodyRefused, query_float, read_limited

PRIORITIES = tuple(p.value for p in Priority)
STATES = (*(s.value for s in AlarmState), "open")
MAX_LIMIT = 1000
# A JSON body (acknowledgement) larger than this is refused while it streams in.
MAX_JSON_BODY = 64 * 1024
_ACK_BODY = 'body must be JSON like {"by": "nurse name"} or empty'


class AlarmDesk(Protocol):
    """What the API needs from the alarm side (implemented by `AlertingCore`)."""

    def list_alarms(self, query: AlarmQuery) -> list[dict[str, Any]]:
        """Alarms newest first, as `Alarm.to_dict()`; state "open" means not ended."""
        ...

    def get_alarm(self, alarm_id: str) -> dict[str, Any] | None: ...

    def acknowledge(self, alarm_id: str, by: str) -> tuple[str, dict[str, Any] | None]:
        """Ack through the policy, then store, metrics and broadcast.

        Returns ("ok", alarm), ("unknown", None) or ("closed", alarm) for an ended alarm.
        """
        ...

    def when_stored(self, then: Callable[[], None]) -> None:
        """Call `then` (on the loop) once every change committed so far is stored."""
        ...


async def stored(desk: AlarmDesk) -> None:
    """Wait until every alarm change committed so far is in the store."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finish() -> None:
        if not done.done():  # not cancelled meanwhile (the client left)
            done.set_result(None)

    desk.when_stored(finish)
    await done


def alarm_routes(desk: AlarmDesk) -> list[Route]:
    """The alarm routes of the API, on `desk`."""

    async def list_alarms(request: Request) -> Response:
        try:
            query = _list_query(request)
        except ValueError as exc:
            return error_response(400, str(exc))
        await stored(desk)
        return JSONResponse({"alarms": desk.list_alarms(query)})

    async def get_alarm(request: Request) -> Response:
        await stored(desk)
        alarm = desk.get_alarm(request.path_params["alarm_id"])
        if alarm is None:
            return error_response(404, f"no alarm {request.path_params['alarm_id']!r}")
        return JSONResponse(alarm)

    async def ack(request: Request) -> Response:
        alarm_id = request.path_params["alarm_id"]
        try:
            by = await _ack_by(request)
        except BodyRefused as exc:
            return error_response(exc.status, str(exc))
        except ValueError:
            return error_response(400, _ACK_BODY)
        outcome, alarm = desk.acknowledge(alarm_id, by)
        await stored(desk)  # the acknowledgement is durable before the answer
        if outcome == "unknown":
            return error_response(404, f"no open alarm {alarm_id!r}")
        if outcome == "closed":
            return JSONResponse(
                {"error": f"alarm {alarm_id!r} has already ended", "alarm": alarm}, status_code=409
            )
        return JSONResponse({"alarm": alarm})

    return [
        Route("/api/alarms", list_alarms),
        Route("/api/alarms/{alarm_id}", get_alarm),
        Route("/api/alarms/{alarm_id}/ack", ack, methods=["POST"]),
    ]


def _list_query(request: Request) -> AlarmQuery:
    """The filters of `GET /api/alarms`, validated (ValueError with the message to answer)."""
    q = request.query_params
    priority = q.get("priority") or None
    state = q.get("state") or None
    if priority is not None and priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    since = query_float(q, "since")
    try:
        limit = int(q.get("limit") or 100)
    except ValueError:
        raise ValueError(f"limit must be an integer, got {q['limit']!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1-{MAX_LIMIT}, got {limit}")
    return AlarmQuery(q.get("bed") or None, priority, state, since, limit)


async def _ack_by(request: Request) -> str:
    """Who acknowledges: the body's `by` (trimmed, 80 characters at most) or "dashboard";
    ValueError for a body that is not such JSON, `BodyRefused` for one too large or slow."""
    by = "dashboard"
    body = await read_limited(request, MAX_JSON_BODY)
    if not body.strip():
        return by
    try:
        doc = json.loads(body)
    except RecursionError:
        raise ValueError(_ACK_BODY) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("by", by), str):
        raise ValueError(_ACK_BODY)
    return (doc.get("by") or by).strip()[:80] or by
