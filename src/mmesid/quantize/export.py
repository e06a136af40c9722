"""Export of a trained MM-RQ-VAE: semantic IDs, codebooks, statistics, embeddings for analysis.

Folder layout (docs/DEVELOPING.md):

    semantic_ids.safetensors  sid.<m>       int64   [n_items + 1, L]   row 0 (and items without an
                                                                       embedding in m) = -1
    codebooks.safetensors     codebook.<m>  float32 [L, S, d_latent]   (S = largest level size;
                                                                       smaller levels zero-padded)
    embeddings.safetensors    z.<m>, z_hat.<m>, s_hat.<m> float32 [n_items + 1, .]  and mask.<m> uint8
                              (z: encoder output, z_hat = sum_l codebook[l, sid[l]], s_hat: decoded z_hat
                              in the input's scale; row 0 zeros)
    stats.json                per modality: codebook usage and perplexity per level, collisions
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import MmesidError
from ..io import atomic_dir, load_tensors, read_json, save_tensors, write_json
from .embeddings import MODALITY_NAMES
from .rq import codebook_stats


@torch.no_grad()
def encode_items(model, tables: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                 batch_size: int = 4096) -> dict[str, dict[str, torch.Tensor]]:
    """Nearest-code SIDs and embeddings of every item, per modality (rows without embedding: -1 / 0)."""
    model.eval()
    out = {}
    for m in model.modalities:
        vae = model.vaes[m]
        n1 = tables[m].shape[0]
        L = vae.quantizer.levels
        codes = torch.full((n1, L), -1, dtype=torch.long)
        z_all = torch.zeros(n1, vae.quantizer.dim)
        zh_all = torch.zeros(n1, vae.quantizer.dim)
        sh_all = torch.zeros(n1, vae.in_dim)
        idx = torch.nonzero(masks[m]).flatten()
        for lo in range(0, len(idx), batch_size):
            b = idx[lo:lo + batch_size]
            z = vae.encoder(vae.normalize(tables[m][b]))
            c, z_hat, _ = vae.quantizer.encode(z)
            codes[b] = c
            z_all[b] = z
            zh_all[b] = z_hat
            sh_all[b] = vae.denormalize(vae.decoder(z_hat))
        out[m] = {"codes": codes, "z": z_all, "z_hat": zh_all, "s_hat": sh_all, "mask": masks[m].clone()}
    return out


def export_model(model, tables: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], out_dir: Path,
                 extra_stats: dict | None = None, overwrite: bool = True) -> dict:
    """Write the export folder for `model`; returns the stats written to stats.json."""
    enc = encode_items(model, tables, masks)
    sids, books, embs = {}, {}, {}
    stats = {"n_items": int(next(iter(tables.values())).shape[0] - 1), "modalities": {}}
    for m, e in enc.items():
        q = model.vaes[m].quantizer
        sizes = q.sizes
        S = max(sizes)
        cb = torch.zeros(q.levels, S, q.dim)
        for level, c in enumerate(q.codebooks):
            cb[level, : c.shape[0]] = c.detach().float()
        sids[f"sid.{m}"] = e["codes"]
        books[f"codebook.{m}"] = cb
        for k in ("z", "z_hat", "s_hat"):
            embs[f"{k}.{m}"] = e[k].float()
        embs[f"mask.{m}"] = e["mask"].to(torch.uint8)
        valid = e["mask"].numpy()
        st = codebook_stats(e["codes"].numpy()[valid], sizes)
        st["modality"] = MODALITY_NAMES[m]
        st["items_without_embedding"] = int((~e["mask"][1:]).sum())
        st["codebook_sizes"] = sizes
        st["latent_dim"] = q.dim
        stats["modalities"][m] = st
    if extra_stats:
        stats.update(extra_stats)
    meta = {"modalities": ",".join(enc), "n_items": stats["n_items"]}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        save_tensors(tmp / "semantic_ids.safetensors", sids, metadata=meta)
        save_tensors(tmp / "codebooks.safetensors", books, metadata=meta)
        save_tensors(tmp / "embeddings.safetensors", embs, metadata=meta)
        write_json(tmp / "stats.json", stats)
    return stats


@dataclass
class QuantizerExport:
    """A loaded export folder."""

    sids: dict[str, torch.Tensor]  # m -> int64 [n_items + 1, L]
    codebooks: dict[str, torch.Tensor]  # m -> float32 [L, S, d]
    stats: dict

    @property
    def modalities(self) -> list[str]:
        return list(self.sids)

    def quantized(self, m: str) -> torch.Tensor:
        """z_hat[i] = sum_l codebook[l, sid[i, l]] (zeros for rows whose SID is -1)."""
        sid, cb = self.sids[m], self.codebooks[m]
        out = torch.zeros(sid.shape[0], cb.shape[2])
        valid = (sid >= 0).all(1)
        for level in range(cb.shape[0]):
            out[valid] += cb[level, sid[valid, level]]
        return out


def load_export(folder: str | Path) -> QuantizerExport:
    folder = Path(folder)
    if not folder.is_dir():
        raise MmesidError(f"{folder}: quantiser export folder not found")
    sid_t, _ = load_tensors(folder / "semantic_ids.safetensors")
    cb_t, _ = load_tensors(folder / "codebooks.safetensors")
    stats = read_json(folder / "stats.json")
    sids = {k.split(".", 1)[1]: v for k, v in sid_t.items() if k.startswith("sid.")}
    books = {k.split(".", 1)[1]: v for k, v in cb_t.items() if k.startswith("codebook.")}
    if set(sids) != set(books):
        raise MmesidError(f"{folder}: semantic_ids and codebooks name different modalities "
                          f"({sorted(sids)} vs {sorted(books)})")
    for m in sids:
        if sids[m].dtype != torch.int64 or sids[m].ndim != 2:
            raise MmesidError(f"{folder}: sid.{m} must be int64 [n_items + 1, L]")
        if books[m].ndim != 3 or books[m].shape[0] != sids[m].shape[1]:
            raise MmesidError(f"{folder}: codebook.{m} must be [L, S, d] with L = {sids[m].shape[1]}")
        if int(sids[m].max()) >= books[m].shape[1]:
            raise MmesidError(f"{folder}: sid.{m} refers to code {int(sids[m].max())} >= S = {books[m].shape[1]}")
    return QuantizerExport(sids, books, stats)


def sid_tuples_unique_fraction(sid: np.ndarray) -> float:
    valid = (sid >= 0).all(1)
    v = sid[valid]
    return float(len(np.unique(v, axis=0)) / max(1, len(v)))
