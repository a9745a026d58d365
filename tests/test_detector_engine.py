"""DetectorEngine on its own, no broker: chunks in through `handle`, publications out of
`handle`/`tick`/`flush`, a fake scorer and classifier (deterministic, the real interfaces) and a
fake clock. Beat times are judged against the MIT-BIH reference annotations."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from detector.anomaly import AnomalyConfig
from detector.classifier import PatientClasses
from detector.engine import DetectorEngine, EngineSettings, Publication
from detector.metrics import DetectorMetrics
from detector.pipeline import DetectedBeat, Pipeline
from detector.scorer import DEFAULT_MODEL_DIR, load_manifest
from ecgcommon.aami import beat_mask
from ecgcommon.protocol import (
    BeatResult,
    Event,
    SampleChunk,
    Status,
    decode_beats_message,
    decode_event,
    encode_samples,
    encode_status,
)
from ecgcommon.records import Record, load_record
from ecgcommon.topics import beats_topic, events_topic, parse_topic, samples_topic, status_topic

T0 = 1_700_000_000.0  # device time (unix s) of sample 0
RX0 = 5_000.0  # monotonic receipt time of sample 0
WALL = 1_800_000_000.0  # the engine's wall clock (events it dates itself)
GAIN = 200.0
TOL_S = 0.150  # a detected beat matches a reference beat within this


class FakeScorer:
    """`OnnxScorer`'s interface: each window's error is a fixed function of that window."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert windows.dtype == np.float32 and windows.ndim == 2
        self.batches.append(len(windows))
        steps = (np.square(windows, dtype=np.float64) * 1e-2).astype(np.float32)
        return steps.mean(axis=1), steps


class FakeClassifier:
    """`BeatClassifier`'s interface: V for a beat that comes early (RR < 0.6 s), else N."""

    def new_state(self) -> PatientClasses:
        return PatientClasses()

    def classify(self, states, beats: list[DetectedBeat], errors, refs, scores) -> list[str]:
        assert len(states) == len(beats) == len(errors) == len(refs) == len(scores)
        return ["V" if b.rr_s is not None and b.rr_s < 0.6 else "N" for b in beats]


@dataclass
class StepClock:
    """A monotonic clock that moves `step` seconds each time it is read."""

    step: float = 0.002
    t: float = 0.0
    reads: int = 0

    def __call__(self) -> float:
        self.t += self.step
        self.reads += 1
        return self.t


@dataclass
class Rig:
    engine: DetectorEngine
    registry: CollectorRegistry
    scorer: FakeScorer
    clock: StepClock
    pubs: list[Publication] = field(default_factory=list)

    def value(self, name: str, **labels: str) -> float:
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v

    def bad(self, reason: str) -> float:
        return self.value("ecg_detector_bad_messages_total", reason=reason)


@pytest.fixture(scope="module")
def anomaly() -> AnomalyConfig:
    return AnomalyConfig.from_manifest(load_manifest(DEFAULT_MODEL_DIR))


def rig(anomaly: AnomalyConfig, threshold: float = 1e9, **settings: float) -> Rig:
    registry = CollectorRegistry()
    scorer, clock = FakeScorer(), StepClock()
    engine = DetectorEngine(
        scorer,
        anomaly,
        threshold,
        DetectorMetrics(registry),
        EngineSettings(**settings),  # type: ignore[arg-type]
        wall_clock=lambda: WALL,
        classifier=FakeClassifier(),  # type: ignore[arg-type]
        clock=clock,
    )
    return Rig(engine, registry, scorer, clock)


@pytest.fixture(scope="module")
def rec100(data_dir: Path) -> Record:
    return load_record("100", data_dir, sampto=int(360 * 60))


@pytest.fixture(scope="module")
def rec119(data_dir: Path) -> Record:
    return load_record("119", data_dir, sampto=int(360 * 60))


def chunk_payloads(rec: Record, n: int, start: int = 0, stop: int | None = None):
    """(receipt time, binary payload) of the record's chunks of `n` samples from `start`."""
    raw = np.rint(rec.signal * GAIN).astype(np.int16)
    stop = len(raw) if stop is None else stop
    for i in range(start, stop, n):
        m = min(n, stop - i)
        c = SampleChunk(
            i // n, i, T0 + i / rec.fs, rec.fs, GAIN, "mV", rec.lead_names, raw[i : i + m]
        )
        yield RX0 + (i + m) / rec.fs, encode_samples(c)


