"""`Recommender`: the top-k items for histories given in the catalogue's own item ids.

Any trained run (SASRec or a fine-tuning variant) is loaded with the dataset it was trained on (its
fingerprint is checked); histories are mapped from raw ids (ASINs) to the model's item numbers, cut to
the model's window (the last `max_len` items, as in training), scored over the whole catalogue in
batches, and the best k items are returned with their titles and scores. An empty history gets the
most popular items of the training split (said so in the result).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..artifacts.added_items import read_added_items
from ..artifacts.runs import RunDir
from ..data.dataset import ItemInfo, SequenceData
from ..data.split import pad_left
from ..errors import MmesidError
from ..utils import resolve_device, set_cpu_threads
from .runs import load_run_scorer, run_kind

log = logging.getLogger(__name__)

UNKNOWN_POLICIES = ("error", "drop")


@dataclasses.dataclass
class Recommendation:
    """The top-k of one history, best first."""

    items: list[str]  # raw item ids
    titles: list[str]
    scores: list[float]
    fallback: str | None = None  # "popularity" when the history was empty (after dropping unknown ids)
    dropped: list[str] = dataclasses.field(default_factory=list)  # unknown ids dropped (unknown="drop")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def length_groups(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of the non-empty histories in batches of similar length: a batch costs its longest
    history times its size, so a new batch starts when a history is over twice (+2) the batch's
    shortest, or the batch is full."""
    order = sorted((n, i) for i, n in enumerate(lengths) if n > 0)
    groups: list[list[int]] = []
    first = 0
    for n, i in order:
        if not groups or len(groups[-1]) >= batch_size or n > 2 * first + 2:
            groups.append([])
            first = n
        groups[-1].append(i)
    return groups


