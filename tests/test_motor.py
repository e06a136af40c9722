"""MOTOR: SASRec with ID-free items built from their semantic-ID tokens by a token cross network."""

from __future__ import annotations

import torch
from conftest import run_cli
from guarantee_common import SASREC, make_dataset
from rec_fixtures import fake_export

from mmesid.io import read_json
from mmesid.models.motor import MOTOR, item_tokens
from mmesid.models.sasrec import SASRecConfig


def test_tokens_share_one_vocabulary_and_mark_missing_modalities():
    sids = {"t": torch.tensor([[-1, -1], [0, 1], [2, 1], [0, 1]]), "v": torch.tensor([[-1], [3], [-1], [0]])}
    tok = item_tokens(sids, ["t", "v"])
    # t level 0: 1..3, t level 1: 4..6, v level 0: 7..10; -1 (no embedding) and the padding row: 0
    assert tok.tolist() == [[0, 0, 0], [1, 5, 10], [3, 5, 0], [1, 5, 7]]


def test_items_are_functions_of_their_tokens_only():
    torch.manual_seed(0)
    sids = {"t": torch.tensor([[-1, -1], [0, 1], [0, 1], [2, 0], [1, 1]])}
    m = MOTOR(4, SASRecConfig(hidden=8, heads=2, inner=16, max_len=5), item_tokens(sids, ["t"]), cross_layers=2)
    assert not hasattr(m, "item_emb")
    table = m.item_table()
    assert torch.equal(table[1], table[2]) and not torch.equal(table[1], table[3])  # same tokens, same item
    assert torch.equal(table[0], torch.zeros(8))
    seq = torch.tensor([[0, 1, 3]])
    assert torch.allclose(m.embed_items(seq)[0, 1:], table[[1, 3]]) and torch.equal(m.embed_items(seq)[0, 0],
                                                                                  torch.zeros(8))
    loss = m.loss(torch.tensor([[0, 1, 3]]), torch.tensor([[0, 3, 4]]))
    loss.backward()
    g = m.items.emb.weight.grad
    assert g[5].abs().sum() > 0  # the shared token (t level 1, code 1) learns from every item that has it
    n_params = sum(p.numel() for p in m.parameters())  # no per-item parameters: the size does not grow with items
    assert n_params == sum(p.numel() for p in MOTOR(10_000, m.cfg, item_tokens(sids, ["t"])).parameters())


def test_cli_motor_run(tmp_path):
    data = make_dataset(tmp_path / "data")
    export = fake_export(tmp_path / "export", data.n_items, modalities=("c", "t"), levels=2, codes=4,
                         fingerprint=data.fingerprint)
    out = tmp_path / "motor"
    assert run_cli("sasrec", "train", "--data", tmp_path / "data", "--out", out, *SASREC,
                   "--set", "item_repr='motor'", "--set", f"sids='{export}'") == 0
    m = read_json(out / "metrics.json")
    assert m["model"] == "MOTOR" and 0 <= m["test"]["nDCG@10"] <= 1
    assert run_cli("evaluate", "--data", tmp_path / "data", "--run", out, "--device", "cpu", "--quiet") == 0
    assert read_json(out / "eval_test.json")["nDCG@10"] == m["test"]["nDCG@10"]
    assert run_cli("sasrec", "train", "--data", tmp_path / "data", "--out", tmp_path / "bad", *SASREC,
                   "--set", "item_repr='motor'") == 2  # no sids
