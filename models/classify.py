"""Train the beat-class network on DS1 only; record-wise CV; export ONNX + manifest.

    python -m models.classify --data-dir ../shared/data/mitdb            # train + export
    python -m models.classify --data-dir ../shared/data/mitdb --cv-only  # CV report only
    python -m models.classify --data-dir ../shared/data/mitdb --cv-only --seed 0 1  # one net each

Features are `detector.classifier.beat_features` of each DS1 record run through the live
detector path (`models.classify_data`). The network is a small MLP (two hidden layers, ReLU,
softmax over N, S, V, F) trained with class weights (inverse class frequency to the power
`weight_power`). Hyper-parameters and the decision offsets (per-class log-probability offsets,
argmax of log p + offset) are chosen by record-wise cross-validation within DS1: each fold's
records are classified by a network that never saw them, and the offsets maximise the EC57
gross VEB and SVEB Se and +P on those out-of-fold predictions. DS2 is never read here.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ecgcommon.aami import DS1
from ecgcommon.model_contract.beat_classes import (
    FEATURES,
    GRID_HZ,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    MODEL_FILE,
)
from ecgcommon.model_contract.manifest import DEFAULT_MODEL_DIR, sha256_file
from ecgcommon.records import resolve_data_dir
from models.classify_data import load_records
from models.dataset import data_file_hashes

CLASSES = ("N", "S", "V", "F")
CV_FOLDS = 6
OPSET = 17


@dataclass(frozen=True)
class NetConfig:
    """MLP and training hyper-parameters."""

    hidden: int = 32
    weight_power: float = 1.0  # class weight = (n_total / n_class) ** weight_power
    weight_decay: float = 0.05
    epochs: int = 25
    lr: float = 3e-3
    batch_size: int = 512
    seed: int = 0
    ensemble: int = 1  # networks (seeds seed, seed + 1, ...) whose probabilities are averaged


# The ectopic head sees morphology and autoencoder features only: whether a beat is ventricular
# is a question of shape, so prematurity cannot push a wide beat into S (or a narrow one into V).
RHYTHM_FEATURES = (
    "rr_ratio",
    "prev_ratio",
    "short_ratio",
    "rr_step",
    "irregularity",
    "prematurity_z",
    "prev_qrs_decorr",
)
MORPH_INDEX = tuple(i for i, f in enumerate(FEATURES) if f not in RHYTHM_FEATURES)


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    if hidden == 0:  # linear (multinomial logistic) head
        return nn.Sequential(nn.Linear(n_in, n_out))
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_out),
    )


class BeatNet(nn.Module):
    """Standardised features -> probabilities of N, S, V, F, from two heads:
    ectopic (morphology only: N-or-S, V, F) and supraventricular (all features: N, S)."""

    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.morph: torch.Tensor
        self.register_buffer("morph", torch.tensor(MORPH_INDEX, dtype=torch.int64))
        self.ectopic = _mlp(len(MORPH_INDEX), hidden, 3)
        self.supra = _mlp(n_in, hidden, 2)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ectopic logits (n, 3), supraventricular logits (n, 2))."""
        return self.ectopic(torch.index_select(x, 1, self.morph)), self.supra(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.heads(x)
        pa, pb = torch.softmax(a, dim=-1), torch.softmax(b, dim=-1)
        return torch.cat([pa[:, :1] * pb, pa[:, 1:]], dim=1)


@dataclass(frozen=True)
class Data:
    """DS1 beats with a class in CLASSES: raw features, class index, record name."""

    x: np.ndarray
    y: np.ndarray
    records: np.ndarray


def load_data(records: tuple[str, ...], data_dir: Path) -> Data:
    """Features of the detected, matched beats of `records` (classes outside CLASSES dropped)."""
    xs, ys, rs = [], [], []
    for rb in load_records(records, data_dir):
        f = rb.features()
        keep = np.isin(rb.labels, CLASSES)
        xs.append(f[keep])
        ys.append(np.array([CLASSES.index(c) for c in rb.labels[keep]], dtype=np.int64))
        rs.append(np.full(int(keep.sum()), rb.name))
    return Data(np.concatenate(xs), np.concatenate(ys), np.concatenate(rs))


class Ensemble(nn.Module):
    """The mean of its members' probabilities (seed-to-seed variance of one small net on 22
    training patients is large: DS1 CV objective 1.416 with seed 0, 1.294 with seed 1)."""

    def __init__(self, n_in: int, hidden: int, members: int) -> None:
        super().__init__()
        self.members = nn.ModuleList(BeatNet(n_in, hidden) for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


def fit_model(
    x: np.ndarray, y: np.ndarray, cfg: NetConfig
) -> tuple[Ensemble, np.ndarray, np.ndarray]:
    """(ensemble, mean, scale): `cfg.ensemble` networks, seeds cfg.seed, cfg.seed + 1, ..."""
    model = Ensemble(x.shape[1], cfg.hidden, cfg.ensemble)
    mean = scale = np.zeros(0)
    for k in range(cfg.ensemble):
        net, mean, scale = fit_net(x, y, replace(cfg, seed=cfg.seed + k))
        model.members[k].load_state_dict(net.state_dict())
    model.eval()
    return model, mean, scale


def fit_net(x: np.ndarray, y: np.ndarray, cfg: NetConfig) -> tuple[BeatNet, np.ndarray, np.ndarray]:
    """(network, mean, scale): trained on standardised x with class-weighted cross-entropy."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(cfg.seed)
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    xt = torch.from_numpy(((x - mean) / scale).astype(np.float32))
    yt = torch.from_numpy(y)
    # ectopic head: 0 = N or S, 1 = V, 2 = F; supraventricular head (N and S beats): 0 = N, 1 = S
    y1 = torch.from_numpy(np.select([y == 2, y == 3], [1, 2], 0))
    ns = torch.from_numpy(y <= 1)
    net = BeatNet(x.shape[1], cfg.hidden)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    ce1 = nn.CrossEntropyLoss(weight=_weights(y1.numpy(), 3, cfg.weight_power))
    ce2 = nn.CrossEntropyLoss(weight=_weights(y[y <= 1], 2, cfg.weight_power))
    for _ in range(cfg.epochs):
        net.train()
        order = torch.from_numpy(rng.permutation(len(xt)))
        for i in range(0, len(xt), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            a, b = net.heads(xt[idx])
            m = ns[idx]
            loss = ce1(a, y1[idx]) + (ce2(b[m], yt[idx][m]) if bool(m.any()) else 0.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    net.eval()
    return net, mean, scale


def _weights(y: np.ndarray, k: int, power: float) -> torch.Tensor:
    """Class weights (n / n_class) ** power, scaled to a mean weight of 1 per beat."""
    counts = np.bincount(y, minlength=k).astype(np.float64)
    w = (counts.sum() / np.maximum(counts, 1.0)) ** power
    w = w / (w * counts).sum() * counts.sum()
    return torch.tensor(w, dtype=torch.float32)


def predict_proba(net: nn.Module, mean: np.ndarray, scale: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Class probabilities in torch (the reference the ONNX export is checked against)."""
    with torch.no_grad():
        z = torch.from_numpy(((x - mean) / scale).astype(np.float32))
        return net(z).numpy()


def folds(records: np.ndarray, k: int = CV_FOLDS) -> list[tuple[str, ...]]:
    """k groups of DS1 records, dealt in DS1 order (fixed, so every run uses the same folds)."""
    names = [r for r in DS1 if r in set(records.tolist())]
    return [tuple(names[i::k]) for i in range(k)]


_OOF: dict[str, np.ndarray] = {}


def oof_proba(data: Data, cfg: NetConfig) -> np.ndarray:
    """Out-of-fold probabilities: each record's beats from a network trained without it
    (memoised per configuration and data within one run: `train` reuses the CV's)."""
    key = json.dumps([asdict(cfg), len(data.y), float(data.x.sum())])
    if key in _OOF:
        return _OOF[key]
    out = np.zeros((len(data.y), len(CLASSES)), dtype=np.float32)
    for held in folds(data.records):
        m = np.isin(data.records, held)
        net, mean, scale = fit_model(data.x[~m], data.y[~m], cfg)
        out[m] = predict_proba(net, mean, scale, data.x[m])
    _OOF[key] = out
    return out


def gross(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """EC57-style gross VEB and SVEB Se / +P (class indices into CLASSES).

    VEB false positives are N and S beats called V (F beats called V are not counted, as in
    EC57); SVEB false positives are N, V and F beats called S.
    """
    v, s = CLASSES.index("V"), CLASSES.index("S")
    n, f = CLASSES.index("N"), CLASSES.index("F")
    tp_v = int(((y == v) & (pred == v)).sum())
    fn_v = int(((y == v) & (pred != v)).sum())
    fp_v = int((np.isin(y, (n, s)) & (pred == v)).sum())
    tp_s = int(((y == s) & (pred == s)).sum())
    fn_s = int(((y == s) & (pred != s)).sum())
    fp_s = int((np.isin(y, (n, v, f)) & (pred == s)).sum())
    return {
        "veb_se": tp_v / max(1, tp_v + fn_v),
        "veb_ppv": tp_v / max(1, tp_v + fp_v),
        "sveb_se": tp_s / max(1, tp_s + fn_s),
        "sveb_ppv": tp_s / max(1, tp_s + fp_s),
    }


TARGETS = {"veb_se": 0.95, "veb_ppv": 0.95, "sveb_se": 0.85, "sveb_ppv": 0.75}  # issue 8


def objective(g: dict[str, float]) -> float:
    """What the offsets and hyper-parameters maximise: for VEB and for SVEB, the harmonic mean
    of Se and +P, each as a fraction of its issue-8 target capped at 1 (no credit beyond the
    target, and no degenerate point with one figure high and the other near 0), plus a small
    tie-break on the uncapped figures."""
    total = 0.0
    for c in ("veb", "sveb"):
        a = min(g[f"{c}_se"] / TARGETS[f"{c}_se"], 1.0)
        b = min(g[f"{c}_ppv"] / TARGETS[f"{c}_ppv"], 1.0)
        total += 2 * a * b / (a + b) if a + b > 0 else 0.0
    return total + 0.01 * sum(g.values())


OFFSET_GRID = np.round(np.arange(-6.0, 3.01, 0.5), 2)


def choose_offsets(y: np.ndarray, proba: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """Per-class log offsets (N fixed at 0) maximising `objective` on these predictions."""
    logp = np.log(np.maximum(proba, 1e-12))
    best, best_off, best_g = -np.inf, (0.0, 0.0, 0.0), {}
    for off in itertools.product(OFFSET_GRID, OFFSET_GRID, OFFSET_GRID):
        pred = np.argmax(logp + np.array((0.0, *off)), axis=1)
        g = gross(y, pred)
        val = objective(g)
        if val > best:
            best, best_off, best_g = val, off, g
    return {c: float(o) for c, o in zip(CLASSES, (0.0, *best_off), strict=True)}, best_g


# one seed against another moved the DS1 CV objective by 0.12 (docs/model.md): the 3-seed mean
# is what a retrain can expect, so it is the only configuration (it was chosen against 1 seed)
GRID = {"ensemble": (3,)}


def cross_validate(data: Data, grid: dict[str, tuple] = GRID) -> list[dict[str, Any]]:
    """CV of every configuration in `grid` (offsets chosen on the same out-of-fold predictions)."""
    rows = []
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        cfg = NetConfig(**dict(zip(keys, values, strict=True)))
        t0 = time.time()
        proba = oof_proba(data, cfg)
        offsets, g = choose_offsets(data.y, proba)
        raw = gross(data.y, proba.argmax(axis=1))
        row = {
            "config": asdict(cfg),
            "offsets": offsets,
            "gross": g,
            "gross_argmax": raw,
            "objective": objective(g),
            "seconds": round(time.time() - t0, 1),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def per_record(data: Data, proba: np.ndarray, offsets: dict[str, float]) -> dict[str, Any]:
    """Out-of-fold gross figures per DS1 record (which records the choices rest on)."""
    off = np.array([offsets[c] for c in CLASSES])
    pred = np.argmax(np.log(np.maximum(proba, 1e-12)) + off, axis=1)
    out = {}
    for name in dict.fromkeys(data.records.tolist()):
        m = data.records == name
        counts = {c: int((data.y[m] == i).sum()) for i, c in enumerate(CLASSES)}
        out[name] = {"n": counts, **{k: round(v, 4) for k, v in gross(data.y[m], pred[m]).items()}}
    return out


def export(net: torch.nn.Module, path: Path) -> None:
    """ONNX (opset 17, dynamic batch): standardised features -> probabilities."""
    dummy = torch.zeros(2, len(FEATURES))
    torch.onnx.export(
        net,
        (dummy,),
        str(path),
        input_names=["features"],
        output_names=["probs"],
        dynamic_axes={"features": {0: "n"}, "probs": {0: "n"}},
        opset_version=OPSET,
        dynamo=False,
    )


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def train(data_dir: Path, out: Path, cfg: NetConfig | None, cv: bool) -> dict[str, Any]:
    """Train on all DS1, export to `out`; with `cv`, run the CV grid first and take its best."""
    data = load_data(DS1, data_dir)
    rows = cross_validate(data) if cv else []
    if cfg is None:
        best = max(rows, key=lambda r: r["objective"]) if rows else None
        cfg = NetConfig(**best["config"]) if best else NetConfig()
    proba = oof_proba(data, cfg)
    offsets, g = choose_offsets(data.y, proba)
    net, mean, scale = fit_model(data.x, data.y, cfg)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / MODEL_FILE
    export(net, model_path)
    torch.save(net.state_dict(), out / "beat_classes.pt")
    import onnxruntime as ort  # train extra and run time both have it

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    z = ((data.x[:4096] - mean) / scale).astype(np.float32)
    parity = float(
        np.abs(
            sess.run(None, {"features": z})[0] - predict_proba(net, mean, scale, data.x[:4096])
        ).max()
    )
    manifest = {
        "format": MANIFEST_FORMAT,
        "model_sha256": sha256_file(model_path),
        "features": list(FEATURES),
        "grid_hz": GRID_HZ,
        "classes": list(CLASSES),
        "normalisation": {"mean": [float(v) for v in mean], "scale": [float(v) for v in scale]},
        "decision": {"rule": "argmax(log p + log_offsets)", "log_offsets": offsets},
        "net": asdict(cfg),
        "opset": OPSET,
        "torch_state_file": "beat_classes.pt",
        "torch_state_sha256": sha256_file(out / "beat_classes.pt"),
        "parity_max_abs_diff": parity,
        "training_records": list(DS1),
        "cv": {
            "folds": [list(f) for f in folds(data.records)],
            "chosen": {"config": asdict(cfg), "gross": g, "offsets": offsets},
            "grid": rows,
            "per_record": per_record(data, proba, offsets),
        },
        "n_beats": {c: int((data.y == i).sum()) for i, c in enumerate(CLASSES)},
        "data_sha256": data_file_hashes(DS1, data_dir),
        "git_commit": _git_commit(),
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    digest = hashlib.sha256((out / MANIFEST_FILE).read_bytes()).hexdigest()[:12]
    print(f"wrote {model_path} and {MANIFEST_FILE} ({digest}); DS1 CV gross {g}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(DEFAULT_MODEL_DIR))
    p.add_argument("--cv-only", action="store_true", help="print the CV grid, write nothing")
    p.add_argument("--no-cv", action="store_true", help="train the default NetConfig directly")
    p.add_argument("--seed", type=int, nargs="+", help="with --cv-only: these seeds (one net each)")
    a = p.parse_args(argv)
    data_dir = resolve_data_dir(a.data_dir)
    if a.cv_only:
        grid = {"seed": tuple(a.seed), "ensemble": (1,)} if a.seed else GRID
        cross_validate(load_data(DS1, data_dir), grid)
        return 0
    train(data_dir, Path(a.out), NetConfig() if a.no_cv else None, cv=not a.no_cv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
