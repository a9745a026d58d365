"""Waveform features of one analysis window for ventricular fibrillation / flutter detection.

Every feature is computed from the band-passed window alone (see `stream.py`), in physical
units (s, Hz, mV), so it does not depend on the sampling rate or on how the samples arrived.
The features are the established ones of the VF-detection literature (compared by Amann 2005
and Arafat 2011):

- `tcsc`: threshold crossing sample count (Arafat 2011): share of samples of the band-passed,
  max-normalised window whose magnitude exceeds 0.2 (VF: high, sinus: low, QRS are narrow).
- `leakage`: VF filter leakage (Kuo & Dillman 1978): a VF window is close to a sine wave, so a
  notch filter at its mean frequency leaves little (VF: low).
- `a2`, `m`: spectral algorithm (Barro 1989): power share in 0.7..1.4 times the peak frequency
  (VF: high) and the normalised first spectral moment (VF: low).
- `peak_hz`: the dominant frequency in 0.5..9 Hz.
- `hf`: power share above 12 Hz (QRS and muscle noise have it, VF little).
- `kurt`: kurtosis of the band-passed window (spiky QRS: high, VF: near a sine's 1.5).
- `amp_mv`: robust peak-to-peak amplitude (5..95 % range) to tell fine VF from asystole.
- `psr`: phase-space reconstruction (Amann 2007): share of the cells of a 40 x 40 grid over
  (x(t), x(t - 0.5 s)) that the trajectory visits (VF fills the plane, a QRS rhythm draws a
  thin loop).
- `dkurt`: kurtosis of the first difference (steep QRS upstrokes make it spiky, VF is smooth).
- `spread` (signal quality, not VF): interquartile range over the full range; a clean ECG
  spends most of its time near the baseline between narrow QRS complexes (small), noise fills
  the gaps (larger).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FEATURES = ("tcsc", "leakage", "a2", "m", "peak_hz", "hf", "kurt", "amp_mv", "psr", "dkurt")
QUALITY = ("spread",)  # computed with them, for detector.quality only

_PLAN: dict[tuple[int, float], tuple] = {}

try:  # numpy's FFT kernel itself (private, stable since numpy 2.0); np.fft.rfft around it
    from numpy.fft._pocketfft_umath import rfft_n_even as _rfft_even
except ImportError:  # pragma: no cover - depends on the numpy version
    _rfft_even = None


def _rfft(x: np.ndarray, nfft: int) -> np.ndarray:
    """`np.fft.rfft(x, nfft)` of a 1-D float64 x for an even nfft (zero-padded or cut to it):
    the same kernel and arguments, without the wrapper's per-call Python (checks, dtypes)."""
    if _rfft_even is None or nfft % 2:  # pragma: no cover
        return np.fft.rfft(x, nfft)
    return _rfft_even(x, 1, out=np.empty(nfft // 2 + 1, dtype=np.complex128))


def _plan(n: int, fs: float) -> tuple:
    """Per (window length, rate): taper, spectral window, FFT size, frequency grid and the
    bands as slices of it (cached)."""
    plan = _PLAN.get((n, fs))
    if plan is None:
        taper = np.ones(n)
        k = min(n // 2, int(round(0.25 * fs)))
        if k > 0:
            ramp = 0.5 * (1 - np.cos(np.pi * np.arange(k) / k))
            taper[:k], taper[n - k :] = ramp, ramp[::-1]
        nfft = 1 << int(math.ceil(math.log2(max(n, 2 * fs))))
        f = np.fft.rfftfreq(nfft, 1.0 / fs)
        # every band is a contiguous run of the grid: slices, not masks (no copies)
        band = _run(f, 0.5, 9.0)
        wide = _run(f, 0.5, min(40.0, 0.5 * fs))
        high = slice(max(wide.start, int(np.searchsorted(f, 12.0))), wide.stop)
        plan = (taper, np.hamming(n), nfft, f, band, wide, high)
        if len(_PLAN) < 64:
            _PLAN[(n, fs)] = plan
    return plan


def _run(f: np.ndarray, lo: float, hi: float) -> slice:
    """The indices of the sorted grid `f` within [lo, hi], as a slice."""
    idx = np.flatnonzero((f >= lo) & (f <= hi))
    return slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0)


@dataclass(frozen=True)
class VFFeatures:
    """Features of one window (see the module docstring)."""

    tcsc: float
    leakage: float
    a2: float
    m: float
    peak_hz: float
    hf: float
    kurt: float
    amp_mv: float
    psr: float = 0.0
    dkurt: float = 0.0
    spread: float = 0.0

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, f) for f in FEATURES], dtype=np.float64)