def replay(r: Rig, rec: Record, n: int, bed: str = "b1", **kw: int) -> float:
    """Feed a record as the service does: `tick` at every batching deadline, then each chunk;
    returns the receipt time of the last chunk."""
    now = RX0
    for now, payload in chunk_payloads(rec, n, **kw):
        step(r, now)
        r.pubs += r.engine.handle(samples_topic("w1", bed), payload, now)
    return now


def step(r: Rig, now: float) -> None:
    """Tick at every deadline due by `now`, then at `now`."""
    while (d := r.engine.next_deadline()) is not None and d <= now:
        r.pubs += r.engine.tick(d)
    r.pubs += r.engine.tick(now)


def beats_of(pubs: list[Publication], bed: str = "b1") -> list[BeatResult]:
    out = []
    for p in pubs:
        if p.topic == beats_topic("w1", bed):
            out += decode_beats_message(p.payload).beats
    return out


def events_of(pubs: list[Publication], bed: str = "b1") -> list[Event]:
    return [decode_event(p.payload) for p in pubs if p.topic == events_topic("w1", bed)]


def reference_times(rec: Record) -> np.ndarray:
    mask = beat_mask(rec.ann_symbols)
    return rec.ann_samples[mask] / rec.fs


def test_published_beats_match_the_reference_annotations(anomaly, rec100: Record) -> None:
    r = rig(anomaly)
    last = replay(r, rec100, 180)
    r.pubs += r.engine.flush(last)
    beats = beats_of(r.pubs)
    t = np.array([b.t for b in beats]) - T0
    ref = reference_times(rec100)
    assert len(beats) >= 60 and len(ref) >= 60
    # every reference beat after the detector's learning second, and not in the last second
    # (its window is not complete), is published once within 150 ms; nothing else is published
    inner = ref[(ref > 2.0) & (ref < rec100.n_samples / rec100.fs - 1.0)]
    near = np.abs(inner[:, None] - t[None, :])
    assert (near.min(axis=1) <= TOL_S).all(), inner[near.min(axis=1) > TOL_S]
    assert (np.abs(t[:, None] - ref[None, :]).min(axis=1) <= TOL_S).all()
    assert len(t) <= len(ref)
    # the values the beats carry
    assert all(b.bed == "b1" and b.beat_id == f"w1:b1:{b.sample}" for b in beats)
    assert [b.sample for b in beats] == sorted({b.sample for b in beats})
    np.testing.assert_allclose(t, np.array([b.sample for b in beats]) / rec100.fs, atol=1e-3)
    timed = [b for b in beats if b.rr_s is not None]
    assert len(timed) == len(beats) - 1
    for b in timed:
        assert b.hr_bpm == pytest.approx(60.0 / b.rr_s, rel=1e-3)
        assert 0.5 < b.rr_s < 1.3  # record 100: sinus rhythm around 75 bpm
    assert all(b.cls in ("N", "V") and np.isfinite(b.score) and not b.anomalous for b in beats)
    assert {b.threshold for b in beats} == {r.engine.threshold}
    messages = [decode_beats_message(p.payload) for p in r.pubs if "/beats" in p.topic]
    assert messages and all(m.analysed_from == T0 for m in messages if m.beats)
    qos = r.engine.settings.qos_beats
    assert all(p.qos == qos and not p.retain for p in r.pubs if "/beats" in p.topic)
    assert r.value("ecg_detector_beats_total") == len(beats)
    assert r.value("ecg_detector_chunks_total") == len(range(0, rec100.n_samples, 180))


