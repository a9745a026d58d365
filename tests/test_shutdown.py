"""ecgcommon.shutdown: SIGTERM and SIGINT set the stop event a service's main thread waits on."""

from __future__ import annotations

import logging
import os
import signal

import pytest

from ecgcommon.shutdown import stop_on_signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_sets_the_event_and_is_logged(
    sig: signal.Signals, caplog: pytest.LogCaptureFixture
) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with caplog.at_level(logging.INFO, logger="svc"):
            stop = stop_on_signals(logging.getLogger("svc"))
            assert not stop.is_set()
            os.kill(os.getpid(), sig)  # the handler runs in this (main) thread
            assert stop.wait(5)
        assert f"signal {int(sig)}: stopping" in caplog.text
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
