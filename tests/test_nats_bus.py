"""The NATS bus (ECG_BUS=nats://…) on one real nats-server: subjects and partitions, a device on
NATS's MQTT port through the detector worker to alerting, checkpoints in KV, and an alerting
service killed with -9 that raises, on restart, the alarm whose cause fell in its outage."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from prometheus_client import CollectorRegistry

from bench.cluster.engine import NatsCluster, running_cluster
from bench.cluster.scenario import Feeder, Observer, sources, start_service
from detector.config import DetectorConfig
from detector.service import DetectorService
from ecgcommon import protocol, subjects
from ecgcommon.topics import TopicError
from tests.helpers.alerting import TOKEN, beat, get_json, http, make_config, running_alerting
from tests.helpers.ports import free_port
from tests.helpers.waits import wait_until

ROOT = Path(__file__).resolve().parent.parent
FS = 360.0


@dataclass(frozen=True)
class _Addr:
    host: str = "127.0.0.1"
    port: int = 1883


def test_subjects_partitions_and_bus_urls() -> None:
    assert subjects.subject("ecg/v1/ward-a/07/beats") == "ecg.v1.ward-a.07.beats"
    assert subjects.topic_of("part.3.ward-a.07.samples") == "ecg/v1/ward-a/07/samples"
    assert subjects.topic_of("ecg.v1.ward-a.07.events") == "ecg/v1/ward-a/07/events"
    assert subjects.partition_of("part.5.w.b.status") == 5
    with pytest.raises(TopicError):
        subjects.subject("ecg/v1/ward-a/bed.7/beats")  # '.' splits a NATS token
    with pytest.raises(TopicError):
        subjects.topic_of("part.1.w.b.alarms")
    with pytest.raises(TopicError):
        subjects.partition_of("ecg.v1.w.b.samples")
    m = subjects.mappings(8)
    assert m["ecg.v1.*.*.samples"] == (
        "part.{{partition(8,1,2)}}.{{wildcard(1)}}.{{wildcard(2)}}.samples"
    )
    assert set(m) == {"ecg.v1.*.*.samples", "ecg.v1.*.*.status"}
    bus = subjects.parse_bus("nats://a:4222, b:4223")
    assert bus.servers == ("nats://a:4222", "nats://b:4223") and bus.is_nats
    assert not subjects.parse_bus("").is_nats and not subjects.parse_bus("mqtt").is_nats
    for bad in ("tcp://a:1", "nats://a", "nats://:4222", "nats://a:0"):
        with pytest.raises(ValueError):
            subjects.parse_bus(bad)
    with pytest.raises(ValueError, match="bus"):
        DetectorConfig(bus="kafka://x:1")
    with pytest.raises(ValueError, match="worker_id"):
        DetectorConfig(bus="nats://a:1", worker_id="a b")


@pytest.fixture
def single(tmp_path: Path) -> Iterator[NatsCluster]:
    with running_cluster(tmp_path / "nats", n=1) as cluster:
        yield cluster


async def _kv_keys(url: str, bucket: str) -> list[str]:
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value(bucket)
        return list(await kv.keys())
    finally:
        await nc.close()


@pytest.mark.slow
def test_device_on_nats_mqtt_reaches_detector_and_alerting(
    single: NatsCluster, unique_ward: str, data_dir: Path, tmp_path: Path
) -> None:
    """MQTT device -> NATS (partition mapping, ECG_IN) -> detector worker -> ECG_OUT -> alerting;
    each beat once, beds' states checkpointed in KV, healthz says the bus is up."""
    node = single.nodes[0]
    observer = Observer([node.url], unique_ward)
    observer.start()
    assert observer.ready.wait(10)
    svc = DetectorService(
        DetectorConfig(
            bus=single.bus,
            worker_id="w1",
            ward=unique_ward,
            http_port=0,
            http_host="127.0.0.1",
            checkpoint_s=1.0,
        ),
        registry=CollectorRegistry(),
    )
    svc.start()
    feeder = None
    try:
        assert svc.connected.wait(20)
        cfg = make_config(_Addr(), unique_ward, tmp_path / "alarms.db", bus=single.bus)
        with running_alerting(cfg) as alerting:
            port = alerting.port
            assert port is not None
            ok, doc = svc.healthy()
            assert ok and doc["mqtt_connected"]
            feeder = Feeder(node.mqtt_port, unique_ward, sources(data_dir, ["100"], 12), 2, 12)
            feeder.start()
            feeder.join(30)

            def beats_of(bed: str) -> int:
                status, _, body = http(port, f"/api/beds/{bed}")
                return len(json.loads(body).get("beats", [])) if status == 200 else 0

            wait_until(
                lambda: min(beats_of("01"), beats_of("02")) >= 10, 20, "10 beats of each bed"
            )
            bed = get_json(port, "/api/beds/01")
            assert bed["hr_bpm"] and 60 <= bed["hr_bpm"] <= 90  # record 100: about 75 bpm
            assert beats_of("02") >= 10
        seen = observer.seen
        assert sum(len(v) for v in seen.beats.values()) >= 20
        assert seen.duplicates() == 0
        for rows in seen.beats.values():
            samples = [s for s, _ in rows]
            assert samples == sorted(samples)

        def checkpointed() -> bool:  # the next checkpoint round holds both beds
            keys = asyncio.run(_kv_keys(node.url, subjects.CHECKPOINTS))
            return all(any(k.endswith(f".{unique_ward}.{b}") for k in keys) for b in ("01", "02"))

        wait_until(checkpointed, 15, "a checkpoint of beds 01 and 02", interval=0.2)
    finally:
        if feeder is not None:
            feeder.close()
        observer.close()
        svc.stop()


