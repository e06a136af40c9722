import math

import numpy as np
import torch

from mmesid.data.split import EvalExamples
from mmesid.eval import evaluate, metrics_from_ranks


class TableScorer:
    """Scores from a fixed [n_users, n_items + 1] table, served batch by batch in user order."""

    def __init__(self, table):
        self.table = torch.as_tensor(table)
        self.pos = 0

    def scores(self, histories):
        out = self.table[self.pos:self.pos + len(histories)]
        self.pos += len(histories)
        return out


def independent_metrics(table, histories, targets, ks):
    """Plain-python reference: sort all items, drop history, find the target's position."""
    out = {f"{m}@{k}": 0.0 for k in ks for m in ("HR", "nDCG")}
    for u in range(len(targets)):
        order = sorted(range(1, table.shape[1]), key=lambda i: -table[u, i])
        order = [i for i in order if i not in set(histories[u].tolist())]
        pos = order.index(targets[u])
        for k in ks:
            if pos < k:
                out[f"HR@{k}"] += 1 / len(targets)
                out[f"nDCG@{k}"] += 1 / math.log2(pos + 2) / len(targets)
    return out


def test_matches_independent_computation():
    rng = np.random.default_rng(0)
    n_users, n_items = 64, 40
    histories, targets = [], []
    for u in range(n_users):
        items = rng.choice(np.arange(1, n_items + 1), size=rng.integers(2, 12), replace=False)
        histories.append(items[:-1])
        targets.append(int(items[-1]))
    table = rng.standard_normal((n_users, n_items + 1)).astype(np.float32)
    ex = EvalExamples(histories, np.array(targets), np.arange(n_users))
    got = evaluate(TableScorer(table), ex, batch_size=7, progress=False)
    want = independent_metrics(table, histories, targets, (5, 10, 20))
    for k, v in want.items():
        assert abs(got[k] - v) < 1e-9, k
    assert 0 < got["HR@5"] < got["HR@20"] < 1  # the random case is not degenerate


def test_history_excluded_and_ties_pessimistic():
    ex = EvalExamples([np.array([1, 2])], np.array([3]), np.array([0]))
    s = torch.tensor([[0.0, 9.0, 8.0, 1.0, 0.5]])  # items 1,2 beat the target but are history
    assert evaluate(lambda h: s, ex, progress=False)["HR@5"] == 1.0
    r = evaluate(lambda h: s, ex, progress=False, return_ranks=True)["ranks"]
    assert r.tolist() == [0]
    const = torch.zeros(1, 30)
    assert evaluate(lambda h: const, ex, ks=(5,), progress=False)["HR@5"] == 0.0


def test_metrics_from_ranks():
    m = metrics_from_ranks(np.array([0, 1, 9, 25]), ks=(10,))
    assert m["HR@10"] == 0.75
    assert abs(m["nDCG@10"] - (1 + 1 / math.log2(3) + 1 / math.log2(11)) / 4) < 1e-12
