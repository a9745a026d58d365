"""Untrusted-input limits against the real services on a real Mosquitto: each attack of issue 10
that the limits cover becomes a counted drop or a technical event, and the real bed stays
monitored (its beats keep coming, the bed tables stay bounded)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from detector.anomaly import AnomalyConfig
from detector.scorer import OnnxScorer
from detector.service import DetectorService
from ecgcommon import limits, protocol
from ecgcommon.protocol import SampleChunk, encode_samples, encode_samples_json, encode_status
from ecgcommon.topics import samples_topic, status_topic
from tests.helpers.alerting import (
    Publisher,
    WardFeeder,
    beat,
    get_json,
    http,
    make_config,
    metric_value,
    running_alerting,
)
from tests.helpers.broker import Broker
from tests.helpers.detector import detector_config, record_raw, running_detector
from tests.helpers.mqtt import WardListener
from tests.helpers.waits import wait_until

FS = 360.0
CHUNK = 90  # 0.25 s
SPEED = 4.0  # the device streams at 4x real time (the detector works on samples, not clocks)


class Device(threading.Thread):
    """A real bed: record 119 in chunks on the real broker, paced, until stopped."""

    def __init__(self, broker: Broker, ward: str, bed: str, raw: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.ward, self.bed, self.raw = ward, bed, raw
        self.t0 = time.time()
        self.k = 0
        self.stop_event = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def chunk(self, k: int) -> SampleChunk:
        lo = (k * CHUNK) % (self.raw.size - CHUNK)
        data = self.raw[lo : lo + CHUNK].reshape(-1, 1)
        return SampleChunk(k, k * CHUNK, self.t0 + k * CHUNK / FS, FS, 200.0, "mV", ("MLII",), data)

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop_event.is_set():
            due = start + self.k * CHUNK / FS / SPEED
            if self.stop_event.wait(max(0.0, due - time.monotonic())):  # paced: real time
                break
            payload = encode_samples(self.chunk(self.k))
            self.client.publish(samples_topic(self.ward, self.bed), payload, qos=0)
            self.k += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)
        self.client.loop_stop()
        self.client.disconnect()


class Pub(Publisher):
    """The harness publisher under its own client id (the feeder holds `pub-{ward}`)."""

    def __init__(self, broker: Broker, ward: str) -> None:
        self.ward = ward
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"attacker-{uuid.uuid4().hex[:8]}"
        )
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.seq: dict[str, int] = {}


class Attacker:
    """Any client on the broker (the ACLs are the broker's job; these are the limits behind)."""

    def __init__(self, broker: Broker) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="module")
def raw(data_dir: Path) -> np.ndarray:
    return record_raw(data_dir, "119", 120)


@pytest.fixture
def detector(broker: Broker, unique_ward: str) -> Iterator[DetectorService]:
    """The real detector with the real autoencoder (the beat-class network is not needed here)."""
    cfg = detector_config(broker, unique_ward, signal_timeout_s=1.5, max_wait_s=0.02, max_beds=64)
    onnx = OnnxScorer(cfg.model_dir)
    anomaly = AnomalyConfig.from_manifest(onnx.manifest)
    with running_detector(cfg, scorer=onnx, anomaly=anomaly) as svc:
        yield svc


@contextmanager
def _bed_under_attack(
    broker: Broker, ward: str, raw: np.ndarray, bed: str | None
) -> Iterator[tuple[WardListener, Device | None, Attacker]]:
    """A listener on the ward, the real `bed` streaming (if any) and an attacker; all closed
    when the block ends."""
    sub = WardListener(broker, ward)
    dev = Device(broker, ward, bed, raw) if bed else None
    evil = Attacker(broker)
    try:
        if dev is not None:
            dev.start()
        yield sub, dev, evil
    finally:
        if dev is not None:
            dev.stop()
        evil.close()
        sub.close()


def bad(svc: DetectorService, reason: str) -> float:
    return svc.metrics.bad_messages.labels(reason)._value.get()


def beats_after(sub: WardListener, bed: str, sample: int) -> int:
    return sum(1 for b in sub.beats_of(bed) if b.sample > sample)


