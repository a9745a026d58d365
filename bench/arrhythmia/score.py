"""Scoring one record's chain output against its reference (issue 8's definitions, EC57).

Every function returns plain counts and lists for one record; `summary.py` adds records up.
Times are seconds from the record's start. Alarms are `chain.AlarmLog.listing()` dicts: type,
priority, started_at (the policy's onset, signal time), sounded [(published, cause)], ended_at.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from alerting.rules import PolicyConfig
from bench.arrhythmia.reference import Annotations, Episode, Reference

MATCH_WINDOW_S = 0.150  # EC57 beat match window
ALARM_WINDOW = (-1.0, 10.0)  # an episode is alarmed by an alarm sounding in onset-1 .. onset+10
PPV_WINDOW_S = 2.0  # +-2 s for vt_ppv, called_vt and false high alarms
VT_ALARMS = frozenset({"vtach"})
VF_ALARMS = frozenset({"vfib"})
LETHAL_ALARMS = VT_ALARMS | VF_ALARMS
DETECTOR_EPISODES = {"vt": "vt", "vf": "vf", "afib": "af", "svt": "svt"}  # event -> ref kind


# ----------------------------------------------------------------------------- beats


def match_beats(
    ref_t: np.ndarray, test_t: np.ndarray, window_s: float = MATCH_WINDOW_S
) -> np.ndarray:
    """EC57 matching: for each reference beat, the index of the nearest test beat within the
    window that no other reference beat took (-1 when none). Both arrays sorted."""
    match = np.full(ref_t.size, -1, dtype=np.int64)
    used = np.zeros(test_t.size, dtype=bool)
    j = 0
    for i, t in enumerate(ref_t):
        while j < test_t.size and test_t[j] < t - window_s:
            j += 1
        best, best_d = -1, window_s + 1e-9
        k = j
        while k < test_t.size and test_t[k] <= t + window_s:
            d = abs(test_t[k] - t)
            if not used[k] and d < best_d:
                best, best_d = k, d
            k += 1
        if best >= 0:
            used[best] = True
            match[i] = best
    return match


def beat_counts(
    ann: Annotations, test_t: np.ndarray, test_cls: list[str | None], from_s: float = 0.0
) -> dict[str, dict[str, int]]:
    """Gross VEB / SVEB and QRS counts (EC57) from `from_s` on. A test beat without a class
    counts as neither V nor S. VEB: a test V on a reference F is not a false positive (EC57)."""
    ref_t, ref_c = ann.beat_t, ann.beat_cls
    keep = ref_t >= from_s
    ref_t, ref_c = ref_t[keep], ref_c[keep]
    tkeep = test_t >= from_s - MATCH_WINDOW_S
    test_t = test_t[tkeep]
    tc = np.array([c or "" for c, k in zip(test_cls, tkeep, strict=True) if k], dtype="<U1")
    m = match_beats(ref_t, test_t)
    matched = m >= 0
    got = np.where(matched, tc[np.clip(m, 0, None)] if tc.size else "", "")
    extra = np.ones(test_t.size, dtype=bool)
    extra[m[matched]] = False
    extra &= test_t >= from_s
    out = {"qrs": {"tp": int(matched.sum()), "fn": int((~matched).sum()), "fp": int(extra.sum())}}
    for key, c, exempt in (("veb", "V", ("F",)), ("sveb", "S", ())):
        is_ref = ref_c == c
        out[key] = {
            "tp": int((is_ref & (got == c)).sum()),
            "fn": int((is_ref & (got != c)).sum()),
            "fp": int(
                ((~is_ref) & (got == c) & ~np.isin(ref_c, exempt)).sum() + (tc[extra] == c).sum()
            ),
        }
    return out


# ----------------------------------------------------------------------------- episodes


def detector_episodes(events: list[dict[str, Any]], end_s: float) -> dict[str, list[Episode]]:
    """The detector's episode events as [onset, end] intervals by reference kind; an episode
    still open at the end of the record ends there."""
    out: dict[str, list[Episode]] = {k: [] for k in DETECTOR_EPISODES.values()}
    open_: dict[str, float] = {}
    for ev in events:
        kind = DETECTOR_EPISODES.get(ev["type"])
        if kind is None:
            continue
        if ev["active"]:
            open_.setdefault(kind, ev["t"])
        elif kind in open_:
            onset = open_.pop(kind)
            out[kind].append(Episode(kind, onset, max(onset, ev["t"]), "detector"))
    for kind, onset in open_.items():
        out[kind].append(Episode(kind, onset, end_s, "detector"))
    return out


def intervals(alarms: list[dict[str, Any]], type_: str) -> list[tuple[float, float]]:
    """[start, end] of every alarm of one type."""
    return [(a["started_at"], a["ended_at"]) for a in alarms if a["type"] == type_]


def _overlaps(a: Episode, b: Episode) -> bool:
    return a.onset <= b.end and b.onset <= a.end


def _overlap_s(a: list[Episode], b: list[Episode]) -> float:
    total = 0.0
    for x in a:
        for y in b:
            total += max(0.0, min(x.end, y.end) - max(x.onset, y.onset))
    return total


def episode_counts(ref: Reference, found: dict[str, list[Episode]]) -> dict[str, Any]:
    """EC57 episode matching (overlap): per kind, reference episodes detected and detections
    that are true; AF also by duration. A detected VT is true on any ventricular rhythm."""
    true_for = {
        "vt": ("vt", "vt_short", "vrun", "vf"),
        "vf": ("vf",),
        "af": ("af",),
        "svt": ("svt",),
    }
    out: dict[str, Any] = {}
    for kind, truth_kinds in true_for.items():
        refs, dets = ref.of(kind), found.get(kind, [])
        truth = ref.of(*truth_kinds)
        out[kind] = {
            "n": len(refs),
            "detected": sum(any(_overlaps(r, d) for d in dets) for r in refs),
            "found": len(dets),
            "true": sum(any(_overlaps(d, r) for r in truth) for d in dets),
        }
    out["af"]["ref_s"] = sum(e.duration for e in ref.of("af"))
    out["af"]["found_s"] = sum(e.duration for e in found.get("af", []))
    out["af"]["overlap_s"] = _overlap_s(ref.of("af"), found.get("af", []))
    return out


# ----------------------------------------------------------------------------- alarms


def _first_sounding(
    alarms: list[dict[str, Any]], ep: Episode, types: frozenset[str] | None
) -> float | None:
    """Publication time of the first high alarm (of `types`, if given) sounding between
    onset - 1 s and onset + 10 s whose cause (criterion met) lies before the episode's end."""
    lo, hi = ep.onset + ALARM_WINDOW[0], ep.onset + ALARM_WINDOW[1]
    best = None
    for a in alarms:
        if a["priority"] != "high" or (types is not None and a["type"] not in types):
            continue
        for published, cause in a["sounded"]:
            if lo <= published <= hi and cause <= ep.end and (best is None or published < best):
                best = published
    return best


