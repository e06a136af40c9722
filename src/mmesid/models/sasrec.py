"""SASRec (Kang & McAuley, 2018): a causal self-attention model over item ids.

Here it plays two roles: the collaborative encoder of MME-SID's Stage 1 (its item table is E_c) and
the SASRec baseline. The block layout follows RecBole's implementation (post-LayerNorm, GELU FFN),
which is the usual reference for this baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import bounded
from ..errors import ConfigError


@dataclass
class SASRecConfig:
    hidden: int = bounded(64, ge=1)
    layers: int = bounded(2, ge=1)
    heads: int = bounded(2, ge=1)
    inner: int = bounded(256, ge=1)
    dropout: float = bounded(0.5, ge=0.0, lt=1.0)
    attn_dropout: float = bounded(0.5, ge=0.0, lt=1.0)
    max_len: int = bounded(50, ge=1)
    init_std: float = bounded(0.02, gt=0.0)

    def validate(self):
        if self.hidden % self.heads:
            raise ConfigError(f"model.hidden ({self.hidden}) must be divisible by model.heads ({self.heads})")


class Block(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.hidden)
        self.ln1 = nn.LayerNorm(cfg.hidden, eps=1e-12)
        self.ff = nn.Sequential(nn.Linear(cfg.hidden, cfg.inner), nn.GELU(), nn.Linear(cfg.inner, cfg.hidden))
        self.ln2 = nn.LayerNorm(cfg.hidden, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.attn_dropout = cfg.attn_dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        a = self.out(a.transpose(1, 2).reshape(B, T, D))
        x = self.ln1(x + self.drop(a))
        return self.ln2(x + self.drop(self.ff(x)))


class SASRec(nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig):
        super().__init__()
        self.cfg = cfg
        self.n_items = n_items
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.ln = nn.LayerNorm(cfg.hidden, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.apply(self._init)

    def _init(self, m: nn.Module):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=self.cfg.init_std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()

    def hidden_states(self, seq: torch.Tensor) -> torch.Tensor:
        """[B, T] left-padded item ids -> [B, T, D]; position t sees items 0..t only."""
        T = seq.shape[1]
        if T > self.cfg.max_len:
            seq, T = seq[:, -self.cfg.max_len:], self.cfg.max_len
        # positions count from the right so the last item always gets the same position embedding
        pos = torch.arange(T - 1, -1, -1, device=seq.device)
        pos = (self.cfg.max_len - 1 - pos).clamp(min=0)
        x = self.drop(self.ln(self.embed_items(seq) + self.pos_emb(pos)[None]))
        valid = seq > 0
        causal = torch.ones(T, T, dtype=torch.bool, device=seq.device).tril()
        eye = torch.eye(T, dtype=torch.bool, device=seq.device)
        mask = (causal[None] & (valid[:, None, :] | eye[None]))[:, None]  # [B, 1, T, T]
        for blk in self.blocks:
            x = blk(x, mask)
        return x

    def embed_items(self, seq: torch.Tensor) -> torch.Tensor:
        """Input embeddings of item ids (a subclass may build them from item features)."""
        return self.item_emb(seq)

    def item_table(self) -> torch.Tensor:
        """Every item's embedding [n_items + 1, D], the output side of the tied item representation."""
        return self.item_emb.weight

    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        """Scores of every item id for the next position: [B, n_items + 1]."""
        h = self.hidden_states(histories)[:, -1]
        return h @ self.item_table().T

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Softmax cross-entropy over all items at every non-padded position."""
        h = self.hidden_states(inputs)
        keep = targets > 0
        logits = h[keep] @ self.item_table().T
        return F.cross_entropy(logits, targets[keep])
