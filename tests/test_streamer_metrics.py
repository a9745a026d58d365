"""The streamer's /metrics and /healthz over real HTTP, streaming to a real Mosquitto.

`python -m streamer --http-port 0` as a user runs it (the log names the port it took): counters
grow while it streams and agree with what a real subscriber receives. In-process, with a private
registry and a broker of its own that the test stops and restarts: chunks not sent while the
broker is away are counted as dropped (reason `disconnected`), /healthz goes 503, and after the
devices reconnect the reconnects counter has grown and /healthz is 200 again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from ecgcommon.settings import MqttSettings
from ecgcommon.topics import subscription
from streamer.config import StreamerConfig, parse_args
from streamer.http_server import StatusServer
from streamer.service import Streamer
from tests.helpers.broker import Broker, Mosquitto
from tests.helpers.mqtt import Subscriber
from tests.helpers.procs import OutputLines
from tests.helpers.waits import wait_until

ROOT = Path(__file__).resolve().parent.parent


def get(url: str) -> tuple[int, bytes]:
    """Status and body, for error statuses too."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(base: str) -> dict[str, float]:
    """Every sample of /metrics, keyed `name{label=value,...}` (labels sorted)."""
    status, body = get(f"{base}/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def health(base: str) -> tuple[int, dict]:
    status, body = get(f"{base}/healthz")
    return status, json.loads(body)


def test_cli_serves_growing_metrics_and_health(
    broker: Broker, unique_ward: str, data_dir: Path
) -> None:
    received = Subscriber(broker, subscription("samples", ward=unique_ward))
    argv = [sys.executable, "-m", "streamer", "--host", broker.host, "--port", str(broker.port)]
    argv += ["--ward", unique_ward, "--data-dir", str(data_dir), "--records", "100", "119"]
    argv += ["--beds", "2", "--speed", "10", "--chunk-s", "0.5", "--qos", "1"]
    argv += ["--http-host", "127.0.0.1", "--http-port", "0"]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    log = OutputLines(proc.stdout)
    try:  # the log names the port the kernel gave
        port = log.wait_line(r"HTTP /metrics and /healthz on 127\.0\.0\.1:(\d+)", 30).group(1)
        base = f"http://127.0.0.1:{port}"

        wait_until(lambda: health(base)[0] == 200, 30, "/healthz 200")
        status, doc = health(base)
        assert doc["streaming"] is True and doc["beds"] == doc["beds_connected"] == 2
        first = scrape(base)
        assert first["ecg_streamer_beds"] == 2 and first["ecg_streamer_connected_beds"] == 2

        def more_chunks() -> dict[str, float] | None:  # 2 beds x 2 chunks per signal s x 10
            now = scrape(base)
            grown = now["ecg_streamer_chunks_published_total"]
            return now if grown > first["ecg_streamer_chunks_published_total"] + 10 else None

        second = wait_until(more_chunks, 30, "more than 10 chunks published")
        chunks = second["ecg_streamer_chunks_published_total"]
        assert chunks > first["ecg_streamer_chunks_published_total"] + 10
        # 0.5 s chunks at 360 Hz: 180 samples each (the records are long, no short tail)
        assert second["ecg_streamer_samples_published_total"] == 180 * chunks
        assert second["ecg_streamer_pacing_lag_seconds_count"] == chunks
        assert second["ecg_streamer_chunks_dropped_total{reason=disconnected}"] == 0
        assert second["ecg_streamer_reconnects_total"] == 0
        assert get(f"{base}/nothing")[0] == 404

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.text()
        # QoS 1 to a live broker: everything counted as published arrived
        published = int(re.findall(r"published (\d+) chunks", log.join())[-1])
        wait_until(lambda: len(received.messages) == published, 10, "every chunk received")
        assert published >= chunks
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        received.close()


def test_broker_loss_counts_drops_fails_health_then_reconnects(
    tmp_path: Path, unique_ward: str, data_dir: Path
) -> None:
    mq = Mosquitto(tmp_path).start()
    port = mq.port
    config = StreamerConfig(
        mqtt=MqttSettings(host="127.0.0.1", port=port, reconnect_min_s=0.5, reconnect_max_s=1.0),
        ward=unique_ward,
        beds=2,
        data_dir=str(data_dir),
        records=("100",),
        speed=4.0,
        chunk_s=0.25,
        http_host="127.0.0.1",
        http_port=0,
    )
    stop = threading.Event()
    streamer = Streamer(config, stop, registry=CollectorRegistry())
    server = StatusServer(config.http_host, 0, streamer.registry, streamer.healthy)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    assert health(base) == (
        503,
        {
            "status": "unavailable",
            "streaming": False,
            "beds": 2,
            "beds_connected": 0,
            "chunks_published": 0,
            "chunks_dropped": 0,
        },
    )
    runner = threading.Thread(target=streamer.run, daemon=True)
    runner.start()
    drops = "ecg_streamer_chunks_dropped_total{reason=disconnected}"
    try:
        try:
            wait_until(lambda: health(base)[0] == 200, 30, "/healthz 200")
            wait_until(
                lambda: scrape(base)["ecg_streamer_chunks_published_total"] > 5,
                30,
                "chunks published",
            )
            mq.stop()
            wait_until(lambda: scrape(base)[drops] >= 4, 30, "drops while the broker is away")
            status, doc = health(base)
            assert status == 503 and doc["beds_connected"] < 2 and doc["streaming"] is True
            assert scrape(base)["ecg_streamer_connected_beds"] < 2

            mq.start()
            wait_until(lambda: health(base)[0] == 200, 30, "/healthz 200 again")
            after = scrape(base)
            assert after["ecg_streamer_reconnects_total"] == 2  # each bed's device, once
            assert after["ecg_streamer_connected_beds"] == 2
            before = after["ecg_streamer_chunks_published_total"]
            wait_until(
                lambda: scrape(base)["ecg_streamer_chunks_published_total"] > before + 4,
                30,
                "publishing again",
            )
        finally:
            stop.set()
            runner.join(15)
            mq.stop()
        assert not runner.is_alive()
        # stopped: not streaming, and the exported counters are the streamer's own numbers
        status, doc = health(base)
        assert status == 503 and doc["streaming"] is False
        final = scrape(base)
        assert final["ecg_streamer_chunks_published_total"] == streamer.published
        dropped = sum(
            v for k, v in final.items() if k.startswith("ecg_streamer_chunks_dropped_total")
        )
        assert dropped == streamer.dropped == final[drops]
    finally:
        server.stop()
    assert health_refused(base)


def health_refused(base: str) -> bool:
    """Nothing answers once the server has stopped."""
    try:
        urllib.request.urlopen(f"{base}/healthz", timeout=2)
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    return False


def test_http_port_config() -> None:
    assert StreamerConfig().http_port == 9101
    with pytest.raises(ValueError, match="http_port"):
        StreamerConfig(http_port=70000)
    with pytest.raises(ValueError, match="http_host"):
        StreamerConfig(http_host="")
    cfg = parse_args([], env={"STREAMER_HTTP_PORT": "0", "STREAMER_HTTP_HOST": "127.0.0.1"})
    assert (cfg.http_host, cfg.http_port) == ("127.0.0.1", 0)
    assert parse_args(["--http-port", "9200"], env={"STREAMER_HTTP_PORT": "0"}).http_port == 9200
    with pytest.raises(ValueError, match="http_port"):
        parse_args([], env={"STREAMER_HTTP_PORT": "nine"})
