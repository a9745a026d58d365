"""One bed through the real cores on the signal clock, as fast as the CPU allows.

Device: the streamer's `BedStream` chunks and encodes the signal. Detector: a `DetectorEngine`
gets each chunk with `handle(topic, payload, now)` and is ticked at every batching deadline
before the next chunk, as the detector service's worker does. Alerting: an `AlertingCore` gets
the device's chunks and every detector publication with `on_message(topic, payload, now)`, and
its wall-clock `tick` each `tick_s`; its alarm publications are logged, and a simulated nurse
acknowledges through it. The clock is the signal clock (= wall clock in a live stream); the
CPU time each step takes is added to it, so a publication is timed at chunk due time + batching
wait + the processing of both cores.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from alerting.alarms import EPISODE_ALARMS, Alarm, AlarmChange, AlarmType, ChangeKind, Priority
from alerting.config import AlertingConfig
from alerting.core import AlertingCore
from alerting.hub import WardHub
from alerting.metrics import AlertingMetrics
from alerting.policy import AlarmPolicy
from alerting.store import AlarmStore
from bench.alarms.signals import T0, device_source
from bench.nurse import Nurse
from detector.anomaly import FEATURES, AnomalyConfig
from detector.engine import DetectorEngine, EngineSettings, Publication, Scorer
from detector.metrics import DetectorMetrics
from ecgcommon import protocol, topics
from streamer.core import BedStream, Playback, Source

log = logging.getLogger("bench.alarms")
WARD = "bench"
NURSE = "bench-nurse"
NEVER_ANOMALOUS = 2.0  # a threshold above every anomaly score (a probability)


@dataclass
class Scoring:
    """The detector's models: the ONNX autoencoder, its anomaly rule and the beat classifier."""

    scorer: Scorer
    anomaly: AnomalyConfig
    threshold: float
    model_dir: str
    classifier: Any = None  # detector.classifier.BeatClassifier, None when refused


def load_scoring(model_dir: Path | None, profile: str = "icu") -> Scoring | None:
    """The detector's models as its service loads them; None (and a log line) without one."""
    from detector.scorer import DEFAULT_MODEL_DIR, OnnxScorer

    folder = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
    try:
        scorer = OnnxScorer(folder)
        anomaly = AnomalyConfig.from_manifest(scorer.manifest)
        threshold = anomaly.threshold(profile)
    except Exception as exc:  # no model yet, or one this code refuses
        log.warning("no usable model in %s: %s", folder, exc)
        return None
    classifier = None
    try:
        from detector.classifier import BeatClassifier

        classifier = BeatClassifier(folder)
    except Exception as exc:  # the service refuses to start then; the bench says so, goes on
        log.warning("beat classifier refused in %s: %s", folder, exc)
    return Scoring(scorer, anomaly, threshold, str(folder), classifier)


class NullScorer:
    """No model: every window reconstructs perfectly, so beats are found and never anomalous."""

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = windows.shape[0]
        return np.zeros(n, np.float32), np.zeros(windows.shape[:2], np.float32)


def null_scoring() -> Scoring:
    """The engine without a model: `NullScorer`, a neutral anomaly rule (every score 0.5), a
    threshold no score reaches (scores are in 0..1), no beat classifier (beat class unknown,
    as a detector without one sends)."""
    n = len(FEATURES)
    anomaly = AnomalyConfig((0.0,) * n, 0.0, (0.0,) * n, (1.0,) * n, 0.0, 0.0, 0.0)
    return Scoring(NullScorer(), anomaly, NEVER_ANOMALOUS, "none")


def make_engine(
    scoring: Scoring | None, batch_s: float, clock: Callable[[], float]
) -> DetectorEngine:
    """A fresh detector engine (one per replay: per-bed state) with the service's defaults but
    the batching deadline `batch_s`; models are shared."""
    s = scoring or null_scoring()
    return DetectorEngine(
        s.scorer,
        s.anomaly,
        s.threshold,
        DetectorMetrics(CollectorRegistry()),
        replace(EngineSettings(), max_wait_s=batch_s),
        wall_clock=clock,
        classifier=s.classifier,
    )


