"""History-item inputs: how one item becomes the LLM input embedding(s), for every variant.

All variants share the same parts (frozen original embeddings E_j with a trainable projection
W_j * SG(E_j) + b_j, semantic-ID tables, random item tables, an MLP to the hidden size) and differ
only in which parts they combine (SPEC.md, paper Table 2 and Sec. 5.6):

  mme-sid         MLP([P_j(E_j), sum_l E_SID_j^l] for j)     SID tables from the MM-RQ-VAE codebooks
  mme-sid-random  same, SID tables randomly initialised
  se-sid          same, collaborative modality only (SE-SID-MMD / -MSE: pick the quantiser export)
  mme-random      MLP([P_j(E_j), R_j[item]] for j)            R_j: random item tables, SID-sized
  se-random       R[item]                                     a random item table only
  e4srec          P_c(E_c)
  me              MLP([P_c(E_c), E'_c[item]])                  E'_c: a new random item table
  concat          P_c(E_c), P_t(E_t), P_v(E_v) as consecutive input embeddings (span = #modalities)
  concat-mlp      MLP([P_j(E_j) for j])
  ctrl-mm         as concat-mlp, plus InfoNCE aligning P_c(E_c) with P_t(E_t) and P_v(E_v)

The MLP is the authors' k*D -> (k/2)*D -> D with GELU after each layer (6D -> 3D -> D for MME-SID).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MmesidError


@dataclass(frozen=True)
class VariantSpec:
    """Which parts a variant uses."""

    original: bool  # P_j(E_j) in the input
    extra: str  # "sid" | "random-item" | "none"
    sid_init: str  # "codebook" | "random" (only for extra == "sid")
    mlp: bool  # combine through the MLP (else: single embedding, or a span for concat)
    collaborative_only: bool
    fusion: bool  # default of the frequency-aware fusion
    contrastive: bool = False
    needs_sids: bool = False


VARIANTS = {
    "mme-sid": VariantSpec(True, "sid", "codebook", True, False, True, needs_sids=True),
    "mme-sid-random": VariantSpec(True, "sid", "random", True, False, True, needs_sids=True),
    "se-sid": VariantSpec(True, "sid", "codebook", True, True, True, needs_sids=True),
    "mme-random": VariantSpec(True, "random-item", "", True, False, True),
    "se-random": VariantSpec(False, "random-item", "", False, True, True),
    "e4srec": VariantSpec(True, "none", "", False, True, False),
    "me": VariantSpec(True, "random-item", "", True, True, False),
    "concat": VariantSpec(True, "none", "", False, False, False),
    "concat-mlp": VariantSpec(True, "none", "", True, False, False),
    "ctrl-mm": VariantSpec(True, "none", "", True, False, False, contrastive=True),
}


def _mlp(d_in: int, d_out: int) -> nn.Sequential:
    mid = max(d_out, d_in // 2)
    return nn.Sequential(nn.Linear(d_in, mid), nn.GELU(), nn.Linear(mid, d_out), nn.GELU())


def semi_orthogonal(d_in: int, d_out: int, scale: float, generator: torch.Generator) -> torch.Tensor:
    """A [d_out, d_in] matrix with orthonormal columns (or rows) times `scale`: an isometry up to scale."""
    a = torch.randn(max(d_in, d_out), min(d_in, d_out), generator=generator)
    q, _ = torch.linalg.qr(a)
    w = q if d_out >= d_in else q.T
    return w * scale


class SIDEmbedding(nn.Module):
    """sum_l E_SID^l[SID^l(item)] for one modality; tables [L, S, d] initialised from the codebooks.

    If d (the MM-RQ-VAE latent size) differs from the LLM hidden size D, a trainable linear map
    d -> D follows, initialised as a scaled semi-orthogonal matrix: at initialisation it preserves
    all distances between quantised embeddings (up to one scale), so the codebook geometry reaches
    the LLM intact; the scale matches the typical norm of the other inputs (see ItemInputs).
    """

    def __init__(self, sids: torch.Tensor, codebook: torch.Tensor, hidden: int, init: str,
                 projection: str, generator: torch.Generator):
        super().__init__()
        L, S, d = codebook.shape
        if sids.shape[1] != L:
            raise MmesidError(f"semantic IDs have {sids.shape[1]} levels but the codebook has {L}")
        if int(sids[1:].max()) >= S or int(sids[1:].min()) < -1:  # -1: the item has no embedding in m
            raise MmesidError(f"semantic IDs outside -1..{S - 1}")
        self.register_buffer("sids", sids.clamp_min(0).long(), persistent=False)
        self.register_buffer("valid", (sids >= 0).all(1, keepdim=True).float(), persistent=False)
        if init == "codebook":
            table = codebook.clone().float()
        else:
            std = float(codebook.float().std()) or 1.0  # same scale, no information
            table = torch.randn(L, S, d, generator=generator) * std
        self.table = nn.Parameter(table)
        self.levels = L
        if d != hidden:
            self.proj = nn.Linear(d, hidden, bias=False)
            if projection == "orthogonal":
                with torch.no_grad():
                    self.proj.weight.copy_(semi_orthogonal(d, hidden, 1.0, generator))
        else:
            self.proj = None

    def quantised(self, ids: torch.Tensor) -> torch.Tensor:
        """Sum of the item's code embeddings in the latent space, [..., d]."""
        codes = self.sids[ids]  # [..., L]
        out = sum(self.table[l][codes[..., l]] for l in range(self.levels))
        return out * self.valid[ids]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        q = self.quantised(ids)
        return self.proj(q) if self.proj is not None else q


