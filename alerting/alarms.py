"""Alarm vocabulary: types, priorities, states, the Alarm record and the policy's inputs.

Plain data, no I/O. Priorities follow IEC 60601-1-8 (high / medium / low) plus a separate
"technical" class for equipment conditions (lead off, signal lost, ...), as bedside monitors
keep them apart from physiological alarms.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple

from ecgcommon.protocol import BEAT_CLASSES

# How priorities rank (IEC 60601-1-8): a higher rank suppresses a lower one; technical is apart.
PRIORITY_RANK: dict[str, int] = {"high": 3, "medium": 2, "low": 1, "technical": 0}


class Priority(StrEnum):
    """Alarm priority (IEC 60601-1-8), plus technical alarms about the equipment."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    TECHNICAL = "technical"

    @property
    def rank(self) -> int:
        """Ordering for chaining: a higher rank suppresses a lower one (technical is apart)."""
        return PRIORITY_RANK[self.value]


class AlarmType(StrEnum):
    """Every alarm the policy can raise."""

    # high
    ASYSTOLE = "asystole"
    VFIB = "vfib"  # ventricular fibrillation or flutter (the detector's `vf` episode)
    VTACH = "vtach"  # ventricular tachycardia (the detector's `vt` episode, or a run of V beats)
    EXTREME_TACHY = "extreme_tachy"
    EXTREME_BRADY = "extreme_brady"
    # medium
    AFIB = "afib"  # new-onset atrial fibrillation or flutter (the detector's `afib` episode)
    SVT = "svt"  # supraventricular tachycardia (the detector's `svt` episode)
    TACHY = "tachy"
    BRADY = "brady"
    FREQUENT_PVCS = "frequent_pvcs"
    PVC_RUN = "pvc_run"
    PVC_COUPLET = "pvc_couplet"
    PAUSE = "pause"
    # low / advisory (the anomaly score: a beat unlike the patient's own, not a diagnosis)
    UNUSUAL_BEATS = "unusual_beats"
    ANOMALY_TREND = "anomaly_trend"
    # technical
    LEAD_OFF = "lead_off"
    SIGNAL_LOST = "signal_lost"
    DEVICE_OFFLINE = "device_offline"
    NOISY = "noisy"
    CLOCK_SKEW = "clock_skew"

    @property
    def priority(self) -> Priority:
        return ALARM_PRIORITY[self]

    @property
    def latching(self) -> bool:
        """High-priority alarms latch: they stay until acknowledged even if the cause ends."""
        return self.priority is Priority.HIGH

    @property
    def label(self) -> str:
        """What the bedside shows: the arrhythmia's usual monitor name."""
        return ALARM_LABELS[self]


ALARM_PRIORITY: dict[AlarmType, Priority] = {
    AlarmType.ASYSTOLE: Priority.HIGH,
    AlarmType.VFIB: Priority.HIGH,
    AlarmType.VTACH: Priority.HIGH,
    AlarmType.EXTREME_TACHY: Priority.HIGH,
    AlarmType.EXTREME_BRADY: Priority.HIGH,
    AlarmType.AFIB: Priority.MEDIUM,
    AlarmType.SVT: Priority.MEDIUM,
    AlarmType.TACHY: Priority.MEDIUM,
    AlarmType.BRADY: Priority.MEDIUM,
    AlarmType.FREQUENT_PVCS: Priority.MEDIUM,
    AlarmType.PVC_RUN: Priority.MEDIUM,
    AlarmType.PVC_COUPLET: Priority.MEDIUM,
    AlarmType.PAUSE: Priority.MEDIUM,
    AlarmType.UNUSUAL_BEATS: Priority.LOW,
    AlarmType.ANOMALY_TREND: Priority.LOW,
    AlarmType.LEAD_OFF: Priority.TECHNICAL,
    AlarmType.SIGNAL_LOST: Priority.TECHNICAL,
    AlarmType.DEVICE_OFFLINE: Priority.TECHNICAL,
    AlarmType.NOISY: Priority.TECHNICAL,
    AlarmType.CLOCK_SKEW: Priority.TECHNICAL,
}

ALARM_LABELS: dict[AlarmType, str] = {
    AlarmType.ASYSTOLE: "ASYSTOLE",
    AlarmType.VFIB: "VFIB",
    AlarmType.VTACH: "VTACH",
    AlarmType.EXTREME_TACHY: "EXTREME TACHY",
    AlarmType.EXTREME_BRADY: "EXTREME BRADY",
    AlarmType.AFIB: "AFIB",
    AlarmType.SVT: "SVT",
    AlarmType.TACHY: "TACHY",
    AlarmType.BRADY: "BRADY",
    AlarmType.FREQUENT_PVCS: "PVCs/min HIGH",
    AlarmType.PVC_RUN: "PVC run",
    AlarmType.PVC_COUPLET: "PVC couplet",
    AlarmType.PAUSE: "PAUSE",
    AlarmType.UNUSUAL_BEATS: "Unusual beats",
    AlarmType.ANOMALY_TREND: "Unusual beats rising",
    AlarmType.LEAD_OFF: "LEAD OFF",
    AlarmType.SIGNAL_LOST: "SIGNAL LOST",
    AlarmType.DEVICE_OFFLINE: "DEVICE OFFLINE",
    AlarmType.NOISY: "ARTIFACT: arrhythmia analysis suspended",
    AlarmType.CLOCK_SKEW: "CLOCK SKEW: device clock wrong, its data is refused",
}

