"""Train an autoencoder on normal beats: fixed seeds, progress bar, early stopping."""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm


@dataclass(frozen=True)
class FitConfig:
    """Training hyper-parameters (epochs, batch size, learning rate, early-stopping patience)."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 3e-3
    patience: int = 4
    seed: int = 0
    max_train_beats: int | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass
class FitResult:
    """Loss history and the epoch whose weights were kept."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1


def seed_everything(seed: int) -> None:
    """Fix Python, numpy and torch seeds (runs are reproducible on the same machine)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _mean_loss(model: nn.Module, x: torch.Tensor, batch: int) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            err, _ = model(x[i : i + batch])
            total += float(err.sum())
    return total / max(1, len(x))


def fit_autoencoder(
    model: nn.Module,
    train: np.ndarray,
    val: np.ndarray,
    config: FitConfig = FitConfig(),
    desc: str = "train",
    progress: bool = True,
) -> FitResult:
    """Minimise mean squared reconstruction error; keep the weights of the best val epoch."""
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.max_train_beats is not None and len(train) > config.max_train_beats:
        train = train[rng.choice(len(train), config.max_train_beats, replace=False)]
    xt = torch.from_numpy(np.ascontiguousarray(train, dtype=np.float32))
    xv = torch.from_numpy(np.ascontiguousarray(val, dtype=np.float32))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    result = FitResult()
    best, best_state, stale = float("inf"), copy.deepcopy(model.state_dict()), 0
    bar = tqdm(range(config.epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = torch.from_numpy(rng.permutation(len(xt)))
        total = 0.0
        for i in range(0, len(xt), config.batch_size):
            xb = xt[order[i : i + config.batch_size]]
            err, _ = model(xb)
            loss = err.mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item() * len(xb)
        result.train_loss.append(total / len(xt))
        v = _mean_loss(model, xv, 1024)
        result.val_loss.append(v)
        sched.step()
        bar.set_postfix(train=f"{result.train_loss[-1]:.4f}", val=f"{v:.4f}")
        if v < best - 1e-5:
            best, stale, result.best_epoch = v, 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return result


def errors(model: nn.Module, x: np.ndarray, batch: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(error (n,), per-timestep (n, L)) of a trained model, in torch."""
    model.eval()
    outs_e, outs_p = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            e, p = model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch], np.float32)))
            outs_e.append(e.numpy())
            outs_p.append(p.numpy())
    if not outs_e:
        return np.zeros(0, np.float32), np.zeros((0, x.shape[1]), np.float32)
    return np.concatenate(outs_e), np.concatenate(outs_p)
