"""The benchmark's signals: synthetic ECGs with a known alarm moment, and MIT-BIH records.

Every signal goes to the detector as a device sends it: a `streamer.core.Source` (raw int16
ADC values at the MIT-BIH gain), chunked and encoded by the streamer's own `BedStream`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.arrhythmia.reference import read_annotations, rhythm_intervals
from ecgcommon.aami import aami_class
from ecgcommon.records import Record
from streamer.core import MITDB_GAIN, Source

T0 = 1_700_000_000.0  # signal (= wall) time of a replay's first sample, unix s
FS = 360.0
# Reference beats (a perfect detector) are known this long after their R-peak: the detector's
# longest QRS decision delay (0.4 s) plus its window; the nurse acts on the same clock.
REFERENCE_LAG_S = 0.5
# MIT-BIH rhythm notes of a ventricular rhythm (the VT sanity check of the alarm load)
VENTRICULAR_RHYTHMS = ("(VT", "(VFL", "(IVR")


def synth_ecg(
    rrs: np.ndarray,
    fs: float,
    rng: np.random.Generator,
    tail_s: float,
    p_waves_after: float | None = None,
    p_rr: float = 0.9,
) -> tuple[np.ndarray, np.ndarray]:
    """A sum-of-Gaussians PQRST ECG (mV) with beats at the cumulative RR intervals, then
    `tail_s` seconds with no QRS. After `p_waves_after` s, P waves alone go on every `p_rr` s
    (ventricular standstill). Returns the signal and the R-peak times (s)."""
    peaks = np.cumsum(rrs) + 0.5
    n = int((peaks[-1] + tail_s) * fs)
    t = np.arange(n) / fs
    x = 0.04 * np.sin(2 * np.pi * 0.2 * t + rng.uniform(0, 6.3))  # baseline wander
    x += rng.normal(0.0, 0.012, n)  # noise
    amp = rng.uniform(0.8, 1.4)
    for i, r in enumerate(peaks):
        rr = rrs[i] if i < len(rrs) else rrs[-1]
        sq = math.sqrt(min(max(rr, 0.3), 1.5))
        waves = (
            (-0.16 * sq, 0.12, 0.022),
            (-0.035, -0.12, 0.010),
            (0.0, 1.0, 0.011),
            (0.035, -0.25, 0.011),
            (0.27 * sq, 0.28, 0.045 * sq),
        )
        lo, hi = int((r - 0.35) * fs), int((r + 0.5) * fs)
        seg = t[max(lo, 0) : min(hi, n)]
        for mu, a, w in waves:
            x[max(lo, 0) : min(hi, n)] += amp * a * np.exp(-0.5 * ((seg - r - mu) / w) ** 2)
    if p_waves_after is not None:
        for p in np.arange(p_waves_after, t[-1] - 0.2, p_rr):
            lo, hi = int((p - 0.1) * fs), int((p + 0.1) * fs)
            seg = t[max(lo, 0) : min(hi, n)]
            x[max(lo, 0) : min(hi, n)] += amp * 0.12 * np.exp(-0.5 * ((seg - p) / 0.022) ** 2)
    return x, peaks


def peaks_end(rrs: np.ndarray) -> float:
    """The time (s) of the last R-peak `synth_ecg` puts at these RR intervals."""
    return float(np.sum(rrs) + 0.5)


def asystole_signal(
    rng: np.random.Generator, sinus_s: float = 30.0, p_waves: bool = False
) -> tuple[np.ndarray, float]:
    """Sinus rhythm at 60-90 bpm, then 10 s of asystole: baseline wander and noise (not a flat
    lead), with P waves going on when `p_waves` (ventricular standstill). Returns the signal
    and the time (s) the 4 s asystole criterion is met."""
    hr = rng.uniform(60, 90)
    rrs = rng.normal(60 / hr, 0.02, int(sinus_s * hr / 60)).clip(0.5, 1.2)
    x, peaks = synth_ecg(
        rrs, FS, rng, tail_s=10.0, p_waves_after=peaks_end(rrs) + 0.6 if p_waves else None
    )
    return x, float(peaks[-1]) + 4.0


def tachy_signal(
    rng: np.random.Generator, bpm: float = 160.0, sinus_s: float = 30.0
) -> tuple[np.ndarray, float]:
    """Sinus rhythm at 65-85 bpm, then a sudden tachycardia at `bpm` for 20 s. Returns the
    signal and the onset (s): the R-peak of the first early beat."""
    hr = rng.uniform(65, 85)
    n1 = int(sinus_s * hr / 60)
    rrs = np.concatenate(
        [
            rng.normal(60 / hr, 0.02, n1).clip(0.55, 1.2),
            rng.normal(60 / bpm, 0.005, int(20 * bpm / 60)),
        ]
    )
    x, peaks = synth_ecg(rrs, FS, rng, tail_s=1.0)
    return x, float(peaks[n1])


def device_source(name: str, x_mv: np.ndarray, fs: float = FS) -> Source:
    """A synthetic lead (mV) as the streamer's device source: raw int16 at the MIT-BIH gain."""
    raw = np.clip(np.rint(np.asarray(x_mv) * MITDB_GAIN), -32767, 32767).astype(np.int16)
    return Source(name, fs, MITDB_GAIN, "mV", ("MLII",), raw[:, None])


@dataclass(frozen=True)
class ReferenceBeats:
    """A record's annotated beats (AAMI classes): what a perfect detector would publish."""

    t: np.ndarray  # R-peak times, s from the record's start
    anomalous: np.ndarray  # bool: not AAMI class N


def reference_beats(rec: Record) -> ReferenceBeats:
    """The beats of a record's reference annotations (non-beat labels left out)."""
    if rec.ann_samples is None or rec.ann_symbols is None:
        raise ValueError(f"record {rec.name}: no reference annotations loaded")
    classes = [aami_class(s) for s in rec.ann_symbols]
    keep = np.array([c is not None for c in classes], dtype=bool)
    anomalous = np.array([c != "N" for c, k in zip(classes, keep, strict=True) if k], dtype=bool)
    return ReferenceBeats(rec.ann_samples[keep] / rec.fs, anomalous)


def ventricular_episodes(rec: Record, data_dir: Path, min_beats: int) -> list[tuple[float, float]]:
    """Annotated ventricular rhythm episodes (s from the start) holding at least `min_beats`
    annotated beats: long enough for the policy's VT criterion."""
    ann = read_annotations(rec.name, data_dir, rec.duration_s)
    beat_t = rec.ann_samples / rec.fs if rec.ann_samples is not None else np.zeros(0)
    return [
        (a, b)
        for note, a, b in rhythm_intervals(ann)
        if note in VENTRICULAR_RHYTHMS
        and np.count_nonzero((beat_t >= a) & (beat_t < b)) >= min_beats
    ]
