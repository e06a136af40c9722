"""Stage 1 quantisation: residual quantiser, RQ-VAE, MM-RQ-VAE (MSE / MMD reconstruction, InfoNCE
alignment), training on the shared loop and the contents of the semantic-ID export (written and read
by `mmesid.artifacts.sid_export`)."""

from .export import encode_items, export_contents
from .losses import info_nce, median_sigma, mmd2, mse
from .model import MMRQVAE, RQVAE, LossConfig, RQVAEConfig
from .rq import ResidualQuantizer, codebook_stats, sinkhorn_assign
from .train import (
    QuantizeConfig,
    QuantizeTask,
    export_run,
    run_training,
    train_quantizer,
)

__all__ = [
    "MMRQVAE",
    "RQVAE",
    "LossConfig",
    "QuantizeConfig",
    "QuantizeTask",
    "RQVAEConfig",
    "ResidualQuantizer",
    "codebook_stats",
    "encode_items",
    "export_contents",
    "export_run",
    "info_nce",
    "median_sigma",
    "mmd2",
    "mse",
    "run_training",
    "sinkhorn_assign",
    "train_quantizer",
]
