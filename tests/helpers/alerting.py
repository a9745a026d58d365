"""Harness of the alerting service: run the real service in a thread of this process,
publish real protocol messages to the real broker, read its HTTP API and websocket feed."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from alerting.config import AlertingConfig
from alerting.service import AlertingService
from ecgcommon import protocol, topics
from ecgcommon.settings import MqttSettings

from .waits import POLL_S, wait_until

T = TypeVar("T")

TOKEN = "test-token-0123456789"


def make_config(broker: Any, ward: str, db: Path, **overrides: Any) -> AlertingConfig:
    base = AlertingConfig(
        mqtt=MqttSettings(host=broker.host, port=broker.port),
        ward=ward,
        http_port=0,
        token=TOKEN,
        db_path=str(db),
        detector_url="http://127.0.0.1:9",
        batch_s=0.05,
        tick_s=0.5,
    )
    return replace(base, **overrides)


@contextmanager
def running_alerting(config: AlertingConfig) -> Iterator[AlertingService]:
    """The real service (uvicorn + paho + policy + SQLite) on a thread with its own loop."""
    service = AlertingService(config)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(service.run())
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run, name="alerting-under-test", daemon=True)
    thread.start()
    if not service.ready.wait(15):
        raise RuntimeError(f"alerting service did not start: {errors}")
    assert service.mqtt is not None
    if not service.mqtt.connected.wait(10):
        raise RuntimeError("alerting service did not connect to the broker")
    try:
        yield service
    finally:
        service.stop()
        thread.join(15)
        assert not thread.is_alive(), "alerting service did not stop"
        assert not errors, errors


class Publisher:
    """A device/detector stand-in that speaks the real wire protocol over the real broker."""

    def __init__(self, broker: Any, ward: str) -> None:
        self.ward = ward
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{ward}")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.seq: dict[str, int] = {}

    def raw(self, bed: str, kind: str, payload: bytes) -> None:
        self.client.publish(topics.topic(self.ward, bed, kind), payload, qos=1).wait_for_publish(5)

    def status(self, bed: str, state: str = "online") -> None:
        self.raw(bed, "status", protocol.encode_status(protocol.Status(state, time.time(), "sim")))

    def samples(self, bed: str, first: int, t0: float, y_mv: np.ndarray, fs: float = 360.0) -> None:
        seq = self.seq.get(bed, 0)
        self.seq[bed] = seq + 1
        raw = np.round(np.asarray(y_mv) * 200).astype(np.int16)[:, None]
        chunk = protocol.SampleChunk(seq, first, t0, fs, 200.0, "mV", ("MLII",), raw)
        self.raw(bed, "samples", protocol.encode_samples(chunk))

    def beats(
        self, bed: str, beats: list[protocol.BeatResult], analysed_until: float | None = None
    ) -> None:
        self.raw(bed, "beats", protocol.encode_beats(beats, analysed_until))

    def event(
        self, bed: str, type_: str, active: bool, t: float, detail: dict[str, Any] | None = None
    ) -> None:
        event = protocol.Event(bed, type_, active, t, detail or {})
        self.raw(bed, "events", protocol.encode_event(event))

    def stream(
        self,
        bed: str,
        t0: float,
        y_mv: np.ndarray,
        beats: list[protocol.BeatResult],
        fs: float = 360.0,
        chunk: int = 36,
        watermark: bool = False,
    ) -> None:
        """Sample chunks interleaved with the beats, each beat once 0.4 s after its R-peak has
        been sent, as the detector would report it; with `watermark`, also the detector's
        analysis watermark (every beat before it has been sent) after each chunk."""
        pending = sorted(beats, key=lambda b: b.sample)
        delay = round(0.4 * fs)
        for k in range(0, len(y_mv), chunk):
            self.samples(bed, k, t0 + k / fs, y_mv[k : k + chunk], fs)
            ready = [b for b in pending if b.sample + delay <= k + chunk]
            pending = pending[len(ready) :]
            until = t0 + (k + chunk - delay) / fs if watermark else None
            if ready or until is not None:
                self.beats(bed, ready, until)
        if pending:
            self.beats(bed, pending)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def beat(
    ward: str,
    bed: str,
    sample: int,
    fs: float,
    t0: float,
    rr_s: float | None,
    score: float = 0.3,
    threshold: float = 1.0,
    errors: list[float] | None = None,
    cls: str | None = None,
) -> protocol.BeatResult:
    """A beat result as the detector publishes it."""
    return protocol.BeatResult(
        bed=bed,
        sample=sample,
        t=t0 + sample / fs,
        rr_s=rr_s,
        hr_bpm=None if rr_s is None else 60.0 / rr_s,
        score=score,
        threshold=threshold,
        anomalous=score > threshold,
        beat_id=f"{ward}:{bed}:{sample}",
        errors=tuple(errors) if errors is not None else None,
        cls=cls,
    )


def ecg_like(n: int, fs: float, rr_s: float, start: int = 0) -> np.ndarray:
    """A crude ECG: a narrow R wave every rr_s seconds on a small baseline wave (mV)."""
    t = (start + np.arange(n)) / fs
    phase = np.mod(t, rr_s)
    return 1.2 * np.exp(-(((phase - 0.2) / 0.012) ** 2)) + 0.1 * np.sin(2 * np.pi * t / rr_s)


def http(
    port: int,
    path: str,
    *,
    method: str = "GET",
    token: str | None = TOKEN,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A real HTTP request to the service on loopback."""
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=h
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(port: int, path: str, **kw: Any) -> Any:
    status, _, body = http(port, path, **kw)
    assert status == 200, (status, body[:300])
    return json.loads(body)


