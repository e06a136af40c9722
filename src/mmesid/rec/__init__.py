"""Stage 2: the LLM sequential recommender (MME-SID, its ablations and LLM-based baselines).

Model: backbone (HF model + LoRA) -> prompt (instruction, one embedding per history item, response
header) -> inputs (the variant: how an item becomes an input embedding) -> fusion (frequency-aware
scoring) -> model (ties them together).
Stage: config -> build (inputs read through `artifacts`, the model) -> batches (examples, data order)
-> distributed (accelerator, sharding, gathered evaluation) -> train (`FinetuneTask` on the shared
`training.TrainingLoop`, `train_finetune`) -> exports (tables for the analyses) -> runs (`load_scorer`).
"""

from .config import VARIANT_NAMES, FinetuneConfig

__all__ = ["FinetuneConfig", "VARIANT_NAMES"]