@pytest.mark.slow
def test_detector_first_sample_jump_fs_declaration_and_junk_beds_leave_the_bed_monitored(
    detector: DetectorService, broker: Broker, unique_ward: str, raw: np.ndarray
) -> None:
    with _bed_under_attack(broker, unique_ward, raw, "07") as (sub, dev, evil):
        assert wait_until(lambda: len(sub.beats_of("07")) >= 5, timeout=20)
        topic = samples_topic(unique_ward, "07")
        # one chunk 2^40 samples ahead: a new stream, then the real one is a new stream again
        jump = SampleChunk(
            dev.k, 2**40, time.time(), FS, 200.0, "mV", ("MLII",), raw[:CHUNK].reshape(-1, 1)
        )
        evil.send(topic, encode_samples(jump))
        # 100 kHz declared: refused by the decoder, counted
        evil.send(
            topic,
            encode_samples_json(
                SampleChunk(dev.k, 0, time.time(), 100_000.0, 1.0, "mV", ("I",), np.zeros((100, 1)))
            ),
        )
        # 10k junk bed names: valid and invalid, every one refused or bounded
        for i in range(10_000):
            name = f"junk{i}" if i % 2 else f"junk:{i}"  # ':' is not allowed in a bed name
            evil.client.publish(
                samples_topic(unique_ward, name)
                if i % 2
                else f"ecg/v1/{unique_ward}/{name}/samples",
                encode_samples(jump),
                qos=0,
            )
        mark = dev.k * CHUNK
        # the real bed keeps getting beats from chunks sent after all of it
        assert wait_until(lambda: beats_after(sub, "07", mark + int(4 * FS)) >= 5, timeout=30)
        assert len(detector.engine.beds) <= 64
        assert bad(detector, "bad_fs") >= 1
        assert bad(detector, "bad_topic") >= 4_000
        assert bad(detector, "too_many_beds") + bad(detector, "bed_evicted") >= 4_000
        restarts = [e for e in sub.events_of("07", "gap") if e.detail.get("restart")]
        assert restarts, "the jump was not reported as a stream restart"


@pytest.mark.slow
def test_detector_chunks_that_cannot_be_analysed_raise_signal_lost(
    detector: DetectorService, broker: Broker, unique_ward: str, raw: np.ndarray
) -> None:
    with _bed_under_attack(broker, unique_ward, raw, None) as (sub, _, evil):
        topic = samples_topic(unique_ward, "03")
        t0 = time.time()
        for k in range(8):  # the bed streams ...
            evil.send(
                topic,
                encode_samples(
                    SampleChunk(
                        k,
                        k * CHUNK,
                        t0 + k * CHUNK / FS,
                        FS,
                        200.0,
                        "mV",
                        ("MLII",),
                        raw[k * CHUNK : (k + 1) * CHUNK].reshape(-1, 1),
                    )
                ),
            )
        # ... then only sends chunks that cannot be analysed: duplicates and a bad rate
        for _ in range(30):
            evil.send(
                topic,
                encode_samples(
                    SampleChunk(
                        7, 7 * CHUNK, t0, FS, 200.0, "mV", ("MLII",), raw[:CHUNK].reshape(-1, 1)
                    )
                ),
            )
            evil.send(topic, b'{"seq":1,"first_sample":0,"t0":1,"fs":5e4,"samples":[1,2]}')
            time.sleep(0.1)  # wall time is the test: 3 s of only these, past the 1.5 s timeout
        assert wait_until(lambda: any(e.active for e in sub.events_of("03", "signal_lost")), 10)
        assert sub.events_of("03", "duplicate")


@pytest.mark.slow
def test_detector_offline_status_is_overruled_by_samples_still_flowing(
    detector: DetectorService, broker: Broker, unique_ward: str, raw: np.ndarray
) -> None:
    with (
        _bed_under_attack(broker, unique_ward, raw, "05") as (sub, dev, evil),
        contextlib.ExitStack() as cleanup,  # clears the retained forged status at the end
    ):
        assert wait_until(lambda: len(sub.beats_of("05")) >= 3, timeout=20)
        status = encode_status(protocol.Status("offline", time.time() - 60, "forged"))
        evil.send(status_topic(unique_ward, "05"), status, retain=True)
        cleanup.callback(evil.send, status_topic(unique_ward, "05"), b"", retain=True)
        assert wait_until(
            lambda: [
                e
                for e in sub.events_of("05", "device_offline")
                if not e.active and e.detail.get("contradicted_by") == "samples"
            ],
            10,
        )
        # a detector that subscribes later gets the retained status: older than the samples
        # it then sees, it is ignored (counted), and no device_offline is raised at all
        n_before = len(sub.events_of("05", "device_offline"))
        engine = detector.engine
        bed = engine.beds[(unique_ward, "05")]
        before = bad(detector, "stale_status")
        out = engine.handle(status_topic(unique_ward, "05"), status, time.monotonic(), True)
        assert out == [] and bad(detector, "stale_status") == before + 1 and not bed.offline
        assert len(sub.events_of("05", "device_offline")) == n_before


