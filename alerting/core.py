"""The alerting core, sans-I/O: decoded bus messages in -> alarm policy -> store -> metrics,
dashboard hub and alarm publications out.

`AlertingCore.on_message(topic, payload, now)` is the one entry point for bus messages (the MQTT
and NATS links and the benches call it); `tick(now)` is the wall-clock tick; the HTTP API lists
and acknowledges alarms through it (`AlarmDesk`). It never touches a socket: the clock is passed
in (`now`, or the `clock` it was built with), alarm publications go to the `publish` callable
given. It runs on one thread (the service's event loop). Every alarm change is stored before it
is broadcast.

Alarm changes are published to `ecg/v1/{ward}/{bed}/alarms` (QoS 1, not retained) as
`{"kind": <ChangeKind>, "alarm": Alarm.to_dict()}`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from alerting.alarms import (
    EPISODE_ALARMS,
    AlarmChange,
    AlarmQuery,
    AlarmState,
    BeatInput,
    EpisodeInput,
    TechnicalInput,
)
from alerting.config import AlertingConfig
from alerting.hub import HubSettings, WardHub
from alerting.metrics import AlertingMetrics
from alerting.policy import AlarmPolicy
from alerting.store import AlarmStore
from alerting.writer import ChangeWriter, InlineWriter
from ecgcommon import protocol, topics
from ecgcommon.limits import MAX_LATENESS_S, LogLimiter

log = logging.getLogger("alerting")

KINDS = topics.KINDS  # alerting reads every kind of the ward
# The policy's asystole/pause clock follows the detector's analysis watermark (every beat
# before it has been published), never the raw samples, so a slow detector is not an asystole.
# Samples this far ahead of the watermark while the lead is on mean the detector has stopped
# analysing the bed: a technical alarm, since asystole could no longer be detected. It is shorter
# than the 4 s asystole criterion, so a detector outage is reported before an asystole could be
# (the watermark normally trails the samples by up to a chunk + 1.4 s, docs/faults.md).
STALL_S = 3.0
# After missing samples the detector's QRS re-learns (QRSConfig.learn_s, 2 s) before it analyses
# again: the stall is measured from then, so a short transmission gap is no signal_lost. A gap
# is a jump of more than SAMPLE_GAP_S between one chunk's end and the next one's start.
RELEARN_S = 2.0
SAMPLE_GAP_S = 0.1
_UNITS_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3}
# A resumed durable session's backlog (beats, events queued while alerting was away) may be this
# old; it is told from live data by coming before the first samples, within REPLAY_WINDOW_S.
REPLAY_MAX_S = 3600.0
# A rhythm episode's `t` is its onset (or end) on the signal clock, known to the detector only
# once its window has seen enough beats (AF: tens of seconds), so it may be this much older.
EPISODE_LATENESS_S = 600.0
REPLAY_WINDOW_S = 10.0
# A bed whose timestamps have all been off the receiver's clock this long has a wrong device
# clock (clock_skew technical alarm); a single forged or corrupt timestamp is only dropped.
SKEW_CONFIRM_S = 3.0
# When the bed table is full, a bed that never had a beat may make room after this much
# silence, a bed with beats only after NEW_BED_IDLE_S (and never one with open alarms).
JUNK_BED_IDLE_S = 1.0
NEW_BED_IDLE_S = 30.0
_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "samples": protocol.decode_samples,
    "beats": protocol.decode_beats_message,
    "events": protocol.decode_event,
    "status": protocol.decode_status,
}


def alarms_topic(ward: str, bed: str) -> str:
    """Where alarm changes are published (not one of the detector's input kinds)."""
    return f"{topics.PREFIX}/{topics.VERSION}/{ward}/{bed}/alarms"


def ward_hub(config: AlertingConfig) -> WardHub:
    """The dashboard hub of the configured ward, sized as configured (AlertingConfig names
    the `HubSettings` fields alike)."""
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(HubSettings)}
    return WardHub(config.ward, HubSettings(**settings))


