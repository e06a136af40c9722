"""Fine-tuning on the shared training skeleton: the stage's step, validation and state.

`FinetuneTask` is what LoRA fine-tuning gives `training.TrainingLoop`: one optimiser step (its
grad-accumulation micro-batches, clipping, the cosine schedule), the validation on a fixed sample of
users (distributed), and its resumable state (trainable weights, optimiser, scheduler, AMP scaler).
The loop owns validation timing, early stopping, `best.safetensors` and the atomic checkpoints
(holding every process's RNG), so an interrupted run resumes to exactly the uninterrupted result:
the micro-batches of a step are a pure function of (seed, epoch, step).

Gradient accumulation averages the micro-batch losses, each a mean over its own targets: it equals
one large batch exactly when the micro-batches hold the same number of targets (e.g. the "prefix"
scheme, one target per prompt), as the authors' code does.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np
import torch

from ..artifacts.embeddings import split_file_key
from ..artifacts.runs import RunDir
from ..data.dataset import SequenceData
from ..data.split import EvalExamples, eval_examples, sample_examples
from ..errors import MmesidError
from ..eval.ranking import TEST_RANKS, user_ranks
from ..io import save_npy
from ..training.loop import LoopSettings, TrainingLoop
from ..utils import env_info, peak_rss_mb, seed_everything
from .batches import TrainExamples, epoch_batches, plan
from .build import build_model, parameter_counts
from .config import FinetuneConfig
from .distributed import (
    Runtime,
    distributed_evaluate,
    mean_over_processes,
    micro_batch,
    setup_runtime,
)
from .exports import export_embeddings
from .model import LLMRecommender
from .runs import BEST, KIND

log = logging.getLogger(__name__)


def valid_subset(ex: EvalExamples, n: int, seed: int) -> EvalExamples:
    """A fixed random sample of `n` validation users (all when n is 0 or too large)."""
    return sample_examples(ex, n, seed)


def training_examples(data: SequenceData, cfg: FinetuneConfig) -> TrainExamples:
    examples = TrainExamples(data.sequences, cfg.max_len, cfg.train_scheme)
    if len(examples) == 0:
        raise MmesidError("no training prompts: every user's training part (all but the last two items) has "
                          "fewer than 2 items, so there is nothing to fine-tune on; the LLM recommender needs "
                          "users with at least 4 interactions")
    return examples


class FinetuneTask:
    """LoRA fine-tuning's part of the training loop (see the module docstring)."""

    def __init__(self, rt: Runtime, model: LLMRecommender, data: SequenceData, cfg: FinetuneConfig,
                 examples: TrainExamples):
        from transformers import get_cosine_schedule_with_warmup

        self.rt, self.cfg, self.examples = rt, cfg, examples
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        if cfg.lora_lr:  # two groups: the new modules (inputs, E_x, fusion) at lr, the LoRA adapters at lora_lr
            groups = [{"params": [p for n, p in named if "lora_" not in n], "lr": cfg.lr},
                      {"params": [p for n, p in named if "lora_" in n], "lr": cfg.lora_lr}]
        else:
            groups = [{"params": self.params, "lr": cfg.lr}]
        # fused: one kernel over each tensor instead of ~10 passes; on the 12k x D table E_x this is
        # 6.5 vs 34 ms per step on this CPU (BENCHMARKS.md section 8), with the same update rule
        opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        self.plan = plan(len(examples), cfg.batch_size, cfg.grad_accum, rt.world, cfg.epochs, cfg.max_steps)
        total = self.plan["total_steps"]
        self.sched = get_cosine_schedule_with_warmup(opt, min(cfg.warmup_steps, total), total)
        self.model, self.opt = rt.acc.prepare(model, opt)
        self.core: LLMRecommender = rt.acc.unwrap_model(self.model)
        self.valid = valid_subset(eval_examples(data.sequences, "valid"), cfg.valid_users, cfg.seed)
        self.lengths = np.array([len(h) for h in examples.hist])
        self._epoch, self._batches = -1, []

    def micro_batches(self, step: int) -> list[list[int]]:
        """This process's example indices for each micro-batch of optimiser step `step`."""
        epoch, k = divmod(step, self.plan["steps_per_epoch"])
        if epoch != self._epoch:
            self._batches = epoch_batches(self.lengths, self.cfg.batch_size, self.rt.world, self.cfg.seed, epoch,
                                          self.cfg.length_bucketing)
            self._epoch = epoch
        first = k * self.cfg.grad_accum
        last = min(first + self.cfg.grad_accum, self.plan["micro_per_epoch"])
        return [micro_batch(self._batches[m], self.rt.rank, self.rt.world) for m in range(first, last)]

    def accumulate(self, step: int) -> float:
        """Forward and backward of every micro-batch of the step (gradients: mean of their losses)."""
        cfg, acc = self.cfg, self.rt.acc
        self.model.train()
        parts = self.micro_batches(step)
        total = 0.0
        for i, idx in enumerate(parts):
            b = {k: v.to(self.rt.device) for k, v in self.examples.batch(idx).items()}
            last = i == len(parts) - 1  # DDP averages gradients once, after the last micro-batch
            sync = contextlib.nullcontext() if last or self.rt.world == 1 else acc.no_sync(self.model)
            with sync:
                with acc.autocast():
                    out = self.model(**b, loss=cfg.loss, contrastive_weight=cfg.contrastive_weight,
                                     contrastive_temperature=cfg.contrastive_temperature)
                acc.backward(out["loss"] / len(parts))
            total += float(out["loss"].detach())
        return total / len(parts)

    def train_step(self, step: int) -> float:
        loss = self.accumulate(step)
        if self.cfg.max_grad_norm > 0:
            self.rt.acc.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return mean_over_processes(self.rt, loss)

    def validate(self, step: int) -> dict:
        try:
            return distributed_evaluate(self.rt, self.model, self.valid, self.cfg)
        except MmesidError as e:
            raise MmesidError(f"finetune {self.cfg.variant}: validation after step {step}: {e} (try a lower "
                              "learning rate); the last good checkpoint is kept") from None

    def state_dict(self) -> dict:
        st = {"weights": self.core.trainable_state(), "optimizer": self.opt.state_dict(),
              "scheduler": self.sched.state_dict()}
        if self.rt.acc.scaler is not None:
            st["scaler"] = self.rt.acc.scaler.state_dict()
        return st

    def load_state_dict(self, st: dict) -> None:
        self.load_best_weights(st["weights"])
        if len(st["optimizer"]["param_groups"]) != len(self.opt.param_groups):
            raise MmesidError("the checkpoint's optimiser has another number of parameter groups: lora_lr "
                              "cannot be switched on or off when resuming; start a new run")
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        self._use_config_lr()
        if self.rt.acc.scaler is not None and "scaler" in st:
            self.rt.acc.scaler.load_state_dict(st["scaler"])

    def _use_config_lr(self) -> None:
        """The checkpoint restores the optimiser's and schedule's lr; a resume with --allow-config-change
        must run with the config's (the same values, bit for bit, when nothing changed)."""
        base = [self.cfg.lr, self.cfg.lora_lr or self.cfg.lr][:len(self.opt.param_groups)]
        self.sched.base_lrs = list(base)
        for g, lr, f in zip(self.opt.param_groups, base, self.sched.lr_lambdas):
            g["initial_lr"], g["weight_decay"] = lr, self.cfg.weight_decay
            g["lr"] = lr * f(self.sched.last_epoch)
        self.sched._last_lr = [g["lr"] for g in self.opt.param_groups]

    def best_weights(self) -> dict[str, torch.Tensor]:
        return self.core.trainable_state()

    def load_best_weights(self, weights: dict[str, torch.Tensor]) -> None:
        try:
            self.core.load_trainable_state(weights)
        except RuntimeError as e:
            raise MmesidError(f"saved weights do not fit this model/config ({e}); use a new --out folder "
                              "or the run's own config.toml") from None


