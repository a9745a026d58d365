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
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from ecgcommon.topics import subscription
from streamer.config import StreamerConfig, parse_args
from streamer.http_server import StatusServer
from streamer.service import Streamer
from tests.conftest import Broker, free_port

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


def wait_until(what: str, ok: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


class Counter:
    """A real MQTT subscriber counting the sample chunks it receives."""

    def __init__(self, broker: Broker, ward: str) -> None:
        self.n = 0
        ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.on_subscribe = lambda *_: ready.set()
        c.on_message = self._on_message
        c.connect(broker.host, broker.port)
        c.subscribe(subscription("samples", ward=ward), qos=1)
        c.loop_start()
        assert ready.wait(5)
        self.client = c

    def _on_message(self, *_: object) -> None:
        self.n += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_cli_serves_growing_metrics_and_health(
    broker: Broker, unique_ward: str, data_dir: Path
) -> None:
    received = Counter(broker, unique_ward)
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
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the log names the port the kernel gave
            lines.append(line)
            m = re.search(r"HTTP /metrics and /healthz on 127\.0\.0\.1:(\d+)", line)
            if m:
                base = f"http://127.0.0.1:{m.group(1)}"
                break
        else:
            pytest.fail("no HTTP port in the log:\n" + "".join(lines))
        threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()

        wait_until("/healthz 200", lambda: health(base)[0] == 200)
        status, doc = health(base)
        assert doc["streaming"] is True and doc["beds"] == doc["beds_connected"] == 2
        first = scrape(base)
        assert first["ecg_streamer_beds"] == 2 and first["ecg_streamer_connected_beds"] == 2
        time.sleep(1.5)  # 2 beds x 2 chunks per signal second x 10x speed: ~60 chunks
        second = scrape(base)
        chunks = second["ecg_streamer_chunks_published_total"]
        assert chunks > first["ecg_streamer_chunks_published_total"] + 10
        # 0.5 s chunks at 360 Hz: 180 samples each (the records are long, no short tail)
        assert second["ecg_streamer_samples_published_total"] == 180 * chunks
        assert second["ecg_streamer_pacing_lag_seconds_count"] == chunks
        assert second["ecg_streamer_chunks_dropped_total{reason=disconnected}"] == 0
        assert second["ecg_streamer_reconnects_total"] == 0
        assert get(f"{base}/nothing")[0] == 404

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, "".join(lines)
        # QoS 1 to a live broker: everything counted as published arrived
        published = int(re.findall(r"published (\d+) chunks", "".join(lines))[-1])
        wait_until("every chunk received", lambda: received.n == published, timeout=10)
        assert published >= chunks
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        received.close()


def _start_mosquitto(port: int, folder: Path) -> subprocess.Popen:
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(
        ["/usr/sbin/mosquitto", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_until("mosquitto listening", listening, timeout=10)
    return proc


def test_broker_loss_counts_drops_fails_health_then_reconnects(
    tmp_path: Path, unique_ward: str, data_dir: Path
) -> None:
    port = free_port()
    mq = _start_mosquitto(port, tmp_path)
    config = StreamerConfig(
        host="127.0.0.1",
        port=port,
        ward=unique_ward,
        beds=2,
        data_dir=str(data_dir),
        records=("100",),
        speed=4.0,
        chunk_s=0.25,
        reconnect_min_s=0.5,
        reconnect_max_s=1.0,
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
            wait_until("/healthz 200", lambda: health(base)[0] == 200)
            wait_until(
                "chunks published", lambda: scrape(base)["ecg_streamer_chunks_published_total"] > 5
            )
            mq.terminate()
            mq.wait(5)
            wait_until("drops while the broker is away", lambda: scrape(base)[drops] >= 4)
            status, doc = health(base)
            assert status == 503 and doc["beds_connected"] < 2 and doc["streaming"] is True
            assert scrape(base)["ecg_streamer_connected_beds"] < 2

            mq = _start_mosquitto(port, tmp_path)
            wait_until("/healthz 200 again", lambda: health(base)[0] == 200, timeout=30)
            after = scrape(base)
            assert after["ecg_streamer_reconnects_total"] == 2  # each bed's device, once
            assert after["ecg_streamer_connected_beds"] == 2
            before = after["ecg_streamer_chunks_published_total"]
            wait_until(
                "publishing again",
                lambda: scrape(base)["ecg_streamer_chunks_published_total"] > before + 4,
            )
        finally:
            stop.set()
            runner.join(15)
            mq.terminate()
            mq.wait(5)
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
