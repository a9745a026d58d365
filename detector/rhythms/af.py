"""Atrial fibrillation / flutter from RR irregularity over a sliding window of beats.

The method of Dash et al. 2009 ("Automatic real time detection of atrial fibrillation", Ann
Biomed Eng 37:1701), on a shorter window and with ectopic beats left out: the window holds the
last `window_beats` RR intervals between two beats that are neither ectopic (S, V, F) nor
artifact (Q) and not in `noisy` signal. Its irregularity is

- `nrmssd`: root mean square of successive RR differences (only between consecutive kept
  intervals) over the mean RR, after the `trim` largest and smallest intervals are dropped;
- `she`: Shannon entropy of the trimmed RR histogram (16 bins), normalised to 0..1;
- `tpr`: turning-point ratio of the RR sequence (random: about 2/3).

AF is called when `nrmssd >= nrmssd_on` and `she >= she_on` (and `tpr` inside the band of a
random sequence); it ends when `nrmssd < nrmssd_off` or `she < she_off` (hysteresis). A long
gap (lost lead, artifact) ends an episode and empties the window. Onset and end are the time
of the middle beat of the window that turned irregular / regular (the window holds about half
AF then), so the reported span is not shifted by the window's length.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from detector.rhythms.events import EpisodeChange, RhythmBeat, check_config

ECTOPIC = ("V", "F", "Q", "S")


@dataclass(frozen=True)
class AFConfig:
    """Window and thresholds."""

    window_beats: int = 48
    trim: int = 3
    nrmssd_on: float = 0.15
    nrmssd_off: float = 0.105
    she_on: float = 0.75
    she_off: float = 0.65
    tpr_low: float = 0.45
    tpr_high: float = 0.85
    max_gap_s: float = 10.0  # no kept interval for this long: the window starts over
    decide_every: int = 4  # the window is judged every this many kept intervals (cost)

    def __post_init__(self) -> None:
        check_config(self)
        if self.window_beats < 12 or 4 * self.trim >= self.window_beats:
            raise ValueError("AFConfig.window_beats must be >= 12 and > 4 * trim")
        if self.nrmssd_off > self.nrmssd_on or self.she_off > self.she_on:
            raise ValueError("AFConfig: the *_off thresholds must not exceed the *_on ones")


def irregularity(rr: np.ndarray, chain: np.ndarray, trim: int) -> tuple[float, float, float]:
    """(nrmssd, she, tpr) of RR intervals; `chain[i]`: rr[i] follows rr[i-1] directly."""
    srt = np.sort(rr)
    core = srt[trim : rr.size - trim]
    mean = float(np.add.reduce(core)) / core.size  # = core.mean()
    lo, hi = float(core[0]), float(core[-1])
    link = chain[1:]
    after, before = rr[1:][link], rr[:-1][link]  # the two intervals of each chained step
    d = after - before  # = np.diff(rr)[link]
    d = d[(after >= lo) & (after <= hi) & (before >= lo) & (before <= hi)]
    nrmssd = math.sqrt(float(d @ d) / d.size) / mean if d.size and mean > 0 else 0.0
    if hi > lo:
        counts = np.bincount(
            np.minimum(((core - lo) / (hi - lo) * 16).astype(np.int64), 15), minlength=16
        )
        p = counts[counts > 0] / core.size
        she = float(-(p * np.log(p)).sum()) / math.log(16)
    else:
        she = 0.0
    mid = rr[1:-1]
    turns = ((mid > rr[:-2]) & (mid > rr[2:])) | ((mid < rr[:-2]) & (mid < rr[2:]))
    tpr = float(turns.sum()) / max(1, mid.size)
    return nrmssd, she, tpr


class AFDetector:
    """One bed's AF state; feed every classified beat in time order."""

    def __init__(self, config: AFConfig = AFConfig()) -> None:
        self.config = config
        n = config.window_beats
        self.rr: deque[float] = deque(maxlen=n)
        self.chain: deque[bool] = deque(maxlen=n)
        self.times: deque[float] = deque(maxlen=n)  # time of the beat that opens each interval
        self.prev: RhythmBeat | None = None
        self.prev_kept = False  # the previous interval was kept (for `chain`)
        self.last_kept_t = -math.inf
        self.kept = 0  # intervals kept since the start
        self.active = False
        self.onset_t = math.nan
        self.end_t = -math.inf  # end of the previous episode
        self.beats = 0
        self.last = (0.0, 0.0, 0.0)

    def feed(self, beat: RhythmBeat, noisy: bool = False) -> list[EpisodeChange]:
        """One beat; returns the episode's start or end, if any."""
        if not beat.valid or (self.prev is not None and beat.t <= self.prev.t):
            return []
        out: list[EpisodeChange] = []
        prev, self.prev = self.prev, beat
        if beat.t - self.last_kept_t > self.config.max_gap_s and self.rr:
            out += self._end(self.last_kept_t, {"gap": True})
            self._clear()
        ok = (
            prev is not None
            and not noisy
            and beat.cls not in ECTOPIC
            and prev.cls not in ECTOPIC
            and beat.rr is not None
        )
        if not ok:
            self.prev_kept = False
            return out
        assert prev is not None and beat.rr is not None
        self.rr.append(beat.rr)
        self.chain.append(self.prev_kept)
        self.times.append(prev.t)
        self.prev_kept = True
        self.last_kept_t = beat.t
        self.kept += 1
        if self.active:
            self.beats += 1
        if len(self.rr) < self.config.window_beats or self.kept % self.config.decide_every:
            return out
        return out + self._decide(beat)

    def _decide(self, beat: RhythmBeat) -> list[EpisodeChange]:
        c = self.config
        rr = np.fromiter(self.rr, dtype=np.float64, count=len(self.rr))
        chain = np.fromiter(self.chain, dtype=bool, count=len(self.chain))
        nrmssd, she, tpr = self.last = irregularity(rr, chain, c.trim)
        if not self.active:
            if nrmssd >= c.nrmssd_on and she >= c.she_on and c.tpr_low <= tpr <= c.tpr_high:
                self.active = True
                self.onset_t = max(self.times[len(self.times) // 2], self.end_t)
                self.beats = len(self.rr)
                hr = 60.0 / float(np.mean(rr))
                return [
                    EpisodeChange(
                        "afib",
                        True,
                        self.onset_t,
                        {
                            "hr_bpm": round(hr, 1),
                            "beats": self.beats,
                            "onset_t": self.onset_t,
                            "detected_t": beat.t,
                            **self._evidence(),
                        },
                    )
                ]
            return []
        if nrmssd < c.nrmssd_off or she < c.she_off:
            return self._end(self.times[len(self.times) // 2], self._evidence())
        return []

    def _evidence(self) -> dict[str, float]:
        nrmssd, she, tpr = self.last
        return {"nrmssd": round(nrmssd, 3), "she": round(she, 3), "tpr": round(tpr, 3)}

    def _end(self, t: float, detail: dict) -> list[EpisodeChange]:
        if not self.active:
            return []
        self.active = False
        t = max(t, self.onset_t)
        self.end_t = t
        return [
            EpisodeChange(
                "afib",
                False,
                t,
                {"hr_bpm": None, "beats": self.beats, "onset_t": self.onset_t, **detail},
            )
        ]

    def _clear(self) -> None:
        self.rr.clear()
        self.chain.clear()
        self.times.clear()
        self.prev_kept = False

    def close(self, t: float) -> list[EpisodeChange]:
        """End an active episode and forget the window (stream restart)."""
        out = self._end(t, {"restart": True})
        self._clear()
        self.prev = None
        return out
