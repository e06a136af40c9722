"""`mmesid sasrec train`: the collaborative encoder of Stage 1 and the SASRec baseline."""

from __future__ import annotations

from pathlib import Path

from ..data.dataset import SequenceData
from ..models.sasrec_train import SASRecTrainConfig, train_sasrec
from ._common import add_config_args, config_from_args, print_metrics, run_dir_from_args, write_run_config


def register(sub) -> None:
    p = sub.add_parser("sasrec", help="train SASRec (E_c for Stage 1, and the SASRec baseline)")
    s = p.add_subparsers(dest="sasrec_command", required=True, metavar="ACTION")
    t = s.add_parser("train", help="train on the training split, early-stop on validation, test, export E_c")
    t.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    t.add_argument("--out", type=Path, help="run folder (default: runs/sasrec-<time>); an existing one resumes")
    add_config_args(t)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    cfg = config_from_args(SASRecTrainConfig, args)
    data = SequenceData.load(args.data)
    run_dir = run_dir_from_args(args, "sasrec")
    write_run_config(run_dir, cfg, {"command": "sasrec train", "kind": "sasrec", "data": str(args.data)})
    m = train_sasrec(data, cfg, run_dir, progress=not args.no_progress)
    print_metrics("valid", m["valid"])
    print_metrics("test ", m["test"])
    print(f"E_c written to {run_dir / 'item_embeddings.safetensors'}; metrics in {run_dir / 'metrics.json'}")
    return 0
