"""Cross-bed micro-batching with a bounded delay (pure code, the clock is passed in).

Items wait until `max_batch` of them are there or the oldest has waited `max_wait_s`, whichever
comes first, so batch size buys inference efficiency while latency stays bounded.
"""

from __future__ import annotations

import math
from typing import Generic, TypeVar

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """Collects items into batches of at most `max_batch`, none older than `max_wait_s`."""

    def __init__(self, max_batch: int, max_wait_s: float) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not (math.isfinite(max_wait_s) and max_wait_s >= 0):
            raise ValueError(f"max_wait_s must be >= 0 seconds, got {max_wait_s}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._items: list[T] = []
        self._oldest: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, items: list[T], now: float) -> list[list[T]]:
        """Queue items that became ready at `now`; returns the batches that are now full."""
        if not items:
            return []
        if self._oldest is None:
            self._oldest = now
        self._items.extend(items)
        full = []
        while len(self._items) >= self.max_batch:
            full.append(self._items[: self.max_batch])
            self._items = self._items[self.max_batch :]
        if not self._items:
            self._oldest = None
        elif full:
            self._oldest = now  # every older item went into the first full batch
        return full

    @property
    def deadline(self) -> float | None:
        """When the queued items must be flushed, or None when nothing waits."""
        return None if self._oldest is None else self._oldest + self.max_wait_s

    def poll(self, now: float) -> list[T]:
        """The waiting items if the oldest is due at `now` (else an empty list)."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        return self.flush()

    def flush(self) -> list[T]:
        """Everything queued, now."""
        out, self._items, self._oldest = self._items, [], None
        return out
