"""Epoch training over a fixed set of examples: the part SASRec (and MOTOR) and TIGER-MM share.

Both train a model that has a `loss(*batch)` on fixed training rows, shuffled anew each epoch by the
run's own generator, validate once per epoch through the shared evaluator, keep the best epoch's
weights and test them. Only how the rows are built and what the model is differ, so those stay in
`models/sasrec_train.py` and `models/tiger_train.py`; this module holds the rest once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..artifacts.runs import RunDir, open_run
from ..config import load_config
from ..data.dataset import SequenceData
from ..data.split import eval_examples
from ..errors import MmesidError
from ..eval.ranking import TEST_RANKS, evaluate, user_ranks
from ..io import load_weights, save_npy, state_dict_error
from ..training.loop import LoopSettings, LoopState, TrainingLoop
from ..utils import (
    count_parameters,
    env_info,
    peak_rss_mb,
    resolve_device,
    seed_everything,
    set_cpu_threads,
)

BEST = "best.safetensors"
BUCKET_BATCHES = 50  # length bucketing: batches per chunk of the shuffled order sorted by length


class EpochTask:
    """A `TrainingTask`: one optimiser step per batch of `rows` (arrays or tensors with the same first
    dimension, passed to `model.loss` in order), validation on fixed examples.

    The configuration must have lr, weight_decay, batch_size, eval_batch_size, seed and model.max_len.
    With `lengths` (one per row), each epoch's shuffled order is cut into chunks of BUCKET_BATCHES
    batches, each chunk sorted by length, and the full batches shuffled again: a batch then holds rows
    of similar length, so a model whose inputs are padded to the batch's longest row (TIGER-MM's
    encoder) does less work; every row is still seen once per epoch, in an order fixed by the seed.
    """

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, rows: Sequence, valid: list,
                 cfg, device: torch.device, lengths: np.ndarray | None = None):
        self.model, self.opt, self.rows, self.valid, self.cfg, self.device = model, opt, tuple(rows), valid, cfg, device
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.n = len(self.rows[0])
        self.steps_per_epoch = math.ceil(self.n / cfg.batch_size)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.perm: torch.Tensor | None = None

    def train_step(self, step: int) -> float:
        k = step % self.steps_per_epoch
        if k == 0 or self.perm is None:  # a new epoch: a new order from the run's own generator
            self.perm = self.epoch_order()
        idx = self.perm[k * self.cfg.batch_size:(k + 1) * self.cfg.batch_size].numpy()
        self.model.train()
        loss = self.model.loss(*(torch.as_tensor(r[idx], device=self.device) for r in self.rows))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()

    def epoch_order(self) -> torch.Tensor:
        perm = torch.randperm(self.n, generator=self.gen)
        if self.lengths is None:
            return perm
        bs = self.cfg.batch_size
        chunk = bs * BUCKET_BATCHES
        order = torch.cat([c[torch.as_tensor(np.argsort(self.lengths[c.numpy()], kind="stable"))]
                           for c in perm.split(chunk)])
        full = self.n // bs  # the partial batch stays last, where train_step's slicing expects it
        batches = order[:full * bs].view(full, bs)[torch.randperm(full, generator=self.gen)]
        return torch.cat([batches.reshape(-1), order[full * bs:]])

    def validate(self, step: int) -> dict:
        return self.evaluate(self.valid)

    def evaluate(self, examples, progress: bool = False, return_ranks: bool = False) -> dict:
        self.model.eval()
        return evaluate(self.model, examples, batch_size=self.cfg.eval_batch_size, max_len=self.cfg.model.max_len,
                        device=self.device, progress=progress, return_ranks=return_ranks)

    def test(self, data: SequenceData, run: RunDir, progress: bool = False) -> dict:
        """Test metrics of every user; their ranks go to RUN/test_ranks.npy (for paired tests between runs)."""
        examples = eval_examples(data.sequences, "test")
        m = self.evaluate(examples, progress, return_ranks=True)
        save_npy(run.path / TEST_RANKS, user_ranks(examples, m.pop("ranks")))
        return m

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "generator": self.gen.get_state(), "perm": self.perm}

    def load_state_dict(self, st: dict) -> None:
        try:
            self.model.load_state_dict(st["model"])
        except RuntimeError as e:  # e.g. the model's size changed with --allow-config-change
            raise MmesidError(f"the checkpoint's weights do not fit this config ({state_dict_error(e)}); resume with "
                              "the run's own config or start again with --overwrite") from None
        self.opt.load_state_dict(st["optimizer"])
        for g in self.opt.param_groups:  # a resume with --allow-config-change runs with the new values
            g["lr"], g["weight_decay"] = self.cfg.lr, self.cfg.weight_decay
        self.gen.set_state(st["generator"])
        self.perm = st["perm"]

    def best_weights(self) -> dict:
        # copies: tied weights (T5's embeddings) share memory, which safetensors refuses
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_best_weights(self, w: dict) -> None:
        self.model.load_state_dict(w)


def setup_runtime(cfg) -> torch.device:
    """Threads, seeds and device from the configuration's `threads`, `seed` and `device`."""
    set_cpu_threads(cfg.threads)
    seed_everything(cfg.seed)
    return resolve_device(cfg.device)


