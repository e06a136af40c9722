"""Learning curves of fine-tuning runs as one PNG: validation nDCG@10 and training loss per validation.

    python benchmarks/learning_curves.py --out curves.png RUN [RUN ...]

Reads each run's metrics.json (`history`: one entry per validation, with the step, the mean training
loss since the previous one and the validation metrics). A SASRec run is drawn as a horizontal
reference line: its best weights evaluated on the same validation users as the first fine-tuning run
(its `valid_users` sample and seed), so that the line and the curves are comparable.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def sasrec_on_sample(sasrec: Path, ref: Path, metric: str) -> tuple[float, int]:
    """SASRec's validation metric on the users the fine-tuning run `ref` validated on."""
    from mmesid.config import load_config
    from mmesid.data.dataset import SequenceData
    from mmesid.data.split import eval_examples, sample_examples
    from mmesid.eval.ranking import evaluate
    from mmesid.models.sasrec_train import load_scorer
    from mmesid.rec.config import FinetuneConfig

    cfg = load_config(FinetuneConfig, ref / "config.toml")
    data = SequenceData.load(json.loads((ref / "run.json").read_text())["data"])
    ex = sample_examples(eval_examples(data.sequences, "valid"), cfg.valid_users, cfg.seed)
    model, max_len = load_scorer(sasrec, data)
    return evaluate(model, ex, max_len=max_len, progress=False)[metric], len(ex)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metric", default="nDCG@10")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    metrics = {run: json.loads((run / "metrics.json").read_text()) for run in args.runs}
    ref = next((r for r, m in metrics.items() if m.get("model") != "SASRec"), None)
    for run, m in metrics.items():
        name = f"{m.get('model', run.name)} ({run.name})"
        if m.get("model") == "SASRec":
            if ref is None:
                a1.axhline(m["valid"][args.metric], ls="--", color="grey", label=f"SASRec, all users ({run.name})")
            else:
                v, n = sasrec_on_sample(run, ref, args.metric)
                print(f"{run}: {args.metric} {v:.4f} on the {n} validation users of {ref.name}")
                a1.axhline(v, ls="--", color="grey", label=f"SASRec, same {n} users ({run.name})")
            continue
        h = m["history"]
        spe = m["plan"]["steps_per_epoch"]
        x = [e["step"] / spe for e in h]
        a1.plot(x, [e[args.metric] for e in h], marker="o", label=name)
        a2.plot(x, [e["train_loss"] for e in h], marker="o", label=name)
    a1.set(xlabel="epoch", ylabel=f"validation {args.metric}", title="validation (sampled users)")
    a2.set(xlabel="epoch", ylabel="training loss", title="training loss")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(args.out)


if __name__ == "__main__":
    main()
