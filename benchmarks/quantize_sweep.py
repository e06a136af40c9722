"""Sweep of MM-RQ-VAE configurations on Beauty: Kendall tau vs the input table, SID uniqueness, time.

Each configuration is one `run_training` call (the same code path as `mmesid quantize train`), run
sequentially with one thread. Results are appended to OUT/results.jsonl (one line per config) so the
sweep can be stopped and resumed; finished configs are skipped.

    python benchmarks/quantize_sweep.py --emb c=RUNS/sasrec/item_embeddings.safetensors \
        --data PREPARED_BEAUTY --out benchmarks/out/quantize-sweep --only mse64,mmd64

All paths are arguments (relative to the current directory or absolute); nothing is assumed about
the machine. Forgetting is measured with `mmesid.analysis.export_forgetting`, as `quantize train`
does.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from mmesid.analysis.forgetting import export_forgetting
from mmesid.artifacts.embeddings import parse_emb_args, read_modalities
from mmesid.config import load_config
from mmesid.data.dataset import SequenceData
from mmesid.quantize.train import QuantizeConfig, run_training

SMALL = ["model.latent_dim=64", "model.hidden=[256, 256]"]
WIDE = ["model.latent_dim=512", "model.hidden=[1024, 1024]"]
MMD = ["loss.recon=\"mmd\""]
BOTH = ["loss.recon=\"mse+mmd\""]
SK = ["assign=\"sinkhorn\""]

CONFIGS: dict[str, list[str]] = {
    # small latent (64-d)
    "mse64": SMALL,
    "mmd64": SMALL + MMD,
    "mmd64-sk": SMALL + MMD + SK,
    "both64": SMALL + BOTH,
    "both64-sk": SMALL + BOTH + SK,
    "mse64-sk": SMALL + SK,
    # wide (closer to the authors' large latent + wide MLPs, scaled down for CPU)
    "mse512": WIDE,
    "mmd512": WIDE + MMD,
    "mmd512-sk": WIDE + MMD + SK,
    "both512": WIDE + BOTH,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--emb", action="append", required=True, metavar="M=FILE", help="input table (repeatable)")
    ap.add_argument("--data", type=Path, required=True, help="prepared dataset folder the tables come from")
    ap.add_argument("--out", type=Path, required=True, help="results folder (results.jsonl, runs/)")
    ap.add_argument("--only", help="comma-separated config names (default: all)")
    ap.add_argument("--extra", action="append", default=[], help="NAME=override;override (ad hoc configs)")
    ap.add_argument("--set", action="append", default=[], help="override applied to every config")
    ap.add_argument("--tag", default="", help="suffix for result names (e.g. the E_c used)")
    ap.add_argument("--keep-runs", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    configs = dict(CONFIGS)
    for e in args.extra:
        name, ov = e.split("=", 1)
        configs[name] = [o for o in ov.split(";") if o]
    names = args.only.split(",") if args.only else list(configs)
    data = SequenceData.load(args.data)
    embs = read_modalities(parse_emb_args(args.emb), n_items=data.n_items, fingerprint=data.fingerprint)
    args.out.mkdir(parents=True, exist_ok=True)
    res_path = args.out / "results.jsonl"
    done = set()
    if res_path.exists():
        done = {json.loads(line)["name"] for line in res_path.read_text().splitlines() if line.strip()}
    for name in names:
        full = name + args.tag
        if full in done:
            print(f"skip {full} (done)")
            continue
        overrides = configs[name] + ["threads=1"] + args.set
        cfg = load_config(QuantizeConfig, None, overrides)
        run_dir = args.out / "runs" / full
        if run_dir.exists():
            shutil.rmtree(run_dir)
        t0 = time.time()
        m = run_training(embs, cfg, run_dir, progress=False, data_fingerprint=data.fingerprint)
        m["forgetting"] = export_forgetting(data.sequences, {k: e.table for k, e in embs.items()},
                                            Path(m["export"]))
        row = {"name": full, "overrides": overrides, "inputs": args.emb, "wall_seconds": round(time.time() - t0, 1),
               "forgetting": m.get("forgetting"), "sids": m["sids"], "best_epoch": m["best_epoch"],
               "epochs_run": m["epochs_run"], "seconds_per_epoch": m["seconds_per_epoch"],
               "train_seconds_per_epoch": m["train_seconds_per_epoch"], "seconds_to_99pct": m["seconds_to_99pct"],
               "epoch_99pct": m["epoch_99pct"], "seconds_to_best": m["seconds_to_best"],
               "total_seconds": m["total_seconds"],
               "best_eval": m["history"][m["best_epoch"]]["eval"] if m["best_epoch"] >= 0 else None}
        with open(res_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        fg = m.get("forgetting", {})
        print(f"{full}: " + "  ".join(f"{mod}: tau z_hat {t['z_hat']:.4f} s_hat {t['s_hat']:.4f} z {t['z']:.4f} "
                                      f"uniq {m['sids'][mod]['unique_fraction']:.4f}" for mod, t in fg.items())
              + f"  best@{m['best_epoch']} {m['total_seconds']}s", flush=True)
        if not args.keep_runs:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


if __name__ == "__main__":
    main()
