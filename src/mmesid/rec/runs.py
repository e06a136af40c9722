"""A fine-tuning run folder as seen from outside the training: its name, files and the scorer.

The folder is owned by `artifacts.runs.RunDir` (config.toml, run.json, metrics.json, lock,
checkpoints/); this stage adds `best.safetensors` (trainable weights at the best validation) and
the exports of `rec.exports`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..artifacts.added_items import read_added_items
from ..artifacts.runs import open_run
from ..config import load_config
from ..data.dataset import SequenceData
from ..errors import MmesidError
from ..io import load_tensors
from ..utils import resolve_device
from .added import apply_added_items
from .backbone import merge_lora, quantize_int8
from .build import build_model
from .config import FinetuneConfig

KIND = "finetune"
BEST = "best.safetensors"


def load_scorer(run_dir: str | Path, data: SequenceData, device, int8: bool = False) -> tuple[torch.nn.Module, int]:
    """For `mmesid evaluate`: rebuild a finetune run's model with its best trainable weights (and the
    items added after training, `RUN/added_items/`). `int8`: the backbone's linear layers quantised to
    int8 after LoRA is merged (`backbone.quantize_int8`; CPU only, faster, scores slightly different).

    The run must have been trained on `data` (fingerprint), and its inputs (run.json `emb`, `sids`)
    are read and checked again, so a moved or replaced input file is an error, not a silent change.
    """
    run = open_run(run_dir, KIND, data_fingerprint=data.fingerprint)
    cfg = load_config(FinetuneConfig, run.path / "config.toml")
    info = run.info()
    if not info.get("emb"):
        raise MmesidError(f"{run.path / 'run.json'}: records no input embeddings ('emb')")
    weights = run.path / BEST
    if not weights.exists():
        raise MmesidError(f"{run.path}: no {BEST} (the run has not completed a validation yet)")
    device = device if isinstance(device, torch.device) else resolve_device(str(device))
    if int8 and device.type != "cpu":  # before the model is built: int8 is torch's CPU quantisation
        raise MmesidError(f"int8 inference runs on CPU only, not {device}; on a GPU use bf16")
    model = build_model(cfg, data, info["emb"], info.get("sids"), device)
    w, _ = load_tensors(weights)
    try:
        model.load_trainable_state(w)
    except RuntimeError as e:
        raise MmesidError(f"{weights}: does not fit this run's model ({e})") from None
    if cfg.eval_merge_lora or int8:
        merge_lora(model.llm, keep_original=False)  # this model only scores: fold LoRA in for good
    if int8:
        quantize_int8(model.llm)
    added = read_added_items(run.path)
    if added is not None:
        apply_added_items(model, added)
    model.eval()
    return model, cfg.max_len
