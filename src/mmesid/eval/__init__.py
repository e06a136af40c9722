"""Full-ranking evaluation (HR@k, nDCG@k) for any scorer."""

from .ranking import DEFAULT_KS, Scorer, evaluate, metrics_from_ranks, target_ranks

__all__ = ["DEFAULT_KS", "Scorer", "evaluate", "metrics_from_ranks", "target_ranks"]