def make_task(data: SequenceData, cfg: FinetuneConfig, emb_paths: dict[str, str], sids_dir: str | None,
              rt: Runtime) -> FinetuneTask:
    """Seed, build the model on this process's device and wrap it into the task (fixed order: same seed,
    same initial weights)."""
    examples = training_examples(data, cfg)
    seed_everything(cfg.seed)
    model = build_model(cfg, data, emb_paths, sids_dir, rt.device)
    return FinetuneTask(rt, model, data, cfg, examples)


def input_paths(emb_paths: dict[str, str], sids_dir: str | None) -> list[Path]:
    """The input files and folders (an output folder may not hold or replace them)."""
    return [split_file_key(str(p))[0] for p in emb_paths.values()] + ([Path(sids_dir)] if sids_dir else [])


def train_finetune(data: SequenceData, cfg: FinetuneConfig, run: RunDir | str | Path, emb_paths: dict[str, str],
                   sids_dir: str | None = None, progress: bool = True, stop_after_steps: int | None = None,
                   evaluate_test: bool = True, runtime: Runtime | None = None) -> dict:
    """Train (resuming from the run's checkpoint), test the best weights, export embeddings; returns metrics.

    `run` is a claimed RunDir built with `runtime.dist` (the CLI), or a folder that is claimed here.
    `stop_after_steps` ends as if the process were killed right after a checkpoint (resume tests).
    """
    rt = runtime or setup_runtime(cfg)
    own = not isinstance(run, RunDir)
    if own:
        run = RunDir(run, KIND, rt.dist).claim(input_paths(emb_paths, sids_dir))
    try:
        return _train(data, cfg, run, emb_paths, sids_dir, rt, progress, stop_after_steps, evaluate_test)
    finally:
        if own:
            run.release()


