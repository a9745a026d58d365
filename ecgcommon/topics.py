"""MQTT topic names: `ecg/v1/{ward}/{bed}/{kind}`, built and parsed in one place.

The version segment lets a later wire format live next to this one on the same broker.
Ward and bed are single topic levels of at most `limits.MAX_NAME_CHARS` letters, digits, `.`,
`_` or `-` (so never `/`, `+`, `#`, NUL or `:`); a topic with any other name is refused on parse.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecgcommon.limits import MAX_NAME_CHARS, valid_name

PREFIX = "ecg"
VERSION = "v1"
DEFAULT_WARD = "ward-a"  # the ward every service uses unless told otherwise (ECG_WARD)
SAMPLES, BEATS, EVENTS, STATUS = "samples", "beats", "events", "status"  # the topic kinds
KINDS: tuple[str, ...] = (SAMPLES, BEATS, EVENTS, STATUS)
INPUT_KINDS: tuple[str, ...] = (SAMPLES, STATUS)  # what devices publish: the detector's input
OUTPUT_KINDS: tuple[str, ...] = (BEATS, EVENTS)  # the detector's results, consumed by alerting
_FORBIDDEN = frozenset("/+#\x00")


class TopicError(ValueError):
    """A topic or topic part that does not follow `ecg/v1/{ward}/{bed}/{kind}`."""


@dataclass(frozen=True)
class Topic:
    """A parsed topic."""

    ward: str
    bed: str
    kind: str

    def __str__(self) -> str:
        return topic(self.ward, self.bed, self.kind)


def _check_level(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise TopicError(f"{name} must be a non-empty string")
    bad = _FORBIDDEN.intersection(value)
    if bad:
        raise TopicError(f"{name} {value!r:.80} contains forbidden characters {sorted(bad)!r}")
    if not valid_name(value):
        raise TopicError(
            f"{name} {value!r:.80} must be 1..{MAX_NAME_CHARS} letters, digits, '.', '_' or '-'"
            " starting with a letter or digit"
        )


def topic(ward: str, bed: str, kind: str) -> str:
    """The topic of one bed's stream of one kind."""
    _check_level("ward", ward)
    _check_level("bed", bed)
    if kind not in KINDS:
        raise TopicError(f"kind {kind!r} is not one of {KINDS}")
    return f"{PREFIX}/{VERSION}/{ward}/{bed}/{kind}"


def samples_topic(ward: str, bed: str) -> str:
    return topic(ward, bed, SAMPLES)


def beats_topic(ward: str, bed: str) -> str:
    return topic(ward, bed, BEATS)


def events_topic(ward: str, bed: str) -> str:
    return topic(ward, bed, EVENTS)


def status_topic(ward: str, bed: str) -> str:
    return topic(ward, bed, STATUS)


def subscription(kind: str, ward: str = "+", bed: str = "+") -> str:
    """A subscription filter, e.g. `ecg/v1/+/+/samples` (every bed of every ward)."""
    if kind not in KINDS and kind != "+":
        raise TopicError(f"kind {kind!r} is not one of {KINDS} or '+'")
    for name, value in (("ward", ward), ("bed", bed)):
        if value != "+":
            _check_level(name, value)
    return f"{PREFIX}/{VERSION}/{ward}/{bed}/{kind}"


def parse_topic(name: str) -> Topic:
    """Split a concrete topic into ward, bed and kind; TopicError says what is wrong."""
    parts = name.split("/")
    if len(parts) != 5:
        raise TopicError(f"topic {name!r} has {len(parts)} levels, expected ecg/v1/ward/bed/kind")
    prefix, version, ward, bed, kind = parts
    if prefix != PREFIX:
        raise TopicError(f"topic {name!r} does not start with {PREFIX!r}")
    if version != VERSION:
        raise TopicError(f"topic {name!r} has version {version!r}, this code speaks {VERSION!r}")
    _check_level("ward", ward)
    _check_level("bed", bed)
    if kind not in KINDS:
        raise TopicError(f"topic {name!r} has kind {kind!r}, expected one of {KINDS}")
    return Topic(ward, bed, kind)
