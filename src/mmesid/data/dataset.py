"""The canonical prepared dataset that every stage reads.

Items are numbered 1..n_items (0 is padding, so every item-aligned matrix in mmesid has
n_items + 1 rows with row 0 unused); users 0..n_users-1. On disk a prepared dataset is a folder:

    sequences.npz   items (int32, all sequences concatenated), offsets (int64, n_users + 1)
    users.tsv       user index <TAB> original user id
    items.csv       id,raw_id,title,image     (one row per item, id = 1..n_items)
    item_freq.npy   int64 [n_items + 1], occurrences of each item in the training split
    stats.json      users, items, interactions, lengths, density, source
    meta.json       format version and provenance

The folder is written to a temporary name and renamed, so it is either complete or absent.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from ..errors import InputFormatError, MmesidError
from ..io import atomic_dir, read_json, write_json

FORMAT_VERSION = 1


@dataclasses.dataclass
class ItemInfo:
    raw_id: str
    title: str = ""
    image: str = ""  # local path or URL, may be empty


@dataclasses.dataclass
class SequenceData:
    """User sequences over items 1..n_items, plus per-item side information."""

    sequences: list[np.ndarray]  # one int64 array per user, chronological
    items: list[ItemInfo]  # index i holds item id i + 1
    user_ids: list[str]
    source: str = ""

    def __post_init__(self):
        if len(self.sequences) != len(self.user_ids):
            raise MmesidError("sequences and user_ids differ in length")

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def stats(self) -> dict:
        lengths = np.array([len(s) for s in self.sequences])
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "avg_length": round(float(lengths.mean()), 4) if len(lengths) else 0.0,
            "min_length": int(lengths.min()) if len(lengths) else 0,
            "max_length": int(lengths.max()) if len(lengths) else 0,
            "density": round(self.n_interactions / max(1, self.n_users * self.n_items), 6),
            "source": self.source,
        }

    def validate(self, min_length: int = 3) -> None:
        """Every sequence long enough for leave-one-out, every item id in range, every item used."""
        used = np.zeros(self.n_items + 1, dtype=bool)
        for u, s in enumerate(self.sequences):
            if len(s) < min_length:
                raise MmesidError(
                    f"user {self.user_ids[u]!r} has {len(s)} interactions; leave-one-out needs "
                    f"at least {min_length}"
                )
            if s.min() < 1 or s.max() > self.n_items:
                raise MmesidError(f"user {self.user_ids[u]!r}: item id out of range 1..{self.n_items}")
            used[s] = True
        if not used[1:].all():
            missing = int(np.flatnonzero(~used[1:])[0]) + 1
            raise MmesidError(f"item {missing} ({self.items[missing - 1].raw_id!r}) occurs in no sequence")

    def item_frequency(self) -> np.ndarray:
        """Occurrences of each item in the training split (every sequence without its last two)."""
        from .split import train_sequences

        freq = np.zeros(self.n_items + 1, dtype=np.int64)
        for s in train_sequences(self.sequences):
            np.add.at(freq, s, 1)
        return freq

    # ---------------------------------------------------------------- disk format
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        path = Path(path)
        with atomic_dir(path, overwrite=overwrite) as tmp:
            lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            flat = (np.concatenate(self.sequences) if self.sequences else np.zeros(0)).astype(np.int32)
            with open(tmp / "sequences.npz", "wb") as f:
                np.savez(f, items=flat, offsets=offsets)
            with open(tmp / "users.tsv", "w", encoding="utf-8") as f:
                for i, u in enumerate(self.user_ids):
                    f.write(f"{i}\t{u}\n")
            with open(tmp / "items.csv", "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", "raw_id", "title", "image"])
                for i, it in enumerate(self.items, start=1):
                    w.writerow([i, it.raw_id, it.title, it.image])
            with open(tmp / "item_freq.npy", "wb") as f:
                np.save(f, self.item_frequency(), allow_pickle=False)
            write_json(tmp / "stats.json", self.stats())
            write_json(tmp / "meta.json", {"format": "mmesid-prepared", "version": FORMAT_VERSION,
                                           "source": self.source})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SequenceData":
        path = Path(path)
        if not path.is_dir():
            raise MmesidError(f"{path}: prepared dataset folder not found (run `mmesid data prepare`)")
        meta = read_json(path / "meta.json")
        if meta.get("format") != "mmesid-prepared":
            raise MmesidError(f"{path / 'meta.json'}: not an mmesid prepared dataset")
        if meta.get("version") != FORMAT_VERSION:
            raise MmesidError(f"{path / 'meta.json'}: format version {meta.get('version')} "
                              f"unsupported (expected {FORMAT_VERSION})")
        try:
            with np.load(path / "sequences.npz", allow_pickle=False) as z:
                flat, offsets = z["items"].astype(np.int64), z["offsets"]
        except (OSError, KeyError, ValueError) as e:
            raise MmesidError(f"{path / 'sequences.npz'}: unreadable ({e})") from None
        sequences = [flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
        user_ids = []
        with open(path / "users.tsv", encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 2:
                    raise InputFormatError(path / "users.tsv", n, "expected 'index<TAB>user_id'")
                user_ids.append(parts[1])
        items = []
        with open(path / "items.csv", encoding="utf-8", newline="") as f:
            r = csv.DictReader(f)
            for n, row in enumerate(r, start=2):
                if int(row["id"]) != len(items) + 1:
                    raise InputFormatError(path / "items.csv", n, f"expected id {len(items) + 1}")
                items.append(ItemInfo(row["raw_id"], row["title"], row["image"]))
        return cls(sequences, items, user_ids, source=meta.get("source", ""))


def load_item_frequency(path: str | Path) -> np.ndarray:
    from ..io import load_npy

    return load_npy(Path(path) / "item_freq.npy")
