"""Full-ranking evaluation shared by every model.

A model is anything with `scores(histories) -> Tensor[B, n_items + 1]`, where `histories` is a
LongTensor [B, T] of item ids right-aligned and left-padded with 0 (see `data.split.pad_left`), and
column i of the result scores item id i (column 0, padding, is ignored). The evaluator knows no model
class.

Ranking is over all items. Items of the user's full history are excluded (set to -inf) before the
target is ranked; Amazon 5-core sequences have no repeated items, so the target is never one of
them. Ties are counted against the target (pessimistic rank), so a constant scorer gets the worst
rank rather than the best.

Scores must be finite or -inf (-inf is how a model excludes an item). A NaN or +inf score means the
model diverged: it would give rank -1, HR 1.0 or an infinite nDCG, so it is refused, naming how many
users it hit, instead of being reported as a result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from ..data.split import MAX_HISTORY, EvalExamples, pad_left
from ..errors import MmesidError

DEFAULT_KS = (5, 10, 20)
TEST_RANKS = "test_ranks.npy"  # what every trained run keeps of its test pass, for paired tests between runs


def user_ranks(examples: EvalExamples, ranks: np.ndarray) -> np.ndarray:
    """[users, 2] int64 rows (user number, 0-based rank of the target): the format of a run's
    test_ranks.npy and of `mmesid evaluate --ranks-out`, which benchmarks/paired_test.py matches by user."""
    ranks = np.asarray(ranks)
    if len(ranks) != len(examples):
        raise MmesidError(f"{len(ranks)} ranks for {len(examples)} users")
    return np.stack([np.asarray(examples.users), ranks], 1).astype(np.int64)


class Scorer(Protocol):
    def scores(self, histories: torch.Tensor) -> torch.Tensor: ...


def check_scores(scores: torch.Tensor) -> None:
    """Refuse NaN / +inf item scores (column 0, padding, is ignored); -inf is allowed."""
    items = scores[:, 1:]
    bad = (torch.isnan(items) | torch.isposinf(items)).any(1)
    n_bad = int(bad.sum())
    if n_bad:
        raise MmesidError(f"scores contain NaN/inf for {n_bad} users (of {scores.shape[0]} in this batch); "
                          "the model diverged")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: list[np.ndarray]) -> torch.Tensor:
    """0-based rank of each target among all items, history items excluded, ties pessimistic."""
    check_scores(scores)
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
    """HR@k and nDCG@k of 0-based ranks; a negative rank or a non-finite metric is refused."""
    out = {}
    ranks = np.asarray(ranks)
    if len(ranks) and ranks.min() < 0:
        raise MmesidError(f"negative target rank {int(ranks.min())}: the scores were not comparable")
    for k in ks:
        hit = ranks < k
        out[f"HR@{k}"] = float(hit.mean()) if len(ranks) else 0.0
        out[f"nDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()) if len(ranks) else 0.0
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        raise MmesidError(f"metric {bad[0]} is {out[bad[0]]}; the scores were not comparable")
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
    """HR@k and nDCG@k averaged over all examples (one per user), plus wall time.

    Users are scored in batches of similar history length (each batch is padded to its longest
    history only): the ranks do not depend on the batching, and a model whose cost grows with the
    history length (an LLM) does several times less work than with batches in user order. Ranks are
    returned in the examples' own order."""
    fn = scorer.scores if hasattr(scorer, "scores") else scorer
    if batch_size < 1:
        raise MmesidError(f"batch size must be at least 1, got {batch_size}")
    start = time.perf_counter()
    n = len(examples)
    lengths = np.fromiter((min(len(h), max_len) for h in examples.histories), dtype=np.int64, count=n)
    order = np.argsort(lengths, kind="stable")
    ranks = np.zeros(n, dtype=np.int64)
    for lo in tqdm(range(0, n, batch_size), desc="evaluate", disable=not progress, leave=False):
        idx = order[lo:lo + batch_size]
        hist = [examples.histories[i] for i in idx]
        targets = examples.targets[idx]
        batch = pad_left(hist, max_len).to(device)
        s = fn(batch)
        if s.ndim != 2 or s.shape[0] != len(idx) or s.shape[1] <= int(np.max(targets)):
            raise MmesidError(f"the model returned scores of shape {tuple(s.shape)} for {len(idx)} users; "
                              "expected [users, n_items + 1]")
        tgt = torch.as_tensor(targets, device=s.device)
        ranks[idx] = target_ranks(s, tgt, hist).cpu().numpy()
    out = metrics_from_ranks(ranks, ks)
    out["users"] = int(n)
    out["eval_seconds"] = round(time.perf_counter() - start, 3)
    if return_ranks:
        out["ranks"] = ranks
    return out
