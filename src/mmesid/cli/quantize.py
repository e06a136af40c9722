"""`mmesid quantize train | export`: MM-RQ-VAE over any subset of the c / t / v embeddings."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import MmesidError
from ._common import add_config_args, run_dir_from_args


def register(sub) -> None:
    p = sub.add_parser("quantize", help="train MM-RQ-VAE and export semantic IDs and codebooks")
    s = p.add_subparsers(dest="quantize_command", required=True, metavar="ACTION")

    t = s.add_parser("train", help="train (resumable), keep the best checkpoint by loss, export")
    t.add_argument("--emb", action="append", default=[], required=True, metavar="M=FILE",
                   help="embedding table of modality M in {c, t, v} (.safetensors key 'embedding', or .npy); "
                        "repeatable")
    t.add_argument("--out", type=Path, help="run folder (default: runs/quantize-<time>); an existing one resumes")
    t.add_argument("--export", type=Path, help="export folder (default: RUN/export)")
    t.add_argument("--data", type=Path, help="prepared dataset: also measure forgetting (Kendall tau) at the end")
    add_config_args(t)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)

    e = s.add_parser("export", help="write semantic IDs, codebooks and stats of a trained run")
    e.add_argument("--run", type=Path, required=True, help="run folder of `quantize train`")
    e.add_argument("--out", type=Path, required=True, help="export folder (replaced if it exists)")
    e.add_argument("--emb", action="append", default=[], metavar="M=FILE",
                   help="override the input tables recorded in RUN/run.json")
    e.set_defaults(func=cmd_export)


def _load_cfg(args, run_dir: Path | None):
    from ..config import load_config
    from ..quantize.train import QuantizeConfig

    cfg_file = args.config
    if cfg_file is None and run_dir is not None and (run_dir / "checkpoint.pt").exists() \
            and (run_dir / "config.toml").exists():
        cfg_file = run_dir / "config.toml"  # resuming: keep the run's own configuration
    return load_config(QuantizeConfig, cfg_file, args.overrides)


def cmd_train(args) -> int:
    from ..quantize.embeddings import load_modalities, parse_modality_args
    from ..quantize.train import run_training

    files = parse_modality_args(args.emb)
    embs = load_modalities(files)
    data = None
    if args.data is not None:
        from ..data.dataset import SequenceData

        data = SequenceData.load(args.data)
        n = next(iter(embs.values())).n_items
        if data.n_items != n:
            raise MmesidError(f"{args.data}: {data.n_items} items, but the embedding tables have {n}")
    run_dir = Path(args.out) if args.out else None
    cfg = _load_cfg(args, run_dir)
    run_dir = run_dir_from_args(args, "quantize")
    m = run_training(embs, cfg, run_dir, export_dir=args.export, data=data, progress=not args.no_progress,
                     run_info={"data": str(args.data) if args.data else None})
    for mod, s in m["sids"].items():
        print(f"{mod}: unique SID tuples {s['unique_fraction']:.4f}, largest collision group "
              f"{s['largest_collision_group']}")
    for mod, t in m.get("forgetting", {}).items():
        print(f"{mod}: Kendall tau vs input  z_hat {t['z_hat']:.4f}  s_hat {t['s_hat']:.4f}  z {t['z']:.4f}")
    print(f"best epoch {m['best_epoch']} of {m['epochs_run']}, {m['seconds_per_epoch']}s/epoch; "
          f"export in {m['export']}; metrics in {run_dir / 'metrics.json'}")
    return 0


def cmd_export(args) -> int:
    from ..io import load_tensors
    from ..quantize.embeddings import load_modalities, parse_modality_args
    from ..quantize.export import export_model
    from ..quantize.train import build_model

    run_dir = Path(args.run)
    if not (run_dir / "best_model.safetensors").exists():
        raise MmesidError(f"{run_dir}: no best_model.safetensors (train first)")
    if args.emb:
        files = parse_modality_args(args.emb)
    else:
        try:
            files = json.loads((run_dir / "run.json").read_text())["emb"]
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise MmesidError(f"{run_dir / 'run.json'}: cannot read the input tables ({e}); pass --emb") from None
    from ..config import load_config
    from ..quantize.train import QuantizeConfig

    cfg = load_config(QuantizeConfig, run_dir / "config.toml")
    embs = load_modalities(files)
    model = build_model(embs, cfg)
    state, _ = load_tensors(run_dir / "best_model.safetensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise MmesidError(f"{run_dir}: checkpoint does not match the inputs/config ({str(e).splitlines()[0]})") from None
    stats = export_model(model, {m: e.table for m, e in embs.items()}, {m: e.mask for m, e in embs.items()},
                         args.out, extra_stats={"run": str(run_dir), "inputs": {m: e.path for m, e in embs.items()}})
    for mod, s in stats["modalities"].items():
        print(f"{mod}: unique SID tuples {s['unique_fraction']:.4f}, usage per level "
              f"{[round(lv['usage'], 3) for lv in s['levels']]}")
    print(f"export written to {args.out}")
    return 0
