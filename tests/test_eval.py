"""Full-ranking evaluation (against a plain-python reference) and the `mmesid evaluate` command."""

import json
import math
from collections import Counter, defaultdict, deque

import numpy as np
import pytest
import torch

from mmesid.cli import main
from mmesid.data.dataset import ItemInfo, SequenceData
from mmesid.data.split import EvalExamples
from mmesid.errors import MmesidError
from mmesid.eval import evaluate, metrics_from_ranks
from mmesid.io import write_json


class TableScorer:
    """Scores from a fixed [n_users, n_items + 1] table, row u for user u, found by the user's history
    (the evaluator may batch users in any order; users with the same history are served in user order,
    which the evaluator's stable length ordering keeps)."""

    def __init__(self, table, histories):
        self.table = torch.as_tensor(table)
        self.rows = defaultdict(deque)
        for u, h in enumerate(histories):
            self.rows[tuple(int(i) for i in h)].append(u)

    def scores(self, histories):
        return self.table[[self.rows[tuple(int(i) for i in h if i > 0)].popleft() for h in histories]]


def independent_metrics(table, histories, targets, ks):
    """Plain-python reference: the target's rank is the number of other, non-history items scoring at
    least as high (ties count against the target)."""
    out = {f"{m}@{k}": 0.0 for k in ks for m in ("HR", "nDCG")}
    for u in range(len(targets)):
        hist = {int(i) for i in histories[u]}
        t = targets[u]
        pos = sum(1 for i in range(1, table.shape[1])
                  if i != t and i not in hist and table[u][i] >= table[u][t])
        for k in ks:
            if pos < k:
                out[f"HR@{k}"] += 1 / len(targets)
                out[f"nDCG@{k}"] += 1 / math.log2(pos + 2) / len(targets)
    return out


