"""Quantisation stage: residual quantiser, losses, k-means / Sinkhorn / dead codes, train + export, CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmesid.cli import main
from mmesid.errors import MmesidError
from mmesid.io import save_tensors
from mmesid.quantize import (LossConfig, QuantizeConfig, ResidualQuantizer, codebook_stats, info_nce,
                             load_export, load_item_embedding, mmd2, run_training, sinkhorn_assign)
from mmesid.quantize.embeddings import load_modalities, parse_modality_args
from mmesid.quantize.model import RQVAEConfig

torch.set_num_threads(1)


def _clustered(n_clusters=16, per=20, dim=8, seed=0, spread=0.05):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_clusters, dim, generator=g) * 3
    x = centers.repeat_interleave(per, 0) + spread * torch.randn(n_clusters * per, dim, generator=g)
    return x, centers


# ------------------------------------------------------------------ residual quantiser
def test_quantiser_round_trip_recovers_codes():
    q = ResidualQuantizer(4, [5, 3])
    with torch.no_grad():
        q.codebooks[0].copy_(torch.cat([torch.eye(4) * 10, torch.tensor([[-10.0, -10.0, 0, 0]])]))
        q.codebooks[1].copy_(torch.tensor([[0.1, 0, 0, 0], [0, 0.1, 0, 0], [0, 0, 0.1, 0]]))
    codes = torch.tensor([[i, j] for i in range(5) for j in range(3)])
    z = q.lookup(codes)
    got, z_hat, _ = q.encode(z)
    assert torch.equal(got, codes)
    assert torch.allclose(z_hat, z)
    assert torch.allclose(q.lookup(got), z_hat)


def test_quantiser_straight_through_and_loss():
    q = ResidualQuantizer(3, [4, 4, 4])
    z = torch.randn(10, 3, requires_grad=True)
    z_hat, codes, loss = q(z, alpha=0.25)
    assert codes.shape == (10, 3) and z_hat.shape == (10, 3)
    assert torch.allclose(z_hat, q.lookup(codes), atol=1e-6)
    z_hat.sum().backward()
    assert torch.allclose(z.grad, torch.ones_like(z))  # identity gradient through the quantiser
    assert loss.item() > 0
    loss.backward()
    assert all(cb.grad is not None for cb in q.codebooks)


def test_kmeans_init_uses_every_code_on_clustered_data():
    x, _ = _clustered(n_clusters=16, per=25)
    q = ResidualQuantizer(8, [16, 8])
    q.kmeans_init(x, seed=0)
    codes, _, _ = q.encode(x)
    assert len(torch.unique(codes[:, 0])) == 16
    assert len(torch.unique(codes[:, 1])) == 8
    # level 0 separates the planted clusters exactly
    lab = torch.arange(16).repeat_interleave(25)
    for c in range(16):
        assert len(torch.unique(codes[lab == c, 0])) == 1


def test_sinkhorn_balances_assignments():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=g) * 0.1  # everything near the origin
    cb = torch.randn(16, 4, generator=g) + 3.0
    cb[0] = 0.0  # one code is nearest for (almost) every point
    d = ((x[:, None, :] - cb[None]) ** 2).sum(-1)
    greedy = torch.bincount(d.argmin(1), minlength=16)
    assert greedy.max() >= 500
    balanced = torch.bincount(sinkhorn_assign(d, epsilon=0.01, iters=100), minlength=16)
    assert (balanced > 0).all()
    assert balanced.max() <= 2 * 512 // 16


def test_dead_codes_are_reseeded():
    x, _ = _clustered(n_clusters=8, per=20, dim=4)
    q = ResidualQuantizer(4, [8])
    with torch.no_grad():
        q.codebooks[0].copy_(torch.full((8, 4), 100.0) + torch.arange(8.0)[:, None])  # all far away
    before = len(torch.unique(q.encode(x)[0]))
    n = q.reseed_dead_codes(x, generator=torch.Generator().manual_seed(0))
    after = len(torch.unique(q.encode(x)[0]))
    assert before == 1 and n == [7] and after > before


def test_codebook_stats_collisions():
    codes = np.array([[0, 1], [0, 1], [0, 1], [1, 0], [2, 2]])
    st = codebook_stats(codes, [4, 4])
    assert st["unique_sids"] == 3 and st["largest_collision_group"] == 3 and st["items_in_collisions"] == 3
    assert st["levels"][0]["codes_used"] == 3 and math.isclose(st["collision_rate"], 0.4)
    assert st["levels"][0]["perplexity"] == pytest.approx(math.exp(-(0.6 * math.log(0.6) + 2 * 0.2 * math.log(0.2))))


# ------------------------------------------------------------------ losses
def test_mmd_near_zero_for_same_distribution_and_grows_with_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=g)
    y = torch.randn(400, 6, generator=g)
    assert mmd2(x, x, estimator="biased").abs().item() < 1e-6
    assert abs(mmd2(x, y).item()) < 5e-3
    vals = [mmd2(x, y + s).item() for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(b > a for a, b in zip(vals, vals[1:]))
    multi = [mmd2(x, y + s, sigmas=[0.5, 1, 2, 4], bandwidth="fixed").item() for s in (0.0, 1.0)]
    assert multi[1] > multi[0] + 0.05


def test_mmd_unbiased_matches_formula():
    x = torch.tensor([[0.0], [1.0], [3.0]])
    y = torch.tensor([[0.5], [2.0]])

    def k(a, b):
        return math.exp(-((a - b) ** 2) / 2)

    xs, ys = [0, 1, 3], [0.5, 2]
    kxx = sum(k(a, b) for i, a in enumerate(xs) for j, b in enumerate(xs) if i != j) / 6
    kyy = sum(k(a, b) for i, a in enumerate(ys) for j, b in enumerate(ys) if i != j) / 2
    kxy = sum(k(a, b) for a in xs for b in ys) / 6
    got = mmd2(x, y, sigmas=[1.0], bandwidth="fixed").item()
    assert got == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-5)


def test_info_nce_hand_computed():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    t = 0.5
    c = 1 / math.sqrt(2)
    # cosines: a0.b0 = 1, a0.b1 = c, a1.b0 = 0, a1.b1 = c
    l0 = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(c / t)))
    l1 = -math.log(math.exp(c / t) / (math.exp(0) + math.exp(c / t)))
    assert info_nce(a, b, temperature=t).item() == pytest.approx((l0 + l1) / 2, rel=1e-5)
    # b -> a direction: b0 picks a0 among (1, 0); b1 picks a1 among (c, c)
    m0 = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 1))
    m1 = math.log(2)
    assert info_nce(a, b, t, symmetric=True).item() == pytest.approx(((l0 + l1) / 2 + (m0 + m1) / 2) / 2, rel=1e-5)


# ------------------------------------------------------------------ training + export
def _write_tables(tmp_path, n_items=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    cat = torch.arange(n_items) % 6
    base = torch.randn(6, 16, generator=g) * 2
    ec = torch.zeros(n_items + 1, 16)
    ec[1:] = base[cat] + 0.3 * torch.randn(n_items, 16, generator=g)
    et = torch.zeros(n_items + 1, 24)
    et[1:] = torch.randn(n_items, 24, generator=g) + torch.randn(6, 24, generator=g)[cat]
    mask = torch.ones(n_items + 1, dtype=torch.uint8)
    mask[0] = 0
    mask[5] = 0  # item 5 has no text embedding
    pc, pt = tmp_path / "ec.npy", tmp_path / "et.safetensors"
    np.save(pc, ec.numpy())
    save_tensors(pt, {"embedding": et, "mask": mask}, {"modality": "text"})
    return pc, pt


def _tiny_cfg(**kw):
    cfg = QuantizeConfig(model=RQVAEConfig(latent_dim=8, hidden=[32], codebook_sizes=[8, 8, 4]),
                         loss=LossConfig(recon="mse+mmd", beta=0.1), epochs=4, batch_size=64, threads=1, **kw)
    cfg.validate()
    return cfg


def test_train_export_import_round_trip(tmp_path):
    pc, pt = _write_tables(tmp_path)
    embs = load_modalities(parse_modality_args([f"c={pc}", f"t={pt}"]))
    m = run_training(embs, _tiny_cfg(), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "metrics.json").exists() and m["epochs_run"] == 4
    ex = load_export(tmp_path / "run" / "export")
    assert ex.modalities == ["c", "t"]
    for mod in ("c", "t"):
        sid = ex.sids[mod]
        assert sid.dtype == torch.int64 and sid.shape == (121, 3)
        assert (sid[0] == -1).all() and (sid[1:4] >= 0).all()
        assert ex.codebooks[mod].dtype == torch.float32 and ex.codebooks[mod].shape == (3, 8, 8)
        st = ex.stats["modalities"][mod]
        assert {"levels", "unique_fraction", "collision_rate", "largest_collision_group"} <= set(st)
        assert [lv["codebook_size"] for lv in st["levels"]] == [8, 8, 4]
    assert (ex.sids["t"][5] == -1).all() and (ex.sids["c"][5] >= 0).all()
    assert ex.stats["modalities"]["t"]["items_without_embedding"] == 1
    assert (ex.codebooks["c"][2, 4:] == 0).all()  # level 3 has 4 codes, padded to 8
    zh = load_item_embedding(str(tmp_path / "run" / "export" / "embeddings.safetensors") + ":z_hat.c")
    assert torch.allclose(zh.table, ex.quantized("c"), atol=1e-5)
    # `quantize export` from the run reproduces the same IDs
    assert main(["quantize", "export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "ex2")]) == 0
    ex2 = load_export(tmp_path / "ex2")
    assert torch.equal(ex2.sids["c"], ex.sids["c"]) and torch.equal(ex2.sids["t"], ex.sids["t"])


def test_training_resumes(tmp_path):
    pc, _ = _write_tables(tmp_path)
    embs = load_modalities({"c": str(pc)})
    run_training(embs, _tiny_cfg(), tmp_path / "run", progress=False)
    cfg = _tiny_cfg()
    cfg.epochs = 6
    m = run_training(embs, cfg, tmp_path / "run", progress=False)
    assert [h["epoch"] for h in m["history"]] == list(range(6))


def test_sinkhorn_training_runs(tmp_path):
    pc, _ = _write_tables(tmp_path)
    embs = load_modalities({"c": str(pc)})
    cfg = _tiny_cfg(assign="sinkhorn")
    cfg.loss.recon = "mmd"
    m = run_training(embs, cfg, tmp_path / "run", progress=False)
    assert m["sids"]["c"]["unique_fraction"] > 0


# ------------------------------------------------------------------ input errors / CLI
def test_embedding_loader_errors(tmp_path):
    p = tmp_path / "bad.npy"
    a = np.ones((5, 3), dtype=np.float32)
    a[2, 1] = np.nan
    np.save(p, a)
    with pytest.raises(MmesidError, match="non-finite"):
        load_item_embedding(p)
    np.save(tmp_path / "flat.npy", np.ones(5, dtype=np.float32))
    with pytest.raises(MmesidError, match="2-D"):
        load_item_embedding(tmp_path / "flat.npy")
    with pytest.raises(MmesidError, match="not found"):
        load_item_embedding(tmp_path / "missing.npy")
    with pytest.raises(MmesidError, match="unknown modality"):
        parse_modality_args(["x=foo.npy"])
    np.save(tmp_path / "a.npy", np.ones((5, 3), dtype=np.float32))
    np.save(tmp_path / "b.npy", np.ones((6, 3), dtype=np.float32))
    with pytest.raises(MmesidError, match="disagree"):
        load_modalities({"c": str(tmp_path / "a.npy"), "t": str(tmp_path / "b.npy")})


def test_cli_errors_exit_2(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["quantize", "train", "--emb", "x=foo.npy", "--out", out]) == 2
    assert main(["quantize", "train", "--emb", f"c={tmp_path / 'missing.npy'}", "--out", out]) == 2
    a = np.ones((5, 3), dtype=np.float32)
    a[3, 0] = np.nan
    np.save(tmp_path / "nan.npy", a)
    assert main(["quantize", "train", "--emb", f"c={tmp_path / 'nan.npy'}", "--out", out]) == 2
    np.save(tmp_path / "ok.npy", np.ones((5, 3), dtype=np.float32))
    assert main(["quantize", "train", "--emb", f"c={tmp_path / 'ok.npy'}", "--out", out,
                 "--set", "no_such_key=1"]) == 2
    assert main(["quantize", "export", "--run", str(tmp_path / "nothing"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "unknown modality" in err and "not found" in err and "non-finite" in err
