"""The anomaly features of one beat, in the order the manifest's "anomaly" section stores them.

`feature_vector` turns what the adapter knows about a beat (its log reconstruction error, the
same relative to the patient's reference, the template-shape distances and the causal RR
features of `ecgcommon.rhythm`) into the raw, unstandardised row; `models/calibrate.py` fits the
logistic rule on these rows (DS1 only) and `adapter.PatientAdapter` applies it live. The next RR
is never used: a beat is scored the moment its window is complete.
"""

from __future__ import annotations

import math

import numpy as np

from ecgcommon.rhythm import RhythmFeatures

FEATURES = (
    "rel_log_error",  # log error minus the patient's running median log error
    "log_error",  # log error
    "rr_ratio",  # pre-RR / local RR (causal)
    "prev_ratio",  # previous RR / local RR (causal)
    "short_ratio",  # pre-RR / median of the last 8 RR (causal)
    "premature",  # max(0, 1 - rr_ratio): how early the beat came
    "rel_x_premature",  # interaction: an early beat that also looks unlike the patient's beats
    "log_qrs_dist",  # log mean squared distance to the patient's template over the QRS
    "log_st_dist",  # the same over the rest of the window after the QRS (ST segment, T wave)
    "qrs_x_premature",  # interactions: early and unlike the patient's template
    "st_x_premature",
    "log_slope_ratio",  # log(steepest QRS slope of the beat / of the template): wide QRS < 0
    "log_qrs_decorr",  # log(1 - correlation of the beat's QRS with the template's QRS)
)


def feature_vector(
    rel: float, log_err: float, rhythm: RhythmFeatures, shape: tuple[float, float, float, float]
) -> np.ndarray:
    """The raw (unstandardised) features of one beat, in `FEATURES` order.

    `shape` is `PatientAdapter.template_features`: (log QRS distance, log ST-T distance,
    log slope ratio, log QRS decorrelation).
    """
    return np.array(feature_row(rel, log_err, rhythm, shape), dtype=np.float64)


def feature_row(
    rel: float, log_err: float, rhythm: RhythmFeatures, shape: tuple[float, float, float, float]
) -> list[float]:
    """`feature_vector` as a list of floats (a batch stacks the rows into one array)."""
    log_qrs, log_st, log_slope, log_decorr = shape
    rr = min(max(rhythm.rr_ratio, 0.0), 3.0)
    prev = min(max(rhythm.prev_ratio, 0.0), 3.0)
    short = min(max(rhythm.short_ratio, 0.0), 3.0)
    premature = max(0.0, 1.0 - rr)
    return [
        rel,
        log_err,
        rr,
        prev,
        short,
        premature,
        rel * premature,
        log_qrs,
        log_st,
        log_qrs * premature,
        log_st * premature,
        log_slope,
        log_decorr,
    ]


def rhythm_from_row(row: np.ndarray) -> RhythmFeatures:
    """RhythmFeatures from a `RhythmFeatures.as_array()` row (offline datasets store rows)."""
    return RhythmFeatures(math.nan, math.nan, float(row[0]), float(row[1]), float(row[2]), True)
