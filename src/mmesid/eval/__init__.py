"""Full-ranking evaluation (HR@k, nDCG@k) for any scorer."""

from .ranking import (
    DEFAULT_KS,
    TEST_RANKS,
    Scorer,
    evaluate,
    metrics_from_ranks,
    target_ranks,
    user_ranks,
)

__all__ = ["DEFAULT_KS", "TEST_RANKS", "Scorer", "evaluate", "metrics_from_ranks", "target_ranks", "user_ranks"]
