"""Learning curves of fine-tuning runs as one PNG: validation nDCG@10 and training loss per validation.

    python benchmarks/learning_curves.py --out curves.png RUN [RUN ...]

Reads each run's metrics.json (`history`: one entry per validation, with the step, the mean training
loss since the previous one and the validation metrics); a SASRec run's validation is drawn as a
horizontal reference line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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
    for run in args.runs:
        m = json.loads((run / "metrics.json").read_text())
        name = f"{m.get('model', run.name)} ({run.name})"
        if m.get("model") == "SASRec":
            a1.axhline(m["valid"][args.metric], ls="--", color="grey", label=f"SASRec, all users ({run.name})")
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
