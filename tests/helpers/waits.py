"""Waits on events or on real state, with a deadline and an error naming what was awaited.

Tests synchronise on what they can observe (a message arrived, a counter moved, a port accepts)
rather than on fixed sleeps, so they are as fast as the system and fail with a clear message.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

POLL_S = 0.02  # between two looks at polled state: short, so waits end soon after the change


class WaitTimeout(AssertionError):
    """A wait ran past its deadline; the message names what was awaited and the last value."""


def _fail(what: str, timeout: float, last: object, detail: Callable[[], str] | None) -> WaitTimeout:
    extra = detail() if detail is not None else ""
    msg = f"timed out after {timeout:g} s waiting for {what} (last value: {last!r})"
    return WaitTimeout(msg + (f"\n{extra}" if extra else ""))


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    what: str = "the condition",
    *,
    interval: float = POLL_S,
    wake: threading.Event | None = None,
    check: Callable[[], None] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll `predicate()` until it returns something truthy and return that value.

    `wake` (set by whoever changes the state) ends an interval early; `check` runs before each
    look and may raise to stop at once (a child process died); exceptions of the `ignore` types
    count as "not yet" (a server still starting); `detail()` is appended to the timeout error
    (logs). Raises `WaitTimeout` naming `what` once `timeout` seconds have passed.
    """
    pause = wake if wake is not None else threading.Event()
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        if check is not None:
            check()
        try:
            value = predicate()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        left = deadline - time.monotonic()
        if left <= 0:
            raise _fail(what, timeout, last, detail)
        if pause.wait(min(interval, left)) and wake is not None:
            wake.clear()


def wait_event(event: threading.Event, timeout: float, what: str) -> None:
    """Block until `event` is set; raise `WaitTimeout` naming `what` if it is not in time."""
    if not event.wait(timeout):
        raise _fail(what, timeout, False, None)


async def wait_until_async(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    what: str = "the condition",
    *,
    interval: float = POLL_S,
) -> T:
    """`wait_until` inside a running event loop: the loop runs between two looks at the state."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise _fail(what, timeout, value, None)
        await asyncio.sleep(min(interval, left))  # the poll interval, not a synchronisation


class Inbox(Generic[T]):
    """A thread-safe list that callbacks append to and tests wait on without polling: each
    `put` wakes the waiters, which re-check their predicate over the items received so far."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._changed = threading.Condition()  # re-entrant: predicates may read the inbox

    @property
    def lock(self) -> threading.Condition:
        """Held while items change: hold it to keep state derived from them consistent."""
        return self._changed

    def put(self, *items: T) -> None:
        with self._changed:
            self._items.extend(items)
            self._changed.notify_all()

    def extend(self, items: Iterable[T]) -> None:
        self.put(*items)

    def items(self) -> list[T]:
        """A snapshot of everything received so far."""
        with self._changed:
            return list(self._items)

    def __len__(self) -> int:
        with self._changed:
            return len(self._items)

    def wait_for(self, predicate: Callable[[list[T]], R | None], timeout: float, what: str) -> R:
        """Block until `predicate(items)` is truthy; return its value or raise `WaitTimeout`."""
        with self._changed:
            value = predicate(self._items)
            if not value:
                self._changed.wait_for(lambda: predicate(self._items), timeout)
                value = predicate(self._items)
            if not value:
                raise _fail(what, timeout, f"{len(self._items)} items", None)
            return value

    def wait_count(
        self, n: int, timeout: float, what: str, where: Callable[[T], object] | None = None
    ) -> list[T]:
        """Block until at least `n` items (those for which `where` holds) have arrived."""

        def enough(items: list[T]) -> list[T] | None:
            got = [i for i in items if where is None or where(i)]
            return got if len(got) >= n else None

        return self.wait_for(enough, timeout, what)
