"""Loading Hugging Face folders offline, with user errors instead of library tracebacks.

Every load passes local_files_only=True: a folder that is incomplete fails here, it never
triggers a download from the model hub (`mmesid encode text` also sets HF_HUB_OFFLINE=1 when it
loads the bundled default model).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import MmesidError


def check_model_folder(path: str | os.PathLike, what: str = "model") -> Path:
    """A local folder with a config.json (or a sentence-transformers modules.json)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MmesidError(f"{path}: {what} folder not found (models are read from local folders only; "
                          f"no download from the model hub)")
    if not path.is_dir():
        raise MmesidError(f"{path}: expected a {what} folder (with config.json), got a file")
    if not (path / "config.json").exists() and not (path / "modules.json").exists():
        raise MmesidError(f"{path}: not a Hugging Face {what} folder (no config.json)")
    return path


def read_config_json(path: Path) -> dict:
    f = path / "config.json"
    if not f.exists():
        return {}
    try:
        return json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MmesidError(f"{f}: invalid JSON ({e})") from None


def load_failure(path: Path, what: str, err: Exception) -> MmesidError:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return MmesidError(f"{path}: cannot load the {what} ({type(err).__name__}: {msg[:300]})")


# Errors that mean "this folder is not what was asked for", as opposed to bugs in mmesid.
LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError, RuntimeError)
