"""Sans-I/O ward state for the dashboard: waveforms, heart rate, beats, status and alarms per bed.

The hub holds bounded state only (ring buffers, capped deques), batches what arrived since the
last `flush()` into one websocket frame for every subscriber, and gives each subscriber a bounded
queue: when a slow client falls behind, its oldest waveform frames are dropped, never alarms.
No sockets, no clocks, no threads: the service adapter feeds it and calls `flush(now)`.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from alerting.alarms import PRIORITY_RANK
from ecgcommon.limits import fs_ok, fs_range_text
from ecgcommon.rhythm import heart_rate_bpm
from ecgcommon.windowing import WINDOW

# Seconds of signal shown around a beat in the detail view, beyond the model window.
DETAIL_MARGIN_S = 0.3
# A jump forward in sample index larger than this many seconds restarts a bed's waveform.
MAX_GAP_FILL_S = 5.0
# Alarms are never dropped; past this many queued frames a client is cut off (it reconnects).
HARD_QUEUE_FACTOR = 16
# Displayed heart rate: 60 / mean of the last RR intervals (as the alarm policy computes it);
# shown as unknown once no beat has come for this long (asystole must not show an old rate).
HR_BEATS = 4
HR_STALE_S = 6.0
# How the beat list names the AAMI classes (BeatResult.cls); None: an older detector.
CLASS_NAMES = {"N": "normal", "S": "PAC", "V": "PVC", "F": "fusion", "Q": "unclassified"}
# Rhythm labels of the bed tile, most important first when several apply.
EPISODE_LABELS = {"vf": "VF", "vt": "VT", "svt": "SVT", "afib": "AFIB"}


class SampleRing:
    """A fixed-capacity float ring addressed by absolute sample index (0 = first ever)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._buf = np.full(capacity, np.nan, dtype=np.float64)
        self.end = 0  # absolute index one past the newest sample

    @property
    def capacity(self) -> int:
        return int(self._buf.size)

    @property
    def start(self) -> int:
        """Absolute index of the oldest sample still held."""
        return max(0, self.end - self.capacity)

    def extend(self, x: np.ndarray) -> None:
        n = int(x.size)
        cap = self.capacity
        if n >= cap:
            x = x[-cap:]
            self.end += n - cap
            n = cap
        pos = self.end % cap
        first = min(n, cap - pos)
        self._buf[pos : pos + first] = x[:first]
        self._buf[: n - first] = x[first:]
        self.end += n

    def get(self, lo: int, hi: int) -> np.ndarray:
        """Samples [lo, hi) clipped to what is held (may be shorter than asked)."""
        lo = max(lo, self.start)
        hi = min(hi, self.end)
        if hi <= lo:
            return np.zeros(0, dtype=np.float64)
        idx = np.arange(lo, hi) % self.capacity
        return self._buf[idx].copy()


class Decimator:
    """Streaming block-mean decimation by an integer factor; output independent of chunk size.

    A block holding a NaN (a gap) gives NaN, so gaps stay visible on the dashboard.
    """

    def __init__(self, fs: float, target_hz: float) -> None:
        self.factor = max(1, round(fs / target_hz))
        self.fs_out = fs / self.factor
        self._carry = np.zeros(0, dtype=np.float64)

    def feed(self, x: np.ndarray) -> np.ndarray:
        if self._carry.size:
            x = np.concatenate([self._carry, x])
        n = (x.size // self.factor) * self.factor
        self._carry = x[n:].copy()
        if self.factor == 1:
            return x[:n].copy()
        return x[:n].reshape(-1, self.factor).mean(axis=1)


@dataclass
class BeatInfo:
    """What the hub keeps of one scored beat (`beat_id` from the detector, `sample` its R-peak
    index in the device's sample count, `t` unix seconds)."""

    beat_id: str
    sample: int
    t: float
    rr_s: float | None
    hr_bpm: float | None
    score: float
    threshold: float
    anomalous: bool
    errors: tuple[float, ...] = ()
    cls: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "beat_id": self.beat_id,
            "sample": self.sample,
            "t": round(self.t, 4),
            "rr_s": _num(self.rr_s),
            "hr_bpm": _num(self.hr_bpm, 1),
            "score": _num(self.score, 5),
            "threshold": _num(self.threshold, 5),
            "anomalous": self.anomalous,
            "cls": self.cls,
            "class_name": CLASS_NAMES.get(self.cls or "", "unknown"),
        }


