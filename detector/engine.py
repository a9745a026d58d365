"""The detector's core, free of network I/O: messages in, publications out, clock passed in.

One `Pipeline` and one `PatientAdapter` per bed; complete beats of every bed are micro-batched
into one scorer call (bounded delay), then scored per bed in time order and published grouped
by bed. Bad messages are counted by reason and dropped; nothing raised by one message stops
the engine.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from detector.anomaly import AnomalyConfig, PatientAdapter, process_many
from detector.batcher import MicroBatcher
from detector.classifier import BeatClassifier, PatientClasses
from detector.config import EngineSettings
from detector.errors import ChunkRejected
from detector.metrics import DetectorMetrics
from detector.pipeline import DetectedBeat, Output, Pipeline, windows_of
from detector.rhythms import EpisodeChange, RhythmAnalyser, RhythmBeat
from ecgcommon.limits import LogLimiter, fs_ok, fs_range_text
from ecgcommon.protocol import (
    BeatResult,
    DecodeError,
    Event,
    SampleChunk,
    decode_samples,
    decode_status,
    encode_beats,
    encode_event,
)
from ecgcommon.topics import Topic, TopicError, beats_topic, events_topic, parse_topic
from ecgcommon.windowing import WINDOW, WindowSpec

log = logging.getLogger("detector")


class Scorer(Protocol):
    """What the engine needs of `detector.scorer.OnnxScorer`."""

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, n_points) float32 windows -> (error (n,), per-timestep error (n, n_points))."""
        ...


