"""Per-bed alarm criteria: turn beats and the passing of (signal) time into condition edges.

`BedRules` knows nothing about alarms' life cycle (latching, acknowledgement, chaining): it only
says when a condition becomes present or absent, and with what evidence. `AlarmPolicy` does the
rest. No I/O and no clock: every time comes in with the input.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple

from alerting.alarms import EPISODE_ALARMS, AlarmType, BeatInput, EpisodeInput, Priority
from ecgcommon.rhythm import heart_rate_bpm
from ecgcommon.settings import Settings, nested, setting

MAX_EVIDENCE_BEATS = 20


def _bpm(default: float, env: str, flag: str, help: str) -> Any:
    """A per-bed limit (> 0); its setting is the default of beds without limits of their own."""
    unit = "bpm" if flag.endswith("bpm") else "per min"
    return setting(default, env=env, flag=flag, unit=unit, gt=0, help=help)


@dataclass(frozen=True, repr=False)
class BedLimits(Settings):
    """Per-bed, nurse-adjustable limits: heart rate (medium), PVCs per minute (medium) and
    unusual (anomalous) beats per minute (the low-priority advisory)."""

    low_bpm: float = _bpm(
        50.0, "ALERTING_DEFAULT_LOW_BPM", "--default-low-bpm",
        "heart rate below this: bradycardia alarm",
    )  # fmt: skip
    high_bpm: float = _bpm(
        120.0, "ALERTING_DEFAULT_HIGH_BPM", "--default-high-bpm",
        "heart rate above this: tachycardia alarm",
    )  # fmt: skip
    pvcs_per_min: float = _bpm(
        10.0, "ALERTING_DEFAULT_PVCS_PER_MIN", "--default-pvcs-per-min",
        "PVCs per minute: frequent PVCs alarm",
    )  # fmt: skip
    anomalies_per_min: float = _bpm(
        10.0, "ALERTING_DEFAULT_ANOMALIES_PER_MIN", "--default-anomalies-per-min",
        "unusual beats per minute: unusual beats advisory",
    )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.low_bpm >= self.high_bpm:
            raise ValueError(f"low_bpm: must be below high_bpm ({self.low_bpm} >= {self.high_bpm})")

    def to_dict(self) -> dict[str, float]:
        return {
            "low_bpm": self.low_bpm,
            "high_bpm": self.high_bpm,
            "pvcs_per_min": self.pvcs_per_min,
            "anomalies_per_min": self.anomalies_per_min,
        }


_UNITS = (("-s", "s"), ("-bpm", "bpm"), ("-beats", "beats"), ("-per-min", "per min"))


def _policy(default: float, env: str, flag: str, help: str, **bounds: Any) -> Any:
    """A policy setting, its unit read off the flag's suffix."""
    unit = next((u for sfx, u in _UNITS if flag.endswith(sfx)), "")
    return setting(default, env=env, flag=flag, unit=unit, help=help, **bounds)


