"""Where a command may write: the rules that keep mmesid from destroying a user's files.

An output location is refused, before anything is written, when it is the current directory (or
contains it), the home or root folder, an input of the command, a folder that contains an input, or
a folder holding anything that this kind of command did not make. `--overwrite` replaces only a
folder of the same kind. Folders are recognised by their own marker: `run.json` ("kind"), a prepared
dataset's `meta.json`, a semantic-ID export's `stats.json`, an imported backbone's `mmesid_backbone.json`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import MmesidError

DESCRIPTIONS = {"prepared-data": "a prepared dataset", "sid-export": "a semantic-ID export",
                "sasrec": "a SASRec run", "quantize": "a quantiser run", "finetune": "a fine-tuning run", "tiger": "a TIGER-MM run",
                "backbone": "an imported backbone"}


def _json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def folder_kind(path: str | Path) -> str | None:
    """What made this folder: a run kind, "prepared-data", "sid-export", or None (not mmesid's)."""
    path = Path(path)
    if (path / "run.json").is_file() and _json(path / "run.json").get("kind"):
        return str(_json(path / "run.json")["kind"])
    if (path / "meta.json").is_file() and _json(path / "meta.json").get("format") == "mmesid-prepared":
        return "prepared-data"
    if (path / "semantic_ids.safetensors").is_file() and (path / "stats.json").is_file():
        return "sid-export"
    if (path / "mmesid_backbone.json").is_file() and _json(path / "mmesid_backbone.json").get("kind"):
        return str(_json(path / "mmesid_backbone.json")["kind"])
    return None


def describe(kind: str | None) -> str:
    return DESCRIPTIONS.get(kind, f"a {kind!r} folder") if kind else "files not made by mmesid"


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_location(out: str | Path, inputs: Iterable[str | Path] = (), what: str = "--out") -> Path:
    """Refuse an output path that would hit the current directory, home, root or an input."""
    out_r = Path(out).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if _is_within(cwd, out_r):
        raise MmesidError(f"{what} {out}: is the current directory or contains it; choose a new folder")
    if out_r == Path(out_r.anchor) or out_r == Path.home().resolve():
        raise MmesidError(f"{what} {out}: refusing to write over the root or home folder")
    for inp in inputs:
        if inp is None:
            continue
        inp_r = Path(inp).expanduser().resolve()
        if _is_within(inp_r, out_r):
            raise MmesidError(f"{what} {out}: contains the input {inp}; choose a folder outside the inputs")
        if inp_r.is_dir() and _is_within(out_r, inp_r):
            raise MmesidError(f"{what} {out}: lies inside the input folder {inp}; choose another folder")
    return out_r


def check_output_folder(out: str | Path, kind: str, inputs: Iterable[str | Path] = (), overwrite: bool = False,
                        replaceable: bool = False, what: str = "--out") -> None:
    """Refuse `out` unless it is absent, empty, or (with overwrite / replaceable) a folder of `kind`."""
    out = Path(out)
    check_output_location(out, inputs, what)
    if out.exists() and not out.is_dir():
        raise MmesidError(f"{what} {out}: is a file, expected a folder")
    if out.is_dir() and any(p.name != ".lock" for p in out.iterdir()):
        found = folder_kind(out)
        if found != kind:
            raise MmesidError(f"{what} {out}: holds {describe(found)}, not {describe(kind)}; "
                              "choose another folder (nothing was changed)")
        if not (overwrite or replaceable):
            raise MmesidError(f"{what} {out}: already holds {describe(kind)} (use --overwrite to replace it)")


def check_output_file(out: str | Path, inputs: Iterable[str | Path] = (), what: str = "--out",
                      suffixes: tuple[str, ...] = ()) -> Path:
    """A single output file: not a folder, not an input, with one of `suffixes` if given."""
    out = Path(out)
    check_output_location(out, inputs, what)
    if out.is_dir():
        raise MmesidError(f"{what} {out}: is a folder, expected a file name")
    if suffixes and out.suffix.lower() not in suffixes:
        raise MmesidError(f"{what} {out}: expected a file ending in {' or '.join(suffixes)}")
    return out


@contextlib.contextmanager
def replace_dir(out: str | Path, kind: str, inputs: Iterable[str | Path] = (), overwrite: bool = False,
                replaceable: bool = False) -> Iterator[Path]:
    """Check the target (`check_output_folder`), then build it with `swap_dir`."""
    check_output_folder(out, kind, inputs, overwrite=overwrite, replaceable=replaceable)
    with swap_dir(out) as tmp:
        yield tmp


@contextlib.contextmanager
def swap_dir(out: str | Path) -> Iterator[Path]:
    """Build a folder in a temporary sibling and swap it in only if the block succeeds.

    The old folder is removed only after the new one is complete, so an error or an interrupt leaves
    either the old or the new folder. The caller has checked that `out` may be replaced.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    old = None
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rmdir(old)
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
