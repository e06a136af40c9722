"""Image encoders: CLIP-family vision towers from local Hugging Face folders.

Images come from a local folder (file named as the item table's image column, or `<raw_id>.jpg`
etc.), from local paths in the item table, or from URLs downloaded once into an on-disk cache.
An item whose image is missing, cannot be downloaded or cannot be decoded is a `Problem`: the
policy `fail` stops with the item and path, `zero` writes a zero row with mask 0. Never silently.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import torch

from ..artifacts.embeddings import MODALITY_NAMES, write_item_embedding
from ..data.dataset import ItemInfo, SequenceData
from ..errors import MmesidError
from ..io import atomic_path, file_sha256
from ._hf import LOAD_ERRORS, check_model_folder, load_failure, read_config_json
from .base import (EncodeResult, Encoder, Problem, cached_output, cached_result, check_output, check_policy,
                   content_hash, fail_on_problems, file_metadata, l2_normalize, model_folder_fingerprint,
                   resolve_device, resolve_dtype, run_batches, write_problems)

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
IMAGE_POOLINGS = ("auto", "pooler", "mean", "cls")
MAX_DOWNLOAD_BYTES = 50 << 20
USER_AGENT = "mmesid-image-fetcher/0.1 (+https://github.com/)"
VISUAL = MODALITY_NAMES["v"]


class DownloadError(Exception):
    pass


def is_url(ref: str) -> bool:
    return ref.lower().startswith(("http://", "https://"))


class ImageSource:
    """Finds the image file of an item: local folder first, then the item's own path or URL."""

    def __init__(self, data_dir: str | Path | None = None, image_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None, download: bool = True, timeout: float = 20.0,
                 retries: int = 2, give_up_after: int = 32):
        self.data_dir = Path(data_dir) if data_dir else None
        self.image_dir = Path(image_dir) if image_dir else None
        if self.image_dir is not None and not self.image_dir.is_dir():
            raise MmesidError(f"{self.image_dir}: image folder not found")
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.download = download
        self.timeout = timeout
        self.retries = retries
        # After this many network-level failures in a row (no HTTP answer at all) the host is taken
        # to be unreachable: the remaining URLs are reported at once instead of each waiting for
        # its retries, which would take an hour on an offline machine with a large catalogue.
        self.give_up_after = give_up_after
        self._net_failures = 0
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- where is the file
    def local_candidates(self, info: ItemInfo) -> list[Path]:
        ref = info.image.strip()
        out: list[Path] = []
        if self.image_dir is not None:
            if ref:
                name = Path(urllib.parse.urlparse(ref).path).name if is_url(ref) else Path(ref).name
                if name:
                    out.append(self.image_dir / name)
            out += [self.image_dir / f"{info.raw_id}{ext}" for ext in IMAGE_EXTS]
        if ref and not is_url(ref):
            p = Path(ref).expanduser()
            if not p.is_absolute() and self.data_dir is not None:
                p = self.data_dir / p
            out.append(p)
        return out

    def find_local(self, info: ItemInfo) -> Path | None:
        for p in self.local_candidates(info):
            if p.is_file():
                return p
        return None

    def cache_path(self, url: str) -> Path:
        if self.cache_dir is None:
            raise MmesidError("image URLs need a download cache folder (--cache)")
        ext = Path(urllib.parse.urlparse(url).path).suffix.lower()
        ext = ext if ext in IMAGE_EXTS else ".img"
        return self.cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:32]}{ext}"

    def locate(self, item: int, info: ItemInfo) -> tuple[Path | None, Problem | None]:
        """(path, None) or (None, Problem). Downloads URLs into the cache when allowed."""
        local = self.find_local(info)
        if local is not None:
            return local, None
        ref = info.image.strip()
        if is_url(ref):
            if self.cache_dir is not None and self.cache_path(ref).is_file():
                return self.cache_path(ref), None
            if not self.download:
                return None, Problem(item, info.raw_id, ref, "not found locally and downloads are off")
            if self.give_up_after and self._net_failures >= self.give_up_after:
                return None, Problem(item, info.raw_id, ref, f"download skipped: {self._net_failures} network "
                                     f"failures in a row (offline?)")
            try:
                return self.fetch(ref), None
            except DownloadError as e:
                return None, Problem(item, info.raw_id, ref, f"download failed ({e})")
        if not ref and self.image_dir is None:
            return None, Problem(item, info.raw_id, "", "no image in the item table")
        tried = self.local_candidates(info)
        where = str(tried[0]) if tried else ref
        return None, Problem(item, info.raw_id, where, "image file not found")

    def fetch(self, url: str) -> Path:
        """Download `url` once into the cache (atomic write); retries transient failures."""
        dest = self.cache_path(url)
        if dest.is_file():
            return dest
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    body = resp.read(MAX_DOWNLOAD_BYTES + 1)
                if len(body) > MAX_DOWNLOAD_BYTES:
                    raise DownloadError(f"larger than {MAX_DOWNLOAD_BYTES >> 20} MiB")
                if not body:
                    raise DownloadError("empty response")
                with atomic_path(dest) as tmp:
                    tmp.write_bytes(body)
                with self._lock:
                    self._net_failures = 0
                return dest
            except urllib.error.HTTPError as e:
                with self._lock:
                    self._net_failures = 0  # the server answered: the network is fine
                if e.code < 500 and e.code != 429:  # 404 and friends will not get better
                    raise DownloadError(f"HTTP {e.code}") from None
                last = e
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = e
            if attempt < self.retries:
                time.sleep(0.5 * (2 ** attempt))
        if not isinstance(last, urllib.error.HTTPError):
            with self._lock:
                self._net_failures += 1
        reason = getattr(last, "reason", None) or last
        raise DownloadError(f"{type(last).__name__}: {reason}")


