"""Test-set evaluation of a fine-tuning run under CPU bf16 autocast (what `mixed_precision = "bf16"` does
inside `mmesid finetune`), for runs trained either way; prints the metrics and the wall time.

    python benchmarks/eval_autocast.py --data data/beauty --run RUN [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from mmesid.data.dataset import SequenceData
from mmesid.data.split import eval_examples
from mmesid.eval.ranking import evaluate
from mmesid.serve.runs import load_run_scorer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--split", default="test", choices=["valid", "test"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = SequenceData.load(args.data)
    model, max_len, _ = load_run_scorer(args.run, data, torch.device("cpu"))
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m = evaluate(model, eval_examples(data.sequences, args.split), batch_size=256, max_len=max_len,
                     device=torch.device("cpu"))
    print({k: round(v, 4) for k, v in m.items() if isinstance(v, float)}, f"{time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
