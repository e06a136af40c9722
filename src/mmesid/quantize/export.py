"""What a trained MM-RQ-VAE exports: every item's semantic ID, z, z_hat and s_hat, the padded
codebooks and their statistics. Writing and reading the folder belong to `artifacts.sid_export`
(layout described there); this module only computes its contents.
"""

from __future__ import annotations

import torch

from ..artifacts.embeddings import MODALITY_NAMES
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


def padded_codebooks(quantizer) -> torch.Tensor:
    """float32 [L, S, d] with S the largest level size; smaller levels are zero-padded."""
    cb = torch.zeros(quantizer.levels, max(quantizer.sizes), quantizer.dim)
    for level, c in enumerate(quantizer.codebooks):
        cb[level, : c.shape[0]] = c.detach().float().cpu()
    return cb


def export_contents(model, tables: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
                    ) -> tuple[dict, dict, dict, dict]:
    """(sids, codebooks, per-modality tables z / z_hat / s_hat / mask, stats) for `write_sid_export`."""
    enc = encode_items(model, tables, masks)
    sids, books, out_tables, stats = {}, {}, {}, {"modalities": {}}
    for m, e in enc.items():
        q = model.vaes[m].quantizer
        sids[m] = e["codes"]
        books[m] = padded_codebooks(q)
        out_tables[m] = {k: e[k] for k in ("z", "z_hat", "s_hat", "mask")}
        st = codebook_stats(e["codes"].numpy()[e["mask"].numpy()], q.sizes)
        st["modality"] = MODALITY_NAMES[m]
        st["items_without_embedding"] = int((~e["mask"][1:]).sum())
        st["codebook_sizes"] = list(q.sizes)
        st["latent_dim"] = q.dim
        stats["modalities"][m] = st
    return sids, books, out_tables, stats
