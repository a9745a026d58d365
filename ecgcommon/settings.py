"""One loader for every service's settings: env and CLI options made from dataclass field metadata.

A service config is a frozen dataclass whose fields say how they are set and what is allowed:

    max_wait_s: float = setting(0.05, env="DETECTOR_MAX_WAIT_S", flag="--max-wait-s", unit="s",
                                min=0, max=5, help="longest a beat waits for its batch")

(`setting` is `dataclasses.field(default=..., metadata={...})`.) Nested config dataclasses (the
shared `MqttSettings`, alerting's `PolicyConfig`) are fields made with `nested`: their fields are
flattened into options named `<prefix>_<field>` ("mqtt_host"), each with its own env variable and
flag. `load` reads the environment, then the command line (CLI over env over defaults), and builds
the config; `check_fields` is the one validator (types, bounds, choices), run by the configs' base
class `Settings` when one is made, with errors naming the field and its env variable and flag.
Fields marked secret show as `***` in `--help`, in reprs (`masked_repr`) and so in logs.
`load_or_exit` is the head of every service's `main()`: one log format, the config parsed, a
bad setting logged and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from ecgcommon.mqtt_auth import check_settings
from ecgcommon.subjects import parse_bus

T = TypeVar("T")
A = TypeVar("A")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_METAVAR = {"s": "SECONDS", "Hz": "HZ", "bpm": "BPM"}
_KIND_METAVAR = {"int": "N", "float": "NUMBER", "str": "TEXT", "strs": "TEXT", "bool": ""}


def setting(
    default: Any,
    *,
    env: str,
    flag: str,
    help: str,
    unit: str = "",
    min: float | None = None,
    max: float | None = None,
    gt: float | None = None,
    choices: Sequence[object] | None = None,
    nonempty: bool = False,
    min_len: int = 0,
    check: Callable[[Any], object] | None = None,
    secret: bool = False,
    aliases: Sequence[str] = (),
    env_aliases: Sequence[str] = (),
) -> Any:
    """A config field: its default and the metadata the loader and `check_fields` read.

    `min`/`max` are inclusive bounds, `gt` an exclusive lower one; `nonempty` refuses ""; a
    non-empty string must have `min_len` characters; `check(value)` raises ValueError for rules
    of its own; `aliases` / `env_aliases` are older flags / variables still accepted.
    """
    meta: dict[str, Any] = {"env": env, "flag": flag, "help": help, "unit": unit}
    bounds = {"min": min, "max": max, "gt": gt, "choices": choices, "check": check}
    meta.update({k: v for k, v in bounds.items() if v is not None})
    meta.update(nonempty=nonempty, min_len=min_len, secret=secret)
    meta.update(aliases=tuple(aliases), env_aliases=tuple(env_aliases))
    return field(default=default, metadata=meta)


def nested(
    factory: Callable[[], Any], *, prefix: str, help: str = "", env: Mapping[str, str] | None = None
) -> Any:
    """A field holding a config dataclass, flattened into options `<prefix>_<field>`; `env`
    gives some of its fields a variable of this service's own (a client id is per service)."""
    meta = {"prefix": prefix, "help": help, "env_override": dict(env or {})}
    return field(default_factory=factory, metadata=meta)


@dataclass(frozen=True)
class Option:
    """One flattened setting: where it lives in the config and how it is set."""

    path: tuple[str, ...]  # attribute path: ("mqtt", "host")
    name: str  # flattened name: "mqtt_host"
    env: str
    env_aliases: tuple[str, ...]
    flags: tuple[str, ...]
    kind: str  # int, float, bool, str or strs (a tuple of str)
    optional: bool  # None allowed (and the default)
    default: object
    meta: Mapping[str, Any]
    group: str  # prefix of the nested config it belongs to; "" at the top