def read_image(path: Path):
    """Decode to RGB; any decoding failure becomes a readable reason, not a traceback."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB"), None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return None, f"unreadable image ({type(e).__name__}: {str(e)[:120]})"


def probe_image(path: Path) -> str | None:
    """Cheap check that the file is an image (header only); None when it is."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.size  # noqa: B018 - header parsed
        return None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return f"unreadable image ({type(e).__name__}: {str(e)[:120]})"


def _progress(it, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, unit="item", disable=not enabled or None, leave=False)


class HFImageEncoder(Encoder):
    """A vision model folder + image processor; embedding = projected image features when available."""

    modality = "visual"

    def __init__(self, path: str | Path, processor: str | Path | None = None, pooling: str = "auto",
                 device: str = "auto", dtype: str = "auto", normalize: bool = True,
                 trust_remote_code: bool = False):
        from transformers import AutoConfig, AutoImageProcessor

        self.path = check_model_folder(path, "image model")
        proc_path = check_model_folder(processor, "image processor") if processor else self.path
        if pooling not in IMAGE_POOLINGS:
            raise MmesidError(f"--pooling {pooling!r}: expected one of {', '.join(IMAGE_POOLINGS)}")
        self.cfg = read_config_json(self.path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.trust_remote_code = trust_remote_code
        try:
            AutoConfig.from_pretrained(str(self.path), local_files_only=True, trust_remote_code=trust_remote_code)
        except LOAD_ERRORS as e:
            raise load_failure(self.path, "image model", e) from None
        try:
            self.processor = AutoImageProcessor.from_pretrained(str(proc_path), local_files_only=True,
                                                                trust_remote_code=trust_remote_code)
        except LOAD_ERRORS as e:
            raise load_failure(proc_path, "image processor (preprocessor_config.json)", e) from None
        self.model = None
        self.pooling = pooling  # 'auto' is resolved when the weights are loaded
        self.normalize = normalize
        self.name = f"hf-image:{self.path.name}"
        self.dim = 0
        self._fp = {"kind": "hf-image", "model": model_folder_fingerprint(self.path),
                    "processor": model_folder_fingerprint(proc_path), "pooling": pooling,
                    "normalize": normalize, "dtype": str(self.dtype)}

    def load(self) -> None:
        import transformers
        from transformers import AutoModel

        if self.model is not None:
            return
        # Load the exact class the folder was saved from when transformers has it (keeps e.g. the
        # projection of CLIPVisionModelWithProjection, which AutoModel would drop).
        cls = None
        for arch in self.cfg.get("architectures") or []:
            cls = getattr(transformers, arch, None)
            if cls is not None:
                break
        try:
            loader = cls if cls is not None else AutoModel
            model = loader.from_pretrained(str(self.path), local_files_only=True, dtype=self.dtype,
                                           trust_remote_code=self.trust_remote_code)
        except LOAD_ERRORS as e:
            raise load_failure(self.path, "image model", e) from None
        has_proj = hasattr(model, "get_image_features")
        if not has_proj and not _is_vision_model(model):
            raise MmesidError(f"{self.path}: {type(model).__name__} is not an image model "
                              f"(expected CLIP, SigLIP, LLM2CLIP or a vision tower)")
        if self.pooling == "auto":
            self.pooling = "projection" if has_proj else "pooler"
        self.model = model.to(self.device).eval()
        self.name = f"hf-image:{self.path.name}:{type(model).__name__}:{self.pooling}"

    def fingerprint(self) -> dict[str, Any]:
        return dict(self._fp)

    @torch.inference_mode()
    def encode(self, images: Sequence[Any]) -> torch.Tensor:
        self.load()
        pix = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        pix = pix.to(self.device, self.dtype)
        if self.pooling == "projection":
            out = self.model.get_image_features(pixel_values=pix)
            vec = out if isinstance(out, torch.Tensor) else out.pooler_output
        else:
            out = self.model(pixel_values=pix)
            vec = _pool_vision(out, self.pooling, self.path)
        vec = vec.float()
        if vec.ndim != 2:
            vec = vec.flatten(1)
        self.dim = vec.shape[-1]
        return l2_normalize(vec) if self.normalize else vec


def _is_vision_model(model) -> bool:
    import inspect

    try:
        return "pixel_values" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _pool_vision(out, pooling: str, path: Path) -> torch.Tensor:
    if pooling == "pooler":
        for key in ("image_embeds", "pooler_output"):
            v = getattr(out, key, None)
            if v is not None:
                return v
        pooling = "mean"  # no pooled output: fall back to the token mean, as many ViT papers do
    hidden = getattr(out, "last_hidden_state", None)
    if hidden is None:
        raise MmesidError(f"{path}: the model returns no last_hidden_state to pool")
    if hidden.ndim == 4:  # convolutional towers: [B, C, H, W]
        return hidden.float().mean((2, 3))
    return hidden[:, 0] if pooling == "cls" else hidden.float().mean(1)


def image_encoder(model: str | Path, processor: str | Path | None = None, pooling: str = "auto",
                  device: str = "auto", dtype: str = "auto", normalize: bool = True,
                  trust_remote_code: bool = False) -> HFImageEncoder:
    if model is None:
        raise MmesidError("encode image needs --model FOLDER (a CLIP / SigLIP / LLM2CLIP folder)")
    return HFImageEncoder(model, processor, pooling, device, dtype, normalize, trust_remote_code)


def encode_images(data: SequenceData | str | Path, encoder: Encoder, source: ImageSource,
                  out: str | Path, batch_size: int = 32, missing: str = "fail", overwrite: bool = False,
                  workers: int = 8, progress: bool = True) -> EncodeResult:
    """Encode every item image into `out` (E_v); problems follow `missing` and are listed.

    An up-to-date `out` (same image bytes, encoder and dataset) is kept unless `overwrite`.
    """
    check_policy(missing)
    inputs = [data, source.image_dir] if not isinstance(data, SequenceData) else [source.image_dir]
    out = check_output(out, VISUAL, inputs, overwrite)
    data = data if isinstance(data, SequenceData) else SequenceData.load(data)
    if workers < 1:
        raise MmesidError(f"--workers must be at least 1, got {workers}")
    items = data.items

    def src_of(i: int, path: Path) -> str:
        ref = items[i - 1].image.strip()
        return f"{ref} (cached as {path})" if is_url(ref) and path.parent == source.cache_dir else str(path)

    def resolve(i: int) -> tuple[Path | None, Problem | None, str]:
        """Find (download) the file, check that it opens as an image, and hash its bytes."""
        path, prob = source.locate(i, items[i - 1])
        if prob is not None:
            return None, prob, "missing"
        reason = probe_image(path)
        if reason is not None:
            return None, Problem(i, items[i - 1].raw_id, src_of(i, path), reason), "unreadable"
        return path, None, "file:" + file_sha256(path)

    ids = list(range(1, data.n_items + 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Pass 1: every item's file is found (URLs downloaded) before any model work, so the policy
        # 'fail' reports all missing items at once and the content hash covers the actual bytes.
        resolved: dict[int, Path] = {}
        early: dict[int, Problem] = {}
        h = hashlib.sha256()
        for i, (path, prob, dig) in zip(ids, _progress(pool.map(resolve, ids), data.n_items, "find images",
                                                        progress)):
            h.update(f"{i}:{dig}\0".encode())
            if prob is not None:
                early[i] = prob
            else:
                resolved[i] = path
        if early and missing == "fail":
            fail_on_problems(sorted(early.values(), key=lambda p: p.item), "image")
        digest = content_hash({"stage": "visual", "n_items": data.n_items, "images": h.hexdigest(),
                               "encoder": encoder.fingerprint(), "missing": missing})
        meta = None if overwrite else cached_output(out, digest, data.fingerprint)
        if meta is not None:
            log.info("%s is up to date (same images, encoder and dataset); nothing to do", out)
            return cached_result(out, data.n_items, meta)

        encoder.load()

        def one(i: int):
            if i in early:
                return None, early[i]
            img, reason = read_image(resolved[i])
            if img is None:  # opened in pass 1, but the pixel data is broken (e.g. truncated)
                return None, Problem(i, items[i - 1].raw_id, src_of(i, resolved[i]), reason)
            return img, None

        def load(batch: list[int]):
            ok, inputs, probs = [], [], []
            for i, (img, prob) in zip(batch, pool.map(one, batch)):
                if prob is not None:
                    probs.append(prob)
                else:
                    ok.append(i)
                    inputs.append(img)
            return ok, inputs, probs

        # Pass 2: decode and encode batch by batch; only one batch of pixels is in memory.
        emb, mask, problems = run_batches(data.n_items, batch_size, load, encoder, missing, "image",
                                          progress=progress)
    write_item_embedding(out, emb, mask, modality=VISUAL, encoder=encoder.name, data_fingerprint=data.fingerprint,
                         extra=file_metadata(digest, missing, data.source))
    write_problems(out, problems)
    return EncodeResult(out, data.n_items, emb.shape[1], len(problems), cached=False, problems=problems)
