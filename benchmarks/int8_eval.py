"""int8 vs fp32 evaluation of one trained fine-tuning run on a fixed sample of test users (issue 8).

Loads the run twice over the same users: as `mmesid evaluate` does (LoRA folded in), then with the
backbone's linear layers quantised to int8 (`mmesid evaluate --int8`); prints users/s and the metrics of
each and how many users keep their target's rank. `--profile` adds a torch.profiler table of the int8 pass.

    python benchmarks/int8_eval.py --data data/beauty --run RUN --users 2048 --threads 1 [--profile]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--users", type=int, default=2048, help="random test users (seed 0); 0 = all")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()

    from mmesid.utils import flush_subnormals, set_cpu_threads

    flush_subnormals()  # as the `mmesid` command does, before torch's threads exist
    set_cpu_threads(args.threads)
    from mmesid.data.dataset import SequenceData
    from mmesid.data.split import EvalExamples, eval_examples
    from mmesid.eval.ranking import evaluate
    from mmesid.rec.runs import load_scorer

    data = SequenceData.load(args.data)
    ex = eval_examples(data.sequences, "test")
    if 0 < args.users < len(ex):
        idx = np.random.default_rng(0).choice(len(ex), args.users, replace=False)
        ex = EvalExamples([ex.histories[i] for i in idx], ex.targets[idx], ex.users[idx])
    cpu = torch.device("cpu")
    ranks = {}
    for int8 in (False, True):
        model, max_len = load_scorer(args.run, data, cpu, int8=int8)
        t = time.perf_counter()
        m = evaluate(model, ex, batch_size=args.batch_size, max_len=max_len, device=cpu, return_ranks=True)
        dt = time.perf_counter() - t
        ranks[int8] = np.asarray(m.pop("ranks"))
        name = "int8" if int8 else "fp32"
        print(name, f"{len(ex) / dt:.1f} users/s", {k: round(v, 5) for k, v in m.items() if "@" in k}, flush=True)
    print("same rank:", float((ranks[False] == ranks[True]).mean()),
          "same in/out of the top 10:", float(((ranks[False] < 10) == (ranks[True] < 10)).mean()))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            evaluate(model, ex, batch_size=args.batch_size, max_len=max_len, device=cpu)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