def _kind(hint: object) -> tuple[str, bool]:
    """(kind, optional) of a field's resolved type."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported settings type {hint!r}")
        return _kind(rest[0])[0], True
    if typing.get_origin(hint) is tuple and args and all(a in (str, ...) for a in args):
        return "strs", False
    if hint in (bool, int, float, str):
        return typing.cast(type, hint).__name__, False
    raise TypeError(f"unsupported settings type {hint!r}")


def _field_default(f: dataclasses.Field[Any]) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"setting {f.name} has no default")


_HINTS: dict[type, dict[str, Any]] = {}
_OPTIONS: dict[type, tuple[Option, ...]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _nested_type(cls: type, f: dataclasses.Field[Any]) -> type | None:
    hint = _hints(cls)[f.name]
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def options(cls: type) -> tuple[Option, ...]:
    """Every setting of config class `cls`, nested ones flattened; TypeError when a field has no
    env or flag metadata or two options share a name, a variable or a flag."""
    if cls in _OPTIONS:
        return _OPTIONS[cls]
    found = tuple(_options(cls, (), (), None, {}))
    for attr in ("name", "env"):
        seen = [getattr(o, attr) for o in found]
        dup = {s for s in seen if seen.count(s) > 1}
        if dup:
            raise TypeError(f"{cls.__name__}: settings share {attr} {sorted(dup)}")
    flags = [fl for o in found for fl in o.flags]
    if len(set(flags)) != len(flags):
        raise TypeError(f"{cls.__name__}: two settings share a flag")
    _OPTIONS[cls] = found
    return found


def _options(
    cls: type,
    path: tuple[str, ...],
    prefixes: tuple[str, ...],
    base: object,
    env_override: Mapping[str, str],
) -> list[Option]:
    out: list[Option] = []
    for f in dataclasses.fields(cls):
        default = _field_default(f) if base is None else getattr(base, f.name)
        sub = _nested_type(cls, f)
        if sub is not None:
            more = (*prefixes, f.metadata.get("prefix", f.name))
            override = f.metadata.get("env_override", {})
            out += _options(sub, (*path, f.name), more, default, override)
            continue
        meta = f.metadata
        if not meta.get("env") or not meta.get("flag"):
            raise TypeError(f"{cls.__name__}.{f.name} has no env/flag metadata (use setting())")
        env = env_override.get(f.name, meta["env"])
        kind, optional = _kind(_hints(cls)[f.name])
        option = Option(
            path=(*path, f.name),
            name="_".join((*prefixes, f.name)),
            env=env,
            env_aliases=tuple(a for a in meta["env_aliases"] if a != env),
            flags=(meta["flag"], *meta["aliases"]),
            kind=kind,
            optional=optional,
            default=default,
            meta=meta,
            group=prefixes[0] if prefixes else "",
        )
        out.append(option)
    return out


# ------------------------------------------------------------------------------------ validation


def _where(meta: Mapping[str, Any]) -> str:
    names = [n for n in (meta.get("env"), meta.get("flag")) if n]
    return f" ({', '.join(names)})" if names else ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _bounds_text(meta: Mapping[str, Any]) -> str:
    lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
    if lo is not None and hi is not None:
        text = f"in {_num(lo)}..{_num(hi)}"
    else:
        parts = [
            f"> {_num(gt)}" if gt is not None else "",
            f">= {_num(lo)}" if lo is not None else "",
        ]
        parts.append(f"<= {_num(hi)}" if hi is not None else "")
        text = " and ".join(p for p in parts if p)
    return f"{text} {meta['unit']}".rstrip() if meta.get("unit") else text


def _type_ok(kind: str, value: object) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok and math.isfinite(typing.cast(float, value))
    if kind == "strs":
        return isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    return isinstance(value, str)


_KIND_TEXT = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a finite number",
    "str": "a string",
    "strs": "a tuple of strings",
}


def _in_bounds(meta: Mapping[str, Any], value: float) -> bool:
    lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
    return (
        (lo is None or value >= lo) and (hi is None or value <= hi) and (gt is None or value > gt)
    )


def check_value(
    name: str, value: object, kind: str, optional: bool, meta: Mapping[str, Any]
) -> None:
    """ValueError naming the field, its env variable and flag, when `value` breaks its metadata."""
    where = _where(meta)
    if value is None and optional:
        return
    if not _type_ok(kind, value):
        raise ValueError(f"{name} must be {_KIND_TEXT[kind]}{where}, got {value!r:.80}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        allowed = ", ".join(map(str, choices))
        raise ValueError(f"{name} must be one of {allowed}{where}, got {value!r:.80}")
    if kind in ("int", "float") and not _in_bounds(meta, typing.cast(float, value)):
        raise ValueError(f"{name} must be {_bounds_text(meta)}{where}, got {value!r}")
    if isinstance(value, str):
        _check_text(name, value, meta, where)
    check = meta.get("check")
    if check is not None:
        try:
            check(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}{where}") from exc


def _check_text(name: str, value: str, meta: Mapping[str, Any], where: str) -> None:
    secret = meta.get("secret")
    if meta.get("nonempty") and not value.strip():
        raise ValueError(f"{name} must be set{where}")
    if value and len(value) < meta.get("min_len", 0):
        shown = "" if secret else f", got {value!r:.80}"
        raise ValueError(f"{name} must be at least {meta['min_len']} characters{where}{shown}")


def check_fields(obj: object, prefix: str = "") -> None:
    """The one validator: every `setting` field of dataclass `obj` against its metadata (nested
    configs check themselves when they are made); errors name the field as `prefix + name`."""
    cls = type(obj)
    for f in dataclasses.fields(typing.cast(Any, obj)):
        if _nested_type(cls, f) is not None or "env" not in f.metadata:
            continue
        kind, optional = _kind(_hints(cls)[f.name])
        check_value(prefix + f.name, getattr(obj, f.name), kind, optional, f.metadata)


def masked_repr(self: object) -> str:
    """A dataclass repr with secret fields shown as '***' (`Settings` uses it)."""
    parts = []
    for f in dataclasses.fields(typing.cast(Any, self)):
        if not f.repr:
            continue
        value = getattr(self, f.name)
        shown = "'***'" if f.metadata.get("secret") and value else repr(value)
        parts.append(f"{f.name}={shown}")
    return f"{type(self).__qualname__}({', '.join(parts)})"


# ---------------------------------------------------------------------------------------- loader


def _shown(o: Option) -> str:
    if o.meta.get("secret"):
        return "***" if o.default else '""'
    if o.default is None:
        return "none"
    if isinstance(o.default, tuple):
        return ",".join(o.default) or '""'
    if isinstance(o.default, str) and not o.default:
        return '""'
    return str(o.default)


def help_text(o: Option) -> str:
    """`help [unit] (default X; env VAR)` for `--help`; secrets show as ***."""
    unit = f" [{o.meta['unit']}]" if o.meta.get("unit") else ""
    text = f"{o.meta.get('help', '')}{unit} (default {_shown(o)}; env {o.env})"
    return text.replace("%", "%%")


def build_parser(cls: type, prog: str | None, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one option per setting of `cls`; absent options are left out of
    the namespace (argparse.SUPPRESS), so the environment and defaults show through."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for o in options(cls):
        target: Any = p
        if o.group:
            if o.group not in groups:
                groups[o.group] = p.add_argument_group(f"{o.group} settings")
            target = groups[o.group]
        kw: dict[str, Any] = {"dest": o.name, "default": argparse.SUPPRESS, "help": help_text(o)}
        if o.kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["metavar"] = _METAVAR.get(o.meta.get("unit", ""), _KIND_METAVAR[o.kind])
            if o.kind == "strs":
                kw["nargs"] = "*"
        target.add_argument(*o.flags, **kw)
    return p


def convert(o: Option, raw: object, source: str) -> object:
    """A CLI or env value as the setting's type; ValueError names the setting and the source."""
    try:
        if isinstance(raw, list):  # nargs="*"
            return tuple(raw)
        if not isinstance(raw, str):  # BooleanOptionalAction
            return raw
        if o.kind == "int":
            return int(raw)
        if o.kind == "float":
            return float(raw)
        if o.kind == "bool":
            if raw.strip().lower() in _TRUE + _FALSE:
                return raw.strip().lower() in _TRUE
            raise ValueError(raw)
        if o.kind == "strs":
            return tuple(r.strip() for r in raw.split(",") if r.strip())
    except ValueError:
        raise ValueError(
            f"{o.name}: bad value {raw!r:.80} from {source}, expected {_KIND_TEXT[o.kind]}"
        ) from None
    return raw


