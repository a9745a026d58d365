"""Fit the anomaly combination rule and the profile thresholds, on DS1 only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.optimize import minimize

from ecgcommon.model_contract.adapter import AnomalyConfig, record_features, record_scores
from ecgcommon.model_contract.features import FEATURES
from models.dataset import BeatSet
from models.metrics import ABNORMAL

# Operating points: the largest fraction of DS1 normal beats each profile may flag.
NORMAL_FLAG_BUDGET = {"icu": 0.02, "screening": 0.005}
# L2 penalty of the combination rule, chosen by 6-fold cross-validation by record within DS1
# (0.01, 0.03, 0.05, 0.1, 0.2, 0.3, 1.0 tried; 0.05-0.2 best): a stronger prior toward small
# weights transfers better to unseen patients than the former 0.01.
ANOMALY_L2 = 0.1


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> tuple[np.ndarray, float]:
    """Class-balanced L2 logistic regression (weights, bias) on standardised features."""
    n_pos, n_neg = max(1, int(y.sum())), max(1, int((1 - y).sum()))
    sw = np.where(y == 1, 0.5 / n_pos, 0.5 / n_neg)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        z = x @ w + b
        p = 1.0 / (1.0 + np.exp(-z))
        ll = np.logaddexp(0.0, z) - y * z
        g = sw * (p - y)
        return float((sw * ll).sum() + l2 * (w @ w)), np.concatenate(
            [x.T @ g + 2 * l2 * w, [g.sum()]]
        )

    res = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B")
    return res.x[:-1], float(res.x[-1])


def per_record_features(errors: np.ndarray, beats: BeatSet, config: AnomalyConfig) -> np.ndarray:
    """Raw anomaly features of every beat, each record run causally through its own adapter."""
    out = np.empty((len(errors), len(FEATURES)))
    for name in dict.fromkeys(beats.records.tolist()):
        m = beats.records == name
        out[m] = record_features(errors[m], beats.rhythm[m], beats.windows[m], config)
    return out


def per_record_scores(errors: np.ndarray, beats: BeatSet, config: AnomalyConfig) -> np.ndarray:
    """Final anomaly scores, each record through its own `PatientAdapter.process` in time order."""
    out = np.empty(len(errors))
    for name in dict.fromkeys(beats.records.tolist()):
        m = beats.records == name
        out[m] = record_scores(errors[m], beats.rhythm[m], beats.windows[m], config)
    return out


def fit_anomaly(
    errors: np.ndarray, beats: BeatSet, history: int = 128, warmup: int = 16
) -> AnomalyConfig:
    """The combination rule fitted on these (DS1) beats: N against S/V/F."""
    labels = beats.labels
    prior = float(np.median(np.log(errors[labels == "N"] + 1e-6)))
    k = len(FEATURES)
    base = AnomalyConfig((0.0,) * k, 0.0, (0.0,) * k, (1.0,) * k, prior, 0.0, 0.0, history, warmup)
    feats = per_record_features(errors, beats, base)
    first = np.concatenate([[True], beats.records[1:] != beats.records[:-1]])
    normal = (labels == "N") & ~first
    base = replace(
        base,
        prior_log_template=float(np.median(feats[normal, FEATURES.index("log_qrs_dist")])),
        prior_log_st=float(np.median(feats[normal, FEATURES.index("log_st_dist")])),
        prior_log_decorr=float(np.median(feats[normal, FEATURES.index("log_qrs_decorr")])),
    )
    feats = per_record_features(errors, beats, base)
    use = np.isin(labels, ("N", *ABNORMAL))
    x, y = feats[use], np.isin(labels[use], ABNORMAL).astype(float)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    w, b = fit_logistic((x - mean) / scale, y, l2=ANOMALY_L2)
    return replace(
        base,
        weights=tuple(float(v) for v in w),
        bias=b,
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
    )


def calibrate_thresholds(
    scores: np.ndarray, labels: np.ndarray, budget: dict[str, float] = NORMAL_FLAG_BUDGET
) -> dict[str, float]:
    """Per profile, the lowest threshold that flags at most its budget of normal beats."""
    normal = np.sort(scores[labels == "N"])
    out = {}
    for name, frac in budget.items():
        # flag = score >= t; the (1 - frac) quantile, nudged up so at most frac are flagged
        idx = int(np.ceil((1.0 - frac) * normal.size))
        idx = min(idx, normal.size - 1)
        out[name] = float(np.nextafter(normal[idx - 1], np.inf)) if idx > 0 else float(normal[0])
    return out
