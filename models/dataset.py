"""Beat datasets from annotated WFDB records: windows, AAMI labels, causal RR features.

Beats are centred on the reference R-peaks and windowed by `ecgcommon.windowing.beat_windows`,
the function the live detector uses. Results are cached as .npz under var/cache (gitignored).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ecgcommon.aami import aami_labels, beat_mask
from ecgcommon.records import Record, data_file_hashes, load_record, resolve_data_dir
from ecgcommon.rhythm import rhythm_features
from ecgcommon.windowing import WINDOW, WindowSpec, beat_windows

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = PROJECT_ROOT / "var" / "cache"
PREFERRED_LEADS = ("MLII", "ML2", "II", "ECG")


@dataclass(frozen=True)
class BeatSet:
    """Beats of several records, in time order within each record."""

    windows: np.ndarray  # (n, L) float32
    labels: np.ndarray  # (n,) AAMI class letter: N S V F Q
    rhythm: np.ndarray  # (n, 3) float64 RhythmFeatures.as_array() (causal)
    records: np.ndarray  # (n,) record name of each beat
    peaks: np.ndarray  # (n,) int64 R-peak sample index in its record

    def __len__(self) -> int:
        return int(self.labels.size)

    def select(self, mask: np.ndarray) -> BeatSet:
        """A subset (order kept)."""
        return BeatSet(
            self.windows[mask],
            self.labels[mask],
            self.rhythm[mask],
            self.records[mask],
            self.peaks[mask],
        )


def primary_lead(record: Record) -> int:
    """Index of the limb lead (MLII) when the record names one, else lead 0."""
    for name in PREFERRED_LEADS:
        if name in record.lead_names:
            return record.lead_names.index(name)
    return 0


def record_beats(record: Record, spec: WindowSpec = WINDOW) -> BeatSet:
    """Every annotated beat of one record (all AAMI classes; RR features over all beats)."""
    if record.ann_samples is None or record.ann_symbols is None:
        raise ValueError(f"record {record.name} has no annotations")
    mask = beat_mask(record.ann_symbols)
    peaks = record.ann_samples[mask]
    order = np.argsort(peaks, kind="stable")
    peaks = peaks[order]
    labels = aami_labels(record.ann_symbols[mask])[order]
    keep = np.concatenate([[True], np.diff(peaks) > 0])  # drop duplicate annotation times
    peaks, labels = peaks[keep], labels[keep]
    windows = beat_windows(record.lead(primary_lead(record)), peaks, record.fs, spec)
    rhythm = rhythm_features(peaks, record.fs)
    return BeatSet(windows, labels, rhythm, np.full(peaks.size, record.name), peaks)


def concat(sets: Sequence[BeatSet]) -> BeatSet:
    """Concatenate beat sets (record order kept)."""
    return BeatSet(
        np.concatenate([s.windows for s in sets]),
        np.concatenate([s.labels for s in sets]),
        np.concatenate([s.rhythm for s in sets]),
        np.concatenate([s.records for s in sets]),
        np.concatenate([s.peaks for s in sets]),
    )


def load_beats(
    names: Sequence[str],
    data_dir: str | Path | None = None,
    spec: WindowSpec = WINDOW,
    cache: bool = True,
) -> BeatSet:
    """Beats of `names`, cached per record under var/cache keyed by data hash and spec."""
    folder = resolve_data_dir(data_dir)
    sets = []
    for name in names:
        key = hashlib.sha256(
            json.dumps(
                [data_file_hashes([name], folder), spec.as_dict(), 2], sort_keys=True
            ).encode()
        ).hexdigest()[:16]
        path = CACHE_DIR / f"beats-{name}-{key}.npz"
        if cache and path.is_file():
            z = np.load(path, allow_pickle=False)
            sets.append(BeatSet(**{f.name: z[f.name] for f in fields(BeatSet)}))
            continue
        beats = record_beats(load_record(name, folder), spec)
        if cache:
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, **{f.name: getattr(beats, f.name) for f in fields(BeatSet)})
            tmp.replace(path)
        sets.append(beats)
    return concat(sets)
