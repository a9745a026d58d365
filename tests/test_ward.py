"""`make ward` for real: the launcher starts the broker and the three services, answers on every
URL it prints, and stops everything cleanly on Ctrl-C (SIGINT). Also the embedded broker
(amqtt) that the ward falls back on where Mosquitto is not installed: real paho-mqtt 2 clients
against it, and the whole ward running on it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
WARD_PY = ROOT / "scripts" / "ward.py"


def load_ward_module():
    """scripts/ward.py is a script, not a package: load it by path."""
    spec = importlib.util.spec_from_file_location("ward_script", WARD_PY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["ward_script"] = module
    spec.loader.exec_module(module)
    return module


ward = load_ward_module()


@pytest.fixture
def amqtt_broker(tmp_path: Path) -> Iterator[int]:
    """The ward's embedded broker, started exactly as the ward starts it."""
    port = free_port()
    launch = ward.broker_launch("embedded", "127.0.0.1", port, tmp_path)
    assert launch.name == "amqtt"
    log = open(tmp_path / "amqtt.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(launch.argv, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not ward.Ward._up(launch):
            assert proc.poll() is None, (tmp_path / "amqtt.log").read_text()
            assert time.monotonic() < deadline, "amqtt did not listen"
            time.sleep(0.1)
        yield port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _client(port: int, name: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_embedded_broker_serves_paho2_clients(amqtt_broker: int, unique_ward: str) -> None:
    """QoS 0 and 1 delivery in order, wildcard subscriptions and retained status messages:
    what the services rely on from a broker."""
    got: list[tuple[str, bytes, bool]] = []
    done = threading.Event()
    n = 500

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        got.append((m.topic, m.payload, m.retain))
        if len(got) == n + 1:
            done.set()

    sub = _client(amqtt_broker, "sub")
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe(f"ecg/v1/{unique_ward}/+/samples", qos=1)
    assert subscribed.wait(5)
    pub = _client(amqtt_broker, "pub")
    for i in range(n):
        pub.publish(f"ecg/v1/{unique_ward}/b{i % 4}/samples", i.to_bytes(4, "big") * 300, qos=0)
    pub.publish(f"ecg/v1/{unique_ward}/b9/samples", b"last", qos=1).wait_for_publish(5)
    assert done.wait(20), f"received {len(got)} of {n + 1}"
    per_bed = {}
    for topic, payload, _ in got[:-1]:
        per_bed.setdefault(topic, []).append(int.from_bytes(payload[:4], "big"))
    assert all(seq == sorted(seq) for seq in per_bed.values())
    assert got[-1][1] == b"last"

    status = f"ecg/v1/{unique_ward}/b1/status"
    pub.publish(status, json.dumps({"state": "online"}), qos=1, retain=True).wait_for_publish(5)
    late: list[tuple[str, bytes, bool]] = []
    late_sub = _client(amqtt_broker, "late")
    late_sub.on_message = lambda _c, _u, m: late.append((m.topic, m.payload, m.retain))
    late_sub.subscribe(f"ecg/v1/{unique_ward}/+/status", qos=1)
    deadline = time.monotonic() + 5
    while not late and time.monotonic() < deadline:
        time.sleep(0.05)
    assert late and late[0][0] == status and late[0][2] is True
    for c in (sub, pub, late_sub):
        c.loop_stop()
        c.disconnect()
