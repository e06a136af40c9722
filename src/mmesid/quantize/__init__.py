"""Stage 1 quantisation: residual quantiser, RQ-VAE, MM-RQ-VAE (MSE / MMD reconstruction, InfoNCE
alignment), training on the shared loop and the contents of the semantic-ID export (written and read
by `mmesid.artifacts.sid_export`)."""

from .export import encode_items, export_contents
from .losses import info_nce, median_sigma, mmd2, mse
from .model import LossConfig, MMRQVAE, RQVAE, RQVAEConfig
from .rq import ResidualQuantizer, codebook_stats, sinkhorn_assign
from .train import QuantizeConfig, QuantizeTask, export_run, run_training, train_quantizer

__all__ = [
    "encode_items", "export_contents",
    "info_nce", "median_sigma", "mmd2", "mse",
    "LossConfig", "MMRQVAE", "RQVAE", "RQVAEConfig",
    "ResidualQuantizer", "codebook_stats", "sinkhorn_assign",
    "QuantizeConfig", "QuantizeTask", "export_run", "run_training", "train_quantizer",
]
