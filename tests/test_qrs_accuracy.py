"""Accuracy floors for the QRS detector on hard MIT-BIH records, fed live in 100 ms chunks.

Floors sit a little below what `make eval-qrs RECORDS="105 108 203 207 208 222"` measures
(see reports/qrs.json), so a real regression fails while the figures themselves live in the
report, not here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb.processing as wp
from scipy.signal import resample_poly

from detector.evaluate_qrs import MATCH_WINDOW_S, run_detector
from detector.qrs import QRSConfig
from ecgcommon.aami import beat_mask
from ecgcommon.records import load_record

# record: (Se floor, +P floor), fractions. 105: heavy noise; 108: tall P waves, big T waves;
# 203: multiform ventricular runs; 207: ventricular flutter, bundle-branch block;
# 208: many PVCs and couplets; 222: atrial flutter/fibrillation, noise.
FLOORS = {
    "105": (0.990, 0.983),
    "108": (0.993, 0.990),
    "203": (0.978, 0.992),
    "207": (0.995, 0.900),
    "208": (0.992, 0.996),
    "222": (0.995, 0.994),
}


def score(name: str, data_dir: Path, resample_hz: float | None = None) -> tuple[int, int, int]:
    """(TP, FN, FP) of lead 0 against the reference beats, matched within 150 ms."""
    rec = load_record(name, data_dir)
    assert rec.ann_samples is not None and rec.ann_symbols is not None
    x, fs = rec.lead(0), rec.fs
    ref = rec.ann_samples[beat_mask(rec.ann_symbols)]
    if resample_hz:
        up, down = int(resample_hz), int(fs)
        x = resample_poly(x, up, down)
        ref = np.round(ref * up / down).astype(np.int64)
        fs = float(resample_hz)
    peaks, delays, _ = run_detector(x, fs, QRSConfig())
    assert delays.max() <= QRSConfig().max_delay_s + 0.1 + 1 / fs
    cmp = wp.compare_annotations(ref, peaks, round(MATCH_WINDOW_S * fs))
    return int(cmp.tp), int(cmp.fn), int(cmp.fp)


@pytest.fixture(scope="module")
def hard(data_dir: Path) -> dict[str, tuple[int, int, int]]:
    return {name: score(name, data_dir) for name in FLOORS}


@pytest.mark.slow  # the module fixture runs the detector over whole records (seconds)
@pytest.mark.parametrize("name", sorted(FLOORS))
def test_hard_record_accuracy_floor(hard: dict[str, tuple[int, int, int]], name: str) -> None:
    tp, fn, fp = hard[name]
    se_floor, ppv_floor = FLOORS[name]
    assert tp / (tp + fn) >= se_floor, f"{name}: Se {tp / (tp + fn):.4f} < {se_floor}"
    assert tp / (tp + fp) >= ppv_floor, f"{name}: +P {tp / (tp + fp):.4f} < {ppv_floor}"


@pytest.mark.slow
def test_hard_records_pooled(hard: dict[str, tuple[int, int, int]]) -> None:
    tp, fn, fp = (sum(v[i] for v in hard.values()) for i in range(3))
    assert tp / (tp + fn) >= 0.992
    assert tp / (tp + fp) >= 0.982


@pytest.mark.parametrize(
    ("name", "hz", "se_floor", "ppv_floor"),
    [
        ("100", 128, 0.998, 0.998),
        ("100", 500, 0.998, 0.998),
        ("208", 100, 0.992, 0.995),
        ("208", 1000, 0.992, 0.995),
    ],
)
def test_resampled_records_are_still_detected(
    data_dir: Path, name: str, hz: int, se_floor: float, ppv_floor: float
) -> None:
    tp, fn, fp = score(name, data_dir, hz)
    assert tp / (tp + fn) >= se_floor
    assert tp / (tp + fp) >= ppv_floor
