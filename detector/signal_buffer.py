"""The newest samples of one lead, appended chunk by chunk without rebuilding the array.

One preallocated float64 array with a start offset: `append` writes after the newest sample,
`drop` moves the start, and only when the free tail is used up are the kept samples moved to
the front (the array doubling when they would fill more than three quarters of it). A sample is
so copied at most three times on average, whatever the chunk size, where `np.concatenate` per
chunk copied the whole kept history and allocated a new array every time.
"""

from __future__ import annotations

import numpy as np


class SignalBuffer:
    """Samples `start .. end - 1` (absolute indices) of one lead; `view()` shows them."""

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 samples, got {capacity}")
        self._data = np.empty(capacity, dtype=np.float64)
        self._head = 0  # array index of sample `start`
        self._tail = 0  # array index one past the newest sample
        self.start = 0  # absolute index of the oldest kept sample

    def __len__(self) -> int:
        return self._tail - self._head

    @property
    def end(self) -> int:
        """Absolute index one past the newest sample."""
        return self.start + len(self)

    def reset(self, start: int = 0) -> None:
        """Forget every sample; the next one appended has index `start`."""
        self._head = self._tail = 0
        self.start = start

    def append(self, x: np.ndarray) -> None:
        """Add samples after the newest one."""
        n = len(x)
        if self._tail + n > len(self._data):
            self._make_room(n)
        self._data[self._tail : self._tail + n] = x
        self._tail += n

    def _make_room(self, n: int) -> None:
        """Move the kept samples to the front; grow first if they and `n` more would fill more
        than three quarters of the array (the next move is a quarter array of appends away)."""
        size = len(self)
        capacity = len(self._data)
        while size + n > capacity * 3 // 4:
            capacity *= 2
        kept = self._data[self._head : self._tail]
        if capacity != len(self._data):
            grown = np.empty(capacity, dtype=np.float64)
            grown[:size] = kept
            self._data = grown
        else:
            self._data[:size] = kept  # numpy copies overlapping ranges correctly
        self._head, self._tail = 0, size

    def drop(self, n: int) -> None:
        """Forget the `n` oldest samples."""
        if not 0 <= n <= len(self):
            raise ValueError(f"cannot drop {n} of {len(self)} samples")
        self._head += n
        self.start += n

    def view(self) -> np.ndarray:
        """The kept samples, oldest first (a view: valid until the next `append`)."""
        return self._data[self._head : self._tail]
