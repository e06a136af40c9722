"""`mmesid finetune` on the command line: run folder rules, resume policy, refused inputs, failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_cli
from mmesid.data.dataset import ItemInfo, SequenceData
from mmesid.data.synthetic import SyntheticConfig, generate
from mmesid.io import load_tensors, read_json
from rec_fixtures import fake_export, random_embeddings, tiny_llama


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("reccli")
    data = generate(SyntheticConfig(n_users=40, n_items=30, max_length=12))
    data.save(root / "data")
    other = root / "other"
    other.mkdir()
    return {"root": root, "data": data, "dir": root / "data", "llama": str(tiny_llama(root / "llama")),
            "emb": random_embeddings(root, data.n_items, {"c": 8, "t": 12}, fingerprint=data.fingerprint),
            "sids": str(fake_export(root / "export", data.n_items, fingerprint=data.fingerprint)),
            "other": other}


def finetune(env, out, *extra, emb=None, sids=None, data=None):
    emb = env["emb"] if emb is None else emb
    args = ["finetune", "--data", data or env["dir"], "--out", out, "--quiet", "--device", "cpu", "--threads", "1",
            "--set", f"backbone.path={env['llama']}", "--set", "epochs=1"]
    for j, f in emb.items():
        args += ["--emb", f"{j}={f}"]
    args += ["--sids", sids or env["sids"]]
    return run_cli(*args, *extra)


def test_cli_finetune_records_the_run_then_evaluate(env, tmp_path, capsys):
    out = tmp_path / "run"
    assert finetune(env, out, "--set", "max_steps=2") == 0
    info = read_json(out / "run.json")
    assert info["kind"] == "finetune" and info["data_fingerprint"] == env["data"].fingerprint
    assert info["command"].startswith("mmesid finetune --data") and info["data"] == str(env["dir"].resolve())
    assert info["emb"] == {j: str(p) for j, p in env["emb"].items()} and info["sids"] == env["sids"]
    assert info["variant"] == "mme-sid" and info["backbone"] == env["llama"]
    cfg = (out / "config.toml").read_text()
    assert 'device = "cpu"' in cfg and "threads = 1" in cfg and "max_steps = 2" in cfg  # runtime flags recorded
    m = read_json(out / "metrics.json")
    assert (out / "best.safetensors").exists() and not (out / "best_trainable.safetensors").exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000000002"]
    x, meta = load_tensors(out / "item_input_embeddings.safetensors")
    assert meta["data_fingerprint"] == env["data"].fingerprint and x["embedding"].shape[0] == 31
    capsys.readouterr()
    assert run_cli("evaluate", "--data", env["dir"], "--run", out, "--device", "cpu", "--quiet",
                   "--ranks-out", tmp_path / "ranks.npy") == 0
    again = read_json(out / "eval_test.json")
    assert {k: again[k] for k in m["test"] if "@" in k} == {k: v for k, v in m["test"].items() if "@" in k}
    # every test user's rank is kept with the run, in --ranks-out's format, and gives metrics.json's numbers
    from mmesid.eval import metrics_from_ranks

    kept = np.load(out / "test_ranks.npy", allow_pickle=False)
    assert kept.dtype == np.int64 and kept.shape == (m["test"]["users"], 2)
    assert np.array_equal(kept, np.load(tmp_path / "ranks.npy", allow_pickle=False))
    assert metrics_from_ranks(kept[:, 1]) == {k: v for k, v in m["test"].items() if "@" in k}
    # the run belongs to its dataset: evaluating it on another one is refused
    from mmesid.errors import MmesidError
    from mmesid.rec.runs import load_scorer

    other = generate(SyntheticConfig(n_users=40, n_items=30, max_length=12, seed=1))
    with pytest.raises(MmesidError, match="another dataset"):
        load_scorer(out, other, "cpu")


def test_cli_finetune_no_test_scores_validation_only(env, tmp_path, monkeypatch, capsys):
    from mmesid.rec import train as rec_train

    splits = []
    real = rec_train.eval_examples
    monkeypatch.setattr(rec_train, "eval_examples", lambda seqs, split: splits.append(split) or real(seqs, split))
    out = tmp_path / "run"
    assert finetune(env, out, "--set", "max_steps=2", "--no-test") == 0
    m = read_json(out / "metrics.json")
    assert "test" not in m and m["valid"]["users"] > 0 and "nDCG@10" in m["valid"]
    assert not (out / "test_ranks.npy").exists()
    assert "test" not in splits  # the test split is never even built
    printed = capsys.readouterr().out
    assert "valid" in printed and "test " not in printed


def test_cli_resume_policy(env, tmp_path, capsys):
    out = tmp_path / "run"
    assert finetune(env, out, "--set", "max_steps=2") == 0
    before = (out / "config.toml").read_bytes()
    capsys.readouterr()
    # a resume with another config is refused and changes nothing
    assert finetune(env, out, "--set", "max_steps=2", "--set", "lr=0.01") == 2
    err = capsys.readouterr().err
    assert "lr (0.0003 -> 0.01)" in err and "Traceback" not in err
    assert (out / "config.toml").read_bytes() == before
    # other input files than the run's are refused too
    assert finetune(env, out, "--set", "max_steps=2", emb={"c": env["emb"]["c"]}) == 2
    assert "other inputs" in capsys.readouterr().err
    # allowed: one more step from the checkpoint at step 2, recorded in config.toml
    assert finetune(env, out, "--set", "max_steps=3", "--allow-config-change") == 0
    assert "max_steps = 3" in (out / "config.toml").read_text()
    m = read_json(out / "metrics.json")
    assert m["steps"] == 3 and [h["step"] for h in m["history"]] == [2, 3]
    # --overwrite starts again from scratch with the new configuration
    assert finetune(env, out, "--set", "max_steps=1", "--overwrite") == 0
    m = read_json(out / "metrics.json")
    assert m["steps"] == 1 and [h["step"] for h in m["history"]] == [1]


@pytest.mark.parametrize("kind", ["sasrec", "quantize"])
def test_cli_refuses_another_commands_run(env, tmp_path, capsys, kind):
    out = tmp_path / kind
    (out / "checkpoints" / "step-000000001").mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"kind": kind}))
    (out / "config.toml").write_text("lr = 1.0\n")
    before = sorted((p.relative_to(out), p.read_bytes() if p.is_file() else None) for p in out.rglob("*"))
    assert finetune(env, out, "--set", "max_steps=1") == 2
    err = capsys.readouterr().err
    assert "not a fine-tuning run" in err and "Traceback" not in err
    assert sorted((p.relative_to(out), p.read_bytes() if p.is_file() else None) for p in out.rglob("*")) == before


def test_cli_diverged_run_exits_2_without_nan_best_or_metrics(env, tmp_path, capsys):
    out = tmp_path / "run"
    assert finetune(env, out, "--set", "lr=1e10", "--set", "max_steps=4", "--set", "eval_every=1",
                    "--set", "warmup_steps=0") == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "Traceback" not in err
    assert not (out / "metrics.json").exists()
    if (out / "best.safetensors").exists():
        best, _ = load_tensors(out / "best.safetensors")
        assert all(torch.isfinite(v).all() for v in best.values())


def test_cli_zero_training_prompts_is_an_error(env, tmp_path, capsys):
    # 3 interactions per user: the training part (all but the last two) holds one item, no target
    seqs = [np.array([1, 2, 3]), np.array([2, 3, 1]), np.array([3, 1, 2])]
    data = SequenceData(seqs, [ItemInfo(str(i)) for i in (1, 2, 3)], ["a", "b", "c"])
    data.save(tmp_path / "data")
    emb = random_embeddings(tmp_path, 3, {"c": 4})
    sids = str(fake_export(tmp_path / "export", 3))
    assert finetune(env, tmp_path / "run", emb=emb, sids=sids, data=tmp_path / "data") == 2
    err = capsys.readouterr().err
    assert "no training prompts" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_cli_refuses_inputs_of_another_dataset(env, tmp_path, capsys):
    n = env["data"].n_items
    cases = {
        "emb fingerprint": {"emb": random_embeddings(tmp_path, n, {"c": 8}, fingerprint="0123456789abcdef")},
        "emb item count": {"emb": {"c": random_embeddings(tmp_path / "x", n - 1, {"c": 8})["c"]}},
        "sids fingerprint": {"sids": str(fake_export(tmp_path / "e1", n, fingerprint="0123456789abcdef"))},
        "sids item count": {"sids": str(fake_export(tmp_path / "e2", n + 2))},
    }
    for name, kw in cases.items():
        out = tmp_path / f"run-{name.replace(' ', '-')}"
        assert finetune(env, out, "--set", "max_steps=1", **kw) == 2, name
        err = capsys.readouterr().err
        assert ("another dataset" in err if "fingerprint" in name else "items" in err or "rows" in err), err
        assert "Traceback" not in err and not out.exists(), name  # refused before anything is written


@pytest.mark.parametrize("extra, key", [(["--set", "lr=-1"], "lr"), (["--set", "lora.dropout=1.5"], "lora.dropout"),
                                        (["--set", "metric=\"HR@7\""], "metric"), (["--threads", "-1"], "--threads")])
def test_cli_bad_values_are_one_message(env, tmp_path, capsys, extra, key):
    try:
        rc = finetune(env, tmp_path / "run", *extra)
    except SystemExit as e:  # argparse rejects a bad flag value itself
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing written before the inputs are validated
