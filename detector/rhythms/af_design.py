"""AF design check on reference beats: `python -m detector.rhythms.af_design [records...]`.

Feeds each record's annotated beats (AAMI class from the symbol, RR from the annotated R-peaks)
to `AFDetector` and compares the episodes with the `(AFIB`/`(AFL` rhythm notes: episode Se/+P
(an episode is found when any detected AF overlaps it) and duration Se/+P (EC57 style). Default
records: MIT-BIH DS1 (design set). DS2 is for the evaluation only (make eval-arrhythmia).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import wfdb

from detector.rhythms.af import AFConfig, AFDetector
from detector.rhythms.events import RhythmBeat
from ecgcommon.aami import DS1, aami_class

AF_NOTES = ("(AFIB", "(AFL")


def reference(name: str, folder: Path) -> tuple[list[RhythmBeat], list[tuple[float, float]], float]:
    """Annotated beats, AF intervals (s) and the record's duration (s)."""
    ann = wfdb.rdann(str(folder / name), "atr")
    hdr = wfdb.rdheader(str(folder / name))
    fs = float(hdr.fs)
    beats: list[RhythmBeat] = []
    spans: list[tuple[float, float]] = []
    cur, since, last = None, 0.0, None
    for s, sym, note in zip(ann.sample.tolist(), ann.symbol, ann.aux_note, strict=True):
        t = s / fs
        if sym == "+" and note:
            note = note.strip("\x00 ")
            if cur in AF_NOTES:
                spans.append((since, t))
            cur, since = note, t
            continue
        cls = aami_class(sym)
        if cls is None:
            continue
        rr: float | None = None if last is None else t - last
        beats.append(RhythmBeat(int(s), t, rr, 60 / rr if rr else None, cls))
        last = t
    dur = hdr.sig_len / fs
    if cur in AF_NOTES:
        spans.append((since, dur))
    return beats, spans, dur


def detect(beats: list[RhythmBeat], config: AFConfig) -> list[tuple[float, float]]:
    """AF episodes found by the detector on these beats."""
    det = AFDetector(config)
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for b in beats:
        for ch in det.feed(b):
            if ch.active:
                start = ch.t
            elif start is not None:  # an end always follows its start
                spans.append((start, ch.t))
                start = None
    if start is not None:
        spans.append((start, beats[-1].t))
    return spans


def overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in a for s2, e2 in b)


def hits(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> int:
    return sum(any(min(e1, e2) > max(s1, s2) for s2, e2 in b) for s1, e1 in a)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("records", nargs="*", default=list(DS1))
    ap.add_argument("--data", type=Path, default=Path("../shared/data/mitdb"))
    args = ap.parse_args(argv)
    config = AFConfig()
    tot = dict(ref=0.0, det=0.0, ov=0.0, ne=0, nd=0, he=0, hd=0)
    for name in args.records:
        beats, ref, _ = reference(name, args.data)
        det = detect(beats, config)
        ov = overlap(ref, det)
        row = dict(ref=sum(e - s for s, e in ref), det=sum(e - s for s, e in det), ov=ov)
        row |= dict(ne=len(ref), nd=len(det), he=hits(ref, det), hd=hits(det, ref))
        for k, v in row.items():
            tot[k] += v
        if row["ref"] or row["det"]:
            print(name, {k: round(v, 1) for k, v in row.items()})
    se = tot["ov"] / tot["ref"] if tot["ref"] else float("nan")
    pp = tot["ov"] / tot["det"] if tot["det"] else float("nan")
    print(
        f"episodes {tot['ne']} Se {tot['he'] / max(1, tot['ne']):.3f} "
        f"+P {tot['hd'] / max(1, tot['nd']):.3f} (detected {tot['nd']}); "
        f"duration Se {se:.3f} +P {pp:.3f}; AF outside AF {tot['det'] - tot['ov']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
