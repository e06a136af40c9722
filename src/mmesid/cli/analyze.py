"""`mmesid analyze forgetting | collapse`: Kendall tau of distance lists, singular-value spectra."""

from __future__ import annotations

from pathlib import Path

from ..config import arg_number
from ..errors import MmesidError


def register(sub) -> None:
    p = sub.add_parser("analyze", help="forgetting (Kendall tau) and embedding-collapse (spectra) analyses")
    s = p.add_subparsers(dest="analyze_command", required=True, metavar="ANALYSIS")

    f = s.add_parser("forgetting", help="Kendall tau between behaviour-target distances under two tables")
    f.add_argument("--data", type=Path, required=True, help="prepared dataset folder (its sequences give the pairs)")
    f.add_argument("--original", required=True, metavar="FILE[:KEY]",
                   help="the table before quantisation, e.g. E_c (.safetensors or .npy)")
    f.add_argument("--derived", required=True, action="append", metavar="FILE[:KEY]",
                   help="a table derived from it (repeatable), e.g. EXPORT/embeddings.safetensors:z_hat.c")
    f.add_argument("--pairs", default="train-prefixes", choices=["train-prefixes", "train-last", "test"],
                   help="which (history item, target item) pairs (default: every training prefix)")
    f.add_argument("--max-history", type=arg_number(int, ge=1), default=50)
    f.add_argument("--out", type=Path, metavar="FILE.json", help="write the result as JSON here")
    f.set_defaults(func=cmd_forgetting)

    c = s.add_parser("collapse", help="normalised singular values of embedding matrices, log-scale plot + JSON")
    c.add_argument("--emb", required=True, action="append", metavar="NAME=FILE[:KEY]",
                   help="embedding matrix [n_items + 1, d] (row 0 padding); repeatable")
    c.add_argument("--out", type=Path, required=True, metavar="FILE.png",
                   help="the plot; the spectra go beside it (same name, .json)")
    c.add_argument("--center", action="store_true", help="centre the rows before the SVD")
    c.add_argument("--all-rows", action="store_true", help="keep rows without an embedding (mask 0)")
    c.add_argument("--title")
    c.set_defaults(func=cmd_collapse)


def _file(spec: str) -> Path:
    from ..artifacts.embeddings import split_file_key

    return split_file_key(spec)[0]


def cmd_forgetting(args) -> int:
    from ..analysis.forgetting import behaviour_target_pairs, distance_tau
    from ..artifacts.embeddings import read_item_embedding
    from ..artifacts.outputs import check_output_file
    from ..data.dataset import SequenceData
    from ..io import write_json

    if args.out is not None:
        inputs = [args.data, _file(args.original), *map(_file, args.derived)]
        check_output_file(args.out, inputs, suffixes=(".json",))
    data = SequenceData.load(args.data)
    original = read_item_embedding(args.original, n_items=data.n_items, fingerprint=data.fingerprint)
    derived = {spec: read_item_embedding(spec, n_items=data.n_items, fingerprint=data.fingerprint)
               for spec in args.derived}
    pairs = behaviour_target_pairs(data.sequences, args.pairs, args.max_history)
    results = {"data": str(args.data), "original": args.original, "pairs": args.pairs,
               "max_history": args.max_history, "results": {}}
    for spec, d in derived.items():
        results["results"][spec] = distance_tau(original.table, d.table, pairs, mask=original.mask & d.mask)
    if args.out is not None:
        write_json(args.out, results)
    for spec, r in results["results"].items():
        print(f"tau({args.original}, {spec}) = {r['tau']:.4f}  (tau_a {r['tau_a']:.4f}, {r['n_pairs']} pairs, "
              f"scheme {args.pairs})")
    return 0


def cmd_collapse(args) -> int:
    from ..analysis.collapse import spectra_report
    from ..artifacts.embeddings import read_item_embedding
    from ..artifacts.outputs import check_output_file

    specs = {}
    for spec in args.emb:
        if "=" not in spec:
            raise MmesidError(f"--emb {spec!r}: expected NAME=FILE[:KEY]")
        name, f = spec.split("=", 1)
        if name in specs:
            raise MmesidError(f"--emb: name {name!r} given twice")
        specs[name] = f
    inputs = [_file(f) for f in specs.values()]
    out = check_output_file(args.out, inputs, suffixes=(".png",))
    check_output_file(out.with_suffix(".json"), inputs, suffixes=(".json",))
    tables = {}
    for name, f in specs.items():
        e = read_item_embedding(f)
        tables[name] = (e.table, None if args.all_rows else e.mask)
    rep = spectra_report(tables, out, center=args.center, title=args.title)
    for name, r in rep["spectra"].items():
        print(f"{name}: d={r['dims']} rank(>1e-6)={r['rank_1e-6']} effective rank {r['effective_rank']:.1f} "
              f"smallest {r['min_normalised']:.2e}")
    print(f"plot: {out}  spectra: {out.with_suffix('.json')}")
    return 0