# ---------------------------------------------------------------- alerting


@pytest.fixture
def alerting(broker: Broker, unique_ward: str, tmp_path: Path) -> Iterator[tuple[Any, Pub]]:
    """The real alerting service with a real bed "1" streaming, and a publisher of its own."""
    cfg = make_config(broker, unique_ward, tmp_path / "alarms.db", max_beds=20)
    with running_alerting(cfg) as svc:
        feeder = WardFeeder(broker, unique_ward, {"1": (72.0, 0)}).start()
        try:
            with contextlib.closing(Pub(broker, unique_ward)) as pub:
                yield svc, pub
        finally:
            feeder.stop()


def newest_beat_t(port: int, bed: str) -> float:
    status, _, body = http(port, f"/api/beds/{bed}")
    if status != 200:
        return 0.0
    beats = json.loads(body)["beats"]
    return max((b["t"] for b in beats), default=0.0)


def open_alarms(port: int, bed: str) -> list[dict]:
    return get_json(port, f"/api/alarms?bed={bed}&state=open")["alarms"]


DROPS = "ecg_alerting_dropped_messages_total"


@pytest.mark.slow
def test_alerting_far_future_beat_and_fs_declaration_leave_the_bed_monitored(
    alerting, broker: Broker, unique_ward: str
) -> None:
    svc, pub = alerting
    assert wait_until(lambda: newest_beat_t(svc.port, "1") > 0, timeout=10)
    forged = beat(unique_ward, "1", 10**9, FS, time.time() + 1e6, 0.8)
    pub.beats("1", [forged])
    chunk = SampleChunk(0, 0, time.time(), 100_000.0, 1.0, "mV", ("I",), np.zeros((100, 1)))
    pub.raw("1", "samples", encode_samples_json(chunk))
    assert wait_until(lambda: metric_value(svc.port, DROPS, reason="clock_skew") >= 1)
    assert wait_until(lambda: metric_value(svc.port, DROPS, reason="bad_fs") >= 1)
    after = time.time()
    # real beats after the forged one are still taken: no stale drop, no frozen rate
    assert wait_until(lambda: newest_beat_t(svc.port, "1") > after, timeout=10)
    assert open_alarms(svc.port, "1") == []  # no false asystole, no clock_skew for one beat


@pytest.mark.slow
def test_alerting_device_clock_an_hour_behind_is_a_clock_skew_alarm_not_an_escalation(
    alerting, broker: Broker, unique_ward: str
) -> None:
    svc, pub = alerting
    t0 = time.time() - 3600.0
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < limits.MAX_CLOCK_SKEW_S / 10 + 3.5:
        y = np.zeros(36)
        pub.samples("9", k * 36, t0 + k * 0.1, y)
        k += 1
        time.sleep(0.1)  # a device streaming in real time: the skew check runs on wall time
    alarms = wait_until(lambda: open_alarms(svc.port, "9"))
    assert [a["type"] for a in alarms] == ["clock_skew"]
    assert alarms[0]["priority"] == "technical" and not alarms[0]["escalated"]
    assert metric_value(svc.port, DROPS, reason="clock_skew") >= k - 1
    # bed 1 with a right clock is not affected
    assert open_alarms(svc.port, "1") == []


