"""Building the LLM recommender of a run: which modalities, its input files, the model itself.

Inputs are read only through the artefact owners (`artifacts.embeddings`, `artifacts.sid_export`),
which check the item count and the dataset fingerprint: a table or an export made from another
dataset is refused before anything is trained.
"""

from __future__ import annotations

import torch

from ..artifacts.embeddings import MODALITIES, read_modalities
from ..artifacts.sid_export import SIDExport, load_sid_export
from ..data.dataset import SequenceData
from ..errors import MmesidError
from .backbone import load_backbone
from .config import FinetuneConfig
from .inputs import VARIANTS, ItemInputs
from .model import LLMRecommender
from .prompt import PromptTemplate


def resolve_modalities(cfg: FinetuneConfig, given: list[str]) -> list[str]:
    """The modalities the variant uses, in c, t, v order, each of which must have an --emb file."""
    spec = VARIANTS[cfg.variant]
    if spec.collaborative_only:
        if cfg.modalities and list(cfg.modalities) != ["c"]:
            raise MmesidError(f"variant {cfg.variant!r} uses the collaborative modality only; "
                              f"modalities = {cfg.modalities} does not apply")
        mods = ["c"]
    else:
        mods = list(cfg.modalities) or [j for j in MODALITIES if j in given]
    missing = [j for j in mods if j not in given]
    if missing:
        raise MmesidError(f"modalities {missing} requested but no --emb {missing[0]}=FILE given")
    if cfg.variant == "ctrl-mm" and "c" not in mods:
        raise MmesidError("variant 'ctrl-mm' aligns the collaborative modality with the others: needs c")
    return mods


def use_fusion(cfg: FinetuneConfig) -> bool:
    return VARIANTS[cfg.variant].fusion if cfg.fusion is None else cfg.fusion


def read_inputs(cfg: FinetuneConfig, data: SequenceData, emb_paths: dict[str, str],
                sids_dir: str | None) -> tuple[list[str], dict[str, torch.Tensor], SIDExport | None]:
    """(modalities, {m: E_m table}, SID export or None), every file checked against `data`."""
    if cfg.variant not in VARIANTS:
        raise MmesidError(f"unknown variant {cfg.variant!r}")
    mods = resolve_modalities(cfg, list(emb_paths))
    embs = read_modalities({j: emb_paths[j] for j in mods}, n_items=data.n_items, fingerprint=data.fingerprint)
    export = None
    if sids_dir:
        export = load_sid_export(sids_dir, n_items=data.n_items, fingerprint=data.fingerprint)
    elif VARIANTS[cfg.variant].needs_sids:
        raise MmesidError(f"variant {cfg.variant!r} needs --sids EXPORT_DIR (the quantiser export)")
    return mods, {j: e.table for j, e in embs.items()}, export


def build_model(cfg: FinetuneConfig, data: SequenceData, emb_paths: dict[str, str], sids_dir: str | None,
                device: torch.device) -> LLMRecommender:
    """Backbone + variant inputs + target table + fusion, on `device` (new modules in float32)."""
    mods, tables, export = read_inputs(cfg, data, emb_paths, sids_dir)
    bb = load_backbone(cfg.backbone, cfg.lora, device)
    sids = export.sids if export else None
    books = export.codebooks if export else None
    inputs = ItemInputs(cfg.variant, mods, tables, bb.hidden_size, sids, books, cfg.sid_projection, seed=cfg.seed)
    prompt = PromptTemplate.build(bb.tokenizer, cfg.system_prompt, cfg.instruction)
    cache = cfg.cache_prefix and not cfg.backbone.gradient_checkpointing  # HF: no cache with checkpointing
    model = LLMRecommender(bb, inputs, data.item_frequency(), prompt, use_fusion(cfg), cfg.fusion_hidden,
                           cfg.fusion_temperature, seed=cfg.seed, cache_prefix=cache, target_init=cfg.target_init,
                           fusion_mode=cfg.fusion_mode)
    if cfg.backbone.load_in_4bit:  # the quantised backbone is placed already; move only the new modules
        for name, child in model.named_children():
            if name != "llm":
                child.to(device)
        model.E_x.data = model.E_x.data.to(device)
    else:
        model.to(device)
    return model


def parameter_counts(model: torch.nn.Module) -> dict:
    """Total / trainable / LoRA / new-module parameter counts (the paper reports the trainable share)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)
    backbone = sum(p.numel() for n, p in model.named_parameters() if n.startswith("llm.") and "lora_" not in n)
    return {"total": total, "trainable": trainable, "trainable_share": trainable / max(1, total),
            "lora": lora, "new_modules": trainable - lora, "backbone_frozen": backbone,
            "lora_share_of_backbone": lora / max(1, backbone)}
