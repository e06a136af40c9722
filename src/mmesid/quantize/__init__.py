"""Stage 1 quantisation: residual quantiser, RQ-VAE, MM-RQ-VAE (MSE / MMD reconstruction, InfoNCE
alignment), training and the export of semantic IDs and codebooks."""

from .embeddings import ItemEmbedding, load_item_embedding, load_modalities, parse_modality_args
from .export import QuantizerExport, encode_items, export_model, load_export
from .losses import info_nce, median_sigma, mmd2, mse
from .model import LossConfig, MMRQVAE, RQVAE, RQVAEConfig
from .rq import ResidualQuantizer, codebook_stats, sinkhorn_assign
from .train import QuantizeConfig, run_training, train_quantizer

__all__ = [
    "ItemEmbedding", "load_item_embedding", "load_modalities", "parse_modality_args",
    "QuantizerExport", "encode_items", "export_model", "load_export",
    "info_nce", "median_sigma", "mmd2", "mse",
    "LossConfig", "MMRQVAE", "RQVAE", "RQVAEConfig",
    "ResidualQuantizer", "codebook_stats", "sinkhorn_assign",
    "QuantizeConfig", "run_training", "train_quantizer",
]
