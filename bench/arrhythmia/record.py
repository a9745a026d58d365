"""A worker's job: a group of records (load, optionally noise-stress), played as the beds of one
ward through the chain, each scored, plus the reference floor. Returns JSON-ready dicts of counts
that `summary.py` adds up."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bench.arrhythmia import score
from bench.arrhythmia.chain import ChainResult, run_reference, run_ward
from bench.arrhythmia.noise import NoiseProtocol, load_noise, measured_snr_db, stress
from bench.arrhythmia.reference import read_annotations, reference_episodes
from ecgcommon.records import load_record

log = logging.getLogger("bench.arrhythmia")


@dataclass(frozen=True)
class Task:
    """What one worker evaluates."""

    name: str
    data_dir: str
    model_dir: str | None = None
    sampto: int | None = None  # first samples only (tests)
    beats: bool = True  # count this record's beats (DS2 on mitdb, not paced)
    beats_from_s: float = 0.0  # beat figures from this time on (EC57: 300 s)
    noise: str | None = None  # nstdb noise record (em, ma, bw) for the stress mode
    snr_db: float | None = None
    noise_dir: str | None = None
    reference_floor: bool = True  # also feed the alerting core with the reference

    @property
    def key(self) -> str:
        if self.noise is None:
            return self.name
        return f"{self.name}_{self.noise}{self.snr_db:g}"


@dataclass
class Prepared:
    """A record ready to play: its (possibly noise-stressed) signal and its reference."""

    task: Task
    record: Any
    ann: Any
    ref: Any
    segments: list[tuple[float, float]]
    out: dict[str, Any]


def evaluate(tasks: list[Task]) -> list[dict[str, Any]]:
    """Run a group of records as the beds of one ward and score each. Never raises: a record
    that cannot be prepared, or a ward that fails, is reported as an error in its results."""
    ready: list[Prepared] = []
    results: list[dict[str, Any]] = []
    for task in tasks:
        try:
            ready.append(_prepare(task))
        except Exception as exc:  # one bad record must not lose the others
            log.exception("record %s failed", task.key)
            results.append(_error(task, exc))
    if not ready:
        return results
    model_dir = ready[0].task.model_dir
    try:
        chains = run_ward([p.record for p in ready], model_dir)
    except Exception as exc:
        log.exception("ward of %s failed", [p.task.key for p in ready])
        return results + [_error(p.task, exc) for p in ready]
    for p, chain in zip(ready, chains, strict=True):
        try:
            results.append(_score(p, chain))
        except Exception as exc:
            log.exception("record %s failed", p.task.key)
            results.append(_error(p.task, exc))
    return results


def _error(task: Task, exc: Exception) -> dict[str, Any]:
    return {"key": task.key, "name": task.name, "error": f"{type(exc).__name__}: {exc}"}


def _prepare(task: Task) -> Prepared:
    record = load_record(task.name, task.data_dir, sampto=task.sampto)
    ann = read_annotations(task.name, task.data_dir, record.duration_s, sampto=task.sampto)
    ref = reference_episodes(ann)
    out: dict[str, Any] = {"key": task.key, "name": task.name, "fs": record.fs}
    segments: list[tuple[float, float]] = []
    if task.noise is not None:
        noise = load_noise(task.noise, record.fs, record.n_samples, task.noise_dir)
        normal = ann.beat_cls == "N"
        stressed = stress(
            record.signal,
            record.fs,
            ann.beat_samples,
            normal,
            noise,
            float(task.snr_db or 0.0),  # a noise task always has its SNR
            NoiseProtocol(),
            task.noise,
        )
        segments = stressed.segments
        out["noise"] = {
            "kind": task.noise,
            "snr_db": task.snr_db,
            "measured_snr_db": [
                round(x, 2)
                for x in measured_snr_db(
                    record.signal, stressed, record.fs, ann.beat_samples, normal
                )
            ],
            "gains": [round(g, 4) for g in stressed.gains],
        }
        record = replace(record, signal=stressed.signal)
    return Prepared(task, record, ann, ref, segments, out)


def _score(p: Prepared, chain: ChainResult) -> dict[str, Any]:
    task, record, ann, ref, segments, out = p.task, p.record, p.ann, p.ref, p.segments, p.out
    hours = chain.duration_s / 3600.0
    alarms = chain.alarms
    out.update(
        hours=hours,
        leads=int(record.signal.shape[1]),
        wall_s=round(chain.wall_s, 2),
        n_beats=int(chain.beat_t.size),
        classes=_class_counts(chain.beat_cls),
        bad_messages=chain.bad_messages,
        classifier=chain.classifier,
        refused=chain.refused,
        reference=ref.counts(),
        episodes=score.episode_counts(ref, score.detector_episodes(chain.events, chain.duration_s)),
        lethal=score.lethal_counts(ref, alarms),
        vt=score.vt_alarm_counts(ref, alarms),
        high=score.high_alarm_truth(ann, ref, alarms),
        alarms=score.alarm_counts(alarms),
        alarms_by_type=score.by_type(alarms),
        detector_events=_event_counts(chain.events),
    )
    _explain(out["lethal"]["episodes"], chain.events, alarms)
    out["paced"] = ann.paced
    if task.beats and not ann.paced:
        out["beats"] = score.beat_counts(ann, chain.beat_t, chain.beat_cls, task.beats_from_s)
    if segments:
        out["artifact"] = score.artifact_coverage(alarms, segments)
    if task.reference_floor:
        floor = run_reference(ann, ref)
        out["reference_alarms"] = score.alarm_counts(floor)
        out["reference_alarms_by_type"] = score.by_type(floor)
    return out


def _explain(
    rows: list[dict[str, Any]], events: list[dict[str, Any]], alarms: list[dict[str, Any]]
) -> None:
    """Add to each lethal episode what happened around it (onset - 5 s .. onset + 15 s): the
    detector's events and the alarms that sounded, times relative to the onset (diagnosis)."""
    for row in rows:
        lo, hi = row["onset"] - 5.0, row["onset"] + 15.0
        row["events"] = [
            f"{e['type']}{'+' if e['active'] else '-'}@{e['t'] - row['onset']:+.1f}"
            for e in events
            if lo <= e["t"] <= hi
        ][:12]
        row["alarms"] = [
            f"{a['type']}@{p - row['onset']:+.1f}"
            for a in alarms
            for p, _ in a["sounded"]
            if lo <= p <= hi
        ][:12]


def _class_counts(cls: list[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in cls:
        k = c if c is not None else "none"
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def _event_counts(events: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        if e["active"]:
            out[e["type"]] = out.get(e["type"], 0) + 1
    return dict(sorted(out.items()))


def finite(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)
