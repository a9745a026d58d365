"""Who writes the alarm store, and on which thread.

The store syncs every transaction to disk (`synchronous=FULL`), which can take tens of
milliseconds; on the event loop that would stall the websocket fan-out and the bus. The service
therefore writes through a `ThreadedWriter`: one thread owns the writes and runs them in the
order they were submitted, then hands each outcome back to the loop (`deliver`, e.g.
`loop.call_soon_threadsafe`), so the core broadcasts a change only once it is stored. Tests and
offline benches use the `InlineWriter`, which writes at once on the caller's thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Protocol

from alerting.alarms import AlarmChange
from alerting.store import AlarmStore

log = logging.getLogger(__name__)

# What a write's `then` receives: None once stored, or the exception that refused it.
Done = Callable[[BaseException | None], None]


class ChangeWriter(Protocol):
    """Stores batches of alarm changes in the order submitted."""

    def submit(self, changes: list[AlarmChange], then: Done) -> None:
        """Store `changes` (one transaction), then call `then` on the core's thread."""
        ...

    def when_done(self, then: Callable[[], None]) -> None:
        """Call `then` (on the core's thread) once every batch submitted so far is stored and
        its own `then` has run: read-your-writes for the API (an acknowledgement is durable
        before its 200)."""
        ...

    def close(self) -> None:
        """Store everything still queued, then stop; later batches are written at once."""
        ...


class InlineWriter:
    """Writes on the caller's thread before returning (tests, benches, offline chains)."""

    def __init__(self, store: AlarmStore) -> None:
        self.store = store

    def submit(self, changes: list[AlarmChange], then: Done) -> None:
        then(_apply(self.store, changes))

    def when_done(self, then: Callable[[], None]) -> None:
        then()

    def close(self) -> None:
        pass


class ThreadedWriter:
    """One writer thread: the store's writes in submission order, off the event loop.

    `deliver(fn)` runs `fn` on the core's thread (`loop.call_soon_threadsafe`); results come back
    in the order of their writes. `close()` drains the queue, so nothing submitted is lost at
    shutdown.
    """

    def __init__(self, store: AlarmStore, deliver: Callable[[Callable[[], None]], object]) -> None:
        self.store = store
        self._deliver = deliver
        # jobs run in order on the writer thread; None stops it
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()  # submit vs close: nothing is queued after the stop mark
        self._thread = threading.Thread(target=self._run, name="alarm-store-writer", daemon=True)
        self._thread.start()

    def submit(self, changes: list[AlarmChange], then: Done) -> None:
        with self._lock:
            if not self._closed:
                self._queue.put(lambda: self._write(changes, then))
                return
        then(_apply(self.store, changes))  # after close (shutdown): write at once

    def when_done(self, then: Callable[[], None]) -> None:
        with self._lock:
            if not self._closed:
                self._queue.put(lambda: self._hand_back(then))
                return
        then()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    @property
    def pending(self) -> int:
        """Batches (and barriers) queued and not yet written: for tests and diagnostics."""
        return self._queue.qsize()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                job()
            except Exception:  # a bug must not stop every later write
                log.exception("alarm store writer job failed")

    def _write(self, changes: list[AlarmChange], then: Done) -> None:
        err = _apply(self.store, changes)
        self._hand_back(lambda: then(err))

    def _hand_back(self, fn: Callable[[], None]) -> None:
        try:
            self._deliver(fn)
        except RuntimeError:  # the loop is closed (shutdown): the write itself is done
            log.debug("writer: result not delivered, the loop is closed")


def _apply(store: AlarmStore, changes: list[AlarmChange]) -> BaseException | None:
    try:
        store.apply(changes)
    except Exception as exc:  # a failing disk must not hide alarms: the core counts it
        return exc
    return None
