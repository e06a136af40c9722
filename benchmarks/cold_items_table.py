"""The cold-item table of `benchmarks/cold_items_beauty.sh` (issue 9), from its eval-*.json files.

    python benchmarks/cold_items_table.py OUT        (OUT: the script's output folder)

Rows: MME-SID with the cold items added (the init chosen on validation), the same run before adding them,
SASRec trained without them, popularity, random, and the upper bound (MME-SID trained on the full data);
columns: the test users whose target is a cold item, then all test users, where measured.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROWS = [  # (label, cold-target file, all-users file)
    ("MME-SID, cold items added ({init})", "add-{init}-cold-test", "add-{init}-all-test"),
    ("MME-SID, before adding them", "before-add-cold-test", "before-add-all-test"),
    ("SASRec trained without them", "sasrec-cold-test", "sasrec-all-test"),
    ("popularity", "popularity-cold-test", "popularity-all-test"),
    ("random", "random-cold-test", "random-all-test"),
    ("upper bound: MME-SID trained with them", "upper-bound-cold-test", "upper-bound-all-test"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    args = p.parse_args()
    inits = {}
    for f in sorted(args.out.glob("eval-add-*-cold-valid.json")):
        inits[f.name[len("eval-add-"):-len("-cold-valid.json")]] = json.loads(f.read_text())["nDCG@10"]
    if not inits:
        p.error(f"{args.out}: no eval-add-*-cold-valid.json (has cold_items_beauty.sh run?)")
    best = max(inits, key=inits.get)
    print("E_c / E_x initialisation of the added items, validation nDCG@10 on cold-target users: "
          + ", ".join(f"{k} {v:.4f}" for k, v in inits.items()) + f" -> {best}")
    print("\n| model | cold-target users | HR@10 | nDCG@10 | all test users | HR@10 | nDCG@10 |")
    print("|---|---|---|---|---|---|---|")

    def cells(name):
        f = args.out / f"eval-{name}.json" if name else None
        if f is None or not f.exists():
            return ["-", "-", "-"]
        m = json.loads(f.read_text())
        return [str(m["users"]), f"{m['HR@10']:.4f}", f"{m['nDCG@10']:.4f}"]

    for label, cold, full in ROWS:
        cold, full = cold.format(init=best), full.format(init=best) if full else None
        print("| " + " | ".join([label.format(init=best)] + cells(cold) + cells(full)) + " |")


if __name__ == "__main__":
    main()
