"""Data-parallel fine-tuning on 2 CPU processes (gloo) through torch.distributed.run + accelerate."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import torch

from mmesid.io import load_tensors, read_json

SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path
    from mmesid.config import from_dict
    from mmesid.data.synthetic import SyntheticConfig, generate
    from mmesid.rec.config import FinetuneConfig
    from mmesid.rec.testing import fake_export, random_embeddings
    from mmesid.rec.trainer import train_finetune

    root, llama = Path(sys.argv[1]), sys.argv[2]
    data = generate(SyntheticConfig(n_users=40, n_items=30, max_length=12))
    emb = random_embeddings(root, data.n_items, {"c": 8, "t": 12})  # same files on every rank (seeded)
    sids = str(fake_export(root / "export", data.n_items))
    cfg = from_dict(FinetuneConfig, {"variant": "mme-sid", "batch_size": 4, "epochs": 1, "max_steps": 3,
                                     "warmup_steps": 1, "eval_batch_size": 64, "device": "cpu", "threads": 1,
                                     "backbone": {"path": llama}})
    train_finetune(data, cfg, root / "run", emb, sids, progress=False)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_train(tmp_path):
    from mmesid.rec.testing import tiny_llama

    llama = str(tiny_llama(tmp_path / "llama"))
    (tmp_path / "ddp.py").write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(tmp_path / "ddp.py"), str(tmp_path), llama]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = read_json(tmp_path / "run" / "metrics.json")
    assert m["processes"] == 2 and m["steps"] == 3
    assert m["test"]["users"] == 40  # the two halves of the users are gathered
    w, _ = load_tensors(tmp_path / "run" / "best_trainable.safetensors")
    lora_b = [v for k, v in w.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # LoRA B starts at zero: it was trained
    assert all(torch.isfinite(v).all() for v in w.values())
