"""Readers for the three supported inputs, each producing a `SequenceData`.

(a) the MME-SID authors' prepared files: `<Name>_new.txt` + `<Name>_text_img.csv`;
(b) the raw Amazon 2014 dumps: `reviews_<Cat>_5.json.gz` + `meta_<Cat>.json.gz` (metadata lines are
    Python literals, not JSON), streamed line by line;
(c) a plain interactions CSV/TSV (user, item, timestamp) plus an optional item table.

Every malformed input raises InputFormatError naming the file and line. Nothing is left out
silently: exact duplicate interactions, items without an item-table row, title or image, and the
k-core removals are counted in the dataset's report, which `data prepare` prints and stats.json keeps.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..config import bounded, check_ranges
from ..errors import InputFormatError, MmesidError
from .dataset import ItemInfo, SequenceData, drop_summary
from .textio import check_file, check_folder, iter_csv, iter_lines

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INT = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _columns(path: Path, n: int, header: list[str], need: tuple[str, ...],
             want: tuple[str, ...] = ()) -> dict[str, int]:
    """Column index of each needed / wanted name (case-insensitive); a missing or repeated one is an error."""
    cols = [c.strip().lower() for c in header]
    for name in need + want:
        if cols.count(name) > 1:
            raise InputFormatError(path, n, f"column {name!r} appears more than once in the header")
    missing = [c for c in need if c not in cols]
    if missing:
        raise InputFormatError(path, n, f"header must name the columns {','.join(need)} (got {header})")
    return {c: cols.index(c) for c in need + want if c in cols}


def _int(token: str, path: Path, line: int, what: str) -> int:
    """A decimal integer within int64 (ASCII digits only, so the id is what the file says)."""
    if not _INT.fullmatch(token):
        raise InputFormatError(path, line, f"{what} {token[:40]!r} is not an integer")
    if len(token.lstrip("+-").lstrip("0")) > 19 or not INT64_MIN <= int(token) <= INT64_MAX:
        raise InputFormatError(path, line, f"{what} {token[:40]!r} is outside the 64-bit integer range")
    return int(token)


def parse_timestamp(raw: str, path: Path, line: int) -> int | float:
    """A finite number within int64; fractions are kept (they order the interactions)."""
    t = raw.strip()
    if _INT.fullmatch(t):
        return _int(t, path, line, "timestamp")
    if not _NUMBER.fullmatch(t):
        special = t.lower().lstrip("+-") in ("inf", "infinity", "nan")
        raise InputFormatError(path, line, f"timestamp {raw[:40]!r} is not a "
                                           f"{'finite number' if special else 'number'}")
    return _number(float(t), raw, path, line)


def _number(v: float, raw, path: Path, line: int) -> int | float:
    if not math.isfinite(v):
        raise InputFormatError(path, line, f"timestamp {raw!r} is not a finite number")
    if not INT64_MIN <= v <= INT64_MAX:
        raise InputFormatError(path, line, f"timestamp {raw!r} is outside the 64-bit integer range")
    return int(v) if float(v).is_integer() else v


def _text(value, path: Path, line: int, what: str) -> str:
    """A string that can be written back as UTF-8 (JSON escapes can produce lone surrogates)."""
    s = value if isinstance(value, str) else str(value)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise InputFormatError(path, line, f"{what} contains an invalid character (a lone surrogate)") from None
    return s


def _id(value: str, path: Path, line: int, label: str) -> str:
    """A user or item id: non-empty, one line, no tab (ids are written one per line)."""
    s = _text(value, path, line, label).strip()
    if not s:
        raise InputFormatError(path, line, f"empty {label}")
    if any(c in s for c in "\t\n\r"):
        raise InputFormatError(path, line, f"{label} {s[:40]!r} contains a tab or a line break")
    return s


# --------------------------------------------------------------------------- (a) authors' files
def read_authors(folder: str | Path, name: str | None = None) -> SequenceData:
    """Read `<name>_new.txt` and `<name>_text_img.csv` from `folder` (name guessed if unique)."""
    folder = check_folder(folder, "folder with <Name>_new.txt")
    if name is None:
        cands = sorted(p.name[: -len("_new.txt")] for p in folder.glob("*_new.txt"))
        if len(cands) != 1:
            raise MmesidError(f"{folder}: expected exactly one '<Name>_new.txt', found {cands or 'none'}")
        name = cands[0]
    if not name or Path(name).name != name:
        raise MmesidError(f"--name {name!r}: expected a dataset name such as Beauty, not a path")
    seq_path = folder / f"{name}_new.txt"
    sequences, user_ids = _read_author_sequences(seq_path)
    max_item = _check_item_ids(seq_path, sequences)
    table_path = folder / f"{name}_text_img.csv"
    infos = _read_author_table(table_path, max_item) if table_path.exists() else {}
    items = [infos.get(i, ItemInfo(str(i))) for i in range(1, max_item + 1)]
    n = int(sum(len(s) for s in sequences))
    report = {"input": {"users": len(sequences), "items": max_item, "interactions": n},
              "filters": None, "dropped": _no_drops()}
    return SequenceData(sequences, items, user_ids, source=f"authors:{seq_path}", report=report)


def _read_author_sequences(seq_path: Path) -> tuple[list[np.ndarray], list[str]]:
    sequences: list[np.ndarray] = []
    user_ids: list[str] = []
    seen_users: dict[str, int] = {}
    for n, line in iter_lines(seq_path):
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
        sequences.append(items)
        user_ids.append(user)
    return sequences, user_ids


def _check_item_ids(seq_path: Path, sequences: list[np.ndarray]) -> int:
    """The items must be exactly 1..max (every id used), as the prepared format numbers them."""
    used = np.unique(np.concatenate(sequences))
    if int(used[-1]) != len(used):
        gaps = np.flatnonzero(used != np.arange(1, len(used) + 1))
        missing = int(gaps[0]) + 1
        raise InputFormatError(seq_path, None, f"item ids must be 1..{int(used[-1])} without gaps; "
                                               f"item {missing} occurs in no sequence")
    return int(used[-1])


def _read_author_table(table_path: Path, max_item: int) -> dict[int, ItemInfo]:
    infos: dict[int, ItemInfo] = {}
    rows = iter_csv(table_path, ",")
    n, header = next(rows, (1, []))
    need = ("asin", "title", "imurl", "id")
    if not header:
        raise InputFormatError(table_path, n, "no header (expected asin,title,imUrl,id)")
    col = _columns(table_path, n, header, need)
    for n, row in rows:
        if len(row) != len(header):
            raise InputFormatError(table_path, n, f"expected {len(header)} fields (as the header), got {len(row)}")
        iid = _int(row[col["id"]].strip(), table_path, n, "item id")
        if iid < 1 or iid > max_item:
            raise InputFormatError(table_path, n, f"unknown item id {iid} (sequences use 1..{max_item})")
        if iid in infos:
            raise InputFormatError(table_path, n, f"duplicate item id {iid}")
        infos[iid] = ItemInfo(row[col["asin"]], row[col["title"]], row[col["imurl"]])
    return infos


# --------------------------------------------------------------------------- shared builder
@dataclass
class FilterOptions:
    min_user: int = bounded(5, ge=1)  # k-core: users with fewer interactions are dropped (iteratively)
    min_item: int = bounded(5, ge=1)
    require_title: bool = True
    require_image: bool = False


def _no_drops() -> dict:
    zero = {"items": 0, "interactions": 0}
    return {"duplicate_interactions": 0, "duplicate_item_records": 0, "items_not_in_item_table": dict(zero),
            "items_without_title": dict(zero), "items_without_image": dict(zero),
            "users_without_kept_items": 0, "k_core": {"users": 0, "items": 0, "interactions": 0}}


def build_sequences(
    interactions: Iterable[tuple[str, str, int | float]],
    item_table: dict[str, ItemInfo] | None,
    options: FilterOptions,
    source: str,
    duplicate_item_records: int = 0,
) -> SequenceData:
    """Drop duplicates, items without side information and the k-core, order chronologically,
    renumber to the canonical form; every removal is counted in the report."""
    check_ranges(options)
    if item_table is None and (options.require_title or options.require_image):
        raise MmesidError(f"{source}: requiring titles or images needs an item table")
    by_user, duplicates = _group_by_user(interactions)
    if not by_user:
        raise MmesidError(f"{source}: no interactions")
    dropped = _no_drops()
    dropped["duplicate_interactions"] = duplicates
    dropped["duplicate_item_records"] = duplicate_item_records
    report = {"input": {"users": len(by_user), "items": len({x[2] for v in by_user.values() for x in v}),
                        "interactions": sum(len(v) for v in by_user.values()) + duplicates},
              "filters": asdict(options), "dropped": dropped}
    seqs = _drop_items_without_info(by_user, item_table, options, dropped)
    kept = {u: v for u, v in seqs.items() if v}
    dropped["users_without_kept_items"] = len(seqs) - len(kept)
    seqs = _k_core(kept, options.min_user, options.min_item, dropped["k_core"])
    if not seqs:
        raise MmesidError(f"{source}: nothing left after filtering: {'; '.join(drop_summary(report))}")
    return _renumber(seqs, item_table, source, report)


def _group_by_user(interactions) -> tuple[dict[str, list[tuple]], int]:
    """(ts, file order, item) per user in first-appearance order; exact repeats counted, not kept."""
    by_user: dict[str, list[tuple]] = {}
    seen: set[tuple] = set()
    duplicates = 0
    for order, (user, item, ts) in enumerate(interactions):
        if (user, item, ts) in seen:
            duplicates += 1
            continue
        seen.add((user, item, ts))
        by_user.setdefault(user, []).append((ts, order, item))
    return by_user, duplicates


def _drop_items_without_info(by_user: dict, table: dict[str, ItemInfo] | None, options: FilterOptions,
                             dropped: dict) -> dict:
    """Items without a table row / title / image go first, as the paper does (counted per reason)."""
    if table is None:
        return by_user

    def reason(item: str) -> str | None:
        info = table.get(item)
        if info is None:
            return "items_not_in_item_table"
        if options.require_title and not info.title.strip():
            return "items_without_title"
        if options.require_image and not info.image.strip():
            return "items_without_image"
        return None

    counts = Counter(x[2] for v in by_user.values() for x in v)
    why = {it: reason(it) for it in counts}
    for it, r in why.items():
        if r is not None:
            dropped[r]["items"] += 1
            dropped[r]["interactions"] += counts[it]
    return {u: [x for x in v if why[x[2]] is None] for u, v in by_user.items()}


def _k_core(seqs: dict, min_user: int, min_item: int, counts: dict) -> dict:
    """Iteratively drop items with < min_item and users with < min_user interactions."""
    users0, n0 = len(seqs), sum(len(v) for v in seqs.values())
    items0 = len({x[2] for v in seqs.values() for x in v})
    while True:
        freq = Counter(x[2] for v in seqs.values() for x in v)
        rare = {it for it, c in freq.items() if c < min_item}
        if rare:
            seqs = {u: [x for x in v if x[2] not in rare] for u, v in seqs.items()}
        short = [u for u, v in seqs.items() if len(v) < min_user]
        for u in short:
            del seqs[u]
        if not rare and not short:
            break
    counts["users"] = users0 - len(seqs)
    counts["items"] = items0 - len({x[2] for v in seqs.values() for x in v})
    counts["interactions"] = n0 - sum(len(v) for v in seqs.values())
    return seqs


def _renumber(seqs: dict, item_table: dict[str, ItemInfo] | None, source: str, report: dict) -> SequenceData:
    """Chronological order (file order breaks ties); items numbered by first appearance in user
    order, users kept in order of first appearance in the input."""
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
    items: list[ItemInfo] = [ItemInfo("")] * len(item_index)
    for it, i in item_index.items():
        info = (item_table or {}).get(it)
        items[i - 1] = ItemInfo(it, info.title if info else "", info.image if info else "")
    return SequenceData(sequences, items, user_ids, source=source, report=report)


# --------------------------------------------------------------------------- (b) raw Amazon 2014
def _json_object(line: str, path: Path, n: int) -> dict:
    try:
        r = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputFormatError(path, n, f"invalid JSON ({e.msg})") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer with thousands of digits, deep nesting
        raise InputFormatError(path, n, f"invalid JSON ({type(e).__name__})") from None
    if not isinstance(r, dict):
        raise InputFormatError(path, n, "expected a JSON object")
    return r


def _json_id(value, path: Path, n: int, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputFormatError(path, n, f"{key} must be a string, got {type(value).__name__}")
    return _id(str(value), path, n, key)


def _json_timestamp(value, path: Path, n: int) -> int | float:
    if isinstance(value, str):
        return parse_timestamp(value, path, n)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputFormatError(path, n, f"unixReviewTime must be a number, got {type(value).__name__}")
    return _number(value, value, path, n)


def iter_amazon_reviews(path: str | Path) -> Iterator[tuple[str, str, int | float]]:
    """Stream (reviewerID, asin, unixReviewTime) from a `reviews_<Cat>_5.json.gz` file."""
    path = check_file(path)
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        r = _json_object(line, path, n)
        for key in ("reviewerID", "asin", "unixReviewTime"):
            if key not in r:
                raise InputFormatError(path, n, f"missing key {key!r}")
        yield (_json_id(r["reviewerID"], path, n, "reviewerID"), _json_id(r["asin"], path, n, "asin"),
               _json_timestamp(r["unixReviewTime"], path, n))


def _meta_record(line: str, path: Path, n: int) -> dict:
    try:
        r = ast.literal_eval(line)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        try:
            r = json.loads(line)  # the 2018 release uses JSON; accept both
        except (ValueError, RecursionError):
            raise InputFormatError(path, n, "not a Python-literal or JSON record") from None
    if not isinstance(r, dict) or "asin" not in r:
        raise InputFormatError(path, n, "record without 'asin'")
    return r


def iter_amazon_meta(path: str | Path) -> Iterator[tuple[str, ItemInfo]]:
    """Stream item metadata from `meta_<Cat>.json.gz`, whose lines are Python literals (not JSON)."""
    path = check_file(path)
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        r = _meta_record(line, path, n)
        asin = _json_id(r["asin"], path, n, "asin")
        title = _text(r.get("title") or "", path, n, "title")
        image = r.get("imUrl") or ""
        if not image and isinstance(r.get("imageURLHighRes"), list) and r["imageURLHighRes"]:
            image = r["imageURLHighRes"][0]
        yield asin, ItemInfo(asin, " ".join(title.split()), _text(image, path, n, "image"))


def read_amazon(reviews: str | Path, meta: str | Path, options: FilterOptions | None = None) -> SequenceData:
    options = options or FilterOptions()
    reviews, meta = check_file(reviews), check_file(meta)
    interactions = list(iter_amazon_reviews(reviews))
    # Only the metadata of reviewed items is kept, so a large category's catalogue stays small; a
    # repeated record of a reviewed item is ignored (the first one is kept) and counted.
    reviewed = {item for _, item, _ in interactions}
    table: dict[str, ItemInfo] = {}
    repeated = 0
    for asin, info in iter_amazon_meta(meta):
        if asin in reviewed:
            if asin in table:
                repeated += 1
            else:
                table[asin] = info
    return build_sequences(interactions, table, options, source=f"amazon:{reviews.name}",
                           duplicate_item_records=repeated)


# --------------------------------------------------------------------------- (c) interactions CSV
def _delimiter(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return "\t" if name.endswith((".tsv", ".tab")) else ","


def iter_interactions(path: str | Path) -> Iterator[tuple[str, str, int | float]]:
    """(user, item, timestamp) of each row of a CSV/TSV with a header naming those columns."""
    path = check_file(path)
    rows = iter_csv(path, _delimiter(path))
    n, header = next(rows, (1, []))
    if not header:
        raise InputFormatError(path, None, "no header (the file holds only blank lines)")
    col = _columns(path, n, header, ("user", "item", "timestamp"))
    count = 0
    for n, row in rows:
        if len(row) != len(header):
            raise InputFormatError(path, n, f"expected {len(header)} fields (as the header), got {len(row)}")
        yield (_id(row[col["user"]], path, n, "user id"), _id(row[col["item"]], path, n, "item id"),
               parse_timestamp(row[col["timestamp"]], path, n))
        count += 1
    if not count:
        raise InputFormatError(path, None, "no interactions (only a header)")


def read_item_table(path: str | Path, known: set[str], source: str) -> dict[str, ItemInfo]:
    """An `item[,title][,image]` table; every item must occur in the interactions, once."""
    path = check_file(path)
    rows = iter_csv(path, _delimiter(path))
    n, header = next(rows, (1, []))
    if not header:
        raise InputFormatError(path, None, "no header (expected item,title,image)")
    col = _columns(path, n, header, ("item",), ("title", "image"))
    table: dict[str, ItemInfo] = {}
    for n, row in rows:
        if len(row) != len(header):
            raise InputFormatError(path, n, f"expected {len(header)} fields (as the header), got {len(row)}")
        item = _id(row[col["item"]], path, n, "item id")
        if item not in known:
            raise InputFormatError(path, n, f"unknown item {item!r} (not in {source})")
        if item in table:
            raise InputFormatError(path, n, f"duplicate item {item!r}")
        title = row[col["title"]].strip() if "title" in col else ""
        image = row[col["image"]].strip() if "image" in col else ""
        table[item] = ItemInfo(item, title, image)
    return table


def read_interactions(path: str | Path, items_path: str | Path | None = None,
                      options: FilterOptions | None = None) -> SequenceData:
    """Read `user,item,timestamp` rows (header required) and an optional `item,title,image` table."""
    path = Path(path)
    options = options or FilterOptions(require_title=items_path is not None)
    interactions = list(iter_interactions(path))
    table = None
    if items_path is not None:
        table = read_item_table(items_path, {i for _, i, _ in interactions}, path.name)
    return build_sequences(interactions, table, options, source=f"interactions:{path.name}")
