"""MQTT adapter around the streamer core: one client (device) per bed, paced publication.

Each bed is its own MQTT client, like a real bedside device: its last will is a retained
`offline` status, it announces `online` (retained) on every (re)connection, and paho reconnects
it with exponential backoff between `reconnect_min_s` and `reconnect_max_s`. A small HTTP
server (streamer/http_server.py) serves `/metrics` and `/healthz` beside the publishing loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt
from prometheus_client import CollectorRegistry

from ecgcommon import mqtt_auth
from ecgcommon.protocol import Status, encode_status
from ecgcommon.records import RecordError, annotated_records, load_record
from ecgcommon.settings import load_or_exit
from ecgcommon.shutdown import stop_on_signals
from ecgcommon.topics import status_topic
from streamer.config import StreamerConfig, parse_args
from streamer.core import (
    BedStream,
    Playback,
    Source,
    bed_names,
    make_streams,
    schedule,
    sleep_for,
)
from streamer.http_server import StatusServer
from streamer.metrics import StreamerMetrics

log = logging.getLogger("streamer")


def load_sources(data_dir: str | None, records: Sequence[str]) -> list[Source]:
    """The records to replay as raw sources; RecordError names a missing folder or record."""
    names = list(records) or annotated_records(data_dir)
    if not names:
        raise RecordError(f"no annotated records in {data_dir}")
    return [Source.from_record(load_record(n, data_dir, annotations=False)) for n in names]


class Device:
    """One bed's MQTT connection with its retained status and last will."""

    def __init__(
        self,
        config: StreamerConfig,
        bed: str,
        metrics: StreamerMetrics | None = None,
        credential: tuple[str, str] | None = None,  # (username, password) of this device
    ) -> None:
        self.config = config
        self.bed = bed
        self.metrics = metrics
        self.connections = 0  # successful connections so far; more than one = reconnected
        self.status_topic = status_topic(config.ward, bed)
        self.client_id = f"{config.mqtt.client_id}-{config.ward}-{bed}"
        if credential is not None:  # the broker uses the username as the client id
            self.client_id = credential[0]
        self.connected = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id)
        username, password = credential or ("", "")
        mqtt_auth.apply(c, username, password, config.mqtt.ca_file)
        c.will_set(self.status_topic, self._status("offline"), qos=1, retain=True)
        c.reconnect_delay_set(*config.mqtt.reconnect_delays())
        c.max_queued_messages_set(10_000)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        self.client = c

    def _status(self, state: str) -> bytes:
        return encode_status(Status(state, time.time(), self.client_id))

    def _on_connect(
        self, client: mqtt.Client, _ud: object, _flags: object, rc: object, _props: object = None
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("bed %s: connection refused: %s", self.bed, rc)
            return
        client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        if self.connections and self.metrics is not None:
            self.metrics.reconnects.inc()
        self.connections += 1
        self.connected.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _ud: object, _flags: object, rc: object, _props: object = None
    ) -> None:
        self.connected.clear()
        log.info("bed %s: disconnected (%s); paho reconnects with backoff", self.bed, rc)

    def start(self) -> None:
        m = self.config.mqtt
        self.client.connect_async(m.host, m.port, m.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        """Announce offline (a clean disconnect does not fire the will), then disconnect."""
        if self.connected.is_set():
            info = self.client.publish(
                self.status_topic, self._status("offline"), qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()


class Streamer:
    """Publishes every bed's chunks at their due times until done or stopped."""

    def __init__(
        self,
        config: StreamerConfig,
        stop: threading.Event | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.stop_event = stop or threading.Event()
        self.sources = load_sources(config.data_dir, config.records)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = StreamerMetrics(self.registry)
        self.metrics.beds.set(config.beds)
        self.metrics.connected_beds.set_function(self.connected_beds)
        self.devices: dict[str, Device] = {}
        self.credentials: dict[tuple[str, str], tuple[str, str]] = {}
        if config.device_credentials:
            self.credentials = mqtt_auth.load_device_credentials(config.device_credentials)
            missing = [
                b for b in bed_names(config.beds) if (config.ward, b) not in self.credentials
            ]
            if missing:
                raise mqtt_auth.CredentialError(
                    f"{config.device_credentials} has no credential for ward {config.ward} "
                    f"beds {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
                )
        self.streaming = threading.Event()  # set while the publishing loop runs
        self.published = 0
        self.dropped = 0

    def connected_beds(self) -> int:
        """How many beds' devices are connected to the broker now."""
        return sum(d.connected.is_set() for d in list(self.devices.values()))

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while streaming with every bed connected (what /healthz reports)."""
        streaming = self.streaming.is_set()
        connected = self.connected_beds()
        ok = streaming and connected == self.config.beds
        return ok, {
            "status": "ok" if ok else "unavailable",
            "streaming": streaming,
            "beds": self.config.beds,
            "beds_connected": connected,
            "chunks_published": self.published,
            "chunks_dropped": self.dropped,
        }

    def streams(self, t_start: float) -> list[BedStream]:
        """The ward's bed streams, sample 0 at `t_start` (unix s)."""
        c = self.config
        max_samples = None
        if c.duration_s is not None:
            max_samples = int(round(c.duration_s * self.sources[0].fs))
        playback = Playback(t_start, c.speed, c.json_payload, max_samples)
        return make_streams(self.sources, c.ward, c.beds, c.chunk_s, playback, stride_s=c.stride_s)

    def run(self, connect_timeout_s: float = 10.0) -> int:
        """Stream until every bed is done or stop is set; returns the messages published."""
        c = self.config
        devices = {
            bed: Device(c, bed, self.metrics, self.credentials.get((c.ward, bed)))
            for bed in bed_names(c.beds)
        }
        self.devices = devices
        for d in devices.values():
            d.start()
        deadline = time.monotonic() + connect_timeout_s
        for d in devices.values():
            if not d.connected.wait(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "bed %s not connected yet to %s:%s; streaming anyway",
                    d.bed,
                    c.mqtt.host,
                    c.mqtt.port,
                )
                break
        log.info(
            "streaming %d beds from %d records at %gx, %g s chunks, QoS %d",
            c.beds,
            len(self.sources),
            c.speed,
            c.chunk_s,
            c.qos,
        )
        streams = self.streams(time.time())  # timestamps start now, after the connection wait
        mono0 = time.monotonic()
        m = self.metrics
        self.streaming.set()
        try:
            for msg in schedule(streams):
                wait = sleep_for(msg.due_s, time.monotonic() - mono0)
                if wait > 0 and self.stop_event.wait(wait):
                    break
                if self.stop_event.is_set():
                    break
                info = devices[msg.bed].client.publish(msg.topic, msg.payload, qos=c.qos)
                m.lag.observe(max(0.0, time.monotonic() - mono0 - msg.due_s))
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    self.published += 1
                    m.chunks.inc()
                    m.samples.inc(msg.n_samples)
                else:
                    self.dropped += 1
                    m.dropped.labels(_drop_reason(info.rc)).inc()
        finally:
            self.streaming.clear()
            for d in devices.values():
                d.stop()
        log.info("published %d chunks, %d not sent (disconnected)", self.published, self.dropped)
        return self.published


def _drop_reason(rc: int) -> str:
    """The metric label for a publish paho refused."""
    if rc == mqtt.MQTT_ERR_NO_CONN:
        return "disconnected"
    if rc == mqtt.MQTT_ERR_QUEUE_SIZE:
        return "queue_full"
    return "error"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: `python -m streamer --beds 8 --speed 1`."""
    config = load_or_exit(parse_args, argv, log)
    if config is None:
        return 2
    stop = stop_on_signals(log)
    try:
        streamer = Streamer(config, stop)
    except (RecordError, mqtt_auth.CredentialError) as exc:
        log.error("%s", exc)
        return 2
    try:
        server = StatusServer(
            config.http_host, config.http_port, streamer.registry, streamer.healthy
        )
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.http_host, config.http_port, exc)
        return 2
    server.start()
    log.info("HTTP /metrics and /healthz on %s:%d", config.http_host, server.port)
    try:
        streamer.run()
    finally:
        server.stop()
    return 0
