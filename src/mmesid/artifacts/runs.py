"""Run folders: the one owner of `config.toml`, `run.json`, `metrics.json`, the lock and checkpoints.

A run folder belongs to one kind of command (`run.json` "kind"). Opening one for writing:
1. `RunDir(path, kind)` only looks (nothing is written);
2. `resolve_config` gives the configuration: a fresh run takes defaults <- --config <- --set; a run
   that holds a checkpoint resumes from its own `config.toml`, with --config/--set applied on top,
   and a change of any key that affects results is refused with the changed keys named, unless
   `allow_change` (then the new values are used *and* recorded);
3. `claim(inputs, overwrite)` checks the location (see artifacts.outputs), creates the folder and
   takes an exclusive lock (a second writer gets a clear error), clearing it first with overwrite;
4. `write_config`, `write_info`, `write_metrics` write atomically; `checkpoints` is the store.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tomllib
from pathlib import Path
from typing import Any, Iterable, TypeVar

from ..config import changed_keys, dump_toml, load_config
from ..errors import ConfigError, MmesidError
from ..io import atomic_path, read_json, write_json
from .checkpoint import CheckpointStore, Dist
from .embeddings import check_fingerprint
from .outputs import check_output_folder, describe, folder_kind

T = TypeVar("T")
# keys that change how a run executes, not what it computes: free to change on resume
RUNTIME_KEYS = ("device", "threads", "eval_batch_size")


class RunDir:
    def __init__(self, path: str | Path, kind: str, dist: Dist | None = None):
        self.path = Path(path)
        self.kind = kind
        self.dist = dist or Dist()
        self._lock_fd: int | None = None
        self._pending: dict = {}

    # ------------------------------------------------------------------ looking
    @property
    def checkpoints(self) -> CheckpointStore:
        return CheckpointStore(self.path / "checkpoints", self.dist)

    def has_checkpoint(self) -> bool:
        return self.checkpoints.exists()

    def info(self) -> dict:
        return read_json(self.path / "run.json") if (self.path / "run.json").exists() else {}

    def check_resume_data(self, data_fingerprint: str | None) -> None:
        """A run with a checkpoint continues only on the dataset it was trained on."""
        if self.has_checkpoint():
            check_fingerprint(self.path / "run.json", self.info().get("data_fingerprint"), data_fingerprint)

    def resolve_config(self, cls: type[T], config_file: str | Path | None = None,
                       overrides: list[str] | None = None, allow_change: bool = False, fresh: bool = False) -> T:
        """The configuration to run with (see the module docstring); `fresh`: ignore a saved run (--overwrite)."""
        saved = self.path / "config.toml"
        if fresh or not (self.has_checkpoint() and saved.exists()):
            return load_config(cls, config_file, overrides)
        kind = folder_kind(self.path)
        if kind not in (None, self.kind):
            return load_config(cls, config_file, overrides)  # claim() refuses it with a clear message
        old = load_config(cls, saved)
        new = load_config(cls, config_file, overrides, base=_toml(saved))
        changed = [k for k in changed_keys(old, new) if k.rsplit(".", 1)[-1] not in RUNTIME_KEYS]
        if changed and not allow_change:
            desc = ", ".join(f"{k} ({_get(old, k)!r} -> {_get(new, k)!r})" for k in changed[:6])
            raise ConfigError(f"{self.path}: resuming a run trained with another configuration: {desc}. "
                              "Resume without these changes, use a new --out folder, or pass "
                              "--allow-config-change to continue with the new values")
        return new

    # ------------------------------------------------------------------ writing
    def claim(self, inputs: Iterable[str | Path] = (), overwrite: bool = False) -> "RunDir":
        """Check the location, create the folder, lock it; with overwrite, empty a run of this kind.

        Every process checks; rank 0 then prepares and locks the folder, and no process goes on
        before it has (so none sees a half-emptied folder)."""
        check_output_folder(self.path, self.kind, inputs, overwrite=overwrite, replaceable=True)
        self.dist.barrier()
        if self.dist.main:
            self._lock_and_prepare(overwrite)
        self.dist.barrier()
        return self

    def _lock_and_prepare(self, overwrite: bool) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise MmesidError(f"{self.path}: another mmesid process is writing this run folder; wait for it "
                              "to finish or choose another --out") from None
        self._lock_fd = fd
        if overwrite:
            for p in self.path.iterdir():
                if p.name == ".lock":
                    continue
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()

    def release(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    def write_config(self, cfg: Any) -> None:
        if self.dist.main:
            with atomic_path(self.path / "config.toml") as tmp:
                tmp.write_text(dump_toml(cfg))

    def add_info(self, info: dict) -> None:
        """Entries for run.json, written with the stage's own at `write_info` (after a resume was checked,
        so a refused resume leaves run.json as it was)."""
        self._pending.update(info)

    def write_info(self, info: dict) -> None:
        """run.json: the command's kind, inputs and the dataset fingerprint (merged with what is there)."""
        if self.dist.main:
            write_json(self.path / "run.json", {**self.info(), **self._pending, **info, "kind": self.kind})

    def write_metrics(self, metrics: dict, name: str = "metrics.json") -> None:
        if self.dist.main:
            write_json(self.path / name, metrics)


def open_run(path: str | Path, kind: str, *, data_fingerprint: str | None = None) -> RunDir:
    """An existing run of `kind`, for reading (evaluate, export): checks kind and dataset."""
    path = Path(path)
    if not path.is_dir():
        raise MmesidError(f"{path}: run folder not found")
    found = folder_kind(path)
    if found != kind:
        raise MmesidError(f"{path}: holds {describe(found)}, not {describe(kind)}")
    run = RunDir(path, kind)
    check_fingerprint(path / "run.json", run.info().get("data_fingerprint"), data_fingerprint)
    return run


def _toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part, None)
    return cfg
