"""Streamer configuration: one frozen dataclass in physical units, set by env and CLI.

Every field is a `setting` (ecgcommon/settings.py) with its env variable, flag, unit and bounds;
`python -m streamer --help` lists them. The broker settings are the shared `MqttSettings`; the
streamer connects as its simulated devices, so its account is each device's own
(`device_credentials`) and `mqtt.client_id` is the prefix of the devices' client ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ecgcommon import settings
from ecgcommon.settings import MqttSettings, Settings, setting
from ecgcommon.topics import DEFAULT_WARD, status_topic


def _check_ward(ward: str) -> None:
    status_topic(ward, "1")  # TopicError (a ValueError) says what is wrong


def _check_file(path: str) -> None:
    if path and not Path(path).is_file():
        raise ValueError(f"{path!r:.200} is not a file")


@dataclass(frozen=True, repr=False)
class StreamerConfig(Settings):
    """What to replay, how fast, and where to publish it."""

    _prog = "python -m streamer"
    _about = "Replay MIT-BIH records as live ECG beds over MQTT (docs/protocol.md)."

    mqtt: MqttSettings = settings.nested(
        lambda: MqttSettings(client_id="streamer"),  # each device: streamer-{ward}-{bed}
        prefix="mqtt",
        env={"client_id": "STREAMER_CLIENT_PREFIX"},
    )
    ward: str = setting(
        DEFAULT_WARD, env="ECG_WARD", flag="--ward", check=_check_ward, help="the beds' ward"
    )
    beds: int = setting(
        4, env="STREAMER_BEDS", flag="--beds", unit="beds", min=1, max=100_000,
        help="number of beds",
    )  # fmt: skip
    data_dir: str | None = setting(
        None, env="ECG_DATA_DIR", flag="--data-dir",
        help="MIT-BIH folder; none: $ECG_DATA_DIR, else ../shared/data/mitdb",
    )  # fmt: skip
    records: tuple[str, ...] = setting(
        (), env="STREAMER_RECORDS", flag="--records",
        help="records to replay (env: comma-separated); empty: every annotated record",
    )  # fmt: skip
    speed: float = setting(
        1.0, env="STREAMER_SPEED", flag="--speed", gt=0,
        help="1 = real time; 10 = ten seconds of ECG per second",
    )  # fmt: skip
    chunk_s: float = setting(
        0.5, env="STREAMER_CHUNK_S", flag="--chunk-s", unit="s", min=0.01, max=10,
        help="seconds of signal per message",
    )  # fmt: skip
    qos: int = setting(0, env="STREAMER_QOS", flag="--qos", choices=(0, 1, 2), help="publish QoS")
    stride_s: float = setting(
        137.0, env="STREAMER_STRIDE_S", flag="--stride-s", unit="s", min=0,
        help="start-offset step between beds sharing a record",
    )  # fmt: skip
    duration_s: float | None = setting(
        None, env="STREAMER_DURATION_S", flag="--duration-s", unit="s", gt=0,
        help="seconds of signal per bed, then stop; none = forever",
    )  # fmt: skip
    json_payload: bool = setting(
        False, env="STREAMER_JSON", flag="--json", aliases=("--json-payload",),
        help="send the JSON form instead of binary",
    )  # fmt: skip
    http_host: str = settings.http_host("0.0.0.0", "STREAMER_HTTP_HOST", "/metrics, /healthz")
    http_port: int = settings.http_port(9101, "STREAMER_HTTP_PORT")  # 0: the log says which
    device_credentials: str = setting(
        "", env="STREAMER_DEVICE_CREDENTIALS", flag="--device-credentials", check=_check_file,
        help="each bed's MQTT username and password (ecgcommon.provision: "
        "streamer-devices.json); empty: anonymous",
    )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mqtt.username or self.mqtt.password_file:
            raise ValueError(
                "mqtt_username: the streamer connects as its devices, each with its own "
                "credential: set device_credentials (STREAMER_DEVICE_CREDENTIALS) instead"
            )


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str] | None = None) -> StreamerConfig:
    """Command line over environment variables over defaults; ValueError names a bad field."""
    return settings.load(StreamerConfig, argv, env)
