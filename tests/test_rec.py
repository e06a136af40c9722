"""Stage 2 (mmesid.rec): every variant end to end on a tiny random Llama, plus the MiniLM path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmesid.config import from_dict
from mmesid.data.split import eval_examples, pad_left
from mmesid.data.synthetic import SyntheticConfig, generate
from mmesid.errors import ConfigError, MmesidError
from mmesid.eval.ranking import evaluate
from mmesid.io import load_tensors
from mmesid.rec.build import build_model
from mmesid.rec.config import VARIANT_NAMES, FinetuneConfig
from mmesid.rec.prompt import assemble, right_align_lengths
from mmesid.rec.runs import load_scorer
from mmesid.rec.train import train_finetune
from rec_fixtures import fake_export, random_embeddings, tiny_llama


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec")
    data = generate(SyntheticConfig(n_users=40, n_items=30, max_length=12))
    return {
        "root": root,
        "data": data,
        "llama": str(tiny_llama(root / "llama")),
        "emb": random_embeddings(root, data.n_items, {"c": 8, "t": 12, "v": 10}),
        "sids": str(fake_export(root / "export", data.n_items, modalities=("c", "t", "v"))),
    }


def cfg_for(env, **kw):
    base = {"batch_size": 8, "max_steps": 2, "epochs": 1, "warmup_steps": 1, "eval_batch_size": 64,
            "device": "cpu", "threads": 1, "backbone": {"path": env["llama"]}}
    base.update(kw)
    return from_dict(FinetuneConfig, base)


def check_run(env, run, m):
    """The run's reported test metrics are those of its saved best weights, evaluated independently, and
    its exports are the loaded model's own tables."""
    model, max_len = load_scorer(run, env["data"], "cpu")
    again = evaluate(model, eval_examples(env["data"].sequences, "test"), batch_size=7, max_len=max_len,
                     progress=False)
    assert {k: v for k, v in again.items() if "@" in k} == {k: v for k, v in m["test"].items() if "@" in k}
    assert m["test"]["users"] == env["data"].n_users
    x, meta = load_tensors(run / "item_input_embeddings.safetensors")
    with torch.no_grad():
        want = model.inputs.all_items()
    want = want[:, 0] if want.shape[1] == 1 else want.flatten(1)
    assert torch.equal(x["embedding"][1:], want[1:]) and meta["modality"] == "llm-input"
    ex, _ = load_tensors(run / "target_embeddings.safetensors")
    assert torch.equal(ex["embedding"][1:], model.E_x.detach()[1:])
    return model


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_every_variant_trains_scores_and_evaluates(env, variant, tmp_path):
    cfg = cfg_for(env, variant=variant)
    m = train_finetune(env["data"], cfg, tmp_path, env["emb"], env["sids"], progress=False)
    assert m["steps"] == 2 and len(m["history"]) == 1 and m["best_step"] == 2
    model = check_run(env, tmp_path, m)
    best, _ = load_tensors(tmp_path / "best.safetensors")
    assert best.keys() == model.trainable_state().keys()
    # LoRA sits on the paper's modules; the backbone itself stays frozen
    names = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert names and all(any(t in n for t in ("gate_proj", "up_proj", "down_proj")) for n in names)
    assert not any(p.requires_grad for n, p in model.llm.named_parameters() if "lora_" not in n)
    assert m["fusion"] == (variant in ("mme-sid", "mme-sid-random", "se-sid", "mme-random", "se-random"))
    assert (tmp_path / "sid_embeddings.safetensors").exists() == (variant in ("mme-sid", "mme-sid-random", "se-sid"))


def test_wo_fusion_modalities_subset_bce_prefix_scheme(env, tmp_path):
    cfg = cfg_for(env, variant="mme-sid", fusion=False, modalities=["c", "t"], loss="bce",
                  train_scheme="prefix", grad_accum=2, batch_size=4)
    m = train_finetune(env["data"], cfg, tmp_path, env["emb"], env["sids"], progress=False)
    assert m["fusion"] is False and m["modalities"] == ["c", "t"]
    assert m["train_prompts"] == m["train_targets"]  # one prompt per prefix
    model = check_run(env, tmp_path, m)
    assert model.fusion is None and sorted(model.inputs.sid) == ["c", "t"]
    sq, _ = load_tensors(tmp_path / "sid_embeddings.safetensors")
    ids = torch.arange(env["data"].n_items + 1)
    assert torch.equal(sq["quantised.t"][1:], model.inputs.sid["t"].quantised(ids).detach()[1:])


