"""The live detector run offline over whole records, writing `model_contract.beat_data` files.

    python -m detector.offline beats --records 101 106 --out-dir DIR [--cache-dir var/cache]
    python -m detector.offline classes --records 100 103 --out-dir DIR [--cache-dir var/cache]

`beats`: each record's lead 0 goes through `Pipeline.feed_signal` (the live QRS detector and
beat segments), `OnnxScorer` and `PatientAdapter` exactly as `DetectorEngine.score_signal`
runs them; each detected beat gets the AAMI class of the matched reference beat, and
`detector.classifier.beat_features` (one state, time order) gives its classifier features.
The expensive part (pipeline, scorer, adapter) is cached per record under `--cache-dir`, keyed
by data, model and code; the features always come from the current run-time code.

`classes`: each record through `DetectorEngine.score_signal` (the committed autoencoder and
beat classifier): the detected beats' samples and classes, and the classifier's CPU cost.

Both print a JSON index of the files written on stdout. This is how `models/` (training and
evaluation) gets the detector's output without importing it: files in the contract's schema.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from detector.classifier import BeatClassifier, PatientClasses, beat_features
from detector.engine import DetectorEngine
from detector.metrics import DetectorMetrics
from detector.pipeline import DetectedBeat, Pipeline, windows_of
from ecgcommon.model_contract.adapter import AnomalyConfig, PatientAdapter
from ecgcommon.model_contract.beat_data import MATCH_WINDOW_S, RecordBeats, match, reference_beats
from ecgcommon.model_contract.manifest import DEFAULT_MODEL_DIR
from ecgcommon.model_contract.scorer import OnnxScorer
from ecgcommon.records import Record, data_file_hashes, load_record, resolve_data_dir
from ecgcommon.rhythm import RhythmFeatures

_ROOT = Path(__file__).resolve().parent.parent
_SOURCES = (  # code whose change invalidates the cached pipeline part
    "detector/pipeline.py",
    "detector/qrs.py",
    "ecgcommon/model_contract/adapter.py",
    "ecgcommon/model_contract/features.py",
    "ecgcommon/rhythm.py",
)


def _reference(name: str, data_dir: Path) -> tuple[Record, np.ndarray, np.ndarray]:
    """(record, reference beat samples sorted, their AAMI classes)."""
    rec = load_record(name, data_dir)
    if rec.ann_samples is None or rec.ann_symbols is None:
        raise ValueError(f"record {name} has no annotations")
    ref, labels = reference_beats(rec.ann_samples, rec.ann_symbols)
    return rec, ref, labels


def _rhythm_rows(beats: Sequence[DetectedBeat]) -> np.ndarray:
    rows = [
        [r.rr_s, r.rr_ratio, r.prev_ratio, r.short_ratio, float(r.valid)]
        for r in (b.rhythm for b in beats)
    ]
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def run_record(
    name: str, data_dir: Path, scorer: OnnxScorer, anomaly: AnomalyConfig
) -> RecordBeats:
    """One record through the live path (lead 0, as the detector analyses it); no features."""
    rec, ref, ref_labels = _reference(name, data_dir)
    beats = Pipeline().feed_signal(rec.lead(0), rec.fs).beats
    windows = windows_of(beats)
    errors, _ = scorer.score(windows)
    adapter = PatientAdapter(anomaly)
    refs = np.empty(len(beats))
    scores = np.empty(len(beats))
    for i, (b, e, w) in enumerate(zip(beats, errors.tolist(), windows, strict=True)):
        refs[i] = adapter.reference()
        scores[i] = adapter.process(e, b.rhythm, w)
    samples = np.array([b.sample for b in beats], dtype=np.int64)
    det_match, used = match(ref, samples, round(MATCH_WINDOW_S * rec.fs))
    labels = np.where(det_match >= 0, ref_labels[np.maximum(det_match, 0)], "")
    pre = beats[0].pre if beats else 0
    segments = np.stack([b.segment for b in beats]) if beats else np.zeros((0, 1))
    return RecordBeats(
        name,
        float(rec.fs),
        pre,
        samples,
        segments,
        _rhythm_rows(beats),
        errors.astype(np.float64),
        refs,
        scores,
        labels.astype("<U1"),
        ref,
        ref_labels,
        used,
    )


def detected_beats(rb: RecordBeats) -> list[DetectedBeat]:
    """The DetectedBeat objects again (segments and rhythm as the pipeline gave them)."""
    out = []
    for s, seg, r in zip(rb.samples.tolist(), rb.segments, rb.rhythm, strict=True):
        rr = float(r[0])
        feats = RhythmFeatures(rr, float("nan"), float(r[1]), float(r[2]), float(r[3]), bool(r[4]))
        out.append(
            DetectedBeat(s, s / rb.fs, rr if rr == rr else None, None, feats, seg, rb.fs, rb.pre)
        )
    return out


def record_features(rb: RecordBeats) -> np.ndarray:
    """`beat_features` of the whole record (one state, time order): the run-time features."""
    state = PatientClasses()
    beats = detected_beats(rb)
    return beat_features([state] * len(beats), beats, rb.errors, rb.refs, rb.scores)


def _key(name: str, folder: Path, scorer: OnnxScorer) -> str:
    code = [hashlib.sha256((_ROOT / p).read_bytes()).hexdigest() for p in _SOURCES]
    blob = [data_file_hashes([name], folder), scorer.manifest["model_sha256"], code, 1]
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def load_records(
    names: Sequence[str],
    data_dir: str | Path | None = None,
    model_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> list[RecordBeats]:
    """`run_record` of each name with its features; the pipeline part cached in `cache_dir`."""
    folder = resolve_data_dir(data_dir)
    scorer = OnnxScorer(model_dir)
    anomaly = AnomalyConfig.from_manifest(scorer.manifest)
    out = []
    for name in names:
        path = None
        if cache_dir is not None:
            path = cache_dir / f"classes-{name}-{_key(name, folder, scorer)}.npz"
        if path is not None and path.is_file():
            rb = RecordBeats.load(path, name)
        else:
            rb = run_record(name, folder, scorer, anomaly)
            if path is not None:
                rb.save(path)
        out.append(replace(rb, feature_rows=record_features(rb)))
    return out


def make_engine(model_dir: Path, profile: str = "icu") -> DetectorEngine:
    """A DetectorEngine with the committed scorer and classifier (no broker involved)."""
    scorer = OnnxScorer(model_dir)
    anomaly = AnomalyConfig.from_manifest(scorer.manifest)
    return DetectorEngine(
        scorer,
        anomaly,
        anomaly.threshold(profile),
        DetectorMetrics(CollectorRegistry()),
        classifier=BeatClassifier(model_dir),
    )


def record_classes(engine: DetectorEngine, name: str, data_dir: Path) -> dict[str, np.ndarray]:
    """The engine's detected beats of one record: R-peak samples and classes ("-": none)."""
    rec = load_record(name, data_dir)
    beats = engine.score_signal(rec.lead(0), rec.fs)
    samples = np.array([b["sample"] for b in beats], dtype=np.int64)
    classes = [str(b["cls"]) if b["cls"] is not None else "-" for b in beats]
    return {"samples": samples, "classes": np.array(classes, dtype="<U1").reshape(-1)}


