"""Design data for the VF detector: windows of cudb, mitdb and noise-stressed mitdb, labelled.

    python -m detector.rhythms.vf_design [--data ../shared/data] [--out FILE.npz]

prints the record-wise cross-validated window sensitivity/specificity of the fitted logistic
model and the coefficients to paste into `detector/rhythms/vf.py`. Design data only: cudb
(record-wise folds), mitdb DS1 (207 holds ventricular flutter) and DS1 records with nstdb `em`
and `ma` noise added at 6, 0 and -6 dB (nstdb SNR definition). DS2 is never read here.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from detector.rhythms.stream import decimate
from detector.rhythms.vf import HOP_S, WINDOW_S, transform
from detector.rhythms.vf_features import FEATURES, QUALITY, vf_features
from ecgcommon.aami import DS1, beat_mask
from ecgcommon.records import load_record


def vf_mask(rec, n: int) -> np.ndarray:
    """True on samples inside `[`..`]` or a `(VF`/`(VFL` rhythm."""
    mask = np.zeros(n, dtype=bool)
    if rec.ann_samples is None:
        return mask
    start = None
    for s, sym in zip(rec.ann_samples.tolist(), rec.ann_symbols.tolist(), strict=True):
        if sym == "[":
            start = s
        elif sym == "]" and start is not None:
            mask[start : s + 1] = True
            start = None
    if start is not None:
        mask[start:] = True
    return mask


def rhythm_vf_mask(name: str, folder: Path, n: int) -> np.ndarray:
    """Samples under a `(VF`/`(VFL` rhythm note (mitdb marks flutter this way too)."""
    import wfdb

    ann = wfdb.rdann(str(folder / name), "atr")
    mask = np.zeros(n, dtype=bool)
    cur, since = None, 0
    for s, sym, note in zip(ann.sample, ann.symbol, ann.aux_note, strict=True):
        if sym == "+" and note:
            if cur in ("(VF", "(VFL"):
                mask[since:s] = True
            cur, since = note.strip("\x00 "), int(s)
    if cur in ("(VF", "(VFL"):
        mask[since:] = True
    return mask


def windows(
    x: np.ndarray, fs: float, label: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows, labels (1 VF, 0 not, -1 mixed) and end times of the detector's windows."""
    y, ok, fs_d = decimate(x, fs)
    q = int(round(fs / fs_d))
    lab = label[::q][: y.shape[0]]
    w, h = int(round(WINDOW_S * fs_d)), int(round(HOP_S * fs_d))
    rows, labels, ends = [], [], []
    for end in range(h, y.shape[0] + 1, h):
        if end < w or not ok[end - w : end].all():
            continue
        ends.append(end / fs_d)
        frac = float(np.mean(lab[end - w : end]))
        f = vf_features(y[end - w : end, 0], fs_d)
        rows.append(np.r_[f.as_array(), [getattr(f, q) for q in QUALITY]])
        labels.append(1 if frac >= 0.99 else 0 if frac <= 0.0 else -1)
    return (
        np.array(rows).reshape(-1, len(FEATURES) + len(QUALITY)),
        np.array(labels, dtype=np.int64),
        np.array(ends),
    )


def qrs_power(rec, lead: int) -> float:
    """nstdb signal power: (median peak-to-peak QRS amplitude)^2 / 8."""
    x = rec.signal[:, lead]
    half = int(round(0.05 * rec.fs))
    peaks = rec.ann_samples[beat_mask(rec.ann_symbols)]
    pp = [np.ptp(x[max(0, p - half) : p + half + 1]) for p in peaks.tolist()]
    return float(np.median(pp)) ** 2 / 8.0


def add_noise(rec, noise: np.ndarray, snr_db: float, lead: int) -> np.ndarray:
    """The record's lead with the noise lead scaled to `snr_db` (same rate assumed)."""
    x = rec.signal[:, lead]
    nz = np.resize(noise, x.size) - float(np.mean(noise))
    gain = math.sqrt(qrs_power(rec, lead) / (float(np.mean(nz**2)) * 10 ** (snr_db / 10)))
    return x + gain * nz


def build(data: Path) -> dict[str, np.ndarray]:
    X, y, group, kind, t_end = [], [], [], [], []

    def put(rows: np.ndarray, labels: np.ndarray, ends: np.ndarray, g: str, k: str) -> None:
        X.append(rows)
        y.append(labels)
        t_end.append(ends)
        group.extend([g] * len(labels))
        kind.extend([k] * len(labels))

    cudb = data / "cudb"
    for name in (cudb / "RECORDS").read_text().split():
        rec = load_record(name, cudb)
        put(*windows(rec.lead(0), rec.fs, vf_mask(rec, rec.n_samples)), name, "cudb")
    mitdb = data / "mitdb"
    noise = {k: load_record(k, data / "nstdb-noise", annotations=False) for k in ("em", "ma")}
    for name in DS1:
        rec = load_record(name, mitdb)
        mask = vf_mask(rec, rec.n_samples) | rhythm_vf_mask(name, mitdb, rec.n_samples)
        put(*windows(rec.lead(0), rec.fs, mask), name, "mitdb")
        for k, nrec in noise.items():
            for snr in (6.0, 0.0, -6.0):
                x = add_noise(rec, nrec.signal[:, 0], snr, 0)
                put(*windows(x, rec.fs, mask), name, f"{k}{snr:g}")
    return {
        "X": np.concatenate(X),
        "y": np.concatenate(y),
        "group": np.array(group),
        "kind": np.array(kind),
        "t_end": np.concatenate(t_end),
    }


