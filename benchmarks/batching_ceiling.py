"""What batching can give a trained run on this machine, without HTTP: users/s of `Recommender.top_k`
for one history at a time vs micro-batches of random test histories (grouped by length, as the
service does, and as one forward padded to the longest history).

    python benchmarks/batching_ceiling.py --run RUN [--threads 1]
"""

import argparse
import time

import numpy as np
import torch

import mmesid.serve.recommender as R
from mmesid.serve.recommender import Recommender


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rec = Recommender.load(args.run)
    seqs = [s[:-1] for s in rec.data.sequences]
    rng = np.random.default_rng(0)

    def bench(batch: int, reps: int, label: str) -> None:
        t = 0.0
        for _ in range(reps):
            hs = [seqs[i] for i in rng.choice(len(seqs), batch)]
            t0 = time.perf_counter()
            rec.top_k(hs, 10)
            t += time.perf_counter() - t0
        print(f"{label} B={batch}: {t / reps * 1000:.1f} ms/batch, {batch * reps / t:.1f} users/s", flush=True)

    bench(1, 3, "warm-up")
    for b in (1, 16, 32):
        bench(b, 10 if b == 1 else 4, "length groups")
    R.length_groups = lambda lengths, bs: [[i for i, n in enumerate(lengths) if n > 0]]
    for b in (16, 32):
        bench(b, 4, "one forward")


if __name__ == "__main__":
    main()
