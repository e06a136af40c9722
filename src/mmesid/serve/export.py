"""Top-k for every user to a Parquet or CSV file, streamed in batches (one row per user and rank)."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

from ..errors import MmesidError
from .recommender import Recommender

COLUMNS = ["user_id", "rank", "item_id", "title", "score"]
FORMATS = {".parquet": "parquet", ".csv": "csv"}


def export_format(out: str | Path) -> str:
    fmt = FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise MmesidError(f"--out {out}: expected a file ending in .parquet or .csv")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise MmesidError("writing Parquet needs pyarrow: pip install 'mmesid[serve]' (or write .csv)") from None
    return fmt


def _rows(users, recs) -> dict[str, list]:
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    for u, r in zip(users, recs):
        for rank, (item, title, score) in enumerate(zip(r.items, r.titles, r.scores), 1):
            for c, v in zip(COLUMNS, (u, rank, item, title, score)):
                cols[c].append(v)
    return cols


def export_all_users(rec: Recommender, out: str | Path, k: int = 10, exclude_history: bool = True,
                     progress: bool = True) -> dict:
    """Write the file under a temporary name and rename it when complete; returns counts."""
    from tqdm import tqdm

    out = Path(out)
    fmt = export_format(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    n_users = n_rows = 0
    try:
        writer = _open(fmt, tmp)
        with tqdm(total=rec.data.n_users, desc="recommend", unit="user", disable=not progress) as bar:
            for users, recs in rec.iter_all_users(k, exclude_history):
                cols = _rows(users, recs)
                writer.write(cols)
                n_users += len(users)
                n_rows += len(cols["user_id"])
                bar.update(len(users))
        writer.close()
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"users": n_users, "rows": n_rows, "k": k, "format": fmt, "out": str(out)}


class _CSV:
    def __init__(self, path: str):
        self.f = open(path, "w", newline="", encoding="utf-8")
        self.w = csv.writer(self.f)
        self.w.writerow(COLUMNS)

    def write(self, cols: dict[str, list]) -> None:
        self.w.writerows(zip(*(cols[c] for c in COLUMNS)))

    def close(self) -> None:
        self.f.close()


class _Parquet:
    def __init__(self, path: str):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = pa.schema([("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()),
                                 ("title", pa.string()), ("score", pa.float32())])
        self.w = pq.ParquetWriter(path, self.schema)

    def write(self, cols: dict[str, list]) -> None:
        self.w.write_table(self.pa.table(cols, schema=self.schema))

    def close(self) -> None:
        self.w.close()


def _open(fmt: str, path: str):
    return _Parquet(path) if fmt == "parquet" else _CSV(path)
