"""Data layer: readers for the supported inputs, the canonical prepared format, the split."""

from .dataset import ItemInfo, SequenceData
from .readers import FilterOptions, read_amazon, read_authors, read_interactions
from .split import EvalExamples, eval_examples, pad_left, train_examples, train_sequences

__all__ = ["ItemInfo", "SequenceData", "FilterOptions", "read_amazon", "read_authors",
           "read_interactions", "EvalExamples", "eval_examples", "pad_left", "train_examples",
           "train_sequences"]
