"""Embedding collapse (Sec. 3.1 / 5.3): singular values of an item embedding matrix.

The spectrum is taken over rows 1..n (row 0 is padding), optionally after centring the rows, and
normalised by the largest singular value; the plot shows it on a log scale against the dimension
index. A collapsed table has a few large values and a tail that drops by orders of magnitude
(a rank-r table has exactly r values above numerical zero).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import MmesidError
from ..io import atomic_path, write_json


def singular_spectrum(table: torch.Tensor | np.ndarray, center: bool = False, skip_padding: bool = True,
                      mask: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """Singular values of `table` rows (1..n by default), divided by the largest; float64 [min(n, d)]."""
    e = table.detach().cpu().numpy() if isinstance(table, torch.Tensor) else np.asarray(table)
    if e.ndim != 2:
        raise MmesidError(f"embedding matrix must be 2-D, got shape {e.shape}")
    e = e.astype(np.float64)
    rows = np.ones(e.shape[0], dtype=bool)
    if skip_padding:
        rows[0] = False
    if mask is not None:
        m = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        rows &= m.astype(bool)
    e = e[rows]
    if e.shape[0] == 0:
        raise MmesidError("no rows left for the spectrum")
    if not np.isfinite(e).all():
        raise MmesidError("embedding matrix has non-finite values")
    if center:
        e = e - e.mean(0, keepdims=True)
    s = np.linalg.svd(e, compute_uv=False)
    if s[0] <= 0:
        return np.zeros_like(s)
    return s / s[0]


def spectrum_summary(s: np.ndarray) -> dict:
    """Numerical rank (values > 1e-6 of the largest) and entropy effective rank (Roy & Vetterli)."""
    p = s / s.sum() if s.sum() > 0 else s
    nz = p[p > 0]
    return {"dims": int(len(s)), "rank_1e-6": int((s > 1e-6).sum()), "rank_1e-3": int((s > 1e-3).sum()),
            "effective_rank": float(np.exp(-(nz * np.log(nz)).sum())) if len(nz) else 0.0,
            "min_normalised": float(s[-1]) if len(s) else 0.0}


def spectra_report(tables: dict[str, tuple], out_png: Path, center: bool = False, title: str | None = None) -> dict:
    """Plot the normalised spectra of `tables` (name -> (table, mask or None)) and save PNG + JSON.

    The JSON (same stem, `.json`) holds, per name, the normalised singular values and a summary.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    if out_png.suffix.lower() != ".png":  # the JSON goes to the same stem: never onto the plot itself
        raise MmesidError(f"{out_png}: the plot must be a .png file (the spectra go beside it as .json)")
    report = {"center": center, "spectra": {}}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, (table, mask) in tables.items():
        s = singular_spectrum(table, center=center, mask=mask)
        report["spectra"][name] = {"singular_values": s.tolist(), **spectrum_summary(s)}
        floor = np.finfo(np.float64).tiny
        ax.plot(np.arange(1, len(s) + 1), np.maximum(s, floor), label=f"{name} (d={len(s)})", lw=1.4)
    ax.set_yscale("log")
    ax.set_xlabel("dimension index")
    ax.set_ylabel("singular value / largest")
    ax.set_title(title or ("normalised singular values" + (" (centred)" if center else "")))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    write_json(out_png.with_suffix(".json"), report)
    return report
