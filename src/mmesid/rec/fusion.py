"""Multimodal frequency-aware fusion (paper eq. 17-18).

q'' = minmax(log(q + 1)) of each item's training frequency; an MLP g (authors: 1-64-10-64-k) with a
temperature softmax gives per-item weights (w_x, w_j...), and the score of item i is
w_x * <o, E_x[i]> + sum_j w_j * <o, P_j(E_j[i])>. Without fusion the score is <o, E_x[i]>.
P_j is the same projection W_j, b_j that builds the history-item inputs (eq. 16 and 18 share it).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def normalised_log_frequency(freq: np.ndarray | torch.Tensor) -> torch.Tensor:
    q = torch.log(torch.as_tensor(np.asarray(freq), dtype=torch.float32) + 1.0)
    lo, hi = q[1:].min(), q[1:].max()  # row 0 is padding
    out = (q - lo) / (hi - lo) if hi > lo else torch.zeros_like(q)
    out[0] = 0.0
    return out


class FrequencyFusion(nn.Module):
    def __init__(self, freq, n_sources: int, hidden: list[int], temperature: float = 1.0):
        super().__init__()
        self.register_buffer("q", normalised_log_frequency(freq).unsqueeze(1), persistent=False)
        layers, d = [], 1
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, n_sources))
        self.g = nn.Sequential(*layers)
        self.temperature = temperature

    def weights(self) -> torch.Tensor:
        """[n_items + 1, n_sources] per-item weights (w_x first), rows sum to 1."""
        return torch.softmax(self.g(self.q) / self.temperature, dim=-1)

    def forward(self, scores: list[torch.Tensor]) -> torch.Tensor:
        """scores: k matrices [N, n_items + 1] (E_x first) -> fused scores [N, n_items + 1]."""
        w = self.weights().to(scores[0].dtype)
        out = 0
        for k, s in enumerate(scores):
            out = out + s * w[:, k]
        return out
