"""Beat shapes on the analysed lead and how alike the beats of a run are, sans-I/O.

Real VT repeats its complex: one ventricular focus fires beat after beat (an alternating or
bidirectional run repeats every other complex). The "beats" the QRS detector finds in
electrode-motion artifact are bumps of the noise, each unlike the ones before it, and the
quality index does not always flag that noise (nstdb-style `em` at 6 dB). So a VT run starts
only when it repeats its complexes (`run_consistency`: each beat's best correlation with one
of the two before it, on the band-passed lead, `t +- half_s`, aligned within `lag_s`; the
median over the run, every valid lead at once) by at least `min_corr`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from detector.rhythms.events import check_config
from detector.rhythms.stream import Decimated


@dataclass(frozen=True)
class ShapeConfig:
    """The complex around each beat and the consistency a doubtful run needs."""

    half_s: float = 0.12  # the complex: beat time +- this (wide VT complexes fit)
    lag_s: float = 0.02  # two beats' fiducial points may differ by this much
    min_corr: float = 0.85  # `run_consistency` of a run that repeats its complexes

    def __post_init__(self) -> None:
        check_config(self)
        if not self.min_corr < 1:
            raise ValueError("ShapeConfig.min_corr must be < 1")

    @property
    def after_s(self) -> float:
        """How far past a beat its complex reaches (its shape exists once this is decimated)."""
        return self.half_s + self.lag_s


def cut_leads(dec: Decimated, centre: int, config: ShapeConfig) -> np.ndarray | None:
    """The complex at decimated index `centre` on every lead, (lead, sample), lag margin
    included; a lead with invalid samples there is a row of nan. None when the complex is not
    (or no longer) wholly in the buffer."""
    n = int(round(config.half_s * dec.fs)) + int(round(config.lag_s * dec.fs))
    got = dec.window(centre + n + 1, 2 * n + 1)
    if got is None:
        return None
    y, ok = got
    out = np.array(y, dtype=np.float64)
    for k, good in enumerate(ok):
        if not good:
            out[k] = math.nan
    return out


def best_correlation(a: np.ndarray, b: np.ndarray, lag: int) -> float:
    """The highest Pearson correlation of `a`'s core (lag margin cut off) with `b` shifted by
    up to `lag` samples either way; nan when either is flat. For (lead, sample) complexes, the
    mean over the leads at one common shift (a beat's fiducial point moves on every lead at
    once); a lead flat in either complex does not count."""
    a2, b2 = np.atleast_2d(a), np.atleast_2d(b)
    n = a2.shape[-1] - 2 * lag
    if n < 3 or b2.shape != a2.shape:
        return math.nan
    x = a2[:, lag : lag + n] - a2[:, lag : lag + n].mean(axis=1, keepdims=True)
    xx = np.einsum("ij,ij->i", x, x)
    best = math.nan
    for k in range(2 * lag + 1):
        y = b2[:, k : k + n] - b2[:, k : k + n].mean(axis=1, keepdims=True)
        d = np.sqrt(xx * np.einsum("ij,ij->i", y, y))
        good = d > 0
        if good.any():
            r = float(np.mean(np.einsum("ij,ij->i", x, y)[good] / d[good]))
            best = r if math.isnan(best) else max(best, r)
    return best


def run_consistency(shapes: list[np.ndarray], lag: int) -> float:
    """How well a run repeats its complexes: for each beat after the first, its best
    correlation with either of the two beats before it (an alternating or bidirectional
    run repeats every other complex: mitdb 223's slow VT), the median over the run; nan when
    no beat can be compared. Multi-lead complexes ((lead, sample) each) are compared on all
    their leads at once (`best_correlation`)."""
    rs = []
    for i in range(1, len(shapes)):
        near = [best_correlation(shapes[i], shapes[j], lag) for j in range(max(0, i - 2), i)]
        near = [r for r in near if not math.isnan(r)]
        if near:
            rs.append(max(near))
    return float(np.median(rs)) if rs else math.nan


class ShapeBook:
    """The complexes of a bed's recent beats by beat time (bounded: the last `size`)."""

    def __init__(self, size: int = 64) -> None:
        self.order: deque[float] = deque()
        self.by_t: dict[float, np.ndarray] = {}
        self.size = size

    def put(self, t: float, shape: np.ndarray) -> None:
        if t in self.by_t:
            return
        self.order.append(t)
        self.by_t[t] = shape
        while len(self.order) > self.size:
            del self.by_t[self.order.popleft()]

    def get(self, t: float) -> np.ndarray | None:
        return self.by_t.get(t)

    def clear(self) -> None:
        self.order.clear()
        self.by_t.clear()
