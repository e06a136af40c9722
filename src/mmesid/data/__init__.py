"""Data layer: readers for the supported inputs, the canonical prepared format, the split.

The split helpers build torch tensors, so they are imported on first use only: reading and
preparing data (and `mmesid --help`) does not import torch.
"""

from .dataset import ItemInfo, SequenceData
from .readers import FilterOptions, read_amazon, read_authors, read_interactions

_SPLIT = ("EvalExamples", "eval_examples", "pad_left", "train_examples", "train_sequences")

__all__ = ["ItemInfo", "SequenceData", "FilterOptions", "read_amazon", "read_authors",
           "read_interactions", *_SPLIT]


def __getattr__(name: str):
    if name in _SPLIT:
        from . import split

        return getattr(split, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
