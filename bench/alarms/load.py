"""Alarm load: every MIT-BIH record through `Replay`, alarms raised per bed-hour by priority,
with a VT sanity check against the annotated ventricular rhythms; and the device-chunk sweep.

With `mode="reference"` the reference annotations stand in for the detector (a perfect
detector; the report says so).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alerting.alarms import AlarmType, ChangeKind, Priority
from alerting.policy import AlarmPolicy, PolicyConfig
from bench.alarms.replay import Replay, Scoring, load_scoring
from bench.alarms.signals import (
    REFERENCE_LAG_S,
    T0,
    reference_beats,
    ventricular_episodes,
)
from bench.alarms.timing import TrialSetup, asystole_trials
from ecgcommon.records import load_record
from streamer.core import Source

EPISODE_MARGIN_S = 2.0  # a VT alarm this close to an annotated episode counts as in it
SEEN_AFTER_S = 5.0  # an episode is alarmed when a VT alarm is raised or seen up to this after


def record_load(
    name: str,
    data_dir: Path,
    scoring: Scoring | None,
    mode: str,
    lag_s: float,
    chunk_s: float,
    ack_after_s: float | None = 30.0,
) -> dict[str, Any]:
    """Alarms raised on one record, by priority and type, with a VT sanity check."""
    rec = load_record(name, data_dir)
    policy = AlarmPolicy(PolicyConfig())
    replay = Replay(name, policy, scoring, lag_s, chunk_s, 0.0, ack_after_s=ack_after_s)
    if mode == "detector":
        replay.play(Source.from_record(rec), T0)
    else:
        ref = reference_beats(rec)
        replay.feed_reference(ref.t, ref.anomalous, rec.duration_s, T0)
    counts = {p.value: 0 for p in Priority}
    types: dict[str, int] = {}
    for r in replay.raised:
        counts[r.priority.value] += 1
        types[r.type.value] = types.get(r.type.value, 0) + 1
    episodes = ventricular_episodes(rec, data_dir, policy.config.vt_min_beats)
    vt = [r.started_at - T0 for r in replay.raised if r.type is AlarmType.VTACH]
    near = EPISODE_MARGIN_S
    vt_in = sum(any(a - near <= s <= b + near for a, b in episodes) for s in vt)
    vt_seen = [
        c.alarm.updated_at - T0
        for c in replay.changes
        if c.alarm.type is AlarmType.VTACH and c.kind in (ChangeKind.RAISED, ChangeKind.UPDATED)
    ]
    ep_hit = sum(any(a - near <= s <= b + SEEN_AFTER_S for s in vt_seen) for a, b in episodes)
    return {
        "record": name,
        "hours": rec.duration_s / 3600.0,
        "beats": replay.n_beats,
        "anomalous": replay.n_anomalous,
        "by_priority": counts,
        "by_type": types,
        "reannounced": replay.reactivated,
        "premature_asystole": replay.premature_asystole,
        "vtach_alarms": len(vt),
        "vtach_in_annotated_ventricular_rhythm": vt_in,
        "ventricular_episodes": len(episodes),
        "ventricular_episodes_alarmed": ep_hit,
        "beat_latency_s_max": round(max(replay.beat_latency), 3) if replay.beat_latency else None,
        "technical_events": len(replay.events),
    }


LoadArgs = tuple[str, str, str | None, str, float, float, float | None]


def _load_worker(args: LoadArgs) -> dict[str, Any]:
    """`record_load` in a worker process (its own models)."""
    name, data_dir, model_dir, mode, lag_s, chunk_s, ack_after_s = args
    scoring = load_scoring(Path(model_dir)) if mode == "detector" and model_dir else None
    return record_load(name, Path(data_dir), scoring, mode, lag_s, chunk_s, ack_after_s)


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 3) if den else None


def mitdb_load(
    records: list[str],
    data_dir: Path,
    scoring: Scoring | None,
    mode: str,
    lag_s: float,
    chunk_s: float,
    jobs: int,
    ack_after_s: float | None,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """`record_load` over the records (`jobs` processes), summed per bed-hour."""
    model_dir = scoring.model_dir if scoring else None
    work = [(r, str(data_dir), model_dir, mode, lag_s, chunk_s, ack_after_s) for r in records]
    results: list[dict[str, Any]] = []
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as pool:
            for res in pool.map(_load_worker, work):
                results.append(res)
                progress(f"{res['record']}: {res['by_priority']}")
    else:
        for item in work:
            res = record_load(item[0], data_dir, scoring, mode, lag_s, chunk_s, ack_after_s)
            results.append(res)
            progress(f"{res['record']}: {res['by_priority']}")
    hours = sum(r["hours"] for r in results)
    per_hour = {
        p.value: round(sum(r["by_priority"][p.value] for r in results) / hours, 3) for p in Priority
    }
    by_type: dict[str, int] = {}
    for r in results:
        for k, v in r["by_type"].items():
            by_type[k] = by_type.get(k, 0) + v
    lat = [r["beat_latency_s_max"] for r in results if r["beat_latency_s_max"] is not None]
    return {
        "alarms_per_bed_hour": per_hour,
        "bed_hours": round(hours, 3),
        "reannounced_per_bed_hour": round(sum(r["reannounced"] for r in results) / hours, 3),
        "simulated_ack_after_s": ack_after_s,
        "records": len(results),
        "alarms_by_type": dict(sorted(by_type.items())),
        "vtach_alarms_in_annotated_ventricular_rhythm": _ratio(
            sum(r["vtach_in_annotated_ventricular_rhythm"] for r in results),
            sum(r["vtach_alarms"] for r in results),
        ),
        "annotated_ventricular_episodes": sum(r["ventricular_episodes"] for r in results),
        "annotated_ventricular_episodes_alarmed": _ratio(
            sum(r["ventricular_episodes_alarmed"] for r in results),
            sum(r["ventricular_episodes"] for r in results),
        ),
        "beat_latency_s_max": round(max(lat), 3) if lat else None,
        "per_record": results,
    }


def chunk_sweep(
    records: list[str],
    data_dir: Path,
    trials: int,
    seed: int,
    chunks_s: list[float],
    batch_s: float,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Asystole delay against the device chunk (the policy clock follows the detector's
    watermark, so the chunk is what is left to choose), with the asystole alarms on MIT-BIH
    (detector beats, no model) and premature ones (raised while an earlier beat was still in
    the detector: the watermark promises there are none)."""
    rows = []
    lag_s = REFERENCE_LAG_S
    for chunk_s in chunks_s:
        asys = asystole_trials(trials, TrialSetup(None, lag_s, chunk_s, batch_s), seed)
        n = premature = 0
        for name in records:
            res = record_load(name, data_dir, None, "detector", lag_s, chunk_s, 30.0)
            n += res["by_type"].get("asystole", 0)
            premature += res["premature_asystole"]
        row = {
            "chunk_s": chunk_s,
            "asystole_delay_s": asys["max"],
            "asystole_delay_mean_s": asys["mean"],
            "mitdb_asystole_alarms": n,
            "mitdb_premature_asystole": premature,
        }
        progress(f"chunk sweep {row}")
        rows.append(row)
    return rows
