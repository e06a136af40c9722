"""Download the public Amazon 2014 review and metadata dumps (needs network; tested on loopback)."""

from __future__ import annotations

import http.client
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import MmesidError
from ..io import atomic_path

AMAZON_2014_BASE = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
_CATEGORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_&-]*")


def amazon_2014_files(category: str) -> list[str]:
    """The two file names of a category; the name is checked, as it becomes part of a path."""
    if not _CATEGORY.fullmatch(category):
        raise MmesidError(f"--category {category!r}: expected a name such as Beauty or Sports_and_Outdoors")
    return [f"reviews_{category}_5.json.gz", f"meta_{category}.json.gz"]


def _copy_local(src: Path, dest: Path) -> Path:
    if src.is_dir():
        raise MmesidError(f"{src}: is a folder, expected a file")
    if not src.exists():
        raise MmesidError(f"{src}: file not found")
    try:
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
    except OSError as e:
        raise MmesidError(f"{src}: copy to {dest} failed ({e.strerror or e})") from None
    return dest


def download(url: str, dest: str | Path, timeout: float = 60.0, progress: bool = True) -> Path:
    """Stream `url` (http(s) or a local path / file:// URL) to `dest` atomically, with progress."""
    from tqdm import tqdm

    dest = Path(dest)
    if "://" not in url:
        return _copy_local(Path(url), dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dest) as tmp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                                             disable=not progress) as bar:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise MmesidError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError, http.client.HTTPException) as e:
        raise MmesidError(f"{url}: download failed ({e})") from None
    return dest


def download_amazon_2014(category: str, out_dir: str | Path, base_url: str = AMAZON_2014_BASE,
                         overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Fetch the category's two files into `out_dir`; a file already there is kept unless `overwrite`."""
    out_dir = Path(out_dir)
    names = amazon_2014_files(category)
    if out_dir.exists() and not out_dir.is_dir():
        raise MmesidError(f"--out {out_dir}: is a file, expected a folder")
    for name in names:
        if (out_dir / name).is_dir():
            raise MmesidError(f"{out_dir / name}: is a folder, expected a file")
    out = []
    for name in names:
        dest = out_dir / name
        if dest.exists() and not overwrite:
            out.append(dest)
            continue
        src = f"{base_url.rstrip('/')}/{name}" if "://" in base_url else str(Path(base_url) / name)
        out.append(download(src, dest, progress=progress))
    return out
