"""`/api/beds`: the ward's beds from the `WardHub`, one beat's detail, a bed's PDF report."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alerting.alarms import AlarmQuery
from alerting.api_alarms import AlarmDesk, stored
from alerting.auth import error_response
from alerting.hub import WardHub

# report(bed) collects a bed's report now (on the loop) and returns what renders it (a thread)
ReportMaker = Callable[[str], Callable[[], bytes]]


def bed_routes(hub: WardHub, desk: AlarmDesk, report: ReportMaker | None) -> list[Route]:
    """The bed routes of the API; `report` None answers the PDF route 404."""

    async def beds(request: Request) -> Response:
        return JSONResponse({"ward": hub.ward, "beds": hub.beds()})

    async def bed(request: Request) -> Response:
        summary = hub.bed_summary(request.path_params["bed"])
        if summary is None:
            return error_response(
                404, f"no bed {request.path_params['bed']!r} in ward {hub.ward!r}"
            )
        return JSONResponse(summary)

    async def beat(request: Request) -> Response:
        bed_name, beat_id = request.path_params["bed"], request.path_params["beat_id"]
        detail = hub.beat_detail(bed_name, beat_id)
        if detail is None:
            return error_response(404, f"beat {beat_id!r} of bed {bed_name!r} is not a recent beat")
        return JSONResponse(detail)

    async def bed_report(request: Request) -> Response:
        if report is None:
            return error_response(404, "PDF reports are not enabled")
        bed_name = request.path_params["bed"]
        await stored(desk)  # the report reads the store
        if hub.bed_summary(bed_name) is None and not desk.list_alarms(
            AlarmQuery(bed=bed_name, limit=1)
        ):
            return error_response(404, f"no bed {bed_name!r} in ward {hub.ward!r}")
        try:
            pdf = await asyncio.to_thread(report(bed_name))
        except NotImplementedError as exc:
            return error_response(501, str(exc))
        return Response(
            pdf,
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="alarms-{hub.ward}-{bed_name}.pdf"'},
        )

    return [
        Route("/api/beds", beds),
        Route("/api/beds/{bed}", bed),
        Route("/api/beds/{bed}/beats/{beat_id}", beat),
        Route("/api/beds/{bed}/report.pdf", bed_report),
    ]
