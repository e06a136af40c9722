"""Tiny synthetic inputs for the fine-tuning tests: a random Llama, item embeddings, a quantiser export.

Nothing here is downloaded: the tiny Llama reuses the offline MiniLM tokenizer (with a small chat
template, so the chat-template prompt path is exercised too). Files are written by the artefact
owners (`write_item_embedding`, `write_sid_export`), so the tests read exactly the real format.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mmesid.artifacts.embeddings import MODALITY_NAMES, write_item_embedding
from mmesid.artifacts.sid_export import write_sid_export
from mmesid.rec.backbone import default_backbone_path

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def tiny_llama(folder: str | Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer LlamaModel plus a tokenizer with a chat template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    folder = Path(folder)
    tok = AutoTokenizer.from_pretrained(default_backbone_path())
    tok.chat_template = CHAT_TEMPLATE
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    LlamaModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def random_embeddings(folder: str | Path, n_items: int, dims: dict[str, int], seed: int = 0,
                      fingerprint: str | None = None) -> dict[str, str]:
    """E_j files in the project's embedding format (row 0 zeros); returns {modality: path}."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for j, d in dims.items():
        e = torch.randn(n_items + 1, d, generator=g)
        p = Path(folder) / f"E_{j}.safetensors"
        write_item_embedding(p, e, modality=MODALITY_NAMES[j], encoder="random", data_fingerprint=fingerprint)
        out[j] = str(p)
    return out


def fake_export(folder: str | Path, n_items: int, modalities=("c", "t"), levels: int = 3, codes: int = 8,
                d_latent: int = 16, seed: int = 0, fingerprint: str | None = None) -> Path:
    """A quantiser export in the exact on-disk format (random SIDs and codebooks)."""
    g = torch.Generator().manual_seed(seed)
    sids, books, tables = {}, {}, {}
    for j in modalities:
        s = torch.randint(0, codes, (n_items + 1, levels), generator=g)
        s[0] = -1
        sids[j] = s.long()
        books[j] = torch.randn(levels, codes, d_latent, generator=g)
    for j in modalities:
        z = torch.zeros(n_items + 1, d_latent)
        tables[j] = {"z": z, "z_hat": z.clone(), "s_hat": z.clone(),
                     "mask": torch.ones(n_items + 1, dtype=torch.bool)}
    return write_sid_export(folder, sids, books, tables, {}, data_fingerprint=fingerprint)
