"""The paper's equations and the training arithmetic, each against an independent direct computation.

eq. 16: the history-item input of every variant (order of the parts, MLP sizes, concat span);
eq. 17: frequency-aware fusion weights; eq. 18: the per-source scores and the fused score;
gradient accumulation: k micro-batches == one batch k times larger.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rec_fixtures import fake_export, random_embeddings, tiny_llama

from mmesid.config import from_dict
from mmesid.data.synthetic import SyntheticConfig, generate
from mmesid.io import load_tensors
from mmesid.rec.build import build_model
from mmesid.rec.config import FinetuneConfig
from mmesid.rec.distributed import setup_runtime
from mmesid.rec.inputs import ItemInputs
from mmesid.rec.train import make_task

D = 8  # hidden size for the ItemInputs checks
DIMS = {"c": 5, "t": 6, "v": 7}
N_ROWS = 12  # 11 items + padding


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _linear(x, lin):
    w = lin.weight.detach()
    return x @ w.T + (lin.bias.detach() if lin.bias is not None else 0.0)


# variant -> (modalities, the parts of one modality in order, how they are combined)
EQ16 = {
    "mme-sid": ("ctv", ("P", "SID"), "mlp"),
    "mme-sid-random": ("ctv", ("P", "SID"), "mlp"),
    "se-sid": ("c", ("P", "SID"), "mlp"),
    "mme-random": ("ctv", ("P", "R"), "mlp"),
    "se-random": ("c", ("R",), "single"),
    "e4srec": ("c", ("P",), "single"),
    "me": ("c", ("P", "R"), "mlp"),
    "concat": ("ctv", ("P",), "span"),
    "concat-mlp": ("ctv", ("P",), "mlp"),
    "ctrl-mm": ("ctv", ("P",), "mlp"),
}


@pytest.fixture(scope="module")
def tables():
    g = torch.Generator().manual_seed(3)
    emb = {j: torch.randn(N_ROWS, d, generator=g) for j, d in DIMS.items()}
    d_latent = {"c": 4, "t": D, "v": 4}  # with and without the d_latent -> D map
    sids = {j: torch.randint(0, 5, (N_ROWS, 3), generator=g) for j in DIMS}
    for s in sids.values():
        s[0] = -1
    sids["t"][7] = -1  # item 7 has no text embedding: its SID part is zero
    books = {j: torch.randn(3, 5, d_latent[j], generator=g) for j in DIMS}
    return emb, sids, books


def _part(inp: ItemInputs, kind: str, j: str, ids, emb, sids) -> torch.Tensor:
    """One part of eq. 16 for modality j, from the raw tables and the module's parameters."""
    if kind == "P":  # W_j SG(E_j) + b_j
        return _linear(emb[j][ids], inp.proj[j])
    if kind == "SID":  # sum_l E_SID_j^l[SID_j^l(item)], mapped to D when d_latent != D
        table = inp.sid[j].table.detach()
        codes = sids[j][ids]
        q = torch.zeros(len(ids), table.shape[2])
        for r in range(len(ids)):
            if (codes[r] >= 0).all():
                q[r] = sum(table[level, codes[r, level]] for level in range(table.shape[0]))
        proj = inp.sid[j].proj
        return q if proj is None else q @ proj.weight.detach().T
    rand = inp.rand[j].detach()[ids]
    lin = getattr(inp, f"rand_proj_{j}", None)
    return rand if lin is None else rand @ lin.weight.detach().T


