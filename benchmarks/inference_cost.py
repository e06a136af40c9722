"""The paper's inference-cost claim (section 4.4), measured: MME-SID (one forward, N input embeddings,
full ranking) vs TIGER-MM (N x L input tokens, code-by-code constrained beam search), same machine,
same test users, one run.

Speed does not depend on the weights, so both models are built untrained from the real Beauty inputs
(E_c, E_t, the SID export). TIGER-MM is sized to match MME-SID's backbone (MiniLM: 6 layers, d 384,
12 heads of 32, FFN 1536 -> T5 with 6 encoder + 6 decoder layers of the same size) and also measured at
TIGER's own size (4 + 4 layers, d 128). Reported: input tokens per history (mean over the sampled test
users), per-user latency with batch 1 (median), and users/s with batch 64.

    python benchmarks/inference_cost.py --data data/beauty --emb c=E_c.safetensors --emb t=E_t.safetensors \
        --sids quantize/export --users 256 --threads 2 --out cost.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn, batches) -> tuple[float, list[float]]:
    fn(batches[0])  # warm-up
    each = []
    for b in batches:
        t0 = time.perf_counter()
        fn(b)
        each.append(time.perf_counter() - t0)
    return sum(each), each


def measure(name: str, scorer, hist, tokens: float, batch: int, single_users: int) -> dict:
    n = len(hist)
    total, _ = timed(scorer.scores, [hist[i:i + batch] for i in range(0, n, batch)])
    _, each = timed(scorer.scores, [hist[i:i + 1] for i in range(single_users)])
    out = {"model": name, "input_tokens_per_history": tokens, "users_per_s_batch": n / total,
           "latency_ms_batch1_median": 1000 * float(np.median(each)),
           "latency_ms_batch1_p90": 1000 * float(np.percentile(each, 90))}
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--emb", action="append", required=True, metavar="M=FILE")
    p.add_argument("--sids", type=Path, required=True)
    p.add_argument("--users", type=int, default=256)
    p.add_argument("--single-users", type=int, default=64)
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    from mmesid.artifacts.embeddings import parse_emb_args
    from mmesid.config import load_config
    from mmesid.data.dataset import SequenceData
    from mmesid.data.split import eval_examples, pad_left
    from mmesid.models.tiger import TigerModelConfig
    from mmesid.models.tiger_train import TigerTrainConfig, build
    from mmesid.rec.build import build_model
    from mmesid.rec.config import FinetuneConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = SequenceData.load(args.data)
    test = eval_examples(data.sequences, "test")
    idx = np.sort(np.random.default_rng(0).choice(len(test), args.users, replace=False))
    order = idx[np.argsort([len(test.histories[i]) for i in idx], kind="stable")]  # length-sorted, as evaluate
    hist = pad_left([test.histories[i] for i in order], 20)
    n_items = float((hist > 0).sum(1).float().mean())
    cfg = load_config(FinetuneConfig, None, ['device="cpu"', "max_len=20"])
    mme = build_model(cfg, data, parse_emb_args(args.emb), str(args.sids), torch.device("cpu")).eval()
    res = {"users": args.users, "beams": args.beams, "threads": args.threads, "history_items_mean": n_items,
           "load_before": __import__("os").getloadavg()[0], "rows": []}
    prompt = len(mme.prompt.prefix_ids) + len(mme.prompt.suffix_ids)
    res["rows"].append(measure("MME-SID (MiniLM)", mme, hist, n_items + prompt, 64, args.single_users))
    for label, mc in (("TIGER-MM, MiniLM-sized T5 (6+6 layers, d 384)",
                       TigerModelConfig(d_model=384, layers=6, heads=12, d_kv=32, d_ff=1536, max_len=20)),
                      ("TIGER-MM, TIGER-sized T5 (4+4 layers, d 128)", TigerModelConfig(max_len=20))):
        tcfg = TigerTrainConfig(model=mc, beams=args.beams)
        tiger = build(data, args.sids, tcfg).eval()
        tokens = n_items * tiger.tuples.length
        res["rows"].append(measure(label, tiger, hist, tokens, 64, args.single_users))
    base = res["rows"][0]
    for r in res["rows"][1:]:
        r["users_per_s_ratio_mme_over_this"] = base["users_per_s_batch"] / r["users_per_s_batch"]
        r["latency_ratio_this_over_mme"] = r["latency_ms_batch1_median"] / base["latency_ms_batch1_median"]
    print(json.dumps(res, indent=2))
    if args.out:
        args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
