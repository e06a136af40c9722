"""`mmesid demo`: the whole pipeline on synthetic data, offline, in a few minutes on a CPU.

Stages run in order, each writing its artefacts under the demo folder:
data -> SASRec (E_c) -> ... ; later stages are added here as they land.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import from_dict
from ..data.synthetic import SyntheticConfig, generate, write_images
from ..io import write_json


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline offline on synthetic data")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo folder (default runs/demo)")
    p.add_argument("--users", type=int, default=600)
    p.add_argument("--items", type=int, default=240)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from ..models.sasrec_train import SASRecTrainConfig, train_sasrec

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary: dict = {}

    print("[1] synthetic data")
    syn = SyntheticConfig(n_users=args.users, n_items=args.items, seed=args.seed)
    data = generate(syn)
    data.validate()
    data.save(out / "data", overwrite=True)
    write_images(data, out / "images", syn)
    summary["data"] = data.stats()

    print("[2] SASRec: collaborative embeddings E_c and the SASRec baseline")
    cfg = from_dict(SASRecTrainConfig, {"epochs": 30, "patience": 5, "batch_size": 64, "lr": 3e-3,
                                        "seed": args.seed,
                                        "model": {"hidden": 32, "dropout": 0.2, "attn_dropout": 0.2}})
    m = train_sasrec(data, cfg, out / "sasrec", resume=False)
    summary["sasrec_test"] = {k: v for k, v in m["test"].items() if "@" in k}

    summary["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    print(f"demo finished in {summary['seconds']}s; artefacts in {out}")
    return 0