def _random_case(n_users=64, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    histories, targets = [], []
    for _ in range(n_users):
        items = rng.choice(np.arange(1, n_items + 1), size=rng.integers(2, 12), replace=False)
        histories.append(items[:-1])
        targets.append(int(items[-1]))
    table = rng.standard_normal((n_users, n_items + 1)).astype(np.float32)
    return histories, targets, table


def test_matches_independent_computation():
    histories, targets, table = _random_case()
    ex = EvalExamples(histories, np.array(targets), np.arange(len(targets)))
    got = evaluate(TableScorer(table, histories), ex, batch_size=7, progress=False)
    want = independent_metrics(table, histories, targets, (5, 10, 20))
    assert want["HR@5"] < want["HR@10"] < want["HR@20"]  # the random case is not degenerate
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k
    assert got["users"] == len(targets)
    # users are batched by history length, yet the ranks come back in the examples' own order
    ranks = evaluate(TableScorer(table, histories), ex, batch_size=7, progress=False, return_ranks=True)["ranks"]
    for u in range(len(targets)):
        want_rank = sum(1 for i in range(1, table.shape[1]) if i != targets[u] and i not in set(histories[u].tolist())
                        and table[u][i] >= table[u][targets[u]])
        assert ranks[u] == want_rank


def test_minus_inf_is_exclusion_not_an_error():
    histories, targets, table = _random_case(seed=1)
    table[:, 5:15] = -np.inf  # a model may rule items out; the target can be among them
    ex = EvalExamples(histories, np.array(targets), np.arange(len(targets)))
    got = evaluate(TableScorer(table, histories), ex, batch_size=9, progress=False)
    want = independent_metrics(table, histories, targets, (5, 10, 20))
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_inf_scores_are_refused(bad):
    histories, targets, table = _random_case(n_users=10, seed=2)
    for u in (3, 7):
        table[u, targets[u]] = bad  # would give rank -1 (NaN) or rank 0 (inf)
    ex = EvalExamples(histories, np.array(targets), np.arange(len(targets)))
    with pytest.raises(MmesidError, match=r"scores contain NaN/inf for 2 users .*the model diverged"):
        evaluate(TableScorer(table, histories), ex, batch_size=10, progress=False)
    # also when the bad score sits on an excluded history item
    _, _, table = _random_case(n_users=10, seed=2)
    table[0, histories[0][0]] = bad
    with pytest.raises(MmesidError, match="for 1 users"):
        evaluate(TableScorer(table, histories), ex, batch_size=10, progress=False)


def test_history_excluded_and_ties_pessimistic():
    ex = EvalExamples([np.array([1, 2])], np.array([3]), np.array([0]))
    s = torch.tensor([[0.0, 9.0, 8.0, 1.0, 0.5]])  # items 1,2 beat the target but are history
    assert evaluate(lambda h: s, ex, progress=False)["HR@5"] == 1.0
    r = evaluate(lambda h: s, ex, progress=False, return_ranks=True)["ranks"]
    assert r.tolist() == [0]
    const = torch.zeros(1, 30)
    assert evaluate(lambda h: const, ex, ks=(5,), progress=False, return_ranks=True)["ranks"].tolist() == [26]


def test_metrics_from_ranks():
    m = metrics_from_ranks(np.array([0, 1, 9, 25]), ks=(10,))
    assert m["HR@10"] == 0.75
    assert m["nDCG@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 4, abs=1e-15)
    with pytest.raises(MmesidError, match="negative target rank"):
        metrics_from_ranks(np.array([0, -1]))


def test_wrong_score_shape_is_an_error():
    ex = EvalExamples([np.array([1, 2])], np.array([3]), np.array([0]))
    with pytest.raises(MmesidError, match=r"shape \(1, 3\)"):
        evaluate(lambda h: torch.zeros(1, 3), ex, progress=False)


# ------------------------------------------------------------------------------------ the command
@pytest.fixture
def prepared(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [rng.choice(np.arange(1, 21), size=rng.integers(4, 9), replace=False) for _ in range(30)]
    data = SequenceData(seqs, [ItemInfo(f"i{i}") for i in range(1, 21)], [f"u{u}" for u in range(30)])
    return data.save(tmp_path / "data"), data


def _fake_run(path, kind, fingerprint):
    path.mkdir()
    write_json(path / "run.json", {"kind": kind, "data_fingerprint": fingerprint})
    return path


def test_cli_popularity_matches_direct_computation(tmp_path, prepared, capsys):
    folder, data = prepared
    out = tmp_path / "pop.json"
    assert main(["evaluate", "--data", str(folder), "--popularity", "--out", str(out), "--quiet"]) == 0
    freq = Counter(int(i) for s in data.sequences for i in s[:-2])
    table = np.array([[freq.get(i, 0) for i in range(21)]] * 30, dtype=np.float64)
    want = independent_metrics(table, [s[:-1] for s in data.sequences], [int(s[-1]) for s in data.sequences],
                               (5, 10, 20))
    got = json.loads(out.read_text())
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k
    assert got["model"] == "popularity" and got["data_fingerprint"] == data.fingerprint
    assert f"HR@5 {want['HR@5']:.4f}" in capsys.readouterr().out


def test_cli_random_floor_is_seeded_and_at_chance(tmp_path, prepared):
    """--random: the same numbers on a rerun, and the expected HR@k of a uniform ranking (k / candidates)
    within sampling error over many repeated users."""
    folder, data = prepared
    outs = [tmp_path / f"r{i}.json" for i in range(2)]
    for out in outs:
        assert main(["evaluate", "--data", str(folder), "--random", "--out", str(out), "--quiet"]) == 0
    a, b = (json.loads(o.read_text()) for o in outs)
    a.pop("eval_seconds"), b.pop("eval_seconds")
    assert a == b and a["model"] == "random"
    from mmesid.models.random_scores import RandomScores

    scorer = RandomScores(data.n_items, seed=1)
    hist = torch.zeros(4000, 5, dtype=torch.long)
    hist[:, -1] = 1  # one history item: 20 candidates for 21 rows minus padding and the history item
    s = scorer.scores(hist)
    s[:, 0] = -1
    s[:, 1] = -1
    hr = (s[:, 2:] > s[:, 2:3]).sum(1).lt(5).float().mean().item()  # target item 2, rank < 5 among 19 others
    assert hr == pytest.approx(5 / 19, abs=0.03)


def test_cli_run_scorer_by_kind_and_default_output(tmp_path, prepared, monkeypatch):
    import mmesid.serve.runs as ev

    folder, data = prepared
    histories = [s[:-2] for s in data.sequences]
    targets = [int(s[-2]) for s in data.sequences]
    table = np.random.default_rng(5).standard_normal((30, 21))
    seen = {}

    def loader(run_dir, d, device):
        seen["args"] = (run_dir, d.fingerprint, str(device))
        return TableScorer(table, histories), 50

    monkeypatch.setitem(ev.SCORERS, "sasrec", loader)
    run = _fake_run(tmp_path / "run", "sasrec", data.fingerprint)
    assert main(["evaluate", "--data", str(folder), "--run", str(run), "--split", "valid", "--device", "cpu",
                 "--batch-size", "8", "--quiet"]) == 0
    assert seen["args"] == (run, data.fingerprint, "cpu")
    got = json.loads((run / "eval_valid.json").read_text())
    for k, v in independent_metrics(table, histories, targets, (5, 10, 20)).items():
        assert got[k] == pytest.approx(v, abs=1e-12), k
    assert got["model"] == "sasrec" and got["split"] == "valid"


def test_cli_replaces_only_its_own_earlier_results(tmp_path, prepared, capsys):
    """--out / --ranks-out naming an existing file of the user's: refused before any work, the file
    untouched; an earlier result of the command is replaced."""
    folder, _ = prepared
    base = ["evaluate", "--data", str(folder), "--random", "--quiet"]
    theirs_json, theirs_npy = tmp_path / "notes.json", tmp_path / "table.npy"
    theirs_json.write_text('{"mine": 1}')
    np.save(theirs_npy, np.zeros((3, 4), dtype=np.float32))
    before = theirs_npy.read_bytes()
    for args, what in (([ "--out", str(theirs_json)], "--out"), (["--ranks-out", str(theirs_npy)], "--ranks-out")):
        assert main(base + args) == 2
        err = capsys.readouterr().err
        assert f"{what} " in err and "is not an earlier `mmesid evaluate` result" in err and "Traceback" not in err
    assert theirs_json.read_text() == '{"mine": 1}' and theirs_npy.read_bytes() == before
    out, ranks = tmp_path / "r.json", tmp_path / "r.npy"
    for _ in range(2):  # the second run replaces the first run's files
        assert main(base + ["--out", str(out), "--ranks-out", str(ranks)]) == 0
    assert json.loads(out.read_text())["model"] == "random" and np.load(ranks).shape[1] == 2


def test_cli_refusals(tmp_path, prepared, monkeypatch, capsys):
    import mmesid.io
    import mmesid.serve.runs as ev

    folder, data = prepared
    monkeypatch.setitem(ev.SCORERS, "sasrec", lambda r, d, dev: (lambda h: torch.zeros(len(h), 21), 50))
    run = _fake_run(tmp_path / "run", "sasrec", data.fingerprint)
    base = ["evaluate", "--data", str(folder)]
    refused_by_argparse = [["--popularity", "--batch-size", "0"], ["--popularity", "--batch-size", "-1"],
                           ["--popularity", "--run", str(run)], []]
    for extra in refused_by_argparse:
        with pytest.raises(SystemExit) as e:
            main(base + extra)
        assert e.value.code == 2, extra
    capsys.readouterr()
    cases = {
        "made from another dataset": _fake_run(tmp_path / "other", "sasrec", "0123456789abcdef"),
        "not a trained model run": _fake_run(tmp_path / "quant", "quantize", data.fingerprint),
        "run folder not found": tmp_path / "missing",
    }
    for msg, path in cases.items():
        assert main(base + ["--run", str(path)]) == 2
        assert msg in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    outs = {"inside the run folder only": run / "run.json", "is not a folder": tmp_path / "afile" / "r.json",
            "expected a file ending in .json": tmp_path / "r.txt", "lies inside the input folder": folder / "r.json"}
    for msg, out in outs.items():
        assert main(base + ["--run", str(run), "--out", str(out)]) == 2
        assert msg in capsys.readouterr().err
    assert json.loads((run / "run.json").read_text())["kind"] == "sasrec"

    def failing_write(path, obj):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(mmesid.io, "write_json", failing_write)
    assert main(base + ["--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert "cannot write the results (Permission denied)" in err and "Traceback" not in err
    assert not (run / "eval_test.json").exists()
