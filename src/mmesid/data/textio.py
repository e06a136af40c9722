"""Checked text input shared by the readers and the prepared-dataset loader.

Every line is decoded on its own, so a byte that is not UTF-8, a damaged or truncated gzip stream,
an empty file or a malformed CSV record becomes an InputFormatError naming the file and line.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from pathlib import Path
from typing import Iterator

from ..errors import InputFormatError, MmesidError

_GZIP_MAGIC = b"\x1f\x8b"


def check_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise MmesidError(f"{path}: is a folder, expected a file")
    if not path.exists():
        raise MmesidError(f"{path}: file not found")
    return path


def check_folder(path: str | Path, what: str = "folder") -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MmesidError(f"{path}: is a file, expected a {what}")
    if not path.is_dir():
        raise MmesidError(f"{path}: folder not found")
    return path


def _is_gzip(path: Path) -> bool:
    if path.suffix.lower() == ".gz":
        return True
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _decode(raw: bytes, path: Path, n: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputFormatError(path, n, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at position "
                                        f"{e.start + 1} of the line)") from None
    return text[1:] if n == 1 and text.startswith("\ufeff") else text


def iter_lines(path: str | Path, allow_empty: bool = False) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a UTF-8 text file, plain or gzip-compressed.

    Lines are decoded one at a time, so a byte that is not UTF-8, a damaged or truncated gzip
    stream, or an empty file is an InputFormatError naming the file and line, never a traceback.
    """
    path = check_file(path)
    n = 0
    try:
        with (gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")) as f:
            for n, raw in enumerate(f, start=1):
                yield n, _decode(raw, path, n)
    except gzip.BadGzipFile as e:
        raise InputFormatError(path, n + 1 if n else None, f"not a valid gzip file ({e})") from None
    except EOFError:
        raise InputFormatError(path, n + 1, "truncated gzip file (it ends inside this line)") from None
    except zlib.error as e:
        raise InputFormatError(path, n + 1, f"damaged gzip data ({e})") from None
    except OSError as e:
        raise MmesidError(f"{path}: cannot read ({e.strerror or e})") from None
    if n == 0 and not allow_empty:
        raise InputFormatError(path, None, "empty file")


def _csv_message(e: csv.Error) -> str:
    msg = str(e)
    if "new-line character" in msg:
        return "a carriage return (\\r) inside an unquoted field"
    return msg


def iter_csv(path: str | Path, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """(line where the record starts, fields) of every record, header included; blank lines skipped.

    Quoting is strict, and every csv.Error (a stray quote, a field over the csv field-size limit)
    becomes an InputFormatError naming the line.
    """
    path = Path(path)
    reader = csv.reader((text for _, text in iter_lines(path)), delimiter=delimiter, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise InputFormatError(path, reader.line_num, f"malformed CSV ({_csv_message(e)})") from None
        if row:
            yield start, row
