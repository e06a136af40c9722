"""Training TIGER-MM on the shared training loop: per-prefix examples, validation by constrained beam
search through the shared evaluator, best weights tested on every user.

TIGER's encoder is bidirectional, so unlike SASRec one pass cannot train every prefix: each training
prefix (s[:t] -> s[t], the authors' training set) is its own example, as in the TIGER paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..artifacts.runs import RunDir, open_run
from ..artifacts.sid_export import load_sid_export
from ..config import bounded, load_config
from ..data.dataset import SequenceData
from ..data.split import eval_examples, pad_left, sample_examples, train_examples
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
from .tiger import SIDTuples, TigerMM, TigerModelConfig

KIND = "tiger"
BEST = "best.safetensors"
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


class TigerTask:
    def __init__(self, model: TigerMM, data: SequenceData, cfg: TigerTrainConfig, device: torch.device):
        self.model, self.cfg, self.device = model, cfg, device
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        ex = train_examples(data.sequences, cfg.model.max_len)
        if not ex:
            raise MmesidError("no training examples: every user's training part has fewer than 2 items")
        self.hist = pad_left([h for h, _ in ex], cfg.model.max_len)
        self.targets = torch.tensor([t for _, t in ex])
        self.valid = sample_examples(eval_examples(data.sequences, "valid"), cfg.valid_users, cfg.seed)
        self.steps_per_epoch = math.ceil(len(ex) / cfg.batch_size)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.perm: torch.Tensor | None = None

    def train_step(self, step: int) -> float:
        k = step % self.steps_per_epoch
        if k == 0 or self.perm is None:
            self.perm = torch.randperm(len(self.targets), generator=self.gen)
        idx = self.perm[k * self.cfg.batch_size:(k + 1) * self.cfg.batch_size]
        self.model.train()
        loss = self.model.loss(self.hist[idx].to(self.device), self.targets[idx].to(self.device))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()

    def validate(self, step: int) -> dict:
        return self.evaluate(self.valid)

    def evaluate(self, examples, progress: bool = False) -> dict:
        return evaluate(self.model, examples, batch_size=self.cfg.eval_batch_size, max_len=self.cfg.model.max_len,
                        device=self.device, progress=progress)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "generator": self.gen.get_state(), "perm": self.perm}

    def load_state_dict(self, st: dict) -> None:
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        for g in self.opt.param_groups:
            g["lr"], g["weight_decay"] = self.cfg.lr, self.cfg.weight_decay
        self.gen.set_state(st["generator"])
        self.perm = st["perm"]

    def best_weights(self) -> dict:
        # copies: T5 ties its embeddings, and safetensors refuses tensors that share memory
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_best_weights(self, w: dict) -> None:
        self.model.load_state_dict(w)


def train_tiger(data: SequenceData, sids_dir: str | Path, cfg: TigerTrainConfig, run: RunDir,
                progress: bool = True, stop_after_steps: int | None = None) -> dict:
    """Train (resuming from the run's checkpoint), test the best weights; `run` is claimed by the caller."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model = build(data, sids_dir, cfg).to(device)
    task = TigerTask(model, data, cfg, device)
    spe = task.steps_per_epoch
    loop = TrainingLoop(task, LoopSettings(total_steps=cfg.epochs * spe, eval_every=spe, metric=cfg.metric,
                                           patience=cfg.patience, steps_per_epoch=spe, name="tiger-mm"),
                        run.checkpoints, run.path / BEST, progress=progress)
    run.check_resume_data(data.fingerprint)
    loop.resume()
    run.write_config(cfg)
    run.write_info({"data_fingerprint": data.fingerprint, "n_items": data.n_items,
                    "sids": str(Path(sids_dir).resolve())})
    st = loop.run(stop_after_steps)
    if stop_after_steps is not None and st.step < loop.s.total_steps and not st.stopped_early:
        return {"interrupted_at_step": st.step}
    loop.load_best()
    t = model.tuples
    metrics = {"model": "TIGER-MM", "modalities": cfg.modalities or None, "tuple_length": t.length,
               "vocab_size": t.vocab_size, "items_with_disambiguation_code": t.collisions, "beams": cfg.beams,
               "best_epoch": st.best_step // spe - 1 if st.best_step > 0 else -1, "epochs_run": len(st.history),
               "stopped_early": st.stopped_early,
               "valid": {**task.evaluate(task.valid, progress), "users": len(task.valid)},
               "test": task.evaluate(eval_examples(data.sequences, "test"), progress),
               "train_seconds": round(st.train_seconds, 1), "parameters": count_parameters(model),
               "peak_rss_mb": round(peak_rss_mb(), 1), "env": env_info(), "history": st.history}
    run.write_metrics(metrics)
    return metrics


def load_scorer(run_dir: str | Path, data: SequenceData, device="cpu"):
    """A trained TIGER-MM run as a scorer for `evaluate` / `recommend`."""
    run = open_run(run_dir, KIND, data_fingerprint=data.fingerprint)
    cfg = load_config(TigerTrainConfig, run.path / "config.toml")
    sids = run.info().get("sids")
    if not sids or not Path(sids).is_dir():
        raise MmesidError(f"{run.path / 'run.json'}: the SID export {sids!r} this run was trained on is missing")
    if not (run.path / BEST).exists():
        raise MmesidError(f"{run.path}: no {BEST} (the run has not validated an epoch yet)")
    model = build(data, sids, cfg)
    state, _ = load_tensors(run.path / BEST)
    model.load_state_dict(state)
    return model.to(device).eval(), cfg.model.max_len
