"""Residual vector quantisation (eq. 2 and 5 of the paper).

Level l holds a codebook C_l of S_l code embeddings. With r_0 = z:

    SID^l = argmin_k ||r_{l-1} - C_l[k]||^2,   r_l = r_{l-1} - C_l[SID^l],   z_hat = sum_l C_l[SID^l]

Gradients pass straight through the quantiser (z_hat_st = z + SG(z_hat - z)); the residuals are
r_l = r_{l-1} - SG(C_l[SID^l]), so each level's commitment term pulls the encoder output too. The
per-level loss is eq. 5: ||SG(r_{l-1}) - C[SID^l]||^2 + alpha * ||r_{l-1} - SG(C[SID^l])||^2
(mean over the latent dimensions and the batch, summed over the levels).

During training the assignment can instead be balanced with Sinkhorn-Knopp (the authors'
`sk_epsilon` option): codes are chosen from an (almost) doubly-stochastic transport plan between
the batch and the codebook, so that every code receives about B / S residuals. This keeps a
reconstruction loss that does not tie an item to its own reconstruction (MMD) from collapsing the
codebooks. Exported IDs always use the plain nearest-code rule unless asked otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def pairwise_sq_dist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """||x_i - c_k||^2 for x [B, d] and c [K, d] -> [B, K] (clamped at 0)."""
    d = (x * x).sum(1, keepdim=True) - 2.0 * x @ c.t() + (c * c).sum(1)[None, :]
    return d.clamp_min_(0.0)


@torch.no_grad()
def sinkhorn_assign(dist: torch.Tensor, epsilon: float = 0.05, iters: int = 50) -> torch.Tensor:
    """Balanced assignment of B rows to K codes from a distance matrix [B, K] (log-domain Sinkhorn).

    Distances are centred and scaled to [-1, 1] first, so `epsilon` is scale-free: small epsilon
    approaches an exact balanced assignment, large epsilon a uniform plan. The plan's rows are
    then read off by argmax. Returns int64 [B].
    """
    d = dist.float()
    d = d - d.mean()
    d = d / d.abs().max().clamp_min(1e-12)
    B, K = d.shape
    log_q = -d / max(epsilon, 1e-6)
    log_b, log_k = math.log(B), math.log(K)
    for _ in range(iters):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - log_k  # each code gets 1/K
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - log_b  # each row gives 1/B
    return log_q.argmax(dim=1)


def diversity_loss(q: torch.Tensor, idx: torch.Tensor, codebook: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LETTER's diversity regulariser for one level: the chosen code embedding q [B, d] is pulled towards
    a random other code of its cluster (`labels`: the cluster of every code, from k-means on the
    codebook) against all codes but itself, by softmax cross-entropy over q . codebook^T. Codes alone
    in their cluster contribute nothing."""
    same = labels[idx].unsqueeze(1) == labels.unsqueeze(0)  # [B, S]
    same[torch.arange(len(idx)), idx] = False
    ok = same.any(1)
    if not ok.any():
        return q.new_zeros(())
    pos = torch.multinomial(same[ok].float(), 1).squeeze(1)  # uniform over the other codes of the cluster
    logits = q[ok] @ codebook.T
    logits[torch.arange(int(ok.sum())), idx[ok]] = -1e12
    return torch.nn.functional.cross_entropy(logits, pos)