def fit_epochs(task: EpochTask, cfg, run: RunDir, data: SequenceData, name: str, info: dict | None = None,
               progress: bool = True, stop_after_steps: int | None = None) -> tuple[LoopState, bool]:
    """Train `cfg.epochs` epochs (resuming from the run's checkpoint), validating each epoch with early
    stopping on `cfg.metric` / `cfg.patience`. Returns (loop state, finished); when finished, the best
    weights are in the model; not finished means `stop_after_steps` interrupted the run."""
    spe = task.steps_per_epoch
    loop = TrainingLoop(task, LoopSettings(total_steps=cfg.epochs * spe, eval_every=spe, metric=cfg.metric,
                                           patience=cfg.patience, steps_per_epoch=spe, name=name),
                        run.checkpoints, run.path / BEST, progress=progress)
    run.check_resume_data(data.fingerprint)
    loop.resume()  # before config.toml is written: a checkpoint that does not fit leaves the run as it was
    run.write_config(cfg)
    run.write_info({"data_fingerprint": data.fingerprint, "n_items": data.n_items, **(info or {})})
    st = loop.run(stop_after_steps)
    if stop_after_steps is not None and st.step < loop.s.total_steps and not st.stopped_early:
        return st, False
    loop.load_best()
    return st, True


def epoch_summary(st: LoopState, steps_per_epoch: int, model: torch.nn.Module) -> dict:
    """The metrics.json fields every epoch-trained model reports."""
    return {"best_epoch": st.best_step // steps_per_epoch - 1 if st.best_step > 0 else -1,
            "epochs_run": len(st.history), "stopped_early": st.stopped_early,
            "seconds_per_epoch": round(st.train_seconds / max(1.0, st.step / steps_per_epoch), 2),
            "train_seconds": round(st.train_seconds, 1), "parameters": count_parameters(model),
            "peak_rss_mb": round(peak_rss_mb(), 1), "env": env_info(), "history": st.history}


def load_best_model(run_dir: str | Path, kind: str, data: SequenceData, config_cls,
                    make: Callable[[RunDir, object], torch.nn.Module]):
    """(model with the run's best weights, config) of a finished or validated run of `kind` on `data`."""
    run = open_run(run_dir, kind, data_fingerprint=data.fingerprint)
    cfg = load_config(config_cls, run.path / "config.toml")
    if not (run.path / BEST).exists():
        raise MmesidError(f"{run.path}: no {BEST} (the run has not validated an epoch yet)")
    model = make(run, cfg)
    load_weights(model, run.path / BEST, "this dataset/config")
    return model, cfg


__all__ = ["BEST", "EpochTask", "epoch_summary", "fit_epochs", "load_best_model", "setup_runtime"]
