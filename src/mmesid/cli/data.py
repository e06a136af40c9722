"""`mmesid data ...`: prepare, synthesise, download, inspect datasets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..config import arg_number, from_dict
from ..data.download import AMAZON_2014_BASE
from ..data.readers import FilterOptions
from ..data.synthetic import SyntheticConfig
from ..errors import ConfigError, MmesidError
from ._common import add_output_args, add_runtime_args

# `data synthetic` flags -> SyntheticConfig keys (its bounded fields give the valid ranges)
SYNTHETIC_FLAGS = {"users": "n_users", "items": "n_items", "categories": "n_categories", "seed": "seed"}


def _field_arg(cls, key: str):
    """An argparse type with the range of config field `key`, so flag and config agree."""
    f = {f.name: f for f in dataclasses.fields(cls)}[key]
    ge, gt, le, lt = f.metadata["range"]
    return arg_number(int, ge=ge, gt=gt, le=le, lt=lt)


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
    pp.add_argument("--min-user", type=_field_arg(FilterOptions, "min_user"), default=None,
                    help=f"k-core: minimum interactions per user (default {FilterOptions.min_user})")
    pp.add_argument("--min-item", type=_field_arg(FilterOptions, "min_item"), default=None,
                    help=f"k-core: minimum interactions per item (default {FilterOptions.min_item})")
    pp.add_argument("--require-image", action="store_true", help="drop items without an image")
    pp.add_argument("--no-require-title", action="store_true", help="keep items without a title")
    add_output_args(pp, help="output folder for the prepared dataset")
    pp.set_defaults(func=cmd_prepare, uses_torch=False)

    ps = dsub.add_parser("synthetic", help="write a synthetic dataset with planted structure")
    add_output_args(ps, help="output folder for the prepared dataset")
    for flag, key in SYNTHETIC_FLAGS.items():
        ps.add_argument(f"--{flag}", type=_field_arg(SyntheticConfig, key), default=getattr(SyntheticConfig, key),
                        help=f"default {getattr(SyntheticConfig, key)}")
    ps.add_argument("--images", type=Path, help="also draw one PNG per item into this folder")
    ps.set_defaults(func=cmd_synthetic, uses_torch=False)

    pd = dsub.add_parser("download", help="download the Amazon 2014 review and metadata dumps")
    pd.add_argument("--category", default="Beauty")
    add_output_args(pd, help="folder for the two files (a file already there is kept unless --overwrite)")
    pd.add_argument("--base-url", default=AMAZON_2014_BASE, help="mirror URL or local folder")
    add_runtime_args(pd, device=False, threads=False)
    pd.set_defaults(func=cmd_download, uses_torch=False)

    pc = dsub.add_parser("cold-split", help="a copy of a prepared dataset whose cold items never appear in training")
    pc.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    pc.add_argument("--fraction", type=arg_number(float, gt=0, lt=1), default=0.05,
                    help="share of all items made cold (default 0.05), chosen among validation/test targets")
    pc.add_argument("--seed", type=arg_number(int, ge=0), default=0)
    add_output_args(pc, help="output prepared dataset folder")
    pc.set_defaults(func=cmd_cold_split, uses_torch=False)

    pi = dsub.add_parser("stats", help="print a prepared dataset's statistics and what was dropped")
    pi.add_argument("path", type=Path)
    pi.set_defaults(func=cmd_stats, uses_torch=False)


def _refuse_options(args, fmt: str, names: list[str]) -> None:
    """Options that do not apply to this format are an error, not silently ignored."""
    flags = {"name": "--name", "reviews": "--reviews", "meta": "--meta", "items": "--items",
             "min_user": "--min-user", "min_item": "--min-item", "require_image": "--require-image",
             "no_require_title": "--no-require-title"}
    for name in names:
        if getattr(args, name) not in (None, False):
            raise MmesidError(f"{flags[name]} does not apply to --format {fmt}")


def _prepare_plan(args):
    """(a function that reads the input, the input paths), checked before anything is read."""
    from ..data.readers import read_amazon, read_authors, read_interactions
    from ..data.textio import check_file, check_folder

    opts = {k: getattr(args, k) for k in ("min_user", "min_item") if getattr(args, k) is not None}
    opts.update(require_title=not args.no_require_title, require_image=args.require_image)
    if args.format == "authors":
        _refuse_options(args, "authors", ["reviews", "meta", "items", "min_user", "min_item",
                                          "require_image", "no_require_title"])
        if args.input is None:
            raise MmesidError("data prepare --format authors needs the input folder")
        check_folder(args.input, "folder with <Name>_new.txt")
        return (lambda: read_authors(args.input, args.name)), [args.input]
    if args.format == "amazon":
        _refuse_options(args, "amazon", ["items"])
        cat = args.name or "Beauty"
        if args.input is not None:
            check_folder(args.input, "folder with the Amazon files")
        reviews = args.reviews or (args.input / f"reviews_{cat}_5.json.gz" if args.input else None)
        meta = args.meta or (args.input / f"meta_{cat}.json.gz" if args.input else None)
        if reviews is None or meta is None:
            raise MmesidError("data prepare --format amazon needs the input folder or --reviews and --meta")
        check_file(reviews)
        check_file(meta)
        options = from_dict(FilterOptions, opts)
        inputs = [reviews, meta] + ([args.input] if args.input else [])
        return (lambda: read_amazon(reviews, meta, options)), inputs
    _refuse_options(args, "interactions", ["name", "reviews", "meta"])
    if args.input is None:
        raise MmesidError("data prepare --format interactions needs the interactions file")
    check_file(args.input)
    if args.items is None:
        if args.require_image:
            raise MmesidError("--require-image needs an item table (--items)")
        opts["require_title"] = False
    else:
        check_file(args.items)
    options = from_dict(FilterOptions, opts)
    inputs = [args.input] + ([args.items] if args.items else [])
    return (lambda: read_interactions(args.input, args.items, options)), inputs


def _print_stats(stats: dict) -> None:
    from ..data.dataset import drop_summary

    print(json.dumps(stats, indent=2))
    if isinstance(stats.get("dropped"), dict):
        lines = drop_summary(stats)
        print("dropped:" + ("" if lines else " nothing"))
        for line in lines:
            print(f"  {line}")


def cmd_prepare(args) -> int:
    from ..artifacts.outputs import check_output_folder

    read, inputs = _prepare_plan(args)
    check_output_folder(args.out, "prepared-data", inputs, overwrite=args.overwrite)
    data = read()
    data.validate()
    data.save(args.out, overwrite=args.overwrite, inputs=inputs)
    _print_stats(data.stats())
    print(f"prepared dataset written to {args.out}")
    return 0


def _synthetic_config(args) -> SyntheticConfig:
    try:
        return from_dict(SyntheticConfig, {key: getattr(args, flag) for flag, key in SYNTHETIC_FLAGS.items()})
    except ConfigError as e:
        msg = str(e)
        for flag, key in SYNTHETIC_FLAGS.items():
            msg = msg.replace(key, f"--{flag}")
        raise ConfigError(msg) from None


def cmd_synthetic(args) -> int:
    from ..artifacts.outputs import check_output_folder
    from ..data.synthetic import check_images_folder, generate, write_images

    cfg = _synthetic_config(args)
    if args.images is not None:
        out_r, img_r = args.out.resolve(), args.images.resolve()
        if out_r == img_r or out_r in img_r.parents or img_r in out_r.parents:
            raise MmesidError(f"--out {args.out} and --images {args.images} must be separate folders "
                              "(neither inside the other)")
        check_images_folder(args.images, args.overwrite)
    check_output_folder(args.out, "prepared-data", overwrite=args.overwrite)
    data = generate(cfg)
    data.validate()
    if args.images is not None:
        write_images(data, args.images, cfg, overwrite=args.overwrite)
    data.save(args.out, overwrite=args.overwrite)
    _print_stats(data.stats())
    return 0


def cmd_download(args) -> int:
    from ..data.download import download_amazon_2014

    paths = download_amazon_2014(args.category, args.out, args.base_url, overwrite=args.overwrite,
                                 progress=not args.quiet)
    for p in paths:
        print(p)
    return 0


def cmd_cold_split(args) -> int:
    from ..data.cold import cold_split
    from ..data.dataset import SequenceData

    data = SequenceData.load(args.data)
    out = cold_split(data, args.fraction, args.seed)
    out.save(args.out, overwrite=args.overwrite, inputs=[args.data])
    cs = out.report["cold_split"]
    print(f"{args.out}: {cs['n_items']} cold items ({args.fraction:.1%} of {data.n_items}); "
          f"{cs['interactions_removed']} training interactions removed, {cs['users_dropped']} users dropped "
          f"(fewer than 3 items left); {out.n_users} users, {out.n_interactions} interactions")
    return 0


def cmd_stats(args) -> int:
    from ..data.dataset import SequenceData

    _print_stats(SequenceData.load(args.path).stats())
    return 0
