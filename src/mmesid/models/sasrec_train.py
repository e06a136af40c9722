"""Training SASRec: training split only, early stopping on validation, test at the end, E_c export.

Training uses every position of each training sequence in one pass (the original SASRec scheme):
for a causal model this gives the prediction of every prefix (s[:t] -> s[t]) at once, which is the
authors' per-prefix training set, without building the prefixes. Sequences longer than max_len + 1
are cut into windows so that no training target is lost. The loop itself (validation, early stop,
best weights, checkpoints, resume) is the shared `training.TrainingLoop`; this module only supplies
SASRec's step and validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..artifacts.embeddings import write_item_embedding
from ..artifacts.runs import RunDir, open_run
from ..config import bounded
from ..data.dataset import SequenceData
from ..data.split import eval_examples, train_sequences
from ..errors import ConfigError, MmesidError
from ..eval.ranking import DEFAULT_KS, evaluate
from ..io import load_tensors
from ..training.loop import LoopSettings, TrainingLoop
from ..utils import (
    count_parameters,
    env_info,
    peak_rss_mb,
    resolve_device,
    seed_everything,
)
from .sasrec import SASRec, SASRecConfig

KIND = "sasrec"
BEST = "best.safetensors"
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


class SASRecTask:
    """SASRec's part of the training loop: one Adam step on a batch of windows, validation nDCG."""

    def __init__(self, model: SASRec, data: SequenceData, cfg: SASRecTrainConfig, device: torch.device):
        self.model, self.cfg, self.device = model, cfg, device
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.inputs, self.targets = training_windows(data.sequences, cfg.model.max_len)
        self.valid = eval_examples(data.sequences, "valid")
        self.steps_per_epoch = math.ceil(len(self.inputs) / cfg.batch_size)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.perm: torch.Tensor | None = None

    def train_step(self, step: int) -> float:
        k = step % self.steps_per_epoch
        if k == 0 or self.perm is None:  # a new epoch: a new order from the run's own generator
            self.perm = torch.randperm(len(self.inputs), generator=self.gen)
        idx = self.perm[k * self.cfg.batch_size:(k + 1) * self.cfg.batch_size].numpy()
        self.model.train()
        x = torch.as_tensor(self.inputs[idx], device=self.device)
        y = torch.as_tensor(self.targets[idx], device=self.device)
        loss = self.model.loss(x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()

    def validate(self, step: int) -> dict:
        return self.evaluate(self.valid)

    def evaluate(self, examples, progress: bool = False) -> dict:
        self.model.eval()
        return evaluate(self.model, examples, batch_size=self.cfg.eval_batch_size, max_len=self.cfg.model.max_len,
                        device=self.device, progress=progress)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "generator": self.gen.get_state(), "perm": self.perm}

    def load_state_dict(self, st: dict) -> None:
        try:
            self.model.load_state_dict(st["model"])
        except RuntimeError as e:  # e.g. model.hidden changed with --allow-config-change
            detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
            raise MmesidError(f"the checkpoint's weights do not fit this config ({detail[:300]}); resume with "
                              "the run's own config or start again with --overwrite") from None
        self.opt.load_state_dict(st["optimizer"])
        for g in self.opt.param_groups:  # a resume with --allow-config-change runs with the new values
            g["lr"], g["weight_decay"] = self.cfg.lr, self.cfg.weight_decay
        self.gen.set_state(st["generator"])
        self.perm = st["perm"]

    def best_weights(self) -> dict:
        return self.model.state_dict()

    def load_best_weights(self, w: dict) -> None:
        self.model.load_state_dict(w)


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
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model = make_model(data, cfg).to(device)
    task = SASRecTask(model, data, cfg, device)
    spe = task.steps_per_epoch
    loop = TrainingLoop(task, LoopSettings(total_steps=cfg.epochs * spe, eval_every=spe, metric=cfg.metric,
                                           patience=cfg.patience, steps_per_epoch=spe, name="sasrec"),
                        run.checkpoints, run.path / BEST, progress=progress)
    run.check_resume_data(data.fingerprint)
    loop.resume()  # before config.toml is written: a checkpoint that does not fit leaves the run as it was
    run.write_config(cfg)
    run.write_info({"data_fingerprint": data.fingerprint, "n_items": data.n_items})
    st = loop.run(stop_after_steps)
    if stop_after_steps is not None and st.step < loop.s.total_steps and not st.stopped_early:
        return {"interrupted_at_step": st.step}
    loop.load_best()
    valid_m = task.evaluate(task.valid, progress)
    test_m = task.evaluate(eval_examples(data.sequences, "test"), progress)
    with torch.no_grad():
        table = model.item_table().detach()
    write_item_embedding(run.path / "item_embeddings.safetensors", table, modality="collaborative",
                         encoder="sasrec" if cfg.item_repr == "id" else "motor", data_fingerprint=data.fingerprint)
    epochs_run = len(st.history)
    metrics = {
        "model": "SASRec" if cfg.item_repr == "id" else "MOTOR", "best_epoch": st.best_step // spe - 1 if st.best_step > 0 else -1,
        "epochs_run": epochs_run, "stopped_early": st.stopped_early, "valid": valid_m, "test": test_m,
        "seconds_per_epoch": round(st.train_seconds / max(1, st.step / spe), 2),
        "train_seconds": round(st.train_seconds, 1), "parameters": count_parameters(model),
        "peak_rss_mb": round(peak_rss_mb(), 1), "env": env_info(), "history": st.history,
    }
    run.write_metrics(metrics)
    return metrics


def load_scorer(run_dir: str | Path, data: SequenceData, device="cpu"):
    """A trained SASRec run as a scorer for `evaluate` (checks it was trained on this dataset)."""
    from ..config import load_config

    run = open_run(run_dir, KIND, data_fingerprint=data.fingerprint)
    cfg = load_config(SASRecTrainConfig, run.path / "config.toml")
    if not (run.path / BEST).exists():
        raise MmesidError(f"{run.path}: no {BEST} (the run has not validated an epoch yet)")
    model = make_model(data, cfg)
    state, _ = load_tensors(run.path / BEST)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise MmesidError(f"{run.path / BEST}: does not fit this dataset/config ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), cfg.model.max_len
