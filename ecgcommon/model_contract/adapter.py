"""Per-bed, causal, label-free patient adaptation: raw reconstruction error -> anomaly score.

In the style of the `river` library: `score_one` scores a beat from what was learnt so far (only
past beats of the same patient), then `learn_one` adds the beat to the patient's reference.
`PatientAdapter.process(error, rhythm)` does both, in that order, for the live detector; offline
evaluation calls the very same method beat by beat, so the evaluated score is the live score.

The score is a logistic combination, fitted on DS1 only (`models/calibrate.py`), of
- the beat's log reconstruction error relative to the patient's own running median of it
  (morphology, adapted to the patient: a wide-QRS patient's normal beats stop looking abnormal),
- the global log reconstruction error (morphology against the training population),
- the log distances of the beat's window to the patient's running template (the point-wise
  median of the patient's last `template_history` windows: a beat unlike this patient's usual
  beat; the median ignores ectopic beats while they are a minority), separately over the QRS
  (within `qrs_half_s` of the R-peak) and over the rest of the window after it (ST-T),
- the QRS shape against the template: the log ratio of the steepest slope over the QRS (a wide
  ventricular or fused QRS is slower: a lower slope in the z-scored window) and the decorrelation
  `1 - r` of the QRS with the template's (a changed shape, whatever its amplitude),
- the causal RR features of `ecgcommon.rhythm` (prematurity, compensatory pause). The next RR is
  never used: a beat is scored the moment its window is complete.
The patient reference learns from every beat, without labels; the running median (not the mean)
keeps the error reference on the dominant beat type while ectopic beats are a minority.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ecgcommon.model_contract.features import FEATURES, feature_row, feature_vector, rhythm_from_row
from ecgcommon.rhythm import RhythmFeatures
from ecgcommon.windowing import WINDOW

PROFILES = ("icu", "screening")
TEMPLATE_REFRESH = 8  # beats between recomputations of the patient's median template
_EPS = 1e-6


@dataclass(frozen=True)
class AnomalyConfig:
    """The combination rule and the patient reference, as stored in the model manifest."""

    weights: tuple[float, ...]  # one per feature of `feature_vector`
    bias: float
    mean: tuple[float, ...]  # feature standardisation (fitted on DS1)
    scale: tuple[float, ...]
    prior_log_error: float  # DS1 median log error of normal beats: the reference before history
    prior_log_template: float  # DS1 median log QRS template distance of normal beats
    prior_log_st: float  # DS1 median log ST-T template distance of normal beats
    history: int = 128  # beats in the patient's running reference
    warmup: int = 16  # beats over which the reference moves from the prior to the patient
    template_history: int = 48  # past windows whose point-wise median is the patient's template
    qrs_half_s: float = 0.1  # the QRS region of the template distance: R-peak +- this
    prior_log_decorr: float = math.log(1e-3)  # DS1 median log QRS decorrelation, normal beats
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
        for name in ("prior_log_error", "prior_log_template", "prior_log_st", "prior_log_decorr"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        if not 0 < self.qrs_half_s < min(WINDOW.pre_s, WINDOW.post_s):
            raise ValueError(f"qrs_half_s must be in (0, {WINDOW.pre_s}) s, got {self.qrs_half_s}")
        if self.template_history < 1:
            raise ValueError(f"template_history must be >= 1 beat, got {self.template_history}")
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
        if not isinstance(th, Mapping):
            raise ValueError("manifest 'thresholds' must be an object")
        values: dict[str, Any] = {}
        for name in _SECTION:
            v = a[name]
            if name in _VECTORS:
                values[name] = tuple(float(x) for x in v)
            else:
                values[name] = int(v) if name in _COUNTS else float(v)
        return cls(**values, thresholds={k: float(v["threshold"]) for k, v in th.items()})

    def as_dict(self) -> dict[str, object]:
        """The "anomaly" section of the manifest (fields in declaration order)."""
        out: dict[str, object] = {"features": list(FEATURES)}
        for name in _SECTION:
            v = getattr(self, name)
            out[name] = list(v) if name in _VECTORS else v
        out["uses_next_rr"] = False
        return out

    def threshold(self, profile: str) -> float:
        """The score threshold of an operating profile ("icu" or "screening")."""
        if not self.thresholds or profile not in self.thresholds:
            known = list(self.thresholds or {})
            raise KeyError(f"no threshold for profile {profile!r}; known: {known}")
        return self.thresholds[profile]


# The manifest's "anomaly" section holds every field but the thresholds (a section of its own).
_SECTION = tuple(f.name for f in fields(AnomalyConfig) if f.name != "thresholds")
_VECTORS = ("weights", "mean", "scale")  # one number per feature
_COUNTS = ("history", "warmup", "template_history")  # beats


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
    """Anomaly scoring for one patient (one bed): causal, label-free, river-style.

    Each beat is (error, rhythm, window): the scorer's reconstruction error, the `RRTracker`
    features and the `beat_windows` row. Call `process` once per beat, in time order.
    """

    def __init__(self, config: AnomalyConfig) -> None:
        self.config = config
        self._ref = RunningMedian(config.history)
        # (L, template_history): past windows as columns, so that the median runs along rows
        self._ring: np.ndarray | None = None
        self._n_windows = 0  # windows stored (up to template_history)
        self._next = 0  # ring slot the next window goes to
        self._template: np.ndarray | None = None  # median of the ring, None when stale
        self._since_refresh = 0  # windows learnt since the template was last recomputed
        self._t_qrs = np.zeros(0)  # the template's QRS (mean removed), its norm, steepest slope
        self._t_norm = 0.0
        self._t_slope = 0.0
        half = round(config.qrs_half_s * WINDOW.fs)
        self._lo, self._hi = WINDOW.pre_points - half, WINDOW.pre_points + half + 1
        self._w = np.asarray(config.weights)
        self._mean = np.asarray(config.mean)
        self._scale = np.asarray(config.scale)

    @property
    def n_seen(self) -> int:
        """Beats in the running error reference (capped at the history length)."""
        return len(self._ref)

    def reference(self) -> float:
        """The patient's reference log error: the prior, blended into the running median."""
        n = len(self._ref)
        if n == 0:
            return self.config.prior_log_error
        k = self.config.warmup
        w = n / (n + k) if k else 1.0
        return w * self._ref.median() + (1.0 - w) * self.config.prior_log_error

    def template_features(self, window: np.ndarray) -> tuple[float, float, float, float]:
        """A window against the patient's template: (log mean squared distance over the QRS,
        the same over the ST-T part after it, log ratio of the steepest QRS slopes,
        log(1 - correlation) over the QRS).

        Before the first beat has been learnt these are the DS1 priors (slope ratio 1).
        """
        if self._ring is None:
            c = self.config
            return c.prior_log_template, c.prior_log_st, 0.0, c.prior_log_decorr
        return self._template_features(_window(window, self._ring.shape[0]))

    def _template_features(self, w: np.ndarray) -> tuple[float, float, float, float]:
        """`template_features` of a checked float64 window, once a beat has been learnt."""
        assert self._ring is not None
        if self._template is None:
            self._refresh_template()
        sq = (w - self._template) ** 2
        lo, hi = self._lo, self._hi
        # np.add.reduce / n and np.maximum.reduce: .mean(), .max() and np.diff without their
        # Python wrappers (the same arithmetic; this runs once per beat of every bed)
        wq = w[lo:hi]
        q = wq - np.add.reduce(wq) / wq.size
        r = float(q @ self._t_qrs) / math.sqrt(float(q @ q) * self._t_norm + 1e-9)
        slope = float(np.maximum.reduce(np.abs(wq[1:] - wq[:-1])))
        return (
            math.log(float(np.add.reduce(sq[lo:hi])) / (hi - lo) + 1e-3),
            math.log(float(np.add.reduce(sq[hi:])) / (sq.size - hi) + 1e-3),
            math.log((slope + 1e-3) / (self._t_slope + 1e-3)),
            math.log(1.0 - r + 1e-3),
        )

    def _refresh_template(self) -> np.ndarray:
        """Recompute the stale template (the median of the ring) and its QRS constants."""
        assert self._ring is not None
        t = _median_columns(self._ring[:, : self._n_windows])
        self._template = t
        self._t_qrs = t[self._lo : self._hi] - t[self._lo : self._hi].mean()
        self._t_norm = float(self._t_qrs @ self._t_qrs)
        self._t_slope = float(np.abs(np.diff(t[self._lo : self._hi])).max())
        self._since_refresh = 0
        return t

    def features(self, error: float, rhythm: RhythmFeatures, window: np.ndarray) -> np.ndarray:
        """Raw features of a beat given what has been learnt so far."""
        log_err = _log_error(error)
        return feature_vector(
            log_err - self.reference(), log_err, rhythm, self.template_features(window)
        )

    def score_one(self, error: float, rhythm: RhythmFeatures, window: np.ndarray) -> float:
        """Anomaly score in (0, 1) of a beat, from past beats only (does not learn it)."""
        z = (self.features(error, rhythm, window) - self._mean) / self._scale
        return _sigmoid(float(z @ self._w) + self.config.bias)

    def learn_one(self, error: float, rhythm: RhythmFeatures, window: np.ndarray) -> None:
        """Add a beat to the patient's references (no labels; rhythm is tracked by RRTracker)."""
        del rhythm
        log_err = _log_error(error)
        self._learn(log_err, _window(window, None if self._ring is None else self._ring.shape[0]))

    def _learn(self, log_err: float, w: np.ndarray) -> None:
        """`learn_one` of a checked log error and float64 window."""
        self._ref.add(log_err)
        if self._ring is None:
            self._ring = np.empty((w.size, self.config.template_history))
        self._ring[:, self._next] = w
        self._next = (self._next + 1) % self._ring.shape[1]
        self._n_windows = min(self._n_windows + 1, self._ring.shape[1])
        self._since_refresh += 1
        # The median is recomputed every TEMPLATE_REFRESH beats (every beat while warming up):
        # a fixed rule, so offline and live templates are identical, at 1/8 of the cost.
        if self._n_windows < TEMPLATE_REFRESH or self._since_refresh >= TEMPLATE_REFRESH:
            self._template = None

    def process(self, error: float, rhythm: RhythmFeatures, window: np.ndarray) -> float:
        """score_one then learn_one: the live path, one beat at a time in time order (the
        error and the window are checked and converted once for both)."""
        log_err = _log_error(error)
        w = _window(window, None if self._ring is None else self._ring.shape[0])
        c = self.config
        shape = (
            (c.prior_log_template, c.prior_log_st, 0.0, c.prior_log_decorr)
            if self._ring is None
            else self._template_features(w)
        )
        z = feature_vector(log_err - self.reference(), log_err, rhythm, shape) - self._mean
        s = _sigmoid(float(z / self._scale @ self._w) + c.bias)
        self._learn(log_err, w)
        return s

    def is_anomalous(self, score: float, profile: str = "icu") -> bool:
        """True when the score reaches the profile's threshold."""
        return score >= self.config.threshold(profile)