class AlertingCore:
    """Messages in -> policy -> store -> metrics, dashboard hub and alarm publications out.

    Also the `AlarmDesk` the HTTP API uses for listing and acknowledging alarms.
    """

    def __init__(
        self,
        config: AlertingConfig,
        *,
        hub: WardHub,
        policy: AlarmPolicy,
        store: AlarmStore,
        metrics: AlertingMetrics,
        registry: CollectorRegistry,
        publish: Callable[[str, bytes], None] | None = None,
        clock: Callable[[], float] = time.time,
        writer: ChangeWriter | None = None,
    ) -> None:
        self.config = config
        self.hub = hub
        self.policy = policy
        self.store = store
        # who writes the store: at once by default; the service's writer thread keeps disk
        # syncs off the event loop (alerting/writer.py)
        self.writer: ChangeWriter = writer if writer is not None else InlineWriter(store)
        self.metrics = metrics
        self.publish = publish
        self.clock = clock
        self.messages = Counter(
            "ecg_alerting_messages_total",
            "MQTT messages received, by kind",
            ["kind"],
            registry=registry,
        )
        self.store_errors = Counter(
            "ecg_alerting_store_errors_total",
            "Alarm changes that could not be stored",
            registry=registry,
        )
        self.holes = Counter(
            "ecg_alerting_analysis_holes_total",
            "Holes in a bed's analysis (a new detector stream, missing samples): the asystole and "
            "pause clocks restart after them",
            registry=registry,
        )
        for kind in KINDS:
            self.messages.labels(kind)
        self._last_beat_t: dict[str, float] = {}
        self._analysed: dict[str, float] = {}  # detector's watermark (signal time) per bed
        self._lead_off: set[str] = set()
        self._stalled: set[str] = set()  # beds the detector stopped analysing
        self._beds: dict[str, float] = {}  # bed -> wall time of its newest message
        self._has_beats: set[str] = set()
        self._skew_since: dict[str, float] = {}  # wall time of the first skewed message in a row
        self._skewed: set[str] = set()  # beds with clock_skew active
        self._log_drop = LogLimiter(log)
        self._n_holes = 0
        self._replay_until = -math.inf  # wall time; see begin_replay
        self._sample_end: dict[str, float] = {}  # signal time after the newest sample
        self._resumed: dict[str, float] = {}  # signal time the samples came back after a gap

    @property
    def stalled_beds(self) -> frozenset[str]:
        """Beds whose samples arrive but the detector does not analyse (signal_lost raised)."""
        return frozenset(self._stalled)

    def begin_replay(self) -> None:
        """The bus resumed this service's durable session: the beats and events it queued while
        the service was away come first, and may be up to REPLAY_MAX_S old. The backlog ends at
        the first samples message (QoS 0, never queued) or after REPLAY_WINDOW_S."""
        self._replay_until = self.clock() + REPLAY_WINDOW_S

    # -- start-up ------------------------------------------------------------------------
    def restore(self) -> int:
        """Reload open alarms from the store into the policy, metrics and hub (after a restart)."""
        stored = self.store.active()
        self.policy.restore(stored)
        active = self.policy.active()
        self.metrics.sync_active(active)
        self.hub.restore_alarms(a.to_dict() for a in active)
        return len(active)

    # -- messages ------------------------------------------------------------------------
    def drop(self, reason: str, topic: str, detail: object) -> None:
        """Count a message that cannot be used, log it rate-limited; the service carries on."""
        self.metrics.drop(reason)
        self._log_drop(reason, "%s: %s", topic, detail)

    def on_message(self, topic: str, payload: bytes, now: float | None = None) -> None:
        """One bus message (any kind of the ward) received at wall time `now` (unix s; the
        core's clock when None). Never raises: bad input is counted, logged and dropped."""
        try:
            t = topics.parse_topic(topic)
        except topics.TopicError as exc:
            self.drop("bad_topic", topic, exc)
            return
        if t.ward != self.config.ward:
            self.drop("wrong_ward", topic, t.ward)
            return
        self.messages.labels(t.kind).inc()
        try:
            msg = _DECODERS[t.kind](payload)
            if now is None:
                now = self.clock()
            if not self._admit(t.bed, now):
                self.drop("too_many_beds", topic, f"already {len(self._beds)} beds, none idle")
                return
            if t.kind == "status" or self._clock_ok(
                t.bed, _times(msg), topic, now, late_s=self._lateness(t.kind, msg, now)
            ):
                self._dispatch(t.kind, t.bed, msg, topic)
        except protocol.DecodeError as exc:
            self.drop(exc.reason, topic, exc)
        except Exception as exc:  # a bug must not kill the service: count it and go on
            log.exception("error handling a message on %s", topic)
            self.drop("internal_error", topic, exc)

    def _lateness(self, kind: str, msg: object, now: float) -> float | None:
        """How late this message's times may be beyond MAX_LATENESS_S (None: no more): a
        resumed session's backlog up to REPLAY_MAX_S, a rhythm episode EPISODE_LATENESS_S."""
        if kind == "samples":  # samples are QoS 0, never queued: the backlog is over
            self._replay_until = -math.inf
        backlog = kind in ("beats", "events") and now < self._replay_until
        if backlog:
            return REPLAY_MAX_S
        if isinstance(msg, protocol.Event) and msg.type in EPISODE_ALARMS:
            return EPISODE_LATENESS_S  # an episode's onset/end is found after the fact
        return None

    def _dispatch(self, kind: str, bed: str, msg: Any, topic: str) -> None:
        if kind == "samples":
            self._samples(bed, msg)
        elif kind == "beats":
            self._has_beats.add(bed)
            self._beats(bed, msg, topic)
        elif kind == "events":
            self._event(bed, msg, topic)
        elif kind == "status":
            self._status(bed, msg)

    # -- limits --------------------------------------------------------------------------
    def _admit(self, bed: str, now: float) -> bool:
        """Track the bed; when the table is full, an idle bed without open alarms makes room
        (junk names first), so a new real bed is never refused for stray topics."""
        if bed not in self._beds and len(self._beds) >= self.config.max_beds:
            if not self._evict(now):
                return False
        self._beds[bed] = now
        return True

    def _evict(self, now: float) -> bool:
        order = sorted(self._beds.items(), key=lambda kv: (kv[0] in self._has_beats, kv[1]))
        for name, seen in order:
            idle = NEW_BED_IDLE_S if name in self._has_beats else JUNK_BED_IDLE_S
            if now - seen < idle:
                if name in self._has_beats:
                    return False  # sorted by age: every later bed is younger still
                continue
            if self.forget(name):
                self.metrics.drop("bed_evicted")
                return True
        return False

    def forget(self, bed: str) -> bool:
        """Drop an idle bed from the policy, the hub and the per-bed metrics; False (kept) while
        it has open alarms."""
        if not self.policy.forget(bed):
            return False
        self.hub.forget(bed)
        self._beds.pop(bed, None)
        for table in (
            self._last_beat_t,
            self._analysed,
            self._skew_since,
            self._sample_end,
            self._resumed,
        ):
            table.pop(bed, None)
        for group in (self._lead_off, self._stalled, self._skewed, self._has_beats):
            group.discard(bed)
        m = self.metrics
        classes = (*protocol.BEAT_CLASSES, "unknown")
        for metric, labels in (
            (m.bed_heart_rate, [(bed,)]),
            (m.bed_beats, [(bed,)]),
            (m.bed_anomalous, [(bed,)]),
            (m.bed_classes, [(bed, c) for c in classes]),
        ):
            for values in labels:
                with contextlib.suppress(KeyError):
                    metric.remove(*values)
        return True

    def _clock_ok(
        self, bed: str, times: list[float], topic: str, now: float, late_s: float | None = None
    ) -> bool:
        """Device timestamps within the allowed skew of the receiver's clock (late ones by
        MAX_LATENESS_S more, or `late_s` for a durable session's backlog); others are dropped,
        and a bed whose timestamps stay off for SKEW_CONFIRM_S gets a clock_skew technical alarm
        until they are right again."""
        skew = self.config.max_clock_skew_s
        if skew <= 0 or not times:
            return True
        lo, hi = now - skew - (MAX_LATENESS_S if late_s is None else late_s), now + skew
        bad = [x for x in times if not lo <= x <= hi]
        if not bad:
            self._skew_since.pop(bed, None)
            if bed in self._skewed:
                self._skewed.discard(bed)
                self.hub.on_status(bed, clock_skew=False)
                self.commit(self.policy.on_technical(TechnicalInput(bed, "clock_skew", False, now)))
            return True
        worst = max(bad, key=lambda x: abs(x - now))
        self.drop("clock_skew", topic, f"timestamp {worst:.3f} is {worst - now:+.1f} s off")
        since = self._skew_since.setdefault(bed, now)
        if bed not in self._skewed and now - since >= SKEW_CONFIRM_S:
            self._skewed.add(bed)
            self.hub.on_status(bed, clock_skew=True)
            detail = json.dumps({"offset_s": round(worst - now, 1), "allowed_s": skew})
            self.commit(
                self.policy.on_technical(
                    TechnicalInput(bed, "clock_skew", True, now, detail=detail)
                )
            )
        return False

    def sweep(self, now: float) -> None:
        """Forget beds silent for `bed_idle_s` (wall clock) that have no open alarms."""
        for name, seen in list(self._beds.items()):
            if now - seen > self.config.bed_idle_s:
                self.forget(name)

    def _samples(self, bed: str, chunk: protocol.SampleChunk) -> None:
        scale = _UNITS_TO_MV.get(chunk.units.strip().lower())
        if scale is None:
            self.drop("bad_units", bed, chunk.units)
            return
        x = chunk.physical()[:, 0] * scale
        self.hub.on_samples(bed, chunk.fs, chunk.first_sample, x, chunk.t0)
        t_end = chunk.t0 + chunk.n_samples / chunk.fs
        prev_end = self._sample_end.get(bed)
        if prev_end is not None and chunk.t0 - prev_end > SAMPLE_GAP_S:
            self._resumed[bed] = chunk.t0  # samples were missing: the detector re-learns
        self._sample_end[bed] = t_end if prev_end is None else max(prev_end, t_end)
        analysed = self._analysed.get(bed)
        if analysed is None or bed in self._lead_off or bed in self._stalled:
            return  # not analysed yet (e.g. the detector is starting), or already reported
        analysed = max(analysed, self._resumed.get(bed, -math.inf) + RELEARN_S)
        if t_end - analysed > STALL_S:
            self._stalled.add(bed)
            detail = f"no analysis from the detector for {t_end - analysed:.1f} s"
            self.commit(
                self.policy.on_technical(
                    TechnicalInput(bed, "signal_lost", True, t_end, detail=detail)
                )
            )

    def _beats(self, bed: str, msg: protocol.BeatsMessage, topic: str) -> None:
        known = self._analysed.get(bed)
        since = msg.analysed_from
        newest = [b.t for b in msg.beats if b.bed == bed] + (
            [] if msg.analysed_until is None else [msg.analysed_until]
        )
        if since is not None:  # never past the message's own (skew-checked) times
            since = min(since, max(newest)) if newest else None
        if since is not None and known is not None and since > known:
            # the detector's unbroken analysis began after what it had analysed before: a hole
            # (detector restart, lost samples) is no pause or asystole, the clocks restart
            self._analysed[bed] = since
            self.holes.inc()
            self._n_holes += 1
            if self._n_holes <= 20 or self._n_holes % 1000 == 0:  # a detector restart: every bed
                log.info(
                    "bed %s: no analysis from %.2f to %.2f (%.1f s, hole #%d): gap clocks restart",
                    bed,
                    known,
                    since,
                    since - known,
                    self._n_holes,
                )
            self.commit(self.policy.restart_gap(bed, since))
        self._beat_list(bed, msg.beats, topic)
        marks = [b.t for b in msg.beats if b.bed == bed]
        if msg.analysed_until is not None:
            marks.append(msg.analysed_until)
        if not marks:
            return
        until = max(max(marks), self._analysed.get(bed, -math.inf))
        self._analysed[bed] = until
        if bed in self._stalled:
            self._stalled.discard(bed)
            self.commit(self.policy.on_technical(TechnicalInput(bed, "signal_lost", False, until)))
        self.commit(self.policy.tick(bed, until))

    def _beat_list(self, bed: str, beats: list[protocol.BeatResult], topic: str) -> None:
        for beat in beats:
            if beat.bed != bed:
                self.drop("bed_mismatch", topic, f"beat of bed {beat.bed!r}")
                continue
            last = self._last_beat_t.get(bed)
            if last is not None and beat.t <= last:
                self.drop("stale_beat", topic, f"beat {beat.beat_id} at {beat.t} <= {last}")
                continue
            try:
                inp = BeatInput(
                    bed,
                    beat.t,
                    beat.beat_id,
                    beat.anomalous,
                    rr_s=beat.rr_s,
                    hr_bpm=beat.hr_bpm,
                    score=beat.score,
                    cls=beat.cls,
                )
            except ValueError as exc:
                self.drop("invalid_beat", topic, exc)
                continue
            self._last_beat_t[bed] = beat.t
            self.hub.on_beat(
                bed,
                beat_id=beat.beat_id,
                sample=beat.sample,
                t=beat.t,
                score=beat.score,
                threshold=beat.threshold,
                anomalous=beat.anomalous,
                rr_s=beat.rr_s,
                hr_bpm=beat.hr_bpm,
                errors=beat.errors,
                cls=beat.cls,
            )
            self.metrics.observe_beat(bed, beat.anomalous, beat.hr_bpm, cls=beat.cls)
            self.commit(self.policy.on_beat(inp))

    def _event(self, bed: str, event: protocol.Event, topic: str) -> None:
        if event.bed != bed:
            self.drop("bed_mismatch", topic, f"event of bed {event.bed!r}")
            return
        if event.type == "lead_off":
            self.hub.on_status(bed, lead_ok=not event.active)
            (self._lead_off.add if event.active else self._lead_off.discard)(bed)
        elif event.type == "lead_restored":
            self.hub.on_status(bed, lead_ok=True)
        elif event.type in ("signal_lost", "noisy", "device_offline"):
            self.hub.on_status(bed, **{event.type: event.active})
        elif event.type in EPISODE_ALARMS:  # a rhythm episode: its own input, detail as is
            try:
                episode = EpisodeInput(bed, event.type, event.active, event.t, dict(event.detail))
            except ValueError as exc:
                self.drop("invalid_event", topic, exc)
                return
            self.hub.on_episode(bed, event.type, event.active, event.t, episode.detail)
            self.commit(self.policy.on_episode(episode))
            return
        try:
            inp = TechnicalInput(
                bed,
                event.type,
                event.active,
                event.t,
                detail=json.dumps(dict(event.detail), default=str) if event.detail else "",
            )
        except ValueError as exc:
            self.drop("invalid_event", topic, exc)
            return
        self.commit(self.policy.on_technical(inp))

    def _status(self, bed: str, status: protocol.Status) -> None:
        fields: dict[str, Any] = {"state": status.state}
        if status.device:
            fields["device"] = status.device
        if math.isfinite(status.t):
            fields["status_t"] = status.t
        self.hub.on_status(bed, **fields)

    # -- alarms --------------------------------------------------------------------------
    def commit(self, changes: list[AlarmChange]) -> None:
        """Store, count, broadcast and publish the policy's changes (stored first)."""
        if not changes:
            return
        batch = list(changes)
        self.writer.submit(batch, lambda err: self._stored(batch, err))

    def when_stored(self, then: Callable[[], None]) -> None:
        """Call `then` once every change committed so far is stored and broadcast (at once with
        the inline writer): the API's read-your-writes, e.g. an acknowledgement's 200."""
        self.writer.when_done(then)

    def _stored(self, changes: list[AlarmChange], err: BaseException | None) -> None:
        """A batch is stored (or refused): count, broadcast and publish it."""
        if err is not None:  # a failing disk must not hide alarms from the ward
            log.error("could not store %d alarm change(s)", len(changes), exc_info=err)
            self.store_errors.inc(len(changes))
        self.metrics.observe(changes)
        for kind, alarm in changes:
            doc = alarm.to_dict()
            self.hub.on_alarm(doc)
            if self.publish is not None:
                payload = json.dumps({"kind": str(kind), "alarm": doc}, separators=(",", ":"))
                try:
                    self.publish(alarms_topic(self.config.ward, alarm.bed), payload.encode())
                except Exception:
                    log.exception("could not publish alarm %s", alarm.id)

    def tick(self, now: float | None = None) -> None:
        """Wall-clock tick: escalation, re-alarm after silence, expiry of restored alarms, idle
        beds forgotten. The signal clock ticks the policy per bed from its beats (`_beats`)."""
        wall = self.clock() if now is None else now
        self.commit(self.policy.tick(None, wall))
        self.sweep(wall)

    def list_alarms(self, query: AlarmQuery) -> list[dict[str, Any]]:
        """Alarms as `Alarm.to_dict()`, newest first: open ones from the policy, others from
        the store."""
        q = query
        if q.state == "open":
            found = [
                a
                for a in self.policy.active(q.bed)
                if (q.priority is None or a.priority.value == q.priority)
                and (q.since is None or a.started_at >= q.since)
            ]
            found.sort(key=lambda a: (-a.started_at, a.id))
            return [a.to_dict() for a in found[: q.limit]]
        rows = self.store.query(
            bed=q.bed, priority=q.priority, state=q.state, since=q.since, limit=q.limit
        )
        return [a.to_dict() for a in rows]

    def get_alarm(self, alarm_id: str) -> dict[str, Any] | None:
        alarm = self.policy.get(alarm_id) or self.store.get(alarm_id)
        return None if alarm is None else alarm.to_dict()

    def acknowledge(self, alarm_id: str, by: str) -> tuple[str, dict[str, Any] | None]:
        changes = self.policy.acknowledge(alarm_id, self.clock(), by=by)
        if changes:
            self.commit(changes)
            return "ok", changes[-1].alarm.to_dict()
        open_alarm = self.policy.get(alarm_id)
        if open_alarm is not None:  # already acknowledged: acking again is harmless
            return "ok", open_alarm.to_dict()
        stored = self.store.get(alarm_id)
        if stored is not None and stored.state is AlarmState.ENDED:
            return "closed", stored.to_dict()
        return "unknown", None


def _times(msg: Any) -> list[float]:
    """The device timestamps a decoded message carries (unix s)."""
    if isinstance(msg, protocol.SampleChunk):
        return [msg.t0, msg.t0 + msg.duration_s]
    if isinstance(msg, protocol.BeatsMessage):
        out = [b.t for b in msg.beats]
        # not analysed_from: it is where the stream began (hours ago is fine); `_beats` never
        # lets it past this message's own checked times
        if msg.analysed_until is not None:
            out.append(msg.analysed_until)
        return out
    if isinstance(msg, protocol.Event):
        return [msg.t]
    return []
