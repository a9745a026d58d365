"""Detection metrics in numpy: rank AUC, operating points at a threshold."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

ABNORMAL = ("S", "V", "F")


def auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN if a side is empty."""
    neg, pos = np.asarray(negatives, float), np.asarray(positives, float)
    if neg.size == 0 or pos.size == 0:
        return float("nan")
    r = rankdata(np.concatenate([neg, pos]))
    return float((r[neg.size :].sum() - pos.size * (pos.size + 1) / 2) / (neg.size * pos.size))


def auc_report(scores: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    """{"auc": N vs S/V/F, "auc_by_class": {S, V, F}: N vs that class}."""
    neg = scores[labels == "N"]
    return {
        "auc": auc(neg, scores[np.isin(labels, ABNORMAL)]),
        "auc_by_class": {c: auc(neg, scores[labels == c]) for c in ABNORMAL},
    }


def operating_point(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision/recall/F1 of flagging S/V/F at `threshold`, plus per-class recall."""
    flag = scores >= threshold
    pos = np.isin(labels, ABNORMAL)
    neg = labels == "N"
    tp = int((flag & pos).sum())
    fp = int((flag & neg).sum())
    fn = int((~flag & pos).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    def rec(c: str) -> float:
        m = labels == c
        return float(flag[m].mean()) if m.any() else float("nan")

    return {
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "normal_flag_rate": float(flag[neg].mean()) if neg.any() else float("nan"),
        "v_recall": rec("V"),
        "s_recall": rec("S"),
        "f_recall": rec("F"),
    }


def roc_curve(negatives: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) over all thresholds, for plotting."""
    s = np.concatenate([negatives, positives])
    y = np.concatenate([np.zeros(len(negatives)), np.ones(len(positives))])
    order = np.argsort(-s, kind="stable")
    y = y[order]
    tpr = np.concatenate([[0.0], np.cumsum(y) / max(1, y.sum())])
    fpr = np.concatenate([[0.0], np.cumsum(1 - y) / max(1, (1 - y).sum())])
    return fpr, tpr
