"""The encoder interface and the driver that turns one modality of every item into an E_t / E_v file.

An encoder maps a batch of item inputs (titles, images) to float vectors. The driver streams the
items batch by batch into one preallocated [n_items + 1, d] matrix (row 0 = padding), records which
items had no usable input in `mask`, and writes the item-embedding file through
`mmesid.artifacts.embeddings.write_item_embedding` (the one writer) with the dataset fingerprint and
a content hash of inputs + encoder, so re-running with the same inputs and dataset is a no-op.

An existing `--out` is this command's own cache: an item-embedding file of the same modality is
reused when up to date and replaced when stale; a file of another modality is replaced only with
`overwrite`, and anything that is not an item-embedding file is never replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from ..artifacts.outputs import check_output_file
from ..errors import MmesidError
from ..utils import resolve_device  # noqa: F401  (re-exported for the encoders)

log = logging.getLogger(__name__)

MISSING_POLICIES = ("fail", "zero")
FORMAT_VERSION = "1"


@dataclass
class Problem:
    """An item whose input could not be used (no title, image missing or unreadable)."""

    item: int
    raw_id: str
    source: str
    reason: str

    def describe(self) -> str:
        return f"item {self.item} ({self.raw_id!r}): {self.reason}: {self.source or '<empty>'}"


class Encoder:
    """Base class: `encode(inputs) -> FloatTensor[len(inputs), dim]` plus identity for the cache hash."""

    modality: str = ""  # text | visual | collaborative
    name: str = ""  # human-readable, stored in the file's metadata
    dim: int = 0

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the output besides the inputs (model files, pooling, lengths)."""
        raise NotImplementedError

    def load(self) -> None:
        """Load weights; called after the cache check, so an up-to-date output costs no model load."""

    def encode(self, inputs: Sequence[Any]) -> torch.Tensor:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------- devices
def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Model compute dtype; half precision only makes sense (and is only allowed) on CUDA."""
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype in (None, "", "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in table:
        raise MmesidError(f"--dtype {dtype!r}: expected auto, float32, float16 or bfloat16")
    if device.type == "cpu" and table[dtype] == torch.float16:
        raise MmesidError("--dtype float16 is not supported on CPU (use float32 or bfloat16)")
    return table[dtype]


# ---------------------------------------------------------------------------------------- hashing
def model_folder_fingerprint(path: str | os.PathLike, big: int = 4 << 20) -> str:
    """Hash of a model folder: small files fully, big weight files by size + first/last 4 MiB.

    Reading multi-GB checkpoints in full on every run would cost more than the cache saves; the
    sampled hash still changes when weights are replaced by another checkpoint.
    """
    path = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and ".git" not in p.parts
                    and not p.name.startswith(".")):
        size = f.stat().st_size
        h.update(f"{f.relative_to(path).as_posix()}\0{size}\0".encode())
        with open(f, "rb") as fh:
            if size <= 2 * big:
                h.update(fh.read())
            else:
                h.update(fh.read(big))
                fh.seek(size - big)
                h.update(fh.read(big))
    return h.hexdigest()


def content_hash(parts: dict[str, Any]) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _header(out: Path) -> tuple[list[str], dict[str, str]] | None:
    """(tensor names, metadata) of a safetensors file, from its header only; None when it is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(out), framework="pt") as f:
            return list(f.keys()), dict(f.metadata() or {})
    except Exception:  # safetensors raises its own error types for anything that is not its format
        return None


def check_output(out: str | os.PathLike, modality: str, inputs: Iterable[str | os.PathLike | None] = (),
                 overwrite: bool = False) -> Path:
    """Before any work: `out` is a .safetensors file name outside the inputs, and whatever is there
    already is an item-embedding file of `modality` (another modality only with `overwrite`)."""
    out = check_output_file(out, [i for i in inputs if i is not None], suffixes=(".safetensors",))
    if out.exists():
        found = _header(out)
        if found is None or "embedding" not in found[0]:
            raise MmesidError(f"--out {out}: exists and is not an item-embedding file; choose another "
                              "name (nothing was changed)")
        had = found[1].get("modality") or "unlabelled"
        if had != modality and not overwrite:
            raise MmesidError(f"--out {out}: holds {had} embeddings, not {modality} (use --overwrite to "
                              "replace it)")
    return out


def cached_output(out: str | os.PathLike, digest: str, fingerprint: str | None = None) -> dict | None:
    """The metadata of `out` when it records exactly this content hash and dataset (the work can be
    skipped); None when there is no such file."""
    out = Path(out)
    found = _header(out) if out.is_file() else None
    if found is None:
        return None
    meta = found[1]
    if meta.get("content_hash") != digest or meta.get("data_fingerprint", "") != (fingerprint or ""):
        return None
    return meta