def from_env(cls: type, env: Mapping[str, str]) -> dict[str, object]:
    """The settings of `cls` given by environment variables (empty ones are unset)."""
    values: dict[str, object] = {}
    for o in options(cls):
        for var in (o.env, *o.env_aliases):
            raw = env.get(var)
            if raw:
                values[o.name] = convert(o, raw, f"${var}")
                break
    return values


def build(cls: type[T], values: Mapping[str, object]) -> T:
    """Config `cls` from flattened setting names ("mqtt_port": 1884); the rest are defaults."""
    by_name = {o.name: o for o in options(cls)}
    unknown = set(values) - set(by_name)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown settings {sorted(unknown)}")
    tree: dict[str, Any] = {}
    for name, value in values.items():
        *parents, leaf = by_name[name].path
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return typing.cast(T, _make(cls, tree, None))


def _make(cls: type, tree: Mapping[str, Any], base: object) -> object:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in tree:
            continue
        sub = _nested_type(cls, f)
        if sub is None:
            kwargs[f.name] = tree[f.name]
        else:
            inner = _field_default(f) if base is None else getattr(base, f.name)
            kwargs[f.name] = _make(sub, tree[f.name], inner)
    return cls(**kwargs) if base is None else dataclasses.replace(typing.cast(Any, base), **kwargs)


