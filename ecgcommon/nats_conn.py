"""One NATS connection set-up for every service on the distributed bus (`ECG_BUS=nats://…`).

The client is told to reconnect for ever, quickly (0.5 s), and to notice a dead server within
a few seconds (pings every 2 s, 2 unanswered): a killed node must cost a client seconds, not the
library's minutes. The first connection is retried every second until it works, since the
servers may start after the service. `nats` is imported here only, when a service uses the bus.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

RETRY_S = 1.0  # between two attempts at the first connection


async def connect(
    servers: list[str],
    name: str,
    log: logging.Logger,
    *,
    on_up: Callable[[], None],
    on_down: Callable[[], None],
    stopping: Callable[[], bool] = lambda: False,
) -> Any | None:
    """A client connected to one of `servers`, or None once `stopping()` holds first.

    `on_down` runs when the connection is lost (the client then reconnects by itself) and
    `on_up` when it is back; the caller calls `on_up` itself after this returns, once it has
    set up what it needs (streams, buckets, consumers).
    """
    import nats

    nc: Any = None

    async def disconnected() -> None:
        on_down()
        log.warning("disconnected from the NATS servers; reconnecting")

    async def reconnected() -> None:
        on_up()
        url = getattr(nc, "connected_url", None)
        log.info("reconnected to %s", getattr(url, "netloc", "the NATS servers"))

    async def error(exc: Exception) -> None:
        log.debug("nats: %s", exc)

    while not stopping():
        try:
            nc = await nats.connect(
                servers=servers,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                ping_interval=2,
                max_outstanding_pings=2,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
                allow_reconnect=True,
            )
            return nc
        except Exception as exc:
            log.warning("cannot reach the NATS servers %s (%s); retrying", servers, exc)
            await asyncio.sleep(RETRY_S)
    return None
