"""Atomic file writing, safe tensor I/O and run directories.

Every artefact is written to a temporary name in the same folder and renamed into place, so a crash
or an error never leaves a half-written file behind. Nothing here unpickles anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import MmesidError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp creates 0600; give the file the permissions open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise MmesidError(f"{path}: file not found")
    if path.is_dir():
        raise MmesidError(f"{path}: is a folder, expected a JSON file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MmesidError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise MmesidError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise MmesidError(f"{path}: cannot read ({e.strerror})") from None


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise MmesidError(f"{path}: file not found")
    if path.is_dir():
        raise MmesidError(f"{path}: is a folder, expected a .npy file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise MmesidError(f"{path}: not a plain numeric .npy file ({str(e) or type(e).__name__})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive opened by mistake
        raise MmesidError(f"{path}: an .npz archive, expected a single .npy array")
    return arr


def save_tensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write a dict of torch tensors as safetensors, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_tensors(path: str | os.PathLike) -> tuple[dict, dict[str, str]]:
    """Read a safetensors file: (tensors, metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise MmesidError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise MmesidError(f"{path}: not a valid safetensors file ({e})") from None
    return tensors, meta


def state_dict_error(e: Exception) -> str:
    """torch's load_state_dict error in one line: its first detail, not the heading."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[1:2] or lines[:1])[:300]


def load_weights(module, path: str | os.PathLike, what: str) -> None:
    """Load a safetensors state dict into a torch module; a mismatch is an error naming the file and
    what the weights must fit."""
    state, _ = load_tensors(path)
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise MmesidError(f"{path}: does not fit {what} ({state_dict_error(e)})") from None


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
