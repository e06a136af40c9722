"""The canonical prepared dataset that every stage reads.

Items are numbered 1..n_items (0 is padding, so every item-aligned matrix in mmesid has
n_items + 1 rows with row 0 unused); users 0..n_users-1. On disk a prepared dataset is a folder:

    sequences.npz   items (int32, all sequences concatenated), offsets (int64, n_users + 1)
    users.tsv       user index <TAB> original user id
    items.csv       id,raw_id,title,image     (one row per item, id = 1..n_items)
    item_freq.npy   int64 [n_items + 1], occurrences of each item in the training split
    stats.json      users, items, interactions, lengths, density, source, and (for read inputs)
                    `input` (what the reader saw), `filters` and `dropped` (what it left out, and why)
    meta.json       format version and provenance

The folder is built under a temporary name and swapped in (`replace_dir`), so it is either
complete or absent, and it never replaces anything but an earlier prepared dataset.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import zipfile
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import InputFormatError, MmesidError
from ..io import write_json

FORMAT_VERSION = 1
ITEMS_HEADER = ["id", "raw_id", "title", "image"]


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
    # What the reader saw and dropped ({"input", "filters", "dropped"}); None for generated data.
    report: dict | None = None

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
        out = {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "avg_length": round(float(lengths.mean()), 4) if len(lengths) else 0.0,
            "min_length": int(lengths.min()) if len(lengths) else 0,
            "max_length": int(lengths.max()) if len(lengths) else 0,
            "density": round(self.n_interactions / max(1, self.n_users * self.n_items), 6),
            "source": self.source,
        }
        out.update(self.report or {})
        return out

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

    @property
    def fingerprint(self) -> str:
        """A content hash of the sequences and item ids: every artefact made from this dataset records
        it, and every consumer compares it, so files from another dataset are refused."""
        if getattr(self, "_fingerprint", None) is None:
            import hashlib

            h = hashlib.sha256()
            lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
            h.update(lengths.tobytes())
            if self.sequences:
                h.update(np.concatenate(self.sequences).astype(np.int64).tobytes())
            h.update("\x1f".join(it.raw_id for it in self.items).encode("utf-8", "surrogatepass"))
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def item_frequency(self) -> np.ndarray:
        """Occurrences of each item in the training split (every sequence without its last two,
        as `split.train_sequences`; computed here so that preparing data does not import torch)."""
        parts = [np.asarray(s[:-2], dtype=np.int64) for s in self.sequences]
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return np.bincount(flat, minlength=self.n_items + 1).astype(np.int64)

    # ---------------------------------------------------------------- disk format
    def save(self, path: str | Path, overwrite: bool = False, inputs: Iterable[str | Path] = ()) -> Path:
        """Write the prepared folder; refused (before any write) where `replace_dir` refuses it."""
        from ..artifacts.outputs import replace_dir

        path = Path(path)
        _check_writable_ids(self.user_ids)
        with replace_dir(path, "prepared-data", inputs=list(inputs), overwrite=overwrite) as tmp:
            lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            flat = (np.concatenate(self.sequences) if self.sequences else np.zeros(0)).astype(np.int32)
            with open(tmp / "sequences.npz", "wb") as f:
                np.savez(f, items=flat, offsets=offsets)
            with open(tmp / "users.tsv", "w", encoding="utf-8", newline="\n") as f:
                for i, u in enumerate(self.user_ids):
                    f.write(f"{i}\t{u}\n")
            with open(tmp / "items.csv", "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f)
                w.writerow(ITEMS_HEADER)
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
        """Read a prepared folder, checking every file, so a damaged one is an error naming the file."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise MmesidError(f"{path}: is a file, expected a prepared dataset folder")
        if not path.is_dir():
            raise MmesidError(f"{path}: prepared dataset folder not found (run `mmesid data prepare`)")
        meta = _read_meta(path / "meta.json")
        flat, offsets = _read_sequences(path / "sequences.npz")
        user_ids = _read_users(path / "users.tsv", len(offsets) - 1)
        items = _read_items(path / "items.csv")
        if len(flat) and (flat.min() < 1 or flat.max() > len(items)):
            bad = int(flat[(flat < 1) | (flat > len(items))][0])
            raise MmesidError(f"{path / 'sequences.npz'}: item id {bad} out of range 1..{len(items)} "
                              f"({path / 'items.csv'} has {len(items)} items)")
        sequences = np.split(flat, offsets[1:-1]) if len(offsets) > 1 else []
        return cls(sequences, items, user_ids, source=str(meta.get("source", "")),
                   report=_read_report(path / "stats.json"))


def _check_writable_ids(user_ids: list[str]) -> None:
    """users.tsv is one id per line: an id with a tab or a line break would corrupt it."""
    for u in user_ids:
        if any(c in u for c in "\t\n\r"):
            raise MmesidError(f"user id {u!r} contains a tab or a line break")


def _read_meta(path: Path) -> dict:
    if not path.is_file():
        raise MmesidError(f"{path}: missing; {path.parent} is not a complete prepared dataset")
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise MmesidError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise MmesidError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(meta, dict) or meta.get("format") != "mmesid-prepared":
        raise MmesidError(f"{path}: not an mmesid prepared dataset")
    if meta.get("version") != FORMAT_VERSION:
        raise MmesidError(f"{path}: format version {meta.get('version')!r} "
                          f"unsupported (expected {FORMAT_VERSION})")
    return meta


