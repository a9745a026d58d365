"""Per-bed, causal, label-free patient adaptation: raw reconstruction error -> anomaly score.

In the style of the `river` library: `score_one` scores a beat from what was learnt so far (only
past beats of the same patient), then `learn_one` adds the beat to the patient's reference.
`PatientAdapter.process(error, rhythm)` does both, in that order, for the live detector; offline
evaluation calls the very same method beat by beat, so the evaluated score is the live score.

The score is a logistic combination, fitted on DS1 only (`models/calibrate.py`), of
- the beat's log reconstruction error relative to the patient's own running median of it
  (morphology, adapted to the patient: a wide-QRS patient's normal beats stop looking abnormal),
- the global log reconstruction error (morphology against the training population),
- the causal RR features of `ecgcommon.rhythm` (prematurity, compensatory pause). The next RR is
  never used: a beat is scored the moment its window is complete.
The patient reference learns from every beat, without labels; the running median (not the mean)
keeps it on the dominant beat type while ectopic beats are a minority.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ecgcommon.rhythm import NEUTRAL, RhythmFeatures

PROFILES = ("icu", "screening")
_EPS = 1e-6


@dataclass(frozen=True)
class AnomalyConfig:
    """The combination rule and the patient reference, as stored in the model manifest."""

    weights: tuple[float, ...]  # one per feature of `feature_vector`
    bias: float
    mean: tuple[float, ...]  # feature standardisation (fitted on DS1)
    scale: tuple[float, ...]
    prior_log_error: float  # DS1 median log error of normal beats: the reference before history
    history: int = 128  # beats in the patient's running reference
    warmup: int = 16  # beats over which the reference moves from the prior to the patient
    thresholds: Mapping[str, float] | None = None  # profile name -> score threshold

    def __post_init__(self) -> None:
        n = len(FEATURES)
        for name in ("weights", "mean", "scale"):
            vals = getattr(self, name)
            if len(vals) != n or not all(math.isfinite(v) for v in vals):
                raise ValueError(f"{name} must hold {n} finite numbers, got {vals!r}")
        if any(s <= 0 for s in self.scale):
            raise ValueError(f"scale must be > 0, got {self.scale!r}")
        if not math.isfinite(self.bias):
            raise ValueError(f"bias must be finite, got {self.bias!r}")
        if not math.isfinite(self.prior_log_error):
            raise ValueError(f"prior_log_error must be finite, got {self.prior_log_error!r}")
        if self.history < 1:
            raise ValueError(f"history must be >= 1 beat, got {self.history}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0 beats, got {self.warmup}")

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, object]) -> AnomalyConfig:
        """Build from the manifest's "anomaly" and "thresholds" sections."""
        a = manifest["anomaly"]
        if not isinstance(a, Mapping):
            raise ValueError("manifest 'anomaly' must be an object")
        if list(a.get("features", [])) != list(FEATURES):
            raise ValueError(f"manifest anomaly features {a.get('features')!r} != {FEATURES!r}")
        th = manifest.get("thresholds", {})
        return cls(
            weights=tuple(float(v) for v in a["weights"]),
            bias=float(a["bias"]),
            mean=tuple(float(v) for v in a["mean"]),
            scale=tuple(float(v) for v in a["scale"]),
            prior_log_error=float(a["prior_log_error"]),
            history=int(a["history"]),
            warmup=int(a["warmup"]),
            thresholds={k: float(v["threshold"]) for k, v in th.items()},
        )

    def as_dict(self) -> dict[str, object]:
        """The "anomaly" section of the manifest."""
        return {
            "features": list(FEATURES),
            "weights": list(self.weights),
            "bias": self.bias,
            "mean": list(self.mean),
            "scale": list(self.scale),
            "prior_log_error": self.prior_log_error,
            "history": self.history,
            "warmup": self.warmup,
            "uses_next_rr": False,
        }

    def threshold(self, profile: str) -> float:
        """The score threshold of an operating profile ("icu" or "screening")."""
        if not self.thresholds or profile not in self.thresholds:
            known = list(self.thresholds or {})
            raise KeyError(f"no threshold for profile {profile!r}; known: {known}")
        return self.thresholds[profile]


FEATURES = (
    "rel_log_error",  # log error minus the patient's running median log error
    "log_error",  # log error
    "rr_ratio",  # pre-RR / local RR (causal)
    "prev_ratio",  # previous RR / local RR (causal)
    "short_ratio",  # pre-RR / median of the last 8 RR (causal)
    "premature",  # max(0, 1 - rr_ratio): how early the beat came
    "rel_x_premature",  # interaction: an early beat that also looks unlike the patient's beats
)


