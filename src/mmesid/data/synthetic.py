"""A deterministic synthetic catalogue with planted structure, for tests and the offline demo.

Items belong to categories (nail polish, shampoo, ...) whose words appear in their titles, so a text
encoder can find the semantic structure; each category has a colour, so generated images carry it
too. Users prefer one or two categories and move along a planted item-to-item chain with high
probability, so a sequential model can learn something real and beat popularity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import bounded, check_ranges
from ..artifacts.outputs import swap_dir
from ..errors import ConfigError, MmesidError
from .dataset import ItemInfo, SequenceData

CATEGORIES = [
    ("nail polish", "lacquer", (200, 30, 60)),
    ("shampoo", "hair wash", (40, 120, 200)),
    ("lipstick", "lip colour", (220, 20, 120)),
    ("face cream", "moisturiser", (240, 220, 180)),
    ("perfume", "eau de parfum", (150, 80, 200)),
    ("mascara", "lash", (20, 20, 20)),
    ("sunscreen", "spf lotion", (250, 200, 40)),
    ("hair dryer", "blow dryer", (120, 120, 120)),
    ("eyeliner", "eye pencil", (60, 40, 30)),
    ("body wash", "shower gel", (60, 200, 160)),
    ("foundation", "makeup base", (210, 160, 120)),
    ("nail file", "manicure tool", (180, 180, 220)),
]
BRANDS = ["Lumina", "Orchid", "Velvet", "Nordic", "Sola", "Mira", "Aster", "Bloom", "Coral", "Ivy"]
ADJECTIVES = ["classic", "matte", "glossy", "travel size", "professional", "organic", "deluxe",
              "sensitive", "long lasting", "everyday", "limited edition", "fresh"]


@dataclass
class SyntheticConfig:
    n_users: int = bounded(600, ge=1, le=10_000_000)
    n_items: int = bounded(240, ge=3, le=10_000_000)
    n_categories: int = bounded(8, ge=1, le=len(CATEGORIES))
    min_length: int = bounded(5, ge=3)  # leave-one-out needs 3 interactions per user
    max_length: int = bounded(20, ge=3)
    # probability that the next item follows the planted chain; else, with p_same_category, a
    # random item of a preferred category; the rest is noise
    p_chain: float = bounded(0.7, ge=0.0, le=1.0)
    p_same_category: float = bounded(0.2, ge=0.0, le=1.0)
    seed: int = bounded(0, ge=0, le=2**63 - 1)

    def validate(self) -> None:
        """The cross-key rules (the ranges of single keys are checked by `check_ranges`)."""
        if self.n_categories > self.n_items:
            raise ConfigError(f"n_categories: {self.n_categories} categories need at least as many items "
                              f"(n_items = {self.n_items})")
        if self.min_length > self.max_length:
            raise ConfigError(f"min_length: {self.min_length} is above max_length ({self.max_length})")
        if self.min_length > self.n_items:
            raise ConfigError(f"min_length: {self.min_length} is above n_items ({self.n_items}); sequences "
                              "never repeat an item")
        if self.p_chain + self.p_same_category > 1.0:
            raise ConfigError(f"p_same_category: p_chain + p_same_category must be <= 1, got "
                              f"{self.p_chain + self.p_same_category}")


def generate(cfg: SyntheticConfig | None = None) -> SequenceData:
    cfg = cfg or SyntheticConfig()
    check_ranges(cfg)
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    cat_of = np.arange(cfg.n_items) % cfg.n_categories  # item i (0-based) -> category
    items = []
    for i in range(cfg.n_items):
        name, synonym, _ = CATEGORIES[cat_of[i]]
        brand = BRANDS[rng.integers(len(BRANDS))]
        adj = ADJECTIVES[rng.integers(len(ADJECTIVES))]
        noun = name if rng.random() < 0.7 else synonym
        items.append(ItemInfo(f"SYN{i:05d}", f"{brand} {adj} {noun} no. {i}", f"SYN{i:05d}.png"))
    by_cat = [np.flatnonzero(cat_of == c) for c in range(cfg.n_categories)]
    # planted chain: within each category, a random cyclic order
    nxt = np.zeros(cfg.n_items, dtype=np.int64)
    for members in by_cat:
        order = rng.permutation(members)
        nxt[order] = np.roll(order, -1)
    sequences, user_ids = [], []
    for u in range(cfg.n_users):
        prefs = rng.choice(cfg.n_categories, size=min(2, cfg.n_categories), replace=False)
        # capped at n_items (no repeats); the draw stays, so the stream of random numbers is unchanged
        length = min(int(rng.integers(cfg.min_length, cfg.max_length + 1)), cfg.n_items)
        cur = int(rng.choice(by_cat[prefs[0]]))
        seq = [cur]
        while len(seq) < length:
            r = rng.random()
            if r < cfg.p_chain:
                cand = int(nxt[cur])
            elif r < cfg.p_chain + cfg.p_same_category:
                cand = int(rng.choice(by_cat[rng.choice(prefs)]))
            else:
                cand = int(rng.integers(cfg.n_items))
            if cand in seq:  # no repeats, as in the Amazon data
                cand = int(rng.choice([i for i in by_cat[rng.choice(prefs)] if i not in seq] or
                                      [i for i in range(cfg.n_items) if i not in seq]))
            seq.append(cand)
            cur = cand
        sequences.append(np.array(seq, dtype=np.int64) + 1)
        user_ids.append(f"u{u}")
    # make sure every item occurs (append unseen items to random users' middles is distortion;
    # instead give each unseen item one short extra user following its chain)
    used = np.zeros(cfg.n_items, dtype=bool)
    for s in sequences:
        used[s - 1] = True
    for i in np.flatnonzero(~used):
        seq = [int(i)]
        while len(seq) < cfg.min_length:
            seq.append(int(nxt[seq[-1]]))
        sequences.append(np.array(seq, dtype=np.int64) + 1)
        user_ids.append(f"u{len(user_ids)}")
    return SequenceData(sequences, items, user_ids, source=f"synthetic:seed={cfg.seed}")


def item_categories(cfg: SyntheticConfig) -> np.ndarray:
    """Planted category of each item id (index 0 = padding = -1)."""
    return np.concatenate([[-1], np.arange(cfg.n_items) % cfg.n_categories])


_IMAGE_NAME = re.compile(r"SYN[0-9]{5,}\.png")


def check_images_folder(folder: str | Path, overwrite: bool = False, inputs=()) -> Path:
    """Refuse an images folder that holds anything but an earlier set of synthetic images, and
    that one unless `overwrite`; called before anything is written."""
    from ..artifacts.outputs import check_output_location

    folder = Path(folder)
    check_output_location(folder, inputs, what="--images")
    if folder.exists() and not folder.is_dir():
        raise MmesidError(f"--images {folder}: is a file, expected a folder")
    entries = list(folder.iterdir()) if folder.is_dir() else []
    foreign = [p.name for p in entries if not (p.is_file() and _IMAGE_NAME.fullmatch(p.name))]
    if foreign:
        raise MmesidError(f"--images {folder}: holds files not made by `mmesid data synthetic` "
                          f"({foreign[0]!r}); choose another folder (nothing was changed)")
    if entries and not overwrite:
        raise MmesidError(f"--images {folder}: already holds synthetic images (use --overwrite to replace them)")
    return folder


def write_images(data: SequenceData, folder: str | Path, cfg: SyntheticConfig, size: int = 64,
                 overwrite: bool = False) -> Path:
    """Draw one PNG per item (category colour + a shape), named as the item table's image column.

    The folder is drawn under a temporary name and swapped in, replacing only an earlier image set.
    """
    from PIL import Image, ImageDraw

    folder = check_images_folder(folder, overwrite)
    with swap_dir(folder) as tmp:
        cats = item_categories(cfg)
        rng = np.random.default_rng(cfg.seed + 1)
        for iid, info in enumerate(data.items, start=1):
            colour = CATEGORIES[cats[iid]][2]
            img = Image.new("RGB", (size, size), (255, 255, 255))
            d = ImageDraw.Draw(img)
            jitter = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in colour)
            m = int(rng.integers(4, size // 4))
            if cats[iid] % 2 == 0:
                d.ellipse([m, m, size - m, size - m], fill=jitter)
            else:
                d.rectangle([m, m, size - m, size - m], fill=jitter)
            img.save(tmp / Path(info.image).name)
    return folder
