"""`mmesid evaluate`: full-ranking metrics of a trained run (or the popularity or random floor) on a split."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MmesidError
from ._common import add_int8_arg, add_runtime_args, print_metrics


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="full-ranking HR/nDCG@{5,10,20} of a trained run")
    p.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=Path, help="run folder of a trained model (sasrec or finetune)")
    which.add_argument("--popularity", action="store_true",
                       help="evaluate the most-popular baseline instead (never written into a run)")
    which.add_argument("--random", action="store_true",
                       help="evaluate random scores instead (the chance floor, seed 0; never written into a run)")
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument("--target-items", type=Path, metavar="PATH",
                   help="only users whose target is one of these items: a text file of item ids (one per line) "
                        "or a cold-split dataset folder (its cold items, `mmesid data cold-split`)")
    p.add_argument("--out", type=Path, metavar="FILE.json",
                   help="where to write the results (default with --run: RUN/eval_<split>.json; "
                        "with --popularity or --random: printed only)")
    p.add_argument("--ranks-out", type=Path, metavar="FILE.npy",
                   help="also save every user's 0-based target rank (int64, in the dataset's user order), "
                        "for paired significance tests between runs (benchmarks/paired_test.py)")
    add_runtime_args(p, device=True, threads=True, batch_size=1024)
    add_int8_arg(p)
    p.set_defaults(func=cmd_evaluate)


def _output_file(args) -> Path | None:
    """The results file, checked before any work: a .json file, outside the inputs, writable; inside
    the run folder only `eval_*.json` (so nothing can replace the run's own files)."""
    from ..artifacts.outputs import check_output_file

    out = args.out
    if out is None:
        if args.run is None:
            return None
        out = args.run / f"eval_{args.split}.json"
    check_output_file(out, inputs=[args.data], suffixes=(".json",))
    if args.run is not None:
        run_r, out_r = args.run.resolve(), out.resolve()
        if run_r in out_r.parents and (out_r.parent != run_r or not out_r.name.startswith("eval_")):
            raise MmesidError(f"--out {out}: inside the run folder only eval_<name>.json may be written")
    _check_writable(out)
    _check_replaceable(out, "--out")
    return out


def _check_replaceable(out: Path, what: str) -> None:
    """An existing file is replaced only if it is an earlier result of this command (a results JSON with
    its keys, or a ranks array [users, 2] of int64); anything else of the user's is left alone."""
    if not out.is_file():
        return
    try:
        if out.suffix.lower() == ".json":
            import json

            ours = {"model", "split", "data_fingerprint"} <= set(json.loads(out.read_text()))
        else:
            import numpy as np

            a = np.load(out, allow_pickle=False)
            ours = a.dtype == np.int64 and a.ndim == 2 and a.shape[1] == 2
    except (OSError, ValueError, TypeError, UnicodeDecodeError):
        ours = False
    if not ours:
        raise MmesidError(f"{what} {out}: the file exists and is not an earlier `mmesid evaluate` result; "
                          "choose another name or remove it")


def _check_writable(out: Path) -> None:
    """Fail before the evaluation, not after it, when the results could not be saved."""
    folder = out.resolve().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise MmesidError(f"--out {out}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise MmesidError(f"--out {out}: no permission to write in {folder}")


def _scorer(args, data, device):
    """(scorer, max_len, name) of the run, after checking its kind and its dataset."""
    if args.int8 and args.run is None:
        raise MmesidError("--int8 applies to a fine-tuned LLM run (--run), not to --popularity or --random")
    if args.popularity or args.random:  # the floors: no run, the default history window
        from ..data.split import MAX_HISTORY

        if args.popularity:
            from ..models.popularity import Popularity

            return Popularity(data.item_frequency()), MAX_HISTORY, "popularity"
        from ..models.random_scores import RandomScores

        return RandomScores(data.n_items, seed=0), MAX_HISTORY, "random"
    from ..serve.runs import load_run_scorer

    return load_run_scorer(args.run, data, device, int8=args.int8)


def _only_targets(examples, data, path: Path):
    """The users whose target is in the item list at `path` (see --target-items)."""
    import numpy as np

    from ..data.cold import cold_item_ids
    from ..data.dataset import SequenceData
    from ..data.split import EvalExamples
    from ..data.textio import iter_lines

    if path.is_dir():
        ids = cold_item_ids(SequenceData.load(path))
        if not ids:
            raise MmesidError(f"--target-items {path}: the dataset records no cold items (not a cold split)")
    else:
        ids = [line.strip() for _, line in iter_lines(path) if line.strip()]
    index = {it.raw_id: i + 1 for i, it in enumerate(data.items)}
    unknown = [i for i in ids if i not in index]
    if unknown:
        raise MmesidError(f"--target-items {path}: {len(unknown)} item id(s) not in the dataset, e.g. {unknown[0]!r}")
    keep = np.flatnonzero(np.isin(examples.targets, [index[i] for i in ids]))
    if len(keep) == 0:
        raise MmesidError(f"--target-items {path}: no user's target is one of these {len(ids)} items")
    return EvalExamples([examples.histories[i] for i in keep], examples.targets[keep], examples.users[keep])


def cmd_evaluate(args) -> int:
    from ..data.dataset import SequenceData
    from ..data.split import eval_examples
    from ..eval.ranking import evaluate
    from ..io import write_json
    from ..utils import resolve_device, set_cpu_threads

    out = _output_file(args)
    data = SequenceData.load(args.data)
    device = resolve_device(args.device or "auto")
    set_cpu_threads(args.threads or 0)
    scorer, max_len, name = _scorer(args, data, device)
    examples = eval_examples(data.sequences, args.split)
    if args.target_items is not None:
        examples = _only_targets(examples, data, args.target_items)
    if args.ranks_out is not None:
        from ..artifacts.outputs import check_output_file

        check_output_file(args.ranks_out, inputs=[args.data, args.run], what="--ranks-out", suffixes=(".npy",))
        _check_replaceable(args.ranks_out, "--ranks-out")
    m = evaluate(scorer, examples, batch_size=args.batch_size, max_len=max_len, device=device,
                 progress=not args.quiet, return_ranks=args.ranks_out is not None)
    if args.ranks_out is not None:
        from ..eval.ranking import user_ranks
        from ..io import save_npy

        save_npy(args.ranks_out, user_ranks(examples, m.pop("ranks")))
    result = {**m, "model": name, "split": args.split, "data": str(args.data),
              "target_items": str(args.target_items) if args.target_items else None,
              "data_fingerprint": data.fingerprint, "run": str(args.run) if args.run else None,
              "int8": bool(args.int8)}
    if out is not None:
        try:
            write_json(out, result)
        except OSError as e:
            raise MmesidError(f"{out}: cannot write the results ({e.strerror or e}); nothing was saved") from None
    print_metrics(f"{name} {args.split} ({m['users']} users, {m['eval_seconds']:.1f}s)", m)
    if out is not None:
        print(f"results: {out}")
    return 0
