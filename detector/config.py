"""Detector configuration: one frozen dataclass, physical units, validated; CLI and env vars."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from ecgcommon.limits import BED_IDLE_S, MAX_BEDS, valid_name
from ecgcommon.mqtt_auth import check_settings
from ecgcommon.subjects import PARTITIONS, parse_bus
from ecgcommon.topics import TopicError, status_topic

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "artifacts"


@dataclass(frozen=True)
class DetectorConfig:
    """Where to listen, how to batch, when to call a bed silent, where to serve metrics."""

    host: str = "localhost"
    port: int = 1883
    ward: str = "+"  # "+" = every ward
    model_dir: str = str(DEFAULT_MODEL_DIR)
    profile: str = "icu"  # operating point of the anomaly threshold (manifest "thresholds")
    max_batch: int = 256  # beats per inference batch
    max_wait_s: float = 0.05  # longest a beat waits for its batch to fill
    signal_timeout_s: float = 5.0  # no chunk this long: signal_lost event, bed inactive
    max_fill_s: float = 10.0  # longer gaps restart the bed's pipeline instead of NaN-filling
    qos_in: int = 0  # subscription QoS for samples (status is always QoS 1)
    qos_beats: int = 1  # QoS 1: a durable subscriber (alerting) gets what it missed (faults.md)
    qos_events: int = 1
    http_host: str = "0.0.0.0"
    http_port: int = 8000  # /metrics, /healthz, POST /v1/score; 0 = any free port
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 3.0  # capped: a broker that is back is used within a few seconds
    keepalive_s: int = 30
    client_id: str = "detector"  # the broker of `make ward` replaces it with the username
    mqtt_username: str = ""  # empty: connect anonymously (docs/security.md)
    mqtt_password_file: str = ""  # the password alone in a file, never on the command line
    mqtt_ca_file: str = ""  # set: TLS, the broker's certificate checked against this CA
    max_upload_s: float = 3600.0  # longest signal accepted by POST /v1/score
    cprofile_out: str = ""  # benchmarks: cProfile each thread into <this>.<thread> on exit
    token: str = ""  # bearer token of POST /v1/score; empty: one is generated and printed once
    max_beds: int = MAX_BEDS  # beds tracked at once (the longest-idle one makes room)
    bed_idle_s: float = BED_IDLE_S  # a bed with no message this long is forgotten
    bus: str = ""  # "" (or "mqtt"): the MQTT broker above; nats://h:p[,h:p]: NATS (scaling.md)
    worker_id: str = ""  # NATS: this worker's name (leases); empty: the host name
    partitions: int = PARTITIONS  # NATS: must match the servers' subject mapping
    checkpoint_s: float = 10.0  # NATS: how often each bed's state is checkpointed
    lease_ttl_s: float = 3.0  # NATS: a partition whose owner stops renewing moves after this

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must not be empty")
        for name in ("port",):
            if not 0 < getattr(self, name) < 65536:
                raise ValueError(f"{name} must be in 1..65535, got {getattr(self, name)}")
        if not 0 <= self.http_port < 65536:
            raise ValueError(f"http_port must be in 0..65535, got {self.http_port}")
        if self.ward != "+":
            try:
                status_topic(self.ward, "1")
            except TopicError as exc:
                raise ValueError(f"ward: {exc}") from exc
        if not self.profile:
            raise ValueError("profile must not be empty")
        if not 1 <= self.max_batch <= 65536:
            raise ValueError(f"max_batch must be in 1..65536 beats, got {self.max_batch}")
        for name in ("max_wait_s", "signal_timeout_s", "max_fill_s", "max_upload_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value}")
        if self.max_wait_s > 5:
            raise ValueError(f"max_wait_s must be <= 5 seconds, got {self.max_wait_s}")
        if self.signal_timeout_s <= 0:
            raise ValueError(f"signal_timeout_s must be > 0, got {self.signal_timeout_s}")
        for name in ("qos_in", "qos_beats", "qos_events"):
            if getattr(self, name) not in (0, 1, 2):
                raise ValueError(f"{name} must be 0, 1 or 2, got {getattr(self, name)}")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must be > 0 and <= reconnect_max_s "
                f"({self.reconnect_max_s})"
            )
        if self.token and len(self.token) < 8:
            raise ValueError("token must be at least 8 characters when set")
        if not 1 <= self.max_beds <= 1_000_000:
            raise ValueError(f"max_beds must be in 1..1000000, got {self.max_beds}")
        if not (math.isfinite(self.bed_idle_s) and self.bed_idle_s > 0):
            raise ValueError(f"bed_idle_s must be finite seconds > 0, got {self.bed_idle_s}")
        parse_bus(self.bus)  # ValueError names the bad part
        if self.worker_id and not valid_name(self.worker_id):
            raise ValueError(f"worker_id must be a plain name, got {self.worker_id!r:.80}")
        if not 1 <= self.partitions <= 1024:
            raise ValueError(f"partitions must be in 1..1024, got {self.partitions}")
        if not (math.isfinite(self.checkpoint_s) and 0.5 <= self.checkpoint_s <= 600):
            raise ValueError(f"checkpoint_s must be in 0.5..600 seconds, got {self.checkpoint_s}")
        if not (math.isfinite(self.lease_ttl_s) and 1 <= self.lease_ttl_s <= 60):
            raise ValueError(f"lease_ttl_s must be in 1..60 seconds, got {self.lease_ttl_s}")
        if not 5 <= self.keepalive_s <= 3600:
            raise ValueError(f"keepalive_s must be in 5..3600 seconds, got {self.keepalive_s}")
        check_settings(self.mqtt_username, self.mqtt_password_file, self.mqtt_ca_file)


_ENV = {
    "host": "MQTT_HOST",
    "port": "MQTT_PORT",
    "ward": "ECG_WARD",
    "model_dir": "DETECTOR_MODEL_DIR",
    "profile": "DETECTOR_PROFILE",
    "max_batch": "DETECTOR_MAX_BATCH",
    "max_wait_s": "DETECTOR_MAX_WAIT_S",
    "signal_timeout_s": "DETECTOR_SIGNAL_TIMEOUT_S",
    "max_fill_s": "DETECTOR_MAX_FILL_S",
    "qos_in": "DETECTOR_QOS_IN",
    "qos_beats": "DETECTOR_QOS",
    "http_host": "DETECTOR_HTTP_HOST",
    "http_port": "DETECTOR_HTTP_PORT",
    "client_id": "DETECTOR_CLIENT_ID",
    "mqtt_username": "MQTT_USERNAME",
    "mqtt_password_file": "MQTT_PASSWORD_FILE",
    "mqtt_ca_file": "MQTT_CA_FILE",
    "cprofile_out": "DETECTOR_CPROFILE_OUT",
    "token": "ECG_DETECTOR_TOKEN",
    "max_beds": "DETECTOR_MAX_BEDS",
    "bed_idle_s": "DETECTOR_BED_IDLE_S",
    "bus": "ECG_BUS",
    "worker_id": "DETECTOR_WORKER_ID",
    "partitions": "ECG_PARTITIONS",
    "checkpoint_s": "DETECTOR_CHECKPOINT_S",
    "lease_ttl_s": "DETECTOR_LEASE_TTL_S",
}


def parse_args(argv: list[str] | None, env: Mapping[str, str] | None = None) -> DetectorConfig:
    """Command line over environment variables over defaults; ValueError names a bad field."""
    env = os.environ if env is None else env
    types = {f.name: str(f.type) for f in fields(DetectorConfig)}
    defaults = {f.name: f.default for f in fields(DetectorConfig)}

    def convert(name: str, raw: str) -> object:
        kind = types[name]
        try:
            if kind == "int":
                return int(raw)
            if kind == "float":
                return float(raw)
        except ValueError as exc:
            raise ValueError(f"{name}: bad value {raw!r}") from exc
        return raw

    values = dict(defaults)
    for name, var in _ENV.items():
        raw = env.get(var)
        if raw:
            values[name] = convert(name, raw)
    p = argparse.ArgumentParser(
        prog="python -m detector",
        description="Live ECG beat detection and scoring over MQTT (docs/protocol.md).",
    )
    for name in defaults:
        p.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=None, help=f"default {values[name]!r}"
        )
    a = vars(p.parse_args(argv))
    for name, raw in a.items():
        if raw is not None:
            values[name] = convert(name, raw)
    return DetectorConfig(**values)
