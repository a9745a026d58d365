"""Report figures (matplotlib): ROC curves, per-class error histograms, explainability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402

from ecgcommon.windowing import WINDOW  # noqa: E402
from models.metrics import ABNORMAL, auc, roc_curve  # noqa: E402

ERROR_CMAP = LinearSegmentedColormap.from_list("error", ["#00bcd4", "#ffb300", "#b71c1c"])
CLASS_COLOURS = {"N": "#546e7a", "S": "#1e88e5", "V": "#e53935", "F": "#8e24aa"}
DPI = 80


def roc_figure(extras: dict[str, Any], path: Path) -> None:
    """ROC of N against S/V/F: the beat model and each baseline."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    curves = {
        "beat model (LSTM AE + rhythm + patient)": (extras["scores"], extras["beats"].labels),
        **extras["baselines"],
    }
    for name, (s, labels) in curves.items():
        neg, pos = s[labels == "N"], s[np.isin(labels, ABNORMAL)]
        fpr, tpr = roc_curve(neg, pos)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(neg, pos):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("normal beats flagged (FPR)")
    ax.set_ylabel("S/V/F beats flagged (TPR)")
    ax.set_title("Inter-patient ROC")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def histogram_figure(extras: dict[str, Any], path: Path) -> None:
    """Per-class distributions of the raw log error and of the final anomaly score."""
    labels = extras["beats"].labels
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, values, title in (
        (axes[0], np.log10(extras["errors"] + 1e-6), "log10 reconstruction error"),
        (axes[1], extras["scores"], "anomaly score"),
    ):
        bins = np.linspace(np.percentile(values, 0.1), np.percentile(values, 99.9), 60)
        for c, colour in CLASS_COLOURS.items():
            v = values[labels == c]
            if v.size:
                ax.hist(
                    v,
                    bins=bins,
                    density=True,
                    histtype="step",
                    color=colour,
                    label=f"{c} ({v.size})",
                )
        ax.set_title(title)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def explain_figure(extras: dict[str, Any], path: Path) -> None:
    """Example beats of each class, each point coloured by its reconstruction error."""
    beats, per_t, scores = extras["beats"], extras["per_t"], extras["scores"]
    fig, axes = plt.subplots(1, 4, figsize=(11, 3), sharey=True)
    vmax = float(np.percentile(per_t, 99.5))
    t = (np.arange(WINDOW.n_points) - WINDOW.pre_points) / WINDOW.fs
    for ax, c in zip(axes, ("N", "S", "V", "F"), strict=True):
        idx = np.flatnonzero(beats.labels == c)
        if idx.size:
            i = idx[np.argsort(scores[idx])[idx.size // 2]]  # the class's median-score beat
            ax.plot(t, beats.windows[i], color="#cfd8dc", lw=1, zorder=1)
            sc = ax.scatter(
                t, beats.windows[i], c=per_t[i], cmap=ERROR_CMAP, vmin=0, vmax=vmax, s=14, zorder=2
            )
            ax.set_title(f"{c} (record {beats.records[i]}, score {scores[i]:.2f})", fontsize=9)
        ax.set_xlabel("s from R-peak")
    fig.subplots_adjust(left=0.05, right=0.86, bottom=0.2, top=0.88, wspace=0.08)
    fig.colorbar(sc, ax=axes, label="squared error per point", fraction=0.03)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def write_figures(extras: dict[str, Any], out: Path) -> list[Path]:
    """All figures under `out` (small PNGs)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "model_roc.png", out / "model_error_histograms.png", out / "model_explain.png"]
    roc_figure(extras, paths[0])
    histogram_figure(extras, paths[1])
    explain_figure(extras, paths[2])
    return paths
