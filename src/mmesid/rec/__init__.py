"""Stage 2: the LLM sequential recommender (MME-SID, its ablations and LLM-based baselines).

backbone (HF model + LoRA) -> prompt (instruction, one embedding per history item, response header)
-> inputs (the variant: how an item becomes an input embedding) -> fusion (frequency-aware scoring)
-> model (ties them together) -> trainer (accelerate loop, checkpoints, evaluation, exports).
"""

from .config import VARIANT_NAMES, FinetuneConfig

__all__ = ["FinetuneConfig", "VARIANT_NAMES"]
