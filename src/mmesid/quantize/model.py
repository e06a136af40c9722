"""RQ-VAE (one modality) and MM-RQ-VAE (any subset of c, t, v), with the loss of eq. 11.

    L = recon_weight * sum_j L_recon(s_j, s_hat_j) + beta * L_align + gamma * sum_j L_RQ-VAE,j

L_recon is MSE, MMD^2, or `mse_weight * MSE + mmd_weight * MMD^2`; L_align = InfoNCE(z_hat_c, z_hat_t)
+ InfoNCE(z_hat_c, z_hat_v) over the items of the batch that have both embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config import bounded
from ..errors import ConfigError
from .losses import info_nce, mmd2, mse
from .rq import ResidualQuantizer


@dataclass
class RQVAEConfig:
    latent_dim: int = bounded(64, ge=1)  # authors: the LLM hidden size (4096)
    hidden: list[int] = field(default_factory=lambda: [256, 256])  # encoder widths; the decoder mirrors them
    codebook_sizes: list[int] = field(default_factory=lambda: [256, 256, 256, 256])  # one entry per level
    activation: Literal["relu", "gelu", "silu"] = "relu"
    dropout: float = bounded(0.0, ge=0.0, lt=1.0)
    standardize: bool = True  # centre each modality and divide by one global std (distance ranks unchanged)

    def validate(self) -> None:
        if not self.codebook_sizes or any(s < 1 for s in self.codebook_sizes):
            raise ConfigError("model.codebook_sizes: need at least one level, each size >= 1")
        if any(h < 1 for h in self.hidden):
            raise ConfigError("model.hidden: widths must be >= 1")


@dataclass
class LossConfig:
    recon: Literal["mse", "mmd", "mse+mmd"] = "mse"
    recon_weight: float = bounded(1.0, ge=0.0)
    mse_weight: float = bounded(1.0, ge=0.0)  # used by 'mse+mmd'
    mmd_weight: float = bounded(1.0, ge=0.0)  # used by 'mse+mmd'
    mmd_sigmas: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    mmd_bandwidth: Literal["median", "fixed"] = "median"  # sigmas relative to the batch's median distance
    mmd_estimator: Literal["unbiased", "biased"] = "unbiased"
    alpha: float = bounded(1.0, ge=0.0)  # commitment weight inside L_RQ-VAE (eq. 5)
    beta: float = bounded(1e-3, ge=0.0)  # alignment weight
    gamma: float = bounded(1.0, ge=0.0)  # L_RQ-VAE weight
    temperature: float = bounded(0.1, gt=0.0)  # InfoNCE temperature epsilon
    align_symmetric: bool = False
    # LETTER's tokenizer regularisers (off by default): collaborative = in-batch softmax over the dot
    # products of the quantised text latent z_hat_t with the items' collaborative embeddings (quantize
    # `cf_emb`); diversity = each level's chosen code pulled towards another code of its cluster
    cf_weight: float = bounded(0.0, ge=0.0)  # LETTER alpha
    diversity_weight: float = bounded(0.0, ge=0.0)  # LETTER beta
    diversity_clusters: int = bounded(10, ge=1)  # LETTER: 10 clusters per codebook

    def validate(self) -> None:
        if not self.mmd_sigmas or any(s <= 0 for s in self.mmd_sigmas):
            raise ConfigError("loss.mmd_sigmas: need at least one positive bandwidth")


_ACT = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def mlp(sizes: list[int], activation: str = "relu", dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(_ACT[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    """Encoder MLP s -> z, residual quantiser z -> z_hat, decoder MLP z_hat -> s_hat."""

    def __init__(self, in_dim: int, cfg: RQVAEConfig):
        super().__init__()
        self.in_dim = in_dim
        self.encoder = mlp([in_dim, *cfg.hidden, cfg.latent_dim], cfg.activation, cfg.dropout)
        self.quantizer = ResidualQuantizer(cfg.latent_dim, cfg.codebook_sizes)
        self.decoder = mlp([cfg.latent_dim, *reversed(cfg.hidden), in_dim], cfg.activation, cfg.dropout)
        # standardisation of the input (set from data by `fit_scaler`; identity by default)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(()))

    @torch.no_grad()
    def fit_scaler(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(0))
        self.scale.copy_((x - self.mean).pow(2).sum(1).mean().div(x.shape[1]).sqrt().clamp_min(1e-8))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.mean

    def forward(self, x_norm: torch.Tensor, alpha: float = 1.0, **assign_kw):
        z = self.encoder(x_norm)
        z_hat, codes, rq_loss = self.quantizer(z, alpha=alpha, **assign_kw)
        s_hat = self.decoder(z_hat)
        return {"z": z, "z_hat": z_hat, "codes": codes, "s_hat": s_hat, "rq_loss": rq_loss}


def collaborative_loss(z_hat: torch.Tensor, cf: torch.Tensor) -> torch.Tensor:
    """LETTER's collaborative regulariser: item i's quantised latent must pick out its own collaborative
    embedding among the batch's (softmax over raw dot products, as in LETTER's code)."""
    return F.cross_entropy(z_hat @ cf.T, torch.arange(len(z_hat), device=z_hat.device))


class MMRQVAE(nn.Module):
    """One RQ-VAE per modality (keys among 'c', 't', 'v'), trained jointly with eq. 11."""

    def __init__(self, in_dims: dict[str, int], cfg: RQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.modalities = list(in_dims)
        self.vaes = nn.ModuleDict({m: RQVAE(d, cfg) for m, d in in_dims.items()})

    def recon_loss(self, s: torch.Tensor, s_hat: torch.Tensor, lc: LossConfig) -> dict[str, torch.Tensor]:
        out = {}
        if lc.recon in ("mse", "mse+mmd"):
            out["mse"] = mse(s_hat, s)
        if lc.recon in ("mmd", "mse+mmd"):
            out["mmd"] = mmd2(s.detach(), s_hat, lc.mmd_sigmas, lc.mmd_estimator, lc.mmd_bandwidth)
        if lc.recon == "mse":
            out["recon"] = out["mse"]
        elif lc.recon == "mmd":
            out["recon"] = out["mmd"]
        else:
            out["recon"] = lc.mse_weight * out["mse"] + lc.mmd_weight * out["mmd"]
        return out

    def loss(self, xs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], lc: LossConfig,
             cf: torch.Tensor | None = None, diversity: dict[str, list[torch.Tensor]] | None = None,
             **assign_kw) -> tuple[torch.Tensor, dict[str, float], dict[str, dict]]:
        """xs[m]: normalised inputs [B, d_m] of one batch of items; masks[m]: bool [B] (real rows);
        cf: the batch's collaborative embeddings [B, latent] (LETTER); diversity: code clusters per level.

        Returns (total loss, scalar parts for logging, per-modality outputs on the valid rows).
        """
        outs, parts = {}, {}
        total = next(iter(xs.values())).new_zeros(())
        recon_sum = total
        rq_sum = total
        for m in self.modalities:
            x = xs[m][masks[m]]
            div = (diversity[m], lc.diversity_weight) if diversity and m in diversity else None
            o = self.vaes[m](x, alpha=lc.alpha, diversity=div, **assign_kw)
            r = self.recon_loss(x, o["s_hat"], lc)
            outs[m] = o
            recon_sum = recon_sum + r["recon"]
            rq_sum = rq_sum + o["rq_loss"]
            for k, v in r.items():
                parts[f"{k}.{m}"] = float(v.detach())
            parts[f"rq.{m}"] = float(o["rq_loss"].detach())
        align = total
        if "c" in outs and lc.beta > 0:
            for m in ("t", "v"):
                if m not in outs:
                    continue
                both = masks["c"] & masks[m]
                if both.sum() < 2:
                    continue
                pos_c = torch.cumsum(masks["c"].long(), 0) - 1
                pos_m = torch.cumsum(masks[m].long(), 0) - 1
                a = outs["c"]["z_hat"][pos_c[both]]
                b = outs[m]["z_hat"][pos_m[both]]
                l_cm = info_nce(a, b, lc.temperature, lc.align_symmetric)
                parts[f"align.c-{m}"] = float(l_cm.detach())
                align = align + l_cm
        total = lc.recon_weight * recon_sum + lc.beta * align + lc.gamma * rq_sum
        if cf is not None and lc.cf_weight > 0 and "t" in outs and masks["t"].sum() > 1:
            l_cf = collaborative_loss(outs["t"]["z_hat"], cf[masks["t"]])
            parts["cf"] = float(l_cf.detach())
            total = total + lc.cf_weight * l_cf
        parts["recon"] = float(recon_sum.detach())
        parts["align"] = float(align.detach())
        parts["rq"] = float(rq_sum.detach())
        parts["loss"] = float(total.detach())
        return total, parts, outs
