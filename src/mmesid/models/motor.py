"""MOTOR (Zhang et al. 2024, arXiv 2410.19276), as the paper's Table 3 uses it: SASRec without item IDs.

Each item is represented only by its semantic-ID tokens of the text and visual modalities (paper
Table 2: [SID_j^1..SID_j^L], j in {t, v}); every (modality, level, code) has a learnt token embedding,
and a token cross network combines an item's tokens into its embedding, used on both sides of SASRec
(inputs and the tied output table). Items that share tokens share parameters, so there is no per-item
table. The cross network here is a stack of DCN-v2 style cross layers over the concatenated token
embeddings (x_{l+1} = x_0 * (W_l x_l + b_l) + x_l), then a linear map to SASRec's size: our reading of
MOTOR's "token crossing"; MOTOR's own code was not available to compare with. MOTOR itself
quantises with product quantisation; here, as in the MME-SID paper, the tokens are the RQ-VAE's codes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import MmesidError
from .sasrec import SASRec, SASRecConfig


def item_tokens(sids: dict[str, torch.Tensor], modalities: list[str]) -> torch.Tensor:
    """[n_items + 1, K] token ids (0 = padding / no embedding in that modality), one vocabulary."""
    missing = [m for m in modalities if m not in sids]
    if missing:
        raise MmesidError(f"MOTOR: the SID export has no semantic IDs for modality {missing[0]!r} "
                          f"(it has {', '.join(sids)})")
    cols, offset = [], 1
    for m in modalities:
        s = sids[m].long()
        size = int(s[1:].max()) + 1
        for level in range(s.shape[1]):
            c = s[:, level]
            cols.append(torch.where(c >= 0, c + offset, torch.zeros_like(c)))
            offset += size
    tok = torch.stack(cols, 1)
    tok[0] = 0
    return tok


class TokenCross(nn.Module):
    def __init__(self, n_tokens: int, k: int, dim: int, out: int, layers: int):
        super().__init__()
        self.emb = nn.Embedding(n_tokens, dim, padding_idx=0)
        width = k * dim
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.proj = nn.Linear(width, out)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x0 = self.emb(tokens).flatten(-2)
        x = x0
        for lin in self.cross:
            x = x0 * lin(x) + x
        return self.proj(x)


class MOTOR(SASRec):
    def __init__(self, n_items: int, cfg: SASRecConfig, tokens: torch.Tensor, cross_layers: int = 2):
        super().__init__(n_items, cfg)
        del self.item_emb  # ID-free
        self.register_buffer("tokens", tokens, persistent=False)
        self.items = TokenCross(int(tokens.max()) + 1, tokens.shape[1], cfg.hidden, cfg.hidden, cross_layers)
        self.items.apply(self._init)  # small cross weights, zero biases: each cross layer starts near the identity

    def item_table(self) -> torch.Tensor:
        t = self.items(self.tokens)
        return torch.cat([torch.zeros_like(t[:1]), t[1:]])  # row 0 is padding

    def embed_items(self, seq: torch.Tensor) -> torch.Tensor:
        return self.items(self.tokens[seq]) * (seq > 0).unsqueeze(-1).to(self.pos_emb.weight.dtype)
