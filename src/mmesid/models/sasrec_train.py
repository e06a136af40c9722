"""Training SASRec: training split only, early stopping on validation, test at the end, E_c export.

Training uses every position of each training sequence in one pass (the original SASRec scheme):
for a causal model this gives the prediction of every prefix (s[:t] -> s[t]) at once, which is the
authors' per-prefix training set, without building the prefixes. Sequences longer than max_len + 1
are cut into windows so that no training target is lost. The loop itself (validation, early stop,
best weights, checkpoints, resume) is the shared `training.TrainingLoop` through
`epoch_training` (shared with TIGER-MM); this module only supplies SASRec's model and training rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..artifacts.embeddings import write_item_embedding
from ..artifacts.runs import RunDir
from ..config import bounded
from ..data.dataset import SequenceData
from ..data.split import eval_examples, train_sequences
from ..errors import ConfigError, MmesidError
from ..eval.ranking import DEFAULT_KS
from .epoch_training import (
    EpochTask,
    epoch_summary,
    fit_epochs,
    load_best_model,
    setup_runtime,
)
from .sasrec import SASRec, SASRecConfig

KIND = "sasrec"
METRICS = tuple(f"{m}@{k}" for m in ("HR", "nDCG") for k in DEFAULT_KS)


@dataclass
class SASRecTrainConfig:
    model: SASRecConfig = field(default_factory=SASRecConfig)
    lr: float = bounded(1e-3, gt=0.0)
    weight_decay: float = bounded(0.0, ge=0.0)
    batch_size: int = bounded(256, ge=1)
    epochs: int = bounded(200, ge=1)
    patience: int = bounded(10, ge=0)  # epochs without validation improvement before stopping (0 = never)
    metric: str = "nDCG@10"
    eval_batch_size: int = bounded(1024, ge=1)
    seed: int = bounded(42, ge=0)
    device: str = "auto"
    threads: int = bounded(0, ge=0)  # torch intra-op threads (0 = torch's default)
    # item representation: "id" (SASRec) or "motor" (MOTOR: ID-free, from semantic-ID tokens, models/motor.py)
    item_repr: Literal["id", "motor"] = "id"
    sids: str = ""  # MOTOR: the semantic-ID export (mmesid quantize train)
    motor_modalities: list[str] = field(default_factory=lambda: ["t", "v"])  # those in the export are used
    cross_layers: int = bounded(2, ge=0)  # MOTOR's token cross layers

    def validate(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"metric: {self.metric!r} is not one of {', '.join(METRICS)}")
        if self.item_repr == "motor" and not self.sids:
            raise ConfigError("item_repr = \"motor\" needs sids = \"<semantic-ID export folder>\"")


def make_model(data: SequenceData, cfg: SASRecTrainConfig) -> SASRec:
    """SASRec over item ids, or MOTOR over the items' semantic-ID tokens (the same model otherwise)."""
    if cfg.item_repr == "id":
        return SASRec(data.n_items, cfg.model)
    from ..artifacts.sid_export import load_sid_export
    from .motor import MOTOR, item_tokens

    export = load_sid_export(cfg.sids)
    if export.fingerprint and export.fingerprint != data.fingerprint:
        raise MmesidError(f"sids = {cfg.sids!r}: made from another dataset (fingerprint {export.fingerprint}, "
                          f"the data has {data.fingerprint})")
    mods = [m for m in cfg.motor_modalities if m in export.sids]
    if not mods:
        raise MmesidError(f"sids = {cfg.sids!r}: none of the modalities {cfg.motor_modalities} (it has "
                          f"{', '.join(export.sids)})")
    return MOTOR(data.n_items, cfg.model, item_tokens(export.sids, mods), cfg.cross_layers)


def training_windows(sequences: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) [W, max_len], left-padded; one row per window of a training sequence."""
    ins, outs = [], []
    for s in train_sequences(sequences):
        end = len(s)
        while end > 1:
            start = max(0, end - 1 - max_len)
            inp, tgt = s[start:end - 1], s[start + 1:end]
            a = np.zeros(max_len, dtype=np.int64)
            b = np.zeros(max_len, dtype=np.int64)
            a[max_len - len(inp):] = inp
            b[max_len - len(tgt):] = tgt
            ins.append(a)
            outs.append(b)
            end -= max_len
    if not ins:
        raise MmesidError("no training targets: every user's training part (all but the last two items) "
                          "has fewer than 2 items; SASRec needs users with at least 4 interactions")
    return np.stack(ins), np.stack(outs)


class SASRecTask(EpochTask):
    """SASRec's part of the training loop: Adam on batches of training windows (every position a target)."""

    def __init__(self, model: SASRec, data: SequenceData, cfg: SASRecTrainConfig, device: torch.device):
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        super().__init__(model, opt, training_windows(data.sequences, cfg.model.max_len),
                         eval_examples(data.sequences, "valid"), cfg, device)


def train_sasrec(data: SequenceData, cfg: SASRecTrainConfig, run: RunDir | str | Path, progress: bool = True,
                 stop_after_steps: int | None = None) -> dict:
    """Train (resuming from the run's checkpoint), test the best epoch's weights, export E_c."""
    own = not isinstance(run, RunDir)
    if own:
        run = RunDir(run, KIND).claim()
    try:
        return _train(data, cfg, run, progress, stop_after_steps)
    finally:
        if own:
            run.release()


def _train(data, cfg, run: RunDir, progress, stop_after_steps) -> dict:
    device = setup_runtime(cfg)
    model = make_model(data, cfg).to(device)
    task = SASRecTask(model, data, cfg, device)
    st, finished = fit_epochs(task, cfg, run, data, "sasrec", progress=progress, stop_after_steps=stop_after_steps)
    if not finished:
        return {"interrupted_at_step": st.step}
    valid_m = task.evaluate(task.valid, progress)
    test_m = task.test(data, run, progress)
    with torch.no_grad():
        table = model.item_table().detach()
    write_item_embedding(run.path / "item_embeddings.safetensors", table, modality="collaborative",
                         encoder="sasrec" if cfg.item_repr == "id" else "motor", data_fingerprint=data.fingerprint)
    metrics = {"model": "SASRec" if cfg.item_repr == "id" else "MOTOR", "valid": valid_m, "test": test_m,
               **epoch_summary(st, task.steps_per_epoch, model)}
    run.write_metrics(metrics)
    return metrics


def load_scorer(run_dir: str | Path, data: SequenceData, device="cpu"):
    """A trained SASRec (or MOTOR) run as a scorer for `evaluate` (checks it was trained on this dataset)."""
    model, cfg = load_best_model(run_dir, KIND, data, SASRecTrainConfig, lambda run, cfg: make_model(data, cfg))
    return model.to(device).eval(), cfg.model.max_len
