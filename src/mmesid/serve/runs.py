"""Which library function rebuilds the scorer of each kind of trained run (run.json "kind").

Shared by `mmesid evaluate` and `Recommender.load`; the stage packages are imported only when a run of
their kind is loaded, so the command line's help stays free of torch.
"""

from __future__ import annotations

from pathlib import Path

from ..artifacts.outputs import describe, folder_kind
from ..artifacts.runs import open_run
from ..data.dataset import SequenceData
from ..errors import MmesidError


def _sasrec(run_dir: Path, data: SequenceData, device):
    from ..models.sasrec_train import load_scorer

    return load_scorer(run_dir, data, device)


def _finetune(run_dir: Path, data: SequenceData, device, int8: bool = False):
    from ..rec.runs import load_scorer

    return load_scorer(run_dir, data, device, int8=int8)


def _tiger(run_dir: Path, data: SequenceData, device):
    from ..models.tiger_train import load_scorer

    return load_scorer(run_dir, data, device)


SCORERS = {"sasrec": _sasrec, "finetune": _finetune, "tiger": _tiger}


def run_kind(run_dir: str | Path) -> str:
    """The kind of a trained-model run folder; anything else is an error naming what the folder holds."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MmesidError(f"{run_dir}: run folder not found")
    kind = folder_kind(run_dir)
    if kind not in SCORERS:
        raise MmesidError(f"{run_dir}: not a trained model run (it holds {describe(kind)}; expected the --out "
                          f"folder of {' or '.join(f'mmesid {k}' for k in ('sasrec train', 'finetune', 'tiger train'))})")
    return kind


def load_run_scorer(run_dir: str | Path, data: SequenceData, device, int8: bool = False) -> tuple[object, int, str]:
    """(scorer with `scores(histories) -> [B, n_items + 1]`, its history window, kind), after checking
    that the run was trained on `data`. `int8`: a fine-tuned LLM's backbone quantised for CPU inference."""
    kind = run_kind(run_dir)
    if int8 and kind != "finetune":
        raise MmesidError(f"{run_dir}: int8 inference applies to fine-tuned LLM runs (mmesid finetune); "
                          f"this is a {kind} run")
    run = open_run(run_dir, kind, data_fingerprint=data.fingerprint)
    scorer, max_len = _finetune(run.path, data, device, int8=True) if int8 else SCORERS[kind](run.path, data, device)
    return scorer, max_len, kind
