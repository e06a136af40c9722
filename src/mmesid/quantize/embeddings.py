"""Reading item-aligned embedding tables (E_c, E_t, E_v, or any exported embedding).

Accepted files:
- safetensors with key `embedding` (or another key, chosen with `FILE:KEY`), float [n_items + 1, d],
  optional key `mask` uint8/bool [n_items + 1] (1 = the item has a real embedding);
- `.npy` float [n_items + 1, d] (no mask: every item 1..n counts as present).

Row 0 is padding: it is never used, whatever it holds. Non-finite values in a used row, a wrong
rank, or a mask of the wrong length are MmesidError naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import MmesidError
from ..io import load_npy, load_tensors

MODALITIES = ("c", "t", "v")
MODALITY_NAMES = {"c": "collaborative", "t": "text", "v": "visual"}


@dataclass
class ItemEmbedding:
    """An item-aligned table: `table[i]` is item i (row 0 padding), `mask[i]` whether it is real."""

    table: torch.Tensor  # float32 [n_items + 1, d]
    mask: torch.Tensor  # bool [n_items + 1], mask[0] = False
    path: str = ""
    key: str = "embedding"

    @property
    def n_items(self) -> int:
        return self.table.shape[0] - 1

    @property
    def dim(self) -> int:
        return self.table.shape[1]


def split_file_key(spec: str, default_key: str = "embedding") -> tuple[Path, str]:
    """`FILE` or `FILE:KEY` (KEY selects a tensor of a safetensors file)."""
    if Path(spec).exists() or ":" not in spec:
        return Path(spec), default_key
    path, key = spec.rsplit(":", 1)
    return Path(path), key or default_key


def load_item_embedding(spec: str | Path, key: str | None = None) -> ItemEmbedding:
    """Load `FILE[:KEY]` (.safetensors or .npy) as an ItemEmbedding; see the module docstring."""
    if key is None:
        path, key = split_file_key(str(spec))
    else:
        path = Path(spec)
    if not path.exists():
        raise MmesidError(f"{path}: embedding file not found")
    mask = None
    if path.suffix == ".npy":
        arr = load_npy(path)
        table = torch.from_numpy(np.ascontiguousarray(arr))
        key = "embedding"
    else:
        tensors, _ = load_tensors(path)
        if key not in tensors:
            raise MmesidError(f"{path}: no tensor '{key}' (keys: {', '.join(sorted(tensors))})")
        table = tensors[key]
        if key == "embedding" and "mask" in tensors:
            mask = tensors["mask"]
        elif "." in key:  # exported tables such as `z_hat.c` come with `mask.c`
            mk = "mask." + key.rsplit(".", 1)[1]
            if mk in tensors:
                mask = tensors[mk]
    if table.ndim != 2:
        raise MmesidError(f"{path}: '{key}' must be a 2-D table [n_items + 1, d], got shape {tuple(table.shape)}")
    if not (table.dtype.is_floating_point):
        raise MmesidError(f"{path}: '{key}' must be a float table, got {table.dtype}")
    if table.shape[0] < 2 or table.shape[1] < 1:
        raise MmesidError(f"{path}: '{key}' has shape {tuple(table.shape)}; need at least one item row and one column")
    table = table.float().contiguous()
    n1 = table.shape[0]
    if mask is None:
        mask = torch.ones(n1, dtype=torch.bool)
    else:
        if mask.ndim != 1 or mask.shape[0] != n1:
            raise MmesidError(f"{path}: 'mask' must have shape [{n1}], got {tuple(mask.shape)}")
        mask = mask.bool().clone()
    mask[0] = False
    bad = ~torch.isfinite(table[mask]).all(dim=1)
    if bad.any():
        first = int(torch.nonzero(mask).flatten()[torch.nonzero(bad).flatten()[0]])
        raise MmesidError(f"{path}: '{key}' has non-finite values (NaN/inf), first at item {first}")
    if not mask.any():
        raise MmesidError(f"{path}: no item has an embedding (mask is all zero)")
    return ItemEmbedding(table, mask, str(path), key)


def parse_modality_args(values: list[str]) -> dict[str, str]:
    """['c=FILE', 't=FILE'] -> {'c': 'FILE', 't': 'FILE'}; unknown or repeated modality is an error."""
    out: dict[str, str] = {}
    for v in values:
        if "=" not in v:
            raise MmesidError(f"--emb {v!r}: expected MODALITY=FILE with MODALITY one of c, t, v")
        m, f = v.split("=", 1)
        m = m.strip()
        if m not in MODALITIES:
            raise MmesidError(f"--emb {v!r}: unknown modality {m!r} (expected one of c, t, v)")
        if m in out:
            raise MmesidError(f"--emb: modality {m!r} given twice")
        out[m] = f
    if not out:
        raise MmesidError("at least one --emb MODALITY=FILE is required")
    return {m: out[m] for m in MODALITIES if m in out}


def load_modalities(files: dict[str, str]) -> dict[str, ItemEmbedding]:
    """Load every modality and check that they describe the same items."""
    embs = {m: load_item_embedding(f) for m, f in files.items()}
    sizes = {m: e.n_items for m, e in embs.items()}
    if len(set(sizes.values())) > 1:
        desc = ", ".join(f"{m}: {n} items ({embs[m].path})" for m, n in sizes.items())
        raise MmesidError(f"embedding tables disagree on the number of items: {desc}")
    return embs
