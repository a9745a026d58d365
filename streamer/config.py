"""Streamer configuration: one frozen dataclass, physical units, validated; CLI and env vars."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from ecgcommon.mqtt_auth import check_settings
from ecgcommon.topics import DEFAULT_WARD, TopicError, status_topic


@dataclass(frozen=True)
class StreamerConfig:
    """What to replay, how fast, and where to publish it."""

    host: str = "localhost"
    port: int = 1883
    ward: str = DEFAULT_WARD
    beds: int = 4
    data_dir: str | None = None  # None: $ECG_DATA_DIR, else ../shared/data/mitdb
    records: tuple[str, ...] = ()  # empty: every annotated record of the folder
    speed: float = 1.0  # 1 = real time; 10 = ten seconds of ECG per second
    chunk_s: float = 0.5  # seconds of signal per message
    qos: int = 0
    stride_s: float = 137.0  # start-offset step between beds sharing a record
    duration_s: float | None = None  # seconds of signal per bed, then stop; None = forever
    json_payload: bool = False  # send the JSON form instead of binary
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 3.0  # capped: a broker that is back is used within a few seconds
    keepalive_s: int = 30
    client_prefix: str = "streamer"  # client ids; with credentials, each device's username
    device_credentials: str = ""  # streamer-devices.json (ecgcommon.provision); empty: anonymous
    mqtt_ca_file: str = ""  # set: TLS, the broker's certificate checked against this CA
    http_host: str = "0.0.0.0"
    http_port: int = 9101  # /metrics, /healthz; 0 = any free port (the log says which)

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        try:
            status_topic(self.ward, "1")
        except TopicError as exc:
            raise ValueError(f"ward: {exc}") from exc
        if not 1 <= self.beds <= 100_000:
            raise ValueError(f"beds must be in 1..100000, got {self.beds}")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"speed must be a finite number > 0, got {self.speed}")
        if not (math.isfinite(self.chunk_s) and 0.01 <= self.chunk_s <= 10):
            raise ValueError(f"chunk_s must be in [0.01, 10] seconds, got {self.chunk_s}")
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {self.qos}")
        if not (math.isfinite(self.stride_s) and self.stride_s >= 0):
            raise ValueError(f"stride_s must be >= 0 seconds, got {self.stride_s}")
        if self.duration_s is not None and not (
            math.isfinite(self.duration_s) and self.duration_s > 0
        ):
            raise ValueError(f"duration_s must be > 0 seconds or None, got {self.duration_s}")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must be > 0 and <= reconnect_max_s "
                f"({self.reconnect_max_s})"
            )
        if not 5 <= self.keepalive_s <= 3600:
            raise ValueError(f"keepalive_s must be in 5..3600 seconds, got {self.keepalive_s}")
        if not self.http_host:
            raise ValueError("http_host must not be empty")
        if not 0 <= self.http_port < 65536:
            raise ValueError(f"http_port must be in 0..65535, got {self.http_port}")
        if self.device_credentials and not Path(self.device_credentials).is_file():
            raise ValueError(f"device_credentials {self.device_credentials!r} is not a file")
        check_settings("", "", self.mqtt_ca_file)


_ENV = {
    "host": "MQTT_HOST",
    "port": "MQTT_PORT",
    "ward": "ECG_WARD",
    "data_dir": "ECG_DATA_DIR",
    "beds": "STREAMER_BEDS",
    "records": "STREAMER_RECORDS",
    "speed": "STREAMER_SPEED",
    "chunk_s": "STREAMER_CHUNK_S",
    "qos": "STREAMER_QOS",
    "stride_s": "STREAMER_STRIDE_S",
    "duration_s": "STREAMER_DURATION_S",
    "json_payload": "STREAMER_JSON",
    "http_host": "STREAMER_HTTP_HOST",
    "http_port": "STREAMER_HTTP_PORT",
    "device_credentials": "STREAMER_DEVICE_CREDENTIALS",
    "mqtt_ca_file": "MQTT_CA_FILE",
}


def parse_args(argv: list[str] | None, env: Mapping[str, str] | None = None) -> StreamerConfig:
    """Command line over environment variables over defaults; ValueError names a bad field."""
    env = os.environ if env is None else env
    base = StreamerConfig.__dataclass_fields__
    defaults = {f.name: f.default for f in fields(StreamerConfig)}

    def from_env(name: str) -> object:
        raw = env.get(_ENV[name]) if name in _ENV else None
        if raw is None or raw == "":
            return defaults[name]
        try:
            if name == "records":
                return tuple(r.strip() for r in raw.split(",") if r.strip())
            if name == "json_payload":
                return raw.strip().lower() in ("1", "true", "yes", "on")
            kind = base[name].type
            if "int" in str(kind) and "float" not in str(kind):
                return int(raw)
            if "float" in str(kind):
                return float(raw)
            return raw
        except ValueError as exc:
            raise ValueError(f"{name}: bad value {raw!r} in ${_ENV[name]}") from exc

    p = argparse.ArgumentParser(
        prog="python -m streamer",
        description="Replay MIT-BIH records as live ECG beds over MQTT (docs/protocol.md).",
    )
    p.add_argument("--host", default=from_env("host"))
    p.add_argument("--port", type=int, default=from_env("port"))
    p.add_argument("--ward", default=from_env("ward"))
    p.add_argument("--beds", type=int, default=from_env("beds"), help="number of beds")
    p.add_argument("--data-dir", default=from_env("data_dir"))
    p.add_argument("--records", nargs="*", default=list(from_env("records")))
    p.add_argument("--speed", type=float, default=from_env("speed"), help="1 = real time")
    p.add_argument(
        "--chunk-s",
        type=float,
        default=from_env("chunk_s"),
        help="seconds of signal per message (default 0.5)",
    )
    p.add_argument("--qos", type=int, default=from_env("qos"), choices=(0, 1, 2))
    p.add_argument("--stride-s", type=float, default=from_env("stride_s"))
    p.add_argument(
        "--duration-s",
        type=float,
        default=from_env("duration_s"),
        help="seconds of signal per bed, then stop (default: forever)",
    )
    p.add_argument(
        "--json",
        dest="json_payload",
        action="store_true",
        default=from_env("json_payload"),
        help="send JSON chunks",
    )
    p.add_argument("--http-host", default=from_env("http_host"), help="/metrics, /healthz")
    p.add_argument(
        "--http-port",
        type=int,
        default=from_env("http_port"),
        help="/metrics, /healthz (default 9101; 0 = any free port)",
    )
    p.add_argument(
        "--device-credentials",
        default=from_env("device_credentials"),
        help="each bed's MQTT username and password (ecgcommon.provision: streamer-devices.json)",
    )
    p.add_argument("--mqtt-ca-file", default=from_env("mqtt_ca_file"), help="TLS to the broker")
    p.add_argument("--reconnect-min-s", type=float, default=defaults["reconnect_min_s"])
    p.add_argument("--reconnect-max-s", type=float, default=defaults["reconnect_max_s"])
    a = p.parse_args(argv)
    return StreamerConfig(
        host=a.host,
        port=a.port,
        ward=a.ward,
        beds=a.beds,
        data_dir=a.data_dir,
        records=tuple(a.records),
        speed=a.speed,
        chunk_s=a.chunk_s,
        qos=a.qos,
        stride_s=a.stride_s,
        duration_s=a.duration_s,
        json_payload=a.json_payload,
        reconnect_min_s=a.reconnect_min_s,
        reconnect_max_s=a.reconnect_max_s,
        http_host=a.http_host,
        http_port=a.http_port,
        device_credentials=a.device_credentials,
        mqtt_ca_file=a.mqtt_ca_file,
    )
