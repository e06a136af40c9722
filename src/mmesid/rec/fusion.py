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
        self._frozen: tuple[tuple, torch.Tensor] | None = None  # inference cache, see weights()

    def weights(self) -> torch.Tensor:
        """[n_items + 1, n_sources] per-item weights (w_x first), rows sum to 1.

        They depend on the item frequencies and g's weights only, not on the user: without gradients
        they are computed once and reused (an MLP over the whole catalogue, ~10% of a single-user
        forward on CPU) until the module is switched between train and eval mode (training steps
        happen in train mode; fused optimisers do not bump version counters), g's parameters are
        changed in place (load_state_dict, copy_: their version counters), the temperature changes,
        or the module moves."""
        if torch.is_grad_enabled():
            return torch.softmax(self.g(self.q) / self.temperature, dim=-1)
        key = (self.temperature, self.q.device, *((p._version, p.dtype) for p in self.g.parameters()),
               *(id(p) for p in self.g.parameters()))
        if self._frozen is None or self._frozen[0] != key:
            self._frozen = (key, torch.softmax(self.g(self.q) / self.temperature, dim=-1))
        return self._frozen[1]

    def train(self, mode: bool = True):
        self._frozen = None
        return super().train(mode)

    def forward(self, scores: list[torch.Tensor]) -> torch.Tensor:
        """scores: k matrices [N, n_items + 1] (E_x first) -> fused scores [N, n_items + 1]."""
        w = self.weights().to(scores[0].dtype)
        out = 0
        for k, s in enumerate(scores):
            out = out + s * w[:, k]
        return out