def time_classifier(
    engine: DetectorEngine, rb: RecordBeats, beds: int = 64, steps: int = 300
) -> float:
    """CPU µs per beat of `beat_features` + `BeatClassifier.predict` at batch `beds`, one beat of
    each of `beds` beds per batch (the engine's case), after 100 beats of warm-up per bed."""
    assert engine.classifier is not None
    beats = detected_beats(rb)[: 100 + steps]
    states = [PatientClasses() for _ in range(beds)]
    t0, n = 0.0, 0
    for k in range(len(beats)):
        if k == 100:
            t0, n = time.process_time(), 0
        f = beat_features(
            states,
            [beats[k]] * beds,
            np.full(beds, rb.errors[k]),
            np.full(beds, rb.refs[k]),
            np.full(beds, rb.scores[k]),
        )
        engine.classifier.predict(f)
        n += beds
    return (time.process_time() - t0) / max(1, n) * 1e6


def _beats_command(a: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    files = {}
    for rb in load_records(a.records, a.data_dir, Path(a.model_dir), a.cache_dir):
        files[rb.name] = str(out_dir / f"{rb.name}.npz")
        rb.save(Path(files[rb.name]))
    return {"files": files}


def _classes_command(a: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    engine = make_engine(Path(a.model_dir))
    data_dir = resolve_data_dir(a.data_dir)
    files = {}
    for name in a.records:
        files[name] = str(out_dir / f"{name}.npz")
        det = record_classes(engine, name, data_dir)
        np.savez(files[name], samples=det["samples"], classes=det["classes"])
    rb = load_records(a.records[:1], data_dir, Path(a.model_dir), a.cache_dir)[0]
    return {"files": files, "classifier_us_per_beat_batch64": time_classifier(engine, rb)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("beats", "classes"))
    p.add_argument("--records", nargs="+", required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    p.add_argument("--cache-dir", type=Path, default=None, help="pipeline cache (none: no cache)")
    p.add_argument("--out-dir", type=Path, required=True)
    a = p.parse_args(argv)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    run = _beats_command if a.command == "beats" else _classes_command
    print(json.dumps(run(a, a.out_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
