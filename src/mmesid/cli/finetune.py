"""`mmesid finetune`: Stage 2, LoRA fine-tuning of the LLM recommender (MME-SID and its variants)."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

from ..config import dump_toml, from_dict
from ..data.dataset import SequenceData
from ..errors import MmesidError
from ..io import read_json
from ._common import add_config_args, config_from_args, print_metrics, run_dir_from_args, write_run_config


def register(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune the LLM recommender (MME-SID, ablations, LLM baselines)")
    p.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    p.add_argument("--emb", action="append", default=[], metavar="MODALITY=FILE",
                   help="item embeddings E_c / E_t / E_v (safetensors key 'embedding', or .npy); repeatable")
    p.add_argument("--sids", type=Path, help="quantiser export folder (semantic_ids/codebooks.safetensors)")
    p.add_argument("--out", type=Path, help="run folder (default: runs/finetune-<time>); an existing one resumes")
    add_config_args(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_finetune)


def parse_embs(items: list[str]) -> dict[str, str]:
    out = {}
    for it in items:
        if "=" not in it:
            raise MmesidError(f"--emb {it!r}: expected MODALITY=FILE, e.g. c=E_c.safetensors")
        j, path = it.split("=", 1)
        if j not in ("c", "t", "v"):
            raise MmesidError(f"--emb {it!r}: modality must be c, t or v")
        if j in out:
            raise MmesidError(f"--emb: modality {j!r} given twice")
        if not Path(path).exists():
            raise MmesidError(f"--emb {j}={path}: file not found")
        out[j] = str(Path(path).resolve())
    return out


def cmd_finetune(args) -> int:
    from ..rec.config import FinetuneConfig
    from ..rec.trainer import CKPT, train_finetune

    run_dir = run_dir_from_args(args, "finetune")
    saved_cfg = run_dir / "config.toml"
    resuming = (run_dir / CKPT / "state.pt").exists()
    if resuming and args.config is None and not args.overrides:
        cfg = from_dict(FinetuneConfig, tomllib.loads(saved_cfg.read_text()))  # resume as configured
    else:
        cfg = config_from_args(FinetuneConfig, args)
        if resuming and saved_cfg.exists() and dump_toml(cfg) != saved_cfg.read_text():
            raise MmesidError(f"{run_dir}: holds a checkpoint trained with a different config; resume without "
                              "--config/--set, or choose a new --out folder")
    embs = parse_embs(args.emb)
    sids = str(args.sids.resolve()) if args.sids else None
    if resuming and (run_dir / "run.json").exists():
        old = read_json(run_dir / "run.json")
        embs = embs or old.get("emb", {})
        sids = sids or old.get("sids")
    if not embs:
        raise MmesidError("finetune needs at least --emb c=FILE (the collaborative embeddings E_c)")
    if sids and not Path(sids).is_dir():
        raise MmesidError(f"--sids {sids}: not a folder")
    data = SequenceData.load(args.data)
    from ..rec.backbone import default_backbone_path

    write_run_config(run_dir, cfg, {"command": "finetune " + " ".join(sys.argv[2:]), "kind": "finetune",
                                    "data": str(Path(args.data).resolve()), "emb": embs, "sids": sids,
                                    "variant": cfg.variant,
                                    "backbone": cfg.backbone.path or f"all-MiniLM-L6-v2 ({default_backbone_path()})"})
    m = train_finetune(data, cfg, run_dir, embs, sids, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:  # data-parallel: one report is enough
        return 0
    if "test" in m:
        print_metrics("valid", m["valid"])
        print_metrics("test ", m["test"])
    print(f"metrics in {run_dir / 'metrics.json'}; embeddings in {run_dir}/item_input_embeddings.safetensors, "
          f"target_embeddings.safetensors")
    return 0
