"""Long-horizon prematurity (`detector.long_rhythm`): values, restarts, batching, bad RR."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detector.long_rhythm import LONG_HISTORY, LongRR, long_columns


def test_majority_premature_beats_are_early_against_the_long_rr() -> None:
    # sinus at 1.6 s with atrial premature beats at 0.8 s making up two thirds of the beats:
    # the local rhythm is theirs, the long end of the recent RR still holds the sinus interval
    mem = LongRR()
    rr = [1.6, 0.8, 0.8] * 30
    out = [mem.ratio_then_add(r) for r in rr]
    assert out[:8] == [1.0] * 8  # too few intervals: no opinion
    assert out[-1] == pytest.approx(0.5) and out[-3] == pytest.approx(1.0)
    assert len(mem) == LONG_HISTORY


def test_regular_rhythm_is_on_time() -> None:
    rng = np.random.default_rng(0)
    mem = LongRR()
    out = np.array([mem.ratio_then_add(0.8 + 0.02 * rng.standard_normal()) for _ in range(200)])
    assert 0.9 < np.median(out[8:]) <= 1.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, 0.0])
def test_unknown_rr_restarts_the_history(bad: float) -> None:
    mem = LongRR()
    for _ in range(20):
        mem.ratio_then_add(1.0)
    assert mem.ratio_then_add(bad) == 1.0
    assert len(mem) == 0
    assert mem.ratio_then_add(0.5) == 1.0  # nothing to compare with yet


def test_columns_do_not_depend_on_batching_and_beds_stay_apart() -> None:
    rng = np.random.default_rng(1)
    rr = [rng.uniform(0.4, 1.6, 150) for _ in range(2)]
    whole = [long_columns([LongRR()] * 150, r) for r in rr]
    beds = [LongRR(), LongRR()]
    got: list[list[float]] = [[], []]
    i = [0, 0]
    while min(i) < 150:  # interleave the two beds in random batches
        k = int(rng.integers(1, 9))
        mems, vals, who = [], [], []
        for _ in range(k):
            b = int(rng.integers(0, 2))
            if i[b] < 150:
                mems.append(beds[b])
                vals.append(rr[b][i[b]])
                who.append(b)
                i[b] += 1
        cols = long_columns(mems, np.array(vals))
        assert cols.shape == (len(vals), 1)
        for b, v in zip(who, cols[:, 0].tolist(), strict=True):
            got[b].append(v)
    for b in range(2):
        assert np.array_equal(np.array(got[b]), whole[b][:, 0])
    assert (whole[0] >= 0).all() and (whole[0] <= 3).all()
