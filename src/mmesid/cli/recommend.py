"""`mmesid recommend`: top-k items from a trained run, for a history, a user, a file of histories or everyone."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import arg_number
from ..errors import MmesidError
from ._common import add_int8_arg, add_runtime_args


def add_run_args(p) -> None:
    p.add_argument("--run", type=Path, required=True, help="run folder of a trained model (sasrec train or finetune)")
    p.add_argument("--data", type=Path, help="prepared dataset the run was trained on (default: from its run.json)")
    add_runtime_args(p, device=True, threads=True, batch_size=256, progress=False)
    add_int8_arg(p)


def register(sub) -> None:
    p = sub.add_parser("recommend", help="top-k items of a trained run for histories or users")
    add_run_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--history", help="comma-separated item ids, oldest first")
    which.add_argument("--user", help="a known user id: recommend after their whole sequence")
    which.add_argument("--input", type=Path, help='JSON Lines file: {"history": [ids...], "id": optional} per line')
    which.add_argument("--all-users", action="store_true", help="every user of the dataset (needs --out)")
    p.add_argument("--k", type=arg_number(int, ge=1), default=10, help="items per recommendation (default 10)")
    p.add_argument("--out", type=Path, help="--input: output .jsonl; --all-users: output .parquet or .csv")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--include-history", action="store_true", help="allow items of the history in the top-k")
    p.add_argument("--drop-unknown", action="store_true",
                   help="drop item ids the run does not know (with a warning) instead of failing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_recommend)


def _check_out(args) -> None:
    from ..artifacts.outputs import check_output_file

    if args.all_users and args.out is None:
        raise MmesidError("--all-users needs --out FILE.parquet or FILE.csv")
    if args.out is None:
        return
    if not (args.all_users or args.input):
        raise MmesidError("--out goes with --input or --all-users")
    suffixes = (".parquet", ".csv") if args.all_users else (".jsonl",)
    check_output_file(args.out, inputs=[args.run, args.data, args.input], suffixes=suffixes)
    if args.out.exists() and not args.overwrite:
        raise MmesidError(f"--out {args.out}: exists (use --overwrite to replace it)")


def _print(rec, label: str) -> None:
    note = " (empty history: most popular items)" if rec.fallback else ""
    if rec.dropped:
        note += f" (unknown ids dropped: {', '.join(rec.dropped)})"
    print(f"{label}{note}")
    for r, (item, title, score) in enumerate(zip(rec.items, rec.titles, rec.scores), 1):
        print(f"{r:>3}. {item}  {score:.4f}  {title}")


def cmd_recommend(args) -> int:
    from ..serve import Recommender

    _check_out(args)
    if args.all_users:
        from ..serve.export import export_format

        export_format(args.out)
    rec = Recommender.load(args.run, args.data, device=args.device or "cpu", threads=args.threads,
                           batch_size=args.batch_size, int8=args.int8)
    unknown = "drop" if args.drop_unknown else "error"
    excl = not args.include_history
    if args.history is not None:
        ids = [x.strip() for x in args.history.split(",") if x.strip()]
        _print(rec.recommend([ids], args.k, excl, unknown)[0], f"top {args.k} after {len(ids)} items:")
    elif args.user is not None:
        _print(rec.recommend_users([args.user], args.k, excl)[0], f"top {args.k} for user {args.user}:")
    elif args.input is not None:
        _from_file(rec, args, excl, unknown)
    else:
        from ..serve.export import export_all_users

        info = export_all_users(rec, args.out, args.k, excl, progress=not args.quiet)
        print(f"{info['out']}: top {info['k']} for {info['users']} users ({info['rows']} rows, {info['format']})")
    return 0


def _from_file(rec, args, excl: bool, unknown: str) -> None:
    import logging
    import os
    import tempfile

    from ..data.textio import iter_lines
    from ..serve.recommender import read_histories

    rows = read_histories(iter_lines(args.input), str(args.input))
    recs = []
    for lo in range(0, len(rows), 1024):
        part = rows[lo:lo + 1024]
        recs += rec.recommend([h for _, h in part], args.k, excl, unknown)
    dropped = sum(len(r.dropped) for r in recs)
    if dropped:
        logging.getLogger("mmesid").warning("%d unknown item ids dropped (listed per line in 'dropped')", dropped)
    lines = [json.dumps({"id": i, **r.as_dict()}) for (i, _), r in zip(rows, recs)]
    if args.out is None:
        print("\n".join(lines))
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{args.out.name}.", dir=args.out.resolve().parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + ("\n" if lines else ""))
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"{args.out}: {len(lines)} recommendations")
