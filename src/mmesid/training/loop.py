"""One training skeleton: steps, periodic validation, early stopping, best weights, exact resume.

Every stage (SASRec, MM-RQ-VAE, LLM fine-tuning) supplies a `TrainingTask` with only what is its own:
one optimiser step, one validation, and its resumable state. The loop owns the rest, the same way
for all of them (in the spirit of RecBole's Trainer, small enough to read in one sitting):

- validation every `eval_every` steps and at the end; the selection metric must be finite, else the
  run stops with an error (a diverged model never becomes "best");
- a non-finite training loss stops the run at once, naming the step;
- the best weights (`best.safetensors`) are kept whenever validation improves; `patience`
  validations without improvement stop the run (0 = never stop early);
- an atomic checkpoint (artifacts.checkpoint) every `save_every` steps and after each validation,
  holding the task's state, the loop's state and every process's RNG, so that an interrupted run
  resumes to exactly the result of an uninterrupted one.

We wrote our own rather than adopting Lightning Fabric or accelerate's checkpointing: the stages
already keep their data order a pure function of (seed, step), the checkpoint must be one atomic
folder with every process's RNG, and the whole skeleton is shorter than the glue either would need.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from ..artifacts.checkpoint import CheckpointStore
from ..errors import MmesidError
from ..io import load_tensors, save_tensors

log = logging.getLogger(__name__)


class TrainingTask(Protocol):
    """What a stage provides to the loop."""

    def train_step(self, step: int) -> float:
        """One optimiser step (step = number of steps done before it); returns the training loss.

        With several processes it must return the same value on every process (e.g. the mean over
        processes), so that all of them stop together on a non-finite loss."""

    def validate(self, step: int) -> dict[str, float]:
        """Validation metrics; must contain the loop's `metric` (the same on every process)."""

    def state_dict(self) -> dict:
        """Everything needed to continue: weights, optimiser, scheduler, generators."""

    def load_state_dict(self, state: dict) -> None: ...

    def best_weights(self) -> dict[str, torch.Tensor]:
        """The weights to keep when validation improves."""

    def load_best_weights(self, weights: dict[str, torch.Tensor]) -> None: ...


@dataclass
class LoopSettings:
    total_steps: int
    eval_every: int  # steps between validations (the stage's "epoch" when it validates per epoch)
    metric: str
    mode: str = "max"  # "max": higher is better (nDCG); "min": lower is better (a loss)
    patience: int = 0  # validations without improvement before stopping; 0 = never
    save_every: int = 0  # steps between checkpoints in addition to those after validations; 0 = none
    steps_per_epoch: int = 0  # for progress and history only
    name: str = "train"


