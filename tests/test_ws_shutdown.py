"""Server shutdown while a dashboard client is leaving: uvicorn's websocket protocol raised
`InvalidState('connection is closing')` out of `Server.shutdown()` (and so out of
`AlertingService.run()`) for a connection whose client close frame had been answered but whose
transport had not reported `connection_lost` yet. The protocol the service uses must not."""

from __future__ import annotations

import asyncio
import base64
import os
import struct

import pytest
import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import InvalidState
from websockets.protocol import State

from alerting.ws_protocol import ShutdownSafeWebSocketProtocol
from tests.helpers.waits import wait_until_async


class _Transport(asyncio.Transport):
    """Records writes; `close()` does not call back `connection_lost` (it comes later)."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name, default)

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True


async def _app(scope, receive, send) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


def _client_close_frame() -> bytes:
    payload = struct.pack("!H", 1001)
    mask = os.urandom(4)
    return (
        bytes([0x88, 0x80 | len(payload)])
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


async def _closing_connection(cls: type[WebSocketsSansIOProtocol]) -> WebSocketsSansIOProtocol:
    cfg = uvicorn.Config(_app, ws=cls, lifespan="off", log_level="warning")
    cfg.load()
    proto = cls(cfg, ServerState(), app_state={})
    proto.connection_made(_Transport())
    key = base64.b64encode(os.urandom(16)).decode()
    proto.data_received(
        (
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await wait_until_async(lambda: proto.handshake_complete, 1.0, "the websocket handshake")
    assert proto.handshake_complete
    proto.data_received(_client_close_frame())  # the client leaves; websockets answers it
    assert proto.conn.state is State.CLOSING
    return proto


def test_the_stock_protocol_raises_on_a_closing_connection() -> None:
    """The race itself (so the test below can fail)."""

    async def main() -> None:
        proto = await _closing_connection(WebSocketsSansIOProtocol)
        with pytest.raises(InvalidState):
            proto.shutdown()

    asyncio.run(main())


def test_shutdown_of_a_closing_websocket_does_not_raise() -> None:
    async def main() -> None:
        proto = await _closing_connection(ShutdownSafeWebSocketProtocol)
        proto.shutdown()
        assert proto.transport.is_closing()

        def others_done() -> bool:  # the app saw the disconnect and returned
            return all(t.done() for t in asyncio.all_tasks() if t is not asyncio.current_task())

        await wait_until_async(others_done, 1.0, "the app to return")
        assert others_done()

    asyncio.run(main())