def test_minilm_backbone_is_causal_and_trains(env, tmp_path):
    cfg = cfg_for(env, variant="mme-sid", modalities=["c", "t"], backbone={"path": ""}, max_steps=1)
    m = train_finetune(env["data"], cfg, tmp_path, env["emb"], env["sids"], progress=False)
    assert "MiniLM" in m["backbone"] or "minilm" in m["backbone"].lower()
    model = build_model(cfg, env["data"], env["emb"], env["sids"], torch.device("cpu")).eval()
    assert model.llm.get_base_model().config.is_decoder
    names = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert any("query" in n for n in names) and any("dense" in n for n in names)


def test_prefix_cache_gives_the_same_scores(env):
    cfg = cfg_for(env, variant="mme-sid")
    model = build_model(cfg, env["data"], env["emb"], env["sids"], torch.device("cpu")).eval()
    hist = pad_left(eval_examples(env["data"].sequences, "test").histories[:6], 50)
    a = model.scores(hist)
    model.cache_prefix = False
    b = model.scores(hist)
    assert torch.allclose(a, b, atol=1e-5)


def test_inference_prefix_cache_is_reused_and_never_stale(env):
    """At inference the prefix keys/values are computed once; training or loading weights drops them."""
    cfg = cfg_for(env, variant="mme-sid")
    model = build_model(cfg, env["data"], env["emb"], env["sids"], torch.device("cpu")).eval()
    hist = pad_left(eval_examples(env["data"].sequences, "test").histories[:6], 50)
    calls = []
    hook = model.llm.register_forward_hook(lambda m, a, k, out: calls.append(k["inputs_embeds"].shape[0]),
                                           with_kwargs=True)
    a = model.scores(hist)
    b = model.scores(hist[:3])
    assert calls == [1, 6, 3]  # the prefix ran once for both batches
    assert torch.allclose(a[:3], b, atol=1e-6)
    state = {n: p + 0.05 for n, p in model.trainable_state().items() if "lora_B" in n}
    state = {**model.trainable_state(), **state}
    model.load_trainable_state(state)  # new weights: the cached prefix must go
    c = model.scores(hist)
    model.cache_prefix = False
    assert torch.allclose(c, model.scores(hist), atol=1e-5) and not torch.allclose(a, c, atol=1e-3)
    model.cache_prefix = True
    model.train()
    model.eval()
    calls.clear()
    model.scores(hist)
    assert calls == [1, 6]  # recomputed after a switch to training mode
    hook.remove()


def test_lora_merged_scores_match_and_weights_come_back_exactly(env):
    """Evaluation folds LoRA into the frozen weights: the same scores up to rounding, the adapters are not
    run, and afterwards every weight (and the inference prefix cache) is exactly as before."""
    from peft.tuners.lora import LoraLayer

    cfg = cfg_for(env, variant="mme-sid")
    model = build_model(cfg, env["data"], env["emb"], env["sids"], torch.device("cpu")).eval()
    g = torch.Generator().manual_seed(3)
    state = model.trainable_state()
    model.load_trainable_state({n: torch.randn(p.shape, generator=g) * 0.1 if "lora_" in n else p
                                for n, p in state.items()})
    hist = pad_left(eval_examples(env["data"].sequences, "test").histories[:6], 50)
    frozen = {n: p.detach().clone() for n, p in model.llm.named_parameters() if "lora_" not in n}
    a = model.scores(hist)
    layer = next(m for m in model.llm.modules() if isinstance(m, LoraLayer))
    calls = []
    hook = layer.lora_A["default"].register_forward_hook(lambda *_: calls.append(1))
    base = dict(model.llm.named_parameters())
    name = next(n for n in frozen if n in base and base[n] is layer.get_base_layer().weight)
    with model.lora_merged():
        assert layer.merged and not torch.equal(layer.get_base_layer().weight, frozen[name])
        b = model.scores(hist)
    assert not calls  # merged: the adapter matmuls are skipped
    assert torch.allclose(a, b, atol=1e-5)
    assert not any(m.merged for m in model.llm.modules() if isinstance(m, LoraLayer))
    assert all(torch.equal(p, frozen[n]) for n, p in model.llm.named_parameters() if "lora_" not in n)
    c = model.scores(hist)
    hook.remove()
    assert calls and torch.equal(a, c)  # unmerged again, no stale merged prefix cache


