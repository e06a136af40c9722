"""`mmesid items add`: make new items recommendable by a trained fine-tuning run, without retraining."""

from __future__ import annotations

from pathlib import Path

from ..config import arg_number
from ..errors import InputFormatError, MmesidError
from ._common import add_runtime_args


def register(sub) -> None:
    p = sub.add_parser("items", help="add items to a trained fine-tuning run (no retraining)")
    isub = p.add_subparsers(dest="items_command", required=True, metavar="ACTION")
    pa = isub.add_parser("add", help="encode new items, give them semantic IDs and make them recommendable")
    pa.add_argument("--run", type=Path, required=True, help="a fine-tuning run folder (mmesid finetune --out)")
    pa.add_argument("--items", type=Path, required=True,
                    help="CSV with columns id (or raw_id), title and optionally image; or a cold-split dataset "
                         "folder (its cold items, mmesid data cold-split)")
    pa.add_argument("--data", type=Path, help="prepared dataset of the run (default: from its run.json)")
    pa.add_argument("--init", choices=["knn", "mean", "zero"], default="knn",
                    help="E_c and E_x rows of a new item: mean of its nearest training items by text (default), "
                         "mean of all training items, or zero")
    pa.add_argument("--neighbours", type=arg_number(int, ge=1), default=1,
                    help="text neighbours whose rows --init knn averages (default 1, chosen on validation)")
    pa.add_argument("--frequency", choices=["zero", "neighbours"], default="zero",
                    help="the fusion's training-frequency input of a new item: zero (default, the truth) or the "
                         "mean of its text neighbours' (see docs)")
    pa.add_argument("--text-model", type=Path, help="the text model the run's E_t was encoded with "
                                                     "(default: the bundled all-MiniLM-L6-v2)")
    pa.add_argument("--kind", choices=["auto", "hf", "sentence-transformers"], default="auto")
    pa.add_argument("--pooling", choices=["auto", "mean", "cls", "last", "projection"], default="auto")
    pa.add_argument("--max-length", type=arg_number(int, ge=1), default=128)
    add_runtime_args(p=pa, device=True, threads=True, progress=False)
    pa.set_defaults(func=cmd_add)


def read_items_csv(path: Path) -> list[tuple[str, str, str]]:
    """(raw_id, title, image) rows; a missing column, an empty id or title, or a repeated id names the line."""
    from ..data.textio import iter_csv

    rows = iter_csv(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise InputFormatError(path, 1, "empty file (expected a header: id,title[,image])") from None
    cols = [h.strip().lower() for h in header]
    idc = "id" if "id" in cols else "raw_id"
    if idc not in cols or "title" not in cols:
        raise InputFormatError(path, 1, f"header {header}: needs the columns id (or raw_id) and title")
    i, t, im = cols.index(idc), cols.index("title"), cols.index("image") if "image" in cols else None
    out, seen = [], set()
    for line, r in rows:
        if len(r) != len(cols):
            raise InputFormatError(path, line, f"{len(r)} fields, the header has {len(cols)}")
        rid, title = r[i].strip(), r[t].strip()
        if not rid or not title:
            raise InputFormatError(path, line, "empty id or title (a new item needs its title to be encoded)")
        if rid in seen:
            raise InputFormatError(path, line, f"item id {rid!r} repeated")
        seen.add(rid)
        out.append((rid, title, r[im].strip() if im is not None else ""))
    if not out:
        raise InputFormatError(path, 2, "no items after the header")
    return out


def _cold_items(path: Path) -> list[tuple[str, str, str]]:
    from ..data.cold import cold_item_ids
    from ..data.dataset import SequenceData

    data = SequenceData.load(path)
    ids = set(cold_item_ids(data))
    if not ids:
        raise MmesidError(f"--items {path}: a dataset folder, but it records no cold items (not a cold split)")
    return [(it.raw_id, it.title, it.image) for it in data.items if it.raw_id in ids]


def cmd_add(args) -> int:
    from ..serve.new_items import add_items
    from ..utils import set_cpu_threads

    set_cpu_threads(args.threads or 0)
    items = _cold_items(args.items) if args.items.is_dir() else read_items_csv(args.items)
    data = None
    if args.data is not None:
        from ..data.dataset import SequenceData

        data = SequenceData.load(args.data)
    s = add_items(args.run, items, data, init=args.init, neighbours=args.neighbours, text_model=args.text_model,
                  kind=args.kind, pooling=args.pooling, max_length=args.max_length, device=args.device or "cpu",
                  frequency=args.frequency)
    print(f"{args.run}: {s['items']} items added ({s['new_to_catalogue']} new to the catalogue, "
          f"{s['cold_in_catalogue']} never seen in training), E_c/E_x by {s['init']}; "
          f"{s['total_added']} added items in all (RUN/added_items)")
    return 0