def wait_for(what: Callable[[], T], timeout: float = 10.0, every: float = POLL_S) -> T:
    """Poll until `what()` is truthy; return it (or fail with the last value)."""
    return wait_until(what, timeout, "the condition", interval=every)


def metric_value(port: int, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when absent)."""
    _, _, body = http(port, "/metrics")
    want = name + (
        "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
    )
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == want:
            return float(value)
    return 0.0


class WardFeeder:
    """Streams live beds in real time: 0.1 s sample chunks and the beats a detector would report
    (beats published once 0.4 s of signal after the R-peak has arrived). Per bed: heart rate and
    which beats are anomalous (every `anomaly_every`-th), anomalous beats with per-timestep errors
    and class V (PVCs), the others class N.
    """

    def __init__(
        self,
        broker: Any,
        ward: str,
        beds: dict[str, tuple[float, int]],
        fs: float = 360.0,
        chunk_s: float = 0.1,
        speed: float = 1.0,
        lead_toggle: tuple[str, float] | None = None,
    ) -> None:
        self.pub = Publisher(broker, ward)
        self.ward = ward
        self.beds = beds  # bed -> (bpm, anomaly_every; 0 = never)
        self.fs = fs
        self.chunk = round(chunk_s * fs)
        self.speed = speed
        self.lead_toggle = lead_toggle  # (bed, period_s): lead off / on every period of signal
        self.stop_event = threading.Event()
        self.t0 = time.time()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, name="ward-feeder", daemon=True)

    def start(self) -> WardFeeder:
        for bed in self.beds:
            self.pub.status(bed)
        self.thread.start()
        return self

    def _run(self) -> None:
        next_beat = dict.fromkeys(self.beds, 0)
        pos = 0
        lead_off = False
        while not self.stop_event.is_set():
            due = self.t0 + (pos + self.chunk) / self.fs / self.speed
            delay = due - time.time()
            if delay > 0 and self.stop_event.wait(delay):  # real-time pacing: the thing fed
                break
            for bed, (bpm, every) in self.beds.items():
                rr = 60.0 / bpm
                y = ecg_like(self.chunk, self.fs, rr, start=pos)
                self.pub.samples(bed, pos, self.t0 + pos / self.fs, y, self.fs)
                beats = []
                ready = pos + self.chunk - round(0.4 * self.fs)
                while True:
                    i = next_beat[bed]
                    sample = round((0.2 + i * rr) * self.fs)
                    if sample > ready:
                        break
                    anomalous = every > 0 and i % every == every - 1
                    errors = None
                    if anomalous:
                        k = np.arange(64)
                        errors = list(0.05 + 0.9 * np.exp(-(((k - 34) / 6.0) ** 2)))
                    beats.append(
                        beat(
                            self.ward,
                            bed,
                            sample,
                            self.fs,
                            self.t0,
                            None if i == 0 else rr,
                            score=1.8 if anomalous else 0.3,
                            errors=errors,
                            cls="V" if anomalous else "N",
                        )
                    )
                    next_beat[bed] = i + 1
                if beats:
                    self.pub.beats(bed, beats)
            pos += self.chunk
            self.sent = pos
            if self.lead_toggle is not None:
                bed, period = self.lead_toggle
                if (pos // round(period * self.fs)) % 2 != int(lead_off):
                    lead_off = not lead_off
                    self.pub.event(bed, "lead_off", lead_off, self.t0 + pos / self.fs)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
        self.pub.close()
