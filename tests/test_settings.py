"""The one settings loader (ecgcommon/settings.py): every field of every service config is set by
env and by CLI, CLI over env over defaults, bounds errors name the field with its variable and
flag, `--help` shows units and defaults, and secrets never show."""

from __future__ import annotations

import dataclasses
import operator
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from alerting.config import AlertingConfig
from alerting.config import parse_args as alerting_args
from alerting.rules import PolicyConfig
from detector.config import DetectorConfig, EngineSettings
from detector.config import parse_args as detector_args
from ecgcommon.settings import (
    MqttSettings,
    Option,
    build,
    build_parser,
    check_fields,
    convert,
    from_env,
    load,
    masked_repr,
    options,
    setting,
)
from streamer.config import StreamerConfig
from streamer.config import parse_args as streamer_args

TOKEN = "token-0123456789"
SERVICES: list[tuple[type, Callable[..., Any], dict[str, str]]] = [
    (DetectorConfig, detector_args, {}),
    (AlertingConfig, alerting_args, {"ALERTING_TOKEN": TOKEN}),  # required
    (StreamerConfig, streamer_args, {}),
]
CONFIGS = [cls for cls, _, _ in SERVICES]


def leaf_fields(cls: type, path: str = "") -> Iterator[tuple[str, dataclasses.Field[Any]]]:
    """Every field of config `cls`, nested config dataclasses walked into."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from leaf_fields(hints[f.name], f"{path}{f.name}.")
        else:
            yield f"{path}{f.name}", f


@pytest.mark.parametrize("cls", CONFIGS + [PolicyConfig, MqttSettings, EngineSettings])
def test_every_field_has_an_env_variable_and_a_flag(cls: type) -> None:
    """Fails when someone adds a config field without `setting(env=..., flag=...)`."""
    found = list(leaf_fields(cls))
    assert len(found) >= 4
    for path, f in found:
        assert f.metadata.get("env", "").isupper(), f"{cls.__name__}.{path} has no env variable"
        assert f.metadata.get("flag", "").startswith("--"), f"{cls.__name__}.{path} has no flag"
        assert f.metadata.get("help"), f"{cls.__name__}.{path} has no help"
    assert len(options(cls)) == len(found)  # the loader flattens every one of them


def text(o: Option, value: object) -> str:
    """How a value is written in an env variable."""
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def other_values(o: Option) -> list[object]:
    """Values other than the default to try (the first valid one is used)."""
    d = o.default
    if o.kind == "bool":
        return [not d]
    if o.kind == "int" and isinstance(d, int):
        return [c for c in o.meta.get("choices", ()) if c != d] + [d + 1, d - 1]
    if o.kind == "float" and isinstance(d, float | int):
        return [d * 1.25, d * 0.8, d + 0.5] if d else [0.5, 1.0]
    if o.kind == "strs":
        return [("100", "101")]
    return []


def cli_args(o: Option, value: object) -> list[str]:
    """How a value is written on the command line."""
    if o.kind == "bool":
        return [o.flags[0] if value else "--no-" + o.flags[0][2:]]
    if isinstance(value, tuple):
        return [o.flags[0], *value]
    return [o.flags[0], str(value)]


def value_at(config: object, path: tuple[str, ...]) -> object:
    return operator.attrgetter(".".join(path))(config)


@pytest.mark.parametrize("cls, parse, base", SERVICES, ids=[c.__name__ for c in CONFIGS])
def test_every_setting_is_reached_by_env_and_by_cli(
    cls: type, parse: Callable[..., Any], base: dict[str, str]
) -> None:
    """Each option's variable and flag land in its own field: by default value everywhere, and
    by a changed value that moves that field (and no other) wherever one is valid alone."""
    default = parse([], dict(base))
    moved = 0
    for o in options(cls):
        if o.optional and o.default is None:
            continue  # data_dir, duration_s: below
        for value in [o.default, *other_values(o)]:
            try:
                expected = build(cls, {**from_env(cls, base), o.name: value})
            except ValueError:
                continue  # not valid on its own (a bound, or a setting that goes with another)
            by_env = parse([], {**base, o.env: text(o, value)})
            by_cli = parse(cli_args(o, value), dict(base))
            assert value_at(by_env, o.path) == value_at(by_cli, o.path) == value, o.name
            assert by_env == by_cli == expected, o.name
            if value != o.default:
                assert by_env != default, o.name
                moved += 1
    assert moved >= len(options(cls)) // 2, moved
    s = streamer_args(["--data-dir", "/d", "--duration-s", "5"], {})
    assert (s.data_dir, s.duration_s) == ("/d", 5.0)
    assert streamer_args([], {"ECG_DATA_DIR": "/e", "STREAMER_DURATION_S": "2"}).data_dir == "/e"


def test_cli_overrides_env_overrides_defaults() -> None:
    assert detector_args([], {}).max_wait_s == 0.05
    env = {"DETECTOR_MAX_WAIT_S": "0.1", "MQTT_PORT": "1884", "MQTT_HOST": "mq"}
    cfg = detector_args(["--max-wait-s", "0.2", "--mqtt-port", "1885"], env)
    assert (cfg.max_wait_s, cfg.mqtt.port, cfg.mqtt.host) == (0.2, 1885, "mq")
    a = alerting_args(["--asystole-s", "6"], {"ALERTING_TOKEN": TOKEN, "ALERTING_ASYSTOLE_S": "5"})
    assert a.policy.asystole_s == 6.0
    a = alerting_args([], {"ALERTING_TOKEN": TOKEN, "ALERTING_DEFAULT_LOW_BPM": "45"})
    assert a.policy.default_limits.low_bpm == 45.0 and a.policy.asystole_s == 4.0
    assert alerting_args(["--no-publish-alarms"], {"ALERTING_TOKEN": TOKEN}).publish_alarms is False
    off = {"ALERTING_TOKEN": TOKEN, "ALERTING_PUBLISH_ALARMS": "off"}
    assert alerting_args(["--publish-alarms"], off).publish_alarms is True
    assert alerting_args([], {**off, "ALERTING_PUBLISH_ALARMS": ""}).publish_alarms is True


def test_older_flags_and_per_service_variables_still_work() -> None:
    cfg = detector_args(["--host", "h", "--port", "1", "--client-id", "d2"], {})
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.client_id) == ("h", 1, "d2")
    assert detector_args([], {"DETECTOR_CLIENT_ID": "d3"}).mqtt.client_id == "d3"
    a = alerting_args(["--db", "x.db"], {"ALERTING_TOKEN": TOKEN, "ALERTING_MQTT_CLIENT_ID": "a"})
    assert (a.db_path, a.mqtt.client_id) == ("x.db", "a")
    s = streamer_args(["--json", "--records", "100", "119"], {})
    assert s.json_payload and s.records == ("100", "119")
    # a client id is per service: a variable of another service's does not leak in
    assert detector_args([], {"ALERTING_MQTT_CLIENT_ID": "a"}).mqtt.client_id == "detector"


def test_one_broker_default_everywhere() -> None:
    hosts = {
        build(cls, {"token": TOKEN} if cls is AlertingConfig else {}).mqtt.host for cls in CONFIGS
    }
    assert hosts == {"127.0.0.1"}
    assert alerting_args([], {"ALERTING_TOKEN": TOKEN}).mqtt.reconnect_delays() == (1, 2)


@pytest.mark.parametrize(
    "cls, values, name, where",
    [
        (DetectorConfig, {"max_batch": 0}, "max_batch", ("DETECTOR_MAX_BATCH", "--max-batch")),
        (DetectorConfig, {"mqtt_port": 70000}, "mqtt_port", ("MQTT_PORT", "--mqtt-port")),
        (DetectorConfig, {"max_wait_s": float("nan")}, "max_wait_s", ("DETECTOR_MAX_WAIT_S",)),
        (DetectorConfig, {"qos_in": 3}, "qos_in", ("DETECTOR_QOS_IN", "--qos-in")),
        (DetectorConfig, {"ward": "a/b"}, "ward", ("ECG_WARD",)),
        (AlertingConfig, {}, "token", ("ALERTING_TOKEN", "--token")),
        (AlertingConfig, {"token": TOKEN, "wave_hz": 2000.0}, "wave_hz", ("--wave-hz",)),
        (AlertingConfig, {"token": TOKEN, "policy_silence_s": 0.0}, "silence_s", ("--silence-s",)),
        (AlertingConfig, {"token": TOKEN, "max_beds": True}, "max_beds", ("ALERTING_MAX_BEDS",)),
        (StreamerConfig, {"chunk_s": 20.0}, "chunk_s", ("STREAMER_CHUNK_S", "--chunk-s")),
        (
            StreamerConfig,
            {"mqtt_username": "u", "mqtt_password_file": "/run/u.password"},
            "mqtt_username",
            ("STREAMER_DEVICE_CREDENTIALS",),
        ),
    ],
)
def test_bad_values_name_the_field_its_variable_and_flag(
    cls: type, values: dict[str, object], name: str, where: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError, match=name) as err:
        build(cls, values)
    for part in where:
        assert part in str(err.value)


def test_unparsable_values_name_the_setting_and_where_it_came_from() -> None:
    with pytest.raises(ValueError, match=r"max_batch.*\$DETECTOR_MAX_BATCH"):
        detector_args([], {"DETECTOR_MAX_BATCH": "many"})
    with pytest.raises(ValueError, match=r"mqtt_port.*--mqtt-port"):
        detector_args(["--mqtt-port", "x"], {})
    with pytest.raises(ValueError, match=r"policy_vt_from_beats.*ALERTING_VT_FROM_BEATS"):
        alerting_args([], {"ALERTING_TOKEN": TOKEN, "ALERTING_VT_FROM_BEATS": "maybe"})
    with pytest.raises(ValueError, match="unknown settings"):
        build(DetectorConfig, {"mqtt_hots": "x"})


def normalised_help(parse: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        parse(["--help"], {"ALERTING_TOKEN": TOKEN, "ECG_DETECTOR_TOKEN": "secret-from-env-1"})
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_units_defaults_and_variables(capsys: pytest.CaptureFixture[str]) -> None:
    out = normalised_help(detector_args, capsys)
    wait = "--max-wait-s SECONDS longest a beat waits for its batch to fill [s] (default 0.05;"
    assert f"{wait} env DETECTOR_MAX_WAIT_S)" in out
    assert (
        "--mqtt-host TEXT, --host TEXT MQTT broker host (default 127.0.0.1; env MQTT_HOST)" in out
    )
    assert "(default detector; env DETECTOR_CLIENT_ID)" in out
    out = normalised_help(alerting_args, capsys)
    assert "--wave-hz HZ" in out and "[Hz] (default 120.0; env ALERTING_WAVE_HZ)" in out
    assert "[s] (default 4.0; env ALERTING_ASYSTOLE_S)" in out and "policy settings" in out
    assert "--publish-alarms, --no-publish-alarms" in out
    out = normalised_help(streamer_args, capsys)
    assert "[s] (default 0.5; env STREAMER_CHUNK_S)" in out and "(default none;" in out
    for cls in CONFIGS:
        for o in options(cls):
            assert o.env in " ".join(build_parser(cls, "x", "").format_help().split()), o.name


def test_secrets_stay_out_of_help_reprs_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for parse in (detector_args, alerting_args):
        out = normalised_help(parse, capsys)
        assert TOKEN not in out and "secret-from-env-1" not in out
    cfg = detector_args([], {"ECG_DETECTOR_TOKEN": "secret-from-env-1"})
    assert cfg.token == "secret-from-env-1"
    assert "secret-from-env-1" not in repr(cfg) and "token='***'" in repr(cfg)
    a = alerting_args([], {"ALERTING_TOKEN": TOKEN, "ALERTING_METRICS_TOKEN": "metrics-secret"})
    assert TOKEN not in repr(a) and "metrics-secret" not in repr(a) and "***" in repr(a)
    assert "token=''" in repr(detector_args([], {}))  # unset is shown as unset
    with pytest.raises(ValueError, match="token must be at least 8") as err:
        build(DetectorConfig, {"token": "short"})
    assert "short" not in str(err.value)


@dataclass(frozen=True)
class Demo:
    """A config of the test's own: a secret default, a bound, a tuple."""

    rate_hz: float = setting(
        250.0, env="DEMO_RATE_HZ", flag="--rate-hz", unit="Hz", gt=0, help="rate"
    )
    key: str = setting("built-in-key", env="DEMO_KEY", flag="--key", secret=True, help="key")
    names: tuple[str, ...] = setting(("a",), env="DEMO_NAMES", flag="--names", help="names")

    __repr__ = masked_repr

    def __post_init__(self) -> None:
        check_fields(self)


