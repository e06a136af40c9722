"""Quantisation stage: residual quantiser, losses, eq. 11, k-means / Sinkhorn / dead codes, training on the
shared loop (exact resume), the export through artifacts.sid_export, and the `quantize` commands."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import run_cli
from mmesid.artifacts.embeddings import (parse_emb_args, read_item_embedding, read_modalities,
                                         write_item_embedding)
from mmesid.artifacts.runs import RunDir
from mmesid.artifacts.sid_export import load_sid_export
from mmesid.io import load_tensors
from mmesid.quantize import (MMRQVAE, LossConfig, QuantizeConfig, ResidualQuantizer, codebook_stats, info_nce,
                             mmd2, run_training, sinkhorn_assign)
from mmesid.quantize import train as qtrain
from mmesid.quantize.model import RQVAEConfig
from mmesid.quantize.train import build_model

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
    # eq. 5 level by level: ||SG(r) - C[k]||^2 + alpha ||r - SG(C[k])||^2, means over batch and dims
    expected, r = 0.0, z.detach().double()
    for level, cb in enumerate(q.codebooks):
        c = cb.detach().double()[codes[:, level]]
        expected += 1.25 * ((c - r) ** 2).mean().item()
        r = r - c
    assert loss.item() == pytest.approx(expected, rel=1e-5)
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


# ------------------------------------------------------------------ eq. 11 with partial masks
def _direct_item(vae, x, alpha):
    """One item through one RQ-VAE, written out: nearest code per level, eq. 5, decoder."""
    z = vae.encoder(x[None])[0].double()
    r, zh, rq = z, torch.zeros_like(z), 0.0
    for cb in vae.quantizer.codebooks:
        cb = cb.detach().double()
        c = cb[int(((r[None] - cb) ** 2).sum(1).argmin())]
        rq += (1 + alpha) * ((c - r) ** 2).mean().item()
        zh, r = zh + c, r - c
    s_hat = vae.decoder(zh[None].float())[0].double()
    return zh, ((s_hat - x.double()) ** 2).mean().item(), rq


def _direct_info_nce(a, b, t):
    n = len(a)
    cos = [[float(F.cosine_similarity(a[i], b[j], dim=0)) for j in range(n)] for i in range(n)]
    return -sum(cos[i][i] / t - math.log(sum(math.exp(c / t) for c in cos[i])) for i in range(n)) / n


@torch.no_grad()
def test_eq11_pairs_the_rows_of_items_with_partial_modalities():
    torch.manual_seed(0)
    dims = {"c": 5, "t": 6, "v": 4}
    model = MMRQVAE(dims, RQVAEConfig(latent_dim=3, hidden=[7], codebook_sizes=[4, 3], standardize=False)).eval()
    g = torch.Generator().manual_seed(1)
    xs = {m: torch.randn(10, d, generator=g) for m, d in dims.items()}
    # items with c only, t only, c+t, c+v, t+v, all three: the compacted rows of c, t and v are shifted
    masks = {"c": [1, 1, 1, 0, 1, 0, 1, 1, 0, 1], "t": [0, 1, 0, 1, 1, 1, 1, 0, 1, 1],
             "v": [1, 0, 1, 1, 0, 1, 0, 1, 1, 0]}
    masks = {m: torch.tensor(v, dtype=torch.bool) for m, v in masks.items()}
    lc = LossConfig(recon="mse", recon_weight=1.3, alpha=0.3, beta=0.7, gamma=0.9, temperature=0.5)
    total, parts, _ = model.loss(xs, masks, lc)

    per = {m: {i: _direct_item(model.vaes[m], xs[m][i], lc.alpha) for i in range(10) if masks[m][i]} for m in dims}
    recon = {m: np.mean([p[1] for p in per[m].values()]) for m in dims}
    rq = {m: np.mean([p[2] for p in per[m].values()]) for m in dims}
    align = {}
    for m in ("t", "v"):
        both = [i for i in range(10) if masks["c"][i] and masks[m][i]]
        align[m] = _direct_info_nce([per["c"][i][0] for i in both], [per[m][i][0] for i in both], lc.temperature)
    for m in dims:
        assert parts[f"mse.{m}"] == pytest.approx(recon[m], rel=1e-5)
        assert parts[f"rq.{m}"] == pytest.approx(rq[m], rel=1e-5)
    assert parts["align.c-t"] == pytest.approx(align["t"], rel=1e-5)
    assert parts["align.c-v"] == pytest.approx(align["v"], rel=1e-5)
    expected = 1.3 * sum(recon.values()) + 0.7 * (align["t"] + align["v"]) + 0.9 * sum(rq.values())
    assert float(total) == pytest.approx(expected, rel=1e-5) and parts["loss"] == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------ training + export (library)
FP = "0123456789abcdef"


def _write_tables(tmp_path, n_items=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    cat = torch.arange(n_items) % 6
    base = torch.randn(6, 16, generator=g) * 2
    ec = torch.zeros(n_items + 1, 16)
    ec[1:] = base[cat] + 0.3 * torch.randn(n_items, 16, generator=g)
    et = torch.zeros(n_items + 1, 24)
    et[1:] = torch.randn(n_items, 24, generator=g) + torch.randn(6, 24, generator=g)[cat]
    mask = torch.ones(n_items + 1, dtype=torch.bool)
    mask[5] = False  # item 5 has no text embedding
    pc, pt = tmp_path / "ec.npy", tmp_path / "et.safetensors"
    np.save(pc, ec.numpy())
    write_item_embedding(pt, et, mask, modality="text", encoder="test", data_fingerprint=FP)
    return pc, pt


def _tiny_cfg(**kw):
    kw = {"epochs": 4, "batch_size": 64, "threads": 1, **kw}
    cfg = QuantizeConfig(model=RQVAEConfig(latent_dim=8, hidden=[32], codebook_sizes=[8, 8, 4]),
                         loss=LossConfig(recon="mse+mmd", beta=0.1), **kw)
    cfg.validate()
    return cfg


def _unique_fraction(sid):
    v = sid[(sid >= 0).all(1)].numpy()
    return len(np.unique(v, axis=0)) / len(v)


def test_train_export_import_round_trip(tmp_path):
    pc, pt = _write_tables(tmp_path)
    embs = read_modalities(parse_emb_args([f"c={pc}", f"t={pt}"]))
    m = run_training(embs, _tiny_cfg(), tmp_path / "run", progress=False)
    assert m["epochs_run"] == 4 and len(m["history"]) == 4
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["sids"] == m["sids"]
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["kind"] == "quantize" and info["data_fingerprint"] == FP and info["n_items"] == 120
    assert info["emb"] == {"c": str(pc.resolve()), "t": str(pt.resolve())}
    ex = load_sid_export(tmp_path / "run" / "export", n_items=120, fingerprint=FP)
    assert ex.modalities == ["c", "t"] and ex.fingerprint == FP
    for mod in ("c", "t"):
        sid = ex.sids[mod]
        assert sid.dtype == torch.int64 and sid.shape == (121, 3)
        assert (sid[0] == -1).all() and (sid[1:5] >= 0).all()
        assert ex.codebooks[mod].dtype == torch.float32 and ex.codebooks[mod].shape == (3, 8, 8)
        st = ex.stats["modalities"][mod]
        assert [lv["codebook_size"] for lv in st["levels"]] == [8, 8, 4]
        # the reported statistics are those of the exported IDs
        valid = (sid >= 0).all(1)
        assert st == {**st, **codebook_stats(sid[valid].numpy(), [8, 8, 4])}
        assert m["sids"][mod]["unique_fraction"] == _unique_fraction(sid)
    assert (ex.sids["t"][5] == -1).all() and (ex.sids["c"][5] >= 0).all()
    assert ex.stats["modalities"]["t"]["items_without_embedding"] == 1
    assert (ex.codebooks["c"][2, 4:] == 0).all()  # level 3 has 4 codes, padded to 8
    zh = read_item_embedding(str(tmp_path / "run" / "export" / "embeddings.safetensors") + ":z_hat.c")
    assert torch.allclose(zh.table, ex.quantized("c"), atol=1e-5)
    # the IDs are the nearest codes of the best weights' encoder output
    model = build_model(embs, _tiny_cfg())
    model.load_state_dict(load_tensors(tmp_path / "run" / "best.safetensors")[0])
    with torch.no_grad():
        z = model.vaes["c"].encoder(model.vaes["c"].normalize(embs["c"].table[1:]))
        assert torch.equal(model.vaes["c"].quantizer.encode(z)[0], ex.sids["c"][1:])
    # `quantize export` from the run reproduces the same export
    assert run_cli("quantize", "export", "--run", tmp_path / "run", "--out", tmp_path / "ex2") == 0
    ex2 = load_sid_export(tmp_path / "ex2")
    for mod in ("c", "t"):
        assert torch.equal(ex2.sids[mod], ex.sids[mod]) and torch.equal(ex2.codebooks[mod], ex.codebooks[mod])
    assert ex2.fingerprint == FP


def _history(m):
    return [{k: v for k, v in h.items() if not k.endswith("_seconds")} for h in m["history"]]


def test_resume_mid_epoch_equals_uninterrupted(tmp_path, monkeypatch):
    pc, pt = _write_tables(tmp_path)
    embs = read_modalities({"c": str(pc), "t": str(pt)})
    # reseeding every epoch and a capped k-means both draw from the run's generator
    cfg = _tiny_cfg(batch_size=32, dead_code_every=1, dead_code_until=1.0, kmeans_max_items=100)
    full = run_training(embs, cfg, tmp_path / "full", progress=False)
    assert any(sum(sum(c) for c in h["reseeded"].values()) for h in full["history"])  # codes were moved
    spe = 4  # 120 items in batches of 32
    steps = []
    orig = qtrain.QuantizeTask.train_step
    monkeypatch.setattr(qtrain.QuantizeTask, "train_step", lambda self, s: steps.append(s) or orig(self, s))
    out = run_training(embs, cfg, tmp_path / "part", progress=False, stop_after_steps=spe + 2)
    assert out == {"interrupted_at_step": spe + 2} and not (tmp_path / "part" / "export").exists()
    steps.clear()
    resumed = run_training(embs, cfg, tmp_path / "part", progress=False)
    assert steps == list(range(spe + 2, 4 * spe))  # it continued from the checkpoint, mid-epoch
    assert _history(resumed) == _history(full)
    assert resumed["best_epoch"] == full["best_epoch"] and resumed["best_criterion"] == full["best_criterion"]
    a, _ = load_tensors(tmp_path / "full" / "best.safetensors")
    b, _ = load_tensors(tmp_path / "part" / "best.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    ea, eb = load_sid_export(tmp_path / "full" / "export"), load_sid_export(tmp_path / "part" / "export")
    assert all(torch.equal(ea.sids[k], eb.sids[k]) and torch.equal(ea.codebooks[k], eb.codebooks[k]) for k in "ct")


def test_sinkhorn_training_keeps_the_weights_of_the_best_eval(tmp_path):
    pc, _ = _write_tables(tmp_path)
    embs = read_modalities({"c": str(pc)})
    cfg = _tiny_cfg(assign="sinkhorn", patience=1, epochs=6, lr=0.1)  # a high lr: the last epoch is not the best
    cfg.loss.recon = "mmd"
    m = run_training(embs, cfg, tmp_path / "run", progress=False)
    crit = [h["criterion"] for h in m["history"]]
    assert crit == [h["eval"]["recon"] for h in m["history"]]  # select = "recon"
    best = int(np.argmin(crit))
    assert m["best_epoch"] == best and m["best_criterion"] == crit[best]
    assert m["stopped_early"] and len(crit) < 6 and best == len(crit) - 2  # patience 1
    # the kept weights give the best epoch's eval value: all items, fixed order (seed + 1), batches of 64
    model = build_model(embs, cfg)
    model.load_state_dict(load_tensors(tmp_path / "run" / "best.safetensors")[0])
    model.eval()
    order = torch.arange(1, 121)[torch.randperm(120, generator=torch.Generator().manual_seed(cfg.seed + 1))]
    x = model.vaes["c"].normalize(embs["c"].table)
    with torch.no_grad():
        vals = [model.loss({"c": x[ids]}, {"c": torch.ones(len(ids), dtype=torch.bool)}, cfg.loss)[1]["recon"]
                for ids in (order[:64], order[64:])]
        codes = model.vaes["c"].quantizer.encode(model.vaes["c"].encoder(x[1:]))[0]
    assert np.mean(vals) == crit[best]
    # ... and they, not the last epoch's, are exported
    ex = load_sid_export(tmp_path / "run" / "export")
    assert torch.equal(ex.sids["c"][1:], codes)
    assert m["sids"]["c"]["unique_fraction"] == _unique_fraction(ex.sids["c"])


def test_config_ranges():
    from mmesid.config import from_dict
    from mmesid.errors import ConfigError

    for key, bad in [("epochs", 0), ("batch_size", 1), ("lr", 0.0), ("weight_decay", -1.0), ("kmeans_max_items", -1),
                     ("sk_epsilon", 0.0), ("sk_iters", 0), ("dead_code_every", -1), ("dead_code_until", 1.5),
                     ("patience", -1), ("seed", -1), ("threads", -1), ("sk_levels", [4])]:
        with pytest.raises(ConfigError, match=key):
            from_dict(QuantizeConfig, {key: bad})
    for key, bad in [("latent_dim", 0), ("dropout", 1.0), ("dropout", -0.1)]:
        with pytest.raises(ConfigError, match=f"model.{key}"):
            from_dict(QuantizeConfig, {"model": {key: bad}})
    for key in ("recon_weight", "mse_weight", "mmd_weight", "alpha", "beta", "gamma", "temperature"):
        with pytest.raises(ConfigError, match=f"loss.{key}"):
            from_dict(QuantizeConfig, {"loss": {key: -1.0}})
    with pytest.raises(ConfigError, match="loss.temperature"):
        from_dict(QuantizeConfig, {"loss": {"temperature": 0.0}})


# ------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def syn_embs(tmp_path_factory, synthetic_data):
    """c and t tables of the synthetic dataset's items, recording its fingerprint (t misses item 7)."""
    d = tmp_path_factory.mktemp("embs")
    g = torch.Generator().manual_seed(0)
    n = synthetic_data.n_items
    pc, pt = d / "ec.safetensors", d / "et.safetensors"
    write_item_embedding(pc, torch.randn(n + 1, 12, generator=g), modality="collaborative", encoder="test",
                         data_fingerprint=synthetic_data.fingerprint)
    mask = torch.ones(n + 1, dtype=torch.bool)
    mask[7] = False
    write_item_embedding(pt, torch.randn(n + 1, 10, generator=g), mask, modality="text", encoder="test",
                         data_fingerprint=synthetic_data.fingerprint)
    return pc, pt


