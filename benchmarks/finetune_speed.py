"""Fine-tuning and LLM-evaluation speed of `mmesid finetune`, as a fraction of this machine's matmul peak.

Measures in one run on one machine (issue 8, part 1):
- the matmul peak in fp32 and bf16 (a plain torch.mm loop on square matrices);
- training: seconds per optimiser step, training sequences/s and target items/s, FLOPs per step
  (torch's FlopCounterMode) and achieved FLOP/s as a share of the peak for the dtype;
- evaluation: users/s over a fixed sample of test users (full ranking over all items, as
  `mmesid evaluate`), the time extrapolated to every user, FLOPs per user and the share of the peak.

The item tables only set shapes here (speed does not depend on their values): without --emb the
script writes random E_c (64-d) and E_t (384-d) tables and a random 4 x 256 x 64 SID export.

    python benchmarks/finetune_speed.py --data data/beauty --threads 1 --out speed.json
    python benchmarks/finetune_speed.py --data data/beauty --threads 1 --set mixed_precision='"bf16"'
    python benchmarks/finetune_speed.py --data data/beauty --device cuda --set mixed_precision='"bf16"'
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, seconds: float = 2.0, device: str = "cpu") -> float:
    """FLOP/s of back-to-back square matmuls (the machine's practical peak for this dtype); the size
    grows from 256 until one product takes about 50 ms (at most 2048 on a CPU, 8192 on a GPU), so a
    slow dtype stays quick."""
    n, top = 256, 8192 if device.startswith("cuda") else 2048
    while True:
        a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
        torch.mm(a, b)
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        if time.perf_counter() - t0 > 0.05 or n >= top:
            break
        n *= 2
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
        if reps % 16 == 0:
            sync(device)
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def random_inputs(folder: Path, data) -> tuple[dict, str]:
    from mmesid.artifacts.embeddings import write_item_embedding
    from mmesid.artifacts.sid_export import write_sid_export

    g = torch.Generator().manual_seed(0)
    emb = {}
    for m, d in (("c", 64), ("t", 384)):
        emb[m] = str(write_item_embedding(folder / f"E_{m}.safetensors", torch.randn(data.n_items + 1, d, generator=g),
                                          modality=m, encoder="random", data_fingerprint=data.fingerprint))
    sids = {m: torch.randint(0, 256, (data.n_items + 1, 4), generator=g) for m in emb}
    books = {m: torch.randn(4, 256, 64, generator=g) for m in emb}
    tables = {m: {"z": torch.zeros(data.n_items + 1, 64), "z_hat": torch.zeros(data.n_items + 1, 64),
                  "s_hat": torch.zeros(data.n_items + 1, 1), "mask": torch.ones(data.n_items + 1)} for m in emb}
    write_sid_export(folder / "sids", sids, books, tables, {"modalities": {}}, data_fingerprint=data.fingerprint)
    return emb, str(folder / "sids")


def time_training(task, first: int, steps: int) -> dict:
    """Time `steps` optimiser steps, then count their FLOPs in a second pass over the same batches
    (the batches of a step are a pure function of the seed and the step; FLOPs do not depend on the weights)."""
    for s in range(first, first + 2):  # warm-up
        task.train_step(s)
    timed = range(first + 2, first + 2 + steps)
    targets = sum(int(task.examples.batch(idx)["pos_targets"].gt(0).sum()) + len(idx)
                  for s in timed for idx in task.micro_batches(s))
    dev = str(task.rt.device)
    sync(dev)
    t0 = time.perf_counter()
    for s in timed:
        task.train_step(s)
    sync(dev)
    dt = (time.perf_counter() - t0) / steps
    with FlopCounterMode(display=False) as fc:
        for s in timed:
            task.train_step(s)
    flops = fc.get_total_flops() / steps
    seqs = task.cfg.batch_size * task.cfg.grad_accum
    return {"s_per_step": dt, "sequences_per_s": seqs / dt, "targets_per_s": targets / steps / dt,
            "flops_per_step": flops, "flops_per_s": flops / dt}


def time_evaluation(task, users: int) -> dict:
    """Time the evaluation of a sample of test users, then count the FLOPs of the same evaluation."""
    from mmesid.rec.distributed import distributed_evaluate

    ex = task.valid if users <= 0 else _sample(task, users)
    distributed_evaluate(task.rt, task.model, _head(ex, 64), task.cfg)  # warm-up
    sync(str(task.rt.device))
    t0 = time.perf_counter()
    m = distributed_evaluate(task.rt, task.model, ex, task.cfg)
    sync(str(task.rt.device))
    dt = time.perf_counter() - t0
    with FlopCounterMode(display=False) as fc:
        distributed_evaluate(task.rt, task.model, ex, task.cfg)
    per_user = fc.get_total_flops() / len(ex)
    return {"users": len(ex), "seconds": dt, "users_per_s": len(ex) / dt, "flops_per_user": per_user,
            "flops_per_s": per_user * len(ex) / dt, "nDCG@10": m["nDCG@10"]}


def _sample(task, n):
    from mmesid.data.split import EvalExamples, eval_examples

    test = eval_examples(task.data_sequences, "test")
    idx = np.sort(np.random.default_rng(0).choice(len(test), min(n, len(test)), replace=False))
    return EvalExamples([test.histories[i] for i in idx], test.targets[idx], test.users[idx])


def _head(ex, n):
    from mmesid.data.split import EvalExamples

    return EvalExamples(ex.histories[:n], ex.targets[:n], ex.users[:n])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    p.add_argument("--emb", action="append", default=[], metavar="M=FILE", help="E_c / E_t files (default: random)")
    p.add_argument("--sids", type=Path, help="SID export (default: random)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--steps", type=int, default=30, help="timed training steps")
    p.add_argument("--eval-users", type=int, default=2048, help="test users in the timed evaluation")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="finetune config key=value")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--keep-subnormals", action="store_true",
                   help="compute with subnormal floats (before `mmesid` flushed them; for before/after runs)")
    args = p.parse_args()
    if not args.keep_subnormals:
        from mmesid.utils import flush_subnormals

        flush_subnormals()  # as the `mmesid` command does, before torch's threads exist

    from mmesid.artifacts.embeddings import parse_emb_args
    from mmesid.config import load_config
    from mmesid.data.dataset import SequenceData
    from mmesid.rec.config import FinetuneConfig
    from mmesid.rec.distributed import setup_runtime
    from mmesid.rec.train import make_task

    torch.set_num_threads(args.threads)
    peak = {"fp32": matmul_peak(torch.float32, device=args.device),
            "bf16": matmul_peak(torch.bfloat16, device=args.device)}
    data = SequenceData.load(args.data)
    cfg = load_config(FinetuneConfig, None, [f'device="{args.device}"', f"threads={args.threads}", *args.overrides])
    with tempfile.TemporaryDirectory() as tmp:
        emb, sids = (parse_emb_args(args.emb), str(args.sids)) if args.emb else random_inputs(Path(tmp), data)
        task = make_task(data, cfg, emb, sids, setup_runtime(cfg))
        task.data_sequences = data.sequences
        train = time_training(task, 0, args.steps)
        ev = time_evaluation(task, args.eval_users)
    bf16 = str(task.rt.acc.mixed_precision) == "bf16" or cfg.backbone.load_in_4bit or cfg.backbone.dtype == "bfloat16"
    dtype = "bf16" if bf16 else "fp32"
    res = {"variant": cfg.variant, "subnormals_flushed": not args.keep_subnormals, "backbone": task.core.backbone_name, "threads": args.threads, "device": args.device,
           "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
           "backbone_settings": {"dtype": cfg.backbone.dtype, "load_in_4bit": cfg.backbone.load_in_4bit},
           "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None,
           "mixed_precision": str(task.rt.acc.mixed_precision), "batch_size": cfg.batch_size, "peak_flops": peak,
           "train": {**train, "share_of_peak": train["flops_per_s"] / peak[dtype]},
           "eval": {**ev, "share_of_peak": ev["flops_per_s"] / peak[dtype],
                    "seconds_all_users": data.n_users / ev["users_per_s"]}}
    print(json.dumps(res, indent=2, default=float))
    if args.out:
        args.out.write_text(json.dumps(res, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
