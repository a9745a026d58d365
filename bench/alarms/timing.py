"""Alarm timing on synthetic signals with a known alarm moment, through `Replay`.

- asystole: sinus rhythm, then no QRS; delay from the 4 s criterion to the alarm's publication.
- tachycardia: sinus rhythm, then a sudden 160 bpm; time from its first beat to the first alarm
  about it (tachy or extreme tachy).
Each trial starts at a random chunk phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from alerting.alarms import AlarmType
from alerting.policy import AlarmPolicy
from bench.alarms.replay import Raised, Replay, Scoring
from bench.alarms.signals import FS, T0, asystole_signal, tachy_signal

# The targets: asystole alarm within 1 s of the criterion, tachycardia alarm within 3 s
# of onset, a beat on the dashboard within 1 s of its result.
BOUNDS = {"asystole_delay_s": 1.0, "tachy_time_to_alarm_s": 3.0, "dashboard_latency_s": 1.0}
EARLY_S = 0.5  # an asystole alarm this long before the true criterion is a false one


def summary(values: list[float]) -> dict[str, Any]:
    """max, mean, min (s, rounded to ms) and n of a list of delays; None when empty."""
    if not values:
        return {"max": None, "mean": None, "min": None, "n": 0}
    a = np.asarray(values)
    return {
        "max": round(float(a.max()), 3),
        "mean": round(float(a.mean()), 3),
        "min": round(float(a.min()), 3),
        "n": int(a.size),
    }


@dataclass(frozen=True)
class TrialSetup:
    """How the trials run: the detector's models (None: no model), how late reference beats are
    known and the nurse's clock lag, the device chunk and the detector's batching deadline (s)."""

    scoring: Scoring | None
    lag_s: float
    chunk_s: float
    batch_s: float

    def raised(self, bed: str, x: np.ndarray, t0: float) -> list[Raised]:
        """One synthetic signal from `t0` through a fresh Replay (fresh policy): its alarms."""
        replay = Replay(bed, AlarmPolicy(), self.scoring, self.lag_s, self.chunk_s, self.batch_s)
        replay.run(x, FS, t0)
        return replay.raised

    def start(self, trial: int, rng: np.random.Generator) -> float:
        """The first sample's time of a trial: apart from the others, at a random chunk phase."""
        return T0 + trial * 1000 + rng.uniform(0, self.chunk_s)


def asystole_trials(
    trials: int, setup: TrialSetup, seed: int, p_waves: bool = False
) -> dict[str, Any]:
    """Sinus rhythm, then no QRS: delay from criterion to alarm, per trial."""
    rng = np.random.default_rng(seed)
    delays, truth_delays, false_alarms, missed = [], [], 0, 0
    for trial in range(trials):
        x, crit = asystole_signal(rng, p_waves=p_waves)
        t0 = setup.start(trial, rng)
        raised = setup.raised("bench-asys", x, t0)
        asys = [r for r in raised if r.type is AlarmType.ASYSTOLE]
        true_crit = t0 + crit
        false_alarms += sum(1 for r in asys if r.started_at < true_crit - EARLY_S)
        hit = [r for r in asys if r.started_at >= true_crit - EARLY_S]
        if not hit:
            missed += 1
            continue
        first = hit[0]
        met = float(first.evidence.get("criterion_met_at") or first.started_at)
        delays.append(first.published_at - met)
        truth_delays.append(first.published_at - true_crit)
    return summary(delays) | {
        "from_true_last_beat": summary(truth_delays),
        "trials": trials,
        "missed": missed,
        "false_asystole_alarms": false_alarms,
    }


def tachy_trials(trials: int, setup: TrialSetup, seed: int, bpm: float = 160.0) -> dict[str, Any]:
    """Sinus rhythm, then a sudden tachycardia: time from its first beat to the first alarm
    about it (tachy or extreme tachy), per trial."""
    rng = np.random.default_rng(seed)
    times: list[float] = []
    by_type: dict[str, list[float]] = {}
    missed = 0
    for trial in range(trials):
        x, start = tachy_signal(rng, bpm)
        t0 = setup.start(trial, rng)
        onset = t0 + start  # the first early beat
        tachy = (AlarmType.TACHY, AlarmType.EXTREME_TACHY)
        raised = setup.raised("bench-tachy", x, t0)
        hits = [r for r in raised if r.type in tachy and r.started_at >= onset]
        if not hits:
            missed += 1
            continue
        times.append(hits[0].published_at - onset)
        for r in hits:
            by_type.setdefault(r.type.value, []).append(r.published_at - onset)
    return summary(times) | {
        "bpm": bpm,
        "trials": trials,
        "missed": missed,
        "by_type": {k: summary(v) for k, v in by_type.items()},
    }
