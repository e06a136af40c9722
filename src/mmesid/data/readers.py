"""Readers for the three supported inputs, each producing a `SequenceData`.

(a) the MME-SID authors' prepared files: `<Name>_new.txt` + `<Name>_text_img.csv`;
(b) the raw Amazon 2014 dumps: `reviews_<Cat>_5.json.gz` + `meta_<Cat>.json.gz` (metadata lines are
    Python literals, not JSON), streamed line by line;
(c) a plain interactions CSV/TSV (user, item, timestamp) plus an optional item table.

Every malformed input raises InputFormatError naming the file and line.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import InputFormatError, MmesidError
from .dataset import ItemInfo, SequenceData


def _open_text(path: Path) -> io.TextIOBase:
    if not path.exists():
        raise MmesidError(f"{path}: file not found")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8", newline="")


def _int(token: str, path: Path, line: int, what: str) -> int:
    try:
        v = int(token)
    except ValueError:
        raise InputFormatError(path, line, f"{what} {token!r} is not an integer") from None
    return v


# --------------------------------------------------------------------------- (a) authors' files
def read_authors(folder: str | Path, name: str | None = None) -> SequenceData:
    """Read `<name>_new.txt` and `<name>_text_img.csv` from `folder` (name guessed if unique)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MmesidError(f"{folder}: folder not found")
    if name is None:
        cands = sorted(p.name[: -len("_new.txt")] for p in folder.glob("*_new.txt"))
        if len(cands) != 1:
            raise MmesidError(f"{folder}: expected exactly one '<Name>_new.txt', found {cands or 'none'}")
        name = cands[0]
    seq_path = folder / f"{name}_new.txt"
    table_path = folder / f"{name}_text_img.csv"

    sequences: list[np.ndarray] = []
    user_ids: list[str] = []
    seen_users: dict[str, int] = {}
    max_item = 0
    with _open_text(seq_path) as f:
        for n, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                raise InputFormatError(seq_path, n, "empty line (expected 'user item item ...')")
            user = parts[0]
            _int(user, seq_path, n, "user id")
            if len(parts) < 2:
                raise InputFormatError(seq_path, n, f"user {user} has an empty sequence")
            if user in seen_users:
                raise InputFormatError(seq_path, n, f"duplicate user {user} (first on line {seen_users[user]})")
            seen_users[user] = n
            items = np.array([_int(t, seq_path, n, "item id") for t in parts[1:]], dtype=np.int64)
            if items.min() < 1:
                raise InputFormatError(seq_path, n, "item ids start at 1 (0 is padding)")
            max_item = max(max_item, int(items.max()))
            sequences.append(items)
            user_ids.append(user)
    if not sequences:
        raise InputFormatError(seq_path, None, "no sequences")

    infos: dict[int, ItemInfo] = {}
    if table_path.exists():
        with _open_text(table_path) as f:
            reader = csv.DictReader(f)
            need = {"asin", "title", "imUrl", "id"}
            if reader.fieldnames is None or not need <= set(reader.fieldnames):
                raise InputFormatError(table_path, 1, f"header must contain {sorted(need)}")
            for row in reader:
                n = reader.line_num
                iid = _int(row["id"], table_path, n, "item id")
                if iid < 1 or iid > max_item:
                    raise InputFormatError(table_path, n, f"unknown item id {iid} (sequences use 1..{max_item})")
                if iid in infos:
                    raise InputFormatError(table_path, n, f"duplicate item id {iid}")
                infos[iid] = ItemInfo(row["asin"], row["title"] or "", row["imUrl"] or "")
    items = [infos.get(i, ItemInfo(str(i))) for i in range(1, max_item + 1)]
    return SequenceData(sequences, items, user_ids, source=f"authors:{seq_path}")


# --------------------------------------------------------------------------- shared builder
@dataclass
class FilterOptions:
    min_user: int = 5  # k-core: users with fewer interactions are dropped (iteratively)
    min_item: int = 5
    require_title: bool = True
    require_image: bool = False


def build_sequences(
    interactions: Iterable[tuple[str, str, int]],
    item_table: dict[str, ItemInfo] | None,
    options: FilterOptions,
    source: str,
) -> SequenceData:
    """Filter (title/image, k-core), order chronologically and renumber to the canonical form."""
    by_user: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for order, (user, item, ts) in enumerate(interactions):
        by_user[user].append((ts, order, item))
    if not by_user:
        raise MmesidError(f"{source}: no interactions")

    def keep_item(item: str) -> bool:
        if item_table is None:
            return not (options.require_title or options.require_image)
        info = item_table.get(item)
        if info is None:
            return False
        if options.require_title and not info.title.strip():
            return False
        if options.require_image and not info.image.strip():
            return False
        return True

    # Items lacking the required side information go first (as the paper does), then k-core.
    seqs = {u: [x for x in v if keep_item(x[2])] for u, v in by_user.items()}
    while True:
        item_count: dict[str, int] = defaultdict(int)
        for v in seqs.values():
            for _, _, it in v:
                item_count[it] += 1
        changed = False
        new = {}
        for u, v in seqs.items():
            v2 = [x for x in v if item_count[x[2]] >= options.min_item]
            if len(v2) != len(v):
                changed = True
            if len(v2) >= options.min_user:
                new[u] = v2
            else:
                changed = changed or bool(v2) or bool(v)
        seqs = new
        if not changed:
            break
    if not seqs:
        raise MmesidError(f"{source}: nothing left after filtering (min_user={options.min_user}, "
                          f"min_item={options.min_item})")
    # Chronological order (stable on the file order for equal timestamps); items numbered by first
    # appearance in user order, users in order of first appearance in the input.
    item_index: dict[str, int] = {}
    sequences, user_ids = [], []
    for u, v in seqs.items():
        v.sort(key=lambda x: (x[0], x[1]))
        ids = []
        for _, _, it in v:
            if it not in item_index:
                item_index[it] = len(item_index) + 1
            ids.append(item_index[it])
        sequences.append(np.array(ids, dtype=np.int64))
        user_ids.append(u)
    items = [None] * len(item_index)
    for it, i in item_index.items():
        info = (item_table or {}).get(it)
        items[i - 1] = ItemInfo(it, info.title if info else "", info.image if info else "")
    return SequenceData(sequences, items, user_ids, source=source)