def lethal_counts(ref: Reference, alarms: list[dict[str, Any]]) -> dict[str, Any]:
    """Per VT/VF episode: alarmed (any high alarm) and labelled (VT/VF alarm) within 10 s."""
    rows = []
    for ep in ref.of("vt", "vf"):
        any_t = _first_sounding(alarms, ep, None)
        lab_t = _first_sounding(alarms, ep, LETHAL_ALARMS)
        rows.append(
            {
                "kind": ep.kind,
                "onset": round(ep.onset, 3),
                "end": round(ep.end, 3),
                "alarmed": any_t is not None,
                "labelled": lab_t is not None,
                "time_to_alarm_s": None if lab_t is None else round(lab_t - ep.onset, 3),
                "first_high": None if any_t is None else _type_at(alarms, any_t),
            }
        )
    return {"episodes": rows}


def _type_at(alarms: list[dict[str, Any]], published: float) -> str:
    for a in alarms:
        if a["priority"] == "high" and any(p == published for p, _ in a["sounded"]):
            return a["type"]
    return "?"


def _near(t: float, episodes: list[Episode], margin: float = PPV_WINDOW_S) -> bool:
    return any(e.onset - margin <= t <= e.end + margin for e in episodes)


def vt_alarm_counts(ref: Reference, alarms: list[dict[str, Any]]) -> dict[str, Any]:
    """vt_ppv (VT/VF alarms within +-2 s of ventricular rhythm) and SVT episodes called VT."""
    ventricular = ref.of("vt", "vt_short", "vf", "vrun")
    lethal = [a for a in alarms if a["type"] in LETHAL_ALARMS]
    true = [a for a in lethal if _near(a["started_at"], ventricular)]
    vt_starts = [a["started_at"] for a in alarms if a["type"] in VT_ALARMS]
    svt = ref.of("svt")
    called = [
        e
        for e in svt
        if any(e.onset - PPV_WINDOW_S <= t <= e.end + PPV_WINDOW_S for t in vt_starts)
    ]
    return {
        "vt_alarms": len(lethal),
        "vt_alarms_true": len(true),
        "svt_n": len(svt),
        "svt_called_vt": len(called),
        "svt_called_vt_at": [round(e.onset, 2) for e in called],
    }


