"""A simulated nurse for the benchmarks: acknowledges every alarm a fixed time after it sounds.

An alarm sounds when it is raised, and again when a latched high alarm's cause comes back
(latched -> active). Shared by `bench.alarms` and `bench.arrhythmia`.
"""

from __future__ import annotations

from alerting.alarms import Alarm, AlarmState, ChangeKind


class Nurse:
    """Feed every alarm change to `observe`; `due(now)` gives the alarms to acknowledge now."""

    def __init__(self, ack_after_s: float | None) -> None:
        if ack_after_s is not None and not ack_after_s >= 0:
            raise ValueError(f"ack_after_s: must be >= 0 seconds or None, got {ack_after_s!r}")
        self.ack_after_s = ack_after_s
        self._due: dict[str, float] = {}
        self._state: dict[str, AlarmState] = {}

    def observe(self, kind: ChangeKind, alarm: Alarm) -> bool:
        """Track one change; True when it made the alarm sound (raised or re-announced)."""
        before = self._state.get(alarm.id)
        self._state[alarm.id] = alarm.state
        announced = kind is ChangeKind.RAISED or (
            before is AlarmState.LATCHED and alarm.state is AlarmState.ACTIVE
        )
        if announced and self.ack_after_s is not None:
            self._due[alarm.id] = alarm.updated_at + self.ack_after_s
        if not alarm.open:
            self._due.pop(alarm.id, None)
            self._state.pop(alarm.id, None)
        return announced

    def due(self, now: float) -> list[str]:
        """Ids of the alarms whose acknowledgement is due at `now` (each given once)."""
        ids = [aid for aid, t in self._due.items() if now >= t]
        for aid in ids:
            del self._due[aid]
        return ids
