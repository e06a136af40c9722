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
from mmesid.rec.config import VARIANT_NAMES, FinetuneConfig
from mmesid.rec.fusion import FrequencyFusion, normalised_log_frequency
from mmesid.rec.prompt import assemble, right_align_lengths
from mmesid.rec.testing import fake_export, random_embeddings, tiny_llama
from mmesid.rec.trainer import build_model, load_scorer, train_finetune


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
            "device": "cpu", "backbone": {"path": env["llama"]}}
    base.update(kw)
    return from_dict(FinetuneConfig, base)


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_every_variant_trains_scores_and_evaluates(env, variant, tmp_path):
    cfg = cfg_for(env, variant=variant)
    m = train_finetune(env["data"], cfg, tmp_path, env["emb"], env["sids"], progress=False)
    assert m["steps"] == 2 and m["test"]["users"] == env["data"].n_users
    assert all(0.0 <= m["test"][k] <= 1.0 for k in m["test"] if "@" in k)
    model, max_len = load_scorer(tmp_path, env["data"], "cpu")
    hist = pad_left(eval_examples(env["data"].sequences, "test").histories[:5], max_len)
    s = model.scores(hist)
    assert s.shape == (5, env["data"].n_items + 1) and torch.isfinite(s[:, 1:]).all()
    again = evaluate(model, eval_examples(env["data"].sequences, "test"), progress=False)
    assert again["nDCG@10"] == pytest.approx(m["test"]["nDCG@10"], abs=1e-6)
    # LoRA sits on the paper's modules; the backbone itself stays frozen
    names = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert names and all(any(t in n for t in ("gate_proj", "up_proj", "down_proj")) for n in names)
    assert not any(p.requires_grad for n, p in model.llm.named_parameters() if "lora_" not in n)
    x, _ = load_tensors(tmp_path / "item_input_embeddings.safetensors")
    assert x["embedding"].shape[0] == env["data"].n_items + 1
    ex, _ = load_tensors(tmp_path / "target_embeddings.safetensors")
    assert ex["embedding"].shape == (env["data"].n_items + 1, 32)
    assert m["fusion"] == (variant in ("mme-sid", "mme-sid-random", "se-sid", "mme-random", "se-random"))


def test_wo_fusion_modalities_subset_bce_prefix_scheme_accumulation(env, tmp_path):
    cfg = cfg_for(env, variant="mme-sid", fusion=False, modalities=["c", "t"], loss="bce",
                  train_scheme="prefix", grad_accum=2, batch_size=4)
    m = train_finetune(env["data"], cfg, tmp_path, env["emb"], env["sids"], progress=False)
    assert m["fusion"] is False and m["modalities"] == ["c", "t"]
    assert m["train_prompts"] == m["train_targets"]  # one prompt per prefix
    assert np.isfinite(m["test"]["nDCG@10"])


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


def test_fusion_weights_sum_to_one_and_follow_frequency():
    freq = np.array([0, 1, 5, 100, 0])
    q = normalised_log_frequency(freq)
    assert q[1:].min() == 0 and q[1:].max() == 1
    f = FrequencyFusion(freq, 4, [64, 10, 64])
    w = f.weights()
    assert w.shape == (5, 4) and torch.allclose(w.sum(1), torch.ones(5))
    o, s = torch.randn(3, 8), [torch.randn(3, 5) for _ in range(4)]
    assert torch.allclose(f(s), sum(s[k] * w[:, k] for k in range(4)))


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


def test_bad_configs_are_clear_errors(env, tmp_path):
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


def test_cli_finetune_then_evaluate(env, tmp_path, capsys):
    from mmesid.cli import main

    env["data"].save(tmp_path / "data")
    out = tmp_path / "run"
    args = ["finetune", "--data", str(tmp_path / "data"), "--emb", f"c={env['emb']['c']}",
            "--emb", f"t={env['emb']['t']}", "--sids", env["sids"], "--out", str(out), "--no-progress",
            "--set", f"backbone.path={env['llama']}", "--set", "max_steps=2", "--set", "epochs=1",
            "--set", "device=\"cpu\""]
    assert main(args) == 0
    assert (out / "config.toml").exists() and (out / "metrics.json").exists()
    assert '"kind": "finetune"' in (out / "run.json").read_text()
    assert main(["evaluate", "--data", str(tmp_path / "data"), "--run", str(out), "--device", "cpu"]) == 0
    assert main(args[:-2] + ["--set", "lr=-1"]) == 2
    assert "lr" in capsys.readouterr().err


def test_ctrl_mm_adds_the_contrastive_loss(env):
    from mmesid.rec.batches import TrainExamples

    cfg = cfg_for(env, variant="ctrl-mm")
    model = build_model(cfg, env["data"], env["emb"], env["sids"], torch.device("cpu"))
    ex = TrainExamples(env["data"].sequences, 50, "all-positions")
    b = ex.batch(range(8))
    out = model(**b, contrastive_weight=0.5)
    assert out["contrastive_loss"] > 0
    assert float(out["loss"]) == pytest.approx(float(out["rec_loss"] + 0.5 * out["contrastive_loss"]), rel=1e-5)
    assert out["n_targets"] == int((b["pos_targets"] > 0).sum()) + 8


def test_prefix_scheme_has_the_same_targets(env):
    from mmesid.rec.batches import TrainExamples

    a = TrainExamples(env["data"].sequences, 50, "all-positions")
    p = TrainExamples(env["data"].sequences, 50, "prefix")
    assert a.n_targets == p.n_targets == len(p)
    assert len(a) == env["data"].n_users