def feature_vector(rel: float, log_err: float, rhythm: RhythmFeatures) -> np.ndarray:
    """The raw (unstandardised) features of one beat, in `FEATURES` order."""
    rr = min(max(rhythm.rr_ratio, 0.0), 3.0)
    prev = min(max(rhythm.prev_ratio, 0.0), 3.0)
    short = min(max(rhythm.short_ratio, 0.0), 3.0)
    premature = max(0.0, 1.0 - rr)
    return np.array([rel, log_err, rr, prev, short, premature, rel * premature], dtype=np.float64)


class RunningMedian:
    """Median of the last `size` values (sorted window; O(size) per update, size is small)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._fifo)

    def add(self, value: float) -> None:
        self._fifo.append(value)
        bisect.insort(self._sorted, value)
        if len(self._fifo) > self.size:
            old = self._fifo.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def median(self) -> float:
        s, n = self._sorted, len(self._sorted)
        if n == 0:
            return math.nan
        return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


class PatientAdapter:
    """Anomaly scoring for one patient (one bed): causal, label-free, river-style."""

    def __init__(self, config: AnomalyConfig) -> None:
        self.config = config
        self._ref = RunningMedian(config.history)
        self._w = np.asarray(config.weights)
        self._mean = np.asarray(config.mean)
        self._scale = np.asarray(config.scale)

    @property
    def n_seen(self) -> int:
        """Beats learnt so far (capped at the history length)."""
        return len(self._ref)

    def reference(self) -> float:
        """The patient's reference log error: the prior, blended into the running median."""
        n = len(self._ref)
        if n == 0:
            return self.config.prior_log_error
        k = self.config.warmup
        w = n / (n + k) if k else 1.0
        return w * self._ref.median() + (1.0 - w) * self.config.prior_log_error

    def features(self, error: float, rhythm: RhythmFeatures = NEUTRAL) -> np.ndarray:
        """Raw features of a beat given what has been learnt so far."""
        log_err = _log_error(error)
        return feature_vector(log_err - self.reference(), log_err, rhythm)

    def score_one(self, error: float, rhythm: RhythmFeatures = NEUTRAL) -> float:
        """Anomaly score in (0, 1) of a beat, from past beats only (does not learn it)."""
        z = (self.features(error, rhythm) - self._mean) / self._scale
        return float(_sigmoid(float(z @ self._w) + self.config.bias))

    def learn_one(self, error: float, rhythm: RhythmFeatures = NEUTRAL) -> None:
        """Add a beat to the patient's reference (no labels; rhythm is not needed yet)."""
        del rhythm
        self._ref.add(_log_error(error))

    def process(self, error: float, rhythm: RhythmFeatures = NEUTRAL) -> float:
        """score_one then learn_one: the live path, one beat at a time in time order."""
        s = self.score_one(error, rhythm)
        self.learn_one(error, rhythm)
        return s

    def is_anomalous(self, score: float, profile: str = "icu") -> bool:
        """True when the score reaches the profile's threshold."""
        return score >= self.config.threshold(profile)


def _log_error(error: float) -> float:
    e = float(error)
    if not math.isfinite(e) or e < 0:
        raise ValueError(f"reconstruction error must be finite and >= 0, got {error!r}")
    return math.log(e + _EPS)


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    ex = math.exp(x)
    return ex / (1.0 + ex)


def record_features(
    errors: Sequence[float] | np.ndarray,
    rhythm: np.ndarray,
    config: AnomalyConfig,
) -> np.ndarray:
    """Offline: raw features of one patient's beats in time order (the live code in a loop)."""
    adapter = PatientAdapter(config)
    out = np.empty((len(errors), len(FEATURES)), dtype=np.float64)
    for i, e in enumerate(errors):
        r = _rhythm_from_row(rhythm[i])
        out[i] = adapter.features(float(e), r)
        adapter.learn_one(float(e), r)
    return out


def record_scores(
    errors: Sequence[float] | np.ndarray, rhythm: np.ndarray, config: AnomalyConfig
) -> np.ndarray:
    """Offline: anomaly scores of one patient's beats in time order via `PatientAdapter.process`."""
    adapter = PatientAdapter(config)
    return np.array(
        [adapter.process(float(e), _rhythm_from_row(rhythm[i])) for i, e in enumerate(errors)],
        dtype=np.float64,
    )


def _rhythm_from_row(row: np.ndarray) -> RhythmFeatures:
    return RhythmFeatures(math.nan, math.nan, float(row[0]), float(row[1]), float(row[2]), True)