def test_the_clock_passed_in_times_inference_and_lag(anomaly, rec100: Record) -> None:
    r = rig(anomaly, max_wait_s=0.05, max_batch=4)
    last = replay(r, rec100, 90, stop=360 * 20)
    r.pubs += r.engine.flush(last)
    calls = len(r.scorer.batches)
    n = sum(r.scorer.batches)
    assert calls >= 5 and n == len(beats_of(r.pubs)) and max(r.scorer.batches) <= 4
    # the fake clock moves 2 ms a reading: the scorer took exactly one step per batch
    assert r.value("ecg_detector_inference_seconds_sum") == pytest.approx(calls * r.clock.step)
    assert r.value("ecg_detector_inference_seconds_count") == calls
    assert r.value("ecg_detector_batch_size_beats_sum") == n
    # lag: receipt -> publication, bounded by the batching delay plus the two scorer steps
    assert r.value("ecg_detector_processing_lag_seconds_count") == n
    lag_sum = r.value("ecg_detector_processing_lag_seconds_sum")
    assert 2 * r.clock.step * n <= lag_sum <= (0.05 + 2 * r.clock.step) * n + 1e-9
    assert r.value("ecg_detector_processing_lag_seconds_bucket", le="0.05") < n  # some waited
    assert r.value("ecg_detector_processing_lag_seconds_bucket", le="0.1") == n


