"""Full-ranking evaluation shared by every model.

A model is anything with `scores(histories) -> Tensor[B, n_items + 1]`, where `histories` is a
LongTensor [B, T] of item ids right-aligned and left-padded with 0 (see `data.split.pad_left`), and
column i of the result scores item id i (column 0, padding, is ignored). The evaluator knows no model
class.

Ranking is over all items. Items of the user's full history are excluded (set to -inf) before the
target is ranked; Amazon 5-core sequences have no repeated items, so the target is never one of
them. Ties are counted against the target (pessimistic rank), so a constant scorer gets the worst
rank rather than the best.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..data.split import MAX_HISTORY, EvalExamples, pad_left

DEFAULT_KS = (5, 10, 20)


class Scorer(Protocol):
    def scores(self, histories: torch.Tensor) -> torch.Tensor: ...


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: list[np.ndarray]) -> torch.Tensor:
    """0-based rank of each target among all items, history items excluded, ties pessimistic."""
    scores = scores.float().clone()
    scores[:, 0] = -math.inf
    rows = np.concatenate([np.full(len(h), i) for i, h in enumerate(exclude)]) if exclude else np.zeros(0)
    cols = np.concatenate([np.asarray(h) for h in exclude]) if exclude else np.zeros(0)
    if len(rows):
        idx_r = torch.as_tensor(rows, dtype=torch.long, device=scores.device)
        idx_c = torch.as_tensor(cols, dtype=torch.long, device=scores.device)
        keep = idx_c != targets[idx_r]  # never exclude the target itself
        scores[idx_r[keep], idx_c[keep]] = -math.inf
    t = scores.gather(1, targets.view(-1, 1))
    greater = (scores > t).sum(1)
    ties = (scores == t).sum(1) - 1
    return greater + ties


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    out = {}
    ranks = np.asarray(ranks)
    for k in ks:
        hit = ranks < k
        out[f"HR@{k}"] = float(hit.mean()) if len(ranks) else 0.0
        out[f"nDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()) if len(ranks) else 0.0
    return out


@torch.no_grad()
def evaluate(
    scorer: Scorer | Callable[[torch.Tensor], torch.Tensor],
    examples: EvalExamples,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 512,
    max_len: int = MAX_HISTORY,
    device: str | torch.device = "cpu",
    progress: bool = True,
    return_ranks: bool = False,
) -> dict:
    """HR@k and nDCG@k averaged over all examples (one per user), plus wall time."""
    fn = scorer.scores if hasattr(scorer, "scores") else scorer
    start = time.perf_counter()
    ranks = []
    n = len(examples)
    for lo in tqdm(range(0, n, batch_size), desc="evaluate", disable=not progress, leave=False):
        hi = min(n, lo + batch_size)
        hist = examples.histories[lo:hi]
        batch = pad_left(hist, max_len).to(device)
        s = fn(batch)
        tgt = torch.as_tensor(examples.targets[lo:hi], device=s.device)
        ranks.append(target_ranks(s, tgt, hist).cpu().numpy())
    ranks = np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)
    out = metrics_from_ranks(ranks, ks)
    out["users"] = int(n)
    out["eval_seconds"] = round(time.perf_counter() - start, 3)
    if return_ranks:
        out["ranks"] = ranks
    return out
