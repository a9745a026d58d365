"""MicroBatcher on its own (clock passed in): bounded delay, batch size, order, flush."""

from __future__ import annotations

import math
import random

import pytest

from detector.batcher import MicroBatcher


def test_batcher_bounds_size_and_delay() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=4, max_wait_s=0.05)
    assert b.add([1, 2], now=10.0) == [] and b.deadline == pytest.approx(10.05)
    assert b.poll(10.04) == []
    assert b.add([3, 4, 5, 6, 7, 8, 9], now=10.045) == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert len(b) == 1 and b.deadline == pytest.approx(10.095)
    assert b.poll(10.1) == [9] and b.deadline is None
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(0, 0.1)


@pytest.mark.parametrize("max_batch, max_wait_s", [(1, 0.0), (3, 0.02), (16, 0.05), (64, 0.2)])
def test_random_arrivals_keep_order_size_and_delay(max_batch: int, max_wait_s: float) -> None:
    """Items arriving at random times, `poll` called at every deadline (as the service does):
    every item comes out exactly once, in arrival order, in batches of at most `max_batch`,
    none later than `max_wait_s` after it arrived; a batch cut by `add` is exactly full."""
    rng = random.Random(max_batch)
    b: MicroBatcher[tuple[int, float]] = MicroBatcher(max_batch, max_wait_s)
    out: list[tuple[float, list[tuple[int, float]]]] = []  # (emitted at, batch)
    t, n = 0.0, 0
    for _ in range(2000):
        t += rng.expovariate(1 / 0.01)
        while (d := b.deadline) is not None and d <= t:
            batch = b.poll(d)
            assert batch and len(batch) <= max_batch
            out.append((d, batch))
        assert b.poll(t) == []  # nothing is due before its deadline
        items = [(n + i, t) for i in range(rng.choice((1, 1, 2, 5, 40)))]
        n += len(items)
        for full in b.add(items, t):
            assert len(full) == max_batch
            out.append((t, full))
        assert len(b) < max_batch
    out.append((t, b.flush()))
    emitted = [item for _, batch in out for item in batch]
    assert [i for i, _ in emitted] == list(range(n)) and n > 2000
    worst = max(at - arrived for at, batch in out for _, arrived in batch)
    assert 0.0 <= worst <= max_wait_s + 1e-12
    assert sum(1 for _, batch in out if len(batch) == max_batch) > 0


def test_deadline_follows_the_oldest_waiting_item() -> None:
    b: MicroBatcher[str] = MicroBatcher(max_batch=3, max_wait_s=1.0)
    assert b.deadline is None and b.poll(1e9) == [] and b.add([], 5.0) == []
    b.add(["a"], 10.0)
    b.add(["b"], 10.5)  # a later item does not move the deadline
    assert b.deadline == pytest.approx(11.0)
    assert b.add(["c", "d"], 10.7) == [["a", "b", "c"]]
    assert b.deadline == pytest.approx(11.7)  # "d" is now the oldest
    assert b.poll(11.69) == [] and b.poll(11.7) == ["d"]


def test_flush_takes_everything_at_once() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=100, max_wait_s=60.0)
    b.add(list(range(7)), 0.0)
    b.add([7, 8], 1.0)
    assert len(b) == 9
    assert b.flush() == list(range(9))
    assert len(b) == 0 and b.deadline is None and b.flush() == []


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_bad_delay_is_refused_naming_the_field(bad: float) -> None:
    with pytest.raises(ValueError, match="max_wait_s"):
        MicroBatcher(4, bad)
