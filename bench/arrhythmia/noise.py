"""Noise stress records as the MIT-BIH Noise Stress Test Database builds them (nst(1)).

Protocol: 5 min clean (the analyser's learning period), then 2 min noisy and 2 min clean in
turn to the end. Lead i gets noise channel i mod (noise channels) of the chosen nstdb noise
record (`em` electrode motion, `ma` muscle artifact, `bw` baseline wander), resampled to the
record's rate and rewound when the record is longer. The gain of each lead makes
SNR = 10 log10(S / N) dB during the noisy segments, with nst's definitions: S is the power of a
sinusoid with the QRS's peak-to-peak amplitude, (A_pp)^2 / 8, A_pp the mean over the annotated
normal beats (largest and smallest 5 % left out); N is the noise's mean power (mean square in
1 s windows, largest and smallest 5 % left out). As nst does, the offset is re-set at every gain
change so that the level does not step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import wfdb
from scipy.signal import resample_poly

from ecgcommon.records import DEFAULT_DATA_DIR

NOISE_DIR = DEFAULT_DATA_DIR.parent / "nstdb-noise"
NOISE_KINDS = ("em", "ma", "bw")
QRS_HALF_WINDOW_S = 0.06  # peak-to-peak measured within R +- 60 ms
TRIM = 0.05  # nst leaves out the largest and smallest 5 % of the measurements


@dataclass(frozen=True)
class NoiseProtocol:
    """nstdb's protocol: a clean learning period, then noisy / clean segments in turn."""

    clean_s: float = 300.0
    noisy_s: float = 120.0
    gap_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("clean_s", "noisy_s", "gap_s"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name}: must be a positive number of seconds, got {v!r}")

    def segments(self, duration_s: float) -> list[tuple[float, float]]:
        """The noisy segments [start, end) (s) of a record of this length."""
        out, t = [], self.clean_s
        while t < duration_s:
            out.append((t, min(t + self.noisy_s, duration_s)))
            t += self.noisy_s + self.gap_s
        return out


def load_noise(
    kind: str, fs: float, n_samples: int, noise_dir: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """(n_samples, channels) of an nstdb noise record in mV at `fs`, rewound as needed."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise: must be one of {NOISE_KINDS}, got {kind!r}")
    folder = Path(noise_dir) if noise_dir else NOISE_DIR
    rec = wfdb.rdrecord(str(folder / kind))
    x = np.asarray(rec.p_signal, dtype=np.float64)
    if abs(rec.fs - fs) > 1e-6:
        ratio = Fraction(fs / rec.fs).limit_denominator(1000)
        x = resample_poly(x, ratio.numerator, ratio.denominator, axis=0)
    x = x - x.mean(axis=0)
    reps = int(np.ceil(n_samples / x.shape[0]))
    return np.tile(x, (reps, 1))[:n_samples] if reps > 1 else x[:n_samples].copy()


def _trimmed_mean(values: np.ndarray) -> float:
    v = np.sort(np.asarray(values, dtype=np.float64))
    k = int(len(v) * TRIM)
    v = v[k : len(v) - k] if len(v) > 2 * k else v
    return float(v.mean()) if v.size else float("nan")


def qrs_amplitude(lead: np.ndarray, fs: float, beats: np.ndarray, normal: np.ndarray) -> float:
    """Mean QRS peak-to-peak amplitude (trimmed) over the normal beats (all beats if none)."""
    use = beats[normal] if normal.any() else beats
    h = max(1, int(round(QRS_HALF_WINDOW_S * fs)))
    amps = [np.ptp(lead[max(0, b - h) : b + h + 1]) for b in use if 0 <= b < lead.size]
    if not amps:
        raise ValueError("no annotated beat to measure the QRS amplitude on")
    return _trimmed_mean(np.asarray(amps))


def noise_power(noise: np.ndarray, fs: float) -> float:
    """Mean power of one noise channel: mean square in 1 s windows, trimmed."""
    n = max(1, int(round(fs)))
    k = noise.size // n
    if k == 0:
        return float(np.mean(noise**2))
    return _trimmed_mean((noise[: k * n].reshape(k, n) ** 2).mean(axis=1))


def snr_db(amplitude_pp: float, power: float) -> float:
    """nst's SNR: S = A_pp^2 / 8 against the noise power."""
    return float(10.0 * np.log10((amplitude_pp**2 / 8.0) / power))


@dataclass(frozen=True)
class Stressed:
    """A noise-stressed signal, its noisy segments and the gain of each lead."""

    signal: np.ndarray  # (n, leads) mV
    segments: list[tuple[float, float]]
    gains: tuple[float, ...]
    kind: str
    snr_db: float


def stress(
    signal: np.ndarray,
    fs: float,
    beats: np.ndarray,
    normal: np.ndarray,
    noise: np.ndarray,
    target_snr_db: float,
    protocol: NoiseProtocol = NoiseProtocol(),
    kind: str = "",
) -> Stressed:
    """The clean signal (n, leads) plus scaled noise (n, channels) in the noisy segments."""
    n, leads = signal.shape
    segments = protocol.segments(n / fs)
    out = signal.copy()
    gains = []
    for lead in range(leads):
        nz = noise[:, lead % noise.shape[1]]
        amp = qrs_amplitude(signal[:, lead], fs, beats, normal)
        power = noise_power(_used(nz, segments, fs), fs)  # of the noise that goes in
        gain = float(np.sqrt((amp**2 / 8.0) / (power * 10 ** (target_snr_db / 10))))
        gains.append(gain)
        offset = 0.0
        for start, end in segments:
            a, b = int(round(start * fs)), min(n, int(round(end * fs)))
            if b <= a:
                continue
            offset -= gain * nz[a]  # gain 0 -> g: no step at the start
            out[a:b, lead] += gain * nz[a:b] + offset
            offset += gain * nz[b - 1]  # gain g -> 0: the level carries on
            out[b:, lead] += offset if b < n else 0.0
            offset = 0.0  # carried into `out` already
    return Stressed(out, segments, tuple(gains), kind, float(target_snr_db))


def _used(x: np.ndarray, segments: list[tuple[float, float]], fs: float) -> np.ndarray:
    """The samples of `x` inside the segments, each segment's mean removed."""
    parts = [x[int(round(a * fs)) : int(round(b * fs))] for a, b in segments]
    parts = [p - p.mean() for p in parts if p.size]
    return np.concatenate(parts) if parts else x - x.mean()


def measured_snr_db(
    clean: np.ndarray, stressed: Stressed, fs: float, beats: np.ndarray, normal: np.ndarray
) -> list[float]:
    """The SNR of each lead measured back on the noisy segments (tests, the report)."""
    out = []
    for lead in range(clean.shape[1]):
        added = stressed.signal[:, lead] - clean[:, lead]
        amp = qrs_amplitude(clean[:, lead], fs, beats, normal)
        out.append(snr_db(amp, noise_power(_used(added, stressed.segments, fs), fs)))
    return out
