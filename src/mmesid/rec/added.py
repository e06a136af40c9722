"""Items added after training (`mmesid items add`) applied to a trained model.

New item numbers extend every per-item table (the target table E_x, the frozen original embeddings
E_j, the semantic IDs, the fusion's frequency input); numbers of existing items replace their rows
(cold items that the model never saw in training). Trained weights of every other item are untouched,
so the scores of the existing catalogue do not change. Random item tables (MME-random, SE-random, ME)
have nothing to say about a new item: their new rows are zero.
"""

from __future__ import annotations

import torch
from torch import nn

from ..artifacts.added_items import AddedItems
from ..errors import MmesidError
from .model import LLMRecommender


def _grow(t: torch.Tensor, n_rows: int) -> torch.Tensor:
    if t.shape[0] >= n_rows:
        return t
    pad = torch.zeros(n_rows - t.shape[0], *t.shape[1:], dtype=t.dtype, device=t.device)
    return torch.cat([t, pad])


def _set_buffer(module: nn.Module, name: str, value: torch.Tensor) -> None:
    module._buffers[name] = value


@torch.no_grad()
def apply_added_items(model: LLMRecommender, added: AddedItems) -> int:
    """Extend/replace the model's per-item rows; returns the new number of rows (n_items + 1)."""
    inp = model.inputs
    n_rows = max(inp.n_rows, int(added.numbers.max()) + 1)
    idx = added.numbers.long().to(model.E_x.device)
    missing = [k for k in ["E_x", *(f"E.{j}" for j in inp.modalities)] if k not in added.rows]
    if inp.spec.extra == "sid":
        missing += [f"sid.{j}" for j in inp.modalities if f"sid.{j}" not in added.rows]
    if missing:
        raise MmesidError(f"added items: no rows for {', '.join(missing)} (the run's modalities are "
                          f"{', '.join(inp.modalities)}; run `mmesid items add` again)")
    ex = _grow(model.E_x.data, n_rows)
    ex[idx] = added.rows["E_x"].to(ex)
    model.E_x = nn.Parameter(ex, requires_grad=model.E_x.requires_grad)
    for j in inp.modalities:
        e = _grow(getattr(inp, f"E_{j}"), n_rows)
        e[idx] = added.rows[f"E.{j}"].to(e) * added.rows.get(f"mask.{j}", torch.ones(len(idx))).to(e).unsqueeze(1)
        _set_buffer(inp, f"E_{j}", e)
        if j in inp.sid:
            s = inp.sid[j]
            codes = added.rows[f"sid.{j}"].long().to(s.sids.device)
            sids, valid = _grow(s.sids, n_rows), _grow(s.valid, n_rows)
            sids[idx], valid[idx] = codes.clamp_min(0), (codes >= 0).all(1, keepdim=True).to(valid)
            _set_buffer(s, "sids", sids)
            _set_buffer(s, "valid", valid)
        if j in inp.rand:
            r = _grow(inp.rand[j].data, n_rows)
            r[idx] = 0
            inp.rand[j] = nn.Parameter(r, requires_grad=inp.rand[j].requires_grad)
    inp.n_rows = n_rows
    if model.fusion is not None:  # no training interactions: 0, unless `items add --frequency` chose otherwise
        q = _grow(model.fusion.q, n_rows)
        q[idx] = added.rows["q"].to(q).unsqueeze(1) if "q" in added.rows else 0.0
        _set_buffer(model.fusion, "q", q)
    return n_rows
