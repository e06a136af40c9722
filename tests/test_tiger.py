"""TIGER-MM: item tuples, constrained beam search, scores for the evaluator, training through the CLI."""

from __future__ import annotations

import numpy as np
import torch
from conftest import run_cli
from guarantee_common import QUANT, trained_stack

from mmesid.data.split import eval_examples, pad_left
from mmesid.eval import metrics_from_ranks
from mmesid.io import read_json
from mmesid.models.tiger import EOS, OUTSIDE_BEAMS, SIDTuples, TigerMM, TigerModelConfig
from mmesid.serve import Recommender

SMALL = TigerModelConfig(d_model=16, layers=1, heads=2, d_kv=8, d_ff=32, dropout=0.0)


def colliding_sids(n: int = 40, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sids = {"c": torch.randint(0, 3, (n + 1, 2), generator=g), "t": torch.randint(0, 2, (n + 1, 1), generator=g)}
    sids["t"][5] = -1  # an item without a text embedding
    return sids


def test_tuples_are_unique_with_disambiguation_and_the_trie_is_exact():
    sids = colliding_sids()
    t = SIDTuples(sids, ["c", "t"])
    assert t.collisions > 0 and t.length == 4  # 2 + 1 codes + the disambiguation code
    tuples = [tuple(x) for x in t.tokens[1:].tolist()]
    assert len(set(tuples)) == 40 and t.item_of[tuples[6]] == 7
    for k in range(t.length):  # every allowed continuation leads to a real item, and nothing else does
        for prefix in {tp[:k] for tp in tuples}:
            assert set(t.allowed(list(prefix))) == {tp[k] for tp in tuples if tp[:k] == prefix}
    assert t.allowed([999]) == [EOS]
    h = torch.tensor([[0, 0, 3, 4]])
    ids, mask = t.encoder_inputs(h, max_len=20)
    assert ids.shape == (1, 8) and mask.all() and ids[0, :4].tolist() == list(tuples[2])


def test_constrained_beam_search_returns_distinct_real_items_and_consistent_scores():
    torch.manual_seed(0)
    t = SIDTuples(colliding_sids(), ["c", "t"])
    m = TigerMM(t, SMALL, n_items=40, beams=12).eval()
    h = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [0, 0, 0, 9]])
    items, logp = m.beam_items(h)
    assert items.shape == (3, 12) and (items > 0).all() and (items <= 40).all()  # never a non-existent item
    for r in range(3):
        assert len(set(items[r].tolist())) == 12  # k distinct items
        assert logp[r].tolist() == sorted(logp[r].tolist(), reverse=True)
    s = m.scores(h)
    for r in range(3):  # the scores rank the beams in their order, every other item below them
        order = torch.argsort(s[r], descending=True, stable=True)[:12]
        assert order.tolist() == items[r].tolist()
        rest = torch.ones(41, dtype=torch.bool)
        rest[items[r]] = False
        assert (s[r][rest] == OUTSIDE_BEAMS).all() and (s[r][items[r]] > OUTSIDE_BEAMS).all()
    # the beam's log-probability is the model's own probability of that tuple
    ids, mask = t.encoder_inputs(h[:1], 20)
    lab = t.tokens[items[0, :1]]
    with torch.no_grad():
        out = m.t5(input_ids=ids, attention_mask=mask, labels=lab)
    logits = out.logits.log_softmax(-1)
    full = logits[0, torch.arange(t.length), lab[0]].sum()  # unconstrained: a lower bound
    assert float(logp[0, 0]) >= float(full) - 1e-4


def test_cli_train_evaluate_recommend(tmp_path):
    env = trained_stack(tmp_path / "stack", llama=False)
    out = tmp_path / "tiger"
    args = ["tiger", "train", "--data", env["dir"], "--sids", env["sids"], "--out", out, *QUANT[:5],
            "--set", "epochs=2", "--set", "model.d_model=16", "--set", "model.layers=1", "--set", "model.heads=2",
            "--set", "model.d_kv=8", "--set", "model.d_ff=32", "--set", "valid_users=0", "--set", "beams=20"]
    assert run_cli(*args) == 0
    m = read_json(out / "metrics.json")
    assert m["model"] == "TIGER-MM" and m["beams"] == 20 and 0 <= m["test"]["nDCG@10"] <= 1
    assert run_cli("evaluate", "--data", env["dir"], "--run", out, "--device", "cpu", "--quiet") == 0
    assert read_json(out / "eval_test.json")["nDCG@10"] == m["test"]["nDCG@10"]
    kept = np.load(out / "test_ranks.npy", allow_pickle=False)  # every test user's rank, kept for paired tests
    assert kept.shape == (m["test"]["users"], 2) and metrics_from_ranks(kept[:, 1])["nDCG@10"] == m["test"]["nDCG@10"]
    rec = Recommender.load(out)
    seq = env["data"].sequences[0]
    r = rec.recommend([[env["data"].items[i - 1].raw_id for i in seq]], k=5)[0]
    assert len(r.items) == 5
    ex = eval_examples(env["data"].sequences, "test")
    s = rec.scorer.scores(pad_left(ex.histories[:4], 20))
    assert ((s > OUTSIDE_BEAMS).sum(1) == 20).all()


def test_length_bucketed_epochs_see_every_row_once_in_similar_length_batches():
    """TIGER-MM's training order (EpochTask with lengths): every row once per epoch, the partial batch
    last, batches of similar length, the same order for the same seed, plain shuffling without lengths."""
    from types import SimpleNamespace

    from mmesid.models.epoch_training import BUCKET_BATCHES, EpochTask

    rng = np.random.default_rng(0)
    n, bs = 2 * 8 * BUCKET_BATCHES + 5, 8
    lengths = rng.integers(1, 21, n)
    cfg = SimpleNamespace(batch_size=bs, seed=3, lr=1e-3, weight_decay=0.0)
    model = torch.nn.Linear(1, 1)

    def order(lens):
        task = EpochTask(model, torch.optim.SGD(model.parameters(), lr=0.1), (np.arange(n),), [], cfg,
                         torch.device("cpu"), lens)
        return task.epoch_order().numpy()

    a = order(lengths)
    assert sorted(a.tolist()) == list(range(n))
    assert np.array_equal(a, order(lengths))  # fixed by the seed
    batches = [lengths[a[i:i + bs]] for i in range(0, n - n % bs, bs)]
    spread = np.mean([b.max() - b.min() for b in batches])
    plain = order(None)
    assert sorted(plain.tolist()) == list(range(n))
    plain_spread = np.mean([np.ptp(lengths[plain[i:i + bs]]) for i in range(0, n - n % bs, bs)])
    assert spread < 0.2 * plain_spread  # ~1 vs ~15 for lengths 1..20
    # the padded width (a batch's longest history) drops well below the random batches'
    assert np.mean([b.max() for b in batches]) < 0.8 * np.mean([lengths[plain[i:i + bs]].max()
                                                                for i in range(0, n - n % bs, bs)])
