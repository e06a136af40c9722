"""Download the public Amazon 2014 review and metadata dumps (needs network; tested on loopback)."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ..errors import MmesidError
from ..io import atomic_path

AMAZON_2014_BASE = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
# Category names as they appear in the 2014 file names.
AMAZON_2014_CATEGORIES = ["Beauty", "Sports_and_Outdoors", "Toys_and_Games", "Clothing_Shoes_and_Jewelry",
                          "Cell_Phones_and_Accessories", "Grocery_and_Gourmet_Food", "Home_and_Kitchen",
                          "Health_and_Personal_Care", "Office_Products", "Pet_Supplies", "Video_Games",
                          "Tools_and_Home_Improvement", "Digital_Music", "Baby"]


def amazon_2014_files(category: str) -> list[str]:
    return [f"reviews_{category}_5.json.gz", f"meta_{category}.json.gz"]


def download(url: str, dest: str | Path, timeout: float = 60.0) -> Path:
    """Stream `url` (http(s) or a local path / file:// URL) to `dest` atomically, with progress."""
    dest = Path(dest)
    if "://" not in url:
        src = Path(url)
        if not src.exists():
            raise MmesidError(f"{src}: file not found")
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
        return dest
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dest) as tmp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise MmesidError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise MmesidError(f"{url}: download failed ({e})") from None
    return dest


def download_amazon_2014(category: str, out_dir: str | Path, base_url: str = AMAZON_2014_BASE,
                         force: bool = False) -> list[Path]:
    out_dir = Path(out_dir)
    out = []
    for name in amazon_2014_files(category):
        dest = out_dir / name
        if dest.exists() and not force:
            out.append(dest)
            continue
        src = f"{base_url.rstrip('/')}/{name}" if "://" in base_url else str(Path(base_url) / name)
        out.append(download(src, dest))
    return out