# Chaining within one priority, as a bedside monitor's arrhythmia chain: the key supersedes
# (replaces) every type in its set on the same bed. Across priorities the higher one wins.
# VF is the lethal rhythm QRS detection cannot follow: it replaces the asystole or extreme
# brady that the missing beats look like, and the VT it may start as.
SUPERSEDES: dict[AlarmType, frozenset[AlarmType]] = {
    AlarmType.VFIB: frozenset(
        {AlarmType.ASYSTOLE, AlarmType.EXTREME_BRADY, AlarmType.EXTREME_TACHY, AlarmType.VTACH}
    ),
    AlarmType.VTACH: frozenset({AlarmType.EXTREME_TACHY}),
    AlarmType.SVT: frozenset({AlarmType.TACHY}),
    AlarmType.PVC_RUN: frozenset({AlarmType.PVC_COUPLET, AlarmType.FREQUENT_PVCS}),
    AlarmType.PVC_COUPLET: frozenset({AlarmType.FREQUENT_PVCS}),
    AlarmType.UNUSUAL_BEATS: frozenset({AlarmType.ANOMALY_TREND}),
}


class AlarmState(StrEnum):
    """Life cycle: active -> (acknowledged | latched) -> ended."""

    ACTIVE = "active"  # condition present, not acknowledged
    ACKNOWLEDGED = "acknowledged"  # condition present, acknowledged by staff
    LATCHED = "latched"  # condition gone, but a high alarm waits for acknowledgement
    ENDED = "ended"

    @property
    def open(self) -> bool:
        return self is not AlarmState.ENDED


class ChangeKind(StrEnum):
    """What happened to an alarm; the adapter publishes and stores each change."""

    RAISED = "raised"
    UPDATED = "updated"  # new evidence, or re-activated while latched
    ESCALATED = "escalated"  # not acknowledged in time
    ACKNOWLEDGED = "acknowledged"
    LATCHED = "latched"  # condition ended, high alarm still needs acknowledgement
    SILENCED = "silenced"  # audio paused
    REALARMED = "realarmed"  # silence period over, alarm still open
    ENDED = "ended"  # condition cleared (or latched alarm acknowledged)
    SUPPRESSED = "suppressed"  # ended because a higher or technical alarm took over