def process_many(
    adapters: Sequence[PatientAdapter],
    errors: Sequence[float],
    rhythms: Sequence[RhythmFeatures],
    windows: np.ndarray,
) -> tuple[list[float], list[float]]:
    """`(adapter.reference(), adapter.process(error, rhythm, window))` of each beat, in order,
    for a batch of beats of any patients (each patient's in time order): the same numbers bit
    for bit, but the template distances and the logistic rule run as one numpy pass over the
    batch instead of ~15 small numpy calls per beat. Bad input raises ValueError before any
    patient learns anything.
    """
    n = len(adapters)
    w64 = np.asarray(windows, dtype=np.float64)
    if len(errors) != n or len(rhythms) != n or w64.ndim != 2 or w64.shape[0] != n:
        raise ValueError(f"{n} adapters for {len(errors)} errors and {w64.shape} windows")
    if n == 0:
        return [], []
    c = adapters[0].config
    if any(a.config is not c for a in adapters):  # patients of several rules: one by one
        refs = [0.0] * n
        scores = [0.0] * n
        for i, (a, e, r) in enumerate(zip(adapters, errors, rhythms, strict=True)):
            refs[i] = a.reference()
            scores[i] = a.process(e, r, w64[i])
        return refs, scores
    size = w64.shape[1]
    if any(a._ring is not None and a._ring.shape[0] != size for a in adapters):
        raise ValueError(f"windows of {size} points do not match the patients' templates")
    if not np.isfinite(w64).all():
        raise ValueError("window holds NaN/inf")
    log_errs = [_log_error(e) for e in errors]
    refs, templated = _walk(adapters, log_errs, w64)
    shapes = [(c.prior_log_template, c.prior_log_st, 0.0, c.prior_log_decorr)] * n
    a0 = adapters[0]
    if templated:
        measured = _shapes(w64, templated, a0._lo, a0._hi)
        for (i, *_), shape in zip(templated, measured, strict=True):
            shapes[i] = shape
    flat: list[float] = []  # the rows end to end: one array from a flat list is the cheapest
    for le, ref, r, shape in zip(log_errs, refs, rhythms, shapes, strict=True):
        flat.extend(feature_row(le - ref, le, r, shape))
    z = (np.array(flat, dtype=np.float64).reshape(n, -1) - a0._mean) / a0._scale
    # one dot product per row, as `z @ w` computes it for one beat (matmul's vector case)
    lin = np.matmul(z[:, None, :], a0._w[:, None]).reshape(-1).tolist()
    return refs, [_sigmoid(x + c.bias) for x in lin]


