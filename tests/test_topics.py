"""Topic names: built, parsed and subscribed to in one way."""

from __future__ import annotations

import pytest

from ecgcommon.topics import (
    Topic,
    TopicError,
    beats_topic,
    parse_topic,
    samples_topic,
    status_topic,
    subscription,
    topic,
)


def test_build_and_parse_round_trip() -> None:
    name = samples_topic("icu-a", "bed07")
    assert name == "ecg/v1/icu-a/bed07/samples"
    assert parse_topic(name) == Topic("icu-a", "bed07", "samples")
    assert str(parse_topic(beats_topic("w", "1"))) == "ecg/v1/w/1/beats"
    assert status_topic("w", "1").endswith("/status")


def test_subscriptions_use_single_level_wildcards() -> None:
    assert subscription("samples") == "ecg/v1/+/+/samples"
    assert subscription("status", ward="icu") == "ecg/v1/icu/+/status"
    assert subscription("+", ward="icu", bed="3") == "ecg/v1/icu/3/+"


@pytest.mark.parametrize(
    "bad, word",
    [
        ("ecg/v1/w/b", "levels"),
        ("ecg/v2/w/b/samples", "version"),
        ("foo/v1/w/b/samples", "start"),
        ("ecg/v1/w/b/pictures", "kind"),
        ("ecg/v1//b/samples", "ward"),
    ],
)
def test_parse_errors_say_what_is_wrong(bad: str, word: str) -> None:
    with pytest.raises(TopicError, match=word):
        parse_topic(bad)


def test_levels_cannot_hold_wildcards_or_separators() -> None:
    for bad in ("a/b", "+", "#", ""):
        with pytest.raises(TopicError, match="bed"):
            topic("w", bad, "samples")
    with pytest.raises(TopicError, match="kind"):
        topic("w", "b", "beat")