TINY = ["--set", "batch_size=64", "--set", "model.latent_dim=8", "--set", "model.hidden=[16]",
        "--set", "model.codebook_sizes=[8, 8]", "--threads", "1", "--quiet"]


def _train(run, syn_embs, *extra):
    pc, pt = syn_embs
    return run_cli("quantize", "train", "--emb", f"c={pc}", "--emb", f"t={pt}", "--out", run, *TINY, *extra)


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_cli_train_records_inputs_and_forgetting(tmp_path, syn_embs, synthetic_dir, synthetic_data, capsys):
    from mmesid.analysis.forgetting import export_forgetting

    run = tmp_path / "run"
    assert _train(run, syn_embs, "--data", synthetic_dir, "--set", "epochs=2", "--device", "cpu") == 0
    assert "Kendall tau" in capsys.readouterr().out
    cfg = (run / "config.toml").read_text()
    assert "threads = 1" in cfg and 'device = "cpu"' in cfg and "epochs = 2" in cfg
    info = json.loads((run / "run.json").read_text())
    assert info["command"].startswith("mmesid quantize train --emb") and info["data"] == str(synthetic_dir.resolve())
    assert info["data_fingerprint"] == synthetic_data.fingerprint and info["export"] == str((run / "export").resolve())
    assert info["emb"] == {"c": str(syn_embs[0].resolve()), "t": str(syn_embs[1].resolve())}
    m = json.loads((run / "metrics.json").read_text())
    tables = {k: read_item_embedding(p).table for k, p in zip("ct", syn_embs)}
    assert m["forgetting"] == export_forgetting(synthetic_data.sequences, tables, run / "export")
    assert set(m["forgetting"]) == {"c", "t"} and m["epochs_run"] == 2
    assert load_sid_export(run / "export", fingerprint=synthetic_data.fingerprint).fingerprint == synthetic_data.fingerprint


