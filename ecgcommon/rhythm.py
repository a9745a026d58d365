"""Causal RR-interval features, computed the same way offline and live.

`RRTracker` is fed the R-peak sample indices of one patient in time order and returns, for each
beat, features that use only that beat and the beats before it. All features are therefore
available the moment the beat is detected: none needs the next RR interval (which would add about
one beat of latency live).

Features of beat i (RR_i = time from beat i-1 to beat i):
- `rr_s`: RR_i in seconds (the pre-RR).
- `local_rr_s`: the mean of the up-to-`history` (32) RR intervals before RR_i (not including it):
  the running local average. A mean, not a median, so that a patient whose ectopic beats are the
  majority (MIT-BIH 232) still has them measured against the longer sinus intervals.
- `rr_ratio`: RR_i / local_rr_s; below 1 means premature (the S-beat cue).
- `prev_ratio`: RR_{i-1} / local_rr_s; above 1 after a compensatory pause.
- `short_ratio`: RR_i / median of the last `short` (8) RR intervals: prematurity against the
  immediate rhythm, robust to a few ectopic intervals.
Before enough history exists the ratios are neutral (1.0) and `valid` is False.

`heart_rate_bpm` is the one heart-rate averaging rule (60 / mean RR) of the alarm policy and the
dashboard.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from itertools import islice

import numpy as np

DEFAULT_HISTORY = 32  # RR intervals in the running local average
SHORT_HISTORY = 8  # RR intervals in the short-term median
MIN_HISTORY = 2  # RR intervals needed before the ratios mean anything


@dataclass(frozen=True)
class RhythmFeatures:
    """Causal RR features of one beat (see the module docstring)."""

    rr_s: float
    local_rr_s: float
    rr_ratio: float
    prev_ratio: float
    short_ratio: float
    valid: bool

    def as_array(self) -> np.ndarray:
        """[rr_ratio, prev_ratio, short_ratio] as float64: the inputs the anomaly score uses."""
        return np.array([self.rr_ratio, self.prev_ratio, self.short_ratio], dtype=np.float64)


N_FEATURES = 3  # length of RhythmFeatures.as_array()
NEUTRAL = RhythmFeatures(
    rr_s=math.nan, local_rr_s=math.nan, rr_ratio=1.0, prev_ratio=1.0, short_ratio=1.0, valid=False
)


class RRTracker:
    """Stateful causal RR feature extractor for one patient (one bed)."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        if history < MIN_HISTORY:
            raise ValueError(f"history must be >= {MIN_HISTORY} RR intervals, got {history}")
        self.history = history
        self._last_peak: int | None = None
        self._fs: float | None = None
        self._rrs: deque[float] = deque(maxlen=history)

    def reset(self) -> None:
        """Forget everything (a lead-off or a gap breaks the RR sequence)."""
        self._last_peak = None
        self._rrs.clear()

    def update(self, peak_sample: int, fs: float) -> RhythmFeatures:
        """Features of the beat at `peak_sample` (absolute index at `fs` Hz), then learn it."""
        if not (math.isfinite(fs) and fs > 0):
            raise ValueError(f"fs must be a finite number > 0 Hz, got {fs!r}")
        peak = int(peak_sample)
        if self._fs is not None and fs != self._fs:
            self.reset()
        self._fs = fs
        if self._last_peak is None:
            self._last_peak = peak
            return NEUTRAL
        if peak <= self._last_peak:
            raise ValueError(f"peak_sample must increase: got {peak} after {self._last_peak}")
        rr = (peak - self._last_peak) / fs
        self._last_peak = peak
        if len(self._rrs) >= MIN_HISTORY:
            local = sum(self._rrs) / len(self._rrs)
            recent = sorted(islice(self._rrs, max(0, len(self._rrs) - SHORT_HISTORY), None))
            k = len(recent) // 2  # their median as np.median gives it, without numpy's overhead
            med = recent[k] if len(recent) % 2 else (recent[k - 1] + recent[k]) / 2
            feats = RhythmFeatures(
                rr_s=rr,
                local_rr_s=local,
                rr_ratio=rr / local,
                prev_ratio=self._rrs[-1] / local,
                short_ratio=rr / med,
                valid=True,
            )
        else:
            feats = RhythmFeatures(
                rr_s=rr,
                local_rr_s=math.nan,
                rr_ratio=1.0,
                prev_ratio=1.0,
                short_ratio=1.0,
                valid=False,
            )
        self._rrs.append(rr)
        return feats


def rhythm_features(peaks: np.ndarray, fs: float, history: int = DEFAULT_HISTORY) -> np.ndarray:
    """Offline helper: `RRTracker` over a whole record's peaks -> (n, N_FEATURES) float64.

    It is literally the live tracker in a loop, so offline and live features are identical.
    """
    tracker = RRTracker(history)
    out = np.empty((len(peaks), N_FEATURES), dtype=np.float64)
    for i, p in enumerate(np.asarray(peaks, dtype=np.int64)):
        out[i] = tracker.update(int(p), fs).as_array()
    return out


def heart_rate_bpm(rr_s: Collection[float]) -> float:
    """Heart rate in bpm over RR intervals in seconds: 60 / their mean (not the mean of the
    instantaneous rates, which over-weights short intervals). `rr_s` must not be empty."""
    if not rr_s:
        raise ValueError("heart_rate_bpm needs at least one RR interval")
    return 60.0 / (sum(rr_s) / len(rr_s))