@pytest.mark.parametrize("variant", sorted(EQ16))
def test_eq16_input_composition(variant, tables):
    emb, sids, books = tables
    mods, kinds, how = EQ16[variant]
    inp = ItemInputs(variant, list(mods), {j: emb[j] for j in mods}, D, sids, books, seed=1)
    ids = torch.tensor([1, 7, 3, 11, 7])
    with torch.no_grad():
        got = inp(ids)
    parts = [_part(inp, k, j, ids, emb, sids) for j in mods for k in kinds]
    assert all(p.shape == (len(ids), D) for p in parts)
    if how == "span":  # one input position per modality, in c, t, v order
        assert inp.span == len(mods) == got.shape[1]
        want = torch.stack(parts, 1)
    elif how == "single":
        assert inp.span == 1 and len(parts) == 1
        want = parts[0].unsqueeze(1)
    else:  # the authors' MLP k*D -> max(D, k*D/2) -> D, GELU after each layer
        k = len(parts)
        first, second = inp.mlp[0], inp.mlp[2]
        assert first.weight.shape == (max(D, k * D // 2), k * D) and second.weight.shape == (D, max(D, k * D // 2))
        if variant == "mme-sid":
            assert k == 6 and first.weight.shape == (3 * D, 6 * D)  # 6D -> 3D -> D
        x = torch.cat(parts, 1)
        want = _gelu(_linear(_gelu(_linear(x, first)), second)).unsqueeze(1)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


# ---------------------------------------------------------------------------- with the tiny Llama
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("receq")
    data = generate(SyntheticConfig(n_users=40, n_items=30, max_length=12))
    return {"data": data, "llama": str(tiny_llama(root / "llama")),
            "emb": random_embeddings(root, data.n_items, {"c": 8, "t": 12, "v": 10}),
            "sids": str(fake_export(root / "export", data.n_items, modalities=("c", "t", "v")))}


def cfg_for(env, **kw):
    base = {"batch_size": 8, "max_steps": 2, "epochs": 1, "warmup_steps": 1, "device": "cpu", "threads": 1,
            "backbone": {"path": env["llama"]}, "lora": {"dropout": 0.0}}
    base.update(kw)
    return from_dict(FinetuneConfig, base)


@pytest.fixture(scope="module")
def fused(env):
    """MME-SID with fusion and a non-default temperature, plus random LLM outputs o."""
    model = build_model(cfg_for(env, variant="mme-sid", fusion_temperature=0.5), env["data"], env["emb"],
                        env["sids"], torch.device("cpu")).eval()
    o = torch.randn(5, model.E_x.shape[1], generator=torch.Generator().manual_seed(0))
    full = {j: load_tensors(env["emb"][j])[0]["embedding"] for j in "ctv"}
    # P_j applied to the whole table (eq. 18), straight from the file and the projection's parameters
    projected = [model.E_x.detach()] + [_linear(full[j], model.inputs.proj[j]) for j in "ctv"]
    return model, o, projected


def test_eq18_source_scores_are_projected_tables(fused):
    model, o, projected = fused
    with torch.no_grad():
        got = model.source_scores(o)
    assert len(got) == 4
    for k, table in enumerate(projected):
        assert torch.allclose(got[k], o @ table.T, atol=1e-5), k


def test_item_scores_stay_fp32_under_bf16_autocast(fused):
    """bf16 autocast speeds the backbone up, but ranking a catalogue needs fp32 item scores."""
    model, _, _ = fused
    hist = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 6]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o = model.user_states(hist)
        got = model.scores(hist)
    with torch.no_grad():
        want = model.score(o)  # the same user states, scored outside autocast
    assert got.dtype == torch.float32 and torch.equal(got, want)


def _direct_weights(freq: np.ndarray, g: torch.nn.Sequential, temperature: float) -> np.ndarray:
    """q'' = minmax(log(q + 1)) over the items, then the MLP (ReLU) and softmax(./T), in numpy."""
    q = np.log(freq.astype(np.float64) + 1.0)
    lo, hi = q[1:].min(), q[1:].max()
    x = ((q - lo) / (hi - lo))[:, None]
    x[0] = 0.0
    layers = [m for m in g if isinstance(m, torch.nn.Linear)]
    for i, lin in enumerate(layers):
        x = x @ lin.weight.detach().double().numpy().T + lin.bias.detach().double().numpy()
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    z = x / temperature
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_eq17_fusion_weights_follow_training_frequency(env, fused):
    model, o, projected = fused
    freq = env["data"].item_frequency()
    with torch.no_grad():
        w = model.fusion.weights()
    want = _direct_weights(freq, model.fusion.g, 0.5)
    assert w.shape == (env["data"].n_items + 1, 4)
    assert np.allclose(w.double().numpy(), want, atol=1e-6)
    assert torch.allclose(w.sum(1), torch.ones(len(w)), atol=1e-6)
    items = np.arange(1, len(freq))
    lo, hi = items[np.argmin(freq[1:])], items[np.argmax(freq[1:])]
    assert freq[lo] != freq[hi] and not torch.allclose(w[lo], w[hi], atol=1e-4)
    same = [(a, b) for a in items for b in items if a < b and freq[a] == freq[b]]
    assert same and all(torch.equal(w[a], w[b]) for a, b in same)
    # the fused score: w_x(i) <o, E_x[i]> + sum_j w_j(i) <o, P_j(E_j[i])>
    with torch.no_grad():
        got = model.score(o)
    direct = sum(torch.from_numpy(want[:, k]).float() * (o @ t.T) for k, t in enumerate(projected))
    assert torch.allclose(got, direct, atol=1e-5)


def test_fusion_weights_reused_at_inference_until_g_changes(env):
    """Without gradients the weights are computed once; a train/eval switch (around every optimiser
    step), an in-place change of g (a load) or of the temperature gives fresh ones; with gradients
    they are always fresh."""
    model = build_model(cfg_for(env, variant="mme-sid", fusion_temperature=0.5), env["data"], env["emb"],
                        env["sids"], torch.device("cpu")).eval()
    f = model.fusion
    with torch.no_grad():
        w1 = f.weights()
        assert f.weights() is w1  # reused
        f.g[0].bias.add_(0.5)  # in place, as load_state_dict and optimisers do
        w2 = f.weights()
    assert w2 is not w1 and not torch.allclose(w1, w2)
    assert np.allclose(w2.double().numpy(), _direct_weights(env["data"].item_frequency(), f.g, 0.5), atol=1e-6)
    f.temperature = 2.0
    with torch.no_grad():
        w3 = f.weights()
    assert not torch.allclose(w2, w3)
    w4 = f.weights()  # with gradients: computed, differentiable
    assert w4.requires_grad and w4 is not w3 and torch.allclose(w3, w4.detach())
    # a fused optimiser step does not bump version counters: the train/eval switch around it clears
    opt = torch.optim.AdamW(f.g.parameters(), lr=0.5, fused=True)
    f.train()
    f.weights().sum().backward()
    opt.step()
    f.eval()
    with torch.no_grad():
        w5 = f.weights()
    assert np.allclose(w5.double().numpy(), _direct_weights(env["data"].item_frequency(), f.g, 2.0), atol=1e-6)
    assert not torch.allclose(w5, w3)


def test_grad_accumulation_equals_one_larger_batch(env):
    """batch_size 8 x grad_accum 2 == batch_size 16 x 1: same examples, same gradients, same weights.

    The loss of a micro-batch is the mean over its targets, and accumulation averages the micro-batch
    losses; the two agree when every micro-batch holds the same number of targets. The "prefix"
    scheme has exactly one target per prompt, so 8 prompts = 8 targets in each micro-batch. (With the
    default "all-positions" scheme, micro-batches differ in their number of targets and the two are
    only approximately equal, as in the authors' code.)
    """
    kw = {"variant": "mme-sid", "train_scheme": "prefix", "length_bucketing": False, "max_steps": 3}
    cfg_a = cfg_for(env, batch_size=8, grad_accum=2, **kw)
    cfg_b = cfg_for(env, batch_size=16, grad_accum=1, **kw)
    rt = setup_runtime(cfg_a)
    a = make_task(env["data"], cfg_a, env["emb"], env["sids"], rt)
    b = make_task(env["data"], cfg_b, env["emb"], env["sids"], rt)
    assert a.plan["total_steps"] == b.plan["total_steps"] == 3
    ma, mb = a.micro_batches(1), b.micro_batches(1)
    assert len(ma) == 2 and len(mb) == 1 and ma[0] + ma[1] == mb[0]
    assert all(len(a.examples.batch(i)["final_targets"]) == 8 for i in ma)
    wa, wb = a.core.trainable_state(), b.core.trainable_state()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # same seed: same initial weights
    init = {k: v.clone() for k, v in wa.items()}
    la, lb = a.accumulate(1), b.accumulate(1)
    assert la == pytest.approx(lb, rel=1e-5)
    for (name, pa), pb in zip(a.core.named_parameters(), b.core.parameters()):
        if pa.requires_grad:
            assert pa.grad is not None and torch.allclose(pa.grad, pb.grad, rtol=1e-4, atol=1e-7), name
    for t in (a, b):
        t.opt.zero_grad(set_to_none=True)
        for step in range(3):
            t.train_step(step)
    wa, wb = a.core.trainable_state(), b.core.trainable_state()
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6) for k in wa)
    assert all(not torch.equal(wa[k], init[k]) for k in ("E_x", "inputs.mlp.0.weight"))  # it trained