def test_cli_export_refuses_the_run_and_the_dataset_and_checks_recorded_inputs(tmp_path, syn_embs, synthetic_dir,
                                                                             capsys):
    run = tmp_path / "run"
    assert _train(run, syn_embs, "--set", "epochs=1") == 0
    before, data_before = _snapshot(run), _snapshot(synthetic_dir)
    for out in (run, synthetic_dir, run / "export"):  # the run, a prepared dataset, an export without --overwrite
        assert run_cli("quantize", "export", "--run", run, "--out", out) == 2
    assert _snapshot(run) == before and _snapshot(synthetic_dir) == data_before
    assert not list(tmp_path.glob(".*.tmp"))
    capsys.readouterr()
    assert run_cli("quantize", "export", "--run", run, "--out", run / "export", "--overwrite") == 0
    # recorded inputs that went missing or changed are refused, naming the problem
    pc, pt = tmp_path / "ec.safetensors", tmp_path / "et.safetensors"
    for src, dst in zip(syn_embs, (pc, pt)):
        dst.write_bytes(src.read_bytes())
    emb = ["--emb", f"c={pc}", "--emb", f"t={pt}"]
    assert run_cli("quantize", "export", "--run", run, "--out", tmp_path / "e1", *emb) == 0
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "emb": {"c": str(pc), "t": str(tmp_path / "gone.st")}}))
    assert run_cli("quantize", "export", "--run", run, "--out", tmp_path / "e2") == 2
    err = capsys.readouterr().err
    assert "gone.st" in err and "missing" in err
    (run / "run.json").write_text(json.dumps({**info, "emb": {"c": str(pc), "t": str(pt)}}))
    for p, d in ((pc, 12), (pt, 10)):  # same shapes, made from another dataset
        write_item_embedding(p, torch.randn(121, d), modality="x", encoder="x", data_fingerprint="ffffffffffffffff")
    assert run_cli("quantize", "export", "--run", run, "--out", tmp_path / "e2") == 2
    assert "another dataset" in capsys.readouterr().err
    for p, d in ((pc, 12), (pt, 10)):  # no fingerprint, but fewer items
        write_item_embedding(p, torch.randn(100, d), modality="x", encoder="x")
    assert run_cli("quantize", "export", "--run", run, "--out", tmp_path / "e2") == 2
    assert "trained on 120" in capsys.readouterr().err
    assert run_cli("quantize", "export", "--run", run, "--out", tmp_path / "e2", "--emb", f"c={pc}") == 2
    assert "modalities" in capsys.readouterr().err
    assert not (tmp_path / "e2").exists()