@torch.no_grad()
def code_clusters(codebook: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Cluster label of every code of one level (k-means, scikit-learn; LETTER uses a size-constrained
    k-means, a package we do not depend on)."""
    from sklearn.cluster import KMeans

    k = max(1, min(k, codebook.shape[0]))
    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(codebook.detach().double().cpu().numpy())
    return torch.as_tensor(km.labels_, dtype=torch.long, device=codebook.device)


class ResidualQuantizer(nn.Module):
    """L levels of codebooks (sizes may differ per level) over a `dim`-dimensional latent."""

    def __init__(self, dim: int, codebook_sizes: list[int] | tuple[int, ...]):
        super().__init__()
        if not codebook_sizes or any(s < 1 for s in codebook_sizes):
            raise ValueError(f"codebook sizes must be positive, got {codebook_sizes}")
        self.dim = dim
        self.sizes = list(codebook_sizes)
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.randn(s, dim) / math.sqrt(dim)) for s in self.sizes])

    @property
    def levels(self) -> int:
        return len(self.sizes)

    def forward(self, z: torch.Tensor, alpha: float = 1.0, assign: str = "argmin",
                sk_epsilon: float = 0.05, sk_iters: int = 50, sk_levels: list[int] | None = None,
                diversity: tuple[list[torch.Tensor], float] | None = None):
        """Quantise z [B, d]. Returns (z_hat_st [B, d], codes int64 [B, L], rq_loss scalar).

        `assign`: 'argmin' (nearest code) or 'sinkhorn' (balanced, on the levels in `sk_levels`,
        all levels if None or empty). `diversity` = (cluster label of every code, per level; weight)
        adds LETTER's diversity regulariser (`diversity_loss`).
        """
        residual = z
        z_hat = torch.zeros_like(z)
        codes = []
        loss = z.new_zeros(())
        for level, cb in enumerate(self.codebooks):
            dist = pairwise_sq_dist(residual.detach(), cb.detach())
            use_sk = assign == "sinkhorn" and (not sk_levels or level in sk_levels) and z.shape[0] > 1
            idx = sinkhorn_assign(dist, sk_epsilon, sk_iters) if use_sk else dist.argmin(dim=1)
            q = cb[idx]
            loss = loss + ((q - residual.detach()) ** 2).mean() + alpha * ((residual - q.detach()) ** 2).mean()
            if diversity is not None and diversity[1] > 0:
                loss = loss + diversity[1] * diversity_loss(q, idx, cb, diversity[0][level])
            z_hat = z_hat + q
            residual = residual - q.detach()  # r_l depends on z, so every level's commitment reaches the encoder
            codes.append(idx)
        z_hat_st = z + (z_hat - z).detach()  # straight-through: d z_hat / d z = I
        return z_hat_st, torch.stack(codes, dim=1), loss

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Nearest-code IDs of z: (codes [B, L], z_hat [B, d], residual inputs per level)."""
        residual = z
        z_hat = torch.zeros_like(z)
        codes, inputs = [], []
        for cb in self.codebooks:
            inputs.append(residual)
            idx = pairwise_sq_dist(residual, cb).argmin(dim=1)
            q = cb[idx]
            z_hat = z_hat + q
            residual = residual - q
            codes.append(idx)
        return torch.stack(codes, dim=1), z_hat, inputs

    @torch.no_grad()
    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """z_hat = sum_l C_l[codes[:, l]]."""
        out = torch.zeros(codes.shape[0], self.dim, dtype=self.codebooks[0].dtype, device=codes.device)
        for level, cb in enumerate(self.codebooks):
            out += cb[codes[:, level]]
        return out

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor, seed: int = 0, max_iter: int = 100) -> None:
        """Initialise level by level with k-means (scikit-learn) on the residuals of z [N, d]."""
        from sklearn.cluster import KMeans

        residual = z.detach().double().cpu().numpy()
        rng = np.random.default_rng(seed)
        for level, cb in enumerate(self.codebooks):
            k = cb.shape[0]
            if residual.shape[0] <= k:  # too few points: every point a code, the rest jittered copies
                pick = rng.integers(0, residual.shape[0], size=k)
                pick[: residual.shape[0]] = np.arange(residual.shape[0])
                centers = residual[pick] + 1e-3 * residual.std() * rng.standard_normal((k, residual.shape[1]))
                labels = np.arange(residual.shape[0])
            else:
                km = KMeans(n_clusters=k, n_init=1, max_iter=max_iter, random_state=seed + level)
                labels = km.fit_predict(residual)
                centers = km.cluster_centers_
            cb.data.copy_(torch.as_tensor(centers, dtype=cb.dtype))
            residual = residual - centers[labels]

    @torch.no_grad()
    def reseed_dead_codes(self, z: torch.Tensor, generator: torch.Generator | None = None) -> list[int]:
        """Move every code that no row of z [N, d] uses onto a random residual of its level.

        Returns the number of codes re-seeded per level. Levels are processed in order, so a
        re-seeded level changes the residuals seen by the next one.
        """
        counts = []
        residual = z.detach()
        for cb in self.codebooks:
            idx = pairwise_sq_dist(residual, cb).argmin(dim=1)
            used = torch.bincount(idx, minlength=cb.shape[0]) > 0
            dead = torch.nonzero(~used).flatten()
            if len(dead):
                pick = torch.randint(0, residual.shape[0], (len(dead),), generator=generator)
                noise = torch.randn(len(dead), cb.shape[1], generator=generator) * 1e-3
                scale = residual.std().clamp_min(1e-8)
                cb.data[dead] = residual[pick].to(cb.dtype) + noise.to(cb.device) * scale
                idx = pairwise_sq_dist(residual, cb).argmin(dim=1)
            counts.append(len(dead))
            residual = residual - cb[idx]
        return counts


def codebook_stats(codes: np.ndarray, sizes: list[int]) -> dict:
    """Usage, perplexity per level and SID-tuple collisions of `codes` int [N, L] (valid items only)."""
    n = codes.shape[0]
    levels = []
    for level, s in enumerate(sizes):
        cnt = np.bincount(codes[:, level], minlength=s).astype(np.float64)
        p = cnt / max(1, n)
        nz = p[p > 0]
        ent = float(-(nz * np.log(nz)).sum())
        levels.append({"level": level, "codebook_size": int(s), "codes_used": int((cnt > 0).sum()),
                       "usage": float((cnt > 0).mean()), "perplexity": float(np.exp(ent)),
                       "max_items_per_code": int(cnt.max()) if n else 0})
    if n:
        _, inverse, group_sizes = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        unique = len(group_sizes)
        in_collision = int(group_sizes[group_sizes > 1].sum())
        largest = int(group_sizes.max())
    else:
        unique, in_collision, largest = 0, 0, 0
    return {
        "items": int(n),
        "levels": levels,
        "unique_sids": unique,
        "unique_fraction": unique / n if n else 0.0,
        "collision_rate": 1.0 - unique / n if n else 0.0,  # share of items whose tuple is not new
        "items_in_collisions": in_collision,  # items sharing their full tuple with another item
        "largest_collision_group": largest,
    }
