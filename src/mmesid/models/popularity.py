"""Most-popular baseline: scores every item by its training-split frequency (a sanity floor)."""

from __future__ import annotations

import numpy as np
import torch


class Popularity:
    def __init__(self, item_freq: np.ndarray):
        self.freq = torch.as_tensor(item_freq, dtype=torch.float32)

    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        return self.freq.to(histories.device).expand(histories.shape[0], -1)
