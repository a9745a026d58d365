"""The beat-class data set: what the live detector finds in a record, labelled by EC57 matching.

`python -m detector.offline` runs the detector's run-time code over records and writes one
`.npz` file per record in this schema; `models/classify.py` trains on the files and
`models/evaluate_classes.py` scores the detector's classes against the reference annotations.
So models reads the detector's output through files, never its code. Numpy only.

A detected beat is labelled with the AAMI class of the reference beat within `MATCH_WINDOW_S`
(greedy nearest-first one-to-one matching, as EC57 does), or "" when it matches none (a false
detection).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgcommon.aami import aami_labels, beat_mask

MATCH_WINDOW_S = 0.15
ARRAYS = (  # the per-beat and per-reference-beat arrays of a RecordBeats file, in field order
    "samples",
    "segments",
    "rhythm",
    "errors",
    "refs",
    "scores",
    "labels",
    "ref_samples",
    "ref_labels",
    "ref_matched",
)


@dataclass(frozen=True)
class RecordBeats:
    """One record's detected beats with what the engine knows about them, and their labels."""

    name: str
    fs: float
    pre: int  # index of the R-peak in each segment
    samples: np.ndarray  # (n,) int64 R-peak sample of each detected beat
    segments: np.ndarray  # (n, S) float64 raw lead in mV (DetectedBeat.segment)
    rhythm: np.ndarray  # (n, 5) rr_s, rr_ratio, prev_ratio, short_ratio, valid
    errors: np.ndarray  # (n,) autoencoder error
    refs: np.ndarray  # (n,) PatientAdapter.reference() before the beat
    scores: np.ndarray  # (n,) anomaly score
    labels: np.ndarray  # (n,) AAMI class of the matched reference beat, "" when none
    ref_samples: np.ndarray  # (m,) reference beat samples
    ref_labels: np.ndarray  # (m,) their AAMI classes
    ref_matched: np.ndarray  # (m,) bool: some detection matched it
    feature_rows: np.ndarray | None = None  # (n, F) beat_classes.FEATURES, when computed

    def features(self) -> np.ndarray:
        """The (n, F) run-time beat-classifier features (ValueError when not computed)."""
        if self.feature_rows is None:
            raise ValueError(f"record {self.name}: no features (run python -m detector.offline)")
        return self.feature_rows

    def save(self, path: Path) -> None:
        """Write atomically (a temporary file renamed), so readers never see half a file."""
        arrays = {k: getattr(self, k) for k in ARRAYS}
        if self.feature_rows is not None:
            arrays["features"] = self.feature_rows
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, fs=self.fs, pre=self.pre, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, name: str) -> RecordBeats:
        """Read a file written by `save` (features None when it has none)."""
        with np.load(path, allow_pickle=False) as z:
            feats = z["features"] if "features" in z.files else None
            return cls(
                name,
                float(z["fs"]),
                int(z["pre"]),
                samples=z["samples"],
                segments=z["segments"],
                rhythm=z["rhythm"],
                errors=z["errors"],
                refs=z["refs"],
                scores=z["scores"],
                labels=z["labels"],
                ref_samples=z["ref_samples"],
                ref_labels=z["ref_labels"],
                ref_matched=z["ref_matched"],
                feature_rows=feats,
            )


def match(ref: np.ndarray, det: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(index of the matched reference beat per detection or -1, matched flag per reference).

    Greedy nearest-first one-to-one matching within `window` samples (EC57 style).
    """
    det_match = np.full(det.size, -1, dtype=np.int64)
    ref_used = np.zeros(ref.size, dtype=bool)
    if ref.size == 0 or det.size == 0:
        return det_match, ref_used
    j = np.searchsorted(ref, det)
    pairs = []
    for i, k in enumerate(j.tolist()):
        for c in (k - 1, k):
            if 0 <= c < ref.size and abs(int(ref[c]) - int(det[i])) <= window:
                pairs.append((abs(int(ref[c]) - int(det[i])), i, c))
    for _, i, c in sorted(pairs):
        if det_match[i] < 0 and not ref_used[c]:
            det_match[i] = c
            ref_used[c] = True
    return det_match, ref_used


def reference_beats(ann_samples: np.ndarray, ann_symbols: np.ndarray) -> tuple[np.ndarray, ...]:
    """(reference beat samples in time order, their AAMI classes) of a record's annotations."""
    mask = beat_mask(ann_symbols)
    ref = ann_samples[mask].astype(np.int64)
    labels = aami_labels(ann_symbols[mask])
    order = np.argsort(ref, kind="stable")
    return ref[order], labels[order]
