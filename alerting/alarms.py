"""Alarm vocabulary: types, priorities, states, the Alarm record and the policy's inputs.

Plain data, no I/O. Priorities follow IEC 60601-1-8 (high / medium / low) plus a separate
"technical" class for equipment conditions (lead off, signal lost, ...), as bedside monitors
keep them apart from physiological alarms.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple


class Priority(StrEnum):
    """Alarm priority (IEC 60601-1-8), plus technical alarms about the equipment."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    TECHNICAL = "technical"

    @property
    def rank(self) -> int:
        """Ordering for chaining: a higher rank suppresses a lower one (technical is apart)."""
        return {"high": 3, "medium": 2, "low": 1, "technical": 0}[self.value]


class AlarmType(StrEnum):
    """Every alarm the policy can raise."""

    # high
    ASYSTOLE = "asystole"
    VTACH = "vtach"
    EXTREME_TACHY = "extreme_tachy"
    EXTREME_BRADY = "extreme_brady"
    # medium
    TACHY = "tachy"
    BRADY = "brady"
    FREQUENT_ANOMALIES = "frequent_anomalies"
    RUN = "run"
    COUPLET = "couplet"
    PAUSE = "pause"
    # low / advisory
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


ALARM_PRIORITY: dict[AlarmType, Priority] = {
    AlarmType.ASYSTOLE: Priority.HIGH,
    AlarmType.VTACH: Priority.HIGH,
    AlarmType.EXTREME_TACHY: Priority.HIGH,
    AlarmType.EXTREME_BRADY: Priority.HIGH,
    AlarmType.TACHY: Priority.MEDIUM,
    AlarmType.BRADY: Priority.MEDIUM,
    AlarmType.FREQUENT_ANOMALIES: Priority.MEDIUM,
    AlarmType.RUN: Priority.MEDIUM,
    AlarmType.COUPLET: Priority.MEDIUM,
    AlarmType.PAUSE: Priority.MEDIUM,
    AlarmType.ANOMALY_TREND: Priority.LOW,
    AlarmType.LEAD_OFF: Priority.TECHNICAL,
    AlarmType.SIGNAL_LOST: Priority.TECHNICAL,
    AlarmType.DEVICE_OFFLINE: Priority.TECHNICAL,
    AlarmType.NOISY: Priority.TECHNICAL,
    AlarmType.CLOCK_SKEW: Priority.TECHNICAL,
}

# Within one priority, an arrhythmia chain like a bedside monitor's: a run supersedes a couplet.
CHAIN_RANK: dict[AlarmType, int] = {AlarmType.RUN: 1, AlarmType.COUPLET: 0}


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
class BeatInput:
    """A scored beat, as the policy needs it (the adapter converts the wire BeatResult).

    t: the beat's time (unix s, signal clock); rr_s: interval from the previous beat, None after
    a gap or for the first beat; hr_bpm: the detector's heart rate (used when rr_s is None).
    """

    bed: str
    t: float
    beat_id: str
    anomalous: bool
    rr_s: float | None = None
    hr_bpm: float | None = None
    score: float | None = None

    def __post_init__(self) -> None:
        if not self.bed:
            raise ValueError("bed: must be a non-empty string")
        if not math.isfinite(self.t):
            raise ValueError(f"t: must be finite, got {self.t!r}")
        if self.rr_s is not None and not (math.isfinite(self.rr_s) and self.rr_s > 0):
            raise ValueError(f"rr_s: must be a positive finite number or None, got {self.rr_s!r}")
        if self.hr_bpm is not None and not (math.isfinite(self.hr_bpm) and self.hr_bpm > 0):
            raise ValueError(f"hr_bpm: must be positive finite or None, got {self.hr_bpm!r}")


# Technical event types the policy acts on; others (gap, duplicate, ...) are ignored by it.
TECHNICAL_EVENTS: dict[str, AlarmType] = {
    "lead_off": AlarmType.LEAD_OFF,
    "signal_lost": AlarmType.SIGNAL_LOST,
    "device_offline": AlarmType.DEVICE_OFFLINE,
    "noisy": AlarmType.NOISY,
    "clock_skew": AlarmType.CLOCK_SKEW,
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
        if not self.bed:
            raise ValueError("bed: must be a non-empty string")
        if not math.isfinite(self.t):
            raise ValueError(f"t: must be finite, got {self.t!r}")
