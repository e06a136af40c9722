"""`mmesid items add`: make items the model never saw in training recommendable, without retraining.

An item enters MME-SID through its original embeddings and semantic IDs, so a new item needs:
- E_t: its title encoded with the run's own text encoder (checked against the encoder recorded in the
  run's E_t file); E_v needs the image encoder and is left empty (mask 0) here;
- E_c: there is no collaborative history. `init = "knn"` (default) takes the mean E_c of the
  `neighbours` training items whose E_t is closest (cosine) to the new item's (default 1: on Beauty's
  cold-item validation users 1 neighbour beat 3, 10 and 30 by a wide margin, since a mean of several
  items' rows matches none of them; BENCHMARKS.md); "mean" the mean E_c of all training items; "zero"
  a zero row;
- semantic IDs: the run's trained MM-RQ-VAE (the quantiser run recorded in its SID export) applied to
  the new E_c and E_t rows;
- E_x (the target table, learnt per item): the same rule as E_c over the trained E_x rows;
- the fusion's frequency input q (paper eq. 17): `frequency = "zero"` (default) gives the item no
  training interactions, which is the truth; "neighbours" gives it the mean q of the same text
  neighbours, so that the fusion weighs its sources as for the items whose rows it took. Why an
  option: in a cold-item split the fusion only ever saw zero-frequency items as negatives, and can
  have learnt weights at q = 0 that push every such item down.
Items already in the catalogue that never occur in training (a cold-item split) get the same
treatment; items with training interactions are refused (they are not new). The result is
`RUN/added_items/` (`artifacts.added_items`), read by `mmesid recommend`, `serve` and `evaluate`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..artifacts.added_items import AddedItems, read_added_items, write_added_items
from ..artifacts.embeddings import read_modalities
from ..artifacts.runs import RunDir, open_run
from ..data.dataset import SequenceData
from ..errors import MmesidError
from ..io import load_tensors
from ..rec.fusion import normalised_log_frequency
from .runs import run_kind

log = logging.getLogger(__name__)

INITS = ("knn", "mean", "zero")
FREQUENCIES = ("zero", "neighbours")


def _load_run(run_dir: str | Path, data: SequenceData | None):
    if run_kind(run_dir) != "finetune":
        raise MmesidError(f"{run_dir}: a SASRec run learns item embeddings from interactions only, so it cannot "
                          "score items it was not trained on; add items to a fine-tuning run (mmesid finetune)")
    info = RunDir(run_dir, "finetune").info()
    if data is None:
        data = SequenceData.load(info.get("data") or "")
    run = open_run(run_dir, "finetune", data_fingerprint=data.fingerprint)
    embs = read_modalities(dict(info["emb"]), n_items=data.n_items, fingerprint=data.fingerprint)
    weights, _ = load_tensors(run.path / "best.safetensors")
    return run, info, data, embs, weights["E_x"].float()


def _numbers(items, data: SequenceData, previous: AddedItems | None) -> list[int]:
    """Item numbers: the catalogue's for known ids (only if never trained on), new ones after the last."""
    index = {it.raw_id: i + 1 for i, it in enumerate(data.items)}
    if previous is not None:
        index.update({r: int(n) for r, n in zip(previous.raw_ids, previous.numbers)})
    freq = data.item_frequency()
    warm = [rid for rid, _, _ in items if rid in index and index[rid] <= data.n_items and freq[index[rid]] > 0]
    if warm:
        raise MmesidError(f"items {warm[:3]} already have training interactions in the run's dataset: they are "
                          "not new (only items the model never trained on can be added)")
    nxt = max([data.n_items, *index.values()]) + 1
    out = []
    for rid, _, _ in items:
        if rid not in index:
            index[rid] = nxt
            nxt += 1
        out.append(index[rid])
    return out


def _encode_text(titles: list[str], recorded: str, text_model, kind, pooling, max_length, device) -> torch.Tensor:
    from ..encoders.text import text_encoder

    enc = text_encoder(text_model, kind, pooling, max_length, device)
    if recorded and enc.name != recorded:
        raise MmesidError(f"the run's E_t was made by {recorded!r}, these options give {enc.name!r}: pass the same "
                          "--text-model / --kind / --pooling as `mmesid encode text` did")
    enc.load()
    return torch.cat([enc.encode(titles[i:i + 256]) for i in range(0, len(titles), 256)]).float()


def _like_neighbours(table: torch.Tensor, nb: torch.Tensor | None, warm: torch.Tensor, init: str,
                     n: int) -> torch.Tensor:
    """n rows from the trained rows of `table`: the neighbours' mean ("knn"; the global mean when there
    is no text modality to find neighbours), the mean of all training items ("mean"), or zero."""
    if init == "zero":
        return torch.zeros(n, table.shape[1])
    if init == "mean" or nb is None:
        return table[warm].mean(0, keepdim=True).expand(n, -1).clone()
    return table[nb].mean(1)


