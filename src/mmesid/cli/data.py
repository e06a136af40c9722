"""`mmesid data ...`: prepare, synthesise, download, inspect datasets."""

from __future__ import annotations

import json
from pathlib import Path

from ..data.dataset import SequenceData
from ..data.download import AMAZON_2014_BASE, download_amazon_2014
from ..data.readers import FilterOptions, read_amazon, read_authors, read_interactions
from ..data.synthetic import SyntheticConfig, generate, write_images
from ..errors import MmesidError


def register(sub) -> None:
    p = sub.add_parser("data", help="prepare, synthesise, download and inspect datasets")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    pp = dsub.add_parser("prepare", help="read an input dataset and write the canonical prepared folder")
    pp.add_argument("input", type=Path, nargs="?",
                    help="authors: folder with <Name>_new.txt; interactions: the CSV/TSV file; "
                         "amazon: folder with reviews_<Cat>_5.json.gz and meta_<Cat>.json.gz")
    pp.add_argument("--format", choices=["authors", "amazon", "interactions"], default="authors")
    pp.add_argument("--name", help="authors: dataset name (Beauty); amazon: category (Beauty)")
    pp.add_argument("--reviews", type=Path, help="amazon: reviews file (overrides input/--name)")
    pp.add_argument("--meta", type=Path, help="amazon: metadata file (overrides input/--name)")
    pp.add_argument("--items", type=Path, help="interactions: item table (item,title,image)")
    pp.add_argument("--min-user", type=int, default=5, help="k-core: minimum interactions per user")
    pp.add_argument("--min-item", type=int, default=5, help="k-core: minimum interactions per item")
    pp.add_argument("--require-image", action="store_true", help="drop items without an image")
    pp.add_argument("--no-require-title", action="store_true", help="keep items without a title")
    pp.add_argument("--out", type=Path, required=True, help="output folder")
    pp.add_argument("--overwrite", action="store_true")
    pp.set_defaults(func=cmd_prepare)

    ps = dsub.add_parser("synthetic", help="write a synthetic dataset with planted structure")
    ps.add_argument("--out", type=Path, required=True)
    ps.add_argument("--users", type=int, default=SyntheticConfig.n_users)
    ps.add_argument("--items", type=int, default=SyntheticConfig.n_items)
    ps.add_argument("--categories", type=int, default=SyntheticConfig.n_categories)
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--images", type=Path, help="also draw one PNG per item into this folder")
    ps.add_argument("--overwrite", action="store_true")
    ps.set_defaults(func=cmd_synthetic)

    pd = dsub.add_parser("download", help="download the Amazon 2014 review and metadata dumps")
    pd.add_argument("--category", default="Beauty")
    pd.add_argument("--out", type=Path, required=True)
    pd.add_argument("--base-url", default=AMAZON_2014_BASE, help="mirror URL or local folder")
    pd.add_argument("--force", action="store_true", help="download again even if the file exists")
    pd.set_defaults(func=cmd_download)

    pi = dsub.add_parser("stats", help="print a prepared dataset's statistics")
    pi.add_argument("path", type=Path)
    pi.set_defaults(func=cmd_stats)


def cmd_prepare(args) -> int:
    opts = FilterOptions(min_user=args.min_user, min_item=args.min_item,
                         require_title=not args.no_require_title, require_image=args.require_image)
    if args.format == "authors":
        if args.input is None:
            raise MmesidError("data prepare --format authors needs the input folder")
        data = read_authors(args.input, args.name)
    elif args.format == "amazon":
        cat = args.name or "Beauty"
        reviews = args.reviews or (args.input / f"reviews_{cat}_5.json.gz" if args.input else None)
        meta = args.meta or (args.input / f"meta_{cat}.json.gz" if args.input else None)
        if reviews is None or meta is None:
            raise MmesidError("data prepare --format amazon needs the input folder or --reviews and --meta")
        data = read_amazon(reviews, meta, opts)
    else:
        if args.input is None:
            raise MmesidError("data prepare --format interactions needs the interactions file")
        if args.items is None:
            opts.require_title = False
        data = read_interactions(args.input, args.items, opts)
    data.validate()
    data.save(args.out, overwrite=args.overwrite)
    print(json.dumps(data.stats(), indent=2))
    print(f"prepared dataset written to {args.out}")
    return 0


def cmd_synthetic(args) -> int:
    cfg = SyntheticConfig(n_users=args.users, n_items=args.items, n_categories=args.categories, seed=args.seed)
    data = generate(cfg)
    data.validate()
    if args.images:
        write_images(data, args.images, cfg)
    data.save(args.out, overwrite=args.overwrite)
    print(json.dumps(data.stats(), indent=2))
    return 0


def cmd_download(args) -> int:
    paths = download_amazon_2014(args.category, args.out, args.base_url, force=args.force)
    for p in paths:
        print(p)
    return 0


def cmd_stats(args) -> int:
    data = SequenceData.load(args.path)
    print(json.dumps(data.stats(), indent=2))
    return 0
