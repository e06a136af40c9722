"""Whole-catalogue encoding: prepared dataset + encoder -> embedding file, with the cache check."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ..artifacts.embeddings import MODALITY_NAMES, write_item_embedding
from ..data.dataset import SequenceData
from .base import (EncodeResult, Encoder, Problem, cached_output, cached_result, check_output, check_policy,
                   content_hash, file_metadata, run_batches, write_problems)

TEXT = MODALITY_NAMES["t"]

log = logging.getLogger(__name__)


def _titles_digest(data: SequenceData) -> str:
    h = hashlib.sha256()
    for it in data.items:
        h.update(it.title.encode("utf-8") + b"\0")
    return h.hexdigest()


def _load_data(data: SequenceData | str | Path) -> SequenceData:
    return data if isinstance(data, SequenceData) else SequenceData.load(data)


def encode_text(data: SequenceData | str | Path, encoder: Encoder, out: str | Path, batch_size: int = 64,
                missing: str = "fail", overwrite: bool = False, progress: bool = True) -> EncodeResult:
    """Encode every item title into `out` (E_t). Items with an empty title follow `missing`.

    An up-to-date `out` (same titles, encoder and dataset) is kept unless `overwrite`.
    """
    check_policy(missing)
    inputs = [data] if not isinstance(data, SequenceData) else []
    out = check_output(out, TEXT, inputs, overwrite)
    data = _load_data(data)
    digest = content_hash({"stage": "text", "n_items": data.n_items, "titles": _titles_digest(data),
                           "encoder": encoder.fingerprint(), "missing": missing})
    meta = None if overwrite else cached_output(out, digest, data.fingerprint)
    if meta is not None:
        log.info("%s is up to date (same titles, encoder and dataset); nothing to do", out)
        return cached_result(out, data.n_items, meta)
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
    write_item_embedding(out, emb, mask, modality=TEXT, encoder=encoder.name, data_fingerprint=data.fingerprint,
                         extra=file_metadata(digest, missing, data.source))
    write_problems(out, problems)
    return EncodeResult(out, data.n_items, emb.shape[1], len(problems), cached=False, problems=problems)
