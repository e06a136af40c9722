"""Data-parallel fine-tuning on 2 CPU processes (gloo) through torch.distributed.run + accelerate.

Two checks against a single process: the metrics the 2-process run reports are exactly those of a
single-process evaluation of its weights (users split, ranks gathered), and 2 processes x 4 prompts
train the same weights as 1 process x 8 prompts (the "prefix" scheme has one target per prompt, so
DDP's average of the per-process mean losses is the mean over the global batch).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import torch

from mmesid.config import from_dict
from mmesid.data.split import eval_examples
from mmesid.data.synthetic import SyntheticConfig, generate
from mmesid.eval.ranking import evaluate
from mmesid.io import load_tensors, read_json
from mmesid.rec.config import FinetuneConfig
from mmesid.rec.runs import load_scorer
from mmesid.rec.train import train_finetune
from rec_fixtures import fake_export, random_embeddings, tiny_llama

SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from mmesid.config import from_dict
    from mmesid.data.synthetic import SyntheticConfig, generate
    from mmesid.rec.config import FinetuneConfig
    from mmesid.rec.train import train_finetune

    root, cfg = Path(sys.argv[1]), json.loads(sys.argv[2])
    data = generate(SyntheticConfig(n_users=40, n_items=30, max_length=12))
    emb = {"c": str(root / "E_c.safetensors"), "t": str(root / "E_t.safetensors")}
    train_finetune(data, from_dict(FinetuneConfig, cfg), root / "run", emb, str(root / "export"), progress=False)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(llama: str, batch_size: int) -> dict:
    return {"variant": "mme-sid", "batch_size": batch_size, "epochs": 1, "max_steps": 3, "warmup_steps": 1,
            "eval_batch_size": 64, "device": "cpu", "threads": 1, "train_scheme": "prefix",
            "length_bucketing": False, "backbone": {"path": llama}, "lora": {"dropout": 0.0}}


def _at_k(m: dict) -> dict:
    return {k: v for k, v in m.items() if "@" in k}


def test_two_cpu_processes_equal_one(tmp_path):
    import json

    data = generate(SyntheticConfig(n_users=40, n_items=30, max_length=12))
    llama = str(tiny_llama(tmp_path / "llama"))
    emb = random_embeddings(tmp_path, data.n_items, {"c": 8, "t": 12})
    sids = str(fake_export(tmp_path / "export", data.n_items))
    (tmp_path / "ddp.py").write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(tmp_path / "ddp.py"), str(tmp_path), json.dumps(_cfg(llama, 4))]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = read_json(tmp_path / "run" / "metrics.json")
    assert m["processes"] == 2 and m["steps"] == 3 and m["test"]["users"] == 40

    # the reported metrics == a single-process evaluation of the same (best) weights, exactly
    torch.set_num_threads(1)
    model, max_len = load_scorer(tmp_path / "run", data, "cpu")
    for split in ("valid", "test"):
        one = evaluate(model, eval_examples(data.sequences, split), batch_size=64, max_len=max_len, progress=False)
        assert _at_k(one) == _at_k(m[split]), split

    # 2 processes x 4 prompts train what 1 process x 8 prompts trains
    single = train_finetune(data, from_dict(FinetuneConfig, _cfg(llama, 8)), tmp_path / "one", emb, sids,
                            progress=False)
    assert single["plan"] == m["plan"]
    a, _ = load_tensors(tmp_path / "run" / "best.safetensors")
    b, _ = load_tensors(tmp_path / "one" / "best.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k


def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch, caplog):
    import logging

    from mmesid.rec import distributed

    cfg = from_dict(FinetuneConfig, {"mixed_precision": "bf16"})
    monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="mmesid.rec.distributed"):
        assert distributed._mixed_precision(cfg, cuda=False) == "bf16"  # still honoured: the user asked
    assert "without AVX512-BF16" in caplog.text
    caplog.clear()
    monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda: True)
    with caplog.at_level(logging.WARNING, logger="mmesid.rec.distributed"):
        assert distributed._mixed_precision(cfg, cuda=False) == "bf16"
        assert distributed._mixed_precision(from_dict(FinetuneConfig, {}), cuda=False) == "no"
    assert caplog.text == ""


def test_the_command_line_flushes_subnormals(monkeypatch, tmp_path):
    """`mmesid` treats subnormal floats as zero on CPU (x86 computes with them 10-100x slower), set before
    the command runs; the data commands never load torch for it. (Recorded, not set: the setting is
    process state and would leak into the other tests.)"""
    from mmesid.cli import main

    calls = []
    monkeypatch.setattr(torch, "set_flush_denormal", lambda on: calls.append(on) or True)
    assert main(["data", "synthetic", "--out", str(tmp_path / "d"), "--users", "30", "--items", "20"]) == 0
    assert calls == []
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--popularity", "--split", "valid"]) == 0
    assert calls == [True]
