"""`mmesid analyze forgetting | collapse`: Kendall tau of distance lists, singular-value spectra."""

from __future__ import annotations

from pathlib import Path

from ..errors import MmesidError


def register(sub) -> None:
    p = sub.add_parser("analyze", help="forgetting (Kendall tau) and embedding-collapse (spectra) analyses")
    s = p.add_subparsers(dest="analyze_command", required=True, metavar="ANALYSIS")

    f = s.add_parser("forgetting", help="Kendall tau between behaviour-target distances under two tables")
    f.add_argument("--data", type=Path, required=True, help="prepared dataset folder (its sequences give the pairs)")
    f.add_argument("--a", required=True, metavar="FILE[:KEY]", help="reference table, e.g. E_c (.safetensors/.npy)")
    f.add_argument("--b", required=True, action="append", metavar="FILE[:KEY]",
                   help="table to compare (repeatable), e.g. EXPORT/embeddings.safetensors:z_hat.c")
    f.add_argument("--pairs", default="train-prefixes", choices=["train-prefixes", "train-last", "test"],
                   help="which (history item, target item) pairs (default: every training prefix)")
    f.add_argument("--max-history", type=int, default=50)
    f.add_argument("--out", type=Path, help="write the result as JSON here")
    f.set_defaults(func=cmd_forgetting)

    c = s.add_parser("collapse", help="normalised singular values of embedding matrices, log-scale plot + JSON")
    c.add_argument("--emb", required=True, action="append", metavar="NAME=FILE[:KEY]",
                   help="embedding matrix [n_items + 1, d] (row 0 padding); repeatable")
    c.add_argument("--out", type=Path, required=True, help="PNG path; the spectra go to the same name .json")
    c.add_argument("--center", action="store_true", help="centre the rows before the SVD")
    c.add_argument("--all-rows", action="store_true", help="keep rows without an embedding (mask 0)")
    c.add_argument("--title")
    c.set_defaults(func=cmd_collapse)


def cmd_forgetting(args) -> int:
    from ..analysis.forgetting import behaviour_target_pairs, distance_tau
    from ..data.dataset import SequenceData
    from ..io import write_json
    from ..quantize.embeddings import load_item_embedding

    data = SequenceData.load(args.data)
    a = load_item_embedding(args.a)
    if a.n_items != data.n_items:
        raise MmesidError(f"{a.path}: {a.n_items} items, but {args.data} has {data.n_items}")
    pairs = behaviour_target_pairs(data.sequences, args.pairs, args.max_history)
    results = {"data": str(args.data), "a": args.a, "pairs": args.pairs, "results": {}}
    for spec in args.b:
        b = load_item_embedding(spec)
        if b.n_items != data.n_items:
            raise MmesidError(f"{b.path}: {b.n_items} items, but {args.data} has {data.n_items}")
        keep = a.mask.numpy() & b.mask.numpy()
        pp = pairs[keep[pairs[:, 0]] & keep[pairs[:, 1]]]
        r = distance_tau(a.table, b.table, pp)
        results["results"][spec] = r
        print(f"tau({args.a}, {spec}) = {r['tau']:.4f}  (tau_a {r['tau_a']:.4f}, {r['n_pairs']} pairs, "
              f"scheme {args.pairs})")
    if args.out:
        write_json(args.out, results)
    return 0


def cmd_collapse(args) -> int:
    from ..analysis.collapse import spectra_report
    from ..quantize.embeddings import load_item_embedding

    tables = {}
    for spec in args.emb:
        if "=" not in spec:
            raise MmesidError(f"--emb {spec!r}: expected NAME=FILE[:KEY]")
        name, f = spec.split("=", 1)
        if name in tables:
            raise MmesidError(f"--emb: name {name!r} given twice")
        e = load_item_embedding(f)
        tables[name] = (e.table, None if args.all_rows else e.mask)
    rep = spectra_report(tables, args.out, center=args.center, title=args.title)
    for name, r in rep["spectra"].items():
        print(f"{name}: d={r['dims']} rank(>1e-6)={r['rank_1e-6']} effective rank {r['effective_rank']:.1f} "
              f"smallest {r['min_normalised']:.2e}")
    print(f"plot: {args.out}  spectra: {Path(args.out).with_suffix('.json')}")
    return 0
