"""Training TIGER-MM on the shared training loop: per-prefix examples, validation by constrained beam
search through the shared evaluator, best weights tested on every user.

TIGER's encoder is bidirectional, so unlike SASRec one pass cannot train every prefix: each training
prefix (s[:t] -> s[t], the authors' training set) is its own example, as in the TIGER paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..artifacts.runs import RunDir
from ..artifacts.sid_export import load_sid_export
from ..config import bounded
from ..data.dataset import SequenceData
from ..data.split import eval_examples, pad_left, sample_examples, train_examples
from ..errors import ConfigError, MmesidError
from ..eval.ranking import DEFAULT_KS
from .epoch_training import (
    EpochTask,
    epoch_summary,
    fit_epochs,
    load_best_model,
    setup_runtime,
)
from .tiger import SIDTuples, TigerMM, TigerModelConfig

KIND = "tiger"
METRICS = tuple(f"{m}@{k}" for m in ("HR", "nDCG") for k in DEFAULT_KS)


@dataclass
class TigerTrainConfig:
    model: TigerModelConfig = field(default_factory=TigerModelConfig)
    modalities: list[str] = field(default_factory=list)  # tuple order; empty = every modality of the export
    beams: int = bounded(20, ge=1)  # beam width at validation and test (>= 20 so that @20 is defined)
    lr: float = bounded(1e-3, gt=0.0)
    weight_decay: float = bounded(0.0, ge=0.0)
    batch_size: int = bounded(256, ge=1)
    epochs: int = bounded(50, ge=1)
    patience: int = bounded(5, ge=0)  # validations without improvement before stopping
    valid_users: int = bounded(2000, ge=0)  # validation on a fixed sample (0 = all); beam search is costly
    metric: str = "nDCG@10"
    eval_batch_size: int = bounded(64, ge=1)
    # batches of histories of similar length (models/epoch_training.EpochTask): the encoder reads
    # 9 tokens per item and pads to the batch's longest history, so random batches cost ~3x more
    length_bucketing: bool = True
    seed: int = bounded(42, ge=0)
    device: str = "auto"
    threads: int = bounded(0, ge=0)

    def validate(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"metric: {self.metric!r} is not one of {', '.join(METRICS)}")


def build(data: SequenceData, sids_dir: str | Path, cfg: TigerTrainConfig) -> TigerMM:
    export = load_sid_export(sids_dir)
    if export.fingerprint and export.fingerprint != data.fingerprint:
        raise MmesidError(f"{sids_dir}: made from another dataset (fingerprint {export.fingerprint}, the data "
                          f"has {data.fingerprint})")
    n_rows = next(iter(export.sids.values())).shape[0]
    if n_rows != data.n_items + 1:
        raise MmesidError(f"{sids_dir}: {n_rows - 1} items, the dataset has {data.n_items}")
    tuples = SIDTuples(export.sids, cfg.modalities or export.modalities)
    return TigerMM(tuples, cfg.model, data.n_items, cfg.beams)


class TigerTask(EpochTask):
    """TIGER-MM's part of the training loop: AdamW on batches of (history, next item) prefixes."""

    def __init__(self, model: TigerMM, data: SequenceData, cfg: TigerTrainConfig, device: torch.device):
        ex = train_examples(data.sequences, cfg.model.max_len)
        if not ex:
            raise MmesidError("no training examples: every user's training part has fewer than 2 items")
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        rows = (pad_left([h for h, _ in ex], cfg.model.max_len), torch.tensor([t for _, t in ex]))
        valid = sample_examples(eval_examples(data.sequences, "valid"), cfg.valid_users, cfg.seed)
        lengths = [min(len(h), cfg.model.max_len) for h, _ in ex] if cfg.length_bucketing else None
        super().__init__(model, opt, rows, valid, cfg, device, lengths)


def train_tiger(data: SequenceData, sids_dir: str | Path, cfg: TigerTrainConfig, run: RunDir,
                progress: bool = True, stop_after_steps: int | None = None) -> dict:
    """Train (resuming from the run's checkpoint), test the best weights; `run` is claimed by the caller."""
    device = setup_runtime(cfg)
    model = build(data, sids_dir, cfg).to(device)
    task = TigerTask(model, data, cfg, device)
    st, finished = fit_epochs(task, cfg, run, data, "tiger-mm", {"sids": str(Path(sids_dir).resolve())},
                              progress, stop_after_steps)
    if not finished:
        return {"interrupted_at_step": st.step}
    t = model.tuples
    metrics = {"model": "TIGER-MM", "modalities": cfg.modalities or None, "tuple_length": t.length,
               "vocab_size": t.vocab_size, "items_with_disambiguation_code": t.collisions, "beams": cfg.beams,
               "valid": {**task.evaluate(task.valid, progress), "users": len(task.valid)},
               "test": task.test(data, run, progress),
               **epoch_summary(st, task.steps_per_epoch, model)}
    run.write_metrics(metrics)
    return metrics


def load_scorer(run_dir: str | Path, data: SequenceData, device="cpu"):
    """A trained TIGER-MM run as a scorer for `evaluate` / `recommend`."""

    def make(run: RunDir, cfg: TigerTrainConfig) -> TigerMM:
        sids = run.info().get("sids")
        if not sids or not Path(sids).is_dir():
            raise MmesidError(f"{run.path / 'run.json'}: the SID export {sids!r} this run was trained on is missing")
        return build(data, sids, cfg)

    model, cfg = load_best_model(run_dir, KIND, data, TigerTrainConfig, make)
    return model.to(device).eval(), cfg.model.max_len