@dataclass
class LoopState:
    step: int = 0
    best: float | None = None
    best_step: int = -1
    bad: int = 0
    stopped_early: bool = False
    history: list = field(default_factory=list)
    train_seconds: float = 0.0
    valid_seconds: float = 0.0
    run_loss: float = 0.0  # training loss summed since the last validation (part of exact resume)
    n_loss: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class TrainingLoop:
    def __init__(self, task: TrainingTask, settings: LoopSettings, store: CheckpointStore, best_path,
                 progress: bool = True, is_main: bool = True,
                 on_validation: Callable[[dict], None] | None = None):
        if settings.total_steps < 1:
            raise MmesidError(f"{settings.name}: nothing to train (0 training steps); check the data and "
                              "the batch size / epochs / max_steps settings")
        if settings.eval_every < 1:
            raise MmesidError(f"{settings.name}: eval_every must be >= 1")
        self.task, self.s, self.store = task, settings, store
        self.best_path = best_path
        self.progress, self.is_main = progress, is_main
        self.on_validation = on_validation
        self.state = LoopState()

    # ------------------------------------------------------------------ pieces
    def _better(self, value: float) -> bool:
        if self.state.best is None:
            return True
        return value > self.state.best if self.s.mode == "max" else value < self.state.best

    def _save(self) -> None:
        self.store.save(self.state.step, {"task": self.task.state_dict(), "loop": self.state.as_dict()})

    def resume(self) -> bool:
        st = self.store.load()
        if st is None:
            return False
        self.task.load_state_dict(st["task"])
        self.state = LoopState(**st["loop"])
        if self.is_main:
            log.info("%s: resumed at step %d of %d", self.s.name, self.state.step, self.s.total_steps)
        return True

    def _validate(self, loss: float | None) -> None:
        t0 = time.perf_counter()
        m = self.task.validate(self.state.step)
        self.state.valid_seconds += time.perf_counter() - t0
        value = m.get(self.s.metric)
        if value is None:
            raise MmesidError(f"{self.s.name}: validation did not report the metric {self.s.metric!r} "
                              f"(reported: {', '.join(sorted(m))})")
        if not math.isfinite(float(value)):
            raise MmesidError(f"{self.s.name}: validation {self.s.metric} is {value} at step {self.state.step}: "
                              "the model diverged (try a lower learning rate); nothing was kept from this step")
        rec = {"step": self.state.step, **({"epoch": round(self.state.step / self.s.steps_per_epoch, 3)}
                                             if self.s.steps_per_epoch else {}),
               "train_loss": loss, **m}
        self.state.history.append(rec)
        if self._better(float(value)):
            self.state.best, self.state.best_step, self.state.bad = float(value), self.state.step, 0
            if self.is_main:
                save_tensors(self.best_path, self.task.best_weights(), metadata={"step": self.state.step})
        else:
            self.state.bad += 1
        if self.s.patience and self.state.bad >= self.s.patience:
            self.state.stopped_early = True
        if self.on_validation is not None:
            self.on_validation(rec)
        if self.is_main:
            msg = (f"{self.s.name} step {self.state.step}: loss {loss if loss is None else round(loss, 4)} valid "
                   f"{self.s.metric} {float(value):.4f} (best {self.state.best:.4f} @ {self.state.best_step})")
            log.info(msg)
            if self.progress:
                from tqdm import tqdm

                tqdm.write(msg)

    # ------------------------------------------------------------------ the loop
    def run(self, stop_after_steps: int | None = None) -> LoopState:
        """Train until total_steps or early stop; `stop_after_steps` simulates a kill after a checkpoint."""
        from tqdm import tqdm

        st, s = self.state, self.s
        bar = tqdm(total=s.total_steps, initial=st.step, desc=s.name, leave=False,
                   disable=not (self.progress and self.is_main))
        while st.step < s.total_steps and not st.stopped_early:
            t0 = time.perf_counter()
            loss = float(self.task.train_step(st.step))
            st.train_seconds += time.perf_counter() - t0
            if not math.isfinite(loss):
                raise MmesidError(f"{s.name}: training loss is {loss} at step {st.step + 1}: the model diverged "
                                  "(try a lower learning rate); the last good checkpoint is kept")
            st.step += 1
            st.run_loss, st.n_loss = st.run_loss + loss, st.n_loss + 1
            bar.update(1)
            bar.set_postfix(loss=f"{st.run_loss / st.n_loss:.4f}")
            validated = False
            if st.step % s.eval_every == 0 or st.step >= s.total_steps:
                self._validate(st.run_loss / st.n_loss)
                st.run_loss, st.n_loss, validated = 0.0, 0, True
            if validated or (s.save_every and st.step % s.save_every == 0):
                self._save()
                if not validated and self.is_main:  # a heartbeat for logs of quiet (nohup) runs
                    log.info("%s step %d of %d: loss %.4f, %.2f s/step so far", s.name, st.step, s.total_steps,
                             st.run_loss / st.n_loss, st.train_seconds / st.step)
            if stop_after_steps is not None and st.step >= stop_after_steps:
                if not validated and not (s.save_every and st.step % s.save_every == 0):
                    self._save()
                break
        bar.close()
        return st

    def load_best(self) -> None:
        """Put the best validated weights into the task (the last weights if none were validated)."""
        if self.best_path.exists():
            w, _ = load_tensors(self.best_path)
            self.task.load_best_weights(w)
