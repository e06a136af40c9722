"""User-supplied embedding matrices (.npy / .safetensors), checked and rewritten in mmesid's format.

A precomputed matrix is accepted with n_items + 1 rows (row 0 = padding, overwritten with zeros)
or n_items rows (a zero padding row is prepended). Anything else, a non-float dtype, or rows with
NaN/Inf is reported with the file and the item ids. Rows that are NaN/Inf or all zero mean "no
embedding": they follow the missing-input policy like a missing image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import SequenceData
from ..errors import MmesidError
from ..io import file_sha256, load_npy
from .base import (EncodeResult, Problem, cached_output, check_policy, content_hash, fail_on_problems,
                   l2_normalize, write_embedding_file, write_problems)

log = logging.getLogger(__name__)

MODALITIES = ("text", "visual", "collaborative")


def read_matrix(path: str | Path, key: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(matrix, optional mask) from .npy (never unpickled) or .safetensors."""
    path = Path(path)
    if not path.is_file():
        raise MmesidError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if key:
            raise MmesidError(f"{path}: --key applies to .safetensors files only")
        arr = load_npy(path)
        if arr.dtype.kind not in "f":
            raise MmesidError(f"{path}: dtype {arr.dtype} is not a floating-point type "
                              f"(expected float16/float32/float64)")
        return torch.from_numpy(np.ascontiguousarray(arr)), None
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
                if key is None:
                    if "embedding" in keys:
                        key = "embedding"
                    elif len([k for k in keys if k != "mask"]) == 1:
                        key = next(k for k in keys if k != "mask")
                    else:
                        raise MmesidError(f"{path}: several tensors ({', '.join(keys)}); choose one with --key")
                if key not in keys:
                    raise MmesidError(f"{path}: no tensor {key!r} (has {', '.join(keys) or 'none'})")
                mat = f.get_tensor(key)
                mask = f.get_tensor("mask") if "mask" in keys else None
        except MmesidError:
            raise
        except Exception as e:  # safetensors' own error types
            raise MmesidError(f"{path}: not a valid safetensors file ({e})") from None
        if not mat.is_floating_point():
            raise MmesidError(f"{path}: tensor {key!r} has dtype {str(mat.dtype).replace('torch.', '')}, "
                              f"not a floating-point type")
        return mat, mask
    raise MmesidError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .npy or .safetensors "
                      f"(pickled .pt/.pkl files are not read)")


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
    problems = []
    for i in torch.nonzero(~finite[1:]).flatten().tolist():
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


def import_precomputed(data: SequenceData | str | Path, input_path: str | Path, out: str | Path,
                       modality: str, key: str | None = None, missing: str = "fail", normalize: bool = False,
                       force: bool = False) -> EncodeResult:
    check_policy(missing)
    if modality not in MODALITIES:
        raise MmesidError(f"--modality {modality!r}: expected one of {', '.join(MODALITIES)}")
    data = data if isinstance(data, SequenceData) else SequenceData.load(data)
    input_path = Path(input_path)
    out = Path(out)
    if not input_path.is_file():
        raise MmesidError(f"{input_path}: file not found")
    digest = content_hash({"stage": "precomputed", "n_items": data.n_items, "file": file_sha256(input_path),
                           "key": key, "modality": modality, "missing": missing, "normalize": normalize})
    if not force and cached_output(out, digest):
        from .pipeline import _dim_of, _missing_of

        return EncodeResult(out, data.n_items, _dim_of(out), _missing_of(out), cached=True)
    mat, mask = read_matrix(input_path, key)
    emb, mask, problems = validate_matrix(mat, data.n_items, input_path, mask, missing)
    for p in problems:
        p.raw_id = data.items[p.item - 1].raw_id
    if normalize:
        emb[mask.bool()] = l2_normalize(emb[mask.bool()])
    if problems:
        log.warning("%d of %d rows without a usable embedding were written as zeros with mask 0",
                    len(problems), data.n_items)
    write_embedding_file(out, emb, mask, modality=modality, encoder=f"precomputed:{input_path.name}",
                         digest=digest, extra={"missing_policy": missing, "source": data.source,
                                               "normalized": str(normalize).lower()})
    write_problems(out, problems)
    return EncodeResult(out, data.n_items, emb.shape[1], len(problems), cached=False, problems=problems)