def test_malformed_payloads_are_counted_and_dropped_while_a_good_bed_carries_on(
    anomaly, rec100: Record
) -> None:
    clean = rig(anomaly)
    replay(clean, rec100, 180, stop=360 * 30)
    r = rig(anomaly)
    good = list(chunk_payloads(rec100, 180, stop=360 * 30))
    frame = good[0][1]
    junk = [
        (samples_topic("w1", "b2"), b"garbage", "bad_magic"),
        (samples_topic("w1", "b2"), frame[: len(frame) // 2], "truncated"),
        (samples_topic("w1", "b2"), b"{", "bad_json"),
        (status_topic("w1", "b2"), b"{not json", "bad_json"),
        (status_topic("w1", "b2"), b'{"state": "dancing", "t": 1}', "bad_state"),
        ("ecg/v1/w1/b2/nonsense", frame, "bad_topic"),
        ("not/a/topic", frame, "bad_topic"),
    ]
    for k, (now, payload) in enumerate(good):
        step(r, now)
        r.pubs += r.engine.handle(samples_topic("w1", "b1"), payload, now)
        topic, bad, _ = junk[k % len(junk)]
        assert r.engine.handle(topic, bad, now) == []
    expected: dict[str, int] = {}
    for k in range(len(good)):
        reason = junk[k % len(junk)][2]
        expected[reason] = expected.get(reason, 0) + 1
    assert {reason: r.bad(reason) for reason in expected} == expected
    # a chunk without the lead the bed's pipeline analyses: a typed error, counted, dropped
    bed = r.engine.beds[("w1", "b1")]
    analysed = bed.pipeline
    bed.pipeline = Pipeline(lead=5)
    assert r.engine.handle(samples_topic("w1", "b1"), good[-1][1], good[-1][0]) == []
    assert r.bad("bad_leads") == 1 and r.bad("internal_error") == 0
    bed.pipeline = analysed
    # the good bed published exactly what it publishes alone
    got, alone = beats_of(r.pubs), beats_of(clean.pubs)
    assert len(alone) >= 25 and got == alone
    assert ("w1", "b2") not in r.engine.beds  # nothing decodable ever came from it


def test_a_silent_bed_raises_signal_lost_and_an_idle_one_is_forgotten(
    anomaly, rec100: Record
) -> None:
    r = rig(anomaly, signal_timeout_s=5.0, bed_idle_s=30.0)
    last = replay(r, rec100, 180, stop=360 * 10)
    assert ("w1", "b1") in r.engine.beds and beats_of(r.pubs)
    r.pubs.clear()
    step(r, last + 4.0)
    assert events_of(r.pubs) == []
    step(r, last + 6.0)
    lost = events_of(r.pubs)
    assert [(e.type, e.active, e.t) for e in lost] == [("signal_lost", True, WALL)]
    assert lost[0].detail["silence_s"] == pytest.approx(6.0, abs=0.6)
    assert r.value("ecg_detector_active_beds") == 0
    step(r, last + 29.0)
    assert ("w1", "b1") in r.engine.beds
    step(r, last + 31.0)
    assert ("w1", "b1") not in r.engine.beds  # forgotten: its state is freed
    # the bed streams again later: a fresh state, beats from the new stream
    r.pubs.clear()
    replay(r, rec100, 180, start=360 * 20, stop=360 * 35)
    again = beats_of(r.pubs)
    assert again and min(b.t for b in again) > T0 + 20
    assert ("w1", "b1") in r.engine.beds


def test_a_full_table_refuses_a_new_bed_until_the_idlest_has_been_silent(
    anomaly, rec100: Record
) -> None:
    r = rig(anomaly, max_beds=2, signal_timeout_s=5.0)
    for now, payload in chunk_payloads(rec100, 360, stop=360 * 3):
        for bed in ("b1", "b2"):
            r.pubs += r.engine.handle(samples_topic("w1", bed), payload, now)
    status = encode_status(Status("online", T0, "dev3"))
    assert r.engine.handle(status_topic("w1", "b3"), status, now + 1.0) == []
    assert r.bad("too_many_beds") == 1 and ("w1", "b3") not in r.engine.beds
    r.pubs += r.engine.flush(now)  # no beat waits in the batcher
    r.engine.handle(status_topic("w1", "b3"), status, now + 6.0)
    assert r.bad("bed_evicted") == 1 and len(r.engine.beds) == 2
    assert ("w1", "b3") in r.engine.beds and ("w1", "b1") not in r.engine.beds


def test_waiting_beats_come_out_on_flush_and_their_bed_is_kept(anomaly, rec100: Record) -> None:
    r = rig(anomaly, max_batch=60_000, max_wait_s=5.0, bed_idle_s=1.0)
    now = RX0
    for now, payload in chunk_payloads(rec100, 180, stop=360 * 4):  # no tick: nothing is due
        r.pubs += r.engine.handle(samples_topic("w1", "b1"), payload, now)
    deadline = r.engine.next_deadline()
    assert beats_of(r.pubs) == [] and deadline is not None and deadline > now + 1.5
    r.pubs += r.engine.tick(now + 1.5)  # idle, but beats wait: the bed is not forgotten
    assert beats_of(r.pubs) == [] and ("w1", "b1") in r.engine.beds
    out = r.engine.flush(now + 1.5)
    beats = beats_of(out)
    ref = reference_times(rec100)
    assert len(beats) >= 3 and [b.t for b in beats] == sorted(b.t for b in beats)
    assert all(np.abs(ref - (b.t - T0)).min() <= TOL_S for b in beats)
    assert r.engine.next_deadline() is None and r.engine.beds[("w1", "b1")].queued == 0
    assert r.engine.flush(now + 1.6) == []
    r.engine.tick(now + 2.6)  # the twice-a-second sweep
    assert ("w1", "b1") not in r.engine.beds


def test_engine_output_does_not_depend_on_the_chunk_size(anomaly, rec119: Record) -> None:
    """Record 119 (bigeminy): beats, scores, classes and anomaly events are the same for chunks
    of 0.1 s, 0.5 s and 2.8 s; the threshold sits inside the scores so both kinds occur."""
    probe = rig(anomaly)
    replay(probe, rec119, 180)
    probe.pubs += probe.engine.flush(1e9)
    threshold = float(np.median([b.score for b in beats_of(probe.pubs)]))
    runs = []
    for n in (36, 180, 1000):
        r = rig(anomaly, threshold=threshold)
        last = replay(r, rec119, n)
        r.pubs += r.engine.flush(last)
        beats = [(b.sample, b.t, b.rr_s, b.score, b.cls, b.anomalous) for b in beats_of(r.pubs)]
        events = sorted((e.type, e.active, e.t, e.detail.get("beat_id")) for e in events_of(r.pubs))
        runs.append((beats, events))
    beats, events = runs[0]
    assert len(beats) >= 60 and {c for *_, c, _ in beats} == {"N", "V"}
    anomalous = [b for b in beats if b[-1]]
    assert 0 < len(anomalous) < len(beats)
    assert [e for e in events if e[0] == "anomaly"] == sorted(
        ("anomaly", True, b[1], f"w1:b1:{b[0]}") for b in anomalous
    )
    for other in runs[1:]:
        assert other == runs[0]


def test_every_publication_goes_to_a_known_topic(anomaly, rec100: Record) -> None:
    r = rig(anomaly)
    replay(r, rec100, 180, stop=360 * 10)
    assert r.pubs
    kinds = {parse_topic(p.topic).kind for p in r.pubs}
    assert kinds <= {"beats", "events"} and "beats" in kinds
