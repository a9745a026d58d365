"""The detector engine's memory per bed, in process: what N beds hold after M seconds.

`make bench` reads the detector process's resident memory at each bed count, so base and
per-bed cost are mixed with the broker's buffers and the MQTT client. This replays N beds x M
seconds of the load generator's streams through the service's own `DetectorEngine` (as
`bench.detector_cpu` does, on a fake clock) with `tracemalloc` on, and reports what the engine
still holds afterwards (every Python object and numpy buffer it keeps), per bed, with the
source lines that allocated the most of it; and the growth of the process's resident memory
over the replay (the encoded messages are made before it, so they are not counted).

    python -m bench.detector_mem --beds 200 --seconds 60
    python -m bench.detector_mem --beds 200 --seconds 60 --no-trace   # RSS alone (faster)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tracemalloc
from pathlib import Path
from typing import Any

from bench.detector_cpu import RECORDS, T0, FakeClock, build_engine, messages, replay


def rss_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def top_lines(diff: list[tracemalloc.StatisticDiff], beds: int, n: int) -> list[dict[str, Any]]:
    """The source lines whose allocations are still held, largest first, per bed."""
    root = str(Path(__file__).resolve().parents[1]) + "/"
    rows = []
    for st in diff[:n]:
        frame = st.traceback[0]
        rows.append(
            {
                "where": f"{frame.filename.removeprefix(root)}:{frame.lineno}",
                "kb_per_bed": round(st.size_diff / beds / 1e3, 2),
                "blocks_per_bed": round(st.count_diff / beds, 1),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--beds", type=int, default=200)
    p.add_argument("--seconds", type=float, default=60.0, help="signal seconds replayed")
    p.add_argument("--chunk-s", type=float, default=1.0)
    p.add_argument("--records", nargs="*", default=list(RECORDS))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-trace", action="store_true", help="RSS only (tracemalloc off)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--json", default=None, help="write the figures as JSON here")
    a = p.parse_args(argv)

    msgs = messages(a.beds, a.seconds, a.chunk_s, a.records, a.data_dir)
    clock = FakeClock()
    engine = build_engine(clock)
    gc.collect()
    rss0 = rss_bytes()
    if not a.no_trace:
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
    replay(engine, clock, msgs, lambda _pubs: None, T0, lambda: None)
    gc.collect()
    doc: dict[str, Any] = {
        "beds": a.beds,
        "seconds": a.seconds,
        "rss_growth_mb": round((rss_bytes() - rss0) / 1e6, 1),
    }
    if not a.no_trace:
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        diff = after.compare_to(before, "lineno")
        held = sum(st.size_diff for st in diff)
        doc["held_mb"] = round(held / 1e6, 2)
        doc["held_kb_per_bed"] = round(held / a.beds / 1e3, 1)
        doc["top"] = top_lines(diff, a.beds, a.top)
    print(
        f"{a.beds} beds x {a.seconds:g} s: RSS +{doc['rss_growth_mb']} MB over the replay"
        + ("" if a.no_trace else f"; engine holds {doc['held_mb']} MB")
        + ("" if a.no_trace else f" = {doc['held_kb_per_bed']} KB per bed")
    )
    for row in doc.get("top", []):
        print(
            f"  {row['kb_per_bed']:8.2f} KB/bed {row['blocks_per_bed']:8.1f} blocks  {row['where']}"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    del engine, msgs
    return 0


if __name__ == "__main__":
    sys.exit(main())