def test_loader_on_a_config_of_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    d = load(Demo, ["--names", "x", "y"], {"DEMO_RATE_HZ": "500"}, prog="demo", description="")
    assert (d.rate_hz, d.names, d.key) == (500.0, ("x", "y"), "built-in-key")
    assert repr(d) == "Demo(rate_hz=500.0, key='***', names=('x', 'y'))"
    with pytest.raises(SystemExit):
        load(Demo, ["--help"], {}, prog="demo", description="")
    out = capsys.readouterr().out
    assert "built-in-key" not in out and "(default ***; env DEMO_KEY)" in out
    with pytest.raises(ValueError, match=r"rate_hz must be > 0 Hz \(DEMO_RATE_HZ, --rate-hz\)"):
        Demo(rate_hz=0.0)
    assert convert(options(Demo)[2], "p, q,", "$DEMO_NAMES") == ("p", "q")


def test_configs_without_metadata_or_with_clashes_are_refused() -> None:
    @dataclass(frozen=True)
    class Bare:
        x: int = 1

    @dataclass(frozen=True)
    class Clash:
        a: int = setting(1, env="SAME", flag="--a", help="a")
        b: int = setting(2, env="SAME", flag="--b", help="b")

    with pytest.raises(TypeError, match="x has no env/flag"):
        options(Bare)
    with pytest.raises(TypeError, match="SAME"):
        options(Clash)