class ItemInputs(nn.Module):
    """Maps item ids to input embeddings [..., span, D] for one variant."""

    def __init__(self, variant: str, modalities: list[str], embeddings: dict[str, torch.Tensor],
                 hidden: int, sids: dict[str, torch.Tensor] | None = None,
                 codebooks: dict[str, torch.Tensor] | None = None, sid_projection: str = "orthogonal",
                 seed: int = 0):
        super().__init__()
        if variant not in VARIANTS:
            raise MmesidError(f"unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
        self.variant = variant
        self.spec = spec = VARIANTS[variant]
        self.modalities = list(modalities)
        self.hidden = hidden
        gen = torch.Generator().manual_seed(seed)
        n_rows = next(iter(embeddings.values())).shape[0]
        self.n_rows = n_rows
        # frozen original embeddings (SG) and their projections W_j, b_j
        self.proj = nn.ModuleDict()
        for j in self.modalities:
            self.register_buffer(f"E_{j}", embeddings[j].float(), persistent=False)
            self.proj[j] = nn.Linear(embeddings[j].shape[1], hidden)
        parts = 0
        self.sid = nn.ModuleDict()
        self.rand = nn.ParameterDict()
        if spec.original:
            parts += len(self.modalities)
        if spec.extra == "sid":
            for j in self.modalities:
                if sids is None or j not in sids or codebooks is None or j not in codebooks:
                    raise MmesidError(f"variant {variant!r} needs semantic IDs and a codebook for modality "
                                      f"{j!r} (sid.{j} / codebook.{j} in the quantiser export)")
                if sids[j].shape[0] != n_rows:
                    raise MmesidError(f"sid.{j} has {sids[j].shape[0]} rows, the embeddings {n_rows}")
                self.sid[j] = SIDEmbedding(sids[j], codebooks[j], hidden, spec.sid_init, sid_projection, gen)
            parts += len(self.modalities)
        elif spec.extra == "random-item":
            for j in self.modalities:
                # SID-sized when a codebook is known (MME-random: "same shapes"), else hidden-sized
                d = codebooks[j].shape[-1] if variant == "mme-random" and codebooks and j in codebooks else hidden
                t = torch.randn(n_rows, d, generator=gen) * 0.02
                t[0] = 0
                self.rand[j] = nn.Parameter(t)
                if d != hidden:
                    lin = nn.Linear(d, hidden, bias=False)
                    with torch.no_grad():
                        lin.weight.copy_(semi_orthogonal(d, hidden, 1.0, gen))
                    self.add_module(f"rand_proj_{j}", lin)
            parts += len(self.modalities)
        if spec.mlp:
            self.mlp = _mlp(parts * hidden, hidden)
            self.span = 1
        else:
            self.mlp = None
            self.span = parts if variant == "concat" else 1
            if variant != "concat" and parts != 1:
                raise MmesidError(f"variant {variant!r} takes exactly one modality, got {self.modalities}")

    def projected(self, j: str, ids: torch.Tensor | None = None) -> torch.Tensor:
        """P_j(E_j[ids]) = W_j * SG(E_j[ids]) + b_j (all items if ids is None)."""
        e = getattr(self, f"E_{j}")
        return self.proj[j](e if ids is None else e[ids])

    def _random_item(self, j: str, ids: torch.Tensor) -> torch.Tensor:
        x = self.rand[j][ids]
        lin = getattr(self, f"rand_proj_{j}", None)
        return lin(x) if lin is not None else x

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [...] -> [..., span, D]."""
        parts = []
        for j in self.modalities:
            if self.spec.original:
                parts.append(self.projected(j, ids))
            if self.spec.extra == "sid":
                parts.append(self.sid[j](ids))
            elif self.spec.extra == "random-item":
                parts.append(self._random_item(j, ids))
        if self.mlp is not None:
            return self.mlp(torch.cat(parts, -1)).unsqueeze(-2)
        return torch.stack(parts, -2)

    def contrastive_loss(self, ids: torch.Tensor, temperature: float) -> torch.Tensor:
        """CTRL-MM: InfoNCE between P_c(E_c) and P_t(E_t) / P_v(E_v) over the distinct items of a batch."""
        ids = torch.unique(ids[ids > 0])
        zero = torch.zeros((), device=ids.device)
        if "c" not in self.modalities or len(ids) < 2:
            return zero + sum(p.sum() * 0 for p in self.proj.parameters())
        c = F.normalize(self.projected("c", ids), dim=-1)
        loss = zero
        labels = torch.arange(len(ids), device=ids.device)
        for j in self.modalities:
            if j == "c":
                continue
            o = F.normalize(self.projected(j, ids), dim=-1)
            logits = c @ o.T / temperature
            loss = loss + 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        return loss

    @torch.no_grad()
    def all_items(self, batch: int = 4096) -> torch.Tensor:
        """Input embedding of every item [n_items + 1, span, D] (for the collapse analysis)."""
        ids = torch.arange(self.n_rows, device=self.proj[self.modalities[0]].weight.device)
        return torch.cat([self(ids[i:i + batch]) for i in range(0, len(ids), batch)])

