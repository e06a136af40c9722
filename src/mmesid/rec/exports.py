"""What a fine-tuning run leaves for the analyses: the LLM's item inputs, E_x, the tuned SID tables.

All three are item-aligned tables in the project's embedding format (row 0 padding), stamped with
the dataset fingerprint, so `mmesid analyze` reads them like any other embedding file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..artifacts.embeddings import write_item_embedding, write_item_tables
from .model import LLMRecommender

INPUTS = "item_input_embeddings.safetensors"
TARGETS = "target_embeddings.safetensors"
SIDS = "sid_embeddings.safetensors"


@torch.no_grad()
def export_embeddings(model: LLMRecommender, folder: str | Path, variant: str,
                      data_fingerprint: str | None) -> list[Path]:
    """History-item input embeddings of all items, E_x, and the fine-tuned quantised embeddings."""
    folder = Path(folder)
    was_training = model.training
    model.eval()
    x = model.inputs.all_items().float().cpu()  # [n+1, span, D]
    x = x[:, 0] if x.shape[1] == 1 else x.flatten(1)  # concat: the item's span side by side
    encoder = f"finetune:{variant}"
    out = [write_item_embedding(folder / INPUTS, x, modality="llm-input", encoder=encoder,
                                data_fingerprint=data_fingerprint),
           write_item_embedding(folder / TARGETS, model.E_x, modality="llm-target", encoder=encoder,
                                data_fingerprint=data_fingerprint)]
    if len(model.inputs.sid):
        out.append(_export_sid_tables(model, folder / SIDS, data_fingerprint))
    model.train(was_training)
    return out


def _export_sid_tables(model: LLMRecommender, path: Path, data_fingerprint: str | None) -> Path:
    """`quantised.<m>` (sum of the item's tuned SID embeddings, latent space) with `mask.<m>`, one
    file for all modalities: read as `sid_embeddings.safetensors:quantised.c` (FILE:KEY)."""
    ids = torch.arange(model.inputs.n_rows, device=model.E_x.device)
    tables = {f"quantised.{j}": (m.quantised(ids), m.valid.flatten()) for j, m in model.inputs.sid.items()}
    write_item_tables(path, tables, data_fingerprint=data_fingerprint,
                      note="sum of the fine-tuned SID embeddings per item, latent space")
    return path