def test_cli_train_refuses_bad_export_and_output_locations(tmp_path, syn_embs, synthetic_dir, capsys, monkeypatch):
    x = tmp_path / "x"
    assert _train(x, syn_embs, "--export", x) == 2  # the export would replace the run
    assert "--export" in capsys.readouterr().err and not x.exists()
    assert _train(x, syn_embs, "--export", synthetic_dir) == 2
    sas = tmp_path / "sas"
    sas.mkdir()
    (sas / "run.json").write_text('{"kind": "sasrec"}')
    assert _train(sas, syn_embs) == 2
    assert "SASRec run" in capsys.readouterr().err
    assert sorted(p.name for p in sas.iterdir()) == ["run.json"]
    assert _train(x, syn_embs, "--export", sas) == 2
    monkeypatch.chdir(tmp_path)
    assert _train(x, syn_embs, "--export", ".") == 2
    assert "current directory" in capsys.readouterr().err
    assert _train(".", syn_embs) == 2 and _train(syn_embs[0].parent, syn_embs) == 2
    assert not x.exists() and sorted(p.name for p in sas.iterdir()) == ["run.json"]


def test_cli_data_from_another_dataset_is_refused(tmp_path, syn_embs, capsys):
    from mmesid.data.synthetic import SyntheticConfig, generate

    other = generate(SyntheticConfig(n_users=300, n_items=120, seed=1))
    other.save(tmp_path / "other")
    assert _train(tmp_path / "run", syn_embs, "--data", tmp_path / "other") == 2
    assert "another dataset" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_cli_resume_uses_the_runs_own_config_and_inputs(tmp_path, syn_embs, capsys):
    run = tmp_path / "run"
    assert _train(run, syn_embs, "--set", "epochs=1", "--set", "loss.beta=0.5") == 0
    before = (run / "config.toml").read_text()
    assert _train(run, syn_embs) == 0  # no --set epochs / loss.beta: the run's own values are kept
    assert (run / "config.toml").read_text() == before
    capsys.readouterr()
    assert _train(run, syn_embs, "--set", "lr=0.01") == 2
    err = capsys.readouterr().err
    assert "lr (0.001 -> 0.01)" in err and "Traceback" not in err
    assert (run / "config.toml").read_text() == before
    pc, _ = syn_embs
    assert run_cli("quantize", "train", "--emb", f"c={pc}", "--out", run, *TINY) == 2  # other modalities
    assert "modalities" in capsys.readouterr().err
    assert _train(run, syn_embs, "--set", "epochs=2", "--allow-config-change") == 0
    assert "epochs = 2" in (run / "config.toml").read_text()
    hist = json.loads((run / "metrics.json").read_text())["history"]
    assert [h["step"] for h in hist] == [2, 4]  # one more epoch, from the checkpoint of the first
    assert _train(run, syn_embs, "--overwrite", "--set", "epochs=1") == 0
    assert len(json.loads((run / "metrics.json").read_text())["history"]) == 1


