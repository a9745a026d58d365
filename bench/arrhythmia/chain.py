"""The live chain, offline: records through the real cores, on a fake clock.

Device: the streamer's own `BedStream` encodes each record's samples (every lead) into 0.5 s
binary chunks, each due when its last sample "happens". Detector: the `DetectorEngine` of a
`detector.service.DetectorService` made with the default config (never started), so the
scorer, beat classifier and rhythm analysis are the service's own; it is fed each chunk with
`handle(topic, payload, now)` and ticked at every batching deadline, as the service's worker
does. Alerting: an `AlertingCore` (the service's glue: policy, in-memory store, metrics, hub)
gets the device's chunks and every detector publication through `on_message`, and a wall-clock
`tick` each second; a simulated nurse acknowledges every alarm 30 s after it sounds. Several
records play at once as the beds of one ward (`run_ward`), as the services run a ward. The
clock is the signal clock: T0 + the due time of the chunk, so the replay runs as fast as the
CPU allows.

`run_reference` feeds the same alerting core with the reference instead of the detector: the
annotated beats with their AAMI classes (known 0.5 s after their R peak, as bench-alarms does)
and the reference episodes as episode events: the alarm floor of a record set.
"""

from __future__ import annotations

import heapq
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from alerting.alarms import Alarm, ChangeKind
from alerting.config import AlertingConfig
from alerting.core import AlertingCore, ward_hub
from alerting.metrics import AlertingMetrics
from alerting.policy import AlarmPolicy
from alerting.store import AlarmStore
from bench.alarms import REFERENCE_LAG_S, T0
from bench.arrhythmia.reference import Annotations, Reference
from bench.nurse import Nurse
from ecgcommon import protocol, topics
from ecgcommon.records import Record

log = logging.getLogger("bench.arrhythmia")
WARD = "eval"
BED = "bed01"  # the reference feed's bed
CHUNK_S = 0.5
ACK_AFTER_S = 30.0
ENGINE_TOKEN = "eval-arrhythmia-not-served"  # the engine's HTTP upload is never served
EPISODE_EVENTS = {"vt": "vt", "vf": "vf", "af": "afib", "svt": "svt"}  # reference kind -> event


@dataclass
class AlarmLog:
    """What the ward heard: every alarm with the times it sounded and its changes."""

    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)

    def observe(self, kind: ChangeKind, alarm: Alarm, now: float, announced: bool) -> None:
        a = self.alarms.get(alarm.id)
        if a is None:
            a = self.alarms[alarm.id] = {
                "id": alarm.id,
                "bed": alarm.bed,
                "type": alarm.type.value,
                "priority": alarm.priority.value,
                "started_at": alarm.started_at,
                "evidence": _small(alarm.evidence),
                "sounded": [],  # (published at, cause time), s from the record's start
                "ended_at": None,
            }
        if announced:
            cause = alarm.started_at if kind is ChangeKind.RAISED else alarm.updated_at
            a["sounded"].append((now, cause))
        if not alarm.open:
            a["ended_at"] = alarm.ended_at if alarm.ended_at is not None else now

    def listing(
        self, end_s: float, bed: str | None = None, origin: float = T0
    ) -> list[dict[str, Any]]:
        """Alarms (of one bed, if given) in order of start, times in s after `origin` (the
        signal time of the record's first sample); one still open ends with the record."""
        out = []
        for a in sorted(self.alarms.values(), key=lambda a: a["started_at"]):
            if bed is not None and a["bed"] != bed:
                continue
            a = dict(a)
            a["started_at"] -= origin
            a["sounded"] = [(round(p - origin, 3), round(c - origin, 3)) for p, c in a["sounded"]]
            a["ended_at"] = end_s if a["ended_at"] is None else a["ended_at"] - origin
            out.append(a)
        return out


def _small(evidence: dict[str, Any]) -> dict[str, Any]:
    """The alarm's evidence without the long beat lists (the report stays small)."""
    return {k: v for k, v in evidence.items() if k not in ("beat_ids", "scores", "last")}


class Ward:
    """One bed's alerting side: the real `AlertingCore`, an alarm log and the nurse."""

    def __init__(self, ack_after_s: float = ACK_AFTER_S) -> None:
        self.now = T0
        registry = CollectorRegistry()
        config = AlertingConfig(ward=WARD, token="eval-arrhythmia-token", db_path=":memory:")
        self.core = AlertingCore(
            config,
            hub=ward_hub(config),
            policy=AlarmPolicy(),
            store=AlarmStore(":memory:"),
            metrics=AlertingMetrics(registry),
            registry=registry,
            publish=self._published,
            clock=lambda: self.now,
        )
        self.nurse = Nurse(ack_after_s)
        self.log = AlarmLog()
        self._next_tick = -np.inf

    def _published(self, topic: str, payload: bytes) -> None:
        doc = json.loads(payload)
        kind, alarm = ChangeKind(doc["kind"]), Alarm.from_dict(doc["alarm"])
        announced = self.nurse.observe(kind, alarm)
        self.log.observe(kind, alarm, self.now, announced)

    def at(self, now: float) -> None:
        """Time passes to `now`: the nurse acts, the core's wall-clock tick runs (1 s)."""
        self.now = now
        for aid in self.nurse.due(now):
            self.core.acknowledge(aid, "eval-nurse")
        if now >= self._next_tick:
            self._next_tick = now + self.core.config.tick_s
            self.core.tick(now)

    def deliver(self, topic: str, payload: bytes) -> None:
        self.core.on_message(topic, payload)


