"""Losses of MM-RQ-VAE: MMD^2 reconstruction (eq. 12), InfoNCE alignment (eq. 14-15), MSE."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a * a).sum(1, keepdim=True) - 2.0 * a @ b.t() + (b * b).sum(1)[None, :]
    return d.clamp_min(0.0)


@torch.no_grad()
def median_sigma(x: torch.Tensor) -> torch.Tensor:
    """Median pairwise Euclidean distance of the rows of x (the usual bandwidth heuristic)."""
    d = _sq_dists(x, x)
    n = x.shape[0]
    off = d[~torch.eye(n, dtype=torch.bool, device=x.device)]
    med = off.median().sqrt() if off.numel() else x.new_tensor(1.0)
    return med.clamp_min(1e-6)


def mmd2(x: torch.Tensor, y: torch.Tensor, sigmas: list[float] | tuple[float, ...] = (1.0,),
         estimator: str = "unbiased", bandwidth: str = "median", reference: torch.Tensor | None = None
         ) -> torch.Tensor:
    """Squared maximum mean discrepancy between samples x [m, d] and y [n, d].

    Kernel: k(e, e') = mean over sigma of exp(-||e - e'||^2 / (2 sigma^2)) (a multi-bandwidth
    Gaussian kernel, still characteristic). With `bandwidth='median'` each sigma is a multiple of
    the median pairwise distance of `reference` (default: x), computed without gradient; with
    'fixed' the sigmas are absolute. `estimator='unbiased'` drops the i = j terms of the within-sample
    sums (U-statistic, may be slightly negative); 'biased' keeps them (V-statistic, >= 0).
    """
    if x.shape[0] < 2 or y.shape[0] < 2:
        return x.new_zeros(())
    if bandwidth == "median":
        base = median_sigma(reference if reference is not None else x)
        sig = [base * s for s in sigmas]
    elif bandwidth == "fixed":
        sig = [x.new_tensor(float(s)) for s in sigmas]
    else:
        raise ValueError(f"bandwidth must be 'median' or 'fixed', got {bandwidth!r}")
    dxx, dyy, dxy = _sq_dists(x, x), _sq_dists(y, y), _sq_dists(x, y)

    def k(d):
        return sum(torch.exp(-d / (2.0 * s * s)) for s in sig) / len(sig)

    kxx, kyy, kxy = k(dxx), k(dyy), k(dxy)
    m, n = x.shape[0], y.shape[0]
    if estimator == "unbiased":
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    elif estimator == "biased":
        sxx = kxx.mean()
        syy = kyy.mean()
    else:
        raise ValueError(f"estimator must be 'unbiased' or 'biased', got {estimator!r}")
    return sxx + syy - 2.0 * kxy.mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1, symmetric: bool = False) -> torch.Tensor:
    """InfoNCE of eq. 14: row i of `a` should pick row i of `b` among all rows of b (cosine / temperature).

    -1/B sum_i log( exp(cos(a_i, b_i)/t) / sum_j exp(cos(a_i, b_j)/t) ). With `symmetric` the b->a
    direction is averaged in (CLIP style); the paper's eq. 14 is the a->b direction only.
    """
    if a.shape[0] < 2:
        return a.new_zeros(())
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).t() / temperature
    target = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.t(), target))
    return loss


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over items and dimensions of (x - y)^2 (eq. 4 up to the constant 1/d)."""
    return ((x - y) ** 2).mean()
