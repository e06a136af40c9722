"""`mmesid quantize train | export`: MM-RQ-VAE over any subset of the c / t / v embeddings."""

from __future__ import annotations

from pathlib import Path

from ._common import (
    add_config_args,
    add_output_args,
    add_run_args,
    add_runtime_args,
    resolve_run,
)

EMB_HELP = ("embedding table of modality M in {c, t, v} (.safetensors key 'embedding', FILE:KEY for another "
            "key, or .npy); repeatable")


def register(sub) -> None:
    p = sub.add_parser("quantize", help="train MM-RQ-VAE and export semantic IDs and codebooks")
    s = p.add_subparsers(dest="quantize_command", required=True, metavar="ACTION")

    t = s.add_parser("train", help="train (resumable), keep the best weights by eval loss, export")
    t.add_argument("--emb", action="append", default=[], required=True, metavar="M=FILE", help=EMB_HELP)
    add_run_args(t, "quantize", "quantiser")
    t.add_argument("--export", type=Path,
                   help="export folder (default: RUN/export); an earlier export there is replaced")
    t.add_argument("--data", type=Path,
                   help="prepared dataset the tables were made from: checked, and forgetting (Kendall tau) "
                        "is measured at the end")
    add_config_args(t)
    add_runtime_args(t)
    t.set_defaults(func=cmd_train)

    e = s.add_parser("export", help="write semantic IDs, codebooks and stats of a trained run")
    e.add_argument("--run", type=Path, required=True, help="run folder of `quantize train`")
    add_output_args(e, help="export folder")
    e.add_argument("--emb", action="append", default=[], metavar="M=FILE",
                   help="use these tables instead of those recorded in RUN/run.json (same items and dataset)")
    e.set_defaults(func=cmd_export)


def cmd_train(args) -> int:
    from ..artifacts.embeddings import parse_emb_args, read_modalities
    from ..artifacts.outputs import check_output_folder
    from ..artifacts.sid_export import KIND as EXPORT_KIND
    from ..quantize.train import KIND, QuantizeConfig, export_inputs, run_training

    files = parse_emb_args(args.emb)
    out, run, cfg = resolve_run(args, KIND, QuantizeConfig, "quantize")
    data = None
    if args.data is not None:
        from ..data.dataset import SequenceData

        data = SequenceData.load(args.data)
    embs = read_modalities(files, n_items=data.n_items if data else None,
                           fingerprint=data.fingerprint if data else None)
    extra = [args.data] if args.data is not None else []
    export = Path(args.export) if args.export is not None else Path(out) / "export"
    # refuse a bad export location now, not after hours of training
    check_output_folder(export, EXPORT_KIND, export_inputs(out, embs) + extra, replaceable=True, what="--export")
    info = {"command": args.command_line,
            "data": str(Path(args.data).resolve()) if args.data is not None else None}
    with run.claim(inputs=[Path(e.path) for e in embs.values()] + extra, overwrite=args.overwrite):
        m = run_training(embs, cfg, run, export_dir=export, progress=not args.quiet,
                         data_fingerprint=data.fingerprint if data else None, run_info=info, extra_inputs=extra)
        if data is not None:
            from ..analysis.forgetting import export_forgetting

            m["forgetting"] = export_forgetting(data.sequences, {k: e.table for k, e in embs.items()}, export)
            run.write_metrics(m)
    _print_summary(m, out)
    return 0


def _print_summary(m: dict, out: Path) -> None:
    for mod, s in m["sids"].items():
        print(f"{mod}: unique SID tuples {s['unique_fraction']:.4f}, largest collision group "
              f"{s['largest_collision_group']}")
    for mod, t in m.get("forgetting", {}).items():
        print(f"{mod}: Kendall tau vs input  z_hat {t['z_hat']:.4f}  s_hat {t['s_hat']:.4f}  z {t['z']:.4f}")
    print(f"best epoch {m['best_epoch']} of {m['epochs_run']}, {m['seconds_per_epoch']}s/epoch; "
          f"export in {m['export']}; metrics in {Path(out) / 'metrics.json'}")


def cmd_export(args) -> int:
    from ..artifacts.embeddings import parse_emb_args
    from ..artifacts.runs import open_run
    from ..quantize.train import KIND, export_run

    run = open_run(args.run, KIND)
    files = parse_emb_args(args.emb) if args.emb else None
    stats = export_run(run, args.out, files, overwrite=args.overwrite)
    for mod, s in stats["modalities"].items():
        print(f"{mod}: unique SID tuples {s['unique_fraction']:.4f}, usage per level "
              f"{[round(lv['usage'], 3) for lv in s['levels']]}")
    print(f"export written to {args.out}")
    return 0
