"""The detector's analysis output is unchanged by its performance work.

Five record segments (mitdb 100, 119, 203, 207 and cudb cu01: sinus, bigeminy, AF/VT/noise,
ventricular flutter, VF) play at once as the beds of one ward through the service's own
`DetectorEngine` (scorer, beat classifier, rhythm and quality analysis), on a fake clock, as
`bench.detector_cpu` replays them. Every beat's sample, class and anomaly score and every event
(episodes, noisy, lead and gap events; not the per-beat anomaly events, which the scores
cover), with the time it was published, must match `tests/data/perf_equivalence.json`, which
was written from the code before the optimisations (commit 0796cb4):

    .venv/bin/python -m tests.test_detector_perf_equivalence --write
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.detector_cpu import T0, FakeClock, build_engine, replay
from ecgcommon import protocol, topics
from ecgcommon.records import load_record, resolve_data_dir

GOLDEN = Path(__file__).resolve().parent / "data" / "perf_equivalence.json"
SEGMENTS = (  # (folder, record, start s, end s)
    ("mitdb", "100", 0.0, 300.0),
    ("mitdb", "119", 0.0, 600.0),
    ("mitdb", "203", 0.0, 600.0),
    ("mitdb", "207", 0.0, 600.0),
    ("cudb", "cu01", 0.0, 509.0),
)
CHUNK_S = 0.5
WARD = "equiv"
TOL = 1e-6  # scores and event details: floating-point noise only


def outputs() -> dict[str, Any]:
    """Every bed's beats and events from one replay of SEGMENTS."""
    from streamer.core import BedStream, Playback, Source

    root = resolve_data_dir().parent
    streams = []
    for i, (folder, name, a, b) in enumerate(SEGMENTS):
        rec = load_record(name, root / folder)
        src = Source.from_record(rec)
        src = dataclasses.replace(src, raw=src.raw[int(a * rec.fs) : int(b * rec.fs)])
        streams.append(
            BedStream(
                name,
                WARD,
                [src],
                0,
                0,
                CHUNK_S,
                Playback(T0, max_samples=src.raw.shape[0]),
                phase_s=CHUNK_S * i / len(SEGMENTS),
            )
        )
    heap = [(s.next_due_s, i) for i, s in enumerate(streams)]
    heapq.heapify(heap)
    msgs = []
    while heap:
        _, i = heapq.heappop(heap)
        m = streams[i].next_message()
        msgs.append((T0 + m.due_s, m.topic, m.payload))
        if not streams[i].done:
            heapq.heappush(heap, (streams[i].next_due_s, i))
    clock = FakeClock()
    engine = build_engine(clock)
    beds: dict[str, dict[str, Any]] = {
        name: {"sample": [], "cls": "", "score": [], "events": []} for _, name, _, _ in SEGMENTS
    }

    def sink(pubs: list[Any]) -> None:
        for p in pubs:
            kind = topics.parse_topic(p.topic).kind
            if kind == "beats":
                for beat in protocol.decode_beats_message(p.payload).beats:
                    bed = beds[beat.bed]
                    bed["sample"].append(beat.sample)
                    bed["cls"] += beat.cls or "-"
                    bed["score"].append(beat.score)
            elif kind == "events":
                ev = protocol.decode_event(p.payload)
                if ev.type != "anomaly":
                    beds[ev.bed]["events"].append(
                        {
                            "type": ev.type,
                            "active": ev.active,
                            "t": ev.t - T0,
                            "published": clock.now - T0,
                            "detail": dict(ev.detail),
                        }
                    )

    replay(engine, clock, msgs, sink, T0, lambda: None)
    return beds


def _close(x: Any, y: Any) -> bool:
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_close(a, b) for a, b in zip(x, y, strict=True))
    if isinstance(x, float) or isinstance(y, float):
        if not isinstance(x, int | float) or not isinstance(y, int | float):
            return False
        return math.isclose(x, y, rel_tol=TOL, abs_tol=TOL) or (x != x and y != y)
    return bool(x == y)


@pytest.mark.slow
def test_beat_classes_episodes_and_quality_verdicts_match_the_golden_output() -> None:
    golden = json.loads(GOLDEN.read_text())
    got = json.loads(json.dumps(outputs()))  # the golden's JSON types (tuples -> lists)
    assert set(got) == set(golden)
    for name, want in golden.items():
        have = got[name]
        assert have["sample"] == want["sample"], f"{name}: beats found differ"
        assert have["cls"] == want["cls"], f"{name}: beat classes differ"
        assert _close(have["score"], want["score"]), f"{name}: anomaly scores differ"
        assert [e["type"] for e in have["events"]] == [e["type"] for e in want["events"]], name
        for e, w in zip(have["events"], want["events"], strict=True):
            assert _close(e, w), f"{name}: event {e} != {w}"
    kinds = {e["type"] for want in golden.values() for e in want["events"]}
    assert {"noisy", "vf", "vt", "afib"} <= kinds  # the golden covers what it must guard


if __name__ == "__main__":
    if "--write" in sys.argv:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(outputs(), separators=(",", ":")) + "\n")
        print(f"wrote {GOLDEN}")