@dataclass
class ChainResult:
    """What came out of the chain for one record (times in s from the record's start)."""

    duration_s: float
    beat_t: np.ndarray
    beat_cls: list[str | None]
    beat_anomalous: np.ndarray
    events: list[dict[str, Any]]  # detector events: type, active, t, published, detail
    alarms: list[dict[str, Any]]
    wall_s: float
    bad_messages: dict[str, float] = field(default_factory=dict)
    classifier: bool = False  # the engine had a beat classifier
    refused: str | None = None  # why the service's own models were refused, if they were


def build_engine(model_dir: str | None, wall_clock: Callable[[], float]) -> tuple[Any, str | None]:
    """The detector's engine exactly as the service makes it: a `DetectorService` with its
    default config (its scorer, classifier and whatever else it wires in), never started; its
    HTTP socket (port 0) is closed at once. The engine's wall clock becomes the replay's.
    Also says why the service refused its own models, if it did."""
    from detector.config import DetectorConfig
    from detector.service import DetectorService

    kwargs: dict[str, Any] = {"http_host": "127.0.0.1", "http_port": 0, "token": ENGINE_TOKEN}
    if model_dir is not None:
        kwargs["model_dir"] = model_dir
    config = DetectorConfig(**kwargs)
    refused: str | None = None
    try:
        service = DetectorService(config, registry=CollectorRegistry())
    except Exception as exc:  # e.g. a classifier artifact mid-retraining: say so, go on without
        from detector.anomaly import AnomalyConfig
        from detector.scorer import OnnxScorer

        log.warning("detector service refused its models (%s); running without the classifier", exc)
        onnx = OnnxScorer(Path(config.model_dir))
        service = DetectorService(
            config, CollectorRegistry(), onnx, AnomalyConfig.from_manifest(onnx.manifest)
        )
        refused = f"{type(exc).__name__}: {exc}"[:300]
    service.http.server_close()
    engine = service.engine
    engine.wall = wall_clock
    return engine, refused


class _FakeClock:
    """The detector's wall clock in the replay: the signal clock of the chunk in hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _bad_counts(engine: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in engine.metrics.bad_messages.collect():
        for s in metric.samples:
            if s.name.endswith("_total") and s.value:
                out[s.labels.get("reason", "?")] = s.value
    return out


@dataclass
class _BedLog:
    """What the detector published for one bed."""

    beat_t: list[float] = field(default_factory=list)
    beat_cls: list[str | None] = field(default_factory=list)
    beat_anom: list[bool] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def bed_name(i: int) -> str:
    return f"bed{i + 1:02d}"


def run_ward(
    records: list[Record], model_dir: str | None = None, chunk_s: float = CHUNK_S
) -> list[ChainResult]:
    """Records played at once as the beds of one ward (one device stream each, phases spread
    over a chunk as the streamer spreads them) through one DetectorEngine and one AlertingCore,
    as the live services run a ward: beats of all beds share the engine's batches."""
    from streamer.core import BedStream, Playback, Source

    wall0 = time.perf_counter()
    clock = _FakeClock()
    engine, refused = build_engine(model_dir, clock)
    ward = Ward()
    n = len(records)
    sources = [Source.from_record(r) for r in records]
    streams = [
        BedStream(
            bed_name(i),
            WARD,
            [src],
            0,
            0,
            chunk_s,
            Playback(T0, max_samples=src.raw.shape[0]),
            phase_s=chunk_s * i / n,
        )
        for i, src in enumerate(sources)
    ]
    logs = {bed_name(i): _BedLog() for i in range(n)}
    origin = {bed_name(i): T0 + st.phase_s for i, st in enumerate(streams)}  # first sample

    def deliver(pubs: list[Any], now: float) -> None:
        for p in pubs:
            kind = topics.parse_topic(p.topic).kind
            if kind == "beats":
                for b in protocol.decode_beats_message(p.payload).beats:
                    log_ = logs[b.bed]
                    log_.beat_t.append(b.t - origin[b.bed])
                    log_.beat_cls.append(b.cls)
                    log_.beat_anom.append(b.anomalous)
            elif kind == "events":
                ev = protocol.decode_event(p.payload)
                if ev.type != "anomaly":
                    logs[ev.bed].events.append(
                        {
                            "type": ev.type,
                            "active": ev.active,
                            "t": ev.t - origin[ev.bed],
                            "published": now - origin[ev.bed],
                            "detail": dict(ev.detail),
                        }
                    )
            ward.deliver(p.topic, p.payload)

    for i in range(n):  # each device says it is online, as the streamer does
        status = protocol.encode_status(protocol.Status("online", T0, f"eval-{bed_name(i)}"))
        status_topic = topics.status_topic(WARD, bed_name(i))
        ward.deliver(status_topic, status)
        deliver(engine.handle(status_topic, status, T0), T0)
    queue = [(st.next_due_s, i) for i, st in enumerate(streams)]
    heapq.heapify(queue)
    now = T0
    while queue:
        _, i = heapq.heappop(queue)
        msg = streams[i].next_message()
        if not streams[i].done:
            heapq.heappush(queue, (streams[i].next_due_s, i))
        now = T0 + msg.due_s
        clock.now = now
        ward.at(now)
        ward.deliver(msg.topic, msg.payload)  # the alerting service sees the device's chunks
        deliver(engine.handle(msg.topic, msg.payload, now), now)
        deliver(engine.tick(now), now)
        # the service's worker ticks the engine at each batch deadline before the next message
        horizon = T0 + queue[0][0] if queue else now + chunk_s
        while (d := engine.next_deadline()) is not None and d < horizon:
            clock.now = d
            ward.at(d)
            deliver(engine.tick(d), d)
    deliver(engine.flush(now), now)
    wall = time.perf_counter() - wall0
    bad = _bad_counts(engine)
    out = []
    for i, (record, src) in enumerate(zip(records, sources, strict=True)):
        duration = src.raw.shape[0] / record.fs
        log_ = logs[bed_name(i)]
        out.append(
            ChainResult(
                duration_s=duration,
                beat_t=np.asarray(log_.beat_t, dtype=np.float64),
                beat_cls=log_.beat_cls,
                beat_anomalous=np.asarray(log_.beat_anom, dtype=bool),
                events=log_.events,
                alarms=ward.log.listing(duration, bed_name(i), origin[bed_name(i)]),
                wall_s=wall / n,
                bad_messages=bad,
                classifier=engine.classifier is not None,
                refused=refused,
            )
        )
    return out