# A beat that has a template to be measured against: (its index in the batch, the template,
# the template's mean-free QRS, its squared norm, its steepest QRS slope), as of that beat.
_Templated = tuple[int, np.ndarray, np.ndarray, float, float]


def _walk(
    adapters: Sequence[PatientAdapter], log_errs: list[float], w64: np.ndarray
) -> tuple[list[float], list[_Templated]]:
    """Each beat in order: its patient's reference and template (refreshed when stale), then
    the patient learns the beat. A refresh makes new arrays, so those kept stay valid."""
    refs: list[float] = []
    templated: list[_Templated] = []
    for i, (a, le) in enumerate(zip(adapters, log_errs, strict=True)):
        refs.append(a.reference())
        if a._ring is not None:
            t = a._template if a._template is not None else a._refresh_template()
            templated.append((i, t, a._t_qrs, a._t_norm, a._t_slope))
        a._learn(le, w64[i])
    return refs, templated


def _shapes(
    w64: np.ndarray, templated: list[_Templated], lo: int, hi: int
) -> list[tuple[float, float, float, float]]:
    """`PatientAdapter._template_features` of many beats: the same arithmetic per row (row
    sums, and matmul's vector dot product per row), the logarithms by `math.log` as there."""
    idx, ts, tqs, norms, slopes = zip(*templated, strict=True)
    m = len(idx)
    w = w64 if m == len(w64) else w64[list(idx)]  # (every beat has one, once beds warmed up)
    sq = (w - np.concatenate(ts).reshape(m, -1)) ** 2
    q_sq = np.add.reduce(sq[:, lo:hi], axis=1).tolist()
    st_sq = np.add.reduce(sq[:, hi:], axis=1).tolist()
    wq = w[:, lo:hi]
    q = wq - (np.add.reduce(wq, axis=1) / (hi - lo))[:, None]
    num = np.matmul(q[:, None, :], np.concatenate(tqs).reshape(m, -1, 1)).reshape(-1)
    qq = np.matmul(q[:, None, :], q[:, :, None]).reshape(-1)
    r = (num / np.sqrt(qq * np.array(norms) + 1e-9)).tolist()
    slope = np.maximum.reduce(np.abs(wq[:, 1:] - wq[:, :-1]), axis=1).tolist()
    n_q, n_st = hi - lo, w.shape[1] - hi
    log = math.log
    return [
        (
            log(a / n_q + 1e-3),
            log(b / n_st + 1e-3),
            log((s + 1e-3) / (ts_ + 1e-3)),
            log(1.0 - c + 1e-3),
        )
        for a, b, s, ts_, c in zip(q_sq, st_sq, slope, slopes, r, strict=True)
    ]


