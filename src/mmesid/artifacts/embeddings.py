"""Item-embedding files (E_c, E_t, E_v and every exported table): the one reader and the one writer.

Format: safetensors with key `embedding` float32 [n_items + 1, d] (row 0 = padding, never used),
key `mask` uint8 [n_items + 1] (1 = the item has a real embedding), metadata strings `modality`,
`encoder`, `dim`, `n_items` and `data_fingerprint` (the prepared dataset it was made from).
Read-only extras: `FILE:KEY` picks another tensor of a safetensors file (an export's `z_hat.c`, with
`mask.c`), and a plain `.npy` float matrix (no mask, no fingerprint) is accepted as input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import MmesidError
from ..io import load_npy, load_tensors, save_tensors

MODALITIES = ("c", "t", "v")
MODALITY_NAMES = {"c": "collaborative", "t": "text", "v": "visual"}


@dataclass
class ItemEmbedding:
    """An item-aligned table: `table[i]` is item i (row 0 padding), `mask[i]` whether it is real."""

    table: torch.Tensor  # float32 [n_items + 1, d]
    mask: torch.Tensor  # bool [n_items + 1], mask[0] = False
    path: str = ""
    key: str = "embedding"
    meta: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return self.table.shape[0] - 1

    @property
    def dim(self) -> int:
        return self.table.shape[1]

    @property
    def fingerprint(self) -> str | None:
        return self.meta.get("data_fingerprint") or None


def split_file_key(spec: str, default_key: str = "embedding") -> tuple[Path, str]:
    """`FILE` or `FILE:KEY` (KEY selects a tensor of a safetensors file)."""
    if Path(spec).exists() or ":" not in spec:
        return Path(spec), default_key
    path, key = spec.rsplit(":", 1)
    return Path(path), key or default_key


def _read_raw(path: Path, key: str) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    if path.is_dir():
        raise MmesidError(f"{path}: is a folder, expected an embedding file (.safetensors or .npy)")
    if path.suffix == ".npy":
        arr = load_npy(path)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if not np.issubdtype(arr.dtype, np.floating):
            raise MmesidError(f"{path}: must hold a float matrix, got dtype {arr.dtype}")
        return torch.from_numpy(np.ascontiguousarray(arr)), None, {}
    if path.suffix in (".npz", ".pt", ".pth", ".pkl", ".pickle"):
        raise MmesidError(f"{path}: unsupported format {path.suffix!r}; use .safetensors or .npy "
                          "(files that need unpickling are never read)")
    tensors, meta = load_tensors(path)
    if key not in tensors:
        raise MmesidError(f"{path}: no tensor '{key}' (keys: {', '.join(sorted(tensors)) or 'none'})")
    mask = None
    if key == "embedding" and "mask" in tensors:
        mask = tensors["mask"]
    elif "." in key:  # exported tables such as `z_hat.c` come with `mask.c`
        mask = tensors.get("mask." + key.rsplit(".", 1)[1])
    return tensors[key], mask, meta


def read_item_embedding(spec: str | Path, *, n_items: int | None = None,
                        fingerprint: str | None = None) -> ItemEmbedding:
    """Read `FILE[:KEY]`; checks shape, dtype, finiteness of used rows, and optionally the item count
    and the dataset fingerprint (a file made from another dataset is refused, naming both)."""
    path, key = split_file_key(str(spec))
    if not path.exists():
        raise MmesidError(f"{path}: embedding file not found")
    table, mask, meta = _read_raw(path, key)
    if table.ndim != 2:
        raise MmesidError(f"{path}: '{key}' must be a 2-D table [n_items + 1, d], got shape {tuple(table.shape)}")
    if not table.dtype.is_floating_point:
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
    emb = ItemEmbedding(table, mask, str(path), key, dict(meta))
    if n_items is not None and emb.n_items != n_items:
        raise MmesidError(f"{path}: {emb.n_items} items ([{n1}, {emb.dim}]), but the dataset has {n_items} "
                          f"(expected {n_items + 1} rows, row 0 padding)")
    check_fingerprint(path, emb.fingerprint, fingerprint)
    return emb


def check_fingerprint(path, found: str | None, expected: str | None) -> None:
    """Refuse an artefact made from another dataset; artefacts without a fingerprint pass."""
    if expected and found and found != expected:
        raise MmesidError(f"{path}: made from another dataset (data fingerprint {found}, this dataset "
                          f"{expected}); re-create it from this dataset")


def write_item_embedding(out: str | Path, table: torch.Tensor, mask: torch.Tensor | None = None, *,
                         modality: str, encoder: str, data_fingerprint: str | None = None,
                         extra: dict[str, str] | None = None) -> Path:
    """Write an item-embedding file atomically (row 0 zeroed, mask row 0 = 0)."""
    table = table.detach().float().cpu().clone()
    table[0] = 0
    mask = torch.ones(table.shape[0], dtype=torch.bool) if mask is None else mask.detach().bool().cpu().clone()
    mask[0] = False
    n_items = table.shape[0] - 1
    meta = {"modality": modality, "encoder": encoder, "dim": str(table.shape[1]), "n_items": str(n_items),
            "n_missing": str(int(n_items - int(mask[1:].sum())))}
    if data_fingerprint:
        meta["data_fingerprint"] = data_fingerprint
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    save_tensors(out, {"embedding": table.contiguous(), "mask": mask.to(torch.uint8)}, meta)
    return Path(out)


def write_item_tables(out: str | Path, tables: dict[str, tuple[torch.Tensor, torch.Tensor]], *,
                      data_fingerprint: str | None = None, note: str = "") -> Path:
    """Several item-aligned tables in one file: key `<name>.<m>` with mask `mask.<m>` for each
    (name, m) in `tables` {"<name>.<m>": (table, mask)}; read back one at a time as `FILE:<name>.<m>`."""
    tensors, n_items = {}, None
    for key, (table, mask) in tables.items():
        if "." not in key:
            raise ValueError(f"table key {key!r} must be '<name>.<modality>'")
        table = table.detach().float().cpu().clone()
        table[0] = 0
        mask = mask.detach().bool().cpu().clone()
        mask[0] = False
        tensors[key] = table.contiguous()
        tensors["mask." + key.rsplit(".", 1)[1]] = mask.to(torch.uint8)
        n_items = table.shape[0] - 1
    meta = {"n_items": str(n_items), "note": note}
    if data_fingerprint:
        meta["data_fingerprint"] = data_fingerprint
    save_tensors(out, tensors, meta)
    return Path(out)


def parse_emb_args(values: list[str], *, must_exist: bool = True) -> dict[str, str]:
    """`--emb M=FILE` values -> {modality: FILE} in c, t, v order; every mistake named."""
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
        path, _ = split_file_key(f)
        if must_exist and not path.exists():
            raise MmesidError(f"--emb {m}={f}: file not found")
        out[m] = str(Path(f).resolve()) if Path(f).exists() else f
    return {m: out[m] for m in MODALITIES if m in out}


def read_modalities(files: dict[str, str], *, n_items: int | None = None,
                    fingerprint: str | None = None) -> dict[str, ItemEmbedding]:
    """Read every modality and check that they describe the same items of the same dataset."""
    if not files:
        raise MmesidError("at least one --emb MODALITY=FILE is required")
    embs = {m: read_item_embedding(f, n_items=n_items, fingerprint=fingerprint) for m, f in files.items()}
    sizes = {m: e.n_items for m, e in embs.items()}
    if len(set(sizes.values())) > 1:
        desc = ", ".join(f"{m}: {n} items ({embs[m].path})" for m, n in sizes.items())
        raise MmesidError(f"embedding tables disagree on the number of items: {desc}")
    prints = {e.fingerprint for e in embs.values() if e.fingerprint}
    if len(prints) > 1:
        desc = ", ".join(f"{m}: {e.fingerprint} ({e.path})" for m, e in embs.items() if e.fingerprint)
        raise MmesidError(f"embedding tables come from different datasets: {desc}")
    return embs


def common_fingerprint(embs: dict[str, ItemEmbedding]) -> str | None:
    """The dataset fingerprint the tables share (None when none of them records one)."""
    return next((e.fingerprint for e in embs.values() if e.fingerprint), None)