@pytest.mark.slow
def test_alerting_junk_bed_names_never_lock_a_new_real_bed_out(
    alerting, broker: Broker, unique_ward: str
) -> None:
    svc, pub = alerting
    for i in range(300):  # far more than max_beds (20), valid and invalid names
        status = encode_status(protocol.Status("online", time.time(), "junk"))
        if i % 3:
            pub.client.publish(status_topic(unique_ward, f"junk{i}"), status, qos=0)
        else:
            pub.client.publish(f"ecg/v1/{unique_ward}/junk {i}/status", status, qos=0)
    assert wait_until(lambda: metric_value(svc.port, DROPS, reason="bad_topic") >= 100)
    assert len(get_json(svc.port, "/api/beds")["beds"]) <= 20
    time.sleep(1.2)  # wall time is the test: junk beds idle > JUNK_BED_IDLE_S make room
    t0 = time.time()
    beats = [
        beat(unique_ward, "real", round((0.2 + i * 0.8) * FS), FS, t0, None if i == 0 else 0.8)
        for i in range(3)
    ]
    pub.stream("real", t0, np.zeros(int(2.5 * FS)), beats)
    summary = wait_until(lambda: http(svc.port, "/api/beds/real")[0] == 200, timeout=10)
    assert summary
    assert len(get_json(svc.port, "/api/beds")["beds"]) <= 20
    assert metric_value(svc.port, DROPS, reason="bed_evicted") >= 1
    # the streaming bed with beats was never evicted
    assert wait_until(lambda: newest_beat_t(svc.port, "1") > t0, timeout=10)


# ---------------------------------------------------------------- the limits themselves


@pytest.mark.parametrize(
    "payload, reason",
    [
        (
            b'{"seq":1,"first_sample":0,"t0":1' + b"0" * 400 + b',"fs":360,"samples":[1]}',
            "bad_number",
        ),
        (b'{"seq":1,"first_sample":0,"t0":1e999,"fs":360,"samples":[1]}', "bad_number"),
        (b'{"seq":1,"first_sample":0,"t0":NaN,"fs":360,"samples":[1]}', "bad_number"),
        (b'{"seq":1,"first_sample":0,"t0":1,"fs":100000,"samples":[1]}', "bad_fs"),
        (b'{"seq":1,"first_sample":0,"t0":1,"fs":99.9,"samples":[1]}', "bad_fs"),
        (
            b'{"seq":1,"first_sample":0,"t0":1,"fs":360,"samples":[' + b"1," * 10_000 + b"1]}",
            "bad_samples",
        ),
        (b'{"samples":' + b"[" * 100_000, "bad_json"),
    ],
)
def test_decoders_refuse_out_of_limit_chunks_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(protocol.DecodeError) as err:
        protocol.decode_samples(payload)
    assert err.value.reason == reason


def test_binary_chunks_over_the_sample_limit_are_refused() -> None:
    n = limits.MAX_CHUNK_SAMPLES + 1
    chunk = SampleChunk(0, 0, 1.0, 1000.0, 1.0, "mV", ("I",), np.zeros((n, 1), np.int16))
    with pytest.raises(protocol.DecodeError) as err:
        protocol.decode_samples(encode_samples(chunk))
    assert err.value.reason == "bad_samples"


@pytest.mark.parametrize("name", ["a" * 65, "bed:1", "bed 1", "-x", ".", "béd", ""])
def test_bed_names_outside_the_limits_are_refused_on_parse(name: str) -> None:
    from ecgcommon.topics import TopicError, parse_topic

    with pytest.raises(TopicError):
        parse_topic(f"ecg/v1/ward-a/{name}/samples")
    assert parse_topic(f"ecg/v1/ward-a/{'b' * 64}/samples").bed == "b" * 64


def test_drops_are_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    limiter = limits.LogLimiter(logging.getLogger("limits-test"))
    with caplog.at_level(logging.WARNING, logger="limits-test"):
        for i in range(2500):
            limiter("bad_fs", "drop %d", i)
        limiter("bad_json", "other")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5 + 2 + 1  # the first 5, the 1000th and 2000th, and a new reason
    assert "#2000" in lines[-2] and "bad_json" in lines[-1]


def test_untrusted_text_cannot_forge_log_lines() -> None:
    line = limits.log_safe("%s: %s", "ecg/v1/w/b\nWARNING forged\x00/samples", "x" * 1000)
    assert "\n" not in line and "\x00" not in line and "\\x0a" in line
    assert len(line) <= limits.MAX_LOG_CHARS + 3
