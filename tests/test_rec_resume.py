"""A fine-tuning run interrupted mid-epoch resumes to exactly the same weights and metrics."""

from __future__ import annotations

import torch

from mmesid.config import from_dict
from mmesid.data.synthetic import SyntheticConfig, generate
from mmesid.io import load_tensors, read_json
from mmesid.rec.config import FinetuneConfig
from mmesid.rec.testing import fake_export, random_embeddings, tiny_llama
from mmesid.rec.trainer import train_finetune


def test_interrupted_run_resumes_exactly(tmp_path):
    data = generate(SyntheticConfig(n_users=40, n_items=30, max_length=12))
    llama = str(tiny_llama(tmp_path / "llama"))
    emb = random_embeddings(tmp_path, data.n_items, {"c": 8, "t": 12})
    sids = str(fake_export(tmp_path / "export", data.n_items))
    # 40 prompts / batch 8 = 5 steps per epoch; 7 steps cross an epoch boundary; stop inside epoch 0
    cfg = from_dict(FinetuneConfig, {
        "variant": "mme-sid", "batch_size": 8, "epochs": 2, "max_steps": 7, "warmup_steps": 2, "eval_every": 2,
        "save_every": 100, "eval_batch_size": 64, "device": "cpu", "patience": 0,
        "backbone": {"path": llama}, "lora": {"dropout": 0.3}})  # dropout: RNG state must be restored too
    full = train_finetune(data, cfg, tmp_path / "a", emb, sids, progress=False)
    part = train_finetune(data, cfg, tmp_path / "b", emb, sids, progress=False, stop_after_steps=3)
    assert part == {"interrupted_at_step": 3}
    assert read_json(tmp_path / "b" / "run.json")["kind"] == "finetune"
    resumed = train_finetune(data, cfg, tmp_path / "b", emb, sids, progress=False)
    wa, _ = load_tensors(tmp_path / "a" / "checkpoint" / "trainable.safetensors")
    wb, _ = load_tensors(tmp_path / "b" / "checkpoint" / "trainable.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert resumed["test"] == {**full["test"], "eval_seconds": resumed["test"]["eval_seconds"]}
    assert resumed["history"] == [{**h, "eval_seconds": g["eval_seconds"]}
                                  for h, g in zip(full["history"], resumed["history"])]
    assert resumed["steps"] == full["steps"] == 7
