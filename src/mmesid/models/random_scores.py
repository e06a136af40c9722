"""Random baseline: every item gets an independent uniform score per user (the chance floor).

Seeded, so a rerun gives the same ranks; its expected HR@k is about k / (#items - history length)."""

from __future__ import annotations

import torch


class RandomScores:
    def __init__(self, n_items: int, seed: int = 0):
        self.n_rows = n_items + 1
        self.generator = torch.Generator().manual_seed(seed)

    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        s = torch.rand(histories.shape[0], self.n_rows, generator=self.generator)
        return s.to(histories.device)
