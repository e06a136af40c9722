"""`mmesid tiger train`: TIGER-MM, generative retrieval over the multimodal semantic IDs (a Table 3 baseline)."""

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
    p = sub.add_parser("tiger", help="train TIGER-MM (semantic IDs as the only item representation)")
    s = p.add_subparsers(dest="tiger_command", required=True, metavar="ACTION")
    t = s.add_parser("train", help="train on the training split with constrained beam-search validation, test")
    t.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    t.add_argument("--sids", type=Path, required=True, help="semantic-ID export (mmesid quantize train)")
    add_run_args(t, "tiger", "TIGER-MM")
    add_config_args(t)
    add_runtime_args(t)
    t.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from ..data.dataset import SequenceData
    from ..models.tiger_train import KIND, TigerTrainConfig, train_tiger

    out, run, cfg = resolve_run(args, KIND, TigerTrainConfig, "tiger")
    data = SequenceData.load(args.data)
    from ..artifacts.sid_export import load_sid_export

    load_sid_export(args.sids)  # a missing or damaged export is refused before the run folder exists
    with run.claim(inputs=[args.data, args.sids], overwrite=args.overwrite):
        run.add_info({"command": args.command_line, "data": str(Path(args.data).resolve())})
        m = train_tiger(data, args.sids, cfg, run, progress=not args.quiet)
    print_valid_test(m)
    print(f"metrics in {out / 'metrics.json'}")
    return 0