def _alerting_proc(bus: str, ward: str, db: Path, port: int, log: Path) -> subprocess.Popen:
    args = ["--bus", bus, "--ward", ward, "--http-port", str(port), "--db", str(db)]
    return start_service("alerting", args, log, ALERTING_TOKEN=TOKEN)


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    def alive() -> None:
        assert proc.poll() is None, "alerting exited"

    def healthy() -> bool:
        status, _, body = http(port, "/healthz", token=None)
        return status == 200 and bool(json.loads(body).get("mqtt_connected"))

    wait_until(healthy, timeout, "alerting on the bus", check=alive, ignore=(OSError,))


async def _publish_beats(url: str, ward: str, bed: str, beats: list[protocol.BeatResult]) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for b in beats:  # as the detector does: into ECG_OUT, acknowledged
            await js.publish(f"ecg.v1.{ward}.{bed}.beats", protocol.encode_beats([b]))
    finally:
        await nc.close()


@pytest.mark.slow
def test_alerting_killed_raises_on_restart_the_alarm_whose_cause_fell_in_the_outage(
    single: NatsCluster, unique_ward: str, tmp_path: Path
) -> None:
    port = free_port()
    db, log = tmp_path / "alarms.db", tmp_path / "alerting.log"
    proc = _alerting_proc(single.bus, unique_ward, db, port, log)
    try:
        _wait_healthy(port, proc)
        os.kill(proc.pid, signal.SIGKILL)  # kill -9: no goodbye
        proc.wait(10)
        # while it is down, the detector reports 6 s at 170 bpm (extreme tachycardia)
        t0 = time.time() - 6.0
        rr = 60.0 / 170.0
        beats = [
            beat(unique_ward, "7", round((0.2 + i * rr) * FS), FS, t0, None if i == 0 else rr)
            for i in range(16)
        ]
        asyncio.run(_publish_beats(single.nodes[0].url, unique_ward, "7", beats))
        proc = _alerting_proc(single.bus, unique_ward, db, port, log)
        _wait_healthy(port, proc)

        def tachy() -> list:
            doc = get_json(port, "/api/alarms")
            return [a for a in doc.get("alarms", doc) if a["type"] == "extreme_tachy"]

        alarms = wait_until(
            tachy, 15, "the extreme_tachy alarm", detail=lambda: log.read_text()[-3000:]
        )
        assert alarms[0]["bed"] == "7"
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