@dataclass(frozen=True, repr=False)
class PolicyConfig(Settings):
    """Alarm criteria and behaviour, in physical units. Defaults: see docs/alarms.md."""

    asystole_s: float = _policy(
        4.0, "ALERTING_ASYSTOLE_S", "--asystole-s", "no beat this long: asystole", gt=0
    )
    pause_s: float = _policy(
        2.5, "ALERTING_PAUSE_S", "--pause-s", "RR interval this long: pause", gt=0
    )
    vt_min_beats: int = _policy(
        5, "ALERTING_VT_MIN_BEATS", "--vt-min-beats", "V beats in a row for VT", min=1
    )
    vt_min_rate_bpm: float = _policy(
        100.0, "ALERTING_VT_MIN_RATE_BPM", "--vt-min-rate-bpm", "rate of a VT run", gt=0
    )
    vt_from_beats: bool = _policy(
        False, "ALERTING_VT_FROM_BEATS", "--vt-from-beats",
        "VT also from >= vt_min_beats V beats at >= vt_min_rate_bpm: a fallback for a detector "
        "that sends classes but no rhythm episodes (the detector's VT detector gates artifact)",
    )  # fmt: skip
    run_min_beats: int = _policy(
        3, "ALERTING_RUN_MIN_BEATS", "--run-min-beats", "V beats in a row for a PVC run", min=1
    )
    extreme_brady_bpm: float = _policy(
        40.0, "ALERTING_EXTREME_BRADY_BPM", "--extreme-brady-bpm", "extreme bradycardia", gt=0
    )
    extreme_tachy_bpm: float = _policy(
        150.0, "ALERTING_EXTREME_TACHY_BPM", "--extreme-tachy-bpm", "extreme tachycardia", gt=0
    )
    hr_average_beats: int = _policy(
        4, "ALERTING_HR_AVERAGE_BEATS", "--hr-average-beats",
        "heart rate = 60 / mean of the last N RR intervals", min=1,
    )  # fmt: skip
    hr_confirm_beats: int = _policy(
        2, "ALERTING_HR_CONFIRM_BEATS", "--hr-confirm-beats",
        "debounce: N consecutive beats past a limit raise ...", min=1,
    )  # fmt: skip
    hr_limit_delay_s: float = _policy(
        10.0, "ALERTING_HR_LIMIT_DELAY_S", "--hr-limit-delay-s",
        "... and, for the medium (bed) limits, for this long", min=0,
    )  # fmt: skip
    hr_clear_beats: int = _policy(
        3, "ALERTING_HR_CLEAR_BEATS", "--hr-clear-beats",
        "N consecutive beats back inside (with hysteresis) ...", min=1,
    )  # fmt: skip
    hr_clear_s: float = _policy(
        30.0, "ALERTING_HR_CLEAR_S", "--hr-clear-s",
        "... for at least this long clear a heart-rate alarm", min=0,
    )  # fmt: skip
    hr_hysteresis_bpm: float = _policy(
        5.0, "ALERTING_HR_HYSTERESIS_BPM", "--hr-hysteresis-bpm",
        "heart-rate hysteresis of the clear", min=0,
    )  # fmt: skip
    frequent_window_s: float = _policy(
        60.0, "ALERTING_FREQUENT_WINDOW_S", "--frequent-window-s",
        "window of the PVC and unusual-beat rates", gt=0,
    )  # fmt: skip
    rate_hysteresis: float = _policy(
        0.8, "ALERTING_RATE_HYSTERESIS", "--rate-hysteresis",
        "a rate alarm clears below this fraction of its limit ...", gt=0, max=1,
    )  # fmt: skip
    rate_clear_s: float = _policy(
        300.0, "ALERTING_RATE_CLEAR_S", "--rate-clear-s", "... held for this long", min=0
    )
    trend_window_s: float = _policy(
        300.0, "ALERTING_TREND_WINDOW_S", "--trend-window-s",
        "recent window of the anomaly-rate trend", gt=0,
    )  # fmt: skip
    trend_baseline_s: float = _policy(
        600.0, "ALERTING_TREND_BASELINE_S", "--trend-baseline-s",
        "the window before it, as baseline", gt=0,
    )  # fmt: skip
    trend_factor: float = _policy(
        2.0, "ALERTING_TREND_FACTOR", "--trend-factor",
        "recent rate must be this many times the baseline", gt=0,
    )  # fmt: skip
    trend_min_per_min: float = _policy(
        2.0, "ALERTING_TREND_MIN_PER_MIN", "--trend-min-per-min",
        "... and at least this many anomalies per minute", gt=0,
    )  # fmt: skip
    event_hold_s: float = _policy(
        60.0, "ALERTING_EVENT_HOLD_S", "--event-hold-s",
        "a pause alarm stays this long after the next beat", min=0,
    )  # fmt: skip
    ectopy_hold_s: float = _policy(
        300.0, "ALERTING_ECTOPY_HOLD_S", "--ectopy-hold-s",
        "PVC couplet / run alarms stay this long after the last", min=0,
    )  # fmt: skip
    episode_hold_s: float = _policy(
        300.0, "ALERTING_EPISODE_HOLD_S", "--episode-hold-s",
        "AF / SVT alarms stay this long after the episode ends", min=0,
    )  # fmt: skip
    escalate_after_s: float = _policy(
        60.0, "ALERTING_ESCALATE_AFTER_S", "--escalate-after-s",
        "unacknowledged high/medium/technical alarms escalate", gt=0,
    )  # fmt: skip
    silence_s: float = _policy(
        120.0, "ALERTING_SILENCE_S", "--silence-s", "default audio-pause length", gt=0
    )
    restore_grace_s: float = _policy(
        15.0, "ALERTING_RESTORE_GRACE_S", "--restore-grace-s",
        "restored non-latching alarms must be re-confirmed within", min=0,
    )  # fmt: skip
    default_limits: BedLimits = nested(BedLimits, prefix="default")

    def __post_init__(self) -> None:
        super().__post_init__()
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


