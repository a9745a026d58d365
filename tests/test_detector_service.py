"""The running detector on a real broker and real HTTP: bad input, integrity events, status,
signal loss, lead-off, /metrics, /healthz and POST /v1/score."""

from __future__ import annotations

import json
import logging
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from detector.pipeline import Pipeline
from detector.service import DetectorService
from ecgcommon.aami import aami_class
from ecgcommon.protocol import SampleChunk, encode_samples, encode_samples_json
from ecgcommon.records import load_record
from ecgcommon.topics import samples_topic, status_topic
from ecgcommon.windowing import WINDOW
from tests.conftest import Broker
from tests.helpers.broker import Mosquitto
from tests.helpers.detector import detector_config, record_raw, running_detector
from tests.helpers.mqtt import Subscriber, WardListener, suback_event
from tests.helpers.waits import wait_event, wait_until

FS = 360.0
CHUNK = 180

Sub = WardListener  # the old name (tests/test_input_limits.py imports it from here)


def wait_for(cond: Callable[[], object], timeout: float = 20.0) -> bool:
    """Poll real state until `cond()` holds; `WaitTimeout` (an AssertionError) if it does not."""
    return bool(wait_until(cond, timeout, "the detector's output"))


class Device:
    """A test device publishing chunks of a record on the real broker."""

    def __init__(self, broker: Broker, ward: str, bed: str, raw: np.ndarray) -> None:
        self.topic = samples_topic(ward, bed)
        self.status = status_topic(ward, bed)
        self.raw = raw
        self.t0 = time.time()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.connect(broker.host, broker.port)
        c.loop_start()
        self.client = c

    def chunk(self, k: int, n: int = CHUNK, raw: np.ndarray | None = None) -> SampleChunk:
        data = self.raw[k * n : (k + 1) * n] if raw is None else raw
        return SampleChunk(
            k, k * n, self.t0 + k * n / FS, FS, 200.0, "mV", ("MLII",), data.reshape(-1, 1)
        )

    def send(self, payload: bytes) -> None:
        self.client.publish(self.topic, payload, qos=1).wait_for_publish(5)

    def send_chunks(self, ks: list[int]) -> None:
        for k in ks:
            self.send(encode_samples(self.chunk(k)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def ward_io(broker: Broker, ward: str, bed: str, raw: np.ndarray) -> Iterator[tuple[Sub, Device]]:
    """A listener to the ward's beats and events and a device of one bed, closed after."""
    sub = Sub(broker, ward)
    dev = Device(broker, ward, bed, raw)
    try:
        yield sub, dev
    finally:
        sub.close()
        dev.close()


@pytest.fixture(scope="module")
def raw(data_dir: Path) -> np.ndarray:
    return record_raw(data_dir, "119", 120, FS)


@pytest.fixture
def service(broker: Broker, unique_ward: str) -> Iterator[DetectorService]:
    cfg = detector_config(
        broker, unique_ward, signal_timeout_s=1.5, max_wait_s=0.02, qos_beats=1
    )  # returned once its subscriptions are acknowledged
    with running_detector(cfg) as svc:
        yield svc


def http(svc: DetectorService, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{svc.http_port}{path}",
        data=body,
        headers={"Authorization": f"Bearer {svc.token}"}
        | ({"Content-Type": "application/json"} if body else {}),
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def metric(svc: DetectorService, name: str, labels: str = "") -> float:
    _, text = http(svc, "/metrics")
    for line in text.decode().splitlines():
        if line.startswith(name + (("{" + labels + "}") if labels else " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_malformed_messages_are_counted_by_reason_and_service_carries_on(
    service: DetectorService, broker: Broker, unique_ward: str, raw: np.ndarray
) -> None:
    with ward_io(broker, unique_ward, "01", raw) as (sub, dev):
        dev.send(b"garbage that is not a frame")
        dev.send(b'{"seq": 1, "first_sample": 0, "t0": 0, "samples": [1, 2]}')  # no fs
        dev.send(b"{not json")
        dev.send(encode_samples(dev.chunk(0))[:-3])
        dev.send(
            encode_samples_json(SampleChunk(0, 0, 0.0, 20.0, 1.0, "mV", ("I",), np.zeros((20, 1))))
        )  # 20 Hz: outside ecgcommon.limits' range, refused by the decoder
        dev.send_chunks(list(range(0, 60)))
        assert wait_for(lambda: len(sub.beats_of("01")) >= 20)
        assert wait_for(
            lambda: metric(service, "ecg_detector_bad_messages_total", 'reason="bad_fs"') == 2
        )
        for reason in ("bad_magic", "bad_json", "truncated"):
            assert metric(service, "ecg_detector_bad_messages_total", f'reason="{reason}"') == 1, (
                reason
            )
        beats = sub.beats_of("01")
        b = beats[5]
        assert b.beat_id == f"{unique_ward}:01:{b.sample}" and 0 < b.rr_s < 2
        assert b.hr_bpm == pytest.approx(60 / b.rr_s, rel=1e-3)
        assert b.t == pytest.approx(dev.t0 + b.sample / FS, abs=1e-3)
        assert all((x.errors is not None) == x.anomalous for x in beats)
        assert metric(service, "ecg_detector_beats_total") >= 20
        # the beats counted above may come before the last chunks are processed
        assert wait_for(lambda: metric(service, "ecg_detector_chunks_total") == 60)
        assert metric(service, "ecg_detector_inference_seconds_count") >= 1
        assert metric(service, "ecg_detector_batch_size_beats_count") >= 1


def test_gap_duplicate_out_of_order_become_events(
    service: DetectorService, broker: Broker, unique_ward: str, raw: np.ndarray
) -> None:
    with ward_io(broker, unique_ward, "02", raw) as (sub, dev):
        dev.send_chunks([0, 1, 2, 3, 3, 4, 5, 8, 6, 9, 10])
        assert wait_for(lambda: len(sub.events_of("02", "out_of_order")) == 1)
        dup = sub.events_of("02", "duplicate")
        gap = sub.events_of("02", "gap")
        late = sub.events_of("02", "out_of_order")
        assert [e.detail["seq"] for e in dup] == [3]
        assert [
            (e.detail["expected_seq"], e.detail["got_seq"], e.detail["missing_chunks"]) for e in gap
        ] == [(6, 8, 2)]
        assert gap[0].detail["missing_samples"] == 2 * CHUNK
        assert late[0].detail["seq"] == 6
        assert metric(service, "ecg_detector_events_total", 'type="gap"') == 1


def test_device_offline_via_last_will_signal_lost_and_lead_off(
    service: DetectorService, broker: Broker, unique_ward: str, raw: np.ndarray
) -> None:
    with ward_io(broker, unique_ward, "03", raw) as (sub, dev):
        # a device whose connection dies: mosquitto publishes its retained last will
        status = Subscriber(broker, dev.status)
        will = subprocess.Popen(
            [
                "mosquitto_pub",
                "-h",
                broker.host,
                "-p",
                str(broker.port),
                "-t",
                dev.status,
                "-l",
                "--will-topic",
                dev.status,
                "--will-payload",
                '{"state":"offline"}',
                "--will-retain",
                "--will-qos",
                "1",
                "-i",
                f"dev-{unique_ward}",
            ],
            stdin=subprocess.PIPE,
        )
        assert will.stdin is not None
        will.stdin.write(b'{"state":"online","t":1}\n')
        will.stdin.flush()
        # its status arrived: it is connected, its will registered
        status.wait_for(lambda: status.messages, 10, "the device's online status")
        status.close()
        will.kill()  # no DISCONNECT: the broker fires the will
        will.wait(5)
        assert wait_for(
            lambda: [e.active for e in sub.events_of("03", "device_offline")] == [True], timeout=10
        )
        dev.client.publish(dev.status, b'{"state":"online","t":2}', qos=1, retain=True)
        assert wait_for(
            lambda: [e.active for e in sub.events_of("03", "device_offline")] == [True, False]
        )
        # 20 s of signal, the last 8 s flat (disconnected electrode), then silence
        flat = raw[: 20 * 360].copy()
        flat[12 * 360 :] = flat[12 * 360]
        for k in range(40):
            dev.send(encode_samples(dev.chunk(k, raw=flat[k * CHUNK : (k + 1) * CHUNK])))
        assert wait_for(lambda: [e.active for e in sub.events_of("03", "lead_off")] == [True])
        assert wait_for(
            lambda: [e.active for e in sub.events_of("03", "signal_lost")] == [True], timeout=10
        )
        assert metric(service, "ecg_detector_active_beds") == 0
        dev.send_chunks([40])
        assert wait_for(
            lambda: [e.active for e in sub.events_of("03", "signal_lost")] == [True, False]
        )
        dev.client.publish(dev.status, b"", qos=1, retain=True).wait_for_publish(5)  # clean up


def test_metrics_and_healthz_over_http(service: DetectorService) -> None:
    code, body = http(service, "/healthz")
    assert code == 200
    doc = json.loads(body)
    assert doc["status"] == "ok" and doc["mqtt_connected"] and doc["worker_alive"]
    code, body = http(service, "/metrics")
    text = body.decode()
    assert code == 200
    for name in (
        "ecg_detector_beats_total",
        "ecg_detector_anomalies_total",
        "ecg_detector_processing_lag_seconds_bucket",
        "ecg_detector_inference_seconds_bucket",
        "ecg_detector_batch_size_beats_bucket",
        "ecg_detector_active_beds",
        "ecg_detector_mqtt_connected 1.0",
    ):
        assert name in text, name
    assert http(service, "/nope")[0] == 404


def test_score_endpoint_over_http(service: DetectorService, data_dir: Path) -> None:
    rec = load_record("119", data_dir, sampto=int(FS * 60))
    body = json.dumps({"fs": FS, "samples": rec.lead(0).round(4).tolist()}).encode()
    code, resp = http(service, "/v1/score", body)
    assert code == 200, resp
    doc = json.loads(resp)
    beats = doc["beats"]
    assert doc["n_beats"] == len(beats) and doc["fs"] == FS
    truth = [
        s
        for s, sym in zip(rec.ann_samples, rec.ann_symbols, strict=True)
        if aami_class(sym) is not None
    ]
    # the live code path: exactly the pipeline's beats on the same samples, close to the truth
    same = Pipeline().feed_signal(np.asarray(json.loads(body)["samples"]), FS).beats
    assert [b["sample"] for b in beats] == [b.sample for b in same]
    assert abs(len(beats) - len(truth)) <= 0.05 * len(truth)
    assert all(len(b["errors"]) == WINDOW.n_points for b in beats)
    assert all(b["anomalous"] == (b["score"] >= b["threshold"]) for b in beats)
    assert beats[3]["t_s"] == pytest.approx(beats[3]["sample"] / FS, abs=1e-3)
    for bad, word in [
        (b"{", "JSON"),
        (b"[1, 2]", "object"),
        (json.dumps({"samples": [0.1] * 400}).encode(), "fs"),
        (json.dumps({"fs": 360, "samples": "abc"}).encode(), "samples"),
        (json.dumps({"fs": 360, "samples": [[1, 2]]}).encode(), "samples"),
        (json.dumps({"fs": 20, "samples": [0.0] * 100}).encode(), "fs"),
        (json.dumps({"fs": 360, "samples": [0.0, None]}).encode(), "samples"),
    ]:
        code, resp = http(service, "/v1/score", bad)
        assert code == 400, bad
        assert word in json.loads(resp)["error"], (bad, resp)


def test_reconnects_with_backoff_after_broker_restart(
    tmp_path: Path, unique_ward: str, raw: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="detector")
    mq = Mosquitto(tmp_path)
    broker = mq.start().broker
    cfg = detector_config(broker, unique_ward)
    cfg = replace(cfg, mqtt=replace(cfg.mqtt, reconnect_min_s=0.2, reconnect_max_s=1.0))

    def failed_attempts() -> int:
        return sum("cannot reach the broker" in r.getMessage() for r in caplog.records)

    try:
        with running_detector(cfg) as svc:
            resubscribed = suback_event(svc.client)
            mq.stop()
            assert wait_for(lambda: http(svc, "/healthz")[0] == 503, timeout=10)
            assert json.loads(http(svc, "/healthz")[1])["mqtt_connected"] is False
            wait_until(lambda: failed_attempts() >= 2, 10, "failed attempts, backing off")
            mq.start()
            assert wait_for(lambda: http(svc, "/healthz")[0] == 200, timeout=15)
            wait_event(resubscribed, 10, "the detector's SUBACK after the restart")
            with ward_io(broker, unique_ward, "07", raw) as (sub, dev):
                dev.send_chunks(list(range(40)))
                assert wait_for(lambda: len(sub.beats_of("07")) >= 10)
    finally:
        mq.stop()
