"""`mmesid evaluate`: full-ranking metrics of a trained run (or the popularity floor) on a split."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

from ..data.dataset import SequenceData
from ..data.split import eval_examples
from ..errors import MmesidError
from ..eval.ranking import evaluate
from ..io import read_json, write_json
from ._common import print_metrics

# run kind (from run.json) -> "module:function(run_dir, data, device) -> scorer"
LOADERS = {
    "sasrec": "mmesid.cli.evaluate:_load_sasrec",
    "finetune": "mmesid.rec.trainer:load_scorer",
}


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="full-ranking HR/nDCG@{5,10,20} of a trained run")
    p.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    p.add_argument("--run", type=Path, help="run folder of a trained model (sasrec or finetune)")
    p.add_argument("--popularity", action="store_true", help="evaluate the most-popular baseline instead")
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=1024)
    p.set_defaults(func=cmd_evaluate)


def _load_sasrec(run_dir: Path, data: SequenceData, device):
    from ..config import from_dict
    from ..models.sasrec_train import SASRecTrainConfig, load_sasrec

    cfg = from_dict(SASRecTrainConfig, tomllib.loads((run_dir / "config.toml").read_text()))
    return load_sasrec(run_dir, data.n_items, cfg.model, device), cfg.model.max_len


def cmd_evaluate(args) -> int:
    from ..utils import resolve_device

    data = SequenceData.load(args.data)
    device = resolve_device(args.device)
    examples = eval_examples(data.sequences, args.split)
    max_len = 50
    if args.popularity:
        from ..models.popularity import Popularity

        scorer, name = Popularity(data.item_frequency()), "popularity"
    else:
        if args.run is None:
            raise MmesidError("evaluate needs --run RUN_DIR or --popularity")
        info = read_json(args.run / "run.json")
        kind = info.get("kind")
        if kind not in LOADERS:
            raise MmesidError(f"{args.run / 'run.json'}: unknown run kind {kind!r} (known: {sorted(LOADERS)})")
        mod, fn = LOADERS[kind].split(":")
        scorer, max_len = getattr(importlib.import_module(mod), fn)(args.run, data, device)
        name = kind
    m = evaluate(scorer, examples, batch_size=args.batch_size, max_len=max_len, device=device)
    print_metrics(f"{name} {args.split} ({m['users']} users, {m['eval_seconds']:.1f}s)", m)
    if args.run is not None:
        write_json(args.run / f"eval_{args.split}.json", m)
    return 0
