"""Atomic, resumable checkpoints: one folder per checkpoint, switched in by a single rename.

`checkpoints/step-000000123/` holds `state.pt` (everything the stage needs to continue: weights,
optimiser, scheduler, generators, loop state) and `rng-<rank>.pt` (each process's global RNG state).
It is written as `.tmp-step-...` and renamed when complete; older checkpoints are deleted only after
that, so an interrupt at any instant leaves the previous or the new checkpoint, never a mix.
Loading uses `torch.load(weights_only=True)`: nothing is unpickled.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable

import torch

from ..errors import MmesidError

PATTERN = re.compile(r"^step-(\d{9})$")
# Test hook: called with each file name just before it is written, renamed into place or removed
# (a test makes it raise at the k-th call to simulate an interrupt there).
before_write: Callable[[str], None] | None = None


class Dist:
    """The processes taking part (single process by default; the fine-tuning stage passes accelerate's)."""

    def __init__(self, rank: int = 0, world: int = 1, barrier: Callable[[], None] | None = None):
        self.rank, self.world = rank, world
        self._barrier = barrier

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self._barrier is not None and self.world > 1:
            self._barrier()


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])


def _hook(name: str) -> None:
    if before_write is not None:
        before_write(name)


def _save(obj, path: Path) -> None:
    _hook(path.name)
    torch.save(obj, path)


class CheckpointStore:
    def __init__(self, folder: str | Path, dist: Dist | None = None):
        self.folder = Path(folder)
        self.dist = dist or Dist()

    def _complete(self) -> list[tuple[int, Path]]:
        if not self.folder.is_dir():
            return []
        out = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := PATTERN.match(p.name))]
        return sorted(out)

    def exists(self) -> bool:
        return bool(self._complete())

    def save(self, step: int, state: dict) -> Path:
        """Write a new checkpoint for `step` (every process calls this; rank 0 writes the state)."""
        final = self.folder / f"step-{step:09d}"
        tmp = self.folder / f".tmp-step-{step:09d}"
        if self.dist.main:
            self.folder.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        self.dist.barrier()
        _save(rng_state(), tmp / f"rng-{self.dist.rank}.pt")
        self.dist.barrier()
        if self.dist.main:
            _save({**state, "step": step}, tmp / "state.pt")
            if final.exists():
                shutil.rmtree(final)
            _hook(final.name)
            os.replace(tmp, final)
            for s, p in self._complete():
                if s != step:
                    _hook(p.name)
                    shutil.rmtree(p, ignore_errors=True)
            for p in self.folder.glob(".tmp-step-*"):
                shutil.rmtree(p, ignore_errors=True)
        self.dist.barrier()
        return final

    def load(self, map_location="cpu") -> dict | None:
        """The newest complete checkpoint's state (this process's RNG restored), or None."""
        done = self._complete()
        if not done:
            return None
        step, path = done[-1]
        try:
            state = torch.load(path / "state.pt", weights_only=True, map_location=map_location)
            rng_path = path / f"rng-{self.dist.rank}.pt"
            rng = torch.load(rng_path, weights_only=True) if rng_path.exists() else None
        except Exception as e:  # a damaged file: say which, do not guess
            raise MmesidError(f"{path}: damaged checkpoint ({type(e).__name__}: {str(e)[:200]}); "
                              "delete this folder to resume from scratch") from None
        if not isinstance(state, dict) or state.get("step") != step:
            raise MmesidError(f"{path}: inconsistent checkpoint (step {state.get('step') if isinstance(state, dict) else '?'}"
                              f" in a folder for step {step})")
        if rng is not None:
            set_rng_state(rng)
        return state

    def clear(self) -> None:
        if self.dist.main and self.folder.exists():
            shutil.rmtree(self.folder)
        self.dist.barrier()
