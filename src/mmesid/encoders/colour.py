"""A tiny, training-free image encoder: the joint RGB colour histogram of each image.

The demo uses it for E_v because, offline, neither a pretrained image model nor real product photos
can be reached; the synthetic catalogue draws each item in its category's colour, which a histogram
keeps. It is not a substitute for a real visual encoder: on real data use `mmesid encode image`
with a CLIP-family model folder.

Each channel is cut into `bins` equal ranges, so an image becomes a bins^3-dimensional vector of
pixel shares (it sums to 1); it is deliberately not L2-normalised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import MmesidError
from .base import Encoder


def colour_histogram(image, bins: int = 4) -> np.ndarray:
    """Share of the pixels of a PIL image in each of the bins^3 RGB cells, float32 [bins^3].

    Cell of a pixel (r, g, b): (r // w * bins + g // w) * bins + b // w with w = 256 // bins.
    """
    px = np.asarray(image.convert("RGB")).astype(np.int64) // (256 // bins)
    idx = (px[..., 0] * bins + px[..., 1]) * bins + px[..., 2]
    return (np.bincount(idx.ravel(), minlength=bins ** 3) / idx.size).astype(np.float32)


class ColourHistogramEncoder(Encoder):
    """`colour_histogram` of each image, as an `Encoder` (so it plugs into `encode_images` too)."""

    modality = "visual"

    def __init__(self, bins: int = 4):
        if bins < 1 or 256 % bins:
            raise MmesidError(f"colour histogram bins must divide 256 (1, 2, 4, 8, ...), got {bins}")
        self.bins = bins
        self.dim = bins ** 3
        self.name = f"colour-histogram:{bins}"

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "colour-histogram", "bins": self.bins}

    def encode(self, images: Sequence[Any]) -> torch.Tensor:
        return torch.from_numpy(np.stack([colour_histogram(img, self.bins) for img in images]))


def colour_histograms(data, image_dir: str | Path, bins: int = 4) -> np.ndarray:
    """float32 [n_items + 1, bins^3] (row 0 padding = 0) for the item images in `image_dir`.

    Images are found as `mmesid encode image --images` finds them; a missing or unreadable image
    is an error naming the item.
    """
    from .image import ImageSource, read_image

    enc = ColourHistogramEncoder(bins)
    source = ImageSource(image_dir=image_dir, download=False)
    out = np.zeros((data.n_items + 1, enc.dim), dtype=np.float32)
    for iid, info in enumerate(data.items, start=1):
        path, problem = source.locate(iid, info)
        if problem is not None:
            raise MmesidError(problem.describe())
        img, reason = read_image(path)
        if img is None:
            raise MmesidError(f"item {iid} ({info.raw_id!r}): {reason}: {path}")
        out[iid] = enc.encode([img])[0].numpy()
    return out
