"""`mmesid demo`: the whole pipeline on synthetic data, offline, on a CPU.

Every stage is run through the same commands a user types, each writing its run folder under
`--out`:

  1. data       synthetic catalogue with planted structure + one PNG per item
  2. sasrec     SASRec -> E_c (and the SASRec baseline)
  3. encode     E_t from titles with the bundled all-MiniLM-L6-v2; E_v from the images as colour
                histograms (`mmesid.encoders.colour`: no pretrained image model ships offline;
                `mmesid encode image` takes a CLIP-family folder on a real run)
  4. quantize   MM-RQ-VAE over c, t, v -> semantic IDs + codebooks
  5. finetune   MME-SID and E4SRec on the MiniLM backbone (LoRA), same budget
  6. analyze    forgetting (Kendall tau, E_c vs quantised) and collapse (singular values)

The summary (`summary.json`) puts SASRec, E4SRec and MME-SID test metrics side by side.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import arg_number
from ..errors import MmesidError
from ..io import read_json, save_npy, write_json


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline offline on synthetic data")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo folder (default runs/demo)")
    p.add_argument("--users", type=arg_number(int, ge=1), default=400)
    p.add_argument("--items", type=arg_number(int, ge=8), default=160)
    p.add_argument("--seed", type=arg_number(int, ge=0), default=0)
    p.add_argument("--finetune-steps", type=arg_number(int, ge=1), default=150,
                   help="optimizer steps per fine-tuned model")
    p.add_argument("--quick", action="store_true", help="tiny budgets everywhere (a smoke test, not a result)")
    p.set_defaults(func=cmd_demo)


def _run(*argv) -> None:
    from . import main

    argv = [str(a) for a in argv]
    print("$ mmesid " + " ".join(argv), flush=True)
    rc = main(argv)
    if rc != 0:
        raise MmesidError(f"demo step failed (exit {rc}): mmesid {' '.join(argv)}")


def _test_metrics(path: Path) -> dict:
    m = read_json(path)
    test = m.get("test", m)
    return {k: round(v, 4) for k, v in test.items() if "@" in k}


def cmd_demo(args) -> int:
    from ..artifacts.outputs import check_output_location

    out: Path = args.out
    check_output_location(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    q = args.quick
    summary: dict = {"note": "synthetic data; numbers show the pipeline works, not paper results"}

    print("\n[1/6] synthetic data", flush=True)
    _run("data", "synthetic", "--out", out / "data", "--users", args.users, "--items", args.items,
         "--seed", args.seed, "--images", out / "images", "--overwrite")

    print("\n[2/6] SASRec: E_c and the SASRec baseline", flush=True)
    _run("sasrec", "train", "--data", out / "data", "--out", out / "sasrec", "--quiet",
         "--set", f"epochs={3 if q else 40}", "--set", "patience=5", "--set", "batch_size=64",
         "--set", "lr=3e-3", "--set", f"seed={args.seed}", "--set", "model.hidden=32",
         "--set", "model.dropout=0.2", "--set", "model.attn_dropout=0.2")
    e_c = out / "sasrec" / "item_embeddings.safetensors"

    print("\n[3/6] item encoders: E_t (MiniLM on titles), E_v (colour histograms of the images)", flush=True)
    _run("encode", "text", "--data", out / "data", "--out", out / "E_t.safetensors", "--quiet")
    from ..data.dataset import SequenceData
    from ..encoders.colour import colour_histograms

    data = SequenceData.load(out / "data")
    save_npy(out / "colour_hist.npy", colour_histograms(data, out / "images"))
    _run("encode", "precomputed", "--data", out / "data", "--input", out / "colour_hist.npy",
         "--modality", "visual", "--out", out / "E_v.safetensors")

    print("\n[4/6] MM-RQ-VAE: semantic IDs and codebooks for c, t, v", flush=True)
    _run("quantize", "train", "--emb", f"c={e_c}", "--emb", f"t={out / 'E_t.safetensors'}",
         "--emb", f"v={out / 'E_v.safetensors'}", "--out", out / "quantize", "--data", out / "data",
         "--quiet", "--set", f"epochs={5 if q else 60}", "--set", "batch_size=256",
         "--set", "model.codebook_sizes=[32, 32, 32]", "--set", f"seed={args.seed}")
    sids = out / "quantize" / "export"

    print("\n[5/6] LLM recommender (MiniLM backbone + LoRA): MME-SID vs E4SRec, same budget", flush=True)
    steps = 4 if q else args.finetune_steps
    runs = {}
    for variant in ("mme-sid", "e4srec"):
        run = out / f"finetune-{variant}"
        _run("finetune", "--data", out / "data", "--emb", f"c={e_c}", "--emb", f"t={out / 'E_t.safetensors'}",
             "--emb", f"v={out / 'E_v.safetensors'}", "--sids", sids, "--out", run, "--quiet",
             "--set", f'variant="{variant}"', "--set", f"max_steps={steps}", "--set", "epochs=1000",
             "--set", "warmup_steps=10", "--set", "lr=1e-3", "--set", f"eval_every={max(1, steps // 3)}",
             "--set", f"seed={args.seed}")
        runs[variant] = run

    print("\n[6/6] analyses: forgetting (Kendall tau) and embedding collapse", flush=True)
    _run("analyze", "forgetting", "--data", out / "data", "--original", e_c,
         "--derived", f"{sids / 'embeddings.safetensors'}:z_hat.c", "--out", out / "forgetting.json")
    collapse = []
    for name, run in runs.items():
        collapse += ["--emb", f"{name}-input={run / 'item_input_embeddings.safetensors'}"]
    collapse += ["--emb", f"E_x={runs['mme-sid'] / 'target_embeddings.safetensors'}"]
    _run("analyze", "collapse", *collapse, "--out", out / "collapse.png")

    summary["data"] = data.stats()
    summary["test"] = {"SASRec": _test_metrics(out / "sasrec" / "metrics.json")}
    for name, run in runs.items():
        summary["test"][name] = _test_metrics(run / "metrics.json")
    summary["forgetting"] = read_json(out / "forgetting.json")
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "summary.json", summary)
    print(json.dumps(summary["test"], indent=2))
    print(f"demo finished in {summary['seconds']}s; artefacts and summary.json in {out}")
    return 0