@dataclass
class BedState:
    """Everything the dashboard shows about one bed; every container is bounded."""

    bed: str
    fs: float | None = None
    decimator: Decimator | None = None
    wave: SampleRing | None = None  # decimated, for new clients
    raw: SampleRing | None = None  # full rate, for the beat detail view
    next_sample: int | None = None  # absolute index expected next
    pending_i0: int | None = None  # decimated index of the first pending sample
    pending: list[np.ndarray] = field(default_factory=list)
    hr_bpm: float | None = None
    last_beat_t: float | None = None
    signal_t: float | None = None  # unix time just after the newest sample
    lead_ok: bool | None = None
    status: dict[str, Any] = field(default_factory=dict)
    beats: deque[BeatInfo] = field(default_factory=deque)
    details: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)
    episodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # the detector's, by type
    dirty: bool = False

    def current_hr(self) -> float | None:
        """The heart rate to show, None when unknown or stale (no beat for HR_STALE_S)."""
        if self.hr_bpm is None or self.last_beat_t is None:
            return None
        if self.signal_t is not None and self.signal_t - self.last_beat_t > HR_STALE_S:
            return None
        return self.hr_bpm

    def rhythm(self) -> str | None:
        """The tile's rhythm label ("SR 72", "AFIB 118", "VT", "VF", "SVT 160", "ARTIFACT",
        "ASYS"), from the detector's episodes, the technical conditions and the heart rate;
        None when the ECG cannot be analysed (lead off, no signal, offline) or nothing is known.
        """
        st = self.status
        if self.lead_ok is False or st.get("signal_lost") is True:
            return None
        if st.get("state") == "offline" or st.get("device_offline") is True:
            return None
        hr = self.current_hr()
        rate = "" if hr is None else f" {round(hr)}"
        if "vf" in self.episodes:
            return "VF"  # found from the waveform: shown through artifact too
        if st.get("noisy") is True:
            return "ARTIFACT"
        if "vt" in self.episodes:
            return "VT"
        if any(
            a.get("type") == "asystole" and a.get("state") in ("active", "acknowledged")
            for a in self.alarms.values()
        ):
            return "ASYS"
        for ep in ("svt", "afib"):
            if ep in self.episodes:
                return EPISODE_LABELS[ep] + rate
        if hr is None:
            return None
        return ("SB" if hr < 60 else "ST" if hr > 100 else "SR") + rate

    def vitals(self) -> dict[str, Any]:
        top = _top_alarm(self.alarms.values())
        return {
            "bed": self.bed,
            "hr_bpm": _num(self.current_hr(), 1),
            "rhythm": self.rhythm(),
            "lead_ok": self.lead_ok,
            "t": _num(self.signal_t, 3),
            "status": self.status,
            "alarm": top,
            "n_alarms": len(self.alarms),
        }


