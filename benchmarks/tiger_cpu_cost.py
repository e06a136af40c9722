"""Cost of training and testing TIGER-MM (TIGER's size) on this machine: seconds per training step of
256 prefixes, minutes per epoch, constrained beam-search users/s, minutes to test every user.

    python benchmarks/tiger_cpu_cost.py --data data/beauty --sids <quantiser export> [--threads 1] [--random-batches]

--random-batches times batches drawn at random (each padded to its longest history), as TIGER trains;
without it, the first batches of the default length-bucketed order.
"""

import argparse
import json
import time

import torch

from mmesid.data.dataset import SequenceData
from mmesid.eval.ranking import evaluate
from mmesid.models.tiger_train import TigerTask, TigerTrainConfig, build


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--sids", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--random-batches", action="store_true", help="length_bucketing = false")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = SequenceData.load(args.data)
    cfg = TigerTrainConfig(valid_users=args.users, length_bucketing=not args.random_batches)
    model = build(data, args.sids, cfg)
    task = TigerTask(model, data, cfg, torch.device("cpu"))
    task.train_step(0)  # warm-up
    t0 = time.perf_counter()
    for s in range(1, 1 + args.steps):
        task.train_step(s)
    dt = (time.perf_counter() - t0) / args.steps
    ev = evaluate(model.eval(), task.valid, batch_size=64, max_len=cfg.model.max_len, progress=False)
    users_per_s = len(task.valid) / ev["eval_seconds"]
    print(json.dumps({"threads": args.threads, "length_bucketing": cfg.length_bucketing, "s_per_step": dt, "batch_size": cfg.batch_size,
                      "steps_per_epoch": task.steps_per_epoch, "minutes_per_epoch": dt * task.steps_per_epoch / 60,
                      "beams": cfg.beams, "beam_users_per_s": users_per_s,
                      "minutes_to_test_all_users": data.n_users / users_per_s / 60}, indent=1))


if __name__ == "__main__":
    main()
