"""Autoencoders (PyTorch): the LSTM beat model and the two baselines it is compared with.

Every model maps windows (B, L) to (error (B,), per-timestep squared error (B, L)), so the ONNX
graph already outputs what the detector needs.
"""

from __future__ import annotations

import torch
from torch import nn


class _ErrorHead(nn.Module):
    """Shared forward: reconstruct, then squared error per timestep and its mean."""

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per_t = (self.reconstruct(x) - x) ** 2
        return per_t.mean(dim=1), per_t


N_CLOCK = 4


def clock(x: torch.Tensor) -> torch.Tensor:
    """(B, L, N_CLOCK) sinusoids of the step index, the same for every beat: a time base."""
    n = x.shape[1]
    t = torch.arange(n, dtype=x.dtype, device=x.device) / n
    k = torch.arange(1, N_CLOCK // 2 + 1, dtype=x.dtype, device=x.device)
    ang = 3.141592653589793 * t[:, None] * k[None, :]
    base = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
    return base.unsqueeze(0) + torch.zeros_like(x).unsqueeze(-1)


class LSTMAutoencoder(_ErrorHead):
    """LSTM encoder -> latent -> LSTM decoder whose initial state carries the latent.

    The decoder's input is all zeros, so its input projection is a constant that folds into the
    gate biases: the latent enters once, as the initial (h, c), instead of at every step.
    """

    def __init__(self, hidden: int = 24, latent: int = 12, mode: str = "clock") -> None:
        super().__init__()
        self.hidden, self.latent, self.mode = hidden, latent, mode
        self.encoder = nn.LSTM(1, hidden, batch_first=True)
        self.to_latent = nn.Linear(hidden, latent)
        self.to_state = nn.Linear(latent, 2 * hidden)
        n_in = latent if mode == "repeat" else N_CLOCK
        self.decoder = nn.LSTM(n_in, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.unsqueeze(-1)
        _, (h, _) = self.encoder(seq)
        z = torch.tanh(self.to_latent(h[-1]))
        h0, c0 = torch.tanh(self.to_state(z)).chunk(2, dim=-1)
        if self.mode == "repeat":
            dec_in = z.unsqueeze(1).expand(-1, x.shape[1], -1)
        else:
            dec_in = clock(x)
        dec, _ = self.decoder(dec_in, (h0.unsqueeze(0), c0.unsqueeze(0)))
        return self.out(dec).squeeze(-1)


class CNNAutoencoder(_ErrorHead):
    """1-D convolutional autoencoder baseline (same windows, same training)."""

    def __init__(self, n_points: int = 64, channels: int = 16, latent: int = 12) -> None:
        super().__init__()
        if n_points % 4:
            raise ValueError(f"n_points must be a multiple of 4, got {n_points}")
        self.n_points = n_points
        c = channels
        self.enc = nn.Sequential(
            nn.Conv1d(1, c, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv1d(c, c, 5, stride=2, padding=2),
            nn.ReLU(),
        )
        self.to_latent = nn.Linear(c * n_points // 4, latent)
        self.from_latent = nn.Linear(latent, c * n_points // 4)
        self.dec = nn.Sequential(
            nn.ConvTranspose1d(c, c, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose1d(c, 1, 4, stride=2, padding=1),
        )
        self.c = c

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        h = self.enc(x.unsqueeze(1)).flatten(1)
        z = torch.tanh(self.to_latent(h))
        h = torch.relu(self.from_latent(z)).view(-1, self.c, self.n_points // 4)
        return self.dec(h).squeeze(1)


class SeedLSTMAutoencoder(_ErrorHead):
    """The seed's configuration: 64-unit LSTM encoder, latent repeated into a 64-unit decoder."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.encoder = nn.LSTM(1, hidden, batch_first=True)
        self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.encoder(x.unsqueeze(-1))
        rep = h[-1].unsqueeze(1).expand(-1, x.shape[1], -1)
        dec, _ = self.decoder(rep)
        return self.out(dec).squeeze(-1)
