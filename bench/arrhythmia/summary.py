"""Adding records up into the report's figures (issue 8's JSON), and the per-record table."""

from __future__ import annotations

from typing import Any

import numpy as np


def _ratio(num: float, den: float, digits: int = 4) -> float | None:
    return None if den <= 0 else round(num / den, digits)


def _sum(rows: list[dict[str, Any]], *path: str) -> float:
    total = 0.0
    for r in rows:
        v: Any = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        total += v or 0
    return total


def _per_hour(counts: dict[str, float], hours: float) -> dict[str, float | None]:
    out = {k: _ratio(counts.get(k, 0), hours, 2) for k in ("high", "medium", "low", "technical")}
    out["high_medium"] = _ratio(counts.get("high", 0) + counts.get("medium", 0), hours, 2)
    return out


def _pct(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "max": None}
    v = np.asarray(values, dtype=np.float64)
    return {
        "p50": round(float(np.percentile(v, 50)), 2),
        "p90": round(float(np.percentile(v, 90)), 2),
        "max": round(float(v.max()), 2),
    }


def beats_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Gross VEB / SVEB Se and +P over the records that have beat counts."""
    use = [r for r in rows if "beats" in r]
    out: dict[str, Any] = {"records": sorted(r["name"] for r in use)}
    for key in ("veb", "sveb", "qrs"):
        tp, fn, fp = (_sum(use, "beats", key, x) for x in ("tp", "fn", "fp"))
        out[key] = {
            "se": _ratio(tp, tp + fn),
            "ppv": _ratio(tp, tp + fp),
            "tp": int(tp),
            "fn": int(fn),
            "fp": int(fp),
        }
    return out


def episode_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def kind(k: str) -> dict[str, float]:
        return {x: _sum(rows, "episodes", k, x) for x in ("n", "detected", "found", "true")}

    vt, vf, af = kind("vt"), kind("vf"), kind("af")
    ref_s, found_s, overlap_s = (
        _sum(rows, "episodes", "af", x) for x in ("ref_s", "found_s", "overlap_s")
    )
    return {
        "vt": {
            "n": int(vt["n"]),
            "se": _ratio(vt["detected"], vt["n"]),
            "ppv": _ratio(vt["true"], vt["found"]),
            "found": int(vt["found"]),
        },
        "vf": {"n": int(vf["n"]), "se": _ratio(vf["detected"], vf["n"]), "found": int(vf["found"])},
        "af": {
            "n": int(af["n"]),
            "se": _ratio(af["detected"], af["n"]),
            "ppv": _ratio(af["true"], af["found"]),
            "duration_se": _ratio(overlap_s, ref_s),
            "duration_ppv": _ratio(overlap_s, found_s),
            "found": int(af["found"]),
            "ref_s": round(ref_s, 1),
            "found_s": round(found_s, 1),
        },
        "svt": {
            "n": int(_sum(rows, "vt", "svt_n")),
            "called_vt": int(_sum(rows, "vt", "svt_called_vt")),
        },
    }


def lethal_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    eps = [e for r in rows for e in r.get("lethal", {}).get("episodes", [])]
    times = [e["time_to_alarm_s"] for e in eps if e["time_to_alarm_s"] is not None]
    return {
        "n": len(eps),
        "alarmed_within_10s": _ratio(sum(e["alarmed"] for e in eps), len(eps)),
        "labelled_within_10s": _ratio(sum(e["labelled"] for e in eps), len(eps)),
        "time_to_alarm_s": _pct(times),
    }


def alarm_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    hours = _sum(rows, "hours")
    counts = {k: _sum(rows, "alarms", k) for k in ("high", "medium", "low", "technical")}
    floor_rows = [r for r in rows if "reference_alarms" in r]
    floor = {
        k: _sum(floor_rows, "reference_alarms", k) for k in ("high", "medium", "low", "technical")
    }
    n_false = sum(len(r.get("high", {}).get("false", [])) for r in rows)
    return {
        "per_bed_hour": _per_hour(counts, hours),
        "reference_per_bed_hour": _per_hour(floor, _sum(floor_rows, "hours"))
        if floor_rows
        else None,
        "vt_ppv": _ratio(_sum(rows, "vt", "vt_alarms_true"), _sum(rows, "vt", "vt_alarms")),
        "false_high_per_bed_hour": _ratio(n_false, hours, 2),
        "vt_alarms": int(_sum(rows, "vt", "vt_alarms")),
        "false_high": n_false,
        "unverified_high": int(_sum(rows, "high", "unverified")),
        "bed_hours": round(hours, 3),
    }


def record_summary(r: dict[str, Any]) -> dict[str, Any]:
    """The compact per-record entry of the report."""
    if "error" in r:
        return {"error": r["error"]}
    out: dict[str, Any] = {
        k: r[k]
        for k in (
            "hours",
            "fs",
            "leads",
            "wall_s",
            "n_beats",
            "classes",
            "paced",
            "reference",
            "detector_events",
            "alarms",
            "alarms_by_type",
        )
        if k in r
    }
    for k in ("beats", "noise", "artifact", "reference_alarms", "bad_messages", "refused"):
        if r.get(k):
            out[k] = r[k]
    out["lethal"] = r["lethal"]["episodes"]
    out["vt_alarms"] = {
        k: r["vt"][k] for k in ("vt_alarms", "vt_alarms_true", "svt_n", "svt_called_vt")
    }
    out["false_high"] = r["high"]["false"]
    out["episodes"] = r["episodes"]
    return out


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's figures for a set of evaluated records."""
    ok = [r for r in rows if "error" not in r]
    return {
        "beats": beats_figures(ok),
        "episodes": episode_figures(ok),
        "lethal": lethal_figures(ok),
        "alarms": alarm_figures(ok),
        "records": {r["key"]: record_summary(r) for r in sorted(rows, key=lambda r: r["key"])},
    }


def table(rows: list[dict[str, Any]]) -> str:
    """A per-record table for the terminal."""
    head = (
        f"{'record':<12}{'h':>5}{'VEB tp/fn/fp':>16}{'lethal lab/n':>14}{'VT al (true)':>14}"
        f"{'false hi':>9}{'hi/h':>7}{'med/h':>7}{'wall s':>8}"
    )
    lines = [head]
    for r in sorted(rows, key=lambda r: r["key"]):
        if "error" in r:
            lines.append(f"{r['key']:<12} ERROR {r['error']}")
            continue
        h = r["hours"]
        b = r.get("beats", {}).get("veb")
        veb = f"{b['tp']}/{b['fn']}/{b['fp']}" if b else "-"
        eps = r["lethal"]["episodes"]
        lethal = f"{sum(e['labelled'] for e in eps)}/{len(eps)}"
        vt = f"{r['vt']['vt_alarms']} ({r['vt']['vt_alarms_true']})"
        lines.append(
            f"{r['key']:<12}{h:>5.2f}{veb:>16}{lethal:>14}{vt:>14}{len(r['high']['false']):>9}"
            f"{r['alarms']['high'] / h:>7.1f}{r['alarms']['medium'] / h:>7.1f}{r['wall_s']:>8.1f}"
        )
    return "\n".join(lines)