def _read_sequences(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The flat item array and the offsets, both checked (integer, 1-D, offsets 0..len, monotone)."""
    if not path.is_file():
        raise MmesidError(f"{path}: missing; {path.parent} is not a complete prepared dataset")
    errors = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)
    try:
        z = np.load(path, allow_pickle=False)
    except errors as e:
        raise MmesidError(f"{path}: unreadable ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise MmesidError(f"{path}: not an .npz archive")
    with z:
        if not {"items", "offsets"} <= set(z.files):
            raise MmesidError(f"{path}: expected arrays 'items' and 'offsets', found {sorted(z.files)}")
        try:
            flat, offsets = z["items"], z["offsets"]
        except errors as e:
            raise MmesidError(f"{path}: unreadable ({e})") from None
    for name, a in (("items", flat), ("offsets", offsets)):
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise MmesidError(f"{path}: '{name}' must be a 1-D integer array, got {a.dtype} {a.shape}")
    flat, offsets = flat.astype(np.int64), offsets.astype(np.int64)
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(flat):
        raise MmesidError(f"{path}: offsets must run from 0 to {len(flat)} (the number of items)")
    if (np.diff(offsets) < 0).any():
        raise MmesidError(f"{path}: offsets are not non-decreasing")
    return flat, offsets


def _read_users(path: Path, n_users: int) -> list[str]:
    from .textio import iter_lines

    user_ids = []
    if not path.is_file():
        raise MmesidError(f"{path}: missing; {path.parent} is not a complete prepared dataset")
    for n, line in iter_lines(path, allow_empty=True):
        parts = line.rstrip("\r\n").split("\t")  # ids never hold line breaks (the readers refuse them)
        if len(parts) != 2 or parts[0] != str(n - 1):
            raise InputFormatError(path, n, f"expected '{n - 1}<TAB>user_id'")
        user_ids.append(parts[1])
    if len(user_ids) != n_users:
        raise MmesidError(f"{path}: {len(user_ids)} users, but sequences.npz holds {n_users}")
    return user_ids


def _read_items(path: Path) -> list[ItemInfo]:
    from .textio import iter_csv

    if not path.is_file():
        raise MmesidError(f"{path}: missing; {path.parent} is not a complete prepared dataset")
    items = []
    for n, row in iter_csv(path, ","):
        if n == 1:
            if row != ITEMS_HEADER:
                raise InputFormatError(path, 1, f"header must be {','.join(ITEMS_HEADER)}")
            continue
        if len(row) != len(ITEMS_HEADER):
            raise InputFormatError(path, n, f"expected {len(ITEMS_HEADER)} fields, got {len(row)}")
        if row[0] != str(len(items) + 1):
            raise InputFormatError(path, n, f"expected id {len(items) + 1}, got {row[0]!r}")
        items.append(ItemInfo(row[1], row[2], row[3]))
    return items


def _read_report(path: Path) -> dict | None:
    """The reader's report kept in stats.json (derived information: a damaged one is ignored)."""
    try:
        stats = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(stats, dict) or not (isinstance(stats.get("dropped"), dict)
                                           or isinstance(stats.get("cold_split"), dict)):
        return None
    return {k: stats[k] for k in ("input", "filters", "dropped", "cold_split") if k in stats}


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def drop_summary(report: dict | None) -> list[str]:
    """One human line per reason anything was left out (empty when nothing was)."""
    if not report or not isinstance(report.get("dropped"), dict):
        return []
    d, lines = report["dropped"], []

    def get(key, sub=None):
        v = d.get(key, 0)
        v = v.get(sub, 0) if isinstance(v, dict) and sub else v
        return v if isinstance(v, int) else 0

    if get("duplicate_interactions"):
        lines.append(f"{_count(get('duplicate_interactions'), 'duplicate interaction')} "
                     "(same user, item and timestamp)")
    if get("duplicate_item_records"):
        lines.append(f"{_count(get('duplicate_item_records'), 'repeated item record')} (the first was kept)")
    for key, why in (("items_not_in_item_table", "missing from the item table"),
                     ("items_without_title", "without a title"), ("items_without_image", "without an image")):
        if get(key, "items"):
            lines.append(f"{_count(get(key, 'items'), 'item')} {why}, with "
                         f"{_count(get(key, 'interactions'), 'interaction')}")
    if get("users_without_kept_items"):
        lines.append(f"{_count(get('users_without_kept_items'), 'user')} left with no interactions by the above")
    if get("k_core", "interactions") or get("k_core", "users"):
        f = report.get("filters") if isinstance(report.get("filters"), dict) else {}
        lines.append(f"k-core (min_user={f.get('min_user')}, min_item={f.get('min_item')}): "
                     f"{_count(get('k_core', 'users'), 'user')}, {_count(get('k_core', 'items'), 'item')}, "
                     f"{_count(get('k_core', 'interactions'), 'interaction')}")
    return lines
