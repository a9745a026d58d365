"""The one beat-windowing function shared by training, evaluation and the live detector.

A beat window is the signal from `pre_s` before to `post_s` after an R-peak, resampled onto the
model's grid (`fs` Hz, `n_points` points) by linear interpolation and normalised per beat using
only the window's own samples. Interpolation weights depend only on the offset from the peak,
never on the peak's absolute index, so a live ring buffer and an offline record give bit-identical
windows as long as both hold `pre_samples(fs)` samples before and `post_samples(fs)` after the peak.

Edges: a window that runs past either end of the signal is edge-padded (the first/last sample is
repeated). The live detector never needs this: it windows a beat only once `post_samples(fs)`
samples after the peak have arrived. NaN samples (signal gaps) propagate: the row comes back with
NaN in it and the caller must drop it (`np.isfinite(w).all(axis=1)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Floor of the per-beat standard deviation (in signal units, mV): a flat window stays flat (zeros)
# instead of amplifying noise by a huge factor.
STD_FLOOR = 0.01
# "zscore" is the model's; "minmax" ((x - min) / max(max - min, STD_FLOOR)) is the seed baseline's.
NORMALISATIONS = ("zscore", "minmax")


@dataclass(frozen=True)
class WindowSpec:
    """Where a beat window sits around its R-peak and the grid the model sees."""

    pre_s: float = 0.24  # seconds before the R-peak (first point at -pre_s)
    post_s: float = 0.40  # seconds after the R-peak (last point at post_s - 1/fs)
    fs: float = 100.0  # the model's sampling rate, Hz
    normalisation: str = "zscore"  # "zscore": (x - mean) / max(std, STD_FLOOR); or "minmax"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.pre_s) and self.pre_s >= 0):
            raise ValueError(f"pre_s must be a finite number >= 0, got {self.pre_s!r}")
        if not (math.isfinite(self.post_s) and self.post_s > 0):
            raise ValueError(f"post_s must be a finite number > 0, got {self.post_s!r}")
        if not (math.isfinite(self.fs) and self.fs > 0):
            raise ValueError(f"fs must be a finite number > 0 Hz, got {self.fs!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}"
            )
        if self.n_points < 2:
            raise ValueError(f"window spans fewer than 2 points at fs={self.fs} Hz")

    @property
    def pre_points(self) -> int:
        """Model-grid points before the R-peak (the peak itself is point `pre_points`)."""
        return round(self.pre_s * self.fs)

    @property
    def n_points(self) -> int:
        """Length of a window on the model grid."""
        return round((self.pre_s + self.post_s) * self.fs)

    def offsets(self, fs: float) -> np.ndarray:
        """Offsets from the peak, in samples at rate `fs`, of the model-grid points."""
        return _offsets(self.pre_points, self.n_points, float(self.fs), float(fs))

    def pre_samples(self, fs: float) -> int:
        """Samples at rate `fs` a window needs before its peak."""
        return int(max(0, -math.floor(float(self.offsets(fs)[0]))))

    def post_samples(self, fs: float) -> int:
        """Samples at rate `fs` a window needs after its peak (peak not counted)."""
        return int(max(0, math.ceil(float(self.offsets(fs)[-1]))))

    def as_dict(self) -> dict[str, float | int | str]:
        """The spec as recorded in the model manifest."""
        return {
            "pre_s": self.pre_s,
            "post_s": self.post_s,
            "fs": self.fs,
            "n_points": self.n_points,
            "pre_points": self.pre_points,
            "normalisation": self.normalisation,
            "std_floor": STD_FLOOR,
            "interpolation": "linear",
            "edges": "edge-padded",
        }


@lru_cache(maxsize=32)
def _offsets(pre_points: int, n_points: int, model_fs: float, fs: float) -> np.ndarray:
    out = (np.arange(n_points, dtype=np.float64) - pre_points) * (fs / model_fs)
    out.setflags(write=False)
    return out


WINDOW = WindowSpec()


def beat_windows(
    signal: np.ndarray, peaks: np.ndarray, fs: float, spec: WindowSpec = WINDOW
) -> np.ndarray:
    """Windows around `peaks` (sample indices into the 1-D `signal` at `fs` Hz).

    Returns float32 of shape (len(peaks), spec.n_points), each row normalised on its own samples.
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"signal must be 1-D, got shape {x.shape}")
    if x.size == 0:
        raise ValueError("signal is empty")
    if not (math.isfinite(fs) and fs > 0):
        raise ValueError(f"fs must be a finite number > 0 Hz, got {fs!r}")
    p = np.asarray(peaks)
    if p.ndim != 1:
        raise ValueError(f"peaks must be 1-D, got shape {p.shape}")
    if p.size and not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"peaks must be integer sample indices, got dtype {p.dtype}")
    p = p.astype(np.int64)
    if p.size == 0:
        return np.zeros((0, spec.n_points), dtype=np.float32)

    base, frac, rest, on_sample = _weights(spec, float(fs))
    i0 = p[:, None] + base[None, :]
    i1 = i0 + 1
    last = x.size - 1
    a = x[np.clip(i0, 0, last)]
    b = x[np.clip(i1, 0, last)]
    # frac == 0 exactly on points that fall on a sample: take it as is (no 0 * NaN/edge mixing).
    w = np.where(on_sample, a, a * rest + b * frac)
    if spec.normalisation == "minmax":
        lo = w.min(axis=1, keepdims=True)
        span = np.maximum(w.max(axis=1, keepdims=True) - lo, STD_FLOOR)
        return ((w - lo) / span).astype(np.float32)
    # = w.mean(axis=1, keepdims=True) and w.std(...): the ufunc reduce calls numpy's methods
    # make (numpy/_core/_methods.py), bit for bit, without their Python layers (once per batch)
    n = w.shape[1]
    mean = np.add.reduce(w, axis=1, keepdims=True) / n
    c = w - mean
    std = np.maximum(np.sqrt(np.add.reduce(c * c, axis=1, keepdims=True) / n), STD_FLOOR)
    return (c / std).astype(np.float32)


@lru_cache(maxsize=32)
def _weights(spec: WindowSpec, fs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(floor of the offsets as int64, frac, 1 - frac, frac == 0) of `spec` at rate `fs`."""
    off = spec.offsets(fs)
    base = np.floor(off)
    frac = off - base  # depends only on the offset: identical for every peak position
    out = (base.astype(np.int64), frac, 1.0 - frac, frac == 0.0)
    for arr in out:
        arr.setflags(write=False)
    return out
