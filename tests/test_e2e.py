"""End to end: streamer -> mosquitto -> detector, as separate processes, at 60x speed.

Three records x 5 minutes. The beats that come back over MQTT must match the reference
annotations as well as the same QRSDetector fed the same samples offline (within 0.2 %), and
ventricular (V) beats must raise anomaly events.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import wfdb.processing as wp

from detector.qrs import QRSDetector
from ecgcommon.aami import aami_class
from ecgcommon.protocol import decode_beats, decode_event
from ecgcommon.records import load_record
from ecgcommon.topics import parse_topic, subscription
from streamer.core import Source
from tests.conftest import Broker, free_port

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ("100", "119", "208")  # bed 01, 02, 03 (stride 0: each from its start)
DURATION_S = 300
SPEED = 60
FS = 360.0
MATCH = round(0.15 * FS)  # the offline evaluation's matching window (detector.evaluate_qrs)


def _score(ref: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    cmp = wp.compare_annotations(ref, np.asarray(test, dtype=np.int64), MATCH)
    return cmp.tp / (cmp.tp + cmp.fn), cmp.tp / (cmp.tp + cmp.fp)


@pytest.mark.slow
def test_streamer_broker_detector(broker: Broker, unique_ward: str, data_dir: Path) -> None:
    beats: dict[str, list] = {}
    events: list = []
    lock = threading.Lock()
    ready = threading.Event()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        t = parse_topic(msg.topic)
        with lock:
            if t.kind == "beats":
                beats.setdefault(t.bed, []).extend(decode_beats(msg.payload))
            else:
                events.append(decode_event(msg.payload))

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    topics = [(subscription(kind, ward=unique_ward), 1) for kind in ("beats", "events")]
    sub.on_connect = lambda c, *_: c.subscribe(topics)
    sub.on_subscribe = lambda *_: ready.set()
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    assert ready.wait(5)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    http_port = free_port()
    detector = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "detector",
            "--host",
            broker.host,
            "--port",
            str(broker.port),
            "--ward",
            unique_ward,
            "--http-host",
            "127.0.0.1",
            "--http-port",
            str(http_port),
            "--qos-in",
            "1",
            "--qos-beats",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=1):
                    break
            except OSError:
                assert detector.poll() is None, detector.stdout.read().decode()
                time.sleep(0.2)
        streamer = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamer",
                "--host",
                broker.host,
                "--port",
                str(broker.port),
                "--ward",
                unique_ward,
                "--records",
                *RECORDS,
                "--beds",
                str(len(RECORDS)),
                "--stride-s",
                "0",
                "--duration-s",
                str(DURATION_S),
                "--speed",
                str(SPEED),
                "--qos",
                "1",
                "--data-dir",
                str(data_dir),
                "--http-port",
                "0",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert streamer.returncode == 0, streamer.stdout.decode() + streamer.stderr.decode()

        def settled() -> bool:
            with lock:
                return all(
                    b in beats and beats[b][-1].sample > (DURATION_S - 3) * FS
                    for b in ("01", "02", "03")
                )

        deadline = time.monotonic() + 60
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        assert settled(), {b: len(v) for b, v in beats.items()}
    finally:
        detector.send_signal(signal.SIGTERM)
        out, _ = detector.communicate(timeout=20)
        sub.disconnect()
        sub.loop_stop()
    assert detector.returncode == 0, out.decode()[-3000:]

    end = (DURATION_S - 1) * FS  # the last second: windows still incomplete when streams end
    total_anomalies_on_v = total_v = 0
    for bed, name in zip(("01", "02", "03"), RECORDS, strict=True):
        rec = load_record(name, data_dir, sampto=int(DURATION_S * FS))
        src = Source.from_record(rec)
        x = src.raw[:, 0] / src.gain  # exactly the samples the streamer sent, in mV
        is_beat = np.array([aami_class(s) is not None for s in rec.ann_symbols])
        ref = rec.ann_samples[is_beat & (rec.ann_samples < end)]
        offline = QRSDetector(FS).feed(x)
        live = np.array([b.sample for b in beats[bed]])
        assert len(set(live.tolist())) == len(live), "no beat published twice"
        se_off, ppv_off = _score(ref, offline[offline < end])
        se_live, ppv_live = _score(ref, live[live < end])
        print(
            f"record {name}: offline Se {se_off:.4f} +P {ppv_off:.4f} | "
            f"MQTT Se {se_live:.4f} +P {ppv_live:.4f} ({len(live)} beats)"
        )
        assert abs(se_live - se_off) <= 0.002 and abs(ppv_live - ppv_off) <= 0.002
        # V beats give anomaly events
        flagged = np.array(
            sorted(e.detail["sample"] for e in events if e.bed == bed and e.type == "anomaly")
        )
        v_ref = rec.ann_samples[
            (np.array([aami_class(s) == "V" for s in rec.ann_symbols])) & (rec.ann_samples < end)
        ]
        if len(v_ref):
            hit = sum(bool(len(flagged)) and np.abs(flagged - v).min() <= MATCH for v in v_ref)
            total_anomalies_on_v += hit
            total_v += len(v_ref)
            print(
                f"record {name}: {hit}/{len(v_ref)} V beats raised an anomaly event, "
                f"{len(flagged)} anomaly events in all"
            )
    assert total_v > 50
    assert total_anomalies_on_v / total_v >= 0.5
