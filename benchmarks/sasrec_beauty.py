"""mmesid's SASRec on Amazon Beauty: prepare the authors' files, train with early stopping, test.

    python benchmarks/sasrec_beauty.py --beauty ../shared/data/beauty --out runs/sasrec-beauty [--device cuda]

Same as `mmesid data prepare` + `mmesid sasrec train` with the default config (64-d, 2 layers,
2 heads, dropout 0.5, CE over all items, lr 1e-3, max length 50, patience 10 on validation nDCG@10),
but callable without the CLI. Writes the run folder (metrics.json, item_embeddings.safetensors).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmesid.data.readers import read_authors
from mmesid.models.sasrec_train import SASRecTrainConfig, train_sasrec


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--beauty", type=Path, required=True, help="folder with Beauty_new.txt")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    from mmesid.config import load_config

    cfg = load_config(SASRecTrainConfig, None, args.overrides + [f'device="{args.device}"'])
    data = read_authors(args.beauty)
    data.validate()
    m = train_sasrec(data, cfg, args.out, progress=False)
    print(json.dumps({k: m[k] for k in ("valid", "test", "best_epoch", "epochs_run", "seconds_per_epoch",
                                        "train_seconds", "peak_rss_mb", "env")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
