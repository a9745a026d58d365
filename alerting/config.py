"""The alerting service's configuration: frozen dataclasses in physical units, set by env and CLI.

Every field is a `setting` (ecgcommon/settings.py) with its env variable, flag, unit and bounds,
the broker's (`MqttSettings`) and the alarm policy's (`PolicyConfig`, docs/alarms.md) included;
`python -m alerting --help` lists them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

from alerting.rules import PolicyConfig
from ecgcommon import settings
from ecgcommon.limits import BED_IDLE_S, MAX_CLOCK_SKEW_S, MAX_FS_HZ
from ecgcommon.settings import MqttSettings, Settings, setting
from ecgcommon.topics import DEFAULT_WARD

_FORBIDDEN_LEVEL = frozenset("/+#\x00")


def _check_ward(ward: str) -> None:
    if _FORBIDDEN_LEVEL.intersection(ward):
        raise ValueError(f"{ward!r:.80} must be without '/', '+', '#'")


def _check_url(url: str) -> None:
    parts = urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http(s) URL, got {url!r:.80}")


@dataclass(frozen=True, repr=False)
class AlertingConfig(Settings):
    """Everything the alerting service needs; errors name the bad field."""

    _prog = "python -m alerting"
    _about = "Alarms, dashboard and API of one ward (docs/dashboard.md)."

    mqtt: MqttSettings = settings.nested(
        # the durable session's id is alerting-{ward} unless set (docs/faults.md)
        lambda: MqttSettings(reconnect_min_s=1.0, reconnect_max_s=2.0),
        prefix="mqtt",
        env={"client_id": "ALERTING_MQTT_CLIENT_ID"},
    )
    ward: str = setting(
        DEFAULT_WARD, env="ECG_WARD", flag="--ward", nonempty=True, check=_check_ward,
        help="the ward this service alarms for",
    )  # fmt: skip
    http_host: str = settings.http_host("127.0.0.1", "ALERTING_HOST", "dashboard, API and /metrics")
    http_port: int = settings.http_port(8080, "ALERTING_PORT")
    token: str = setting(
        "", env="ALERTING_TOKEN", flag="--token", nonempty=True, min_len=8, secret=True,
        help="bearer token of the API, dashboard and websocket (required; prefer the variable: "
        "flags show in the process list)",
    )  # fmt: skip
    db_path: str = setting(
        "alerting.db", env="ALERTING_DB", flag="--db", aliases=("--db-path",), nonempty=True,
        help="SQLite alarm store",
    )  # fmt: skip
    detector_url: str = setting(
        "http://127.0.0.1:8000", env="DETECTOR_URL", flag="--detector-url", check=_check_url,
        help="the detector's HTTP API (uploads are scored there)",
    )  # fmt: skip
    wave_hz: float = setting(
        120.0, env="ALERTING_WAVE_HZ", flag="--wave-hz", unit="Hz", gt=0, max=MAX_FS_HZ,
        help="waveform rate sent to dashboards (decimated from the device rate)",
    )  # fmt: skip
    wave_window_s: float = setting(
        10.0, env="ALERTING_WAVE_WINDOW_S", flag="--wave-window-s", unit="s", gt=0,
        help="seconds of waveform a new dashboard client gets at once",
    )  # fmt: skip
    raw_window_s: float = setting(
        30.0, env="ALERTING_RAW_WINDOW_S", flag="--raw-window-s", unit="s", gt=0,
        help="seconds of full-rate signal kept per bed for the beat detail view",
    )  # fmt: skip
    batch_s: float = setting(
        0.15, env="ALERTING_BATCH_S", flag="--batch-s", unit="s", gt=0,
        help="websocket frames are batched at this period",
    )  # fmt: skip
    client_queue: int = setting(
        64, env="ALERTING_CLIENT_QUEUE", flag="--client-queue", unit="frames", min=1,
        help="frames queued per websocket client before waveforms are dropped",
    )  # fmt: skip
    recent_beats: int = setting(
        200, env="ALERTING_RECENT_BEATS", flag="--recent-beats", unit="beats", min=1,
        help="beats kept per bed for the API",
    )  # fmt: skip
    detail_beats: int = setting(
        50, env="ALERTING_DETAIL_BEATS", flag="--detail-beats", unit="beats", min=1,
        help="anomalous beats per bed whose per-timestep error is kept",
    )  # fmt: skip
    max_beds: int = setting(
        256, env="ALERTING_MAX_BEDS", flag="--max-beds", unit="beds", min=1,
        help="beds tracked per ward: bounds memory against stray topics",
    )  # fmt: skip
    tick_s: float = setting(
        1.0, env="ALERTING_TICK_S", flag="--tick-s", unit="s", gt=0,
        help="wall-clock tick of the alarm policy when no data arrives",
    )  # fmt: skip
    score_timeout_s: float = setting(
        30.0, env="ALERTING_SCORE_TIMEOUT_S", flag="--score-timeout-s", unit="s", gt=0,
        help="time limit of a detector scoring call for an upload",
    )  # fmt: skip
    publish_alarms: bool = setting(
        True, env="ALERTING_PUBLISH_ALARMS", flag="--publish-alarms",
        help="also publish alarm changes to ecg/v1/{ward}/{bed}/alarms",
    )  # fmt: skip
    bed_idle_s: float = setting(
        BED_IDLE_S, env="ALERTING_BED_IDLE_S", flag="--bed-idle-s", unit="s", min=0,
        help="a bed with no message this long (and no open alarm) is dropped",
    )  # fmt: skip
    max_clock_skew_s: float = setting(
        MAX_CLOCK_SKEW_S, env="ALERTING_MAX_CLOCK_SKEW_S", flag="--max-clock-skew-s", unit="s",
        min=0, help="device timestamps this far off the receiver's clock are refused "
        "(clock_skew alarm); 0 turns the check off, for accelerated replay only",
    )  # fmt: skip
    metrics_token: str = setting(
        "", env="ALERTING_METRICS_TOKEN", flag="--metrics-token", min_len=8, secret=True,
        help="a second token accepted on /metrics only (for Prometheus)",
    )  # fmt: skip
    detector_token: str = setting(
        "", env="ECG_DETECTOR_TOKEN", flag="--detector-token", secret=True,
        help="bearer token of the detector's POST /v1/score",
    )  # fmt: skip
    bus: str = settings.bus()
    policy: PolicyConfig = settings.nested(PolicyConfig, prefix="policy", help="alarm criteria")


def parse_args(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> AlertingConfig:
    """CLI flags override environment variables, which override the defaults."""
    return settings.load(AlertingConfig, argv, env)
