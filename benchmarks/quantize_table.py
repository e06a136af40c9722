"""Print the results of benchmarks/quantize_sweep.py as a markdown table:
python benchmarks/quantize_table.py OUT/results.jsonl"""

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("results", type=Path, help="results.jsonl written by quantize_sweep.py")
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    print("| config | overrides | tau z_hat | tau s_hat | tau z | unique SIDs | largest group | best epoch / run | "
          "s/epoch | s to best | total s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for m, t in (r.get("forgetting") or {}).items():
            s = r["sids"][m]
            ov = "; ".join(o for o in r["overrides"] if o != "threads=1")
            print(f"| {r['name']} ({m}) | `{ov}` | {t['z_hat']:.4f} | {t['s_hat']:.4f} | {t['z']:.4f} | "
                  f"{100 * s['unique_fraction']:.2f}% | {s['largest_collision_group']} | "
                  f"{r['best_epoch']} / {r['epochs_run']} | {r['seconds_per_epoch']} | {r['seconds_to_best']} | "
                  f"{r['total_seconds']} |")


if __name__ == "__main__":
    main()
