"""mmesid: MME-SID, LLM-based sequential recommendation with multimodal embeddings and semantic IDs.

Pipeline (one sub-package per stage):
data -> encoders -> quantize -> models (SASRec) / rec (LLM recommender) -> eval -> analysis.
"""

__version__ = "0.1.0"
