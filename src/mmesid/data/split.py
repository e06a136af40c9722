"""Leave-one-out split, exactly as the MME-SID authors do it.

For a sequence s[0..n-1]: test is (s[:-1] -> s[-1]), validation (s[:-2] -> s[-2]), and training
examples are every prefix inside s[:-2], (s[:t] -> s[t]) for t >= 1. Histories keep at most the
last `max_len` items (50 by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MAX_HISTORY = 50


def train_sequences(sequences: list[np.ndarray]) -> list[np.ndarray]:
    """The part of each sequence a model may train on: everything but the last two items."""
    return [s[:-2] for s in sequences]


@dataclass
class EvalExamples:
    """Histories and targets of one evaluation split (one example per user)."""

    histories: list[np.ndarray]  # full history (exclusion uses all of it)
    targets: np.ndarray  # int64 [n]
    users: np.ndarray  # int64 [n]

    def __len__(self) -> int:
        return len(self.targets)


def eval_examples(sequences: list[np.ndarray], split: str) -> EvalExamples:
    """`split` is 'valid' (s[:-2] -> s[-2]) or 'test' (s[:-1] -> s[-1])."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    cut = 2 if split == "valid" else 1
    hist = [s[:-cut] for s in sequences]
    targets = np.array([s[-cut] for s in sequences], dtype=np.int64)
    return EvalExamples(hist, targets, np.arange(len(sequences), dtype=np.int64))


def train_examples(sequences: list[np.ndarray], max_len: int = MAX_HISTORY):
    """Every training prefix as (history, target) pairs; the authors' per-prefix scheme."""
    out = []
    for s in train_sequences(sequences):
        for t in range(1, len(s)):
            out.append((s[max(0, t - max_len):t], int(s[t])))
    return out


def pad_left(histories: list[np.ndarray], max_len: int = MAX_HISTORY) -> torch.Tensor:
    """Right-align the last `max_len` items of each history in a [B, T] LongTensor padded with 0."""
    T = min(max_len, max((len(h) for h in histories), default=1)) or 1
    out = torch.zeros(len(histories), T, dtype=torch.long)
    for i, h in enumerate(histories):
        h = h[-T:]
        if len(h):
            out[i, T - len(h):] = torch.as_tensor(np.asarray(h), dtype=torch.long)
    return out


def sample_examples(ex: EvalExamples, n: int, seed: int) -> EvalExamples:
    """A fixed random sample of `n` users (all when n is 0 or too large), in their original order."""
    if n <= 0 or n >= len(ex):
        return ex
    idx = np.sort(np.random.default_rng(seed).choice(len(ex), n, replace=False))
    return EvalExamples([ex.histories[i] for i in idx], ex.targets[idx], ex.users[idx])
