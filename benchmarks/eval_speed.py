"""Wall time of full-ranking evaluation of all Beauty test users with a SASRec-sized scorer.

    python benchmarks/eval_speed.py --data PREPARED_BEAUTY [--threads N]

The time does not depend on the weights, so an untrained SASRec of the default size is used.
"""

import argparse
import time

import torch

from mmesid.data.dataset import SequenceData
from mmesid.data.split import eval_examples
from mmesid.eval import evaluate
from mmesid.models.sasrec import SASRec, SASRecConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="prepared dataset folder")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=1024)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = SequenceData.load(args.data)
    model = SASRec(data.n_items, SASRecConfig()).eval()
    ex = eval_examples(data.sequences, "test")
    t0 = time.perf_counter()
    m = evaluate(model, ex, batch_size=args.batch_size, progress=False)
    print(f"{m['users']} users, {data.n_items} items: {time.perf_counter() - t0:.2f}s "
          f"(threads {torch.get_num_threads()}, batch {args.batch_size})")


if __name__ == "__main__":
    main()
