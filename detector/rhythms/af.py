"""Atrial fibrillation / flutter from RR irregularity over a sliding window of beats.

The window holds the last `window_beats` RR intervals between two beats that are neither
ventricular (V, F), nor artifact (Q), nor found in VF. S beats start no episode (sinus rhythm
with frequent atrial ectopy is irregular too) but stay in one: in AF the classifier calls many
conducted beats "premature", with no regular rhythm to be premature against. Beats in `noisy`
signal stay in when so configured: AF's fibrillatory waves fill the baseline and the quality
index reads that as artifact (mitdb 201, DS1: its last AF episode lies wholly under `noisy`);
the policy suspends the AF alarm during `noisy` anyway.

Measures of the window, kept as running counts (O(1) per beat):

- `irregular`: the share of successive differences |RR[i] - RR[i-1]| (directly consecutive
  kept intervals) above `diff_rel` times their mean, a rate-normalised form of the counting
  measures of Tateno & Glass 2001 and Petrenas et al. 2015 (Comput Biol Med 65:184). Sinus
  rhythm changes by a few percent per beat, AF by 10..50 %. Below a mean RR of `rate_rr_s`
  (0.8 s) the share scales down in proportion (80 ms at 75 bpm, 45 ms at 100, 26 ms at 130
  bpm): beat-to-beat variability falls faster than the RR as the rate rises, in sinus rhythm
  (Sacha & Pluta 2008, Int J Cardiol; Sacha 2013, Front Physiol) and in AF with a fast
  ventricular response, whose changes stay well above sinus rhythm's but under 10 %.
- `span`: the same share (rate-scaled alike) for two-beat spans (RR[i] + RR[i-1] against
  RR[i-2] + RR[i-3]). A displaced beat (an ectopic the classifier missed, a jittery fiducial
  point on a paced beat) makes a short and a long interval whose sum stays regular; AF's spans
  do not.
- `tpr`: turning-point ratio (random: 2/3; bigeminy: 1).
- `she`, only when the others call a start: Shannon entropy of the RR histogram (16 bins,
  `trim` extremes dropped), 0..1 (Dash et al. 2009, Ann Biomed Eng 37:1701): bigeminy and
  trigeminy (2 or 3 RR clusters) are irregular beat to beat but low in entropy.

AF starts when `irregular >= irregular_on`, `span >= span_on`, `she >= she_on` and `tpr` lies
in the band of a random sequence, on a window where most intervals form differences and most
beats of its time span are kept; it ends when `irregular < irregular_off`, `span < span_off`
or the window stops being analysable (hysteresis). Onset: the first beat from which the rest
of the window is irregular at `irregular_on`; end: the beat that closed the last irregular
difference, so the reported span follows the rhythm change, not the window's length. A long
gap (lost lead, a V run, VF) ends an episode and empties the window.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from detector.rhythms.events import EpisodeChange, RhythmBeat, check_config

EXCLUDED = ("V", "F", "Q")  # ventricular or artifact: not an atrial rhythm's interval
HIST_BINS = 16


@dataclass(frozen=True)
class AFConfig:
    """Window and thresholds."""

    window_beats: int = 32
    diff_rel: float = 0.1  # a successive RR difference > this share of the pair's mean
    # below this mean RR the share scales down in proportion (the threshold goes with RR^2):
    # beat-to-beat variability falls faster than the RR as the rate rises
    rate_rr_s: float = 0.8
    irregular_on: float = 0.55  # share of irregular differences that starts AF
    irregular_off: float = 0.33  # ... below which it ends
    min_diffs: float = 0.5  # share of the window's intervals that must form differences
    min_kept: float = 0.5  # share of the beats in the window's span that must be kept
    trim: int = 2
    she_on: float = 0.7
    span_on: float = 0.5  # share of irregular changes of two-beat spans that starts AF
    span_off: float = 0.2  # ... below which it ends
    tpr_low: float = 0.45
    tpr_high: float = 0.85
    max_gap_s: float = 10.0  # no kept interval for this long: the window starts over
    noisy_beats: bool = True  # beats in `noisy` signal count (AF's f-waves read as artifact)

    def __post_init__(self) -> None:
        check_config(self, skip=("noisy_beats",))
        if self.window_beats < 12 or 4 * self.trim >= self.window_beats:
            raise ValueError("AFConfig.window_beats must be >= 12 and > 4 * trim")
        if self.irregular_off > self.irregular_on or self.irregular_on > 1:
            raise ValueError("AFConfig.irregular_off must not exceed irregular_on (<= 1)")
        if self.span_off > self.span_on or self.span_on > 1:
            raise ValueError("AFConfig.span_off must not exceed span_on (<= 1)")
        if self.min_diffs > 1 or self.min_kept > 1:
            raise ValueError("AFConfig.min_diffs and min_kept must be <= 1")


def entropy(rr: np.ndarray, trim: int) -> float:
    """Shannon entropy of the trimmed RR histogram (`HIST_BINS` bins), normalised to 0..1."""
    core = np.sort(rr)[trim : rr.size - trim]
    lo, hi = float(core[0]), float(core[-1])
    if not hi > lo:
        return 0.0
    idx = np.minimum(((core - lo) * (HIST_BINS / (hi - lo))).astype(np.int64), HIST_BINS - 1)
    counts = np.bincount(idx, minlength=HIST_BINS)
    p = counts[counts > 0] / core.size
    return float(-(p * np.log(p)).sum()) / math.log(HIST_BINS)


class AFDetector:
    """One bed's AF state; feed every classified beat in time order."""

    def __init__(self, config: AFConfig = AFConfig()) -> None:
        self.config = config
        n = config.window_beats
        self.rr: deque[float] = deque(maxlen=n)
        self.times: deque[float] = deque(maxlen=n)  # time of the beat that closes each interval
        self.flag: deque[int] = deque(maxlen=n)  # -1: no difference, 0: regular, 1: irregular
        self.turn: deque[int] = deque(maxlen=n)  # -1: not judged, 0/1: turning point
        self.span: deque[int] = deque(maxlen=n)  # -1: no span change, 0: regular, 1: irregular
        self.n_span = self.n_span_irr = 0
        self.index: deque[int] = deque(maxlen=n)  # beat count at each kept interval
        self.seen = 0  # beats fed
        self.n_diff = self.n_irr = self.n_tp = self.n_turn = 0
        self.prev: RhythmBeat | None = None
        self.prev_kept = False  # the previous interval was kept (a difference can be formed)
        self.last_kept_t = -math.inf
        self.last_irregular_t = math.nan  # beat closing the newest irregular difference
        self.active = False
        self.onset_t = math.nan
        self.end_t = -math.inf  # end of the previous episode
        self.beats = 0
        self.last = (0.0, 0.0, 0.0, 0.0)  # (irregular, she, tpr, span) of the newest judgement

    def feed(
        self, beat: RhythmBeat, noisy: bool = False, in_vf: bool = False
    ) -> list[EpisodeChange]:
        """One beat (`noisy`: in artifact; `in_vf`: while VF is active); returns the
        episode's start or end, if any."""
        if not beat.valid or (self.prev is not None and beat.t <= self.prev.t):
            return []
        c = self.config
        out: list[EpisodeChange] = []
        self.seen += 1
        prev, self.prev = self.prev, beat
        if beat.t - self.last_kept_t > c.max_gap_s and self.rr:
            out += self._end(self.last_irregular_t, {"gap": True})
            self._clear()
        # S beats start no episode (frequent atrial ectopy is irregular too: mitdb 201 at
        # 1440..1590 s) but carry one (in AF "premature" has no regular rhythm to refer to)
        skip = EXCLUDED if self.active else EXCLUDED + ("S",)
        ok = (
            prev is not None
            and not in_vf
            and (c.noisy_beats or not noisy)
            and beat.cls not in skip
            and prev.cls not in skip
            and beat.rr is not None
        )
        if not ok:
            self.prev_kept = False
            return out
        assert beat.rr is not None
        self._push(beat.rr, beat.t)
        self.last_kept_t = beat.t
        if self.active:
            self.beats += 1
        return out + self._decide(beat)

    def _push(self, rr: float, t: float) -> None:
        """Append one kept interval with its difference and turning-point flags."""
        if len(self.rr) == self.rr.maxlen:  # the oldest interval leaves the window
            f, tp, sp = self.flag[0], self.turn[0], self.span[0]
            self.n_diff -= f >= 0
            self.n_irr -= f == 1
            self.n_turn -= tp >= 0
            self.n_tp -= tp == 1
            self.n_span -= sp >= 0
            self.n_span_irr -= sp == 1
        flag = turn = span = -1
        if self.prev_kept and self.rr:
            r1 = self.rr[-1]
            m = 0.5 * (rr + r1)
            flag = int(abs(rr - r1) > self._rel(m) * m)
            if self.flag[-1] >= 0:  # three consecutive intervals
                r0 = self.rr[-2]
                turn = int((r1 > r0 and r1 > rr) or (r1 < r0 and r1 < rr))
                if self.flag[-2] >= 0:  # four: two spans
                    a, b = rr + r1, r0 + self.rr[-3]
                    ms = 0.25 * (a + b)  # the mean RR of the two spans
                    span = int(abs(a - b) > self._rel(ms) * 2 * ms)
        self.rr.append(rr)
        self.times.append(t)
        self.index.append(self.seen)
        self.flag.append(flag)
        self.turn.append(turn)
        self.span.append(span)
        self.n_diff += flag >= 0
        self.n_irr += flag == 1
        self.n_turn += turn >= 0
        self.n_tp += turn == 1
        self.n_span += span >= 0
        self.n_span_irr += span == 1
        self.prev_kept = True
        if flag == 1:
            self.last_irregular_t = t

    def _rel(self, mean_rr: float) -> float:
        """The share of the mean RR a change must exceed: `diff_rel`, scaled down in proportion
        below `rate_rr_s` (so the threshold goes with the RR squared at faster rates)."""
        c = self.config
        return c.diff_rel * min(1.0, mean_rr / c.rate_rr_s)

    def _decide(self, beat: RhythmBeat) -> list[EpisodeChange]:
        c = self.config
        n = len(self.rr)
        if n < c.window_beats:
            return []
        irregular = self.n_irr / self.n_diff if self.n_diff else 0.0
        tpr = self.n_tp / self.n_turn if self.n_turn else 0.0
        span = self.n_span_irr / self.n_span if self.n_span else 0.0
        analysable = self.n_diff >= c.min_diffs * n
        if self.active:
            self.last = (irregular, self.last[1], tpr, span)
            if irregular < c.irregular_off or span < c.span_off or not analysable:
                return self._end(self._change(rising=False), self._evidence())
            return []
        if not analysable or irregular < c.irregular_on or span < c.span_on:
            return []
        if not c.tpr_low <= tpr <= c.tpr_high:
            return []
        if n < c.min_kept * (self.seen - self.index[0] + 1):
            return []  # mostly ectopic or excluded beats: the kept ones are not the rhythm
        rr = np.fromiter(self.rr, dtype=np.float64, count=n)
        she = entropy(rr, c.trim)
        self.last = (irregular, she, tpr, span)
        if she < c.she_on:
            return []

        self.active = True
        self.onset_t = max(self._change(rising=True), self.end_t)
        self.beats = n
        return [
            EpisodeChange(
                "afib",
                True,
                self.onset_t,
                {
                    "hr_bpm": round(60.0 / float(rr.mean()), 1),
                    "beats": self.beats,
                    "onset_t": self.onset_t,
                    "detected_t": beat.t,
                    **self._evidence(),
                },
            )
        ]

    def _change(self, rising: bool) -> float:
        """Where in the window the rhythm changed: the CUSUM change point (Page 1954) of the
        irregular flags about the midpoint of the two thresholds, its minimum for a change to
        irregular (`rising`), its maximum for a change to regular. Returns the beat between
        the last interval before the change and the first after it."""
        c = self.config
        mid = 0.5 * (c.irregular_on + c.irregular_off)
        sign = -1.0 if rising else 1.0
        best_k, best, cum = 0, 0.0, 0.0
        for k, f in enumerate(self.flag):
            if f >= 0:
                cum += sign * (f - mid)
                if cum > best:
                    best, best_k = cum, k
        return self.times[best_k]

    def _evidence(self) -> dict[str, float]:
        irregular, she, tpr, span = self.last
        return {
            "irregular": round(irregular, 3),
            "she": round(she, 3),
            "tpr": round(tpr, 3),
            "span": round(span, 3),
        }

    def _end(self, t: float, detail: dict) -> list[EpisodeChange]:
        if not self.active:
            return []
        self.active = False
        t = max(t, self.onset_t) if math.isfinite(t) else self.onset_t
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
        for d in (self.rr, self.times, self.flag, self.turn, self.span, self.index):
            d.clear()
        self.n_diff = self.n_irr = self.n_tp = self.n_turn = 0
        self.n_span = self.n_span_irr = 0
        self.prev_kept = False

    def close(self, t: float) -> list[EpisodeChange]:
        """End an active episode and forget the window (stream restart)."""
        out = self._end(t, {"restart": True})
        self._clear()
        self.prev = None
        return out
