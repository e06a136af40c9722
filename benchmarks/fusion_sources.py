"""Which score source carries a fine-tuned run with frequency-aware fusion (issue 8: what limits MME-SID).

    python benchmarks/fusion_sources.py --data data/beauty --run runs/mme-sid [--users 2000] [--split valid]
        [--checkpoint runs/mme-sid/checkpoints/step-000000200] [--weights-only]

Scores a fixed random sample of users (seeded) with the fused score and with each source alone
(<o, E_x[i]>, then <o, W_j E_j[i] + b_j> for each modality), and prints the fusion weights averaged over
the items of each training-frequency quintile. Validation users by default: nothing here selects on test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mmesid.data.dataset import SequenceData
from mmesid.data.split import EvalExamples, eval_examples
from mmesid.errors import MmesidError
from mmesid.eval.ranking import evaluate
from mmesid.serve.runs import load_run_scorer


class SourceScorer:
    """scores(histories) of one source (None = the fused score). The evaluator calls it with the same
    batches in the same order on every pass, so the LLM's user states o are computed on the first pass
    only and reused (checked) for the other sources."""

    def __init__(self, model):
        self.model, self.source, self.cache, self.calls = model, None, [], 0

    def use(self, source: int | None) -> SourceScorer:
        self.source, self.calls = source, 0
        return self

    @torch.no_grad()
    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        if self.calls == len(self.cache):
            self.cache.append((histories.clone(), self.model.user_states(histories)))
        seen, o = self.cache[self.calls]
        if not torch.equal(seen, histories):
            raise RuntimeError("the evaluator changed its batch order between passes")
        self.calls += 1
        return self.model.score(o) if self.source is None else self.model.source_scores(o)[self.source]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--split", default="valid", choices=("valid", "test"))
    p.add_argument("--users", type=int, default=2000, help="random sample of users (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint", help="score with the trainable weights of this checkpoint folder of the run")
    p.add_argument("--weights-only", action="store_true", help="print the fusion weights only (no scoring)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    try:
        data = SequenceData.load(args.data)
        model, max_len, kind = load_run_scorer(args.run, data, "cpu")
    except MmesidError as e:
        p.error(str(e))
    if kind != "finetune" or getattr(model, "fusion", None) is None:
        p.error(f"{args.run}: not a fine-tuning run with fusion")
    if args.checkpoint:
        if not Path(args.checkpoint, "state.pt").is_file():
            p.error(f"--checkpoint {args.checkpoint}: no state.pt (a checkpoints/step-N folder of the run)")
        state = torch.load(Path(args.checkpoint, "state.pt"), weights_only=True, map_location="cpu")
        model.load_trainable_state(state["task"]["weights"])
    ex = eval_examples(data.sequences, args.split)
    if args.users and args.users < len(ex):
        keep = np.sort(np.random.default_rng(args.seed).choice(len(ex), args.users, replace=False))
        ex = EvalExamples([ex.histories[i] for i in keep], ex.targets[keep], ex.users[keep])
    names = ["E_x"] + [f"{j} (W_{j} E_{j} + b_{j})" for j in model.inputs.modalities]
    out = {"run": args.run, "checkpoint": args.checkpoint, "split": args.split, "users": len(ex), "sources": {}}
    scorer = SourceScorer(model)
    for k, name in ([] if args.weights_only else [(None, "fused")] + list(enumerate(names))):
        m = evaluate(scorer.use(k), ex, batch_size=256, max_len=max_len, progress=False)
        out["sources"][name] = {key: round(v, 4) for key, v in m.items() if "@10" in key or "@20" in key}
        print(name, out["sources"][name], flush=True)
    with torch.no_grad():
        w = model.fusion.weights()[1:].numpy()
    freq = data.item_frequency()[1:]
    edges = np.quantile(freq, [0.2, 0.4, 0.6, 0.8])
    bucket = np.searchsorted(edges, freq, side="right")
    out["weights_by_frequency_quintile"] = [
        {"frequency": [int(freq[bucket == b].min()), int(freq[bucket == b].max())], "items": int((bucket == b).sum()),
         **{n: round(float(w[bucket == b, k].mean()), 4) for k, n in enumerate(names)}}
        for b in range(5) if (bucket == b).any()]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
