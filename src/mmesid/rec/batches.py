"""Training examples for the two schemes.

"all-positions" (default): each training sequence (s[:-2], cut into windows of max_len + 1 items) is
ONE prompt holding the window's history; with a causal backbone the hidden state at history item j
predicts item j + 1 and the final prompt position predicts the window's last item. One forward pass
thus covers every prefix (s[:t] -> s[t]) of the authors' training set, each target exactly once.

"prefix" (the authors' scheme): every prefix (s[:t] -> s[t]) is its own prompt and only the final
prompt position is trained. Same targets, many more forward passes.

The order of the examples is a pure function of (seed, epoch) (`epoch_batches`), so an interrupted
run resumes to exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data.split import train_examples, train_sequences


class TrainExamples:
    """Fixed list of (history, position targets, final target); batches are index sets into it."""

    def __init__(self, sequences: list[np.ndarray], max_len: int, scheme: str):
        self.max_len = max_len
        self.scheme = scheme
        self.hist: list[np.ndarray] = []
        self.pos: list[np.ndarray] = []
        self.final: list[int] = []
        if scheme == "prefix":
            for h, t in train_examples(sequences, max_len):
                self.hist.append(np.asarray(h, dtype=np.int64))
                self.pos.append(np.zeros(len(h), dtype=np.int64))
                self.final.append(t)
        elif scheme == "all-positions":
            for s in train_sequences(sequences):
                end = len(s)
                while end > 1:
                    start = max(0, end - 1 - max_len)
                    w = np.asarray(s[start:end], dtype=np.int64)
                    h = w[:-1]
                    pos = np.zeros(len(h), dtype=np.int64)
                    pos[:-1] = w[1:-1]  # position j predicts w[j+1]; the last one is the prompt's job
                    self.hist.append(h)
                    self.pos.append(pos)
                    self.final.append(int(w[-1]))
                    end -= max_len
        else:
            raise ValueError(f"unknown training scheme {scheme!r}")

    def __len__(self) -> int:
        return len(self.final)

    @property
    def n_targets(self) -> int:
        return int(len(self.final) + sum(int((p > 0).sum()) for p in self.pos))

    def batch(self, idx) -> dict[str, torch.Tensor]:
        """Right-padded tensors for the examples `idx`."""
        idx = list(idx)
        T = max(1, max(len(self.hist[i]) for i in idx))
        right = torch.zeros(len(idx), T, dtype=torch.long)
        pos = torch.zeros(len(idx), T, dtype=torch.long)
        lengths = torch.zeros(len(idx), dtype=torch.long)
        for r, i in enumerate(idx):
            n = len(self.hist[i])
            right[r, :n] = torch.from_numpy(self.hist[i])
            pos[r, :n] = torch.from_numpy(self.pos[i])
            lengths[r] = n
        final = torch.tensor([self.final[i] for i in idx], dtype=torch.long)
        return {"right": right, "lengths": lengths, "pos_targets": pos, "final_targets": final}


def plan(n_examples: int, batch_size: int, grad_accum: int, world: int, epochs: int, max_steps: int) -> dict:
    """Micro-batches per epoch, optimiser steps per epoch and in total (max_steps caps epochs)."""
    micro = math.ceil(n_examples / (batch_size * world))
    steps_per_epoch = math.ceil(micro / grad_accum)
    total = steps_per_epoch * epochs if epochs else max_steps
    if max_steps:
        total = min(total, max_steps) if epochs else max_steps
    return {"micro_per_epoch": micro, "steps_per_epoch": steps_per_epoch, "total_steps": total}


def epoch_batches(lengths: np.ndarray, batch_size: int, world: int, seed: int, epoch: int,
                  bucketing: bool = True) -> list[list[int]]:
    """The global micro-batches of one epoch (batch_size * world prompts each).

    With length bucketing, a random permutation is cut into pools of 50 micro-batches, each pool is
    sorted by prompt length and cut into micro-batches, and the micro-batches are shuffled again.
    """
    gen = torch.Generator().manual_seed(seed * 1000 + epoch)
    perm = torch.randperm(len(lengths), generator=gen).numpy()
    g = batch_size * world
    if not bucketing:
        return [perm[i:i + g].tolist() for i in range(0, len(perm), g)]
    pool = g * 50
    batches = []
    for lo in range(0, len(perm), pool):
        part = perm[lo:lo + pool]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + g].tolist() for i in range(0, len(part), g)]
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in order]
