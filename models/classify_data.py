"""Beat-class data: each record through the live detector path, detections labelled by matching.

A record's lead 0 goes through `Pipeline.feed_signal` (the live QRS detector and beat
segments), `OnnxScorer` and `PatientAdapter` exactly as `DetectorEngine.score_signal` runs them;
each detected beat gets the AAMI class of the reference beat within 150 ms (EC57 matching), or
"" when it matches none (a false detection). The expensive part (pipeline, scorer, adapter) is
cached per record under var/cache; `detector.classifier.beat_features` runs on top of it, so
features always come from the current run-time code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.classifier import PatientClasses, beat_features
from detector.pipeline import DetectedBeat, Pipeline, windows_of
from ecgcommon.aami import aami_labels, beat_mask
from ecgcommon.model_contract.adapter import AnomalyConfig, PatientAdapter
from ecgcommon.model_contract.scorer import OnnxScorer
from ecgcommon.records import load_record, resolve_data_dir
from ecgcommon.rhythm import RhythmFeatures
from models.dataset import CACHE_DIR, data_file_hashes

MATCH_WINDOW_S = 0.15
_SOURCES = (  # code whose change invalidates the cache
    "detector/pipeline.py",
    "detector/qrs.py",
    "ecgcommon/model_contract/adapter.py",
    "ecgcommon/model_contract/features.py",
    "ecgcommon/rhythm.py",
)
_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RecordBeats:
    """One record's detected beats with what the engine knows about them, and their labels."""

    name: str
    fs: float
    pre: int
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

    def beats(self) -> list[DetectedBeat]:
        """The DetectedBeat objects again (segments and rhythm as the pipeline gave them)."""
        out = []
        for s, seg, r in zip(self.samples.tolist(), self.segments, self.rhythm, strict=True):
            rr = float(r[0])
            feats = RhythmFeatures(
                rr, float("nan"), float(r[1]), float(r[2]), float(r[3]), bool(r[4])
            )
            out.append(
                DetectedBeat(
                    s, s / self.fs, rr if rr == rr else None, None, feats, seg, self.fs, self.pre
                )
            )
        return out

    def features(self) -> np.ndarray:
        """`beat_features` of the whole record (one state, time order): the run-time features."""
        state = PatientClasses()
        beats = self.beats()
        return beat_features([state] * len(beats), beats, self.errors, self.refs, self.scores)


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


def run_record(
    name: str, data_dir: Path, scorer: OnnxScorer, anomaly: AnomalyConfig
) -> RecordBeats:
    """One record through the live path (lead 0, as the detector analyses it)."""
    rec = load_record(name, data_dir)
    if rec.ann_samples is None or rec.ann_symbols is None:
        raise ValueError(f"record {name} has no annotations")
    beats = Pipeline().feed_signal(rec.lead(0), rec.fs).beats
    windows = windows_of(beats)
    errors, _ = scorer.score(windows)
    adapter = PatientAdapter(anomaly)
    refs = np.empty(len(beats))
    scores = np.empty(len(beats))
    for i, (b, e, w) in enumerate(zip(beats, errors.tolist(), windows, strict=True)):
        refs[i] = adapter.reference()
        scores[i] = adapter.process(e, b.rhythm, w)
    mask = beat_mask(rec.ann_symbols)
    ref = rec.ann_samples[mask].astype(np.int64)
    ref_labels = aami_labels(rec.ann_symbols[mask])
    order = np.argsort(ref, kind="stable")
    ref, ref_labels = ref[order], ref_labels[order]
    samples = np.array([b.sample for b in beats], dtype=np.int64)
    det_match, used = match(ref, samples, round(MATCH_WINDOW_S * rec.fs))
    labels = np.where(det_match >= 0, ref_labels[np.maximum(det_match, 0)], "")
    rhythm = np.array(
        [
            [
                b.rhythm.rr_s,
                b.rhythm.rr_ratio,
                b.rhythm.prev_ratio,
                b.rhythm.short_ratio,
                float(b.rhythm.valid),
            ]
            for b in beats
        ],
        dtype=np.float64,
    ).reshape(-1, 5)
    pre = beats[0].pre if beats else 0
    segments = np.stack([b.segment for b in beats]) if beats else np.zeros((0, 1))
    return RecordBeats(
        name,
        float(rec.fs),
        pre,
        samples,
        segments,
        rhythm,
        errors.astype(np.float64),
        refs,
        scores,
        labels.astype("<U1"),
        ref,
        ref_labels,
        used,
    )


def _key(name: str, folder: Path, scorer: OnnxScorer) -> str:
    code = [hashlib.sha256((_ROOT / p).read_bytes()).hexdigest() for p in _SOURCES]
    blob = [data_file_hashes([name], folder), scorer.manifest["model_sha256"], code, 1]
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def load_records(
    names: Sequence[str],
    data_dir: str | Path | None = None,
    model_dir: Path | None = None,
    cache: bool = True,
) -> list[RecordBeats]:
    """`run_record` of each name, cached under var/cache keyed by data, model and code."""
    folder = resolve_data_dir(data_dir)
    scorer = OnnxScorer(model_dir)
    anomaly = AnomalyConfig.from_manifest(scorer.manifest)
    out = []
    for name in names:
        path = CACHE_DIR / f"classes-{name}-{_key(name, folder, scorer)}.npz"
        if cache and path.is_file():
            z = np.load(path, allow_pickle=False)
            out.append(
                RecordBeats(
                    name,
                    float(z["fs"]),
                    int(z["pre"]),
                    *(
                        z[k]
                        for k in (
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
                    ),
                )
            )
            continue
        rb = run_record(name, folder, scorer, anomaly)
        if cache:
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(
                tmp,
                fs=rb.fs,
                pre=rb.pre,
                samples=rb.samples,
                segments=rb.segments,
                rhythm=rb.rhythm,
                errors=rb.errors,
                refs=rb.refs,
                scores=rb.scores,
                labels=rb.labels,
                ref_samples=rb.ref_samples,
                ref_labels=rb.ref_labels,
                ref_matched=rb.ref_matched,
            )
            tmp.replace(path)
        out.append(rb)
    return out