# --------------------------------------------------------------------------- (b) raw Amazon 2014
def iter_amazon_reviews(path: str | Path) -> Iterator[tuple[str, str, int]]:
    """Stream (reviewerID, asin, unixReviewTime) from a `reviews_<Cat>_5.json.gz` file."""
    path = Path(path)
    with _open_text(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                yield str(r["reviewerID"]), str(r["asin"]), int(r["unixReviewTime"])
            except json.JSONDecodeError as e:
                raise InputFormatError(path, n, f"invalid JSON ({e.msg})") from None
            except KeyError as e:
                raise InputFormatError(path, n, f"missing key {e.args[0]!r}") from None
            except (TypeError, ValueError):
                raise InputFormatError(path, n, "unixReviewTime is not an integer") from None


def iter_amazon_meta(path: str | Path) -> Iterator[tuple[str, ItemInfo]]:
    """Stream item metadata from `meta_<Cat>.json.gz`, whose lines are Python literals (not JSON)."""
    path = Path(path)
    with _open_text(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                r = ast.literal_eval(line)
            except (ValueError, SyntaxError):
                try:
                    r = json.loads(line)  # the 2018 release uses JSON; accept both
                except json.JSONDecodeError:
                    raise InputFormatError(path, n, "not a Python-literal or JSON record") from None
            if not isinstance(r, dict) or "asin" not in r:
                raise InputFormatError(path, n, "record without 'asin'")
            title = r.get("title") or ""
            image = r.get("imUrl") or ""
            if not image and isinstance(r.get("imageURLHighRes"), list) and r["imageURLHighRes"]:
                image = r["imageURLHighRes"][0]
            yield str(r["asin"]), ItemInfo(str(r["asin"]), " ".join(str(title).split()), str(image))


def read_amazon(reviews: str | Path, meta: str | Path, options: FilterOptions | None = None) -> SequenceData:
    options = options or FilterOptions()
    # Only the metadata of reviewed items is kept, so a large category's catalogue stays small.
    reviewed: set[str] = set()
    interactions = []
    for user, item, ts in iter_amazon_reviews(reviews):
        reviewed.add(item)
        interactions.append((user, item, ts))
    table = {asin: info for asin, info in iter_amazon_meta(meta) if asin in reviewed}
    return build_sequences(interactions, table, options, source=f"amazon:{Path(reviews).name}")


# --------------------------------------------------------------------------- (c) interactions CSV
def _delimiter(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return "\t" if name.endswith((".tsv", ".tab")) else ","


def read_interactions(path: str | Path, items_path: str | Path | None = None,
                      options: FilterOptions | None = None) -> SequenceData:
    """Read `user,item,timestamp` rows (header required) and an optional `item,title,image` table."""
    path = Path(path)
    options = options or FilterOptions(require_title=items_path is not None)
    interactions = []
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=_delimiter(path))
        header = next(reader, None)
        if header is None:
            raise InputFormatError(path, 1, "empty file")
        cols = [h.strip().lower() for h in header]
        try:
            iu, ii, it = cols.index("user"), cols.index("item"), cols.index("timestamp")
        except ValueError:
            raise InputFormatError(path, 1, f"header must name columns user,item,timestamp (got {header})") from None
        for row in reader:
            n = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(cols):
                raise InputFormatError(path, n, f"expected {len(cols)} fields, got {len(row)}")
            ts_raw = row[it].strip()
            try:
                ts = int(float(ts_raw))
            except ValueError:
                raise InputFormatError(path, n, f"timestamp {ts_raw!r} is not a number") from None
            user, item = row[iu].strip(), row[ii].strip()
            if not user or not item:
                raise InputFormatError(path, n, "empty user or item")
            interactions.append((user, item, ts))
    if not interactions:
        raise InputFormatError(path, None, "no interactions")
    table = None
    if items_path is not None:
        items_path = Path(items_path)
        known = {i for _, i, _ in interactions}
        table = {}
        with _open_text(items_path) as f:
            reader = csv.DictReader(f, delimiter=_delimiter(items_path))
            if reader.fieldnames is None or "item" not in [c.strip().lower() for c in reader.fieldnames]:
                raise InputFormatError(items_path, 1, "header must name an 'item' column (and title, image)")
            reader.fieldnames = [c.strip().lower() for c in reader.fieldnames]
            for row in reader:
                n = reader.line_num
                item = (row.get("item") or "").strip()
                if item not in known:
                    raise InputFormatError(items_path, n, f"unknown item {item!r} (not in {path.name})")
                if item in table:
                    raise InputFormatError(items_path, n, f"duplicate item {item!r}")
                table[item] = ItemInfo(item, (row.get("title") or "").strip(), (row.get("image") or "").strip())
    return build_sequences(interactions, table, options, source=f"interactions:{path.name}")
