"""Streamer: pacing and chunking (sans-I/O core), config, and the service on a real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecgcommon.protocol import decode_samples, decode_status
from ecgcommon.records import load_record
from ecgcommon.settings import build
from ecgcommon.topics import parse_topic, subscription
from streamer.config import StreamerConfig, parse_args
from streamer.core import Playback, Source, make_streams, schedule, sleep_for
from streamer.service import main
from tests.helpers.broker import Broker, Mosquitto
from tests.helpers.mqtt import Subscriber
from tests.helpers.procs import OutputLines

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sources(data_dir: Path) -> list[Source]:
    return [
        Source.from_record(load_record(n, data_dir, sampto=36_000, annotations=False))
        for n in ("100", "114", "201")
    ]


def test_chunks_are_paced_contiguous_and_exact(sources: list[Source]) -> None:
    playback = Playback(1000.0, speed=2.0, max_samples=3600)
    streams = make_streams(sources, "w", 5, 0.5, playback, stride_s=10.0)
    msgs = list(schedule(streams))
    dues = [m.due_s for m in msgs]
    assert dues == sorted(dues)
    assert len(msgs) == 5 * 3600 // 180
    by_bed: dict[str, list] = {}
    for m in msgs:
        by_bed.setdefault(m.bed, []).append(decode_samples(m.payload))
    assert sorted(by_bed) == ["01", "02", "03", "04", "05"]
    for chunks in by_bed.values():
        assert [c.seq for c in chunks] == list(range(20))
        assert [c.first_sample for c in chunks] == [180 * k for k in range(20)]
        # device clock: t0 advances by exactly the chunk duration
        assert np.allclose(np.diff([c.t0 for c in chunks]), 0.5)
        assert all(c.fs == 360.0 and c.gain == 200.0 and c.units == "mV" for c in chunks)
        assert chunks[0].leads[0] == "MLII"  # 114 stores V5 first; MLII is put first
        assert parse_topic(msgs[0].topic).kind == "samples"
    # at speed 2 a bed's k-th chunk is due when its last sample happened, at half time
    bed1 = [m for m in msgs if m.bed == "01"]
    assert bed1[0].due_s == pytest.approx(0.25) and bed1[-1].due_s == pytest.approx(5.0)
    # phases are staggered inside one chunk so beds do not publish in bursts
    firsts = sorted(next(m.due_s for m in msgs if m.bed == b) for b in by_bed)
    assert firsts[-1] - firsts[0] == pytest.approx(0.25 * 4 / 5)


def test_beds_cycle_records_with_their_own_offsets(sources: list[Source]) -> None:
    streams = make_streams(sources, "w", 4, 1.0, Playback(0.0), stride_s=20.0)
    first = [decode_samples(s.next_message().payload) for s in streams]
    # bed 1 and bed 4 both start on record 100, 20 s apart
    np.testing.assert_array_equal(first[0].samples, sources[0].raw[:360])
    np.testing.assert_array_equal(first[3].samples, sources[0].raw[7200:7560])
    np.testing.assert_array_equal(first[1].samples, sources[1].raw[:360])
    np.testing.assert_array_equal(first[2].samples, sources[2].raw[:360])
    # a bed runs on into the next record when its record ends
    tail = make_streams(sources, "w", 1, 1.0, Playback(0.0), stride_s=99.5)[0]
    for _ in range(1):
        tail.next_message()
    n0 = sources[0].raw.shape[0]
    tail._pos = n0 - 100  # noqa: SLF001 - jump near the end of the first record
    chunk = decode_samples(tail.next_message().payload)
    np.testing.assert_array_equal(chunk.samples[:100], sources[0].raw[-100:])
    np.testing.assert_array_equal(chunk.samples[100:], sources[1].raw[:260])


def test_json_payload_option(sources: list[Source]) -> None:
    msg = make_streams(sources, "w", 1, 0.1, Playback(0.0, json_payload=True))[0].next_message()
    assert msg.payload[:1] == b"{"
    np.testing.assert_array_equal(decode_samples(msg.payload).samples, sources[0].raw[:36])


def test_playback_refuses_what_cannot_play() -> None:
    with pytest.raises(ValueError, match="speed"):
        Playback(0.0, speed=0.0)
    with pytest.raises(ValueError, match="max_samples"):
        Playback(0.0, max_samples=-1)
    with pytest.raises(ValueError, match="t_start"):
        Playback(float("nan"))


def test_sleep_for() -> None:
    assert sleep_for(2.0, 1.5) == 0.5
    assert sleep_for(1.0, 3.0) == 0.0


def test_config_errors_name_the_field() -> None:
    for kwargs, name in [
        ({"beds": 0}, "beds"),
        ({"speed": 0.0}, "speed"),
        ({"chunk_s": 0.0}, "chunk_s"),
        ({"qos": 3}, "qos"),
        ({"ward": "a/b"}, "ward"),
        ({"mqtt_port": 0}, "port"),
        ({"duration_s": -1.0}, "duration_s"),
    ]:
        with pytest.raises(ValueError, match=name):
            build(StreamerConfig, kwargs)  # flattened names: mqtt_port is mqtt.port
    cfg = parse_args(
        ["--beds", "3"],
        env={
            "MQTT_HOST": "mq",
            "STREAMER_SPEED": "4",
            "STREAMER_RECORDS": "100, 101",
            "STREAMER_JSON": "1",
        },
    )
    assert (cfg.mqtt.host, cfg.beds, cfg.speed, cfg.records, cfg.json_payload) == (
        "mq",
        3,
        4.0,
        ("100", "101"),
        True,
    )
    with pytest.raises(ValueError, match="speed"):
        parse_args([], env={"STREAMER_SPEED": "fast"})


def test_missing_data_or_record_is_a_clear_error(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["--data-dir", str(tmp_path / "nope"), "--port", "1"]) == 2
    assert "does not exist" in caplog.text and "nope" in caplog.text
    caplog.clear()
    assert main(["--data-dir", str(data_dir), "--records", "999", "--port", "1"]) == 2
    assert "'999' not found" in caplog.text


def _streamer(broker: Broker, ward: str, *args: str, text: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamer",
            "--host",
            broker.host,
            "--port",
            str(broker.port),
            "--ward",
            ward,
            "--records",
            "100",
            "201",
            "--http-port",
            "0",  # any free port: tests run side by side
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=text,
    )


def test_streams_beds_with_status_over_real_broker(broker: Broker, unique_ward: str) -> None:
    sub = Subscriber(
        broker, subscription("samples", ward=unique_ward), subscription("status", ward=unique_ward)
    )
    try:
        proc = _streamer(
            broker,
            unique_ward,
            "--beds",
            "3",
            "--speed",
            "20",
            "--chunk-s",
            "0.5",
            "--duration-s",
            "10",
            "--qos",
            "1",
        )
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out.decode()
        assert sub.wait_for(lambda: len(sub.of_kind("samples")) >= 60)
        chunks = [(parse_topic(t).bed, decode_samples(p)) for t, p, _ in sub.of_kind("samples")]
        assert len(chunks) == 60
        for bed in ("01", "02", "03"):
            seqs = [c.seq for b, c in chunks if b == bed]
            assert seqs == list(range(20))
        states = {}
        assert sub.wait_for(lambda: len(sub.of_kind("status")) >= 6)
        for t, p, _ in sub.of_kind("status"):
            states.setdefault(parse_topic(t).bed, []).append(decode_status(p).state)
        assert sorted(states) == ["01", "02", "03"]
        assert all(s[0] == "online" and s[-1] == "offline" for s in states.values())
    finally:
        sub.close()


def test_sigterm_stops_cleanly(broker: Broker, unique_ward: str) -> None:
    sub = Subscriber(broker, subscription("+", ward=unique_ward))
    try:
        proc = _streamer(broker, unique_ward, "--beds", "2", "--speed", "1")
        assert sub.wait_for(lambda: len(sub.of_kind("samples")) >= 2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out.decode()
        assert b"stopping" in out
        assert sub.wait_for(
            lambda: (
                sum(decode_status(p).state == "offline" for _, p, _ in sub.of_kind("status")) == 2
            )
        )
    finally:
        sub.close()


def test_reconnects_after_broker_restart(tmp_path: Path, unique_ward: str) -> None:
    mq = Mosquitto(tmp_path)
    broker = mq.start().broker
    proc = _streamer(
        broker,
        unique_ward,
        "--beds",
        "1",
        "--speed",
        "4",
        "--chunk-s",
        "0.25",
        "--reconnect-min-s",
        "0.5",
        "--reconnect-max-s",
        "2",
        text=True,
    )
    assert proc.stdout is not None
    log = OutputLines(proc.stdout)
    sub = None
    try:
        sub = Subscriber(broker, subscription("samples", ward=unique_ward))
        assert sub.wait_for(lambda: len(sub.of_kind("samples")) >= 3)
        sub.close()
        mq.stop()
        log.wait_line(r"bed 01: disconnected", 10, "the streamer seeing the broker go")
        mq.start()
        sub = Subscriber(broker, subscription("samples", ward=unique_ward))
        assert sub.wait_for(lambda: len(sub.of_kind("samples")) >= 3, timeout=20)
        assert proc.poll() is None
    finally:
        if sub is not None:
            sub.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        log.join()
        mq.stop()


def test_missing_record_samples_go_out_as_missing_not_junk() -> None:
    from ecgcommon.protocol import MISSING_SAMPLE
    from ecgcommon.records import Record

    signal = np.array([[0.5], [np.nan], [-200.0]])
    src = Source.from_record(Record("x", 250.0, signal, ("ECG",), ("mV",)), gain=200.0)
    assert src.raw[:, 0].tolist() == [100, MISSING_SAMPLE, -32767]