def make_core(
    policy: AlarmPolicy, publish: Callable[[str, bytes], None], clock: Callable[[], float]
) -> AlertingCore:
    """The alerting core with an in-memory store, its alarm publications to `publish`."""
    registry = CollectorRegistry()
    config = AlertingConfig(ward=WARD, token="bench-token-0123456789", db_path=":memory:")
    return AlertingCore(
        config,
        hub=WardHub(config.ward),
        policy=policy,
        store=AlarmStore(config.db_path),
        metrics=AlertingMetrics(registry),
        registry=registry,
        publish=publish,
        clock=clock,
    )


@dataclass
class Raised:
    """An alarm as it was raised, with the time its publication left the alerting core."""

    kind: ChangeKind
    type: AlarmType
    priority: Priority
    started_at: float
    published_at: float  # signal/wall time of publication (due time + waits + processing)
    evidence: dict[str, Any] = field(default_factory=dict)


Work = Callable[[float], list[Publication]]  # a step: signal time -> detector publications


def _given(pubs: list[Publication], _now: float) -> list[Publication]:
    """A step that publishes `pubs` (a perfect detector's messages) whatever the time."""
    return pubs


class Replay:
    """One bed: device chunks -> DetectorEngine -> AlertingCore (policy `policy`) -> alarms."""

    def __init__(
        self,
        bed: str,
        policy: AlarmPolicy,
        scoring: Scoring | None,
        lag_s: float,
        chunk_s: float,
        batch_delay_s: float,
        ack_after_s: float | None = None,
    ) -> None:
        self.bed = bed
        self.policy = policy
        self.lag_s = lag_s  # how late reference beats are known; the nurse's clock lag
        self.chunk_s = chunk_s
        self.now = T0  # the signal clock of the step in hand
        self.engine = make_engine(scoring, batch_delay_s, self._clock)
        self.core = make_core(policy, self._published, self._clock)
        self.nurse = Nurse(ack_after_s)  # a simulated nurse acknowledges alarms after this
        self.reactivated = 0
        self.premature_asystole = 0  # asystole raised, then a beat from before it arrived
        self._asystole_at: float | None = None
        self.raised: list[Raised] = []
        self.changes: list[AlarmChange] = []
        self.n_beats = 0
        self.n_anomalous = 0
        self.beat_latency: list[float] = []  # publication - R-peak time, per beat
        self.events: list[tuple[str, bool, float]] = []  # technical events (type, active, t)
        self._wall0 = time.perf_counter()
        self._busy_until = -math.inf  # the cores are busy with a step until then
        self._next_tick = -math.inf

    def _clock(self) -> float:
        """Both cores' clock: the step's start plus the CPU time spent on it so far."""
        return self.now + (time.perf_counter() - self._wall0)

    # ------------------------------------------------------------------ feeds
    def run(self, x: np.ndarray, fs: float, t0: float) -> None:
        """A synthetic lead (mV) whose first sample is at `t0`, as a device streams it."""
        self.play(device_source(self.bed, x, fs), t0)

    def play(self, source: Source, t0: float) -> None:
        """A device source streamed in chunks from `t0`: each chunk is due once its last sample
        exists; the engine is ticked at every batching deadline before the next chunk."""
        playback = Playback(t0, max_samples=len(source.raw))
        stream = BedStream(self.bed, WARD, [source], 0, 0, self.chunk_s, playback)
        while not stream.done:
            msg = stream.next_message()
            self._step(t0 + msg.due_s, partial(self._device, msg.topic, msg.payload))
            horizon = math.inf if stream.done else t0 + stream.next_due_s
            while (deadline := self.engine.next_deadline()) is not None and deadline < horizon:
                self._step(deadline, self.engine.tick)
        self._step(self.now, self.engine.flush)

    def _device(self, topic: str, payload: bytes, now: float) -> list[Publication]:
        """A device chunk reaches both services (the alerting one keeps the waveform and
        watches the detector's progress against it)."""
        self.core.on_message(topic, payload, now)
        return self.engine.handle(topic, payload, now) + self.engine.tick(now)

    def feed_reference(
        self, t: np.ndarray, anomalous: np.ndarray, duration_s: float, t0: float
    ) -> None:
        """The reference annotations as a perfect detector's beats messages: each beat known
        `lag_s` after its R-peak, with the analysis watermark, one message per chunk."""
        beats_topic = topics.beats_topic(WARD, self.bed)
        i, n = 0, len(t)
        for k in range(int(math.ceil(duration_s / self.chunk_s))):
            t_end = t0 + min((k + 1) * self.chunk_s, duration_s)
            known = t_end - self.lag_s
            batch = []
            while i < n and t0 + t[i] <= known:
                rr = float(t[i] - t[i - 1]) if i else None
                batch.append(
                    protocol.BeatResult(
                        self.bed,
                        i,
                        t0 + float(t[i]),
                        rr,
                        None,
                        float(anomalous[i]),
                        0.5,
                        bool(anomalous[i]),
                        f"{self.bed}-{i}",
                    )
                )
                i += 1
            pub = Publication(beats_topic, protocol.encode_beats(batch, analysed_until=known))
            self._step(t_end, partial(_given, [pub]))

    # ------------------------------------------------------------------ the clock
    def _step(self, t: float, work: Work) -> None:
        """Run `work` at signal time `t` (or once the previous step is done), deliver what the
        detector publishes to the alerting core."""
        self.now = max(t, self._busy_until)
        self._wall0 = time.perf_counter()
        self._wall_tick(self.now)
        for pub in work(self.now):
            self._deliver(pub)
        self._busy_until = self._clock()

    def _wall_tick(self, now: float) -> None:
        """The nurse acknowledges what is due; the core's wall-clock tick runs each tick_s."""
        for aid in self.nurse.due(now - self.lag_s):
            self.core.acknowledge(aid, NURSE)
        if now >= self._next_tick:
            self._next_tick = now + self.core.config.tick_s
            self.core.tick(now)

    def _deliver(self, pub: Publication) -> None:
        kind = topics.parse_topic(pub.topic).kind
        if kind == "beats":
            self._note_beats(protocol.decode_beats_message(pub.payload).beats)
        elif kind == "events":
            ev = protocol.decode_event(pub.payload)
            if ev.type != "anomaly" and ev.type not in EPISODE_ALARMS:
                self.events.append((ev.type, ev.active, ev.t))
        self.core.on_message(pub.topic, pub.payload, self.now)

    def _note_beats(self, beats: list[protocol.BeatResult]) -> None:
        for b in beats:
            self.n_beats += 1
            self.n_anomalous += int(b.anomalous)
            self.beat_latency.append(self._clock() - b.t)
            if self._asystole_at is not None and b.t < self._asystole_at:
                self.premature_asystole += 1  # the beat was still in the detector
            self._asystole_at = None

    # ------------------------------------------------------------------ alarms out
    def _published(self, _topic: str, payload: bytes) -> None:
        """An alarm change the alerting core published: log it, tell the nurse."""
        doc = json.loads(payload)
        kind, alarm = ChangeKind(doc["kind"]), Alarm.from_dict(doc["alarm"])
        self.changes.append(AlarmChange(kind, alarm))
        announced = self.nurse.observe(kind, alarm)
        if kind is not ChangeKind.RAISED:
            self.reactivated += int(announced)
            return
        if alarm.type is AlarmType.ASYSTOLE:
            self._asystole_at = alarm.started_at
        self.raised.append(
            Raised(
                kind,
                alarm.type,
                alarm.priority,
                alarm.started_at,
                self._clock(),
                dict(alarm.evidence),
            )
        )