def test_a_locked_run_folder_refuses_a_second_writer(tmp_path, syn_embs, capsys):
    run = tmp_path / "run"
    with RunDir(run, "quantize").claim():
        assert _train(run, syn_embs, "--set", "epochs=1") == 2
        assert "another mmesid process" in capsys.readouterr().err
    assert _train(run, syn_embs, "--set", "epochs=1") == 0


def test_diverged_training_stops_and_keeps_no_nan_best(tmp_path, syn_embs, capsys):
    run = tmp_path / "run"
    assert _train(run, syn_embs, "--set", "lr=1e10", "--set", "epochs=3") == 2
    err = capsys.readouterr().err
    assert "diverged" in err and err.count("mmesid: error:") == 1 and "Traceback" not in err
    assert not (run / "metrics.json").exists() and not (run / "export").exists()
    if (run / "best.safetensors").exists():
        w, _ = load_tensors(run / "best.safetensors")
        assert all(torch.isfinite(t).all() for t in w.values())


@pytest.mark.parametrize("override, key", [("lr=-1", "lr"), ("batch_size=1", "batch_size"), ("epochs=0", "epochs"),
                                           ("model.latent_dim=0", "model.latent_dim"),
                                           ("model.dropout=1.0", "model.dropout"),
                                           ("loss.temperature=0", "loss.temperature"), ("loss.beta=-1", "loss.beta"),
                                           ("dead_code_until=1.5", "dead_code_until"), ("sk_levels=[2]", "sk_levels"),
                                           ("select=\"best\"", "select"), ("lr=nan", "lr")])