# Conditions that are events rather than states: they stay present for a hold time after the
# last occurrence (hold_until), so a burst of them is one alarm with `occurrences` counted.
_HELD = (
    AlarmType.PVC_COUPLET,
    AlarmType.PVC_RUN,
    AlarmType.PAUSE,
    AlarmType.AFIB,
    AlarmType.SVT,
)
# Episode alarms that end with the detector's episode plus `episode_hold_s` (VT and VF latch).
_EPISODE_HELD = (AlarmType.AFIB, AlarmType.SVT)
MAX_DETAIL_KEYS = 16


class Beat(NamedTuple):
    beat_id: str
    t: float
    score: float | None
    cls: str | None


class RateCounter:
    """Sorted event times with counts over windows ending now, pruned past a horizon."""

    def __init__(self) -> None:
        self._times: list[float] = []
        self._head = 0

    def add(self, t: float) -> None:
        self._times.insert(bisect_right(self._times, t), t)

    def count(self, start: float, end: float) -> int:
        """Events with start < time <= end."""
        return bisect_right(self._times, end) - bisect_right(self._times, start)

    def prune(self, horizon: float) -> None:
        self._head = bisect_left(self._times, horizon, lo=self._head)
        if self._head > 4096:
            del self._times[: self._head]
            self._head = 0


