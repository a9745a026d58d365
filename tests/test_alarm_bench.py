"""The benchmark's test signals through the real detector pipeline and the policy: the alarms it
times are the right ones (timing itself is measured by `make bench-alarms`, not asserted)."""

from __future__ import annotations

import numpy as np

from alerting.alarms import AlarmType
from alerting.policy import AlarmPolicy
from bench.alarms import FS, T0, Replay, asystole_trials, synth_ecg, tachy_trials


def test_synthetic_ecg_beats_are_found_by_the_detector() -> None:
    rng = np.random.default_rng(1)
    rrs = np.full(40, 0.8)
    x, peaks = synth_ecg(rrs, FS, rng, tail_s=1.0)
    replay = Replay("b", AlarmPolicy(), None, lag_s=1.0, chunk_s=0.25, batch_delay_s=0.0)
    replay.run(x, FS, T0)
    assert abs(replay.n_beats - len(peaks)) <= 1
    assert not replay.raised, [r.type for r in replay.raised]


def test_standstill_raises_asystole_and_nothing_early() -> None:
    res = asystole_trials(2, None, lag_s=0.6, chunk_s=0.25, batch_s=0.05, seed=3)
    assert res["missed"] == 0 and res["false_asystole_alarms"] == 0
    assert res["n"] == 2 and res["min"] > 0


def test_sudden_tachycardia_raises_a_tachy_alarm() -> None:
    res = tachy_trials(2, None, lag_s=0.6, chunk_s=0.25, batch_s=0.05, seed=4)
    assert res["missed"] == 0 and res["n"] == 2
    assert set(res["by_type"]) <= {AlarmType.TACHY.value, AlarmType.EXTREME_TACHY.value}
    assert AlarmType.EXTREME_TACHY.value in res["by_type"]
