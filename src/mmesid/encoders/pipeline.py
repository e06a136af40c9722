"""Whole-catalogue encoding: prepared dataset + encoder -> embedding file, with the cache check."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ..data.dataset import SequenceData
from .base import (EncodeResult, Encoder, Problem, cached_output, check_policy, content_hash, run_batches,
                   write_embedding_file, write_problems)

log = logging.getLogger(__name__)


def _titles_digest(data: SequenceData) -> str:
    h = hashlib.sha256()
    for it in data.items:
        h.update(it.title.encode("utf-8") + b"\0")
    return h.hexdigest()


def _load_data(data: SequenceData | str | Path) -> SequenceData:
    return data if isinstance(data, SequenceData) else SequenceData.load(data)


def encode_text(data: SequenceData | str | Path, encoder: Encoder, out: str | Path, batch_size: int = 64,
                missing: str = "fail", force: bool = False, progress: bool = True) -> EncodeResult:
    """Encode every item title into `out` (E_t). Items with an empty title follow `missing`."""
    check_policy(missing)
    data = _load_data(data)
    out = Path(out)
    digest = content_hash({"stage": "text", "n_items": data.n_items, "titles": _titles_digest(data),
                           "encoder": encoder.fingerprint(), "missing": missing})
    if not force and cached_output(out, digest):
        log.info("%s is up to date (same titles and encoder); nothing to do", out)
        return EncodeResult(out, data.n_items, _dim_of(out), _missing_of(out), cached=True)
    encoder.load()
    titles = [it.title.strip() for it in data.items]
    # Longest titles first: batches of similar length waste less padding, and a too-large batch
    # fails on the first step instead of at the end.
    order = sorted(range(1, data.n_items + 1), key=lambda i: -len(titles[i - 1]))

    def load(ids: list[int]):
        ok, inputs, probs = [], [], []
        for i in ids:
            if titles[i - 1]:
                ok.append(i)
                inputs.append(titles[i - 1])
            else:
                probs.append(Problem(i, data.items[i - 1].raw_id, "", "empty title"))
        return ok, inputs, probs

    emb, mask, problems = run_batches(data.n_items, batch_size, load, encoder, missing, "title",
                                      order=order, progress=progress)
    problems.sort(key=lambda p: p.item)
    write_embedding_file(out, emb, mask, modality="text", encoder=encoder.name, digest=digest,
                         extra={"missing_policy": missing, "source": data.source})
    write_problems(out, problems)
    return EncodeResult(out, data.n_items, emb.shape[1], len(problems), cached=False, problems=problems)


def _dim_of(out: Path) -> int:
    from ..io import load_tensors

    _, meta = load_tensors(out)
    return int(meta.get("dim", 0))


def _missing_of(out: Path) -> int:
    from ..io import load_tensors

    _, meta = load_tensors(out)
    return int(meta.get("n_missing", 0))
