"""LETTER's tokenizer regularisers in `mmesid quantize` (collaborative and diversity), then LETTER = TIGER
on the text semantic IDs they produce."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from conftest import run_cli
from guarantee_common import QUANT, make_dataset
from rec_fixtures import random_embeddings

from mmesid.io import read_json
from mmesid.quantize.model import collaborative_loss
from mmesid.quantize.rq import ResidualQuantizer, code_clusters, diversity_loss


def test_diversity_loss_pulls_towards_the_other_codes_of_the_cluster():
    cb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    q = cb[[0, 2]].clone().requires_grad_()
    idx = torch.tensor([0, 2])
    loss = diversity_loss(q, idx, cb, labels)
    logits = q.detach() @ cb.T
    logits[0, 0] = logits[1, 2] = -1e12
    assert torch.allclose(loss, F.cross_entropy(logits, torch.tensor([1, 3])))  # the only other cluster member
    alone = diversity_loss(cb[[4]], torch.tensor([4]), cb, labels)  # a code alone in its cluster: nothing
    assert float(alone) == 0.0
    loss.backward()
    stepped = diversity_loss((q - 0.1 * q.grad).detach(), idx, cb, labels)
    assert float(stepped) < float(loss)  # a gradient step raises the cluster mate's probability


def test_collaborative_loss_is_in_batch_softmax_on_dot_products():
    g = torch.Generator().manual_seed(0)
    z, cf = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    assert torch.allclose(collaborative_loss(z, cf), F.cross_entropy(z @ cf.T, torch.arange(6)))
    basis = torch.eye(6)  # each latent aligned with its own (orthogonal) collaborative embedding: loss -> 0
    assert float(collaborative_loss(10 * basis, basis)) < 1e-3 < float(collaborative_loss(10 * basis.roll(1, 0), basis))


def test_code_clusters_and_quantizer_default_unchanged():
    torch.manual_seed(0)
    rq = ResidualQuantizer(4, [8, 8])
    labels = code_clusters(rq.codebooks[0], 3, seed=0)
    assert labels.shape == (8,) and set(labels.tolist()) == {0, 1, 2}
    z = torch.randn(16, 4)
    a = rq(z)
    b = rq(z, diversity=([labels, labels], 0.0))  # weight 0: exactly the plain quantiser
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    c = rq(z, diversity=([labels, labels], 1.0))
    assert float(c[2]) > float(a[2])


def test_cli_letter_tokenizer_then_tiger_on_text_sids(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    embs = random_embeddings(tmp_path, data.n_items, {"c": 4, "t": 12}, fingerprint=data.fingerprint)
    out = tmp_path / "letter"
    args = ["quantize", "train", "--emb", f"t={embs['t']}", "--data", tmp_path / "data", "--out", out, *QUANT,
            "--set", "loss.cf_weight=0.5", "--set", "loss.diversity_weight=0.01", "--set", "loss.diversity_clusters=2",
            "--set", f"cf_emb='{embs['c']}'"]
    assert run_cli(*args) == 0
    m = read_json(out / "metrics.json")
    assert "cf" in m["history"][-1]["eval"]  # the collaborative term is computed and reported
    assert run_cli("quantize", "train", "--emb", f"t={embs['t']}", "--out", tmp_path / "bad", *QUANT,
                   "--set", "loss.cf_weight=0.5") == 2
    assert "needs cf_emb" in capsys.readouterr().err
    assert run_cli("tiger", "train", "--data", tmp_path / "data", "--sids", out / "export", "--out", tmp_path / "tiger",
                   *QUANT[:5], "--set", "epochs=1", "--set", "model.d_model=16", "--set", "model.layers=1",
                   "--set", "model.heads=2", "--set", "model.d_kv=8", "--set", "model.d_ff=32",
                   "--set", "modalities=['t']", "--set", "valid_users=0") == 0
    assert read_json(tmp_path / "tiger" / "metrics.json")["tuple_length"] == 3  # 2 text codes + disambiguation