class Recommender:
    """A trained run ready to recommend; build it with `Recommender.load(run_dir)`."""

    def __init__(self, scorer, data: SequenceData, max_len: int, kind: str, name: str = "",
                 device: torch.device | str = "cpu", batch_size: int = 256, extra_items: Sequence[ItemInfo] = ()):
        """`extra_items`: catalogue entries after the dataset's (items added to the run, numbered on)."""
        self.scorer, self.data, self.max_len, self.kind, self.name = scorer, data, max_len, kind, name
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.items = list(data.items) + list(extra_items)
        self.index = {it.raw_id: i + 1 for i, it in enumerate(self.items)}
        self.user_index = {u: i for i, u in enumerate(data.user_ids)}
        freq = torch.as_tensor(data.item_frequency(), dtype=torch.float32)
        freq = torch.cat([freq, torch.zeros(len(extra_items))])
        self.popularity = freq + torch.arange(len(freq), 0, -1) * 1e-9  # ties: lower item number first
        self.popularity[0] = float("-inf")

    @classmethod
    def load(cls, run_dir: str | Path, data: str | Path | SequenceData | None = None, device: str = "cpu",
             threads: int | None = None, batch_size: int = 256, int8: bool = False) -> Recommender:
        """Load a trained run; `data` defaults to the prepared dataset recorded in its run.json. `int8`: a
        fine-tuned LLM run's backbone quantised to int8 (CPU only: faster, scores slightly different)."""
        set_cpu_threads(threads or 0)
        run_kind(run_dir)
        if not isinstance(data, SequenceData):
            if data is None:
                data = RunDir(run_dir, "").info().get("data")
                if not data:
                    raise MmesidError(f"{run_dir}/run.json: records no dataset; pass the prepared dataset (--data)")
            if not Path(data).is_dir():
                raise MmesidError(f"{data}: prepared dataset not found (the run's data moved? pass --data)")
            data = SequenceData.load(data)
        dev = resolve_device(device)
        scorer, max_len, kind = load_run_scorer(run_dir, data, dev, int8=int8)
        added = read_added_items(run_dir)
        extra = [ItemInfo(r, t, i) for _, r, t, i in added.new_items(data.n_items)] if added else []
        return cls(scorer, data, max_len, kind, str(run_dir), dev, batch_size, extra)

    # ------------------------------------------------------------------ ids
    @property
    def n_items(self) -> int:
        return len(self.items)

    def item_numbers(self, ids: Sequence[str], unknown: str = "error") -> tuple[list[int], list[str]]:
        """Raw item ids -> item numbers; unknown ids are an error naming them, or dropped."""
        if unknown not in UNKNOWN_POLICIES:
            raise MmesidError(f"unknown: expected one of {UNKNOWN_POLICIES}, got {unknown!r}")
        known = [self.index.get(str(i)) for i in ids]
        missing = [str(i) for i, n in zip(ids, known) if n is None]
        if missing and unknown == "error":
            shown = ", ".join(repr(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise MmesidError(f"unknown item id(s) {shown}: not in the catalogue of this run "
                              "(drop them with unknown='drop' / --drop-unknown)")
        return [n for n in known if n is not None], missing

    def user_history(self, user_id: str) -> np.ndarray:
        """A known user's whole sequence: the history for recommending what comes next."""
        i = self.user_index.get(str(user_id))
        if i is None:
            raise MmesidError(f"unknown user id {user_id!r}: not in the dataset of this run")
        return self.data.sequences[i]

    def item(self, item_id: str) -> dict:
        n = self.index.get(str(item_id))
        if n is None:
            raise MmesidError(f"unknown item id {item_id!r}")
        it = self.items[n - 1]
        return {"id": it.raw_id, "title": it.title, "image": it.image,
                "training_frequency": int(self.popularity[n].round())}

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def top_k(self, histories: Sequence[np.ndarray | Sequence[int]], k: int,
              exclude_history: bool | Sequence[bool] = True) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """Item numbers [B, k] and scores [B, k] for histories of item numbers (best first; -inf marks
        fewer than k candidates); the flags say which rows used the popularity fallback.
        `exclude_history` may be given per row."""
        if not 1 <= k <= self.n_items:
            raise MmesidError(f"k must be between 1 and {self.n_items} (the catalogue), got {k}")
        hs = [np.asarray(h, dtype=np.int64)[-self.max_len:] for h in histories]
        empty = [len(h) == 0 for h in hs]
        scores = self.popularity.expand(len(hs), -1).clone()
        for rows in length_groups([len(h) for h in hs], self.batch_size):
            s = self.scorer.scores(pad_left([hs[i] for i in rows], self.max_len).to(self.device)).float().cpu()
            scores[rows] = s
        scores[:, 0] = float("-inf")
        excl = [exclude_history] * len(hs) if isinstance(exclude_history, bool) else list(exclude_history)
        for i, h in enumerate(histories):
            if excl[i] and len(h):
                scores[i, torch.as_tensor(np.asarray(h, dtype=np.int64))] = float("-inf")
        top = torch.topk(scores, k, dim=1)
        return top.indices, top.values, empty

    def results(self, idx: torch.Tensor, val: torch.Tensor, empty: list[bool],
                 dropped: list[list[str]]) -> list[Recommendation]:
        out = []
        for r in range(len(idx)):
            keep = torch.isfinite(val[r])
            items = idx[r][keep].tolist()
            out.append(Recommendation([self.items[n - 1].raw_id for n in items],
                                      [self.items[n - 1].title for n in items], val[r][keep].tolist(),
                                      "popularity" if empty[r] else None, dropped[r]))
        return out

    def recommend(self, histories: Sequence[Sequence[str]], k: int = 10, exclude_history: bool = True,
                  unknown: str = "error") -> list[Recommendation]:
        """Top-k for each history of raw item ids (oldest first)."""
        if isinstance(histories, (str, bytes)) or any(isinstance(h, (str, bytes)) for h in histories):
            raise MmesidError("histories: expected a list of lists of item ids")
        mapped = [self.item_numbers(h, unknown) for h in histories]
        idx, val, empty = self.top_k([m[0] for m in mapped], k, exclude_history)
        return self.results(idx, val, empty, [m[1] for m in mapped])

    def recommend_users(self, user_ids: Sequence[str], k: int = 10,
                        exclude_history: bool = True) -> list[Recommendation]:
        """Top-k next items for known users, from their whole sequence."""
        idx, val, empty = self.top_k([self.user_history(u) for u in user_ids], k, exclude_history)
        return self.results(idx, val, empty, [[] for _ in user_ids])

    def iter_all_users(self, k: int = 10, exclude_history: bool = True,
                       chunk: int | None = None) -> Iterator[tuple[list[str], list[Recommendation]]]:
        """(user ids, recommendations) for every user, in chunks sorted by history length (less padding)."""
        chunk = chunk or self.batch_size
        lengths = np.array([min(len(s), self.max_len) for s in self.data.sequences])
        order = np.argsort(lengths, kind="stable")
        for lo in range(0, len(order), chunk):
            users = [self.data.user_ids[i] for i in order[lo:lo + chunk]]
            yield users, self.recommend_users(users, k, exclude_history)


def read_histories(lines: Iterable[tuple[int, str]], source: str) -> list[tuple[str | None, list[str]]]:
    """(line number, text) pairs of JSON Lines {"history": [ids...], "id": optional}: [(id, history)];
    errors name the line."""
    import json

    out = []
    for n, line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise MmesidError(f"{source}, line {n}: not JSON ({e})") from None
        h = obj.get("history") if isinstance(obj, dict) else None
        if not isinstance(h, list) or not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in h):
            raise MmesidError(f"{source}, line {n}: expected {{\"history\": [item ids...]}}")
        out.append((None if obj.get("id") is None else str(obj["id"]), [str(x) for x in h]))
    return out
