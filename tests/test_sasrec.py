import json

import numpy as np
import torch

from conftest import run_cli
from mmesid.config import from_dict
from mmesid.data.split import eval_examples
from mmesid.eval import evaluate
from mmesid.io import load_tensors
from mmesid.models.popularity import Popularity
from mmesid.models.sasrec import SASRec, SASRecConfig
from mmesid.models.sasrec_train import SASRecTrainConfig, train_sasrec, training_windows

FAST = {"epochs": 12, "patience": 20, "batch_size": 64, "lr": 5e-3,
        "model": {"hidden": 32, "dropout": 0.2, "attn_dropout": 0.2, "max_len": 20}}


def test_training_windows_cover_every_target():
    seq = np.arange(1, 30)  # training part: 1..27
    ins, outs = training_windows([seq], max_len=10)
    targets = sorted(outs[outs > 0].tolist())
    assert targets == list(range(2, 28))
    assert ((ins > 0) == (outs > 0)).all()


def test_causal_no_future_leak():
    torch.manual_seed(0)
    m = SASRec(20, SASRecConfig(hidden=16, max_len=8, dropout=0.0, attn_dropout=0.0)).eval()
    a = torch.tensor([[0, 0, 3, 4, 5, 6]])
    b = torch.tensor([[0, 0, 3, 4, 5, 9]])
    ha, hb = m.hidden_states(a), m.hidden_states(b)
    assert torch.allclose(ha[:, :5], hb[:, :5], atol=1e-6)
    assert not torch.allclose(ha[:, 5], hb[:, 5])


def test_sasrec_learns_beats_popularity_and_exports(tmp_path, synthetic_data):
    cfg = from_dict(SASRecTrainConfig, FAST)
    m = train_sasrec(synthetic_data, cfg, tmp_path / "run", progress=False)
    pop = evaluate(Popularity(synthetic_data.item_frequency()), eval_examples(synthetic_data.sequences, "test"),
                   progress=False)
    assert m["test"]["nDCG@10"] > 2 * pop["nDCG@10"]
    assert m["test"]["HR@10"] > 0.3  # the planted chain is easy to learn
    emb, meta = load_tensors(tmp_path / "run" / "item_embeddings.safetensors")
    assert emb["embedding"].shape == (synthetic_data.n_items + 1, 32)
    assert meta["modality"] == "collaborative"
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["nDCG@10"] == m["test"]["nDCG@10"]


def test_resume_equals_uninterrupted(tmp_path, synthetic_data):
    cfg = from_dict(SASRecTrainConfig, {**FAST, "epochs": 3})
    full = train_sasrec(synthetic_data, cfg, tmp_path / "full", progress=False)
    part = from_dict(SASRecTrainConfig, {**FAST, "epochs": 1})
    train_sasrec(synthetic_data, part, tmp_path / "part", progress=False)
    resumed = train_sasrec(synthetic_data, cfg, tmp_path / "part", progress=False)
    assert resumed["test"] == {**full["test"], "eval_seconds": resumed["test"]["eval_seconds"]}
    a, _ = load_tensors(tmp_path / "full" / "best_model.safetensors")
    b, _ = load_tensors(tmp_path / "part" / "best_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_train_and_evaluate(tmp_path, synthetic_dir, synthetic_data, capsys):
    run = tmp_path / "run"
    assert run_cli("sasrec", "train", "--data", synthetic_dir, "--out", run, "--no-progress",
                   "--set", "epochs=2", "--set", "model.hidden=16") == 0
    assert (run / "config.toml").exists() and (run / "run.json").exists()
    assert run_cli("evaluate", "--data", synthetic_dir, "--run", run) == 0
    out = capsys.readouterr().out
    assert "sasrec test" in out and "nDCG@10" in out
    assert json.loads((run / "eval_test.json").read_text())["users"] == synthetic_data.n_users
