"""Checks and splits a chunk of samples before QRS detection (no state, no I/O)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def as_samples(chunk: ArrayLike) -> np.ndarray:
    """The chunk as a 1-D float64 array; TypeError for non-numeric data, ValueError for ndim != 1.

    Integers are accepted (ADC counts are fine: detection is amplitude-independent); booleans,
    complex numbers, strings and objects are not ECG samples.
    """
    arr = np.asarray(chunk)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"ECG chunk must hold real numbers (float or int), got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(
            f"ECG chunk must be 1-D (one lead, samples in time order), got shape {arr.shape}"
        )
    if arr.dtype != np.float64:
        arr = arr.astype(np.float64)
    return arr


def all_finite(x: np.ndarray) -> bool:
    """Whether every sample of x is finite: `np.isfinite(x).all()` without the Python
    wrapper of `.all()` (a shortcut through the sum would warn on overflow)."""
    return bool(np.logical_and.reduce(np.isfinite(x), axis=None))


def finite_runs(x: np.ndarray) -> list[tuple[int, int, bool]]:
    """Split x into maximal runs (start, stop, finite) of finite and non-finite samples."""
    good = np.isfinite(x)
    edges = np.flatnonzero(good[1:] != good[:-1]) + 1
    bounds = [0, *edges.tolist(), len(x)]
    return [(a, b, bool(good[a])) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def flat_onset(x: np.ndarray, prev: float, run: int, tol: float, limit: int) -> tuple[int, int]:
    """Where a flat stretch reaches `limit` samples, and the flat run length at the end of x.

    A sample is "flat" when it differs from the one before by at most `tol`; `run` (< limit)
    counts the flat samples just before x (0 when `prev` is NaN). Returns (index in x of the
    sample at which the run reaches `limit` samples, or -1; the run length after x, valid
    only when the first value is -1).
    """
    n = len(x)
    same = np.empty(n, dtype=bool)
    same[0] = abs(x[0] - prev) <= tol  # False when prev is NaN
    d = x[1:] - x[:-1]
    np.less_equal(np.abs(d, out=d), tol, out=same[1:])
    first_break = int(same.argmin())
    if same[first_break]:  # no break at all
        return (limit - run - 1 if run + n >= limit else -1), run + n
    if run + first_break >= limit:
        return limit - run - 1, -1
    last_break = n - 1 - int(same[::-1].argmin())
    tail = n - 1 - last_break
    if last_break - first_break > limit:  # an inner run might be long enough: scan exactly
        idx = np.arange(n)
        start = np.maximum.accumulate(np.where(same, -1, idx))
        hits = np.flatnonzero(idx - start >= limit)
        if len(hits):
            return int(hits[0]), -1
    elif tail >= limit:
        return last_break + limit, -1
    return -1, tail


def first_change(x: np.ndarray, prev: float, tol: float) -> int:
    """Index of the first sample that differs from the one before by more than tol, or -1."""
    moved = np.empty(len(x), dtype=bool)
    moved[0] = not abs(x[0] - prev) <= tol
    np.greater(np.abs(np.diff(x)), tol, out=moved[1:])
    k = int(np.argmax(moved))
    return k if moved[k] else -1