def test_cli_bad_hyperparameters_are_one_message(tmp_path, syn_embs, capsys, override, key):
    run = tmp_path / "run"
    assert _train(run, syn_embs, "--set", override) == 2
    err = capsys.readouterr().err
    assert err.count("mmesid: error:") == 1 and key in err and "Traceback" not in err
    assert not run.exists()


def test_cli_errors_exit_2(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert run_cli("quantize", "train", "--emb", "x=foo.npy", "--out", out) == 2
    assert run_cli("quantize", "train", "--emb", f"c={tmp_path / 'missing.npy'}", "--out", out) == 2
    a = np.ones((5, 3), dtype=np.float32)
    a[3, 0] = np.nan
    np.save(tmp_path / "nan.npy", a)
    assert run_cli("quantize", "train", "--emb", f"c={tmp_path / 'nan.npy'}", "--out", out) == 2
    np.save(tmp_path / "ok.npy", np.ones((5, 3), dtype=np.float32))
    assert run_cli("quantize", "train", "--emb", f"c={tmp_path / 'ok.npy'}", "--out", out, "--set", "no_such_key=1") == 2
    assert run_cli("quantize", "export", "--run", tmp_path / "nothing", "--out", out) == 2
    err = capsys.readouterr().err
    assert "unknown modality" in err and "not found" in err and "non-finite" in err and "no_such_key" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_cli_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from mmesid.cli import main\ntry: main(['quantize', 'train', '--help'])\n"
            "except SystemExit: pass\nassert 'torch' not in sys.modules, 'torch imported'")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
