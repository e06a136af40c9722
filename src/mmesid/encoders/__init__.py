"""Item encoders: titles and images (or user-supplied matrices) -> E_t / E_v files.

Every encoder writes its file through `mmesid.artifacts.embeddings.write_item_embedding` (key
`embedding` float32 [n_items + 1, d] with row 0 = padding, key `mask` uint8, metadata with the
modality, encoder, dim, n_items and the dataset fingerprint), plus a content hash used to skip work
that is already done.
"""

from .base import EncodeResult, Encoder, Problem, resolve_device
from .pipeline import encode_text
from .text import HFTextEncoder, SentenceTransformerEncoder, default_text_model, text_encoder

__all__ = [
    "EncodeResult", "Encoder", "Problem", "resolve_device", "encode_text", "HFTextEncoder",
    "SentenceTransformerEncoder", "default_text_model", "text_encoder",
]
