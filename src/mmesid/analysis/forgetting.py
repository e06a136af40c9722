"""Forgetting as in Sec. 3.2 of the paper: Kendall's tau between two lists of behaviour-target distances.

Pairs. For every user sequence s, only its training part s[:-2] is used (the validation and test
targets are never looked at). With the default scheme `train-prefixes`, every training example
(s[:t] -> s[t]), t >= 1, of that part contributes the pairs (h, s[t]) for each history item h of the
last `max_history` (50) items of s[:t] -- the same examples a model trains on. `train-last` keeps
only the last training example of each user (one target per user), `test` uses the test example
(s[:-1] -> s[-1]). Pairs with h == target (repeat purchases) are dropped: their distance is 0 under
every embedding and says nothing about what was kept. A pair occurring several times is counted
several times.

Distances are Euclidean, d(h, t) = ||E[h] - E[t]||, computed separately under the two tables; tau
compares the two distance lists over the same pairs. `tau` is Kendall's tau-b (scipy's default,
which corrects for ties: quantised tables tie whenever items share a SID); `tau_a` is eq. 9
literally: (concordant - discordant) / (number of pairs of pairs). Without ties they coincide.
Pairs touching an item without an embedding (mask 0 in either table) are left out.

`export_forgetting` is the measurement the quantiser reports after training: tau between each input
table E_m and the export's z, z_hat and s_hat of the same modality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from ..artifacts.embeddings import read_item_embedding
from ..data.split import MAX_HISTORY, train_sequences
from ..errors import MmesidError

EXPORT_TABLES = ("z_hat", "s_hat", "z")

SCHEMES = ("train-prefixes", "train-last", "test")


def behaviour_target_pairs(sequences: list[np.ndarray], scheme: str = "train-prefixes",
                           max_history: int = MAX_HISTORY) -> np.ndarray:
    """(history item, target item) pairs as int64 [P, 2]; see the module docstring."""
    if scheme not in SCHEMES:
        raise MmesidError(f"unknown pair scheme {scheme!r} (expected one of {', '.join(SCHEMES)})")
    hs, ts = [], []

    def add(hist: np.ndarray, target: int) -> None:
        hist = hist[-max_history:]
        hist = hist[hist != target]
        if len(hist):
            hs.append(hist)
            ts.append(np.full(len(hist), target, dtype=np.int64))

    if scheme == "test":
        for s in sequences:
            if len(s) >= 2:
                add(np.asarray(s[:-1], dtype=np.int64), int(s[-1]))
    else:
        for s in train_sequences(sequences):
            s = np.asarray(s, dtype=np.int64)
            if len(s) < 2:
                continue
            if scheme == "train-last":
                add(s[:-1], int(s[-1]))
            else:
                for t in range(1, len(s)):
                    add(s[:t], int(s[t]))
    if not hs:
        raise MmesidError("no (history, target) pairs: sequences too short for this scheme")
    return np.stack([np.concatenate(hs), np.concatenate(ts)], axis=1)


def pair_distances(table: torch.Tensor | np.ndarray, pairs: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    """Euclidean distances ||E[h] - E[t]|| for every pair, float64 [P]."""
    e = table.detach().cpu().numpy() if isinstance(table, torch.Tensor) else np.asarray(table)
    if pairs.size and pairs.max() >= e.shape[0]:
        raise MmesidError(f"item id {int(pairs.max())} out of range for an embedding table of {e.shape[0]} rows")
    out = np.empty(len(pairs), dtype=np.float64)
    for lo in range(0, len(pairs), chunk):
        p = pairs[lo:lo + chunk]
        diff = e[p[:, 0]].astype(np.float64) - e[p[:, 1]].astype(np.float64)
        out[lo:lo + chunk] = np.sqrt((diff * diff).sum(1))
    return out


def _tied_pairs(x: np.ndarray) -> float:
    _, c = np.unique(x, return_counts=True)
    c = c.astype(np.float64)
    return float((c * (c - 1) / 2).sum())


def kendall_tau(x: np.ndarray, y: np.ndarray) -> dict:
    """Kendall's tau-b (scipy) and tau-a (eq. 9) of two equally long lists."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n != len(y):
        raise MmesidError(f"distance lists differ in length ({n} vs {len(y)})")
    if n < 2:
        raise MmesidError("Kendall tau needs at least two pairs")
    res = kendalltau(x, y)
    tau_b = float(res.statistic)
    n0 = n * (n - 1) / 2.0
    n1, n2 = _tied_pairs(x), _tied_pairs(y)
    if np.isnan(tau_b):  # one list constant: no pair is concordant or discordant
        tau_b, tau_a = float("nan"), 0.0
    else:
        tau_a = tau_b * np.sqrt((n0 - n1) * (n0 - n2)) / n0
    return {"tau": tau_b, "tau_a": float(tau_a), "p_value": float(res.pvalue), "n": n,
            "tied_share_a": n1 / n0, "tied_share_b": n2 / n0}


def distance_tau(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, pairs: np.ndarray,
                 mask: np.ndarray | torch.Tensor | None = None) -> dict:
    """Kendall tau between the behaviour-target distance lists under tables `a` and `b`.

    With `mask` (bool [n_items + 1]), only pairs whose two items are both in the mask are used.
    """
    if a.shape[0] != b.shape[0]:
        raise MmesidError(f"embedding tables differ in rows ({a.shape[0]} vs {b.shape[0]}); "
                          "both must be [n_items + 1, d]")
    if mask is not None:
        keep = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask, dtype=bool)
        pairs = pairs[keep[pairs[:, 0]] & keep[pairs[:, 1]]]
    out = kendall_tau(pair_distances(a, pairs), pair_distances(b, pairs))
    out["n_pairs"] = out.pop("n")
    return out


def export_forgetting(sequences: list[np.ndarray], tables: dict[str, torch.Tensor],
                      export_dir: Path) -> dict[str, dict[str, float]]:
    """Per modality m of `tables`: tau (training-prefix pairs) between tables[m] and the export's
    z_hat.m, s_hat.m and z.m, over the items the export has an embedding for (its mask.m)."""
    pairs = behaviour_target_pairs(sequences)
    out: dict[str, dict[str, float]] = {}
    for m, table in tables.items():
        out[m] = {}
        for k in EXPORT_TABLES:
            e = read_item_embedding(f"{Path(export_dir) / 'embeddings.safetensors'}:{k}.{m}")
            out[m][k] = distance_tau(table, e.table, pairs, mask=e.mask)["tau"]
    return out