@pytest.mark.parametrize("variant", ["mme-sid", "e4srec"])
def test_collaborative_target_init_starts_at_the_collaborative_source(env, variant):
    """target_init = "collaborative": E_x[i] = W_c E_c[i] + b_c at initialisation, so the E_x source and
    the collaborative source give the same scores before training; the paper's random E_x does not."""
    dev = torch.device("cpu")
    full = load_tensors(env["emb"]["c"])[0]["embedding"]
    o = torch.randn(4, 32, generator=torch.Generator().manual_seed(1))
    for how in ("collaborative", "random"):
        torch.manual_seed(0)
        model = build_model(cfg_for(env, variant=variant, target_init=how), env["data"], env["emb"],
                            env["sids"], dev).eval()
        want = _linear(full, model.inputs.proj["c"])[1:]
        same = torch.allclose(model.E_x.detach()[1:], want, atol=1e-6)
        assert same == (how == "collaborative"), how
        assert torch.count_nonzero(model.E_x.detach()[0]) == 0
        if how == "collaborative" and model.fusion is not None:
            with torch.no_grad():
                s = model.source_scores(o)
            assert torch.allclose(s[0][:, 1:], s[1][:, 1:], atol=1e-4)
    with pytest.raises(Exception, match="target_init"):
        cfg_for(env, variant="mme-sid", modalities=["t"], target_init="collaborative")


def test_sum_fusion_scores_with_every_source_at_weight_one(env):
    """fusion_mode = "sum": score = <o, E_x[i]> + sum_j <o, W_j E_j[i] + b_j> (no gate module): the item's
    output embedding is E_x plus its projected tables. Fusion off still scores with E_x alone."""
    model = build_model(cfg_for(env, variant="mme-sid", fusion_mode="sum"), env["data"], env["emb"],
                        env["sids"], torch.device("cpu")).eval()
    assert model.fusion is None and model.use_fusion
    o = torch.randn(3, model.E_x.shape[1], generator=torch.Generator().manual_seed(2))
    full = {j: load_tensors(env["emb"][j])[0]["embedding"] for j in "ctv"}
    table = model.E_x.detach() + sum(_linear(full[j], model.inputs.proj[j]) for j in "ctv")
    with torch.no_grad():
        assert torch.allclose(model.score(o), o @ table.T, atol=1e-4)
    off = build_model(cfg_for(env, variant="mme-sid", fusion=False, fusion_mode="sum"), env["data"], env["emb"],
                      env["sids"], torch.device("cpu")).eval()
    with torch.no_grad():
        assert torch.allclose(off.score(o), o @ off.E_x.detach().T)