def _train(data, cfg, run: RunDir, emb_paths, sids_dir, rt: Runtime, progress, stop_after_steps,
           evaluate_test) -> dict:
    t_start = time.perf_counter()
    task = make_task(data, cfg, emb_paths, sids_dir, rt)
    pl = task.plan
    spe = pl["steps_per_epoch"]
    settings = LoopSettings(total_steps=pl["total_steps"], eval_every=cfg.eval_every or spe, metric=cfg.metric,
                            patience=cfg.patience, save_every=cfg.save_every, steps_per_epoch=spe,
                            name=f"finetune {cfg.variant}")
    loop = TrainingLoop(task, settings, run.checkpoints, run.path / BEST, progress=progress, is_main=rt.is_main)
    run.check_resume_data(data.fingerprint)
    loop.resume()  # before config.toml is written: a checkpoint that does not fit leaves the run as it was
    run.write_config(cfg)
    run.write_info({"data_fingerprint": data.fingerprint, "n_items": data.n_items, "emb": dict(emb_paths),
                    "sids": sids_dir, "variant": cfg.variant, "backbone": task.core.backbone_name})
    _log_start(task, rt)
    st = loop.run(stop_after_steps)
    if stop_after_steps is not None and st.step < settings.total_steps and not st.stopped_early:
        return {"interrupted_at_step": st.step}
    train_wall = time.perf_counter() - t_start
    loop.load_best()
    metrics = _report(task, loop, rt, data, evaluate_test, progress)
    ranks = metrics.pop("test_ranks", None)
    if rt.is_main and ranks is not None:
        save_npy(run.path / TEST_RANKS, ranks)
    metrics["train_wall_seconds"] = round(train_wall, 1)  # this session, incl. validations
    metrics["total_wall_seconds"] = round(time.perf_counter() - t_start, 1)
    if rt.is_main:
        export_embeddings(task.core, run.path, cfg.variant, data.fingerprint)
    run.write_metrics(metrics)
    rt.acc.wait_for_everyone()
    return metrics


def _log_start(task: FinetuneTask, rt: Runtime) -> None:
    if rt.is_main:
        c, ex, pl = parameter_counts(task.core), task.examples, task.plan
        log.info("variant %s: %d training prompts (%d targets), %d steps/epoch, %d steps, %d process(es); "
                 "trainable %d of %d parameters (%.3f%%)", task.cfg.variant, len(ex), ex.n_targets,
                 pl["steps_per_epoch"], pl["total_steps"], rt.world, c["trainable"], c["total"],
                 100 * c["trainable_share"])


def _report(task: FinetuneTask, loop: TrainingLoop, rt: Runtime, data: SequenceData, evaluate_test: bool,
            progress: bool) -> dict:
    """metrics.json: what was trained, the best weights' validation and test metrics, costs."""
    core, st, cfg = task.core, loop.state, task.cfg
    m = {"model": cfg.variant, "backbone": core.backbone_name, "modalities": core.inputs.modalities,
         "fusion": core.use_fusion, "fusion_mode": core.fusion_mode, "prompt": core.prompt.text,
         "steps": st.step, "plan": task.plan,
         "best_step": st.best_step, "stopped_early": st.stopped_early, "processes": rt.world,
         "train_prompts": len(task.examples), "train_targets": task.examples.n_targets,
         "parameters": parameter_counts(core), "history": st.history}
    best = [h for h in st.history if h["step"] == st.best_step]
    if best:  # the best weights were validated already (on the valid_users sample, or all users)
        m["valid"] = {**{k: v for k, v in best[-1].items() if "@" in k}, "users": len(task.valid)}
    elif evaluate_test:
        m["valid"] = distributed_evaluate(rt, task.model, task.valid, cfg, progress)
    if evaluate_test:  # off for screening on validation: the test split is then never scored
        test = eval_examples(data.sequences, "test")
        m["test"] = distributed_evaluate(rt, task.model, test, cfg, progress, return_ranks=True)
        m["test_ranks"] = user_ranks(test, m["test"].pop("ranks"))
    m["train_seconds"] = round(st.train_seconds, 1)  # optimiser steps only, over every session of the run
    m["valid_seconds_during_training"] = round(st.valid_seconds, 1)
    m["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if rt.device.type == "cuda":
        m["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(rt.device) / 2**20, 1)
    m["env"] = {**env_info(), "processes": rt.world, "mixed_precision": str(rt.acc.mixed_precision)}
    return m