def _reference_hr(ann: Annotations, n_avg: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference beat times and the heart rate at each (60 / mean of the last n RR)."""
    t = ann.beat_t
    rr = np.diff(t)
    hr = np.full(t.size, np.nan)
    if rr.size:
        c = np.concatenate([[0.0], np.cumsum(rr)])
        for i in range(1, t.size):
            k = min(n_avg, i)
            hr[i] = 60.0 * k / (c[i] - c[i - k]) if c[i] > c[i - k] else np.nan
    return t, hr


def high_alarm_truth(
    ann: Annotations,
    ref: Reference,
    alarms: list[dict[str, Any]],
    config: PolicyConfig | None = None,
) -> dict[str, Any]:
    """Each high alarm is false when the reference does not meet its criterion within +-2 s.
    Within +-2 s of a VT or VF episode every high alarm is true (the rhythm is lethal; QRS
    detection cannot follow VF, so its rate or its silence may raise tachy, brady or asystole).
    Elsewhere: VT/VF alarms are false; asystole: no reference beat for `asystole_s`; extreme brady /
    tachy: the reference heart rate (the policy's averaging) past the limit, or a gap as long
    as the brady limit's RR. Other high types are counted as unverified."""
    c = config or PolicyConfig()
    t, hr = _reference_hr(ann, c.hr_average_beats)
    edges = np.concatenate([[0.0], t, [ann.duration_s]])
    gaps = [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def gap_met(x: float, length: float) -> bool:
        return any(
            b - a >= length and a + length - PPV_WINDOW_S <= x <= b + PPV_WINDOW_S for a, b in gaps
        )

    def hr_met(x: float, above: float | None, below: float | None) -> bool:
        sel = (t >= x - PPV_WINDOW_S) & (t <= x + PPV_WINDOW_S) & np.isfinite(hr)
        if above is not None and (hr[sel] >= above).any():
            return True
        return below is not None and bool((hr[sel] <= below).any())

    lethal = ref.of("vt", "vf")
    false, unverified = [], 0
    n = 0
    for a in alarms:
        if a["priority"] != "high":
            continue
        n += 1
        x, typ = a["started_at"], a["type"]
        if _near(x, lethal):  # any high alarm in VT/VF is warranted (a lethal rhythm)
            continue
        if typ in LETHAL_ALARMS:
            ok = False
        elif typ == "asystole":
            ok = gap_met(x, c.asystole_s)
        elif typ == "extreme_brady":
            ok = hr_met(x, None, c.extreme_brady_bpm) or gap_met(x, 60.0 / c.extreme_brady_bpm)
        elif typ == "extreme_tachy":
            ok = hr_met(x, c.extreme_tachy_bpm, None)
        else:
            unverified += 1
            continue
        if not ok:
            false.append({"type": typ, "t": round(x, 2)})
    return {"high": n, "false": false, "unverified": unverified}


def alarm_counts(alarms: list[dict[str, Any]]) -> dict[str, int]:
    """Alarms raised, by priority."""
    out = {"high": 0, "medium": 0, "low": 0, "technical": 0}
    for a in alarms:
        out[a["priority"]] = out.get(a["priority"], 0) + 1
    return out


def by_type(alarms: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in alarms:
        out[a["type"]] = out.get(a["type"], 0) + 1
    return dict(sorted(out.items()))


def artifact_coverage(
    alarms: list[dict[str, Any]], segments: list[tuple[float, float]]
) -> dict[str, float]:
    """Seconds of the noisy segments under an open `noisy` alarm, and the noisy seconds."""
    noisy = intervals(alarms, "noisy")
    covered = sum(max(0.0, min(b, e) - max(a, s)) for a, b in segments for s, e in noisy)
    return {"covered_s": covered, "noisy_s": sum(b - a for a, b in segments)}
