"""The whole live path on the wall clock: simulated devices stream the test signals in real time
to a real Mosquitto, the real detector service (a child process) publishes beats, the real
alerting service (a thread here) publishes alarms, and a subscriber timestamps them. All trials
run at once, one bed each.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from alerting.config import AlertingConfig
from alerting.core import alarms_topic
from alerting.service import AlertingService
from bench.alarms.signals import FS, asystole_signal, device_source, tachy_signal
from bench.alarms.timing import summary
from bench.services import start_detector, stop_process
from ecgcommon import protocol, topics
from streamer.core import BedStream, Playback, schedule
from tests.helpers.alerting import make_config, running_alerting
from tests.helpers.broker import Broker, Mosquitto
from tests.helpers.ports import free_port
from tests.helpers.waits import WaitTimeout, wait_until

log = logging.getLogger("bench.alarms")
WARD = "bench-live"
LEAD_S = 0.5  # the devices' first sample is this far in the future when streaming starts
DRAIN_S = 5.0  # after the last chunk, wait this long at most for the alarms still due
TACHY_TAIL_S = 8.0  # a tachycardia bed streams this long past the onset
SERVICE_TIMING = ("batch_s", "tick_s")  # the service's defaults, not the test harness's


@contextmanager
def alerting_service(broker: Broker, ward: str, folder: Path) -> Iterator[AlertingService]:
    """The real alerting service on `broker` (HTTP on a free port, a store in `folder`), with
    the service's own timing defaults (the tests' harness runs it faster)."""
    defaults = {f.name: f.default for f in fields(AlertingConfig) if f.name in SERVICE_TIMING}
    config = make_config(broker, ward, folder / "alarms.db", **defaults)
    with running_alerting(config) as service:
        yield service


@dataclass(frozen=True)
class LiveBed:
    """One simulated device: its signal (mV), the moment its alarm is due (s), the kind."""

    x: np.ndarray
    mark: float
    kind: str  # "asystole" or "tachy"

    @property
    def wanted(self) -> tuple[str, ...]:
        return ("asystole",) if self.kind == "asystole" else ("tachy", "extreme_tachy")


def live_beds(trials: int, rng: np.random.Generator) -> dict[str, LiveBed]:
    """Standstill beds and tachycardia beds, the same signals as the in-process trials."""
    beds: dict[str, LiveBed] = {}
    for k in range(trials):
        x, crit = asystole_signal(rng)
        beds[f"asys{k}"] = LiveBed(x, crit, "asystole")
        x, onset = tachy_signal(rng)
        beds[f"tachy{k}"] = LiveBed(x[: int((onset + TACHY_TAIL_S) * FS)], onset, "tachy")
    return beds


class AlarmListener:
    """A subscriber to the ward's alarm changes and detector events, timestamping arrivals."""

    def __init__(self, broker: Broker, ward: str) -> None:
        self.received: list[tuple[float, str, str, str]] = []  # (wall time, bed, kind, type)
        self.events: list[tuple[float, str, str, bool]] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-alarm-listener")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(
            [(alarms_topic(ward, "+"), 1), (topics.subscription("events", ward=ward), 1)]
        )
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the alarm listener could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        if msg.topic.endswith("/events"):
            ev = protocol.decode_event(bytes(msg.payload))
            self.events.append((now, ev.bed, ev.type, ev.active))
            return
        doc = json.loads(msg.payload)
        self.received.append((now, doc["alarm"]["bed"], doc["kind"], doc["alarm"]["type"]))

    def raised(self, bed: str, types: tuple[str, ...]) -> list[float]:
        """Arrival times of the alarms of `types` raised for `bed`."""
        return [t for t, b, k, typ in self.received if b == bed and k == "raised" and typ in types]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stream_devices(broker: Broker, ward: str, beds: dict[str, LiveBed], chunk_s: float) -> float:
    """Every bed online, then its signal in real time through the streamer's own chunking
    (a chunk leaves once its last sample exists). Returns the wall time of the first sample."""
    dev = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-devices")
    dev.connect(broker.host, broker.port)
    dev.loop_start()
    try:
        for bed in beds:
            status = protocol.encode_status(protocol.Status("online", time.time(), "bench"))
            dev.publish(topics.status_topic(ward, bed), status, qos=1).wait_for_publish(10)
        t0 = time.time() + LEAD_S
        streams = [
            BedStream(bed, ward, [src], 0, 0, chunk_s, Playback(t0, max_samples=len(src.raw)))
            for bed, b in beds.items()
            for src in [device_source(bed, b.x)]
        ]
        for msg in schedule(streams):
            pause = t0 + msg.due_s - time.time()
            if pause > 0:
                time.sleep(pause)  # the device clock: the chunk's last sample exists now
            dev.publish(msg.topic, msg.payload)
    finally:
        dev.loop_stop()
        dev.disconnect()
    return t0


def score_live(beds: dict[str, LiveBed], listener: AlarmListener, t0: float) -> dict[str, Any]:
    """Delay of each bed's first alarm of its kind after its mark; early and missed ones."""
    asys: list[float] = []
    tachy: list[float] = []
    early = missed = 0
    for bed, b in beds.items():
        mark = t0 + b.mark
        hits = listener.raised(bed, b.wanted)
        if b.kind == "asystole":
            early += sum(1 for t in hits if t < mark)
            hits = [t for t in hits if t >= mark]
        if not hits:
            missed += 1
            continue
        (asys if b.kind == "asystole" else tachy).append(hits[0] - mark)
    return {
        "asystole_delay_s": summary(asys),
        "tachy_time_to_alarm_s": summary(tachy),
        "missed": missed,
        "early_asystole": early,
    }


def _all_alarmed(beds: dict[str, LiveBed], listener: AlarmListener) -> bool:
    return all(listener.raised(bed, b.wanted) for bed, b in beds.items())


def measure_live(trials: int, chunk_s: float, seed: int, model_dir: Path | None) -> dict[str, Any]:
    """The live path (module doc): asystole and tachycardia delays on the wall clock."""
    beds = live_beds(trials, np.random.default_rng(seed))
    extra = ["--client-id", "bench-detector"]
    if model_dir:
        extra += ["--model-dir", str(model_dir)]
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp)) as broker:
        detector = start_detector(broker.port, WARD, free_port(), extra)
        try:
            with alerting_service(broker, WARD, Path(tmp)):
                listener = AlarmListener(broker, WARD)
                try:
                    t0 = stream_devices(broker, WARD, beds, chunk_s)
                    try:
                        wait_until(lambda: _all_alarmed(beds, listener), DRAIN_S, "every alarm")
                    except WaitTimeout:
                        pass  # the beds without their alarm count as missed
                finally:
                    listener.close()
        finally:
            stop_process(detector)
    log.debug("live alarms: %s", [(round(r[0] - t0, 2), *r[1:]) for r in listener.received])
    log.debug("live events: %s", [(round(e[0] - t0, 2), *e[1:]) for e in listener.events])
    return score_live(beds, listener, t0) | {
        "trials": trials,
        "chunk_s": chunk_s,
        "path": "devices -> mosquitto -> detector service -> alerting service -> alarm "
        "topic (wall clock)",
    }
