"""The one auth check of the alerting HTTP side, and the security headers.

`AuthGuard` is ASGI middleware in front of every route, HTTP and websocket: `Authorization:
Bearer <token>`, or the dashboard's session cookie (derived from the token, so the token itself
is never stored in the browser); `?token=` only where a header cannot be sent (the websocket,
the PDF report link). The page swaps a `?token=` for that cookie (HttpOnly, SameSite=Strict)
with a redirect, so the token leaves the address bar and the history. /metrics also takes the
metrics token. /healthz and the static assets are public. Every HTTP response carries the
security headers (CSP self only, no framing, nosniff, no referrer).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from urllib.parse import quote

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

SESSION_COOKIE = "ecg_session"
PUBLIC_PATHS = ("/healthz",)
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


def error_response(status: int, message: str, **headers: str) -> JSONResponse:
    """The API's error body: `{"error": message}`."""
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def refused() -> JSONResponse:
    """401 for a missing or wrong token."""
    return error_response(401, "missing or wrong token", **{"WWW-Authenticate": "Bearer"})


class TokenAuth:
    """Constant-time token checks: a bearer token, the dashboard's session cookie or, where
    allowed, `?token=`."""

    def __init__(self, token: str, metrics_token: str = "") -> None:
        if not token:
            raise ValueError("token must be non-empty")
        self._token = token.encode()
        self._metrics = metrics_token.encode() if metrics_token else None
        self.session = hmac.new(self._token, b"ecg-dashboard-session", hashlib.sha256).hexdigest()

    def token_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "replace"), self._token)

    def ok(self, conn: HTTPConnection, allow_query: bool, metrics: bool = False) -> bool:
        """Whether the request or websocket carries the token (or, on /metrics, the metrics
        token), the session cookie, or (`allow_query`) a `?token=`."""
        bearer = _bearer(conn)
        if bearer:
            if metrics and self._metrics is not None and _same(bearer, self._metrics):
                return True
            return self.token_ok(bearer)
        cookie = conn.cookies.get(SESSION_COOKIE, "")
        if cookie and _same(cookie, self.session.encode()):
            return True
        query = conn.query_params.get("token", "") if allow_query else ""
        return bool(query) and self.token_ok(query)


class AuthGuard:
    """ASGI middleware in front of every route: the token check (one place for all routes and
    the websocket), the `?token=` -> session cookie swap of the page, and the security headers."""

    def __init__(self, app: ASGIApp, auth: TokenAuth, on_refused: Callable[[], None]) -> None:
        self.app = app
        self.auth = auth
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
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
            await refused()(scope, receive, send_headers)
            return
        await self.app(scope, receive, send_headers)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The websocket takes `?token=` too (scripts; the page sends its cookie); a refused one
        gets a 401 denial response where the server supports it, else close 1008."""
        ws = WebSocket(scope, receive, send)
        if self.auth.ok(ws, allow_query=True):
            await self.app(scope, receive, send)
            return
        self.on_refused()
        if "websocket.http.response" in scope.get("extensions", {}):
            await ws.send_denial_response(refused())
        else:
            await ws.close(code=1008)

    async def _swap(self, conn: HTTPConnection, scope: Scope, receive: Receive, send: Send) -> None:
        """`/?token=...`: a right token becomes the session cookie and the browser is sent to
        the same page without it (303), so it stays out of the address bar and history."""
        if not self.auth.token_ok(conn.query_params.get("token", "")):
            self.on_refused()
            resp: Response = refused()
        else:
            rest = [(k, v) for k, v in conn.query_params.multi_items() if k != "token"]
            query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in rest)
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


def _bearer(conn: HTTPConnection) -> str:
    header = conn.headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


def _same(given: str, expected: bytes) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected)
