"""Print the results of benchmarks/quantize_sweep.py (results.jsonl) as a markdown table."""

import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print("| config | overrides | tau z_hat | tau s_hat | tau z | unique SIDs | largest group | best epoch / run | s/epoch | s to best | total s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    for m, t in (r.get("forgetting") or {}).items():
        s = r["sids"][m]
        ov = "; ".join(o for o in r["overrides"] if o != "threads=1")
        print(f"| {r['name']} ({m}) | `{ov}` | {t['z_hat']:.4f} | {t['s_hat']:.4f} | {t['z']:.4f} | "
              f"{100 * s['unique_fraction']:.2f}% | {s['largest_collision_group']} | {r['best_epoch']} / {r['epochs_run']} | "
              f"{r['seconds_per_epoch']} | {r['seconds_to_best']} | {r['total_seconds']} |")
