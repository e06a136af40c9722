"""A cold-item split: some items never appear in training, only as validation/test targets and later.

To measure recommending items added after training, a fraction of the items is chosen among those
that are some user's validation or test target (so they can be evaluated), and every occurrence of them
is removed from each user's training part (all but the last two items). The last two items stay as
they are, so a cold item can be the target of a test user and appear in test histories. Users left with
fewer than 3 items are dropped (counted). The chosen items are recorded in stats.json
(`cold_split.items`, raw ids), which `mmesid evaluate --target-items` reads.
"""

from __future__ import annotations

import numpy as np

from ..errors import MmesidError
from .dataset import SequenceData


def _apply(data: SequenceData, cold: np.ndarray) -> tuple[list[np.ndarray], list[str], int]:
    seqs, users, removed = [], [], 0
    for s, u in zip(data.sequences, data.user_ids):
        head = s[:-2]
        keep = head[~np.isin(head, cold)]
        removed += len(head) - len(keep)
        s2 = np.concatenate([keep, s[-2:]]).astype(s.dtype)
        if len(s2) >= 3:
            seqs.append(s2)
            users.append(u)
    return seqs, users, removed


def cold_split(data: SequenceData, fraction: float, seed: int = 0) -> SequenceData:
    """The dataset with round(fraction * n_items) cold items (see the module docstring)."""
    if not 0 < fraction < 1:
        raise MmesidError(f"--fraction must be between 0 and 1, got {fraction}")
    targets = np.unique(np.concatenate([s[-2:] for s in data.sequences]))
    n = int(round(fraction * data.n_items))
    if n < 1 or n > len(targets):
        raise MmesidError(f"--fraction {fraction}: {n} cold items of {data.n_items}, but only {len(targets)} items "
                          "are a validation or test target (and at least 1 is needed)")
    rng = np.random.default_rng(seed)
    excluded: set[int] = set()
    for _ in range(20):  # an item seen only by users who are then dropped would vanish: choose again
        pool = np.array([t for t in targets if int(t) not in excluded])
        cold = np.sort(rng.choice(pool, min(n, len(pool)), replace=False))
        seqs, users, removed = _apply(data, cold)
        present = np.zeros(data.n_items + 1, dtype=bool)
        for s in seqs:
            present[s] = True
        missing = np.flatnonzero(~present[1:]) + 1
        if len(missing) == 0:
            break
        excluded.update(int(m) for m in missing)
    else:
        raise MmesidError("cold split: could not choose cold items that keep every item in some sequence")
    report = dict(data.report or {})
    report["cold_split"] = {"fraction": fraction, "seed": seed, "n_items": len(cold),
                            "interactions_removed": removed, "users_dropped": data.n_users - len(users),
                            "source_fingerprint": data.fingerprint,
                            "items": [data.items[i - 1].raw_id for i in cold]}
    return SequenceData(seqs, list(data.items), users, source=data.source, report=report)


def cold_item_ids(data: SequenceData) -> list[str]:
    """The raw ids of a cold split's cold items (empty for other datasets)."""
    cs = (data.report or {}).get("cold_split")
    return list(cs["items"]) if isinstance(cs, dict) and isinstance(cs.get("items"), list) else []