@dataclass(frozen=True)
class Publication:
    """An MQTT message to send."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


@dataclass
class Bed:
    """Live state of one bed."""

    ward: str
    bed: str
    pipeline: Pipeline
    adapter: PatientAdapter
    last_rx: float = -math.inf
    silent: bool = False  # signal_lost active
    offline: bool = False  # device_offline active
    has_samples: bool = False
    offline_rx: float = -math.inf  # receipt time of the offline status now in force
    last_msg: float = -math.inf  # receipt time of the newest message of any kind (eviction)
    last_signal_t: float = -math.inf  # device time just after the newest accepted sample
    queued: int = 0  # beats waiting in the batcher
    last_beat_t: float = -math.inf  # signal time of the newest published beat
    mark_t: float = -math.inf  # newest analysis watermark published
    # where the unbroken analysis began (a new stream or a hole in the samples restarts it): sent
    # as `analysed_from`, so alerting never measures a pause or asystole across a hole
    span_from: float | None = None
    classes: PatientClasses | None = None  # beat-class state, made on the first classified beat
    rhythms: RhythmAnalyser = field(default_factory=RhythmAnalyser)  # VT/SVT/AF/VF, noisy
    beats_to: str = ""  # the bed's beats and events topics, made once (set by the engine)
    events_to: str = ""


# During a pause longer than this, the detector says how far it has analysed (see _watermark).
WATERMARK_AFTER_S = 1.0


class Queued(NamedTuple):
    """A complete beat waiting for its batch (a tuple: one is made per beat)."""

    bed: Bed
    beat: DetectedBeat
    rx: float  # receipt time of the chunk that completed the beat's window


class ModelRun(NamedTuple):
    """What the models made of a batch of beats (`DetectorEngine._run_model`)."""

    steps: np.ndarray  # (n, n_points) per-timestep reconstruction error
    scores: list[float]  # patient-adapted anomaly scores
    classes: list[str | None]  # beat classes (None: no classifier, or the batch was refused)
    started: float  # the engine's clock when the scorer was called
    inference_s: float  # how long the scorer took


DEFAULT_SETTINGS = EngineSettings()  # the detector's defaults (detector/config.py)

# Samples still flowing this long after an `offline` status prove the device online: a stale or
# forged retained `offline` must not hold `device_offline` up while real data flows.
OFFLINE_CONTRADICTED_S = 2.0


class DetectorEngine:
    """All beds of all wards: feed messages, call `tick` regularly, publish what comes back."""

    def __init__(
        self,
        scorer: Scorer,
        anomaly: AnomalyConfig,
        threshold: float,
        metrics: DetectorMetrics,
        settings: EngineSettings = DEFAULT_SETTINGS,
        spec: WindowSpec = WINDOW,
        wall_clock: Callable[[], float] = time.time,
        classifier: BeatClassifier | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """`wall_clock` dates the events the engine raises itself (unix s); `clock` (monotonic,
        s) times the scorer for the inference and lag metrics. Both are passed in for tests."""
        self.scorer = scorer
        self.classifier = classifier  # None: beats go out with cls=None (class unknown)
        self.anomaly = anomaly
        self.threshold = threshold
        self.metrics = metrics
        self.beds: dict[tuple[str, str], Bed] = {}
        self.settings = settings
        self.batcher: MicroBatcher[Queued] = MicroBatcher(settings.max_batch, settings.max_wait_s)
        self.spec = spec
        self.wall = wall_clock
        self.clock = clock
        self._bad = LogLimiter(log)
        self._next_sweep = -math.inf
        self._kind_counters: dict[str, Any] = {}  # labelled children, looked up once
        self._event_counters: dict[str, Any] = {}
        self._topics: dict[str, Topic] = {}  # parsed topics of valid messages (bounded)

    # ------------------------------------------------------------------ input
    def _bed(self, ward: str, bed: str, now: float) -> Bed | None:
        """The bed's state, created on first use; None when the table is full of live beds."""
        key = (ward, bed)
        state = self.beds.get(key)
        if state is None:
            if len(self.beds) >= self.settings.max_beds and not self._make_room(now):
                self.bad("too_many_beds", "%s/%s: %d beds tracked", ward, bed, len(self.beds))
                return None
            state = Bed(
                ward,
                bed,
                Pipeline(self.spec, max_fill_s=self.settings.max_fill_s),
                PatientAdapter(self.anomaly),
                beats_to=beats_topic(ward, bed),
                events_to=events_topic(ward, bed),
            )
            self.beds[key] = state
        state.last_msg = now
        return state

    def _make_room(self, now: float) -> bool:
        """Evict the bed idle longest (one that never streamed first) if it has been idle for
        longer than the signal timeout: live beds are never evicted for a new name."""

        def idle_key(item: tuple[tuple[str, str], Bed]) -> tuple[bool, float]:
            b = item[1]
            return (b.has_samples, b.last_msg)

        key, victim = min(self.beds.items(), key=idle_key)
        if victim.queued or now - victim.last_msg <= self.settings.signal_timeout_s:
            return False
        del self.beds[key]
        self.metrics.bad_messages.labels("bed_evicted").inc()
        return True

    def bad(self, reason: str, msg: str, *args: object) -> None:
        """Count and log a dropped message."""
        self.metrics.bad_messages.labels(reason).inc()
        self._bad(reason, msg, *args)

    def handle(
        self, topic: str, payload: bytes, now: float, retained: bool = False
    ) -> list[Publication]:
        """One received MQTT message; `now` is the monotonic receipt time."""
        t = self._topics.get(topic)
        if t is None:
            try:
                t = parse_topic(topic)
            except TopicError as exc:
                self.bad("bad_topic", "%s", exc)
                return []
            if len(self._topics) >= 4 * self.settings.max_beds:  # bounded: never grows unchecked
                self._topics.clear()
            self._topics[topic] = t
        counter = self._kind_counters.get(t.kind)
        if counter is None:
            counter = self._kind_counters[t.kind] = self.metrics.messages.labels(t.kind)
        counter.inc()
        try:
            if t.kind == "samples":
                return self._on_samples(t.ward, t.bed, payload, now)
            if t.kind == "status":
                if not payload:  # a cleared retained status (MQTT convention), not news
                    return []
                return self._on_status(t.ward, t.bed, payload, retained, now)
        except DecodeError as exc:
            self.bad(exc.reason, "%s/%s: %s", t.ward, t.bed, exc)
        except Exception:  # one bad message never stops the service
            self.metrics.bad_messages.labels("internal_error").inc()
            log.exception("error handling a message on %s", topic)
        return []

    def _on_samples(
        self, ward: str, bed_name: str, payload: bytes, now: float
    ) -> list[Publication]:
        chunk = decode_samples(payload)
        bed = self._bed(ward, bed_name, now)
        if bed is None:
            return []
        if bed.last_rx == -math.inf:
            bed.last_rx = now  # the silence clock starts at the first chunk, analysable or not
        try:
            out = bed.pipeline.feed(chunk)
        except ChunkRejected as exc:  # rate out of range, missing lead
            self.bad(exc.reason, "%s/%s: %s", ward, bed_name, exc)
            return []
        bed.has_samples = True
        if not out.accepted:  # a duplicate or late chunk is no signal: signal_lost may fire
            return self._pipeline_events(bed, out)
        pubs = self._signal_flows(bed, chunk, out, now)
        pubs.extend(self._pipeline_events(bed, out))
        for reason, n in out.dropped.items():
            self.metrics.beats_dropped.labels(reason).inc(n)
        self.metrics.chunks.inc()
        self.metrics.samples.inc(chunk.n_samples)
        if out.signal is not None:  # VF and signal quality from the waveform
            changes = bed.rhythms.feed_samples(
                out.signal, chunk.fs, out.signal_t0, out.restart, chunk.leads
            )
            pubs.extend(self._rhythm(bed, changes))
        if out.beats:
            bed.queued += len(out.beats)
            queued = [Queued(bed, b, now) for b in out.beats]
            for batch in self.batcher.add(queued, now):
                pubs.extend(self._score(batch, now))
        if out.analysed_until is not None:
            if not bed.queued:  # every beat before it has reached the rhythm analysis
                bed.rhythms.note_analysed(out.analysed_until)
            pubs.extend(self._watermark(bed, out.analysed_until))
        return pubs

    def _signal_flows(
        self, bed: Bed, chunk: SampleChunk, out: Output, now: float
    ) -> list[Publication]:
        """An accepted chunk: note the signal, end `device_offline` (contradicted by flowing
        samples) and `signal_lost`, and restart the analysed span after a restart or a hole."""
        bed.last_rx = now
        bed.last_signal_t = chunk.t0 + chunk.duration_s
        if out.restart or any(
            e.type == "gap" and e.detail.get("missing_samples") for e in out.events
        ):
            bed.span_from = chunk.t0
        pubs: list[Publication] = []
        if bed.offline and now - bed.offline_rx > OFFLINE_CONTRADICTED_S:
            bed.offline = False
            detail = {"contradicted_by": "samples"}
            pubs.append(self._event(bed, "device_offline", False, self.wall(), detail))
        if bed.silent:
            bed.silent = False
            pubs.append(self._event(bed, "signal_lost", False, self.wall(), {}))
        return pubs

    def _pipeline_events(self, bed: Bed, out: Output) -> list[Publication]:
        """The pipeline's technical events (gaps, duplicates, lead-off) as event messages."""
        return [self._event(bed, e.type, e.active, e.t, e.detail) for e in out.events]

    def _rhythm(self, bed: Bed, changes: list[EpisodeChange]) -> list[Publication]:
        """Rhythm episodes and the noisy condition as condition events."""
        return [self._event(bed, c.type, c.active, c.t, c.detail) for c in changes]

    def _watermark(self, bed: Bed, until: float) -> list[Publication]:
        """In a pause, tell subscribers that no beat before `until` is coming (asystole)."""
        if bed.queued or until - bed.last_beat_t < WATERMARK_AFTER_S or until <= bed.mark_t:
            return []
        bed.mark_t = until
        payload = encode_beats((), analysed_until=until, analysed_from=bed.span_from)
        return [Publication(bed.beats_to, payload, self.settings.qos_beats)]

    def _on_status(
        self, ward: str, bed_name: str, payload: bytes, retained: bool, now: float
    ) -> list[Publication]:
        status = decode_status(payload)
        known = (ward, bed_name) in self.beds
        bed = self._bed(ward, bed_name, now)
        if bed is None:
            return []
        t = status.t if math.isfinite(status.t) else self.wall()
        streaming = bed.has_samples and now - bed.last_rx <= self.settings.signal_timeout_s
        if status.state == "offline" and retained and streaming and t < bed.last_signal_t:
            self.bad(
                "stale_status", "%s/%s: retained offline older than the samples", ward, bed_name
            )
            return []
        if status.state == "offline" and not bed.offline:
            bed.offline = True
            bed.offline_rx = now
            if retained and not known:
                return []  # an old retained status, not news
            return [self._event(bed, "device_offline", True, t, {"device": status.device})]
        if status.state == "online" and bed.offline:
            bed.offline = False
            return [self._event(bed, "device_offline", False, t, {"device": status.device})]
        return []

    def _event(self, bed: Bed, etype: str, active: bool, t: float, detail: dict) -> Publication:
        counter = self._event_counters.get(etype)
        if counter is None:
            counter = self._event_counters[etype] = self.metrics.events.labels(etype)
        counter.inc()
        payload = encode_event(Event(bed.bed, etype, active, t, detail))
        return Publication(bed.events_to, payload, self.settings.qos_events)

    # ------------------------------------------------------------------ scoring
    def _score(self, batch: list[Queued], now: float) -> list[Publication]:
        """Score a batch of beats of any beds: anomaly events, then each bed's beats message."""
        states = [self._class_state(q.bed) for q in batch] if self.classifier else None
        run = self._run_model([q.beat for q in batch], [q.bed.adapter for q in batch], states)
        self.metrics.inference.observe(run.inference_s)
        self.metrics.batch_size.observe(len(batch))
        by_bed: dict[tuple[str, str], list[tuple[BeatResult, str | None]]] = {}
        pubs: list[Publication] = []
        anomalies = 0
        rows = zip(batch, run.steps, run.scores, run.classes, strict=True)
        for q, step, score, cls in rows:
            result = self._result(q, step, score, cls)
            # with the classifier's own class: the analyser knows which beats are in artifact,
            # and an organised V run there is still VT (detector.rhythms.runs)
            by_bed.setdefault((q.bed.ward, q.bed.bed), []).append((result, cls))
            q.bed.queued -= 1
            q.bed.last_beat_t = max(q.bed.last_beat_t, result.t)
            if result.anomalous:
                anomalies += 1
                pubs.append(self._anomaly_event(q.bed, result))
        for key, results in by_bed.items():
            pubs.extend(self._beats_message(key, results))
        self.metrics.beats.inc(len(batch))
        self.metrics.anomalies.inc(anomalies)
        done = now + (self.clock() - run.started)  # publication follows right away
        for q in batch:
            self.metrics.lag.observe(max(0.0, done - q.rx))
        return pubs

    def _run_model(
        self,
        beats: list[DetectedBeat],
        adapters: list[PatientAdapter],
        states: list[PatientClasses] | None,
    ) -> ModelRun:
        """Beats of any beds through the autoencoder, the patient adaptation and the beat
        classifier: the one scoring path of live beats and uploads."""
        windows = windows_of(beats, self.spec)
        started = self.clock()
        errors, steps = self.scorer.score(windows)
        inference_s = self.clock() - started
        scores, classes = self._classify(adapters, states, beats, errors, windows)
        return ModelRun(steps, scores, classes, started, inference_s)

    def _result(self, q: Queued, step: np.ndarray, score: float, cls: str | None) -> BeatResult:
        """One scored beat as published; a beat in artifact goes out as Q."""
        bed, beat = q.bed, q.beat
        if bed.rhythms.noisy_at(beat.t):
            cls = "Q"  # found in artifact (detector.quality): no class to build rhythms on
        anomalous = score >= self.threshold
        return BeatResult(
            bed=bed.bed,
            sample=beat.sample,
            t=beat.t,
            rr_s=beat.rr_s,
            hr_bpm=beat.hr_bpm,
            score=score,
            threshold=self.threshold,
            anomalous=anomalous,
            beat_id=f"{bed.ward}:{bed.bed}:{beat.sample}",
            errors=tuple(step.tolist()) if anomalous else None,
            cls=cls,
        )

    def _anomaly_event(self, bed: Bed, r: BeatResult) -> Publication:
        detail = {
            "beat_id": r.beat_id,
            "sample": r.sample,
            "score": round(r.score, 6),
            "threshold": self.threshold,
        }
        return self._event(bed, "anomaly", True, r.t, detail)

    def _beats_message(
        self, key: tuple[str, str], results: list[tuple[BeatResult, str | None]]
    ) -> list[Publication]:
        """A bed's scored beats (with the classifier's class before artifact's Q) as one beats
        message, then the rhythm episodes they start or end, in time order."""
        bed = self.beds.get(key)
        since = None if bed is None else bed.span_from
        payload = encode_beats([r for r, _ in results], analysed_from=since)
        to = beats_topic(*key) if bed is None else bed.beats_to
        pubs = [Publication(to, payload, self.settings.qos_beats)]
        if bed is not None:
            changes = bed.rhythms.feed_beats(
                RhythmBeat(r.sample, r.t, r.rr_s, r.hr_bpm, cls, r.score) for r, cls in results
            )
            pubs.extend(self._rhythm(bed, changes))
        return pubs

    def _class_state(self, bed: Bed) -> PatientClasses:
        if bed.classes is None:
            bed.classes = PatientClasses()
        return bed.classes

    def _classify(
        self,
        adapters: list[PatientAdapter],
        states: list[PatientClasses] | None,
        beats: list[DetectedBeat],
        errors: np.ndarray,
        windows: np.ndarray,
    ) -> tuple[list[float], list[str | None]]:
        """Anomaly scores (`PatientAdapter.process`, in time order) and beat classes of a batch.

        A batch the classifier refuses (bad input) keeps its scores, goes out with cls=None and
        is counted; it never stops the engine.
        """
        refs, scores = process_many(adapters, errors.tolist(), [b.rhythm for b in beats], windows)
        classes: list[str | None] = [None] * len(beats)
        if self.classifier is not None and states is not None and beats:
            try:
                classes = list(
                    self.classifier.classify(
                        states, beats, errors, np.array(refs), np.array(scores)
                    )
                )
            except ValueError as exc:
                self.bad("unclassifiable", "%d beats: %s", len(beats), exc)
        return scores, classes

    def tick(self, now: float) -> list[Publication]:
        """Flush a batch whose delay is up; look for silent beds (twice a second)."""
        pubs: list[Publication] = []
        batch = self.batcher.poll(now)
        if batch:
            pubs.extend(self._score(batch, now))
        if now >= self._next_sweep:
            self._next_sweep = now + 0.5
            timeout = self.settings.signal_timeout_s
            active = 0
            idle = [
                key
                for key, b in self.beds.items()
                if not b.queued and now - b.last_msg > self.settings.bed_idle_s
            ]
            for key in idle:
                del self.beds[key]
            for bed in self.beds.values():
                if bed.last_rx == -math.inf or bed.offline:
                    continue
                silence = now - bed.last_rx
                if silence > timeout:
                    if not bed.silent:
                        bed.silent = True
                        pubs.append(
                            self._event(
                                bed,
                                "signal_lost",
                                True,
                                self.wall(),
                                {"silence_s": round(silence, 3)},
                            )
                        )
                else:
                    active += 1
            self.metrics.active_beds.set(active)
        return pubs

    def next_deadline(self) -> float | None:
        """When `tick` must run next for the batching delay to hold."""
        return self.batcher.deadline

    def flush(self, now: float) -> list[Publication]:
        """Score whatever waits (shutdown)."""
        batch = self.batcher.flush()
        return self._score(batch, now) if batch else []

    # ------------------------------------------------------------------ uploads
    def score_signal(self, x: np.ndarray, fs: float) -> list[dict[str, object]]:
        """Beats of one whole signal (mV), the live code path, per-timestep errors for all."""
        if not fs_ok(fs):
            raise ValueError(f"fs must be within {fs_range_text()}, got {fs}")
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1 or x.size < 2:
            raise ValueError("samples must be a list of at least 2 numbers (one lead)")
        if x.size > self.settings.max_upload_s * fs:
            raise ValueError(f"signal longer than {self.settings.max_upload_s:g} s")
        if not np.isfinite(x).all():
            raise ValueError("samples must be finite numbers")
        beats = Pipeline(self.spec, max_fill_s=self.settings.max_fill_s).feed_signal(x, fs).beats
        adapter = PatientAdapter(self.anomaly)
        state = self.classifier.new_state() if self.classifier else None
        out: list[dict[str, object]] = []
        step = self.settings.max_batch
        for i in range(0, len(beats), step):
            part = beats[i : i + step]
            states = None if state is None else [state] * len(part)
            run = self._run_model(part, [adapter] * len(part), states)
            for b, per, score, cls in zip(part, run.steps, run.scores, run.classes, strict=True):
                out.append(
                    {
                        "sample": b.sample,
                        "t_s": round(b.sample / fs, 4),
                        "rr_s": None if b.rr_s is None else round(b.rr_s, 4),
                        "hr_bpm": None if b.hr_bpm is None else round(b.hr_bpm, 2),
                        "score": round(score, 6),
                        "threshold": self.threshold,
                        "anomalous": score >= self.threshold,
                        "cls": cls,
                        "errors": np.round(per.astype(np.float64), 5).tolist(),
                    }
                )
        return out
