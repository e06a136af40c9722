"""`mmesid sasrec train`: the collaborative encoder of Stage 1 and the SASRec baseline."""

from __future__ import annotations

from pathlib import Path

from ._common import (
    add_config_args,
    add_run_args,
    add_runtime_args,
    print_valid_test,
    resolve_run,
)


def register(sub) -> None:
    p = sub.add_parser("sasrec", help="train SASRec (E_c for Stage 1, and the SASRec baseline)")
    s = p.add_subparsers(dest="sasrec_command", required=True, metavar="ACTION")
    t = s.add_parser("train", help="train on the training split, early-stop on validation, test, export E_c")
    t.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    add_run_args(t, "sasrec", "SASRec")
    add_config_args(t)
    add_runtime_args(t)
    t.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from ..data.dataset import SequenceData
    from ..models.sasrec_train import KIND, SASRecTrainConfig, train_sasrec

    out, run, cfg = resolve_run(args, KIND, SASRecTrainConfig, "sasrec")
    data = SequenceData.load(args.data)
    with run.claim(inputs=[args.data] + ([Path(cfg.sids)] if cfg.sids else []), overwrite=args.overwrite):
        run.add_info({"command": args.command_line, "data": str(Path(args.data).resolve())})
        m = train_sasrec(data, cfg, run, progress=not args.quiet)
    print_valid_test(m)
    print(f"E_c written to {out / 'item_embeddings.safetensors'}; metrics in {out / 'metrics.json'}")
    return 0
