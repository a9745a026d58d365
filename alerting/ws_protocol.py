"""uvicorn's sans-I/O websocket protocol, made safe to shut down while a client is leaving.

On server shutdown uvicorn sends every open websocket a close frame (1012). If the client's
own close frame has already arrived (websockets answered it, the connection is CLOSING) but
the transport has not reported `connection_lost` yet, that `send_close` raises
`InvalidState('connection is closing')` out of `Server.shutdown()`, and so out of
`AlertingService.run()`. A connection in that state has nothing left to say: close its
transport and tell the app it is gone.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State


class ShutdownSafeWebSocketProtocol(WebSocketsSansIOProtocol):
    """`WebSocketsSansIOProtocol` whose `shutdown()` tolerates a closing handshake under way."""

    def shutdown(self) -> None:
        """Close 1012 an open websocket; only drop one whose closing handshake has begun."""
        if self.handshake_complete and not self.close_sent and self.conn.state is not State.OPEN:
            self.stop_keepalive()
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1012})
            self.transport.close()
            return
        super().shutdown()
