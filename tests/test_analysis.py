"""Analyses: Kendall tau of behaviour-target distances, singular-value spectra, their CLI."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from mmesid.analysis import (behaviour_target_pairs, distance_tau, export_forgetting, kendall_tau,
                             singular_spectrum)
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


def _direct_pairs(seqs, keep=None):
    """Training-prefix pairs written out plainly: (h, s[t]) for h in the last 50 of s[:t], h != s[t]."""
    out = []
    for s in seqs:
        s = [int(x) for x in s[:-2]]
        for t in range(1, len(s)):
            out += [(h, s[t]) for h in s[max(0, t - 50):t] if h != s[t]]
    if keep is not None:
        out = [(h, t) for h, t in out if keep[h] and keep[t]]
    return out


def _direct_tau(a, b, pairs):
    da = [float(np.linalg.norm(np.asarray(a[h], np.float64) - np.asarray(a[t], np.float64))) for h, t in pairs]
    db = [float(np.linalg.norm(np.asarray(b[h], np.float64) - np.asarray(b[t], np.float64))) for h, t in pairs]
    return kendalltau(da, db).statistic


def test_distance_tau_invariances_and_direct_value():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(30, 5))
    pairs = rng.integers(1, 30, size=(200, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert distance_tau(e, 3.0 * e @ q + 1.0, pairs)["tau"] == pytest.approx(1.0)  # similarity transform
    other = rng.normal(size=(30, 5))
    r = distance_tau(e, other, pairs)
    assert r["tau"] == pytest.approx(_direct_tau(e, other, pairs.tolist()), abs=1e-12)
    assert r["n_pairs"] == len(pairs)
    keep = np.ones(30, dtype=bool)
    keep[[3, 4, 17]] = False
    masked = [(h, t) for h, t in pairs.tolist() if keep[h] and keep[t]]
    rm = distance_tau(e, other, pairs, mask=keep)
    assert rm["n_pairs"] == len(masked) < len(pairs)
    assert rm["tau"] == pytest.approx(_direct_tau(e, other, masked), abs=1e-12)


def test_collapse_spectrum_of_rank_deficient_matrix():
    rng = np.random.default_rng(0)
    m = np.zeros((51, 12))
    m[1:] = rng.normal(size=(50, 3)) @ rng.normal(size=(3, 12))
    m[0] = 1e6  # padding row must be ignored
    s = singular_spectrum(m)
    direct = np.linalg.svd(m[1:], compute_uv=False)
    np.testing.assert_allclose(s, direct / direct[0], rtol=0, atol=1e-12)
    assert (s[3:] < 1e-10).all() and (s[:3] > 1e-3).all()  # rank 3: exactly three values above zero
    x = torch.randn(101, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    centred = x[1:] - x[1:].mean(0)
    direct = np.linalg.svd(centred.numpy(), compute_uv=False)
    np.testing.assert_allclose(singular_spectrum(x, center=True), direct / direct[0], rtol=0, atol=1e-12)
    mask = np.ones(101, dtype=bool)
    mask[50:] = False
    direct = np.linalg.svd(x[1:50].numpy(), compute_uv=False)
    np.testing.assert_allclose(singular_spectrum(x, mask=mask), direct / direct[0], rtol=0, atol=1e-12)


def _tiny_dataset(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 21, size=rng.integers(4, 9)) for _ in range(30)]
    data = SequenceData(seqs, [ItemInfo(f"i{i}") for i in range(1, 21)], [f"u{u}" for u in range(30)])
    return data.save(tmp_path / "data"), data


def test_export_forgetting_matches_direct_computation(tmp_path):
    _, data = _tiny_dataset(tmp_path)
    rng = np.random.default_rng(3)
    e_c = rng.normal(size=(21, 6)).astype(np.float32)
    mask = np.ones(21, dtype=np.uint8)
    mask[[0, 7]] = 0
    tables = {k: (e_c[:, :4] + s * rng.normal(size=(21, 4))).astype(np.float32)
              for k, s in (("z", 0.1), ("z_hat", 0.5), ("s_hat", 1.0))}
    export = tmp_path / "export"
    save_tensors(export / "embeddings.safetensors", {**{f"{k}.c": torch.from_numpy(v) for k, v in tables.items()},
                                                     "mask.c": torch.from_numpy(mask)})
    got = export_forgetting(data.sequences, {"c": torch.from_numpy(e_c)}, export)
    pairs = _direct_pairs(data.sequences, keep=mask.astype(bool))
    assert set(got) == {"c"} and set(got["c"]) == {"z", "z_hat", "s_hat"}
    for k, v in tables.items():
        assert got["c"][k] == pytest.approx(_direct_tau(e_c, v, pairs), abs=1e-12), k
    with pytest.raises(MmesidError, match="no tensor 'z_hat.t'"):
        export_forgetting(data.sequences, {"t": torch.from_numpy(e_c)}, export)


def test_cli_forgetting(tmp_path, capsys):
    folder, data = _tiny_dataset(tmp_path)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(21, 6)).astype(np.float32)
    other = rng.normal(size=(21, 4)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    b_mask = np.ones(21, dtype=np.uint8)
    b_mask[[2, 11]] = 0
    save_tensors(tmp_path / "b.safetensors", {"embedding": torch.from_numpy(2 * a), "mask": torch.from_numpy(b_mask),
                                              "other": torch.from_numpy(other)})
    out = tmp_path / "tau.json"
    b, b_other = str(tmp_path / "b.safetensors"), f"{tmp_path / 'b.safetensors'}:other"
    assert main(["analyze", "forgetting", "--data", str(folder), "--original", str(tmp_path / "a.npy"),
                 "--derived", b, "--derived", b_other, "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["original"] == str(tmp_path / "a.npy") and saved["pairs"] == "train-prefixes"
    res = saved["results"]
    assert res[b]["tau"] == pytest.approx(1.0)
    assert res[b]["n_pairs"] == len(_direct_pairs(data.sequences, keep=b_mask.astype(bool)))
    all_pairs = _direct_pairs(data.sequences)
    assert res[b_other]["n_pairs"] == len(all_pairs)
    assert res[b_other]["tau"] == pytest.approx(_direct_tau(a, other, all_pairs), abs=1e-12)
    assert f"= {res[b_other]['tau']:.4f}" in capsys.readouterr().out
    # errors: missing file, wrong row count, another dataset, the old flags, output onto an input
    np.save(tmp_path / "short.npy", a[:10])
    save_tensors(tmp_path / "foreign.safetensors", {"embedding": torch.from_numpy(a)},
                 {"data_fingerprint": "0123456789abcdef"})
    cases = {"embedding file not found": str(tmp_path / "nope.npy"), "but the dataset has 20":
             str(tmp_path / "short.npy"), "made from another dataset": str(tmp_path / "foreign.safetensors")}
    for msg, spec in cases.items():
        assert main(["analyze", "forgetting", "--data", str(folder), "--original", str(tmp_path / "a.npy"),
                     "--derived", spec]) == 2
        assert msg in capsys.readouterr().err
    assert main(["analyze", "forgetting", "--data", str(folder), "--original", str(tmp_path / "foreign.safetensors"),
                 "--derived", b]) == 2
    assert "made from another dataset" in capsys.readouterr().err
    assert main(["analyze", "forgetting", "--data", str(folder), "--original", str(tmp_path / "a.npy"),
                 "--derived", b, "--out", str(tmp_path / "a.npy")]) == 2
    assert np.array_equal(np.load(tmp_path / "a.npy"), a)
    with pytest.raises(SystemExit):
        main(["analyze", "forgetting", "--data", str(folder), "--a", str(tmp_path / "a.npy"), "--b", b])


def test_cli_collapse(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    a = rng.normal(size=(21, 6)).astype(np.float32)
    other = rng.normal(size=(21, 4)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    save_tensors(tmp_path / "b.safetensors", {"embedding": torch.from_numpy(a), "other": torch.from_numpy(other)})
    png = tmp_path / "spec" / "collapse.png"
    assert main(["analyze", "collapse", "--emb", f"A={tmp_path / 'a.npy'}",
                 "--emb", f"B={tmp_path / 'b.safetensors'}:other", "--out", str(png)]) == 0
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (768, 504)  # figsize 6.4 x 4.2 in at 120 dpi
    spec = json.loads(png.with_suffix(".json").read_text())["spectra"]
    assert set(spec) == {"A", "B"}
    for name, m in (("A", a), ("B", other)):
        direct = np.linalg.svd(m[1:].astype(np.float64), compute_uv=False)
        np.testing.assert_allclose(spec[name]["singular_values"], direct / direct[0], rtol=0, atol=1e-6)
    # --out must be the .png: the JSON goes beside it and can never replace the plot or an input
    before = png.read_bytes()
    refusals = {png.with_suffix(".json"): "expected a file ending in .png", tmp_path / "x.json":
                "expected a file ending in .png", tmp_path / "a.npy": "contains the input"}
    for out, msg in refusals.items():
        assert main(["analyze", "collapse", "--emb", f"A={tmp_path / 'a.npy'}", "--out", str(out)]) == 2
        assert msg in capsys.readouterr().err
    assert png.read_bytes() == before and np.array_equal(np.load(tmp_path / "a.npy"), a)
    assert main(["analyze", "collapse", "--emb", f"B={tmp_path / 'b.safetensors'}:zzz", "--out", str(png)]) == 2
    assert main(["analyze", "collapse", "--emb", "noequals", "--out", str(png)]) == 2