def centred(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A window minus its mean, and the same sorted: what `screen` and `vf_features` share
    (the analyser computes it once per window for both)."""
    y = np.asarray(y, dtype=np.float64)
    y = y - np.add.reduce(y) / y.size  # = y.mean(), without its Python overhead
    return y, np.sort(y)


def vf_features(
    y: np.ndarray, fs: float, pre: tuple[np.ndarray, np.ndarray] | None = None
) -> VFFeatures:
    """Features of one finite, band-passed (about 1..35 Hz) window `y` (mV) at `fs` Hz;
    `pre`: `centred(y)` when the caller has it already."""
    n = y.size
    taper, hamming, nfft, f, band, wide, high = _plan(n, fs)
    y, srt = centred(y) if pre is None else pre
    add = np.add.reduce  # ndarray.sum() without its Python wrapper (the same summation)
    amp = float(srt[int(0.95 * (n - 1))] - srt[int(0.05 * (n - 1))])
    peak = max(-float(srt[0]), float(srt[-1]))
    if not peak > 0 or not math.isfinite(peak):
        return VFFeatures(0.0, 1.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0)
    # TCSC: cosine taper of 0.25 s at both ends, then the share above 0.2 of the maximum
    ay = np.abs(y)
    z = ay * taper  # = np.abs(y * taper) bit for bit: the taper is >= 0
    tcsc = float(np.count_nonzero(z > 0.2 * np.maximum.reduce(z))) / n
    # VF filter leakage: half period N from the mean absolute slope
    sa = float(add(ay))
    dy = y[1:] - y[:-1]  # = np.diff(y)
    d = float(add(np.abs(dy)))
    half = int(math.floor(math.pi * sa / max(d, 1e-12) + 0.5))
    if 1 <= half < n:
        num = float(add(np.abs(y[half:] + y[:-half])))
        den = 2 * sa - float(add(ay[:half])) - float(add(ay[n - half :]))
        leakage = num / den if den > 0 else 1.0
    else:
        leakage = 1.0
    # spectrum (Hamming window)
    z_spec = _rfft(y * hamming, nfft)
    spec = z_spec.real**2 + z_spec.imag**2
    peak_hz = float(f[band.start + int(spec[band].argmax())])
    top = min(100.0, 20 * max(peak_hz, 0.5), 0.5 * fs)
    i0, i1 = band.start, int(f.searchsorted(top, side="right"))
    total = float(add(spec[i0:i1]))
    var = float(y @ y) / n
    if total <= 0 or var <= 0:
        return VFFeatures(tcsc, leakage, 0.0, 10.0, peak_hz, 0.0, 0.0, amp, 0.0, 0.0, 0.0)
    j0 = int(f.searchsorted(0.7 * peak_hz))
    j1 = int(f.searchsorted(1.4 * peak_hz, side="right"))
    a2 = float(add(spec[j0:j1])) / total
    m = float(f[i0:i1] @ spec[i0:i1]) / total / max(peak_hz, 0.5)
    hf = float(add(spec[high])) / max(float(add(spec[wide])), 1e-300)
    y2 = y * y
    kurt = float(y2 @ y2) / n / (var * var)
    # phase space: 40 x 40 cells over the window's range, delay 0.5 s
    lag = int(round(0.5 * fs))
    lo, span = float(srt[0]), float(srt[-1] - srt[0])
    cells = np.minimum(((y - lo) * (40.0 / span)).astype(np.int64), 39) if span > 0 else None
    psr = 0.0
    if cells is not None and lag < n:
        psr = np.count_nonzero(np.bincount(cells[lag:] * 40 + cells[:-lag], minlength=1600)) / 1600
    dv = float(dy @ dy) / dy.size
    dy2 = dy * dy
    dkurt = float(dy2 @ dy2) / dy.size / (dv * dv) if dv > 0 else 0.0
    spread = float(srt[(3 * (n - 1)) // 4] - srt[(n - 1) // 4]) / span if span > 0 else 0.0
    return VFFeatures(tcsc, leakage, a2, m, peak_hz, hf, kurt, amp, psr, dkurt, spread)


def screen(
    y: np.ndarray, pre: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[float, float, float]:
    """(amp_mv, spread, kurt) of a window as `vf_features` computes them, at a fraction of its
    cost: enough to see that a window is an ordinary clean ECG (see the analyser); `pre`:
    `centred(y)` when the caller has it already."""
    n = y.size
    y, srt = centred(y) if pre is None else pre
    span = float(srt[-1] - srt[0])
    amp = float(srt[int(0.95 * (n - 1))] - srt[int(0.05 * (n - 1))])
    spread = float(srt[(3 * (n - 1)) // 4] - srt[(n - 1) // 4]) / span if span > 0 else 0.0
    y2 = y * y
    var = float(np.add.reduce(y2)) / n
    kurt = float(y2 @ y2) / n / (var * var) if var > 0 else 0.0
    return amp, spread, kurt
