"""Print a markdown table of finetune runs: python benchmarks/finetune_table.py RUN_DIR [RUN_DIR ...]

Runs trained with `--no-test` (screens on validation) show "-" in the test columns."""

import argparse
import json
from pathlib import Path

KS = ["HR@5", "HR@10", "HR@20", "nDCG@5", "nDCG@10", "nDCG@20"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="finetune run folders")
    args = ap.parse_args()
    print("| run | variant | backbone | fusion | steps | " + " | ".join(f"test {k}" for k in KS)
          + " | valid nDCG@10 (users) | train s | test eval s | total s | peak RSS MB | trainable share |")
    print("|" + "---|" * (len(KS) + 11))
    for d in args.runs:
        f = d / "metrics.json"
        if not f.exists():
            print(f"| {d.name} | (no metrics.json) |")
            continue
        m = json.loads(f.read_text())
        t, v = m.get("test", {}), m.get("valid", {})
        b = Path(m["backbone"])
        row = [d.name, m["model"], b.parent.name if b.name == "model" else b.name, str(m["fusion"]), str(m["steps"])]
        row += [f"{t[k]:.4f}" if k in t else "-" for k in KS]
        row += [f"{v['nDCG@10']:.4f} ({v['users']})" if v else "-", f"{m['train_wall_seconds']:.0f}",
                f"{t['eval_seconds']:.0f}" if "eval_seconds" in t else "-",
                f"{m['total_wall_seconds']:.0f}", f"{m['peak_rss_mb']:.0f}",
                f"{100 * m['parameters']['trainable_share']:.1f}%"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