def test_one_pass_equals_per_prefix_prompts(env):
    """The hidden state at history item j equals the final state of a prompt cut after item j,
    up to the response header: the causal mask makes the one-pass scheme see exactly that prefix."""
    cfg = cfg_for(env, variant="e4srec")
    model = build_model(cfg, env["data"], env["emb"], env["sids"], torch.device("cpu")).eval()
    right = torch.tensor([[3, 7, 9, 2]])
    with torch.no_grad():
        full, _, off = model.hidden(right, torch.tensor([4]))
        short, _, off2 = model.hidden(right[:, :2], torch.tensor([2]))
    assert torch.allclose(full[0, off + 1], short[0, off2 + 1], atol=1e-5)


def test_sid_tables_initialised_from_codebooks(env):
    cb, _ = load_tensors(f"{env['sids']}/codebooks.safetensors")
    sid, _ = load_tensors(f"{env['sids']}/semantic_ids.safetensors")
    m = build_model(cfg_for(env, variant="mme-sid"), env["data"], env["emb"], env["sids"], torch.device("cpu"))
    r = build_model(cfg_for(env, variant="mme-sid-random"), env["data"], env["emb"], env["sids"],
                    torch.device("cpu"))
    for j in ("c", "t", "v"):
        assert torch.equal(m.inputs.sid[j].table.data, cb[f"codebook.{j}"])
        assert not torch.allclose(r.inputs.sid[j].table.data, cb[f"codebook.{j}"])
        assert r.inputs.sid[j].table.shape == cb[f"codebook.{j}"].shape
        # quantised embedding of item 5 = sum of its codes' vectors
        want = sum(cb[f"codebook.{j}"][l, sid[f"sid.{j}"][5, l]] for l in range(3))
        assert torch.allclose(m.inputs.sid[j].quantised(torch.tensor(5)), want)
        # the d_latent -> hidden map is an isometry at initialisation (distances preserved)
        w = m.inputs.sid[j].proj.weight
        assert torch.allclose(w.T @ w, torch.eye(w.shape[1]), atol=1e-5)
        assert m.inputs.sid[j].table.requires_grad


def test_right_align_and_assemble():
    h = torch.tensor([[0, 0, 4, 5], [1, 2, 3, 6]])
    right, n = right_align_lengths(h)
    assert right.tolist() == [[4, 5, 0, 0], [1, 2, 3, 6]] and n.tolist() == [2, 4]
    x, mask, final = assemble(torch.ones(2, 3), torch.full((1, 3), 9.0), torch.rand(2, 4, 3), n, 1)
    assert x.shape == (2, 2 + 4 + 1, 3) and final.tolist() == [4, 6]
    assert mask.sum(1).tolist() == [5, 7] and (x[0, 4] == 9).all()


NUMERIC_LIMITS = [("fusion_temperature", 0), ("contrastive_weight", -0.1), ("contrastive_temperature", 0),
                  ("max_len", 0), ("batch_size", 0), ("grad_accum", 0), ("lr", 0), ("lr", -1e-3),
                  ("weight_decay", -1), ("max_grad_norm", -1), ("warmup_steps", -1), ("epochs", -1),
                  ("max_steps", -1), ("eval_every", -1), ("valid_users", -1), ("patience", -1), ("save_every", -1),
                  ("eval_batch_size", 0), ("seed", -1), ("threads", -1), ("lora.r", 0), ("lora.alpha", 0),
                  ("lora.dropout", -0.1), ("lora.dropout", 1.0)]


@pytest.mark.parametrize("key, value", NUMERIC_LIMITS)
def test_every_numeric_key_has_a_range(key, value):
    from mmesid.config import load_config

    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ": must be"):
        load_config(FinetuneConfig, overrides=[f"{key}={value}"])