def load(
    cls: type[T],
    argv: Sequence[str] | None,
    env: Mapping[str, str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
) -> T:
    """Command line over environment variables over defaults; ValueError names a bad setting.
    `prog` and `description` of `--help` default to the class's `_prog` and `_about`."""
    values = from_env(cls, os.environ if env is None else env)
    prog = prog if prog is not None else getattr(cls, "_prog", None)
    about = description if description is not None else getattr(cls, "_about", "")
    args = vars(build_parser(cls, prog, about).parse_args(argv))
    by_name = {o.name: o for o in options(cls)}
    for name, raw in args.items():
        o = by_name[name]
        values[name] = convert(o, raw, o.flags[0])
    return build(cls, values)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"  # every service's log line


def configure_logging(level: int = logging.INFO) -> None:
    """Log as every service does: one `LOG_FORMAT` line per record on stderr."""
    logging.basicConfig(level=level, format=LOG_FORMAT)


def load_or_exit(parse: Callable[[A], T], argv: A, log: logging.Logger) -> T | None:
    """A service `main()`'s first step: logging configured, then `parse(argv)` (its
    `parse_args`); None, the bad setting logged, when the configuration is invalid, and the
    caller then exits with status 2."""
    configure_logging()
    try:
        return parse(argv)
    except ValueError as exc:
        log.error("bad configuration: %s", exc)
        return None


class Settings:
    """Base of the config dataclasses: fields checked by `check_fields` when made (errors name
    them as `_prefix + name`), secrets masked in the repr. Subclasses are
    `@dataclass(frozen=True, repr=False)` (the repr is this one) and call `super().__post_init__()`
    before checks across fields of their own."""

    _prefix: ClassVar[str] = ""
    _prog: ClassVar[str | None] = None  # `--help`'s program name and description
    _about: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_fields(self, self._prefix)

    __repr__ = masked_repr


# -------------------------------------------------------------------- settings every service has


def http_host(default: str, env: str, serves: str) -> Any:
    """The address the service's HTTP server (`serves`: its routes) listens on."""
    return setting(default, env=env, flag="--http-host", nonempty=True, help=f"{serves}: address")


def http_port(default: int, env: str) -> Any:
    """The HTTP server's port."""
    return setting(default, env=env, flag="--http-port", min=0, max=65535, help="0 = any free")


def bus() -> Any:
    """Which message bus (docs/scaling.md); the value is checked by `parse_bus`."""
    text = '"" or "mqtt": the MQTT broker; nats://h:p[,h:p]: NATS (scaling.md)'
    return setting("", env="ECG_BUS", flag="--bus", check=parse_bus, help=text)


# ------------------------------------------------------------------------------------------ MQTT


@dataclass(frozen=True, repr=False)
class MqttSettings(Settings):
    """How a service reaches the MQTT broker: the same names in every service (docs/security.md
    for the credentials). Services set their own `client_id` default and variable."""

    host: str = setting(
        "127.0.0.1", env="MQTT_HOST", flag="--mqtt-host", aliases=("--host",), nonempty=True,
        help="MQTT broker host",
    )  # fmt: skip
    port: int = setting(
        1883, env="MQTT_PORT", flag="--mqtt-port", aliases=("--port",), min=1, max=65535,
        help="MQTT broker port",
    )  # fmt: skip
    username: str = setting(
        "", env="MQTT_USERNAME", flag="--mqtt-username",
        help="broker account; empty: connect anonymously",
    )  # fmt: skip
    password_file: str = setting(
        "", env="MQTT_PASSWORD_FILE", flag="--mqtt-password-file",
        help="file holding the password alone (never the password on the command line)",
    )  # fmt: skip
    ca_file: str = setting(
        "", env="MQTT_CA_FILE", flag="--mqtt-ca-file",
        help="set: TLS, the broker's certificate checked against this CA",
    )  # fmt: skip
    client_id: str = setting(
        "", env="MQTT_CLIENT_ID", flag="--mqtt-client-id", aliases=("--client-id",),
        help="MQTT client id (a broker with client id = username replaces it)",
    )  # fmt: skip
    keepalive_s: int = setting(
        30, env="MQTT_KEEPALIVE_S", flag="--mqtt-keepalive-s", aliases=("--keepalive-s",),
        unit="s", min=5, max=3600, help="MQTT keepalive",
    )  # fmt: skip
    reconnect_min_s: float = setting(
        0.5, env="MQTT_RECONNECT_MIN_S", flag="--mqtt-reconnect-min-s",
        aliases=("--reconnect-min-s",), unit="s", gt=0, help="first reconnection delay",
    )  # fmt: skip
    reconnect_max_s: float = setting(
        3.0, env="MQTT_RECONNECT_MAX_S", flag="--mqtt-reconnect-max-s",
        aliases=("--reconnect-max-s",), unit="s", gt=0,
        help="longest reconnection delay (capped: a broker that is back is used within seconds)",
    )  # fmt: skip

    _prefix = "mqtt_"  # the name of its options in every service

    def reconnect_delays(self) -> tuple[int, int]:
        """(min, max) reconnection delays in whole seconds, at least 1, as paho takes them."""
        return max(1, round(self.reconnect_min_s)), max(1, round(self.reconnect_max_s))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"mqtt_reconnect_min_s ({self.reconnect_min_s}) must be <= mqtt_reconnect_max_s "
                f"({self.reconnect_max_s}) (MQTT_RECONNECT_MIN_S, --mqtt-reconnect-min-s)"
            )
        check_settings(self.username, self.password_file, self.ca_file)
