"""`POST /api/score`: an uploaded ECG file, parsed by `ecgcommon.upload` and scored by the
detector's `POST /v1/score`, answered with its beats and a decimated signal for display."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import urllib.error
import urllib.request
from typing import Any

import numpy as np
from prometheus_client import Counter
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message

from alerting.auth import error_response
from alerting.http_body import BodyRefused, read_limited
from alerting.hub import Decimator
from ecgcommon.upload import MAX_UPLOAD_BYTES, Upload, UploadError, parse_upload

# Uploaded signals are sent back for display at about this rate (the beats keep full precision).
UPLOAD_DISPLAY_HZ = 180.0
# An upload (multipart: the file plus a few fields) larger than this is refused while streaming.
MAX_UPLOAD_BODY = MAX_UPLOAD_BYTES + 65536
_NOT_MULTIPART = (
    "send the file as multipart/form-data (field 'file'; optional fields 'fs' in Hz and 'lead')"
)


class DetectorError(Exception):
    """The detector refused (400) or failed (502) an upload; `status` is what to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def score_routes(
    detector_url: str, uploads: Counter, *, timeout_s: float = 30.0, token: str = ""
) -> list[Route]:
    """The upload route; `uploads` counts outcomes (ok, bad_file, too_large, detector_error);
    `token` is sent to the detector."""
    score_url = detector_url.rstrip("/") + "/v1/score"

    async def score(request: Request) -> Response:
        try:
            upload = await _read_upload(request)
        except BodyRefused as exc:
            uploads.labels("too_large" if exc.status == 413 else "bad_file").inc()
            return error_response(exc.status, str(exc))
        try:
            result = await asyncio.to_thread(
                post_json, score_url, upload.score_request(), timeout_s, token
            )
        except DetectorError as exc:
            uploads.labels("detector_error").inc()
            return error_response(exc.status, str(exc))
        beats = result.get("beats") if isinstance(result, dict) else None
        if not isinstance(beats, list):
            uploads.labels("detector_error").inc()
            return error_response(502, "the detector's answer has no 'beats' list")
        uploads.labels("ok").inc()
        return JSONResponse(_scored(upload, beats))

    return [Route("/api/score", score, methods=["POST"])]


async def _read_upload(request: Request) -> Upload:
    """The multipart upload, parsed; `BodyRefused` (its status, 413 = too large) otherwise."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BodyRefused(_NOT_MULTIPART, 400)
    try:
        raw = await read_limited(request, MAX_UPLOAD_BODY)
    except BodyRefused as exc:
        raise BodyRefused(
            f"upload refused: {exc} (files up to {MAX_UPLOAD_BYTES} bytes)", exc.status
        ) from None
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
        raise BodyRefused(f"the multipart body cannot be read: {exc}", 400) from None
    try:
        return parse_upload(
            files,
            fs if isinstance(fs, str) else None,
            lead=lead if isinstance(lead, str) else None,
        )
    except UploadError as exc:
        raise BodyRefused(str(exc), 400) from None


def _scored(upload: Upload, beats: list[Any]) -> dict[str, Any]:
    """The answer: the upload's description, its signal decimated for display, the beats."""
    dec = Decimator(upload.fs, UPLOAD_DISPLAY_HZ)
    shown = dec.feed(upload.samples)
    n_anom = sum(1 for b in beats if isinstance(b, dict) and b.get("anomalous"))
    given = [b.get("hr_bpm") for b in beats if isinstance(b, dict)]
    hrs = [float(h) for h in given if isinstance(h, int | float) and math.isfinite(h)]
    return {
        "name": upload.name,
        "kind": upload.kind,
        "fs": upload.fs,
        "lead": upload.lead,
        "leads": list(upload.leads),
        "n_samples": int(upload.samples.size),
        "duration_s": round(upload.duration_s, 3),
        "signal": {"fs": dec.fs_out, "factor": dec.factor, "y": np.round(shown, 4).tolist()},
        "beats": beats,
        "summary": {
            "n_beats": len(beats),
            "n_anomalous": n_anom,
            "median_hr_bpm": round(float(np.median(hrs)), 1) if hrs else None,
        },
    }


def post_json(url: str, body: dict[str, Any], timeout_s: float, token: str = "") -> Any:
    """POST JSON to the detector; errors become `DetectorError` with an HTTP status to return."""
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
            raise DetectorError(
                400, f"the detector refused the signal ({exc.code}): {detail}"
            ) from None
        raise DetectorError(
            502, f"the detector failed while scoring ({exc.code}): {detail}"
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DetectorError(502, f"the detector at {url} cannot be reached: {exc}") from None
    except ValueError:
        raise DetectorError(502, "the detector's answer is not JSON") from None
