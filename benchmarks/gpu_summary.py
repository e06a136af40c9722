"""One JSON summary of a GPU script's results (benchmarks/gpu_finetune.sh, gpu_baselines.sh).

    python benchmarks/gpu_summary.py OUT RUNS NAME RUN [RUN ...]

Reads OUT/env.json, OUT/backbone.json and OUT/speed_*.json where present and each RUNS/RUN/metrics.json;
writes OUT/NAME.json and prints it. A run folder without metrics.json is reported as unfinished.
"""

import json
import sys
from pathlib import Path

RUN_KEYS = ("model", "test", "valid", "best_step", "steps", "best_epoch", "epochs_run", "stopped_early",
            "train_seconds", "beams", "tuple_length")


def main() -> None:
    out, runs, name, *names = sys.argv[1:]
    out, runs = Path(out), Path(runs)
    res = {"env": json.loads((out / "env.json").read_text())}
    if (out / "backbone.json").exists():
        res.update(json.loads((out / "backbone.json").read_text()))
    speed = {}
    for f in sorted(out.glob("speed_*.json")):
        d = json.loads(f.read_text())
        speed[f.stem[6:]] = {"s_per_step": d["train"]["s_per_step"], "sequences_per_s": d["train"]["sequences_per_s"],
                             "train_share_of_peak": d["train"]["share_of_peak"],
                             "eval_users_per_s": d["eval"]["users_per_s"], "eval_share_of_peak": d["eval"]["share_of_peak"],
                             "peak_flops": d["peak_flops"], "peak_memory_gb": d.get("peak_memory_gb")}
    if speed:
        res["speed"] = speed
    res["runs"] = {}
    for run in names:
        m = runs / run / "metrics.json"
        if m.exists():
            d = json.loads(m.read_text())
            res["runs"][run] = {k: d[k] for k in RUN_KEYS if k in d}
        elif (runs / run).exists():
            res["runs"][run] = "unfinished (rerun the script to resume)"
    text = json.dumps(res, indent=2) + "\n"
    (out / f"{name}.json").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
