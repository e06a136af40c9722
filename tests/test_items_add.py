"""Items added after training: the cold-item split, `mmesid items add`, and what the run then does with them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli
from guarantee_common import FT, QUANT, SASREC, make_dataset
from rec_fixtures import tiny_llama

from mmesid.artifacts.added_items import read_added_items
from mmesid.data.cold import cold_item_ids, cold_split
from mmesid.data.dataset import SequenceData
from mmesid.io import load_tensors, read_json
from mmesid.rec.fusion import normalised_log_frequency
from mmesid.serve import Recommender


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """A cold split of a synthetic dataset and the whole chain trained on it (E_c, E_t, quantiser, MME-SID)."""
    root = tmp_path_factory.mktemp("cold")
    make_dataset(root / "full", n_items=30)
    assert run_cli("data", "cold-split", "--data", root / "full", "--fraction", "0.2", "--out", root / "data") == 0
    d = root / "data"
    assert run_cli("sasrec", "train", "--data", d, "--out", root / "sasrec", *SASREC) == 0
    ec, et = root / "sasrec" / "item_embeddings.safetensors", root / "E_t.safetensors"
    assert run_cli("encode", "text", "--data", d, "--out", et, "--quiet", "--device", "cpu") == 0
    assert run_cli("quantize", "train", "--emb", f"c={ec}", "--emb", f"t={et}", "--data", d,
                   "--out", root / "quant", *QUANT) == 0
    llama = tiny_llama(root / "llama", hidden=16)
    assert run_cli("finetune", "--data", d, "--out", root / "ft", "--set", f"backbone.path='{llama}'", *FT,
                   "--emb", f"c={ec}", "--emb", f"t={et}", "--sids", root / "quant" / "export") == 0
    return {"root": root, "dir": d, "data": SequenceData.load(d), "ec": ec, "et": et, "ft": root / "ft"}


def test_cold_split_keeps_cold_items_out_of_training():
    full = make_dataset_in_memory()
    data = cold_split(full, 0.2, seed=3)
    ids = cold_item_ids(data)
    index = {it.raw_id: i + 1 for i, it in enumerate(data.items)}
    cold = np.array([index[i] for i in ids])
    assert len(ids) == 6 and data.report["cold_split"]["source_fingerprint"] == full.fingerprint
    assert data.item_frequency()[cold].sum() == 0  # never in a training part
    assert np.isin(np.concatenate([s[-2:] for s in data.sequences]), cold).any()  # but evaluable
    kept = {u: s for u, s in zip(data.user_ids, data.sequences)}
    for u, s in zip(full.user_ids, full.sequences):  # the last two items are untouched
        if u in kept:
            assert list(kept[u][-2:]) == list(s[-2:])
            assert list(kept[u][:-2]) == [x for x in s[:-2] if x not in cold]
    assert cold_split(full, 0.2, seed=3).fingerprint == data.fingerprint  # seeded


def make_dataset_in_memory():
    from mmesid.data.synthetic import SyntheticConfig, generate

    return generate(SyntheticConfig(n_users=40, n_items=30, max_length=12, seed=0))


def test_add_cold_items_then_evaluate_on_them(cold, capsys):
    d, ft = cold["dir"], cold["ft"]
    base = ["evaluate", "--data", d, "--run", ft, "--device", "cpu", "--quiet", "--target-items", d]
    assert run_cli(*base, "--out", cold["root"] / "before.json") == 0
    assert run_cli("items", "add", "--run", ft, "--items", d, "--device", "cpu", "--neighbours", "3") == 0
    added = read_added_items(ft)
    data = cold["data"]
    ids = cold_item_ids(data)
    assert sorted(added.raw_ids) == sorted(ids) and all(int(n) <= data.n_items for n in added.numbers)
    # E_c of a cold item = the mean E_c of its 3 nearest training items by E_t (cosine)
    ec, _ = load_tensors(cold["ec"])
    et, _ = load_tensors(cold["et"])
    warm = torch.nonzero(torch.as_tensor(data.item_frequency()) > 0).flatten()
    n0 = int(added.numbers[0])
    sim = F.normalize(added.rows["E.t"][:1], dim=1) @ F.normalize(et["embedding"][warm], dim=1).T
    nb = warm[sim.topk(3).indices[0]]
    assert torch.allclose(added.rows["E.c"][0], ec["embedding"][nb].mean(0), atol=1e-6)
    assert (added.rows["q"] == 0).all()  # default --frequency zero: no training interactions
    assert torch.allclose(added.rows["E.t"][0], et["embedding"][n0], atol=1e-5)  # same encoder, same title
    assert added.rows["sid.c"].shape == (len(ids), 2) and (added.rows["sid.c"] >= 0).all()
    assert run_cli(*base, "--out", cold["root"] / "after.json") == 0
    before, after = read_json(cold["root"] / "before.json"), read_json(cold["root"] / "after.json")
    assert before["users"] == after["users"] > 0 and after["target_items"] == str(d)
    assert before != after  # the cold rows changed the scores of cold targets
    # --frequency neighbours: the fusion's input q is the mean of the same neighbours' normalised frequency
    assert run_cli("items", "add", "--run", ft, "--items", d, "--neighbours", "3", "--frequency", "neighbours") == 0
    added = read_added_items(ft)
    q = normalised_log_frequency(data.item_frequency())
    assert torch.allclose(added.rows["q"][0], q[nb].mean(), atol=1e-6) and (added.rows["q"] > 0).all()
    rec = Recommender.load(ft)
    assert torch.allclose(rec.scorer.fusion.q[added.numbers.long(), 0], added.rows["q"], atol=1e-6)


def test_new_item_is_recommendable_and_usable_in_histories(cold, tmp_path):
    ft, data = cold["ft"], cold["data"]
    rec0 = Recommender.load(ft)
    h = [it.raw_id for it in data.items[:3]]
    s0 = rec0.scorer.scores(torch.tensor([[1, 2, 3]])).float()
    src = data.items[4]
    csv = tmp_path / "new.csv"
    csv.write_text(f"id,title,image\nNEW-1,\"{src.title}\",\nNEW-2,Bright new lipstick,x.png\n")
    assert run_cli("items", "add", "--run", ft, "--items", csv) == 0
    rec = Recommender.load(ft)
    assert rec.n_items == data.n_items + 2 and rec.index["NEW-1"] == data.n_items + 1
    s1 = rec.scorer.scores(torch.tensor([[1, 2, 3]])).float()
    assert s1.shape[1] == s0.shape[1] + 2 and torch.isfinite(s1).all()
    torch.testing.assert_close(s1[:, : s0.shape[1]], s0, rtol=1e-5, atol=1e-6)  # the catalogue scores as before
    everything = rec.recommend([h], k=rec.n_items - 3)[0]
    assert {"NEW-1", "NEW-2"} <= set(everything.items)
    with_new = rec.recommend([h + ["NEW-1"]], k=5)[0]  # a new item inside a history
    assert "NEW-1" not in with_new.items and len(with_new.items) == 5
    assert rec.item("NEW-2") == {"id": "NEW-2", "title": "Bright new lipstick", "image": "x.png",
                                 "training_frequency": 0}
    assert run_cli("recommend", "--run", ft, "--history", "NEW-2", "--k", "3") == 0
    again = tmp_path / "again.csv"  # adding again replaces that item's rows, keeps the others
    again.write_text("id,title\nNEW-2,Another title\n")
    assert run_cli("items", "add", "--run", ft, "--items", again) == 0
    added = read_added_items(ft)
    assert added.raw_ids.count("NEW-2") == 1 and "NEW-1" in added.raw_ids
    assert Recommender.load(ft).item("NEW-2")["title"] == "Another title"


def test_items_add_refusals(cold, tmp_path, capsys):
    ft, data = cold["ft"], cold["data"]
    freq = data.item_frequency()
    warm = data.items[int(np.flatnonzero(freq[1:])[0])].raw_id
    cases = {
        "id,title\n" + f"{warm},x\n": "already have training interactions",
        "id,name\nA,x\n": "needs the columns id (or raw_id) and title",
        "id,title\nA,\n": "empty id or title",
        "id,title\nA,x\nA,y\n": "repeated",
        "id,title\nA,x,extra\n": "3 fields, the header has 2",
        "": "empty file",
    }
    for text, msg in cases.items():
        f = tmp_path / "bad.csv"
        f.write_text(text)
        assert run_cli("items", "add", "--run", ft, "--items", f) == 2, text
        assert msg in capsys.readouterr().err, text
    f = tmp_path / "ok.csv"
    f.write_text("id,title\nZ,x\n")
    assert run_cli("items", "add", "--run", cold["root"] / "sasrec", "--items", f) == 2
    assert "cannot score items it was not trained on" in capsys.readouterr().err
    assert run_cli("items", "add", "--run", ft, "--items", f, "--pooling", "cls") == 2
    assert "pass the same --text-model" in capsys.readouterr().err
    assert json.loads((ft / "run.json").read_text())["kind"] == "finetune"
