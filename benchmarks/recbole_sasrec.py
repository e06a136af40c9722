"""RecBole 1.2.1's SASRec on the same Beauty sequences, split and metrics as mmesid's SASRec.

Runs in its own environment (RecBole pins old numpy/pandas/scipy); see BENCHMARKS.md for the setup.
RecBole's quick_start imports ray, which is broken there, so Config / create_dataset /
data_preparation / Trainer are driven directly.

    python benchmarks/recbole_sasrec.py --sequences ../shared/data/beauty/Beauty_new.txt --out OUT [--epochs N]

Writes OUT/recbole_sasrec.json: best validation and test HR/nDCG@{5,10,20} and seconds per epoch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import warnings

import numpy as np

# RecBole 1.2.1 touches numpy aliases removed in numpy 2 (np.float_, np.long, ...); restore them so
# it also runs beside a numpy-2 stack (e.g. a GPU image). With numpy<2 this changes nothing.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    _missing = {a: t for a, t in {"float_": np.float64, "long": np.int64, "int": int, "float": float,
                      "bool": bool, "object": object, "complex_": np.complex128, "unicode_": np.str_}.items()
                if not hasattr(np, a)}
for alias, target in _missing.items():
    setattr(np, alias, target)


def write_atomic_inter(sequences: Path, folder: Path, name: str = "recbole_data") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.inter", "w") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for line in open(sequences):
            parts = line.split()
            for t, item in enumerate(parts[1:]):
                out.write(f"{parts[0]}\t{item}\t{t}\n")  # position as timestamp keeps the order


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequences", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--stopping-step", type=int, default=10)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    work = args.out / "recbole_data"
    write_atomic_inter(args.sequences, work)
    use_gpu = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    cfg = {
        "data_path": str(args.out), "dataset": "recbole_data", "checkpoint_dir": str(args.out / "ckpt"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 50,
        "hidden_size": 64, "inner_size": 256, "n_layers": 2, "n_heads": 2,
        "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5, "hidden_act": "gelu",
        "layer_norm_eps": 1e-12, "initializer_range": 0.02, "loss_type": "CE",
        "train_neg_sample_args": None, "learning_rate": 1e-3, "train_batch_size": 1024,
        "epochs": args.epochs, "stopping_step": args.stopping_step, "eval_step": 1,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full",
                      "group_by": "user"},
        "metrics": ["Hit", "NDCG"], "topk": [5, 10, 20], "valid_metric": "NDCG@10",
        "eval_batch_size": 4096, "seed": 2020, "reproducibility": True,
        "use_gpu": use_gpu, "show_progress": False, "log_wandb": False,
    }
    config = Config(model="SASRec", dataset="recbole_data", config_dict=cfg)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)  # per-epoch training/validation lines go to stdout and RecBole's log file
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = SASRec(config, train.dataset).to(config["device"])
    trainer = Trainer(config, model)

    epoch_times = []
    orig = trainer._train_epoch

    def timed(*a, **k):
        t0 = time.perf_counter()
        r = orig(*a, **k)
        epoch_times.append(time.perf_counter() - t0)
        return r

    trainer._train_epoch = timed
    # Keep the best model in memory instead of RecBole's pickled checkpoint file (no unpickling).
    best_state = {}

    def keep_best(*a, **k):
        best_state.clear()
        best_state.update({n: t.detach().clone() for n, t in model.state_dict().items()})

    trainer._save_checkpoint = keep_best
    t0 = time.perf_counter()
    best_valid, valid_result = trainer.fit(train, valid, saved=True, show_progress=False)
    fit_seconds = time.perf_counter() - t0
    model.load_state_dict(best_state)
    test_result = trainer.evaluate(test, load_best_model=False, show_progress=False)
    res = {
        "model": "RecBole 1.2.1 SASRec",
        "users": int(dataset.user_num - 1), "items": int(dataset.item_num - 1),
        "interactions": int(len(dataset.inter_feat)),
        "valid": {k.replace("hit", "HR").replace("ndcg", "nDCG"): float(v) for k, v in valid_result.items()},
        "test": {k.replace("hit", "HR").replace("ndcg", "nDCG"): float(v) for k, v in test_result.items()},
        "epochs_run": len(epoch_times),
        "seconds_per_epoch": round(float(np.mean(epoch_times)), 2) if epoch_times else None,
        "fit_seconds": round(fit_seconds, 1),
        "device": str(config["device"]),
        "torch": torch.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recbole_sasrec.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
