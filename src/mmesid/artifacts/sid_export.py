"""The semantic-ID export of a trained MM-RQ-VAE: the one writer and the one reader.

Folder layout:

    semantic_ids.safetensors  sid.<m>       int64   [n_items + 1, L]   row 0 (and items without an
                                                                       embedding in m) = -1
    codebooks.safetensors     codebook.<m>  float32 [L, S, d_latent]   (S = largest level size;
                                                                       smaller levels zero-padded)
    embeddings.safetensors    z.<m>, z_hat.<m>, s_hat.<m> float32 [n_items + 1, .]  and mask.<m> uint8
    stats.json                per modality: codebook usage and perplexity per level, collisions;
                              `kind` = "sid-export", `n_items`, `data_fingerprint`
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import MmesidError
from ..io import load_tensors, read_json, save_tensors, write_json
from .embeddings import MODALITIES, check_fingerprint
from .outputs import replace_dir

KIND = "sid-export"


@dataclass
class SIDExport:
    """A loaded export folder."""

    sids: dict[str, torch.Tensor]  # m -> int64 [n_items + 1, L]
    codebooks: dict[str, torch.Tensor]  # m -> float32 [L, S, d]
    stats: dict
    path: str = ""

    @property
    def modalities(self) -> list[str]:
        return list(self.sids)

    @property
    def fingerprint(self) -> str | None:
        return self.stats.get("data_fingerprint") or None

    def quantized(self, m: str) -> torch.Tensor:
        """z_hat[i] = sum_l codebook[l, sid[i, l]] (zeros for rows whose SID is -1)."""
        sid, cb = self.sids[m], self.codebooks[m]
        out = torch.zeros(sid.shape[0], cb.shape[2])
        valid = (sid >= 0).all(1)
        for level in range(cb.shape[0]):
            out[valid] += cb[level, sid[valid, level]]
        return out


def write_sid_export(out_dir: str | Path, sids: dict[str, torch.Tensor], codebooks: dict[str, torch.Tensor],
                     tables: dict[str, dict[str, torch.Tensor]], stats: dict, *,
                     data_fingerprint: str | None, inputs: list[Path] = (), overwrite: bool = True) -> Path:
    """Write the folder atomically; `out_dir` may only replace an earlier export (never a run or data)."""
    n_items = int(next(iter(sids.values())).shape[0] - 1)
    stats = {**stats, "kind": KIND, "n_items": n_items, "data_fingerprint": data_fingerprint}
    meta = {"modalities": ",".join(sids), "n_items": str(n_items), "data_fingerprint": data_fingerprint or ""}
    embs = {}
    for m, t in tables.items():
        for k in ("z", "z_hat", "s_hat"):
            embs[f"{k}.{m}"] = t[k].float()
        embs[f"mask.{m}"] = t["mask"].to(torch.uint8)
    with replace_dir(out_dir, KIND, inputs=inputs, overwrite=overwrite) as tmp:
        save_tensors(tmp / "semantic_ids.safetensors", {f"sid.{m}": s.long() for m, s in sids.items()}, meta)
        save_tensors(tmp / "codebooks.safetensors", {f"codebook.{m}": c.float() for m, c in codebooks.items()},
                     meta)
        save_tensors(tmp / "embeddings.safetensors", embs, meta)
        write_json(tmp / "stats.json", stats)
    return Path(out_dir)


def load_sid_export(folder: str | Path, *, n_items: int | None = None,
                    fingerprint: str | None = None) -> SIDExport:
    """Read and check an export folder (shapes, code ranges, item count, dataset fingerprint)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MmesidError(f"{folder}: quantiser export folder not found")
    sid_t, _ = load_tensors(folder / "semantic_ids.safetensors")
    cb_t, _ = load_tensors(folder / "codebooks.safetensors")
    stats = read_json(folder / "stats.json") if (folder / "stats.json").exists() else {}
    if not isinstance(stats, dict):
        raise MmesidError(f"{folder / 'stats.json'}: expected a JSON object")
    sids = {k.split(".", 1)[1]: v for k, v in sid_t.items() if k.startswith("sid.")}
    books = {k.split(".", 1)[1]: v for k, v in cb_t.items() if k.startswith("codebook.")}
    if not sids:
        raise MmesidError(f"{folder}: no sid.c / sid.t / sid.v in semantic_ids.safetensors")
    if set(sids) != set(books):
        raise MmesidError(f"{folder}: semantic_ids and codebooks name different modalities "
                          f"({sorted(sids)} vs {sorted(books)})")
    for m in sids:
        where = folder / "semantic_ids.safetensors"
        if m not in MODALITIES:
            raise MmesidError(f"{where}: unknown modality sid.{m}")
        s, cb = sids[m], books[m]
        if s.dtype != torch.int64 or s.ndim != 2:
            raise MmesidError(f"{where}: sid.{m} must be int64 [n_items + 1, L], got {s.dtype} {list(s.shape)}")
        if n_items is not None and s.shape[0] != n_items + 1:
            raise MmesidError(f"{where}: sid.{m} has {s.shape[0]} rows, the dataset needs {n_items + 1}")
        if cb.ndim != 3 or cb.shape[0] != s.shape[1] or not cb.dtype.is_floating_point:
            raise MmesidError(f"{folder / 'codebooks.safetensors'}: codebook.{m} must be float [L, S, d] "
                              f"with L = {s.shape[1]}, got {list(cb.shape)}")
        if int(s.max()) >= cb.shape[1] or int(s[1:].min()) < -1:
            raise MmesidError(f"{where}: sid.{m} holds codes outside -1..{cb.shape[1] - 1}")
        if not torch.isfinite(cb).all():
            raise MmesidError(f"{folder / 'codebooks.safetensors'}: codebook.{m} has non-finite values")
        books[m] = cb.float()
    check_fingerprint(folder, stats.get("data_fingerprint"), fingerprint)
    return SIDExport(sids, books, stats, str(folder))
