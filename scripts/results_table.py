"""Fill the README's results table from the JSON reports under reports/.

Run after `make eval-qrs`, `make eval-model`, `make bench`, `make bench-alarms`,
`make eval-arrhythmia` (mitdb, and cudb to reports/arrhythmia-cudb.json), `make eval-noise`,
`make fuzz`, `make bench-cluster`:
    python scripts/results_table.py          # rewrites the table between the README markers
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRIORITIES = ("high", "medium", "low", "technical")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _load(name: str) -> dict | None:
    path = ROOT / "reports" / name
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _num(x: float | None, fmt: str = "{:.3g}") -> str:
    return "n/a" if x is None else fmt.format(x)


def rows() -> list[tuple[str, str, str, str]]:
    """(what, measured, target, command) rows from whichever reports exist."""
    out: list[tuple[str, str, str, str]] = []
    if q := _load("qrs.json"):
        d, peers = q["detector"], q.get("peers", {})
        n = len(q.get("records", {}))
        out += [
            (f"QRS Se, {n} records, pooled", _pct(d["se"]), "≥ 99.80 %", "make eval-qrs"),
            (f"QRS +P, {n} records, pooled", _pct(d["ppv"]), "≥ 99.70 %", "make eval-qrs"),
            (
                "QRS decision delay p50 / p99",
                f"{_num(d['delay_p50_s'])} s / {_num(d['delay_p99_s'])} s",
                "p99 ≤ 0.5 s",
                "make eval-qrs",
            ),
            (
                "QRS realtime factor (100 ms chunks, 1 core)",
                _num(d["realtime_factor"], "{:.0f}×"),
                "≥ 2000×",
                "make eval-qrs",
            ),
        ]
        for name, p in peers.items():
            out.append(
                (
                    f"peer {name} Se / +P",
                    f"{_pct(p['se'])} / {_pct(p['ppv'])}",
                    "reference",
                    "make eval-qrs",
                )
            )
    if m := _load("model.json"):
        by = m["auc_by_class"]
        out.append(
            ("beat model AUC (DS2) overall", _num(m["auc"], "{:.4f}"), "≥ 0.97", "make eval-model")
        )
        out.append(
            (
                "beat model AUC S / V / F",
                " / ".join(_num(by[c], "{:.3f}") for c in "SVF"),
                "≥ 0.96 / 0.99 / 0.90",
                "make eval-model",
            )
        )
        icu = m["operating_points"]["icu"]
        out.append(
            (
                "icu profile: V recall / normal flagged",
                f"{_pct(icu['v_recall'])} / {_pct(icu['normal_flag_rate'])}",
                "≥ 95 % / ≤ 2 %",
                "make eval-model",
            )
        )
        inf = m["inference_ms_per_beat"]
        out.append(
            (
                "ONNX inference per beat, batch 64 (1 thread)",
                f"{_num(inf['batch64'], '{:.4f}')} ms",
                "≤ 0.05 ms",
                "make eval-model",
            )
        )
        for name, b in m.get("baselines", {}).items():
            out.append(
                (f"baseline {name} AUC", _num(b["auc"], "{:.4f}"), "reference", "make eval-model")
            )
    if b := _load("bench.json"):
        out += [
            (
                "beds sustained in real time, whole chain on 2 cores",
                _num(b["max_beds_realtime"], "{:.0f}"),
                "≥ 1000",
                "make bench",
            ),
            (
                "beds per detector core",
                _num(b["beds_per_detector_core"], "{:.0f}"),
                "≥ 2000",
                "make bench",
            ),
            (
                "beat latency p50 / p99",
                f"{_num(b['latency_s']['p50'])} s / {_num(b['latency_s']['p99'])} s",
                "p99 ≤ 1 s",
                "make bench",
            ),
            (
                "detector RSS at 1000 beds / at the most beds",
                f"{_num(b.get('detector_rss_mb_at_1000_beds'), '{:.0f}')} MB / "
                f"{_num(b['detector_rss_mb'], '{:.0f}')} MB",
                "≤ 300 MB at 1000 beds",
                "make bench",
            ),
        ]
    if a := _load("alarms.json"):
        load = a.get("alarms_per_bed_hour", {})
        out += [
            (
                "asystole alarm delay",
                f"{_num(a['asystole_delay_s'])} s",
                "≤ 1 s",
                "make bench-alarms",
            ),
            (
                "tachycardia time to alarm",
                f"{_num(a['tachy_time_to_alarm_s'])} s",
                "≤ 3 s",
                "make bench-alarms",
            ),
            (
                "dashboard latency",
                f"{_num(a['dashboard_latency_s'])} s",
                "≤ 1 s",
                "make bench-alarms",
            ),
            # measured with the policy before beat classes; `make eval-arrhythmia` gives the
            # alarm load of the current policy (rows below)
            (
                "alarms per bed-hour high / medium / low / technical (bench-alarms, 48 records)",
                " / ".join(_num(load.get(k), "{:.2f}") for k in PRIORITIES),
                "report",
                "make bench-alarms",
            ),
        ]
    out += _arrhythmia_rows()
    out += _robustness_rows()
    return out


def _robustness_rows() -> list[tuple[str, str, str, str]]:
    """Rows of `make fuzz` and `make bench-cluster`."""
    out: list[tuple[str, str, str, str]] = []
    if f := _load("fuzz.json"):
        out += [
            (
                "fuzz: inputs / crashes / unhandled errors / HTTP 5xx",
                f"{f['inputs']} / {f['crashes']} / {f['unhandled_errors']} / {f['http_5xx']}",
                "≥ 100000 / 0 / 0 / 0",
                "make fuzz",
            ),
            (
                "fuzz: RSS growth / largest beat gap on a real bed",
                f"{_num(f['rss_growth_mb'], '{:.1f}')} MB / {_num(f['good_bed_max_gap_s'])} s",
                "≤ 50 MB / ≤ 1 s",
                "make fuzz",
            ),
        ]
    if c := _load("cluster.json"):
        fo = c["failover_s"]
        eff = _num(c["scaling_efficiency_2_workers"], "{:.2f}")
        if (total := c.get("scaling", {}).get("efficiency_equal_total_beds")) is not None:
            eff += f" ({_num(total, '{:.2f}')} at equal total beds; noisy, docs/scaling.md)"
        out += [
            (
                "cluster: scaling efficiency, 2 detector workers",
                eff,
                "≥ 0.9",
                "make bench-cluster",
            ),
            (
                "cluster: failover p50 / max",
                f"{_num(fo['p50'])} s / {_num(fo['max'])} s",
                "≤ 10 s",
                "make bench-cluster",
            ),
            (
                "cluster: chunks lost / duplicate beats / false alarms after failover",
                f"{c['chunks_lost']} / {c['duplicate_beats']} / {c['false_alarms_after_failover']}",
                "0 / 0 / 0",
                "make bench-cluster",
            ),
        ]
    return out


def _arrhythmia_rows() -> list[tuple[str, str, str, str]]:
    """Rows of `make eval-arrhythmia` (mitdb, cudb) and `make eval-noise`."""
    out: list[tuple[str, str, str, str]] = []
    cmd = "make eval-arrhythmia"
    if r := _load("arrhythmia.json"):
        b, e, le, al = r["beats"], r["episodes"], r["lethal"], r["alarms"]
        n = len(b.get("records", []))
        out += [
            (
                f"VEB Se / +P (mitdb DS2, {n} records)",
                f"{_pct(b['veb']['se'])} / {_pct(b['veb']['ppv'])}",
                "≥ 95 % / ≥ 95 %",
                cmd,
            ),
            (
                f"SVEB Se / +P (mitdb DS2, {n} records)",
                f"{_pct(b['sveb']['se'])} / {_pct(b['sveb']['ppv'])}",
                "≥ 85 % / ≥ 75 %",
                cmd,
            ),
            (
                f"mitdb VT/VF episodes labelled within 10 s ({le['n']})",
                _pct(le["labelled_within_10s"]),
                "≥ 98 %",
                cmd,
            ),
            (
                "mitdb time to VT/VF alarm p50 / max",
                f"{_num(le['time_to_alarm_s']['p50'])} s / {_num(le['time_to_alarm_s']['max'])} s",
                "p50 ≤ 5 s",
                cmd,
            ),
            (
                "mitdb vt_ppv / SVT episodes called VT",
                f"{_pct(al['vt_ppv'])} / {e['svt']['called_vt']} of {e['svt']['n']}",
                "≥ 90 % / 0",
                cmd,
            ),
            (
                "mitdb AF episode Se / +P",
                f"{_pct(e['af']['se'])} / {_pct(e['af']['ppv'])}",
                "≥ 95 % / ≥ 95 %",
                cmd,
            ),
            (
                "mitdb AF duration Se / +P",
                f"{_pct(e['af']['duration_se'])} / {_pct(e['af']['duration_ppv'])}",
                "≥ 95 % / ≥ 95 %",
                cmd,
            ),
            (
                "mitdb false high alarms per bed-hour",
                _num(al["false_high_per_bed_hour"], "{:.2f}"),
                "≤ 0.5",
                cmd,
            ),
            (
                "mitdb high + medium alarms per bed-hour (reference floor)",
                f"{_num(al['per_bed_hour']['high_medium'], '{:.1f}')} "
                f"({_num((al.get('reference_per_bed_hour') or {}).get('high_medium'), '{:.1f}')})",
                "≤ 15",
                cmd,
            ),
        ]
    if r := _load("arrhythmia-cudb.json"):
        le, vf = r["lethal"], r["episodes"]["vf"]
        out += [
            (
                f"cudb VT/VF episodes labelled within 10 s ({le['n']})",
                _pct(le["labelled_within_10s"]),
                "≥ 98 %",
                f"{cmd} DATA_DIR=…/cudb",
            ),
            (
                "cudb time to VT/VF alarm p50 / VF episode Se",
                f"{_num(le['time_to_alarm_s']['p50'])} s / {_pct(vf['se'])}",
                "p50 ≤ 5 s",
                f"{cmd} DATA_DIR=…/cudb",
            ),
        ]
    if r := _load("arrhythmia-noise.json"):
        for snr, part in r.get("noise", {}).items():
            target = "0" if float(snr) >= 6 else "report"
            out.append(
                (
                    f"noise stress {snr} dB: false high alarms / artifact coverage",
                    f"{part['alarms']['false_high']} / {_pct(part.get('artifact_coverage'))}",
                    f"{target} / " + ("≥ 90 %" if float(snr) <= 0 else "report"),
                    "make eval-noise",
                )
            )
    return out


def render() -> str:
    lines = ["| what | measured | target | command |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | `{d}` |" for a, b, c, d in rows()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"README.md lacks the {BEGIN} … {END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{render()}\n{END}{tail}")
    print(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
