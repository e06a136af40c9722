"""mmesid: MME-SID, LLM-based sequential recommendation with multimodal embeddings and semantic IDs.

Pipeline (one sub-package per stage):
data -> encoders -> quantize -> models (SASRec) / rec (LLM recommender) -> eval -> analysis.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`from mmesid import Recommender` without importing torch for every `import mmesid`."""
    if name in ("Recommender", "Recommendation"):
        from . import serve

        return getattr(serve, name)
    raise AttributeError(f"module 'mmesid' has no attribute {name!r}")
