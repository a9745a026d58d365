"""Detector configuration: validated, errors name the field; CLI over environment."""

from __future__ import annotations

import pytest

from detector.config import DetectorConfig, parse_args
from ecgcommon.settings import build


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"mqtt_port": 0}, "port"),
        ({"http_port": 70000}, "http_port"),
        ({"ward": "a/b"}, "ward"),
        ({"max_batch": 0}, "max_batch"),
        ({"max_wait_s": -0.1}, "max_wait_s"),
        ({"max_wait_s": 60.0}, "max_wait_s"),
        ({"signal_timeout_s": 0.0}, "signal_timeout_s"),
        ({"qos_beats": 3}, "qos_beats"),
        ({"mqtt_reconnect_min_s": 10.0, "mqtt_reconnect_max_s": 1.0}, "reconnect_min_s"),
    ],
)
def test_bad_values_name_the_field(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build(DetectorConfig, kwargs)  # flattened names: mqtt_port is DetectorConfig.mqtt.port


def test_cli_overrides_environment_overrides_defaults() -> None:
    env = {
        "MQTT_HOST": "mq",
        "MQTT_PORT": "1884",
        "ECG_WARD": "icu",
        "DETECTOR_MAX_WAIT_S": "0.1",
        "DETECTOR_HTTP_PORT": "9000",
    }
    cfg = parse_args(["--max-batch", "64", "--http-port", "0"], env=env)
    assert (
        cfg.mqtt.host,
        cfg.mqtt.port,
        cfg.ward,
        cfg.max_wait_s,
        cfg.max_batch,
        cfg.http_port,
    ) == ("mq", 1884, "icu", 0.1, 64, 0)
    assert parse_args([], env={}).ward == "+"
    with pytest.raises(ValueError, match="max_batch"):
        parse_args(["--max-batch", "many"], env={})
