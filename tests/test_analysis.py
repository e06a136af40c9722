"""Analyses: Kendall tau of behaviour-target distances, singular-value spectra, their CLI."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from mmesid.analysis import behaviour_target_pairs, distance_tau, kendall_tau, singular_spectrum
from mmesid.cli import main
from mmesid.data.dataset import ItemInfo, SequenceData
from mmesid.errors import MmesidError
from mmesid.io import save_tensors


def _brute_tau_a(x, y):
    s = 0
    pairs = list(combinations(range(len(x)), 2))
    for i, j in pairs:
        s += np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
    return s / len(pairs)


def test_kendall_tau_equals_scipy_and_eq9():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    r = kendall_tau(x, y)
    assert r["tau"] == pytest.approx(kendalltau(x, y).statistic)
    assert r["tau_a"] == pytest.approx(_brute_tau_a(x, y))  # no ties: tau-a = tau-b
    assert r["tau"] == pytest.approx(r["tau_a"])
    # with ties (as from shared semantic IDs) tau-a is eq. 9 literally, tau-b scipy's
    xt, yt = np.round(x), np.round(y * 2) / 2
    rt = kendall_tau(xt, yt)
    assert rt["tau"] == pytest.approx(kendalltau(xt, yt).statistic)
    assert rt["tau_a"] == pytest.approx(_brute_tau_a(xt, yt))
    assert abs(rt["tau_a"]) < abs(rt["tau"])


def test_behaviour_target_pairs():
    seqs = [np.array([1, 2, 3, 2, 9, 9]), np.array([4, 5, 6])]  # training parts [1,2,3,2] and [4]
    p = behaviour_target_pairs(seqs)
    assert sorted(map(tuple, p)) == sorted([(1, 2), (1, 3), (2, 3), (1, 2), (3, 2)])  # (2, 2) dropped
    last = behaviour_target_pairs(seqs, "train-last")
    assert sorted(map(tuple, last)) == [(1, 2), (3, 2)]
    test = behaviour_target_pairs(seqs, "test")
    assert sorted(map(tuple, test)) == sorted([(1, 9), (2, 9), (3, 9), (2, 9), (4, 6), (5, 6)])
    capped = behaviour_target_pairs([np.array([1, 2, 3, 4, 5, 6, 7])], max_history=2)
    assert (7 - 2 - 1) * 2 - 1 == len(capped)  # targets 2..5, at most 2 history items each
    with pytest.raises(MmesidError):
        behaviour_target_pairs(seqs, "nope")


def test_distance_tau_invariances():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(30, 5))
    pairs = rng.integers(1, 30, size=(200, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert distance_tau(e, 3.0 * e @ q + 1.0, pairs)["tau"] == pytest.approx(1.0)  # similarity transform
    assert distance_tau(e, rng.normal(size=(30, 5)), pairs)["tau"] < 0.3


def test_collapse_spectrum_of_rank_deficient_matrix():
    rng = np.random.default_rng(0)
    m = np.zeros((51, 12))
    m[1:] = rng.normal(size=(50, 3)) @ rng.normal(size=(3, 12))
    m[0] = 1e6  # padding row must be ignored
    s = singular_spectrum(m)
    assert len(s) == 12 and s[0] == pytest.approx(1.0)
    assert (s[:3] > 1e-3).all() and (s[3:] < 1e-10).all()
    assert np.all(np.diff(s) <= 1e-12)
    full = singular_spectrum(torch.randn(101, 8))
    assert (full > 1e-2).all()


def _tiny_dataset(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 21, size=rng.integers(4, 9)) for _ in range(30)]
    data = SequenceData(seqs, [ItemInfo(f"i{i}") for i in range(1, 21)], [f"u{u}" for u in range(30)])
    return data.save(tmp_path / "data")


def test_cli_forgetting_and_collapse(tmp_path, capsys):
    folder = _tiny_dataset(tmp_path)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(21, 6)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    save_tensors(tmp_path / "b.safetensors", {"embedding": torch.from_numpy(2 * a),
                                              "other": torch.from_numpy(rng.normal(size=(21, 4)).astype(np.float32))})
    out = tmp_path / "tau.json"
    assert main(["analyze", "forgetting", "--data", str(folder), "--a", str(tmp_path / "a.npy"),
                 "--b", str(tmp_path / "b.safetensors"), "--b", f"{tmp_path / 'b.safetensors'}:other",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    assert res[str(tmp_path / "b.safetensors")]["tau"] == pytest.approx(1.0)
    assert abs(res[f"{tmp_path / 'b.safetensors'}:other"]["tau"]) < 0.5
    png = tmp_path / "spec" / "collapse.png"
    assert main(["analyze", "collapse", "--emb", f"A={tmp_path / 'a.npy'}",
                 "--emb", f"B={tmp_path / 'b.safetensors'}:other", "--out", str(png)]) == 0
    assert png.exists() and png.stat().st_size > 1000
    spec = json.loads(png.with_suffix(".json").read_text())["spectra"]
    assert set(spec) == {"A", "B"} and len(spec["A"]["singular_values"]) == 6
    # errors: missing file, wrong row count, bad key
    assert main(["analyze", "forgetting", "--data", str(folder), "--a", str(tmp_path / "nope.npy"),
                 "--b", str(tmp_path / "a.npy")]) == 2
    np.save(tmp_path / "short.npy", a[:10])
    assert main(["analyze", "forgetting", "--data", str(folder), "--a", str(tmp_path / "a.npy"),
                 "--b", str(tmp_path / "short.npy")]) == 2
    assert main(["analyze", "collapse", "--emb", f"B={tmp_path / 'b.safetensors'}:zzz", "--out", str(png)]) == 2
    assert main(["analyze", "collapse", "--emb", "noequals", "--out", str(png)]) == 2
