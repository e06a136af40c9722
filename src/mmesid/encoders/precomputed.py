"""User-supplied embedding matrices (.npy / .safetensors), checked and rewritten in mmesid's format.

The input is read by `mmesid.artifacts.embeddings.read_item_embedding` (`FILE[:KEY]`; a .safetensors
file's `mask` is honoured; NaN/Inf in a row the file marks as present is refused there, naming the
item). A matrix is accepted with n_items + 1 rows (row 0 = padding, overwritten with zeros) or
n_items rows (a zero padding row is prepended). Rows that are all zero mean "no embedding": they
follow the missing-input policy like a missing image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..artifacts.embeddings import MODALITY_NAMES, read_item_embedding, split_file_key, write_item_embedding
from ..data.dataset import SequenceData
from ..errors import MmesidError
from ..io import file_sha256
from .base import (EncodeResult, Problem, cached_output, cached_result, check_output, check_policy, content_hash,
                   fail_on_problems, file_metadata, l2_normalize, write_problems)

log = logging.getLogger(__name__)


def modality_name(modality: str) -> str:
    """`text` / `visual` / `collaborative`, also accepting the short names t / v / c."""
    name = MODALITY_NAMES.get(modality, modality)
    if name not in MODALITY_NAMES.values():
        raise MmesidError(f"--modality {modality!r}: expected one of {', '.join(MODALITY_NAMES.values())}")
    return name


def validate_matrix(mat: torch.Tensor, n_items: int, path: str | Path, mask: torch.Tensor | None = None,
                    missing: str = "fail") -> tuple[torch.Tensor, torch.Tensor, list[Problem]]:
    """Shape, dtype and value checks; returns float32 [n+1, d], mask uint8 [n+1] and problem rows."""
    if mat.ndim != 2:
        raise MmesidError(f"{path}: expected a 2-D matrix [items, dim], got shape {tuple(mat.shape)}")
    rows, dim = mat.shape
    if dim == 0:
        raise MmesidError(f"{path}: the matrix has 0 columns")
    if rows == n_items + 1:
        pass
    elif rows == n_items:
        mat = torch.cat([torch.zeros(1, dim, dtype=mat.dtype), mat])
        if mask is not None:
            mask = torch.cat([torch.zeros(1, dtype=mask.dtype), mask])
    else:
        raise MmesidError(f"{path}: {rows} rows, but the dataset has {n_items} items: expected "
                          f"{n_items + 1} rows (row 0 = padding) or {n_items} rows (one per item 1..{n_items})")
    if mask is not None and tuple(mask.shape) != (n_items + 1,):
        raise MmesidError(f"{path}: mask has shape {tuple(mask.shape)}, expected ({mat.shape[0]},)")
    emb = mat.to(torch.float32).clone()
    emb[0] = 0
    finite = torch.isfinite(emb).all(1)
    nonzero = emb.abs().sum(1) > 0
    given = mask.bool() if mask is not None else torch.ones(n_items + 1, dtype=torch.bool)
    problems = []  # rows the file marks as absent (mask 0) are passed on as absent, not reported
    for i in torch.nonzero(~finite[1:] & given[1:]).flatten().tolist():
        problems.append(Problem(i + 1, "", str(path), "row has NaN/Inf"))
    for i in torch.nonzero(finite[1:] & ~nonzero[1:] & given[1:]).flatten().tolist():
        problems.append(Problem(i + 1, "", str(path), "row is all zeros"))
    ok = finite & nonzero & given
    ok[0] = False
    emb[~ok] = 0
    if problems and missing == "fail":
        problems.sort(key=lambda p: p.item)
        fail_on_problems(problems, "embedding row")
    return emb, ok.to(torch.uint8), sorted(problems, key=lambda p: p.item)


def import_precomputed(data: SequenceData | str | Path, input_spec: str | Path, out: str | Path,
                       modality: str, missing: str = "fail", normalize: bool = False,
                       overwrite: bool = False) -> EncodeResult:
    """Check `input_spec` (FILE[:KEY]) against the dataset and write it as an item-embedding file."""
    check_policy(missing)
    modality = modality_name(modality)
    input_path, key = split_file_key(str(input_spec))
    inputs = [input_path] + ([data] if not isinstance(data, SequenceData) else [])
    out = check_output(out, modality, inputs, overwrite)
    data = data if isinstance(data, SequenceData) else SequenceData.load(data)
    if not input_path.is_file():
        raise MmesidError(f"{input_path}: file not found")
    digest = content_hash({"stage": "precomputed", "n_items": data.n_items, "file": file_sha256(input_path),
                           "key": key, "modality": modality, "missing": missing, "normalize": normalize})
    meta = None if overwrite else cached_output(out, digest, data.fingerprint)
    if meta is not None:
        return cached_result(out, data.n_items, meta)
    e = read_item_embedding(input_spec, fingerprint=data.fingerprint)
    mask = e.mask.clone()
    if e.table.shape[0] == data.n_items:  # no padding row: the reader took item 1 for padding
        mask[0] = True
    emb, mask, problems = validate_matrix(e.table, data.n_items, input_path, mask, "zero")
    for p in problems:
        p.raw_id = data.items[p.item - 1].raw_id
    if problems and missing == "fail":
        fail_on_problems(problems, "embedding row")
    if normalize:
        emb[mask.bool()] = l2_normalize(emb[mask.bool()])
    if problems:
        log.warning("%d of %d rows without a usable embedding were written as zeros with mask 0",
                    len(problems), data.n_items)
    write_item_embedding(out, emb, mask, modality=modality, encoder=f"precomputed:{input_path.name}",
                         data_fingerprint=data.fingerprint,
                         extra=file_metadata(digest, missing, data.source, normalized=str(normalize).lower()))
    write_problems(out, problems)
    n_missing = data.n_items - int(mask[1:].sum())  # problem rows and rows the input marks as absent
    return EncodeResult(out, data.n_items, emb.shape[1], n_missing, cached=False, problems=problems)
