"""A small `make fuzz`: a few hundred hostile inputs through every decoder, the upload parser and
both message handlers, in process; none may crash a handler or escape as an unexpected error."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from detector.config import DetectorConfig
from fuzz import inprocess, inputs


@pytest.mark.slow
def test_a_few_hundred_hostile_inputs_are_all_refused_cleanly(data_dir: Path) -> None:
    rng = random.Random(3)
    tally = inprocess.Tally()
    inprocess.decoders(400, rng, tally)
    inprocess.decoders_hypothesis(100, tally)
    inprocess.uploads(20, rng, tally)
    out = inprocess.handlers(400, rng, tally, DetectorConfig().model_dir, data_dir)
    assert tally.inputs == 920
    assert tally.crashes == 0 and tally.unhandled_errors == 0, tally.examples
    assert out["internal_errors"] == 0
    # the inputs were hostile: most were refused, for reasons the metrics name
    assert sum(tally.drops.values()) > 400
    assert {"bad_json", "bad_topic", "truncated"} <= set(tally.drops)
    assert out["detector_beds"] <= 128  # the bed table stayed bounded


def test_mutations_keep_payloads_bounded_and_reach_the_limits() -> None:
    rng = random.Random(5)
    seeds = inputs.seeds(1.7e9)
    payloads = [inputs.mutate(rng, k, seeds) for k in inputs.KINDS for _ in range(200)]
    assert max(len(p) for p in payloads) < 16 * 1024 * 1024
    assert len(set(payloads)) > 700  # not the same few inputs again and again
