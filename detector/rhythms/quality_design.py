"""Design of the signal-quality model: `python -m detector.rhythms.quality_design [--data FILE]`.

Reads the windows of `detector.rhythms.vf_design` (run that first; same npz), takes the MIT-BIH
DS1 windows clean (label 0) and with nstdb `em`/`ma` noise at 0 and -6 dB (label 1; 6 dB is
left out as ambiguous), expresses each window relative to its record's clean median (what
`LeadSQI` keeps as a running baseline) and fits the logistic model of `detector/quality.py`
with record-wise 6-fold cross-validation. Prints the cross-validated share of windows called
artifact per noise and SNR, and the coefficients.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from detector.quality import RELATIVE, quality_inputs
from detector.rhythms.vf_design import fit, predict
from detector.rhythms.vf_features import FEATURES, QUALITY

NAMES = FEATURES + QUALITY


def inputs(d: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model inputs of every mitdb window, their labels (-1: unused) and records."""
    x, y, g, k = d["X"], d["y"], d["group"].astype(str), d["kind"].astype(str)
    mit = ~np.char.startswith(g, "cu")
    cols = [NAMES.index(f) for f in RELATIVE]
    base = {}
    for r in np.unique(g[mit]):
        s = (g == r) & (k == "mitdb") & (y == 0)
        base[r] = np.median(x[s][:, cols], axis=0)
    rows = np.full((len(y), len(RELATIVE) + 1), np.nan)
    for i in np.flatnonzero(mit):
        feats = dict(zip(NAMES, x[i].tolist(), strict=True))
        rows[i] = quality_inputs(feats, dict(zip(RELATIVE, base[g[i]].tolist(), strict=True)))
    noisy = np.isin(k, ["em0", "ma0", "em-6", "ma-6"])
    lab = np.where(mit & (y == 0) & (k == "mitdb"), 0, np.where(mit & (y == 0) & noisy, 1, -1))
    return rows, lab, g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("/tmp/vf_design.npz"))
    args = ap.parse_args()
    d = dict(np.load(args.data))
    z, lab, g = inputs(d)
    kind = d["kind"].astype(str)
    use = lab >= 0
    groups = np.unique(g[use])
    p = np.full(len(lab), np.nan)
    for i in range(6):
        test = np.isin(g, groups[i::6])
        model = fit(z[use & ~test], lab[use & ~test].astype(float))
        p[test] = predict(model, z[test])
    print("record-wise 6-fold CV, share of DS1 windows called artifact (p >= threshold):")
    for th in (0.5, 0.7, 0.8):
        cells = [
            f"{k} {np.mean(p[(kind == k) & (d['y'] == 0)] >= th):.3f}"
            for k in ("mitdb", "em6", "em0", "em-6", "ma6", "ma0", "ma-6")
        ]
        print(f"  p>={th}: " + ", ".join(cells))
    mu, sd, b = fit(z[use], lab[use].astype(float))
    np.set_printoptions(precision=5, suppress=True, floatmode="maxprec")
    print("MU =", repr(mu), "\nSD =", repr(sd), "\nB =", repr(b))


if __name__ == "__main__":
    main()
