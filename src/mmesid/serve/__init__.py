"""Using a trained run: recommendations from histories in the catalogue's own item ids, a batch export
for every user, and an HTTP service with dynamic micro-batching (`mmesid recommend`, `mmesid serve`)."""

from .recommender import Recommendation, Recommender

__all__ = ["Recommendation", "Recommender"]
