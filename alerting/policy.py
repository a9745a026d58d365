"""The alarm policy: a sans-I/O state machine from beats, equipment events and time to alarms.

`AlarmPolicy` never reads a clock and never does I/O: the adapter passes every time in (the
bed's signal time for beats and ticks, so accelerated replay works) and publishes / stores the
`AlarmChange`s it returns. Behaviour (see docs/alarms.md):

- debounce: criteria in `rules.py` need several beats (or seconds) before they fire;
- high alarms latch: when their cause ends they stay (LATCHED) until acknowledged;
- medium, low and technical alarms end by themselves when their cause ends;
- escalation: an open alarm not acknowledged within `escalate_after_s` escalates once;
- chaining: a physiological alarm suppresses open lesser ones on its bed, and a technical
  alarm (lead off, signal lost, device offline, noisy) suspends arrhythmia analysis of the bed;
- silence: an audio pause per bed; alarms still open when it runs out re-alarm.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from alerting.alarms import (
    EPISODE_ALARMS,
    RESTORING_EVENTS,
    SUPERSEDES,
    TECHNICAL_EVENTS,
    Alarm,
    AlarmChange,
    AlarmState,
    AlarmType,
    BeatInput,
    ChangeKind,
    EpisodeInput,
    Priority,
    TechnicalInput,
)
from alerting.rules import BedLimits, BedRules, PolicyConfig, Signal

__all__ = ["AlarmPolicy", "BedLimits", "PolicyConfig"]

# Conditions that are states (not one-off events): re-raised when a higher alarm that
# suppressed them ends while they are still present.
_STATEFUL = frozenset(
    {
        AlarmType.TACHY,
        AlarmType.BRADY,
        AlarmType.FREQUENT_PVCS,
        AlarmType.UNUSUAL_BEATS,
        AlarmType.ANOMALY_TREND,
        AlarmType.AFIB,
        AlarmType.SVT,
    }
)
# Alarms that a `noisy` signal does not suspend: true VF must alarm at any noise level (the
# detector finds it from the waveform, not from beats).
_THROUGH_NOISE = frozenset({AlarmType.VFIB})
# Restored technical alarms that a beat proves over (a beat needs a connected, live lead).
_BEAT_CLEARS = frozenset({AlarmType.LEAD_OFF, AlarmType.SIGNAL_LOST, AlarmType.DEVICE_OFFLINE})
_CONDITION_PRESENT = (AlarmState.ACTIVE, AlarmState.ACKNOWLEDGED)
_UNACKNOWLEDGED = (AlarmState.ACTIVE, AlarmState.LATCHED)


def _outranks(a: AlarmType, b: AlarmType) -> bool:
    """True when physiological alarm `a` suppresses `b` on the same bed (chaining)."""
    pa, pb = a.priority, b.priority
    if Priority.TECHNICAL in (pa, pb):
        return False
    if pa.rank != pb.rank:
        return pa.rank > pb.rank
    return b in SUPERSEDES.get(a, ())


class AlarmPolicy:
    """Alarm state for a whole ward; every method returns the alarm changes it caused."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self._rules: dict[str, BedRules] = {}
        self._limits: dict[str, BedLimits] = {}
        self._open: dict[str, Alarm] = {}  # open alarms by id
        self._index: dict[tuple[str, AlarmType], str] = {}  # (bed, type) -> open alarm id
        self._technical: dict[str, set[AlarmType]] = {}  # technical conditions present
        self._silenced_until: dict[str, float] = {}
        self._beat_seen: dict[str, float] = {}  # newest beat per bed, judged or not
        # restored alarms awaiting re-confirmation: id -> deadline (None until the bed is seen)
        self._unconfirmed: dict[str, float | None] = {}
        # the same grace on the receiver's wall clock, started by the first wall tick after the
        # bed's first input: a bed whose signal clock stops still expires them, but beats
        # replayed from a durable session (signal time long past) get their full grace
        self._unconfirmed_wall: dict[str, float] = {}

    # ------------------------------------------------------------------ inputs
    def on_beat(self, beat: BeatInput) -> list[AlarmChange]:
        """A scored beat. Beats of one bed must come in time order."""
        bed = beat.bed
        rules = self._bed(bed)
        self._beat_seen[bed] = beat.t
        out = self._confirm_window(bed, beat.t)
        for aid in [a for a, _ in self._unconfirmed.items() if self._open[a].bed == bed]:
            alarm = self._open[aid]
            if alarm.type in _BEAT_CLEARS:
                self._technical.get(bed, set()).discard(alarm.type)
                out += self._close(alarm, beat.t, "cleared", {"cleared_by": beat.beat_id})
                if not self._technical.get(bed):
                    rules.reset(beat.t)
        if self._technical.get(bed):
            return out  # analysis suspended: the signal cannot be judged
        out += self._apply(bed, rules.on_beat(beat), beat.t)
        return out

    def on_technical(self, event: TechnicalInput) -> list[AlarmChange]:
        """An equipment event; types the policy does not act on return no change. A rhythm
        episode (vt, vf, afib, svt) that comes this way goes to `on_episode`."""
        if event.type in EPISODE_ALARMS:
            return self.on_episode(
                EpisodeInput(event.bed, event.type, event.active, event.t, _detail(event.detail))
            )
        if event.type in RESTORING_EVENTS:
            type_, active = RESTORING_EVENTS[event.type], False
        elif event.type in TECHNICAL_EVENTS:
            type_, active = TECHNICAL_EVENTS[event.type], event.active
        else:
            return []
        bed, t = event.bed, event.t
        rules = self._bed(bed)
        present = self._technical.setdefault(bed, set())
        out: list[AlarmChange] = []
        if active:
            present.add(type_)
            aid = self._index.get((bed, type_))
            if aid is None:
                ev = {"detail": event.detail} if event.detail else {}
                out += self._raise(bed, type_, t, ev, now=t)
            else:
                self._unconfirmed.pop(aid, None)
            for alarm in self._bed_alarms(bed):
                if (
                    alarm.priority is not Priority.TECHNICAL
                    and alarm.state in _CONDITION_PRESENT
                    and self._suspended(bed, alarm.type, self._going_on(bed, alarm.type))
                ):
                    out += self._suppress(alarm, t, type_)
            rules.reset(t)
        else:
            was = type_ in present
            present.discard(type_)
            aid = self._index.get((bed, type_))
            if aid is not None:
                out += self._close(self._open[aid], t, "cleared", {})
            if was and not present:
                rules.reset(t)  # analysis (and the asystole timer) restarts now ...
                seen = self._beat_seen.get(bed)
                if seen is not None and seen > t:  # ... or at a beat the detector sent since:
                    rules.note_beat(seen)  # the end of a condition is known only after it
                # an episode that went on through it is raised again, unless it is a medium one
                # already announced (one announcement per episode, not one per artifact)
                resumed = [
                    s
                    for s in rules.resume(t)
                    if s.type.priority is Priority.HIGH or s.type not in rules.announced
                ]
                out += self._apply(bed, resumed, t)
        return out

    def on_episode(self, episode: EpisodeInput) -> list[AlarmChange]:
        """A rhythm episode from the detector starts or ends: VT and VF (high, latching), AF
        and SVT (medium). One that starts while the bed's analysis is suspended (lead off,
        artifact, ...) raises nothing, then or later; VF alarms through artifact, and so does
        a VT the detector marks `organised` (a regular run it found inside the artifact)."""
        bed = episode.bed
        rules = self._bed(bed)
        out = self._confirm_window(bed, episode.t)
        type_ = EPISODE_ALARMS[episode.type]
        suspended = self._suspended(bed, type_, episode.detail)
        signals = rules.on_episode(episode, suspended=suspended)
        out += self._apply(bed, signals, episode.t)
        return out

    def tick(self, bed: str | None, now: float) -> list[AlarmChange]:
        """Time passes, one clock per purpose (docs/alarms.md "Clocks"). tick(bed, t): the
        bed's signal clock reached t, so its time-driven criteria (asystole, pause) and the
        re-confirmation of restored alarms run; tick(None, t): the receiver's wall clock reached
        t, so escalation and re-alarm after silence run (and restored alarms expire), for every
        bed. Escalation never runs on a device's clock."""
        out: list[AlarmChange] = []
        if bed is not None:
            rules = self._bed(bed)
            out += self._confirm_window(bed, now)
            if not self._technical.get(bed):
                out += self._apply(bed, rules.on_time(now), now)
            out += self._expire_unconfirmed(bed, now)
            return out
        for aid, deadline in self._unconfirmed.items():
            if deadline is not None:
                self._unconfirmed_wall.setdefault(aid, now + self.config.restore_grace_s)
        for b in sorted({a.bed for a in self._open.values()}):
            out += self._expire_unconfirmed(b, now, wall=True)
            out += self._escalate_and_realarm(b, now)
        return out

    def restart_gap(self, bed: str, t: float) -> list[AlarmChange]:
        """The bed's analysis restarts at signal time `t` after a hole (a new detector stream,
        missing samples): the asystole and pause clocks start again there, since a fault is no
        arrhythmia (docs/faults.md). No change now; the criteria run on the next beat or tick."""
        self._bed(bed).restart_gap(t)
        return []

    def forget(self, bed: str) -> bool:
        """Drop an idle bed's analysis state (the service bounds its bed table); refused (False)
        while the bed has open alarms. Staff-set limits are kept."""
        if any(a.bed == bed for a in self._open.values()):
            return False
        self._rules.pop(bed, None)
        self._beat_seen.pop(bed, None)
        self._technical.pop(bed, None)
        self._silenced_until.pop(bed, None)
        return True

    def acknowledge(self, alarm_id: str, now: float, by: str = "") -> list[AlarmChange]:
        """Staff acknowledge an alarm: an active one stays until its cause ends; a latched one
        ends. Unknown, ended or already acknowledged alarms give no change."""
        alarm = self._open.get(alarm_id)
        if alarm is None or alarm.state not in _UNACKNOWLEDGED:
            return []
        ack: dict[str, Any] = {
            "acknowledged_at": now,
            "acknowledged_by": by,
            "updated_at": now,
            "silenced_until": None,
        }
        if alarm.state is AlarmState.LATCHED:
            done = alarm.evolve(
                state=AlarmState.ENDED, ended_at=now, end_reason="acknowledged", **ack
            )
            self._forget(done)
            return [AlarmChange(ChangeKind.ACKNOWLEDGED, done)]
        acked = alarm.evolve(state=AlarmState.ACKNOWLEDGED, **ack)
        self._open[acked.id] = acked
        return [AlarmChange(ChangeKind.ACKNOWLEDGED, acked)]

    def silence(self, bed: str, now: float, seconds: float | None = None) -> list[AlarmChange]:
        """Audio pause for a bed: its unacknowledged alarms (and new medium/low/technical ones)
        are silenced until now + seconds (default `silence_s`), then re-alarm if still open."""
        seconds = self.config.silence_s if seconds is None else seconds
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"seconds: must be a positive number, got {seconds!r}")
        until = now + seconds
        self._silenced_until[bed] = until
        out = []
        for alarm in self._bed_alarms(bed):
            if alarm.state in _UNACKNOWLEDGED:
                out.append(
                    self._update(alarm, ChangeKind.SILENCED, silenced_until=until, updated_at=now)
                )
        return out

    def set_limits(self, bed: str, limits: BedLimits) -> None:
        """Per-bed heart-rate / ectopy limits; they apply from the bed's next beat."""
        if not isinstance(limits, BedLimits):
            raise TypeError(f"limits: must be a BedLimits, got {type(limits).__name__}")
        self._limits[bed] = limits
        if bed in self._rules:
            self._rules[bed].limits = limits

    def limits(self, bed: str) -> BedLimits:
        return self._limits.get(bed, self.config.default_limits)

    def restore(self, alarms: Iterable[Alarm]) -> None:
        """Reload open alarms (from the store) after a restart. A condition seen again updates
        its restored alarm instead of raising a duplicate; a restored alarm whose cause is not
        seen again within `restore_grace_s` of the bed's first input ends (high ones latch)."""
        for alarm in alarms:
            if not alarm.open or alarm.id in self._open:
                continue
            key = (alarm.bed, alarm.type)
            if key in self._index:
                continue
            self._open[alarm.id] = alarm
            self._index[key] = alarm.id
            if alarm.priority is Priority.TECHNICAL:
                self._technical.setdefault(alarm.bed, set()).add(alarm.type)
            if alarm.state in _CONDITION_PRESENT:
                self._unconfirmed[alarm.id] = None

    # ------------------------------------------------------------------ queries
    def active(self, bed: str | None = None) -> list[Alarm]:
        """Open alarms (active, acknowledged or latched), most urgent first."""
        alarms = [a for a in self._open.values() if bed is None or a.bed == bed]
        return sorted(
            alarms,
            key=lambda a: (-a.priority.rank, a.priority is Priority.TECHNICAL, a.started_at, a.id),
        )

    def get(self, alarm_id: str) -> Alarm | None:
        return self._open.get(alarm_id)

    def heart_rate(self, bed: str) -> float | None:
        """The policy's current heart rate for a bed (mean of the last RR intervals)."""
        rules = self._rules.get(bed)
        return None if rules is None else rules.hr_bpm

    @property
    def beds(self) -> list[str]:
        return sorted(self._rules)

    # ------------------------------------------------------------------ machinery
    def _bed(self, bed: str) -> BedRules:
        rules = self._rules.get(bed)
        if rules is None:
            rules = self._rules[bed] = BedRules(bed, self.config, self.limits(bed))
        return rules

    def _bed_alarms(self, bed: str) -> list[Alarm]:
        return [a for a in self._open.values() if a.bed == bed]

    def _apply(self, bed: str, signals: list[Signal], now: float) -> list[AlarmChange]:
        out: list[AlarmChange] = []
        for s in signals:
            aid = self._index.get((bed, s.type))
            if s.present:
                if aid is None:
                    out += self._raise(bed, s.type, s.t, s.evidence, now)
                else:
                    out += self._again(self._open[aid], s, now)
            elif aid is not None:
                out += self._end_condition(self._open[aid], s)
        return out

    def _raise(
        self, bed: str, type_: AlarmType, t: float, evidence: dict[str, Any], now: float
    ) -> list[AlarmChange]:
        rules = self._rules.get(bed)
        for other in self._bed_alarms(bed):
            if other.state in _CONDITION_PRESENT and _outranks(other.type, type_):
                if rules is not None and other.priority is type_.priority:
                    rules.announced.add(type_)  # its own chain names it: not announced later
                return []  # chained: the higher alarm already covers it
        if type_.priority is not Priority.TECHNICAL and self._suspended(bed, type_):
            return []
        if rules is not None:
            rules.announced.add(type_)
        alarm = Alarm.new(bed, type_, t, evidence)
        until = self._silenced_until.get(bed)
        if until is not None and until > now and type_.priority is not Priority.HIGH:
            alarm = alarm.evolve(silenced_until=until)
        self._open[alarm.id] = alarm
        self._index[(bed, type_)] = alarm.id
        out = [AlarmChange(ChangeKind.RAISED, alarm)]
        for other in self._bed_alarms(bed):
            if other.state in _CONDITION_PRESENT and _outranks(type_, other.type):
                out += self._suppress(other, t, type_)
        return out

    def _again(self, alarm: Alarm, s: Signal, now: float) -> list[AlarmChange]:
        """The condition of an open alarm is seen (again): confirm, re-activate or add evidence."""
        self._unconfirmed.pop(alarm.id, None)
        evidence = dict(alarm.evidence)
        evidence["occurrences"] = int(evidence.get("occurrences", 1)) + 1
        evidence["last"] = {**s.evidence, "t": s.t}
        if alarm.state is AlarmState.LATCHED:
            out = [
                self._update(
                    alarm,
                    ChangeKind.UPDATED,
                    state=AlarmState.ACTIVE,
                    cleared_at=None,
                    evidence=evidence,
                    updated_at=s.t,
                )
            ]
            for other in self._bed_alarms(alarm.bed):  # its cause is back: chain again
                if other.state in _CONDITION_PRESENT and _outranks(alarm.type, other.type):
                    out += self._suppress(other, s.t, alarm.type)
            return out
        return [self._update(alarm, ChangeKind.UPDATED, evidence=evidence, updated_at=s.t)]

    def _end_condition(self, alarm: Alarm, s: Signal) -> list[AlarmChange]:
        self._unconfirmed.pop(alarm.id, None)
        if alarm.state is AlarmState.LATCHED:
            return []
        if alarm.type.latching and alarm.state is AlarmState.ACTIVE:
            out = [
                self._update(
                    alarm,
                    ChangeKind.LATCHED,
                    state=AlarmState.LATCHED,
                    cleared_at=s.t,
                    updated_at=s.t,
                )
            ]
        else:
            out = self._close(alarm, s.t, "cleared", {})
        return out + self._reraise(alarm.bed, s.t)

    def _close(
        self,
        alarm: Alarm,
        t: float,
        reason: str,
        extra: dict[str, Any],
        kind: ChangeKind = ChangeKind.ENDED,
    ) -> list[AlarmChange]:
        evidence = {**alarm.evidence, **extra} if extra else alarm.evidence
        done = alarm.evolve(
            state=AlarmState.ENDED,
            ended_at=t,
            cleared_at=alarm.cleared_at or t,
            end_reason=reason,
            updated_at=t,
            evidence=evidence,
        )
        self._forget(done)
        return [AlarmChange(kind, done)]

    def _suspended(
        self, bed: str, type_: AlarmType, episode: Mapping[str, Any] | None = None
    ) -> bool:
        """True when a technical condition on the bed stops `type_` from being judged. Only
        `noisy` lets VF through, and a VT episode (`episode`: its detail; None: the bed's
        current one) that the detector found on beats it judged clean, starting before the
        artifact (its event may come after the `noisy` one), or marks `organised` (a regular V
        run inside what its quality index calls artifact: slow VT is wide and large against
        the lead's clean past, mitdb 223)."""
        present = self._technical.get(bed)
        if not present:
            return False
        if not present <= {AlarmType.NOISY}:
            return True
        if type_ is AlarmType.VTACH:
            if episode is None:
                rules = self._rules.get(bed)
                episode = {} if rules is None else rules.episodes.get(type_, {})
            if episode.get("organised") is True:
                return False
            onset = episode.get("onset_t")
            aid = self._index.get((bed, AlarmType.NOISY))
            noisy_since = self._open[aid].started_at if aid is not None else None
            return not (
                isinstance(onset, int | float) and noisy_since is not None and onset < noisy_since
            )
        return type_ not in _THROUGH_NOISE

    def _going_on(self, bed: str, type_: AlarmType) -> dict[str, Any]:
        """What a technical condition that starts now judges a present episode by: only its
        `organised` mark (a VT that started on clean beats is suppressed by the artifact and
        sounds again after it, as any other)."""
        rules = self._rules.get(bed)
        ep = {} if rules is None else rules.episodes.get(type_, {})
        return {"organised": ep.get("organised") is True}

    def _suppress(self, alarm: Alarm, t: float, by: AlarmType) -> list[AlarmChange]:
        """A higher or technical alarm takes over: latch a high one, end anything else. A high
        alarm superseded by another high one (asystole by VF: the same event, named better)
        ends, since the one that replaces it latches."""
        self._unconfirmed.pop(alarm.id, None)
        replaced = by.priority is alarm.priority and _outranks(by, alarm.type)
        if alarm.type.latching and alarm.state is AlarmState.ACTIVE and not replaced:
            ev = {**alarm.evidence, "suppressed_by": by.value}
            return [
                self._update(
                    alarm,
                    ChangeKind.LATCHED,
                    state=AlarmState.LATCHED,
                    cleared_at=t,
                    updated_at=t,
                    evidence=ev,
                )
            ]
        return self._close(
            alarm, t, "suppressed", {"suppressed_by": by.value}, kind=ChangeKind.SUPPRESSED
        )

    def _reraise(self, bed: str, now: float) -> list[AlarmChange]:
        """Conditions still present that a now-gone higher alarm was suppressing are raised,
        unless this presence was already announced (a continuing condition sounds once)."""
        rules = self._rules.get(bed)
        if rules is None or self._technical.get(bed):
            return []
        out: list[AlarmChange] = []
        waiting = (rules.present & _STATEFUL) - rules.announced
        for type_ in sorted(waiting, key=lambda x: (-x.priority.rank, x.value)):
            if (bed, type_) not in self._index:
                ev = {**rules.episodes.get(type_, {}), "hr_bpm": rules.hr_bpm, "resumed": True}
                out += self._raise(bed, type_, now, ev, now)
        return out

    def _confirm_window(self, bed: str, now: float) -> list[AlarmChange]:
        """Start the re-confirmation clock of restored alarms at the bed's first input."""
        for aid, deadline in self._unconfirmed.items():
            if deadline is None and self._open[aid].bed == bed:
                self._unconfirmed[aid] = now + self.config.restore_grace_s
        return []

    def _expire_unconfirmed(self, bed: str, now: float, wall: bool = False) -> list[AlarmChange]:
        out: list[AlarmChange] = []
        for aid, deadline in list(self._unconfirmed.items()):
            alarm = self._open[aid]
            if wall:
                deadline = self._unconfirmed_wall.get(aid)
            if alarm.bed != bed or deadline is None or now < deadline:
                continue
            del self._unconfirmed[aid]
            self._unconfirmed_wall.pop(aid, None)
            if alarm.state is AlarmState.LATCHED:
                continue
            if alarm.priority is Priority.TECHNICAL:
                self._technical.get(bed, set()).discard(alarm.type)
            if alarm.type.latching and alarm.state is AlarmState.ACTIVE:
                out.append(
                    self._update(
                        alarm,
                        ChangeKind.LATCHED,
                        state=AlarmState.LATCHED,
                        cleared_at=now,
                        updated_at=now,
                    )
                )
            else:
                out += self._close(alarm, now, "cleared", {"not_seen_after_restart": True})
        return out

    def _escalate_and_realarm(self, bed: str, now: float) -> list[AlarmChange]:
        out: list[AlarmChange] = []
        until = self._silenced_until.get(bed)
        if until is not None and now >= until:
            del self._silenced_until[bed]
        for alarm in self._bed_alarms(bed):
            if alarm.state not in _UNACKNOWLEDGED:
                continue
            silenced_until = alarm.silenced_until
            silenced = silenced_until is not None
            if silenced_until is not None and now >= silenced_until:
                change = self._update(
                    alarm, ChangeKind.REALARMED, silenced_until=None, updated_at=now
                )
                out.append(change)
                alarm, silenced = change.alarm, False
            if (
                not silenced
                and not alarm.escalated
                and alarm.priority is not Priority.LOW
                and now - alarm.started_at >= self.config.escalate_after_s
            ):
                out.append(
                    self._update(
                        alarm,
                        ChangeKind.ESCALATED,
                        escalated=True,
                        escalated_at=now,
                        updated_at=now,
                    )
                )
        return out

    def _update(self, alarm: Alarm, kind: ChangeKind, **changes: Any) -> AlarmChange:
        new = alarm.evolve(**changes)
        self._open[new.id] = new
        return AlarmChange(kind, new)

    def _forget(self, alarm: Alarm) -> None:
        self._open.pop(alarm.id, None)
        self._unconfirmed.pop(alarm.id, None)
        if self._index.get((alarm.bed, alarm.type)) == alarm.id:
            del self._index[(alarm.bed, alarm.type)]


def _detail(text: str) -> dict[str, Any]:
    """A TechnicalInput's detail (JSON text) as a dict; anything else gives {}."""
    if not text:
        return {}
    try:
        d = json.loads(text)
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}
