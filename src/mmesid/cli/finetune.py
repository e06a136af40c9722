"""`mmesid finetune`: Stage 2, LoRA fine-tuning of the LLM recommender (MME-SID and its variants)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MmesidError
from ._common import (
    add_config_args,
    add_run_args,
    add_runtime_args,
    print_valid_test,
    resolve_run,
)


def register(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune the LLM recommender (MME-SID, ablations, LLM baselines)")
    p.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    p.add_argument("--emb", action="append", default=[], metavar="MODALITY=FILE",
                   help="item embeddings E_c / E_t / E_v (FILE[:KEY], .safetensors or .npy); repeatable. "
                        "Resuming without --emb uses the run's own")
    p.add_argument("--sids", type=Path, help="quantiser export folder (semantic_ids/codebooks.safetensors)")
    p.add_argument("--no-test", action="store_true",
                   help="do not score the test split at the end (screening options on validation; "
                        "metrics.json then holds the validation metrics only)")
    add_run_args(p, "finetune", "fine-tuning")
    add_config_args(p)
    add_runtime_args(p)
    p.set_defaults(func=cmd_finetune)


def _inputs(args, run, resuming: bool) -> tuple[dict[str, str], str | None]:
    """--emb / --sids, or the run's own when resuming without them; other files than the run's are
    refused on resume unless --allow-config-change."""
    from ..artifacts.embeddings import parse_emb_args

    embs = parse_emb_args(args.emb)
    sids = str(args.sids.resolve()) if args.sids else None
    if sids and not Path(sids).is_dir():
        raise MmesidError(f"--sids {args.sids}: not a folder")
    if resuming:
        old = run.info()
        if not embs and not sids:
            embs, sids = dict(old.get("emb") or {}), old.get("sids")
        elif (embs, sids) != (old.get("emb"), old.get("sids")) and not args.allow_config_change:
            raise MmesidError(f"{run.path}: resuming a run trained on other inputs (run.json: emb {old.get('emb')}, "
                              f"sids {old.get('sids')}); resume without --emb/--sids, use a new --out folder, "
                              "or pass --allow-config-change")
    if not embs:
        raise MmesidError("finetune needs at least --emb c=FILE (the collaborative embeddings E_c)")
    return embs, sids


def cmd_finetune(args) -> int:
    from ..artifacts.runs import RunDir
    from ..data.dataset import SequenceData
    from ..rec.build import read_inputs
    from ..rec.config import FinetuneConfig
    from ..rec.distributed import setup_runtime
    from ..rec.runs import KIND
    from ..rec.train import input_paths, train_finetune

    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if args.out is None and several:
        raise MmesidError("--out is required when several processes run (they must share one run folder)")
    out, probe, cfg = resolve_run(args, KIND, FinetuneConfig, "finetune")
    resuming = not args.overwrite and probe.has_checkpoint() and probe.info().get("kind") == KIND
    embs, sids = _inputs(args, probe, resuming)
    data = SequenceData.load(args.data)
    read_inputs(cfg, data, embs, sids)  # refuse inputs of another dataset before the run folder is touched
    rt = setup_runtime(cfg)
    run = RunDir(out, KIND, rt.dist)
    with run.claim([args.data, *input_paths(embs, sids)], overwrite=args.overwrite):
        run.add_info({"command": args.command_line, "data": str(Path(args.data).resolve())})
        m = train_finetune(data, cfg, run, embs, sids, progress=not args.quiet, runtime=rt,
                           evaluate_test=not args.no_test)
    if not rt.is_main:  # data-parallel: one report is enough
        return 0
    print_valid_test(m)
    print(f"metrics in {out / 'metrics.json'}; embeddings in {out}/item_input_embeddings.safetensors, "
          "target_embeddings.safetensors")
    return 0
