"""Prematurity against a long horizon: the RR of a beat against the bed's long recent RRs.

`ecgcommon.rhythm`'s `rr_ratio` compares a beat's RR with the *local* rhythm. When premature
beats are the majority (frequent atrial ectopy in sinus bradycardia), the local rhythm is
theirs and they come "on time". The longest RR intervals of the last `LONG_HISTORY` beats
still hold the underlying sinus rhythm, so `long_ratio` = RR / the `LONG_QUANTILE` quantile of
the last LONG_HISTORY RR intervals is low for such beats. Causal and label-free: a beat is
described before its RR is learnt. No fitted threshold (the network weighs it).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence

import numpy as np

LONG_HISTORY = 64  # RR intervals remembered per bed
LONG_QUANTILE = 0.9  # the reference: the long end of the recent RR intervals
LONG_FEATURES = ("long_ratio",)  # appended to the classifier's features


class LongRR:
    """The last LONG_HISTORY RR intervals of one bed, kept sorted for the quantile."""

    def __init__(self, size: int = LONG_HISTORY) -> None:
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []
        self._size = size

    def __len__(self) -> int:
        return len(self._fifo)

    def ratio_then_add(self, rr_s: float) -> float:
        """RR / the long quantile of the RR intervals before it (1.0 when either is unknown);
        then learn it. A non-finite RR (the sequence restarted) clears the history."""
        if not math.isfinite(rr_s) or rr_s <= 0.0:
            self._fifo.clear()
            self._sorted.clear()
            return 1.0
        n = len(self._sorted)
        out = 1.0
        if n >= 8:
            ref = self._sorted[min(n - 1, int(LONG_QUANTILE * n))]
            out = rr_s / ref
        self._fifo.append(rr_s)
        bisect.insort(self._sorted, rr_s)
        if len(self._fifo) > self._size:
            del self._sorted[bisect.bisect_left(self._sorted, self._fifo.popleft())]
        return out


def long_columns(memories: Sequence[LongRR], rr_s: np.ndarray) -> np.ndarray:
    """(n, 1) LONG_FEATURES of beats in time order within each bed (clipped to 0..3); learns."""
    out = [m.ratio_then_add(float(r)) for m, r in zip(memories, rr_s.tolist(), strict=True)]
    return np.clip(np.array(out, dtype=np.float64), 0.0, 3.0).reshape(-1, 1)