def test_every_numeric_field_is_bounded():
    import dataclasses

    from mmesid.rec.config import LoraSettings

    for cls in (FinetuneConfig, LoraSettings):
        for f in dataclasses.fields(cls):
            if f.type in ("int", "float"):
                assert "range" in f.metadata, f"{cls.__name__}.{f.name} has no bounded(...) range"


def test_bad_configs_are_clear_errors(env, tmp_path):
    with pytest.raises(ConfigError, match="metric"):
        from_dict(FinetuneConfig, {"metric": "nDCG@7"})  # validation reports @5, @10, @20 only
    with pytest.raises(ConfigError, match="nothing to train"):
        from_dict(FinetuneConfig, {"epochs": 0, "max_steps": 0})
    with pytest.raises(ConfigError, match="variant"):
        from_dict(FinetuneConfig, {"variant": "nope"})
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(FinetuneConfig, {"lr_typo": 1})
    with pytest.raises(ConfigError, match="modalities"):
        from_dict(FinetuneConfig, {"modalities": ["x"]})
    with pytest.raises(MmesidError, match="load_in_4bit"):
        train_finetune(env["data"], cfg_for(env, backbone={"path": env["llama"], "load_in_4bit": True}), tmp_path,
                       env["emb"], env["sids"], progress=False)
    with pytest.raises(MmesidError, match="CUDA"):
        build_model(cfg_for(env, backbone={"path": env["llama"], "dtype": "bfloat16"}), env["data"], env["emb"],
                    env["sids"], torch.device("cpu"))
    with pytest.raises(MmesidError, match="needs --sids"):
        build_model(cfg_for(env), env["data"], env["emb"], None, torch.device("cpu"))
    with pytest.raises(MmesidError, match="target_modules"):
        build_model(cfg_for(env, lora={"target_modules": ["nonexistent"]}), env["data"], env["emb"], env["sids"],
                    torch.device("cpu"))


def _info_nce(a: np.ndarray, b: np.ndarray, temperature: float) -> float:
    """Symmetric InfoNCE of row-aligned pairs, written out with numpy (log-sum-exp per row / column)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    z = a @ b.T / temperature
    diag = np.diag(z)
    rows = np.log(np.exp(z).sum(1)) - diag
    cols = np.log(np.exp(z).sum(0)) - diag
    return float(0.5 * (rows.mean() + cols.mean()))


def test_ctrl_mm_adds_the_contrastive_loss(env):
    from mmesid.rec.batches import TrainExamples

    cfg = cfg_for(env, variant="ctrl-mm")
    model = build_model(cfg, env["data"], env["emb"], env["sids"], torch.device("cpu"))
    ex = TrainExamples(env["data"].sequences, 50, "all-positions")
    b = ex.batch(range(8))
    out = model(**b, contrastive_weight=0.5, contrastive_temperature=0.2)
    assert out["n_targets"] == int((b["pos_targets"] > 0).sum()) + 8
    # InfoNCE of P_c(E_c) against P_t(E_t) and P_v(E_v) over the distinct items of the batch (history + targets)
    ids = np.unique(np.concatenate([b["right"].flatten().numpy(), b["pos_targets"][b["pos_targets"] > 0].numpy(),
                                    b["final_targets"].numpy()]))
    ids = ids[ids > 0]
    tables = {}
    for j in ("c", "t", "v"):
        e = load_tensors(env["emb"][j])[0]["embedding"]
        lin = model.inputs.proj[j]
        tables[j] = (e[ids] @ lin.weight.detach().T + lin.bias.detach()).numpy().astype(np.float64)
    want = _info_nce(tables["c"], tables["t"], 0.2) + _info_nce(tables["c"], tables["v"], 0.2)
    assert float(out["contrastive_loss"]) == pytest.approx(want, rel=1e-4)
    assert float(out["loss"]) == pytest.approx(float(out["rec_loss"]) + 0.5 * want, rel=1e-4)


def test_prefix_scheme_has_the_same_targets(env):
    from mmesid.rec.batches import TrainExamples

    a = TrainExamples(env["data"].sequences, 50, "all-positions")
    p = TrainExamples(env["data"].sequences, 50, "prefix")
    assert a.n_targets == p.n_targets == len(p)
    assert len(a) == env["data"].n_users