def _median_columns(a: np.ndarray) -> np.ndarray:
    """`np.median(a, axis=1)` of finite values, bit for bit (the same order statistics, and the
    mean of the middle two as their sum halved), without its Python layers (once per template
    refresh); along rows, the contiguous axis, which partitions twice as fast as down columns."""
    n = a.shape[1]
    k = n // 2
    if n % 2:
        return np.partition(a, k, axis=1)[:, k].copy()  # contiguous, as the row it was
    part = np.partition(a, (k - 1, k), axis=1)
    return (part[:, k - 1] + part[:, k]) / 2


def _window(window: np.ndarray, size: int | None) -> np.ndarray:
    w = np.asarray(window, dtype=np.float64)
    if w.ndim != 1 or (size is not None and w.size != size):
        raise ValueError(f"window must be 1-D of length {size or 'L'}, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("window holds NaN/inf")
    return w


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
    errors: np.ndarray, rhythm: np.ndarray, windows: np.ndarray, config: AnomalyConfig
) -> np.ndarray:
    """Offline: raw features of one patient's beats in time order (the live code in a loop)."""
    adapter = PatientAdapter(config)
    out = np.empty((len(errors), len(FEATURES)), dtype=np.float64)
    for i, e in enumerate(errors):
        r = rhythm_from_row(rhythm[i])
        out[i] = adapter.features(float(e), r, windows[i])
        adapter.learn_one(float(e), r, windows[i])
    return out


def record_scores(
    errors: np.ndarray, rhythm: np.ndarray, windows: np.ndarray, config: AnomalyConfig
) -> np.ndarray:
    """Offline: anomaly scores of one patient's beats in time order via `PatientAdapter.process`."""
    adapter = PatientAdapter(config)
    return np.array(
        [
            adapter.process(float(e), rhythm_from_row(rhythm[i]), windows[i])
            for i, e in enumerate(errors)
        ],
        dtype=np.float64,
    )