def run_chain(
    record: Record, model_dir: str | None = None, chunk_s: float = CHUNK_S
) -> ChainResult:
    """One record through streamer chunks -> DetectorEngine -> AlertingCore (module doc)."""
    return run_ward([record], model_dir, chunk_s)[0]


def reference_messages(
    ann: Annotations, ref: Reference, chunk_s: float = CHUNK_S, lag_s: float = REFERENCE_LAG_S
) -> list[tuple[float, str, bytes]]:
    """(time, topic, payload) of a perfect detector: reference beats with their classes (known
    `lag_s` after the R peak, with the analysis watermark) and reference episodes as events."""
    t, cls, samples = ann.beat_t, ann.beat_cls, ann.beat_samples
    beats_topic, events_topic = topics.beats_topic(WARD, BED), topics.events_topic(WARD, BED)
    edges: list[tuple[float, str, bool, float]] = []  # (t, event type, active, onset)
    for kind, etype in EPISODE_EVENTS.items():
        for e in ref.of(kind):
            edges += [(e.onset, etype, True, e.onset), (e.end, etype, False, e.onset)]
    edges.sort()
    out: list[tuple[float, str, bytes]] = []
    i = j = 0
    n_chunks = int(np.ceil(ann.duration_s / chunk_s))
    for k in range(n_chunks):
        t_end = min((k + 1) * chunk_s, ann.duration_s)
        known = t_end - lag_s
        while j < len(edges) and edges[j][0] <= known:
            te, etype, active, onset = edges[j]
            detail = {"hr_bpm": None, "beats": None, "onset_t": T0 + onset, "source": "reference"}
            ev = protocol.Event(BED, etype, active, T0 + te, detail)
            out.append((T0 + t_end, events_topic, protocol.encode_event(ev)))
            j += 1
        batch = []
        while i < len(t) and t[i] <= known:
            rr = float(t[i] - t[i - 1]) if i > 0 and t[i] > t[i - 1] else None
            abnormal = str(cls[i]) != "N"
            batch.append(
                protocol.BeatResult(
                    bed=BED,
                    sample=int(samples[i]),
                    t=T0 + float(t[i]),
                    rr_s=rr,
                    hr_bpm=None if rr is None else 60.0 / rr,
                    score=1.0 if abnormal else 0.0,
                    threshold=0.5,
                    anomalous=abnormal,
                    beat_id=f"{WARD}:{BED}:{int(samples[i])}",
                    cls=str(cls[i]),
                )
            )
            i += 1
        if known > 0:
            payload = protocol.encode_beats(batch, analysed_until=T0 + known)
            out.append((T0 + t_end, beats_topic, payload))
    return out


def run_reference(ann: Annotations, ref: Reference) -> list[dict[str, Any]]:
    """The alerting core fed with the reference (a perfect detector): its alarms."""
    ward = Ward()
    for now, topic, payload in reference_messages(ann, ref):
        ward.at(now)
        ward.deliver(topic, payload)
    return ward.log.listing(ann.duration_s)
