"""How a service's main thread learns to stop: one event, set on SIGINT or SIGTERM.

Shared by the services' `main()` so each stops the same way (log the signal, finish the work
in hand, exit 0) without a copy of the handler in every service.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_on_signals(
    log: logging.Logger, signals: Iterable[signal.Signals] = STOP_SIGNALS
) -> threading.Event:
    """An event set (and the signal logged) when the process receives one of `signals`.

    Call it from the main thread: Python runs signal handlers there and only there.
    """
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    for s in signals:
        signal.signal(s, _stop)
    return stop
