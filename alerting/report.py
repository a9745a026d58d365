"""PDF report of one bed's alarms, with the beats that raised them (matplotlib's PdfPages).

matplotlib is optional at run time (the `train` extra): without it the API answers 501.
Beats are drawn from what the dashboard hub still holds (recent beats only), each coloured by its
per-timestep reconstruction error like the dashboard's explainability view.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from alerting.alarms import Alarm
from alerting.hub import WardHub

MAX_ALARM_PAGES = 12
BEATS_PER_ALARM = 4


class ReportUnavailable(NotImplementedError):
    """The report cannot be made here (matplotlib missing)."""


def _fmt(t: float | None) -> str:
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _draw_beat(ax: Any, detail: dict[str, Any]) -> None:
    from matplotlib.collections import LineCollection
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("err", ["#00d8ff", "#ffb000", "#dc143c"])
    sig = detail.get("signal") or {}
    y = np.array([np.nan if v is None else v for v in sig.get("y", [])], dtype=float)
    if y.size < 2:
        ax.text(0.5, 0.5, "signal no longer held", ha="center", transform=ax.transAxes)
        return
    fs, start, peak = float(sig["fs"]), int(sig["start"]), int(detail["sample"])
    t = (start + np.arange(y.size) - peak) / fs
    errors = np.asarray(detail.get("errors") or [], dtype=float)
    win = detail["window"]
    colour = np.full(y.size - 1, np.nan)
    if errors.size and errors.max() > 0:
        k = np.floor((t[:-1] + 0.5 / fs + win["pre_s"]) * win["fs"]).astype(int)
        inside = (k >= 0) & (k < errors.size)
        colour[inside] = errors[k[inside]] / errors.max()
    segs = np.stack([np.column_stack([t[:-1], y[:-1]]), np.column_stack([t[1:], y[1:]])], axis=1)
    grey = np.isnan(colour)
    ax.add_collection(LineCollection(segs[grey], colors="#8a96a3", linewidths=1.2))
    ax.add_collection(
        LineCollection(segs[~grey], array=colour[~grey], cmap=cmap, clim=(0, 1), linewidths=2.0)
    )
    ax.set_xlim(t[0], t[-1])
    lo, hi = np.nanmin(y), np.nanmax(y)
    ax.set_ylim(lo - 0.1 * (hi - lo + 1e-6), hi + 0.1 * (hi - lo + 1e-6))
    ax.axvspan(-win["pre_s"], win["post_s"], color="#000000", alpha=0.05)
    ax.set_xlabel("s from R-peak")
    ax.set_ylabel("mV")
    ax.set_title(
        f"{detail['beat_id']}  score {detail['score']:.3g} / {detail['threshold']:.3g}", fontsize=8
    )


def evidence_beats(bed: str, alarms: Sequence[Alarm], hub: WardHub) -> dict[str, dict]:
    """Beat details (signal + per-timestep error) the hub still holds for the alarms' beats.
    Call on the hub's thread; `bed_report` can then run on any thread."""
    out: dict[str, dict] = {}
    for alarm in alarms[:MAX_ALARM_PAGES]:
        for beat_id in list(alarm.evidence.get("beat_ids") or [])[-BEATS_PER_ALARM:]:
            detail = hub.beat_detail(bed, str(beat_id))
            if detail is not None:
                out[str(beat_id)] = detail
    return out


def bed_report(ward: str, bed: str, alarms: Sequence[Alarm], beats: Mapping[str, dict]) -> bytes:
    """The PDF bytes: a summary table, then one page per alarm with its evidence beats."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.backends.backend_pdf import PdfPages
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ReportUnavailable("PDF reports need matplotlib (pip install '.[train]')") from exc

    buf = io.BytesIO()
    with PdfPages(buf) as pdf:
        fig = Figure(figsize=(8.27, 11.69))
        fig.suptitle(f"Alarm report: ward {ward}, bed {bed}", fontsize=14, x=0.08, ha="left")
        fig.text(
            0.08,
            0.94,
            f"generated {_fmt(time.time())}; {len(alarms)} alarm(s), newest first",
            fontsize=9,
        )
        ax = fig.add_axes((0.05, 0.05, 0.9, 0.86))
        ax.axis("off")
        rows = [
            [
                _fmt(a.started_at),
                a.type.value,
                a.priority.value,
                a.state.value,
                _fmt(a.ended_at),
                a.acknowledged_by or "",
            ]
            for a in alarms[:45]
        ]
        if rows:
            table = ax.table(
                cellText=rows,
                colLabels=["started", "type", "priority", "state", "ended", "ack by"],
                loc="upper center",
                cellLoc="left",
            )
            table.auto_set_font_size(False)
            table.set_fontsize(7)
            table.scale(1, 1.3)
        else:
            ax.text(0.5, 0.9, "no alarms", ha="center")
        pdf.savefig(fig)

        for alarm in alarms[:MAX_ALARM_PAGES]:
            fig = Figure(figsize=(8.27, 11.69))
            fig.suptitle(
                f"{alarm.type.value} ({alarm.priority.value}), bed {bed}",
                fontsize=13,
                x=0.08,
                ha="left",
            )
            info = (
                f"id {alarm.id}   state {alarm.state.value}\nstarted {_fmt(alarm.started_at)}"
                f"   ended {_fmt(alarm.ended_at)}   acknowledged "
                f"{_fmt(alarm.acknowledged_at)} {alarm.acknowledged_by or ''}"
            )
            fig.text(0.08, 0.91, info, fontsize=8, va="top")
            beat_ids = list(alarm.evidence.get("beat_ids") or [])[-BEATS_PER_ALARM:]
            details = [beats[str(b)] for b in beat_ids if str(b) in beats]
            if not details:
                fig.text(
                    0.08,
                    0.8,
                    "the beats of this alarm are no longer held in memory"
                    if beat_ids
                    else "no beats are attached to this alarm",
                    fontsize=9,
                )
            for i, detail in enumerate(details):
                ax = fig.add_axes((0.1, 0.66 - i * 0.2, 0.8, 0.15))
                _draw_beat(ax, detail)
            pdf.savefig(fig)
    return buf.getvalue()