def fit(z: np.ndarray, y: np.ndarray, lam: float = 1e-2):
    """Class-balanced L2 logistic regression (Newton): (mu, sd, b) on standardised inputs."""
    w = np.where(y == 1, 0.5 / max(1e-9, (y == 1).mean()), 0.5 / max(1e-9, (y == 0).mean()))
    mu, sd = z.mean(0), z.std(0) + 1e-9
    a = np.column_stack([np.ones(len(z)), (z - mu) / sd])
    b = np.zeros(a.shape[1])
    for _ in range(30):
        p = 1 / (1 + np.exp(-(a @ b)))
        h = a.T @ (a * (w * p * (1 - p))[:, None]) + lam * np.eye(len(b))
        b -= np.linalg.solve(h, a.T @ (w * (p - y)) + lam * b)
    return mu, sd, b


def predict(model, z: np.ndarray) -> np.ndarray:
    mu, sd, b = model
    return 1 / (1 + np.exp(-(b[0] + ((z - mu) / sd) @ b[1:])))


def cross_validate(d: dict[str, np.ndarray], folds: int = 6) -> np.ndarray:
    """Out-of-fold probabilities, folds by record (a mitdb record with its noisy copies)."""
    z, y, g = transform(d["X"][:, : len(FEATURES)]), d["y"], d["group"]
    ok = y >= 0
    names = sorted(set(g.tolist()))
    cu = [n for n in names if n.startswith("cu")]
    mit = [n for n in names if not n.startswith("cu")]
    p = np.full(len(y), np.nan)
    for i in range(folds):
        test = np.isin(g, cu[i::folds] + mit[i::folds])
        model = fit(z[ok & ~test], y[ok & ~test])
        p[test] = predict(model, z[test])
    return p


def episodes(data: Path, names: list[tuple[str, str]]) -> None:
    """The live detector (RhythmAnalyser, 0.5 s chunks, all leads) on whole records: delay from
    each reference VF onset (`[` or `(VF`/`(VFL`) to the decision, and VF starts outside."""
    from detector.rhythms import RhythmAnalyser

    delays, missed, false_starts, hours = [], 0, 0, 0.0
    for folder, name in names:
        rec = load_record(name, data / folder)
        mask = vf_mask(rec, rec.n_samples)
        if folder == "mitdb":
            mask |= rhythm_vf_mask(name, data / folder, rec.n_samples)
        onsets = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8)]) == 1) / rec.fs
        ends = np.flatnonzero(np.diff(np.r_[mask.astype(np.int8), 0]) == -1) / rec.fs
        a, step, starts = RhythmAnalyser(), int(rec.fs / 2), []
        for i in range(0, rec.n_samples, step):
            for c in a.feed_samples(rec.signal[i : i + step], rec.fs, i / rec.fs):
                if c.type == "vf" and c.active:
                    starts.append(c.detail["detected_t"])
        hours += rec.n_samples / rec.fs / 3600
        for on, end in zip(onsets, ends, strict=True):
            hit = [t - on for t in starts if on - 1.0 <= t <= min(on + 10.0, end + 1.0)]
            if hit:
                delays.append(hit[0])
            else:
                missed += 1
        inside = [
            any(o - 2.0 <= t <= e + 2.0 for o, e in zip(onsets, ends, strict=True)) for t in starts
        ]
        false_starts += inside.count(False)
    d = np.array(delays)
    print(
        f"  {len(d) + missed} VF episodes, {len(d)} decided within 10 s"
        f" (delay p50 {np.median(d):.1f} s, p90 {np.percentile(d, 90):.1f} s, max {d.max():.1f} s);"
        f" {false_starts} VF starts outside VF +-2 s in {hours:.1f} h"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/vf_design.npz"))
    ap.add_argument("--episodes", action="store_true", help="only the live episode check")
    args = ap.parse_args()
    if args.episodes:
        cudb = (args.data / "cudb" / "RECORDS").read_text().split()
        print("cudb (in-sample: the model is fitted on these records):")
        episodes(args.data, [("cudb", n) for n in cudb])
        print("MIT-BIH DS1 (in-sample):")
        episodes(args.data, [("mitdb", n) for n in DS1])
        return
    if args.out.exists():
        d = dict(np.load(args.out))
    else:
        d = build(args.data)
        arrays: dict[str, Any] = d  # the stubs would let ** fill allow_pickle
        np.savez(args.out, **arrays)
    p = cross_validate(d)
    y, kind = d["y"], d["kind"]
    print("record-wise 6-fold CV, share of windows with p >= threshold (VF windows | others):")
    for th in (0.5, 0.8, 0.9, 0.95):
        cells = []
        for k in sorted(set(kind.tolist())):
            pos, neg = (kind == k) & (y == 1), (kind == k) & (y == 0)
            cells.append(f"{k} {np.mean(p[pos] >= th):.3f}|{np.mean(p[neg] >= th):.4f}")
        print(f"  p>={th}: " + ", ".join(cells))
    ok = y >= 0
    mu, sd, b = fit(transform(d["X"][ok, : len(FEATURES)]), y[ok])
    np.set_printoptions(precision=5, suppress=True, floatmode="maxprec")
    print("MU =", repr(mu), "\nSD =", repr(sd), "\nB =", repr(b))


if __name__ == "__main__":
    main()