class BedRules:
    """Streaming criteria for one bed; same edges whatever the order of ticks between beats."""

    def __init__(self, bed: str, config: PolicyConfig, limits: BedLimits) -> None:
        self.bed = bed
        self.config = config
        self.limits = limits
        # the detector's active episodes: alarm type -> evidence; `ignored` ones started while
        # analysis was suspended (they raise nothing until they end and start again)
        self.episodes: dict[AlarmType, dict[str, Any]] = {}
        self.ignored: set[AlarmType] = set()
        self._clear()

    def _clear(self) -> None:
        config = self.config
        self.present: set[AlarmType] = set()
        # conditions whose current presence was already announced (or named by an alarm of
        # their own chain): the policy does not raise them again when a higher alarm ends;
        # an episode going on through a reset stays announced
        self.announced: set[AlarmType] = set(self.episodes) & getattr(self, "announced", set())
        self.hr_bpm: float | None = None
        self._last_beat_t: float | None = None
        self._ref_t: float | None = None  # start of the current "no beat" interval
        self._rr: deque[float] = deque(maxlen=config.hr_average_beats)
        self._recent: deque[Beat] = deque(maxlen=config.hr_confirm_beats)
        self._history: deque[Beat] = deque(maxlen=MAX_EVIDENCE_BEATS)  # for episode evidence
        self._vrun: list[Beat] = []  # the current run of consecutive V beats
        self._vt_beats = False  # VT present from the V-beat criterion
        self._pvcs = RateCounter()
        self._anomalies = RateCounter()
        self._over: dict[AlarmType, int] = {}
        self._inside: dict[AlarmType, int] = {}
        self._inside_since: dict[AlarmType, float] = {}
        self._over_since: dict[AlarmType, float] = {}
        self._below_since: dict[AlarmType, float] = {}
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
        # a beat from before a restart of the analysis (published late) leaves its clock there
        self._ref_t = t if self._ref_t is None else max(self._ref_t, t)
        rr = (
            beat.rr_s
            if beat.rr_s is not None
            else (60.0 / beat.hr_bpm if beat.hr_bpm is not None else None)
        )
        if rr is None:
            self._rr.clear()
        else:
            self._rr.append(rr)
        self.hr_bpm = heart_rate_bpm(self._rr) if len(self._rr) == self._rr.maxlen else None
        b = Beat(beat.beat_id, t, beat.score, beat.cls)
        self._recent.append(b)
        self._history.append(b)
        out += self._hr_criteria(t)
        out += self._ventricular_criteria(b)
        if beat.anomalous and beat.cls in (None, "N"):  # unusual, and no class explains it
            self._anomalies.add(t)
        out += self._rate_criteria(t)
        return out

    def on_time(self, now: float) -> list[Signal]:
        """Time-driven criteria at signal time `now`: asystole, pause, end of holds.

        Rate criteria (frequent, unusual, trend) run on beats only, so their edges do not
        depend on the tick cadence."""
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
            and self._last_beat_t is not None  # a pause is between two beats, not after a reset
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

    def on_episode(self, ep: EpisodeInput, suspended: bool) -> list[Signal]:
        """A rhythm episode starts or ends (the detector's event). While `suspended` (a
        technical condition) a starting episode is noted but raises nothing, then or later."""
        type_ = EPISODE_ALARMS[ep.type]
        if ep.active:
            if suspended:
                self.episodes.pop(type_, None)
                self.ignored.add(type_)
                return []
            self.ignored.discard(type_)
            ev = _episode_evidence(ep)
            onset = ev["onset_t"] if isinstance(ev.get("onset_t"), int | float) else ep.t
            during = [b for b in self._history if onset - 0.5 <= b.t <= ep.t + 0.5]
            if during:  # the beats of the episode so far (VF has none), as beat alarms keep
                ev.update({k: v for k, v in self._beat_evidence(during).items() if k != "hr_bpm"})
            self.episodes[type_] = ev
            self._hold_until.pop(type_, None)
            return [self._set(type_, True, ep.t, ev)]
        self.ignored.discard(type_)
        had = self.episodes.pop(type_, None)
        out: list[Signal] = []
        if type_ is AlarmType.VFIB:
            # QRS detection resumes at the end of VF: the asystole clock restarts there, so a
            # VF that ends in asystole is an asystole 4 s later, not a missed one
            self.present -= {AlarmType.ASYSTOLE, AlarmType.PAUSE}
            self._hold_until.pop(AlarmType.PAUSE, None)
            self._ref_t = ep.t if self._ref_t is None else max(self._ref_t, ep.t)
        if had is None:
            return out
        ev = {**_episode_evidence(ep), "onset_t": had.get("onset_t")}
        if type_ not in self.present:
            # a technical condition's reset forgot its presence while the episode went on (VF is
            # judged through noise): its alarm, if still open, ends now, or it would stay open and
            # swallow the next episode's announcement
            out.append(self._set(type_, False, ep.t, ev))
            return out
        if type_ in _EPISODE_HELD and self.config.episode_hold_s > 0:
            self._hold_until[type_] = ep.t + self.config.episode_hold_s
            return out
        if type_ is AlarmType.VTACH and self._vt_beats:
            return out  # the V-beat criterion still holds it
        out.append(self._set(type_, False, ep.t, ev))
        return out

    def resume(self, now: float) -> list[Signal]:
        """Analysis resumes (the last technical condition ended): episodes that were already
        present before it and are still going on are present again."""
        out = []
        for type_, ev in self.episodes.items():
            if type_ not in self.present:
                out.append(self._set(type_, True, now, {**ev, "resumed": True}))
        return out

    def restart_gap(self, t: float) -> None:
        """The detector's analysis of the bed was broken until signal time `t` (a new detector
        stream, a hole in the samples): the silent interval starts again at `t`, and no pause
        spans the hole (docs/faults.md). Rate and rhythm state are kept."""
        self._ref_t = t if self._ref_t is None else max(self._ref_t, t)
        self._last_beat_t = None

    def note_beat(self, t: float) -> None:
        """A beat at `t` that was not judged (it came during a technical condition whose end
        is reported later): the heart beats, so the asystole clock starts there."""
        if self._ref_t is None or t > self._ref_t:
            self._ref_t = t
            self._last_beat_t = t

    def reset(self, now: float) -> None:
        """Forget all analysis state (a technical condition makes the signal unjudgeable);
        the detector's episode table is kept (it ends them itself)."""
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
        if gap >= c.pause_s and self._last_beat_t is not None:
            if AlarmType.PAUSE not in self.present:
                out.append(
                    self._set(
                        AlarmType.PAUSE, True, ref + c.pause_s, self._gap_evidence(ref + c.pause_s)
                    )
                )
            self._hold_until[AlarmType.PAUSE] = t + c.event_hold_s
        return out

    def _gap_evidence(self, t: float) -> dict[str, Any]:
        last = self._recent[-1].beat_id if self._recent else None
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
            if self._over[type_] == 1:
                self._over_since[type_] = t
            delay = c.hr_limit_delay_s if type_.priority is Priority.MEDIUM else 0.0
            if (
                type_ not in self.present
                and self._over[type_] >= c.hr_confirm_beats
                and t - self._over_since[type_] >= delay
            ):
                out.append(self._set(type_, True, t, self._beat_evidence(list(self._recent))))
            elif (
                type_ in self.present
                and self._inside[type_] >= c.hr_clear_beats
                and t - self._inside_since[type_] >= c.hr_clear_s
            ):
                out.append(self._set(type_, False, t, {"hr_bpm": round(hr, 1)}))
        return out

    def _ventricular_criteria(self, beat: Beat) -> list[Signal]:
        """PVC couplets and runs, VT from V beats (fallback), on the beat class only: an
        anomalous beat is unusual, not ventricular."""
        c = self.config
        out: list[Signal] = []
        t = beat.t
        if beat.cls == "V":
            self._vrun.append(beat)
            self._pvcs.add(t)
            n = len(self._vrun)
            span = t - self._vrun[0].t
            rate = 60.0 * (n - 1) / span if span > 0 else math.inf
            if c.vt_from_beats and n >= c.vt_min_beats and rate >= c.vt_min_rate_bpm:
                if not self._vt_beats:
                    self._vt_beats = True
                    ev = self._beat_evidence(self._vrun)
                    ev.update(source="beats", run_rate_bpm=round(rate, 1), run_beats=n)
                    out.append(self._set(AlarmType.VTACH, True, t, ev))
            elif n == c.run_min_beats:
                ev = self._beat_evidence(self._vrun)
                ev["run_rate_bpm"] = round(rate, 1) if math.isfinite(rate) else None
                out.append(self._set(AlarmType.PVC_RUN, True, t, ev))
                self._hold_until[AlarmType.PVC_RUN] = t + c.ectopy_hold_s
            return out
        n = len(self._vrun)
        if n == 2:
            ev = self._beat_evidence(self._vrun)
            out.append(self._set(AlarmType.PVC_COUPLET, True, t, ev))
            self._hold_until[AlarmType.PVC_COUPLET] = t + c.ectopy_hold_s
        elif n >= c.run_min_beats and AlarmType.PVC_RUN in self.present:
            self._hold_until[AlarmType.PVC_RUN] = t + c.ectopy_hold_s
        if self._vt_beats:
            self._vt_beats = False
            if AlarmType.VTACH not in self.episodes:
                ev = {"beat_ids": [beat.beat_id], "run_beats": n, "source": "beats"}
                out.append(self._set(AlarmType.VTACH, False, t, ev))
        self._vrun.clear()
        return out

    def _rate_criteria(self, t: float) -> list[Signal]:
        """Frequent PVCs (medium) and unusual beats (low) per minute, and the low-priority
        rising trend of unusual beats."""
        c, out = self.config, []
        horizon = t - c.trend_window_s - c.trend_baseline_s
        self._pvcs.prune(horizon)
        self._anomalies.prune(horizon)
        w = c.frequent_window_s
        for type_, counter, per_min, what in (
            (AlarmType.FREQUENT_PVCS, self._pvcs, self.limits.pvcs_per_min, "pvcs"),
            (AlarmType.UNUSUAL_BEATS, self._anomalies, self.limits.anomalies_per_min, "unusual"),
        ):
            limit = per_min * w / 60.0
            n = counter.count(t - w, t)
            if type_ not in self.present and n > limit:
                ev = {
                    what: n,
                    "window_s": w,
                    "per_min": round(n * 60.0 / w, 1),
                    "limit_per_min": per_min,
                    **self._beat_evidence(list(self._recent)),
                }
                self._below_since.pop(type_, None)
                out.append(self._set(type_, True, t, ev))
            elif type_ in self.present:
                if n > c.rate_hysteresis * limit:
                    self._below_since.pop(type_, None)
                else:
                    since = self._below_since.setdefault(type_, t)
                    if t - since >= c.rate_clear_s:
                        del self._below_since[type_]
                        out.append(self._set(type_, False, t, {what: n}))
        # trend: needs a full baseline of monitoring
        ttype = AlarmType.ANOMALY_TREND
        since = self._monitor_since if self._monitor_since is not None else t
        if t - since >= c.trend_window_s + c.trend_baseline_s:
            count = self._anomalies.count
            recent = count(t - c.trend_window_s, t) * 60.0 / c.trend_window_s
            base = count(horizon, t - c.trend_window_s) * 60.0 / c.trend_baseline_s
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
            if until is not None and now >= until:
                del self._hold_until[type_]
                if type_ in self.present and type_ not in self.episodes:
                    out.append(self._set(type_, False, until, {}))
        return out

    # ---------------------------------------------------------------- helpers
    def _set(self, type_: AlarmType, present: bool, t: float, ev: dict[str, Any]) -> Signal:
        if present:
            self.present.add(type_)
        else:
            self.present.discard(type_)
            self.announced.discard(type_)
        return Signal(type_, present, t, ev)

    def _beat_evidence(self, beats: list[Beat]) -> dict[str, Any]:
        beats = beats[-MAX_EVIDENCE_BEATS:]
        return {
            "beat_ids": [b.beat_id for b in beats],
            "scores": [None if b.score is None else round(float(b.score), 4) for b in beats],
            "classes": [b.cls for b in beats],
            "hr_bpm": None if self.hr_bpm is None else round(self.hr_bpm, 1),
        }


def _episode_evidence(ep: EpisodeInput) -> dict[str, Any]:
    """The detector's episode detail as JSON-safe evidence (scalars only, bounded)."""
    ev: dict[str, Any] = {"source": "episode", "episode": ep.type}
    for k, v in list(ep.detail.items())[:MAX_DETAIL_KEYS]:
        key = str(k)[:64]
        if isinstance(v, bool) or v is None:
            ev[key] = v
        elif isinstance(v, int):
            ev[key] = v
        elif isinstance(v, float):
            ev[key] = v if math.isfinite(v) else None
        elif isinstance(v, str):
            ev[key] = v[:200]
    ev.setdefault("onset_t", ep.t if ep.active else None)
    hr = ev.get("hr_bpm")
    ev["hr_bpm"] = round(hr, 1) if isinstance(hr, float) else hr
    return ev