def alarm_id(bed: str, type_: AlarmType | str, started_at: float) -> str:
    """A stable id: the same bed, type and start (to the millisecond) give the same id."""
    key = f"{bed}\x1f{AlarmType(type_).value}\x1f{round(started_at * 1000)}"
    return "a" + hashlib.sha1(key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Alarm:
    """One alarm episode on one bed, with the evidence that raised it. Times are unix seconds."""

    id: str
    bed: str
    type: AlarmType
    priority: Priority
    state: AlarmState
    started_at: float
    updated_at: float
    ended_at: float | None = None
    cleared_at: float | None = None  # when the condition went away
    end_reason: str | None = None  # cleared | acknowledged | suppressed
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    escalated: bool = False
    escalated_at: float | None = None
    silenced_until: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    version: int = 0  # +1 on every change: the store keeps the newest whatever the clocks

    @classmethod
    def new(cls, bed: str, type_: AlarmType, started_at: float, evidence: dict[str, Any]) -> Alarm:
        return cls(
            id=alarm_id(bed, type_, started_at),
            bed=bed,
            type=type_,
            priority=type_.priority,
            state=AlarmState.ACTIVE,
            started_at=started_at,
            updated_at=started_at,
            evidence=dict(evidence),
        )

    @property
    def open(self) -> bool:
        return self.state.open

    def evolve(self, **changes: Any) -> Alarm:
        """A changed copy, one version newer."""
        return replace(self, version=self.version + 1, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (enums as strings)."""
        return {
            "id": self.id,
            "bed": self.bed,
            "type": self.type.value,
            "label": self.type.label,
            "priority": self.priority.value,
            "state": self.state.value,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "ended_at": self.ended_at,
            "cleared_at": self.cleared_at,
            "end_reason": self.end_reason,
            "acknowledged_at": self.acknowledged_at,
            "acknowledged_by": self.acknowledged_by,
            "escalated": self.escalated,
            "escalated_at": self.escalated_at,
            "silenced_until": self.silenced_until,
            "evidence": self.evidence,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Alarm:
        """Inverse of to_dict; raises KeyError/ValueError on a malformed dict."""

        def opt(key: str) -> float | None:
            v = d.get(key)
            return None if v is None else float(v)

        return cls(
            id=str(d["id"]),
            bed=str(d["bed"]),
            type=AlarmType(d["type"]),
            priority=Priority(d["priority"]),
            state=AlarmState(d["state"]),
            started_at=float(d["started_at"]),
            updated_at=float(d.get("updated_at", d["started_at"])),
            ended_at=opt("ended_at"),
            cleared_at=opt("cleared_at"),
            end_reason=d.get("end_reason"),
            acknowledged_at=opt("acknowledged_at"),
            acknowledged_by=d.get("acknowledged_by"),
            escalated=bool(d.get("escalated", False)),
            escalated_at=opt("escalated_at"),
            silenced_until=opt("silenced_until"),
            evidence=dict(d.get("evidence") or {}),
            version=int(d.get("version", 0)),
        )


class AlarmChange(NamedTuple):
    """One transition of one alarm, with the alarm as it is after the transition."""

    kind: ChangeKind
    alarm: Alarm


@dataclass(frozen=True)
class AlarmQuery:
    """Which alarms to list (the API's filters): every field given must match; `state` "open"
    means not ended; `since` bounds started_at (unix s); newest first, at most `limit`."""

    bed: str | None = None
    priority: str | None = None
    state: str | None = None
    since: float | None = None
    limit: int = 100


def _check_bed_and_time(bed: str, t: float) -> None:
    """The checks every policy input shares: a named bed, a finite time."""
    if not bed:
        raise ValueError("bed: must be a non-empty string")
    if not math.isfinite(t):
        raise ValueError(f"t: must be finite, got {t!r}")


@dataclass(frozen=True)
class BeatInput:
    """A scored, classified beat, as the policy needs it (the adapter converts the wire
    BeatResult).

    t: the beat's time (unix s, signal clock); rr_s: interval from the previous beat, None after
    a gap or for the first beat; hr_bpm: the detector's heart rate (used when rr_s is None);
    anomalous: the anomaly score says the beat is unusual (low-priority advisory only);
    cls: its AAMI class (N, S, V, F, Q); None (an older detector) counts for heart rate only.
    """

    bed: str
    t: float
    beat_id: str
    anomalous: bool
    rr_s: float | None = None
    hr_bpm: float | None = None
    score: float | None = None
    cls: str | None = None

    def __post_init__(self) -> None:
        _check_bed_and_time(self.bed, self.t)
        if self.rr_s is not None and not (math.isfinite(self.rr_s) and self.rr_s > 0):
            raise ValueError(f"rr_s: must be a positive finite number or None, got {self.rr_s!r}")
        if self.hr_bpm is not None and not (math.isfinite(self.hr_bpm) and self.hr_bpm > 0):
            raise ValueError(f"hr_bpm: must be positive finite or None, got {self.hr_bpm!r}")
        if self.cls is not None and self.cls not in BEAT_CLASSES:
            raise ValueError(f"cls: must be one of {BEAT_CLASSES} or None, got {self.cls!r}")


# The detector's rhythm episodes (wire event types) and the alarm each one drives.
EPISODE_ALARMS: dict[str, AlarmType] = {
    "vt": AlarmType.VTACH,
    "vf": AlarmType.VFIB,
    "afib": AlarmType.AFIB,
    "svt": AlarmType.SVT,
}


@dataclass(frozen=True)
class EpisodeInput:
    """A rhythm episode of a bed from the detector: `type` (vt, vf, afib, svt) starts
    (`active` True, `t` = onset) or ends (`active` False, `t` = end), on the signal clock.
    `detail` is the detector's evidence (hr_bpm, beats, onset_t, lead, ...)."""

    bed: str
    type: str
    active: bool
    t: float
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_bed_and_time(self.bed, self.t)
        if self.type not in EPISODE_ALARMS:
            raise ValueError(f"type: must be one of {tuple(EPISODE_ALARMS)}, got {self.type!r}")
        if not isinstance(self.detail, Mapping):
            raise ValueError(f"detail: must be a mapping, got {type(self.detail).__name__}")


# Technical event types the policy acts on; others (gap, duplicate, ...) are ignored by it.
# Each is the event type of the same name.
TECHNICAL_EVENTS: dict[str, AlarmType] = {
    t.value: t
    for t in (
        AlarmType.LEAD_OFF,
        AlarmType.SIGNAL_LOST,
        AlarmType.DEVICE_OFFLINE,
        AlarmType.NOISY,
        AlarmType.CLOCK_SKEW,
    )
}
# Events that end a technical condition whatever their `active` flag says.
RESTORING_EVENTS: dict[str, AlarmType] = {
    "lead_restored": AlarmType.LEAD_OFF,
    "device_online": AlarmType.DEVICE_OFFLINE,
}


@dataclass(frozen=True)
class TechnicalInput:
    """An equipment event for a bed: type (lead_off, signal_lost, device_offline, noisy,
    lead_restored, device_online, ...), whether the condition is now active, and when."""

    bed: str
    type: str
    active: bool
    t: float
    detail: str = ""

    def __post_init__(self) -> None:
        _check_bed_and_time(self.bed, self.t)
