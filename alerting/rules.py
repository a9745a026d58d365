"""Per-bed alarm criteria: turn beats and the passing of (signal) time into condition edges.

`BedRules` knows nothing about alarms' life cycle (latching, acknowledgement, chaining): it only
says when a condition becomes present or absent, and with what evidence. `AlarmPolicy` does the
rest. No I/O and no clock: every time comes in with the input.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from alerting.alarms import AlarmType, BeatInput

MAX_EVIDENCE_BEATS = 20


@dataclass(frozen=True)
class BedLimits:
    """Per-bed, nurse-adjustable limits (medium-priority heart-rate and ectopy limits)."""

    low_bpm: float = 50.0
    high_bpm: float = 120.0
    anomalies_per_min: float = 10.0

    def __post_init__(self) -> None:
        for name in ("low_bpm", "high_bpm", "anomalies_per_min"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: must be a positive number, got {v!r}")
        if self.low_bpm >= self.high_bpm:
            raise ValueError(f"low_bpm: must be below high_bpm ({self.low_bpm} >= {self.high_bpm})")

    def to_dict(self) -> dict[str, float]:
        return {
            "low_bpm": self.low_bpm,
            "high_bpm": self.high_bpm,
            "anomalies_per_min": self.anomalies_per_min,
        }


@dataclass(frozen=True)
class PolicyConfig:
    """Alarm criteria and behaviour, in physical units. Defaults: see docs/alarms.md."""

    asystole_s: float = 4.0
    pause_s: float = 2.5
    vt_min_beats: int = 5
    vt_min_rate_bpm: float = 100.0
    run_min_beats: int = 3
    extreme_brady_bpm: float = 40.0
    extreme_tachy_bpm: float = 150.0
    hr_average_beats: int = 4  # heart rate = 60 / mean of the last N RR intervals
    hr_confirm_beats: int = 2  # debounce: N consecutive beats past a limit raise
    hr_clear_beats: int = 3  # N consecutive beats back inside (with hysteresis) ...
    hr_clear_s: float = 10.0  # ... for at least this long clear a heart-rate alarm
    hr_hysteresis_bpm: float = 5.0
    frequent_window_s: float = 60.0
    rate_hysteresis: float = 0.8  # a rate alarm clears below this fraction of its limit
    trend_window_s: float = 300.0  # recent window of the anomaly-rate trend
    trend_baseline_s: float = 600.0  # the window before it, as baseline
    trend_factor: float = 2.0  # recent rate must be this many times the baseline
    trend_min_per_min: float = 2.0  # ... and at least this many anomalies per minute
    event_hold_s: float = 60.0  # couplet / run / pause alarms stay this long after the event
    escalate_after_s: float = 60.0  # unacknowledged high/medium/technical alarms escalate
    silence_s: float = 120.0  # default audio-pause length
    restore_grace_s: float = 15.0  # restored non-latching alarms must be re-confirmed within
    default_limits: BedLimits = field(default_factory=BedLimits)

    def __post_init__(self) -> None:
        positive = (
            "asystole_s",
            "pause_s",
            "vt_min_rate_bpm",
            "extreme_brady_bpm",
            "extreme_tachy_bpm",
            "frequent_window_s",
            "trend_window_s",
            "trend_baseline_s",
            "trend_factor",
            "trend_min_per_min",
            "escalate_after_s",
            "silence_s",
        )
        for name in positive:
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: must be a positive number, got {v!r}")
        non_negative = ("hr_hysteresis_bpm", "hr_clear_s", "event_hold_s", "restore_grace_s")
        for name in non_negative:
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: must be a number >= 0, got {v!r}")
        counts = (
            "vt_min_beats",
            "run_min_beats",
            "hr_average_beats",
            "hr_confirm_beats",
            "hr_clear_beats",
        )
        for name in counts:
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name}: must be an integer >= 1, got {v!r}")
        if not 0 < self.rate_hysteresis <= 1:
            raise ValueError(f"rate_hysteresis: must be in (0, 1], got {self.rate_hysteresis!r}")
        if self.pause_s >= self.asystole_s:
            raise ValueError(f"pause_s: must be below asystole_s ({self.pause_s})")
        if self.run_min_beats < 3 or self.vt_min_beats < self.run_min_beats:
            raise ValueError(
                f"run_min_beats: must be >= 3 and <= vt_min_beats "
                f"({self.run_min_beats}, {self.vt_min_beats})"
            )
        if self.extreme_brady_bpm >= self.extreme_tachy_bpm:
            raise ValueError("extreme_brady_bpm: must be below extreme_tachy_bpm")


class Signal(NamedTuple):
    """A condition edge: `type` became present (or absent) at time `t`, with evidence.

    A present signal for a condition already present means "it happened again" (new evidence).
    """

    type: AlarmType
    present: bool
    t: float
    evidence: dict[str, Any]


# Conditions that are events rather than states: they stay present for event_hold_s.
_HELD = (AlarmType.COUPLET, AlarmType.RUN, AlarmType.PAUSE)


class BedRules:
    """Streaming criteria for one bed; same edges whatever the order of ticks between beats."""

    def __init__(self, bed: str, config: PolicyConfig, limits: BedLimits) -> None:
        self.bed = bed
        self.config = config
        self.limits = limits
        self._clear()

    def _clear(self) -> None:
        config = self.config
        self.present: set[AlarmType] = set()
        self.hr_bpm: float | None = None
        self._last_beat_t: float | None = None
        self._ref_t: float | None = None  # start of the current "no beat" interval
        self._rr: deque[float] = deque(maxlen=config.hr_average_beats)
        self._recent: deque[tuple[str, float, float | None]] = deque(maxlen=config.hr_confirm_beats)
        self._streak: list[tuple[str, float, float | None]] = []
        self._anomaly_times: list[float] = []
        self._anomaly_head = 0
        self._over: dict[AlarmType, int] = {}
        self._inside: dict[AlarmType, int] = {}
        self._inside_since: dict[AlarmType, float] = {}
        self._hold_until: dict[AlarmType, float] = {}
        self._monitor_since: float | None = None

    # ---------------------------------------------------------------- inputs
    def on_beat(self, beat: BeatInput) -> list[Signal]:
        """Evaluate every beat-driven criterion for one beat (beats arrive in time order)."""
        out: list[Signal] = []
        t = beat.t
        if self._monitor_since is None:
            self._monitor_since = t
        out += self._expire_holds(t)
        out += self._gap_criteria(t, beat)
        self._last_beat_t = t
        self._ref_t = t
        rr = (
            beat.rr_s
            if beat.rr_s is not None
            else (60.0 / beat.hr_bpm if beat.hr_bpm is not None else None)
        )
        if rr is None:
            self._rr.clear()
        else:
            self._rr.append(rr)
        self.hr_bpm = (
            60.0 / (sum(self._rr) / len(self._rr)) if len(self._rr) == self._rr.maxlen else None
        )
        self._recent.append((beat.beat_id, t, beat.score))
        out += self._hr_criteria(t)
        out += self._ectopy_criteria(beat)
        out += self._rate_criteria(t)
        return out

    def on_time(self, now: float) -> list[Signal]:
        """Time-driven criteria at signal time `now`: asystole, pause, end of event holds.

        Rate criteria (frequent, trend) run on beats only, so their edges do not depend on
        the tick cadence."""
        out: list[Signal] = []
        if self._monitor_since is None:
            self._monitor_since = now
        if self._ref_t is None:
            self._ref_t = now
        out += self._expire_holds(now)
        silent = now - self._ref_t
        c = self.config
        if (
            silent >= c.pause_s
            and AlarmType.PAUSE not in self.present
            and AlarmType.ASYSTOLE not in self.present
        ):
            out.append(
                self._set(
                    AlarmType.PAUSE,
                    True,
                    self._ref_t + c.pause_s,
                    self._gap_evidence(self._ref_t + c.pause_s),
                )
            )
            self._hold_until[AlarmType.PAUSE] = math.inf  # held until a beat comes
        if silent >= c.asystole_s and AlarmType.ASYSTOLE not in self.present:
            out.append(
                self._set(
                    AlarmType.ASYSTOLE,
                    True,
                    self._ref_t + c.asystole_s,
                    self._gap_evidence(self._ref_t + c.asystole_s),
                )
            )
        return out

    def reset(self, now: float) -> None:
        """Forget all analysis state (a technical condition makes the signal unjudgeable)."""
        self._clear()
        self._ref_t = now
        self._monitor_since = now

    # ---------------------------------------------------------------- criteria
    def _gap_criteria(self, t: float, beat: BeatInput) -> list[Signal]:
        """The beat ends any silent interval: asystole/pause end, or are caught late."""
        out: list[Signal] = []
        c = self.config
        ref = self._ref_t
        if ref is None:
            return out
        gap = t - ref
        ev = {"beat_ids": [beat.beat_id], "gap_s": round(gap, 3)}
        if gap >= c.asystole_s and AlarmType.ASYSTOLE not in self.present:
            out.append(
                self._set(
                    AlarmType.ASYSTOLE,
                    True,
                    ref + c.asystole_s,
                    self._gap_evidence(ref + c.asystole_s),
                )
            )
        if AlarmType.ASYSTOLE in self.present:
            out.append(self._set(AlarmType.ASYSTOLE, False, t, ev))
        if gap >= c.pause_s:
            if AlarmType.PAUSE not in self.present:
                out.append(
                    self._set(
                        AlarmType.PAUSE, True, ref + c.pause_s, self._gap_evidence(ref + c.pause_s)
                    )
                )
            self._hold_until[AlarmType.PAUSE] = t + c.event_hold_s
        return out

    def _gap_evidence(self, t: float) -> dict[str, Any]:
        last = self._recent[-1][0] if self._recent else None
        return {
            "last_beat_id": last,
            "last_beat_t": self._last_beat_t,
            "criterion_met_at": t,
            "hr_bpm": self.hr_bpm,
        }

    def _hr_criteria(self, t: float) -> list[Signal]:
        hr = self.hr_bpm
        if hr is None:
            return []
        c, lim, h = self.config, self.limits, self.config.hr_hysteresis_bpm
        tests = (
            (AlarmType.EXTREME_TACHY, hr > c.extreme_tachy_bpm, hr <= c.extreme_tachy_bpm - h),
            (AlarmType.TACHY, hr > lim.high_bpm, hr <= lim.high_bpm - h),
            (AlarmType.EXTREME_BRADY, hr < c.extreme_brady_bpm, hr >= c.extreme_brady_bpm + h),
            (AlarmType.BRADY, hr < lim.low_bpm, hr >= lim.low_bpm + h),
        )
        out: list[Signal] = []
        for type_, outside, back_inside in tests:
            self._over[type_] = self._over.get(type_, 0) + 1 if outside else 0
            self._inside[type_] = self._inside.get(type_, 0) + 1 if back_inside else 0
            if self._inside[type_] == 1:
                self._inside_since[type_] = t
            if type_ not in self.present and self._over[type_] >= c.hr_confirm_beats:
                out.append(self._set(type_, True, t, self._beat_evidence(list(self._recent))))
            elif (
                type_ in self.present
                and self._inside[type_] >= c.hr_clear_beats
                and t - self._inside_since[type_] >= c.hr_clear_s
            ):
                out.append(self._set(type_, False, t, {"hr_bpm": round(hr, 1)}))
        return out

    def _ectopy_criteria(self, beat: BeatInput) -> list[Signal]:
        c = self.config
        out: list[Signal] = []
        t = beat.t
        if beat.anomalous:
            self._streak.append((beat.beat_id, t, beat.score))
            i = bisect_right(self._anomaly_times, t)
            self._anomaly_times.insert(i, t)
            n = len(self._streak)
            span = t - self._streak[0][1]
            rate = 60.0 * (n - 1) / span if span > 0 else math.inf
            if n >= c.vt_min_beats and rate >= c.vt_min_rate_bpm:
                if AlarmType.VTACH not in self.present:
                    ev = self._beat_evidence(self._streak)
                    ev["run_rate_bpm"] = round(rate, 1)
                    ev["run_beats"] = n
                    out.append(self._set(AlarmType.VTACH, True, t, ev))
            elif n == c.run_min_beats and AlarmType.VTACH not in self.present:
                ev = self._beat_evidence(self._streak)
                ev["run_rate_bpm"] = round(rate, 1) if math.isfinite(rate) else None
                out.append(self._set(AlarmType.RUN, True, t, ev))
                self._hold_until[AlarmType.RUN] = t + c.event_hold_s
        else:
            if len(self._streak) == 2:
                out.append(self._set(AlarmType.COUPLET, True, t, self._beat_evidence(self._streak)))
                self._hold_until[AlarmType.COUPLET] = t + c.event_hold_s
            elif len(self._streak) >= c.run_min_beats and AlarmType.RUN in self.present:
                self._hold_until[AlarmType.RUN] = t + c.event_hold_s
            if AlarmType.VTACH in self.present:
                ev = {"beat_ids": [beat.beat_id], "run_beats": len(self._streak)}
                out.append(self._set(AlarmType.VTACH, False, t, ev))
            self._streak.clear()
        return out

    def _count_anomalies(self, start: float, end: float) -> int:
        """Anomalous beats with start < time <= end."""
        times = self._anomaly_times
        return bisect_right(times, end) - bisect_right(times, start)

    def _rate_criteria(self, t: float) -> list[Signal]:
        """Frequent anomalous beats (per minute) and the low-priority rising trend."""
        c, out = self.config, []
        horizon = t - c.trend_window_s - c.trend_baseline_s
        self._anomaly_head = bisect_left(self._anomaly_times, horizon, lo=self._anomaly_head)
        if self._anomaly_head > 4096:
            del self._anomaly_times[: self._anomaly_head]
            self._anomaly_head = 0
        # frequent
        limit = self.limits.anomalies_per_min * c.frequent_window_s / 60.0
        n = self._count_anomalies(t - c.frequent_window_s, t)
        ftype = AlarmType.FREQUENT_ANOMALIES
        if ftype not in self.present and n > limit:
            ev = {
                "anomalies": n,
                "window_s": c.frequent_window_s,
                "per_min": round(n * 60.0 / c.frequent_window_s, 1),
                **self._beat_evidence(list(self._recent)),
            }
            out.append(self._set(ftype, True, t, ev))
        elif ftype in self.present and n <= c.rate_hysteresis * limit:
            out.append(self._set(ftype, False, t, {"anomalies": n}))
        # trend: needs a full baseline of monitoring
        ttype = AlarmType.ANOMALY_TREND
        since = self._monitor_since if self._monitor_since is not None else t
        if t - since >= c.trend_window_s + c.trend_baseline_s:
            recent = self._count_anomalies(t - c.trend_window_s, t) * 60.0 / c.trend_window_s
            base = self._count_anomalies(horizon, t - c.trend_window_s) * 60.0 / c.trend_baseline_s
            bar = max(c.trend_min_per_min, c.trend_factor * base)
            if ttype not in self.present and recent >= bar:
                ev = {"recent_per_min": round(recent, 2), "baseline_per_min": round(base, 2)}
                out.append(self._set(ttype, True, t, ev))
            elif ttype in self.present and recent < c.rate_hysteresis * bar:
                ev = {"recent_per_min": round(recent, 2), "baseline_per_min": round(base, 2)}
                out.append(self._set(ttype, False, t, ev))
        return out

    def _expire_holds(self, now: float) -> list[Signal]:
        out = []
        for type_ in _HELD:
            until = self._hold_until.get(type_)
            if until is not None and type_ in self.present and now >= until:
                out.append(self._set(type_, False, until, {}))
                del self._hold_until[type_]
        return out

    # ---------------------------------------------------------------- helpers
    def _set(self, type_: AlarmType, present: bool, t: float, ev: dict[str, Any]) -> Signal:
        if present:
            self.present.add(type_)
        else:
            self.present.discard(type_)
        return Signal(type_, present, t, ev)

    def _beat_evidence(self, beats: list[tuple[str, float, float | None]]) -> dict[str, Any]:
        beats = beats[-MAX_EVIDENCE_BEATS:]
        return {
            "beat_ids": [b[0] for b in beats],
            "scores": [None if b[2] is None else round(float(b[2]), 4) for b in beats],
            "hr_bpm": None if self.hr_bpm is None else round(self.hr_bpm, 1),
        }