def _top_alarm(alarms: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The alarm a bed tile shows: highest priority, unacknowledged first, then newest."""
    best = None
    best_key: tuple[int, int, float] | None = None
    for a in alarms:
        key = (
            PRIORITY_RANK.get(str(a.get("priority", "")).lower(), 0),
            0 if a.get("acknowledged_at") is not None else 1,
            float(a.get("started_at") or 0.0),
        )
        if best_key is None or key > best_key:
            best, best_key = a, key
    return dict(best) if best is not None else None


def _num(v: float | None, digits: int = 3) -> float | None:
    if v is None:
        return None
    f = float(v)
    return round(f, digits) if math.isfinite(f) else None


def _wave_list(y: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(v) else round(v, 3) for v in y.tolist()]


class Subscriber:
    """A websocket client's bounded outbox of encoded frames.

    `push` drops the oldest droppable (waveform) frame when the queue is full; alarm frames are
    never dropped. A client that still piles up `limit * HARD_QUEUE_FACTOR` frames is marked
    `overflowed` and should be disconnected (it reconnects and gets a fresh snapshot).
    """

    def __init__(self, limit: int, notify: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.notify = notify
        self._queue: deque[tuple[str, bool]] = deque()
        self.dropped = 0
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, text: str, droppable: bool) -> None:
        if len(self._queue) >= self.limit:
            for i, (_, can_drop) in enumerate(self._queue):
                if can_drop:
                    del self._queue[i]
                    self.dropped += 1
                    break
        if droppable and len(self._queue) >= self.limit:
            self.dropped += 1
        else:
            self._queue.append((text, droppable))
        if len(self._queue) >= self.limit * HARD_QUEUE_FACTOR:
            self.overflowed = True
        if self.notify is not None:
            self.notify()

    def drain(self) -> list[str]:
        out = [t for t, _ in self._queue]
        self._queue.clear()
        return out


@dataclass(frozen=True)
class HubSettings:
    """How much of each bed the hub keeps and how it feeds the dashboard."""

    wave_hz: float = 120.0  # waveform rate sent to the page (Hz)
    wave_window_s: float = 10.0  # decimated waveform kept per bed (s)
    raw_window_s: float = 30.0  # full-rate signal kept per bed for beat details (s)
    client_queue: int = 64  # frames queued per websocket client before waveforms are dropped
    recent_beats: int = 200  # beats kept per bed
    detail_beats: int = 50  # beat details (signal around the beat) kept per bed

    def __post_init__(self) -> None:
        for name in ("wave_hz", "wave_window_s", "raw_window_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be a positive number, got {value!r}")
        for name in ("client_queue", "recent_beats", "detail_beats"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")


class WardHub:
    """Live state of one ward and the fan-out of websocket frames to dashboard clients."""

    def __init__(self, ward: str, settings: HubSettings | None = None, **overrides: Any) -> None:
        """`overrides` replace fields of `settings` (e.g. `WardHub("w", client_queue=8)`)."""
        self.ward = ward
        self.settings = replace(settings or HubSettings(), **overrides)
        self._beds: dict[str, BedState] = {}
        self._subs: list[Subscriber] = []
        self._pending_beats: list[dict[str, Any]] = []
        self.frames_sent = 0

    # -- inputs --------------------------------------------------------------------------
    def _bed(self, bed: str) -> BedState:
        state = self._beds.get(bed)
        if state is None:
            state = BedState(bed=bed, beats=deque(maxlen=self.settings.recent_beats))
            self._beds[bed] = state
        return state

    def on_samples(
        self, bed: str, fs: float, start: int, samples: np.ndarray, t0: float | None = None
    ) -> None:
        """A chunk of one lead (mV); its first sample has index `start` (device sample count)
        and unix time `t0`."""
        st = self._bed(bed)
        x = np.asarray(samples, dtype=np.float64).ravel()
        if (
            st.fs != fs
            or st.next_sample is None
            or start < st.next_sample
            or (start - st.next_sample > MAX_GAP_FILL_S * fs)
        ):
            self._restart_wave(st, fs, start)
        elif start > st.next_sample:  # lost chunk(s): show the gap as NaN
            x = np.concatenate([np.full(start - st.next_sample, np.nan), x])
        assert st.decimator is not None and st.raw is not None and st.wave is not None
        st.raw.extend(x)
        y = st.decimator.feed(x)
        if y.size:
            if st.pending_i0 is None or not st.pending:
                st.pending_i0 = st.wave.end
            st.wave.extend(y)
            st.pending.append(y)
        st.next_sample = st.raw.end
        if t0 is not None and math.isfinite(t0):
            st.signal_t = t0 + (st.raw.end - start) / fs
        st.dirty = True

    def _restart_wave(self, st: BedState, fs: float, start: int) -> None:
        if not fs_ok(fs):  # buffers are sized by fs: never by a rate beyond the limits
            raise ValueError(f"fs {fs!r} outside {fs_range_text()}")
        st.fs = float(fs)
        st.decimator = Decimator(fs, self.settings.wave_hz)
        st.raw = SampleRing(max(1, round(self.settings.raw_window_s * fs)))
        st.raw.end = start
        st.wave = SampleRing(max(1, round(self.settings.wave_window_s * st.decimator.fs_out)))
        st.wave.end = start // st.decimator.factor
        st.pending = []
        st.pending_i0 = None

    def on_beat(
        self,
        bed: str,
        *,
        beat_id: str,
        sample: int,
        t: float,
        score: float,
        threshold: float,
        anomalous: bool,
        rr_s: float | None = None,
        hr_bpm: float | None = None,
        errors: Iterable[float] | None = None,
        cls: str | None = None,
    ) -> BeatInfo:
        """A scored, classified beat; keeps per-timestep errors, and the waveform of anomalous
        and ectopic beats."""
        st = self._bed(bed)
        info = BeatInfo(
            beat_id=str(beat_id),
            sample=int(sample),
            t=float(t),
            rr_s=rr_s,
            hr_bpm=hr_bpm,
            score=float(score),
            threshold=float(threshold),
            anomalous=bool(anomalous),
            errors=tuple(float(e) for e in errors or ()),
            cls=cls if cls in CLASS_NAMES else None,
        )
        st.beats.append(info)
        st.last_beat_t = info.t
        rrs: list[float] = []
        for b in reversed(st.beats):
            if b.rr_s is None or not (math.isfinite(b.rr_s) and b.rr_s > 0):
                break  # a stream restart or gap: average only the run since then
            rrs.append(b.rr_s)
            if len(rrs) == HR_BEATS:
                break
        if rrs:
            st.hr_bpm = heart_rate_bpm(rrs)
        elif hr_bpm is not None and math.isfinite(hr_bpm):
            st.hr_bpm = float(hr_bpm)
        if info.anomalous or info.cls in ("S", "V", "F"):
            detail = self._cut_detail(st, info)
            if detail is not None:
                st.details[info.beat_id] = detail
                while len(st.details) > self.settings.detail_beats:
                    st.details.popitem(last=False)
        self._pending_beats.append({"bed": bed, **info.summary()})
        del self._pending_beats[: max(0, len(self._pending_beats) - 4 * self.settings.recent_beats)]
        st.dirty = True
        return info

    def on_status(self, bed: str, lead_ok: bool | None = None, **fields: Any) -> None:
        """Device/lead status of a bed (e.g. lead_ok, battery, source)."""
        st = self._bed(bed)
        if lead_ok is not None:
            st.lead_ok = bool(lead_ok)
        st.status.update({k: v for k, v in fields.items() if _jsonable(v)})
        st.dirty = True

    def on_episode(
        self, bed: str, type_: str, active: bool, t: float, detail: Mapping[str, Any]
    ) -> None:
        """A rhythm episode of the detector (vt, vf, afib, svt) starts or ends: the tile's
        rhythm label follows it."""
        st = self._bed(bed)
        if type_ not in EPISODE_LABELS:
            return
        if active:
            st.episodes[type_] = {
                "t": float(t),
                **{k: v for k, v in detail.items() if _jsonable(v)},
            }
        else:
            st.episodes.pop(type_, None)
        st.dirty = True

    def on_alarm(self, alarm: Mapping[str, Any]) -> None:
        """An alarm was raised, updated, acknowledged or ended: broadcast at once, never dropped.

        `alarm` is `Alarm.to_dict()`: at least "id", "bed", "priority" and "state"; an alarm
        leaves the bed's current alarms when its state is "ended".
        """
        a = dict(alarm)
        st = self._bed(str(a["bed"]))
        if a.get("state") != "ended":
            st.alarms[str(a["id"])] = a
        else:
            st.alarms.pop(str(a["id"]), None)
        st.dirty = True
        self._broadcast({"type": "alarm", "alarm": a, "bed": st.vitals()}, droppable=False)

    def restore_alarms(self, alarms: Iterable[Mapping[str, Any]]) -> None:
        """Active alarms from the store at start-up (no broadcast: nobody is connected yet)."""
        for a in alarms:
            if a.get("state") != "ended":
                self._bed(str(a["bed"])).alarms[str(a["id"])] = dict(a)

    # -- outputs -------------------------------------------------------------------------
    def flush(self, now: float) -> bool:
        """Send what arrived since the last flush as one batched frame; True if one was sent."""
        waves: dict[str, Any] = {}
        vitals: dict[str, Any] = {}
        for bed, st in self._beds.items():
            if st.pending and st.decimator is not None:
                y = np.concatenate(st.pending)
                waves[bed] = {"fs": st.decimator.fs_out, "i0": st.pending_i0, "y": _wave_list(y)}
                st.pending = []
                st.pending_i0 = None
            if st.dirty:
                vitals[bed] = st.vitals()
                st.dirty = False
        if not waves and not vitals and not self._pending_beats:
            return False
        frame = {
            "type": "batch",
            "t": round(now, 3),
            "wave": waves,
            "vitals": vitals,
            "beats": self._pending_beats,
        }
        self._pending_beats = []
        self._broadcast(frame, droppable=True)
        return True

    def _broadcast(self, frame: dict[str, Any], droppable: bool) -> None:
        if not self._subs:
            return
        text = json.dumps(frame, separators=(",", ":"), allow_nan=False)
        for sub in self._subs:
            sub.push(text, droppable)
        self.frames_sent += 1

    def subscribe(self, notify: Callable[[], None] | None = None) -> Subscriber:
        """A new client: its queue starts with a snapshot ("hello") of the ward."""
        sub = Subscriber(self.settings.client_queue, notify)
        sub.push(json.dumps(self.snapshot(), separators=(",", ":"), allow_nan=False), False)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    @property
    def n_subscribers(self) -> int:
        return len(self._subs)

    def snapshot(self) -> dict[str, Any]:
        """The "hello" frame: every bed's recent waveform, vitals and active alarms."""
        beds = []
        for st in self._beds.values():
            entry = st.vitals()
            if st.wave is not None and st.decimator is not None:
                lo = st.wave.start
                entry["wave"] = {
                    "fs": st.decimator.fs_out,
                    "i0": lo,
                    "y": _wave_list(st.wave.get(lo, st.wave.end)),
                }
            entry["beats"] = [b.summary() for b in list(st.beats)[-20:]]
            beds.append(entry)
        alarms = [a for st in self._beds.values() for a in st.alarms.values()]
        return {
            "type": "hello",
            "ward": self.ward,
            "wave_hz": self.settings.wave_hz,
            "beds": beds,
            "alarms": alarms,
        }

    def bed_names(self) -> list[str]:
        return sorted(self._beds)

    def forget(self, bed: str) -> None:
        """Drop a bed's state (the service evicts idle or junk beds to bound the table)."""
        self._beds.pop(bed, None)

    def bed_summary(self, bed: str) -> dict[str, Any] | None:
        """A bed's vitals, active alarms and recent beats (for the API), or None if unknown."""
        st = self._beds.get(bed)
        if st is None:
            return None
        out = st.vitals()
        out["alarms"] = list(st.alarms.values())
        out["fs"] = st.fs
        out["beats"] = [b.summary() for b in st.beats]
        return out

    def beds(self) -> list[dict[str, Any]]:
        return [self._beds[b].vitals() for b in self.bed_names()]

    def beat_detail(self, bed: str, beat_id: str) -> dict[str, Any] | None:
        """Per-timestep reconstruction error of a beat and the signal around it, or None."""
        st = self._beds.get(bed)
        if st is None:
            return None
        info = next((b for b in reversed(st.beats) if b.beat_id == beat_id), None)
        detail = st.details.get(beat_id)
        if detail is None and info is not None:
            detail = self._cut_detail(st, info)
        if info is None:
            if detail is None:
                return None  # neither a recent beat nor a kept detail
            info = detail["_info"]
        out = {
            "bed": bed,
            **info.summary(),
            "errors": [_num(e, 5) for e in info.errors],
            "window": {
                "pre_s": WINDOW.pre_s,
                "post_s": WINDOW.post_s,
                "fs": WINDOW.fs,
                "n_points": WINDOW.n_points,
            },
        }
        if detail is not None:
            out["signal"] = {k: v for k, v in detail.items() if not k.startswith("_")}
        return out

    def _cut_detail(self, st: BedState, info: BeatInfo) -> dict[str, Any] | None:
        if st.raw is None or st.fs is None:
            return None
        fs = st.fs
        lo = info.sample - round((WINDOW.pre_s + DETAIL_MARGIN_S) * fs)
        hi = info.sample + round((WINDOW.post_s + DETAIL_MARGIN_S) * fs)
        lo_held = max(lo, st.raw.start)
        seg = st.raw.get(lo_held, hi)
        if seg.size == 0:
            return None
        return {
            "fs": fs,
            "start": lo_held,
            "peak": info.sample,
            "y": _wave_list(seg),
            "_info": info,
        }


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
