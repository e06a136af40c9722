"""Where two or more models differ: test nDCG@10 / HR@10 by history length and by target-item popularity.

    python benchmarks/by_group.py --data data/beauty NAME=RANKS.npy [NAME=RANKS.npy ...] [--k 10]

RANKS.npy is `mmesid evaluate --ranks-out` (user number, 0-based rank of the test target). Users are
grouped by the length of their test history (s[:-1]) and by how often their target item occurs in the
training part of all sequences (s[:-2]), in quintiles of users; each group shows every model's mean and
its ratio to the first model. Plain numpy: no model is loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from paired_test import (
    per_user,  # the per-user HR@k / nDCG@k of the paired tests (this folder)
)

from mmesid.data.dataset import SequenceData
from mmesid.data.split import train_sequences
from mmesid.errors import MmesidError


def quantile_groups(values: np.ndarray, n: int) -> tuple[np.ndarray, list[str]]:
    """Group index per user (n groups of about equal size by integer value; ties kept together) and labels."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n + 1)))
    idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    labels = []
    for i in range(len(edges) - 1):  # integer values: group i holds edges[i] .. edges[i+1] - 1 (the last: .. max)
        lo, hi = int(edges[i]), int(edges[i + 1]) - (i < len(edges) - 2)
        labels.append(f"{lo}" if lo == hi else f"{lo}-{hi}")
    return idx, labels


def table(title: str, groups: np.ndarray, labels: list[str], scores: dict[str, tuple], k: int) -> str:
    names = list(scores)
    head = f"| {title} | users | " + " | ".join(f"{n} nDCG@{k}" for n in names)
    head += " | " + " | ".join(f"{n} / {names[0]}" for n in names[1:]) + " |"
    rows = [head, "|" + "---|" * (2 + 2 * len(names) - 1)]
    for g, label in enumerate(labels):
        sel = groups == g
        if not sel.any():
            continue
        means = [scores[n][sel].mean() for n in names]
        ratios = [f"{m / means[0]:.3f}" if means[0] > 0 else "-" for m in means[1:]]
        rows.append(f"| {label} | {int(sel.sum())} | " + " | ".join(f"{m:.4f}" for m in means)
                    + " | " + " | ".join(ratios) + " |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    p.add_argument("runs", nargs="+", metavar="NAME=RANKS.npy")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--groups", type=int, default=5, help="quantile groups per table (default 5)")
    args = p.parse_args()
    try:
        data = SequenceData.load(args.data)
        ranks = {}
        for spec in args.runs:
            name, sep, path = spec.partition("=")
            if not sep:
                raise MmesidError(f"{spec}: expected NAME=RANKS.npy")
            try:
                r = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise MmesidError(f"{path}: not a ranks file of `mmesid evaluate --ranks-out` ({e})") from None
            if r.ndim != 2 or r.shape[1] != 2:
                raise MmesidError(f"{path}: expected a [users, 2] array of `mmesid evaluate --ranks-out`")
            ranks[name] = r
    except (MmesidError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    users = ranks[next(iter(ranks))][:, 0]
    for r in ranks.values():
        users = np.intersect1d(users, r[:, 0])
    scores = {}
    for name, r in ranks.items():
        by_user = dict(zip(r[:, 0].tolist(), r[:, 1].tolist()))
        scores[name] = per_user(np.array([by_user[u] for u in users.tolist()]), args.k)[f"nDCG@{args.k}"]
    seqs = data.sequences
    hist_len = np.array([len(seqs[u]) - 1 for u in users])
    freq = np.zeros(data.n_items + 1)
    for s in train_sequences(seqs):
        np.add.at(freq, s, 1)
    target_freq = np.array([freq[seqs[u][-1]] for u in users])
    print(f"{len(users)} test users in every ranks file; k = {args.k}\n")
    g, labels = quantile_groups(hist_len, args.groups)
    print(table("test history length", g, labels, scores, args.k) + "\n")
    g, labels = quantile_groups(target_freq, args.groups)
    print(table("target's training count", g, labels, scores, args.k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