# ---------------------------------------------------------------------------------------- output
@dataclass
class EncodeResult:
    path: Path
    n_items: int
    dim: int
    n_missing: int
    cached: bool
    problems: list[Problem] = field(default_factory=list)


def cached_result(out: str | os.PathLike, n_items: int, meta: dict) -> EncodeResult:
    return EncodeResult(Path(out), n_items, int(meta.get("dim", 0)), int(meta.get("n_missing", 0)), cached=True)


def file_metadata(digest: str, missing: str, source: str, **more: str) -> dict[str, str]:
    """The encoder-specific metadata every E_t / E_v file carries beside the common format keys."""
    return {"content_hash": digest, "format_version": FORMAT_VERSION, "missing_policy": missing,
            "source": source, **more}


def write_problems(out: str | os.PathLike, problems: list[Problem]) -> Path | None:
    """Side file `<out>.missing.tsv` listing every item left as a zero row (removed when none)."""
    from ..io import atomic_path

    path = Path(str(out) + ".missing.tsv")
    if not problems:
        if path.exists():
            path.unlink()
        return None
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("item\traw_id\treason\tsource\n")
            for p in problems:
                f.write(f"{p.item}\t{p.raw_id}\t{p.reason}\t{p.source}\n")
    return path


def check_policy(policy: str) -> str:
    if policy not in MISSING_POLICIES:
        raise MmesidError(f"missing-input policy {policy!r}: expected one of {', '.join(MISSING_POLICIES)}")
    return policy


def fail_on_problems(problems: list[Problem], what: str) -> None:
    from collections import Counter

    shown = "\n  ".join(p.describe() for p in problems[:10])
    more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
    kinds = Counter(p.reason.split(" (")[0].split(":")[0] for p in problems)
    summary = ", ".join(f"{k}: {n}" for k, n in kinds.most_common())
    raise MmesidError(f"{len(problems)} item(s) without a usable {what} ({summary}; policy 'fail'; use "
                      f"--missing zero to write zero rows with mask 0):\n  {shown}{more}")


def run_batches(n_items: int, batch_size: int, load: Callable[[list[int]], tuple[list[int], list[Any], list[Problem]]],
                encoder: Encoder, policy: str, what: str, order: Iterable[int] | None = None,
                progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[Problem]]:
    """Stream items through `load` (ids -> usable ids, inputs, problems) and `encoder`, batch by batch.

    Only one batch of raw inputs is alive at a time; the result matrix is the only thing that grows
    with the catalogue. With policy 'fail' the first batch with a problem stops the run.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise MmesidError(f"--batch-size must be at least 1, got {batch_size}")
    ids = list(order) if order is not None else list(range(1, n_items + 1))
    emb: torch.Tensor | None = None
    mask = torch.zeros(n_items + 1, dtype=torch.uint8)
    problems: list[Problem] = []
    bar = tqdm(total=len(ids), desc=f"encode {what}", unit="item", disable=not progress or None, leave=False)
    try:
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            ok_ids, inputs, probs = load(chunk)
            if probs:
                if policy == "fail":
                    fail_on_problems(probs, what)
                problems.extend(probs)
            if ok_ids:
                vecs = encoder.encode(inputs).detach().to("cpu", torch.float32)
                if vecs.ndim != 2 or vecs.shape[0] != len(ok_ids):
                    raise RuntimeError(f"encoder returned shape {tuple(vecs.shape)} for {len(ok_ids)} inputs")
                if emb is None:
                    emb = torch.zeros(n_items + 1, vecs.shape[1], dtype=torch.float32)
                if not torch.isfinite(vecs).all():
                    bad = [ok_ids[i] for i in torch.nonzero(~torch.isfinite(vecs).all(1)).flatten().tolist()]
                    raise MmesidError(f"encoder produced NaN/Inf for item(s) {bad[:10]} "
                                      f"(try --dtype float32)")
                idx = torch.tensor(ok_ids, dtype=torch.long)
                emb[idx] = vecs
                mask[idx] = 1
            bar.update(len(chunk))
    finally:
        bar.close()
    if emb is None:  # an all-masked file would only hide the problem from the next stage
        first = f" (first: {problems[0].describe()})" if problems else ""
        raise MmesidError(f"no item has a usable {what}; nothing written{first}")
    if problems:
        log.warning("%d of %d items without a usable %s were written as zero rows with mask 0 "
                    "(first: %s)", len(problems), n_items, what, problems[0].describe())
    return emb, mask, problems


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), p=2, dim=-1)
