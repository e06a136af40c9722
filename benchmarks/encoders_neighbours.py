"""Sanity check of an item-embedding file: cosine nearest neighbours of a few items, and how often an
item's nearest neighbour shares its product-kind keyword.

    python benchmarks/encoders_neighbours.py --data PREPARED_BEAUTY \
        --emb benchmarks/out/beauty_text_minilm.safetensors
"""

from __future__ import annotations

import argparse
import re

import torch

from mmesid.artifacts.embeddings import read_item_embedding
from mmesid.data.dataset import SequenceData

# product kinds recognisable from the title (regex, case-insensitive)
KINDS = {
    "nail polish": r"nail (polish|lacquer|colou?r)",
    "shampoo": r"shampoo",
    "perfume": r"eau de (parfum|toilette)|perfume|fragrance spray",
    "mascara": r"mascara",
    "lipstick": r"lipstick",
    "sunscreen": r"sunscreen|spf \d+",
    "hair dryer": r"(hair|blow) dryer",
    "eyeliner": r"eye ?liner",
    "conditioner": r"conditioner",
    "brush": r"brush",
}


def kind_of(title: str) -> str | None:
    hits = [k for k, rx in KINDS.items() if re.search(rx, title, re.I)]
    return hits[0] if len(hits) == 1 else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="prepared dataset folder")
    ap.add_argument("--emb", required=True, metavar="FILE[:KEY]", help="item-embedding file")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--queries", nargs="*", default=["nail polish", "shampoo", "perfume", "mascara", "hair dryer"])
    args = ap.parse_args()
    data = SequenceData.load(args.data)
    e = read_item_embedding(args.emb, n_items=data.n_items, fingerprint=data.fingerprint)
    emb, mask, meta = e.table, e.mask, e.meta
    emb = torch.nn.functional.normalize(emb, dim=1) * mask[:, None]
    titles = [""] + [it.title for it in data.items]
    print(f"# {args.emb}: {meta.get('encoder')} dim {meta.get('dim')} items {meta.get('n_items')}\n")
    kinds = [None] + [kind_of(x) for x in titles[1:]]
    for q in args.queries:
        i = next(j for j in range(1, len(titles)) if kinds[j] == q)
        sims = emb @ emb[i]
        sims[0] = sims[i] = -2
        top = torch.topk(sims, args.k)
        print(f"query item {i} [{q}]: {titles[i]}")
        for s, j in zip(top.values.tolist(), top.indices.tolist()):
            print(f"  {s:.3f}  item {j}: {titles[j]}")
        print()
    # top-1 neighbour agreement on items with exactly one recognised kind
    ids = torch.tensor([j for j in range(1, len(titles)) if kinds[j] is not None])
    sims = emb[ids] @ emb.T
    sims[:, 0] = -2
    sims[torch.arange(len(ids)), ids] = -2
    nn = sims.argmax(1).tolist()
    labelled = [(kinds[a], kinds[b]) for a, b in zip(ids.tolist(), nn) if kinds[b] is not None]
    agree = sum(a == b for a, b in labelled)
    print(f"items with one recognised kind: {len(ids)}; of these, nearest neighbour also has a recognised "
          f"kind: {len(labelled)}; same kind: {agree} ({agree / max(1, len(labelled)):.3f})")
    by_kind = {k: sum(1 for x in kinds if x == k) for k in KINDS}
    print("kind counts:", by_kind)


if __name__ == "__main__":
    main()
