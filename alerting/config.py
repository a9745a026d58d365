"""The alerting service's configuration: one frozen dataclass, physical units, validated early."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from urllib.parse import urlparse

from ecgcommon.limits import BED_IDLE_S, MAX_CLOCK_SKEW_S
from ecgcommon.mqtt_auth import check_settings
from ecgcommon.subjects import parse_bus
from ecgcommon.topics import DEFAULT_WARD

_FORBIDDEN_LEVEL = frozenset("/+#\x00")


@dataclass(frozen=True)
class AlertingConfig:
    """Everything the alerting service needs; errors name the bad field."""

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    ward: str = DEFAULT_WARD
    http_host: str = "127.0.0.1"
    http_port: int = 8080  # 0 = any free port
    token: str = ""  # required: bearer token for the API, dashboard and websocket
    db_path: str = "alerting.db"
    detector_url: str = "http://127.0.0.1:8000"
    wave_hz: float = 120.0  # waveform rate sent to dashboards (decimated from the device rate)
    wave_window_s: float = 10.0  # seconds of waveform a new dashboard client gets at once
    raw_window_s: float = 30.0  # seconds of full-rate signal kept per bed for the beat detail view
    batch_s: float = 0.15  # websocket frames are batched at this period
    client_queue: int = 64  # frames queued per websocket client before waveforms are dropped
    recent_beats: int = 200  # beats kept per bed for the API
    detail_beats: int = 50  # anomalous beats per bed whose per-timestep error is kept
    max_beds: int = 256  # beds tracked per ward: bounds memory against stray topics
    tick_s: float = 1.0  # wall-clock tick of the alarm policy when no data arrives
    score_timeout_s: float = 30.0  # time limit of a detector scoring call for an upload
    publish_alarms: bool = True  # also publish alarm changes to ecg/v1/{ward}/{bed}/alarms
    bed_idle_s: float = BED_IDLE_S  # a bed with no message this long (and no open alarm) is dropped
    # Device timestamps this far off the receiver's clock are refused (clock_skew alarm); 0 turns
    # the check off, for accelerated replay only (make ward SPEED > 1).
    max_clock_skew_s: float = MAX_CLOCK_SKEW_S
    metrics_token: str = ""  # a second token accepted on /metrics only (for Prometheus)
    detector_token: str = ""  # bearer token of the detector's POST /v1/score
    mqtt_client_id: str = ""  # the broker of `make ward` replaces it with the username
    mqtt_username: str = ""  # empty: connect anonymously (docs/security.md)
    mqtt_password_file: str = ""  # the password alone in a file, never on the command line
    mqtt_ca_file: str = ""  # set: TLS, the broker's certificate checked against this CA
    bus: str = ""  # "" (or "mqtt"): the MQTT broker; nats://h:p[,h:p]: NATS JetStream (scaling.md)

    def __post_init__(self) -> None:
        for name in ("mqtt_host", "http_host", "db_path"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"{name} must be a non-empty string")
        if not self.ward or _FORBIDDEN_LEVEL.intersection(self.ward):
            raise ValueError(f"ward {self.ward!r} must be non-empty without '/', '+', '#'")
        if not 1 <= self.mqtt_port <= 65535:
            raise ValueError(f"mqtt_port must be 1-65535, got {self.mqtt_port}")
        parse_bus(self.bus)  # ValueError names the bad part
        if not 0 <= self.http_port <= 65535:
            raise ValueError(f"http_port must be 0-65535, got {self.http_port}")
        if len(self.token) < 8:
            raise ValueError("token must be set (ALERTING_TOKEN / --token), at least 8 characters")
        url = urlparse(self.detector_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(f"detector_url must be an http(s) URL, got {self.detector_url!r}")
        positive = (
            "wave_hz",
            "wave_window_s",
            "raw_window_s",
            "batch_s",
            "tick_s",
            "score_timeout_s",
        )
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.wave_hz > 1000:
            raise ValueError(f"wave_hz must be at most 1000 Hz, got {self.wave_hz}")
        for name in ("bed_idle_s", "max_clock_skew_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        if self.metrics_token and len(self.metrics_token) < 8:
            raise ValueError("metrics_token must be at least 8 characters when set")
        for name in ("client_queue", "recent_beats", "detail_beats", "max_beds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_settings(self.mqtt_username, self.mqtt_password_file, self.mqtt_ca_file)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> AlertingConfig:
        """Defaults, then environment variables (docker compose), then explicit overrides."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        types = {f.name: f.type for f in fields(cls)}
        for var, name in ENV_VARS.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[name] = _convert(name, str(types[name]), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


ENV_VARS: dict[str, str] = {
    "MQTT_HOST": "mqtt_host",
    "MQTT_PORT": "mqtt_port",
    "ECG_WARD": "ward",
    "ALERTING_HOST": "http_host",
    "ALERTING_PORT": "http_port",
    "ALERTING_TOKEN": "token",
    "ALERTING_DB": "db_path",
    "DETECTOR_URL": "detector_url",
    "ALERTING_WAVE_HZ": "wave_hz",
    "ALERTING_BATCH_S": "batch_s",
    "ALERTING_PUBLISH_ALARMS": "publish_alarms",
    "ALERTING_MAX_CLOCK_SKEW_S": "max_clock_skew_s",
    "ALERTING_BED_IDLE_S": "bed_idle_s",
    "ALERTING_MAX_BEDS": "max_beds",
    "ALERTING_METRICS_TOKEN": "metrics_token",
    "ECG_DETECTOR_TOKEN": "detector_token",
    "MQTT_USERNAME": "mqtt_username",
    "MQTT_PASSWORD_FILE": "mqtt_password_file",
    "MQTT_CA_FILE": "mqtt_ca_file",
    "ALERTING_MQTT_CLIENT_ID": "mqtt_client_id",  # the durable session's id (docs/faults.md)
    "ECG_BUS": "bus",
}


def _convert(name: str, type_name: str, raw: str) -> object:
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
    except ValueError:
        raise ValueError(f"{name} must be a {type_name}, got {raw!r}") from None
    return raw


def parse_args(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> AlertingConfig:
    """CLI flags override environment variables, which override the defaults."""
    p = argparse.ArgumentParser(prog="python -m alerting", description=__doc__)
    p.add_argument("--mqtt-host")
    p.add_argument("--mqtt-port", type=int)
    p.add_argument("--ward")
    p.add_argument("--http-host")
    p.add_argument("--http-port", type=int)
    p.add_argument("--token", help="prefer ALERTING_TOKEN: flags show in the process list")
    p.add_argument("--db", dest="db_path")
    p.add_argument("--detector-url")
    p.add_argument("--wave-hz", type=float)
    p.add_argument("--batch-s", type=float)
    p.add_argument("--no-publish-alarms", dest="publish_alarms", action="store_false", default=None)
    p.add_argument("--mqtt-username")
    p.add_argument("--mqtt-password-file", help="a file holding the password alone")
    p.add_argument("--mqtt-ca-file", help="TLS to the broker, verified against this CA")
    p.add_argument("--bus", help="nats://host:port[,...] for NATS JetStream; default MQTT")
    args = vars(p.parse_args(list(argv) if argv is not None else None))
    return AlertingConfig.from_env(env, **args)
