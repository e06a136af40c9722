"""Paired significance test over users between two runs' test ranks (RUN/test_ranks.npy, or `mmesid evaluate --ranks-out`).

    python benchmarks/paired_test.py A.npy B.npy [--k 10]

Per user: nDCG@k and HR@k of each run on the same test users (matched by user number); reports the
means, the relative difference, a paired t-test and a Wilcoxon signed-rank test (scipy).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy import stats


def per_user(ranks: np.ndarray, k: int) -> dict[str, np.ndarray]:
    hit = ranks < k
    return {f"HR@{k}": hit.astype(float), f"nDCG@{k}": np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args()
    a, b = (np.load(f, allow_pickle=False) for f in (args.a, args.b))
    common, ia, ib = np.intersect1d(a[:, 0], b[:, 0], return_indices=True)
    ma, mb = per_user(a[ia, 1], args.k), per_user(b[ib, 1], args.k)
    out = {"users": len(common), "a": args.a, "b": args.b}
    for key in ma:
        d = ma[key] - mb[key]
        t = stats.ttest_rel(ma[key], mb[key])
        w = stats.wilcoxon(ma[key], mb[key]) if np.any(d != 0) else None
        out[key] = {"a": ma[key].mean(), "b": mb[key].mean(), "a_over_b": ma[key].mean() / max(mb[key].mean(), 1e-12),
                    "t_test_p": float(t.pvalue), "wilcoxon_p": float(w.pvalue) if w else 1.0}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