def _neighbours(e_t_new: torch.Tensor | None, e_t: torch.Tensor | None, warm: torch.Tensor, k: int):
    if e_t_new is None:
        return None
    sim = F.normalize(e_t_new, dim=1) @ F.normalize(e_t[warm], dim=1).T
    return warm[sim.topk(min(k, len(warm)), dim=1).indices]


def _sids(info: dict, rows: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """Semantic IDs of the new rows from the quantiser run behind the run's SID export."""
    if not info.get("sids"):
        return {}
    from ..artifacts.sid_export import load_sid_export
    from ..quantize.export import encode_items
    from ..quantize.train import KIND, load_trained

    export = load_sid_export(info["sids"])
    qrun = export.stats.get("run")
    if not qrun or not Path(qrun).is_dir():
        raise MmesidError(f"{info['sids']}: the quantiser run {qrun!r} that made this export is not available; the "
                          "new items' semantic IDs need its trained weights")
    model, _ = load_trained(open_run(qrun, KIND))
    mods = [m for m in model.modalities if f"E.{m}" in rows]
    enc = encode_items(model, {m: rows[f"E.{m}"] for m in mods}, {m: rows[f"mask.{m}"].bool() for m in mods})
    return {f"sid.{m}": enc[m]["codes"] for m in mods}


def compute_rows(items, data: SequenceData, embs, e_x: torch.Tensor, init: str, neighbours: int,
                 encode, frequency: str = "zero") -> dict[str, torch.Tensor]:
    """E.<m>, mask.<m>, E_x and q rows of the new items (see the module docstring)."""
    warm = torch.nonzero(torch.as_tensor(data.item_frequency()) > 0).flatten()
    e_t_new = encode([t for _, t, _ in items]) if "t" in embs else None
    nb = _neighbours(e_t_new, embs["t"].table if "t" in embs else None, warm, neighbours)
    n = len(items)
    rows: dict[str, torch.Tensor] = {}
    for m, e in embs.items():
        if m == "t":
            rows["E.t"] = e_t_new
        elif m == "c":
            rows["E.c"] = _like_neighbours(e.table, nb, warm, init, n)
        else:  # images of new items are not encoded here
            rows[f"E.{m}"] = torch.zeros(n, e.dim)
        rows[f"mask.{m}"] = torch.full((n,), float(m != "v"))
    rows["E_x"] = _like_neighbours(e_x, nb, warm, init, n)
    q = normalised_log_frequency(data.item_frequency())
    rows["q"] = q[nb].mean(1) if frequency == "neighbours" and nb is not None else torch.zeros(n)
    return rows


def add_items(run_dir: str | Path, items: Sequence[tuple[str, str, str]], data: SequenceData | None = None,
              init: str = "knn", neighbours: int = 1, text_model=None, kind: str = "auto", pooling: str = "auto",
              max_length: int = 128, device: str = "cpu", frequency: str = "zero") -> dict:
    """Add `items` = [(raw_id, title, image)] to a fine-tuning run; returns a summary."""
    if init not in INITS:
        raise MmesidError(f"--init must be one of {', '.join(INITS)}, got {init!r}")
    if frequency not in FREQUENCIES:
        raise MmesidError(f"--frequency must be one of {', '.join(FREQUENCIES)}, got {frequency!r}")
    run, info, data, embs, e_x = _load_run(run_dir, data)
    previous = read_added_items(run.path)
    numbers = _numbers(items, data, previous)
    recorded = embs["t"].meta.get("encoder", "") if "t" in embs else ""

    def encode(titles):
        return _encode_text(titles, recorded, text_model, kind, pooling, max_length, device)

    rows = compute_rows(items, data, embs, e_x, init, neighbours, encode, frequency)
    rows.update(_sids(info, rows, len(items)))
    added = _merge(previous, AddedItems(torch.tensor(numbers), [i[0] for i in items], [i[1] for i in items],
                                        [i[2] for i in items], rows,
                                        {"init": init, "neighbours": str(neighbours), "frequency": frequency,
                                         "data_fingerprint": data.fingerprint}))
    write_added_items(run.path, added)
    new = sum(1 for n in numbers if n > data.n_items)
    return {"items": len(items), "new_to_catalogue": new, "cold_in_catalogue": len(items) - new,
            "total_added": len(added.numbers), "init": init, "modalities": list(embs)}


def _merge(old: AddedItems | None, new: AddedItems) -> AddedItems:
    """The earlier additions, with rows of re-added items replaced by the new ones."""
    if old is None:
        return new
    keep = [i for i, n in enumerate(old.numbers.tolist()) if n not in set(new.numbers.tolist())]
    if set(old.rows) != set(new.rows):
        raise MmesidError("earlier added items have other tables than these; remove RUN/added_items and add all again")
    rows = {k: torch.cat([old.rows[k][keep], new.rows[k].to(old.rows[k].dtype)]) for k in new.rows}
    pick = [old.raw_ids, old.titles, old.images]
    return AddedItems(torch.cat([old.numbers[keep], new.numbers]),
                      *[[p[i] for i in keep] + q for p, q in zip(pick, [new.raw_ids, new.titles, new.images])],
                      rows, new.meta)
