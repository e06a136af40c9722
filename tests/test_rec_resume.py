"""A fine-tuning run interrupted anywhere, even in the middle of writing a checkpoint, resumes to
exactly the weights and metrics of an uninterrupted run."""

from __future__ import annotations


import pytest
import torch

from mmesid.artifacts import checkpoint
from mmesid.artifacts.checkpoint import CheckpointStore
from mmesid.config import from_dict
from mmesid.data.synthetic import SyntheticConfig, generate
from mmesid.io import load_tensors, read_json
from mmesid.rec.config import FinetuneConfig
from mmesid.rec.train import train_finetune
from rec_fixtures import fake_export, random_embeddings, tiny_llama


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("recresume")
    data = generate(SyntheticConfig(n_users=40, n_items=30, max_length=12))
    return {"data": data, "llama": str(tiny_llama(root / "llama")),
            "emb": random_embeddings(root, data.n_items, {"c": 8, "t": 12}),
            "sids": str(fake_export(root / "export", data.n_items))}


def final_weights(run) -> dict:
    return CheckpointStore(run / "checkpoints").load()["task"]["weights"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _metrics(h: dict) -> dict:
    return {k: v for k, v in h.items() if "seconds" not in k}


def test_interrupted_run_resumes_exactly(env, tmp_path):
    # 40 prompts / batch 8 = 5 steps per epoch; 7 steps cross an epoch boundary; stop inside epoch 0
    cfg = from_dict(FinetuneConfig, {
        "variant": "mme-sid", "batch_size": 8, "epochs": 2, "max_steps": 7, "warmup_steps": 2, "eval_every": 2,
        "save_every": 100, "eval_batch_size": 64, "device": "cpu", "patience": 0, "threads": 1,
        "backbone": {"path": env["llama"]}, "lora": {"dropout": 0.3}})  # dropout: RNG state must be restored too
    args = (env["data"], cfg)
    full = train_finetune(*args, tmp_path / "a", env["emb"], env["sids"], progress=False)
    part = train_finetune(*args, tmp_path / "b", env["emb"], env["sids"], progress=False, stop_after_steps=3)
    assert part == {"interrupted_at_step": 3}
    assert read_json(tmp_path / "b" / "run.json")["kind"] == "finetune"
    resumed = train_finetune(*args, tmp_path / "b", env["emb"], env["sids"], progress=False)
    assert_same_weights(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))
    assert_same_weights(load_tensors(tmp_path / "a" / "best.safetensors")[0],
                        load_tensors(tmp_path / "b" / "best.safetensors")[0])
    assert _metrics(resumed["test"]) == _metrics(full["test"])
    assert [_metrics(h) for h in resumed["history"]] == [_metrics(h) for h in full["history"]]
    assert resumed["steps"] == full["steps"] == 7


class Killed(Exception):
    """Stands for the process being killed at that instant."""


def _hook_checkpoint_writes(monkeypatch, hook) -> None:
    """Every file a checkpoint save writes (rng-<rank>.pt, state.pt), its rename into place and the
    removal of the older checkpoint all call `hook` first."""
    monkeypatch.setattr(checkpoint, "before_write", hook)


def test_an_interrupt_at_any_checkpoint_write_resumes_exactly(env, tmp_path, monkeypatch):
    """For k = 1, 2, ...: kill the run at the k-th checkpoint write event, resume, compare bit for bit."""
    cfg = from_dict(FinetuneConfig, {
        "variant": "e4srec", "batch_size": 8, "epochs": 1, "max_steps": 3, "warmup_steps": 1, "eval_every": 2,
        "save_every": 1, "valid_users": 10, "eval_batch_size": 64, "device": "cpu", "patience": 0, "threads": 1,
        "backbone": {"path": env["llama"]}, "lora": {"dropout": 0.3}})

    def run(folder):
        return train_finetune(env["data"], cfg, folder, env["emb"], progress=False, evaluate_test=False)

    events = []
    _hook_checkpoint_writes(monkeypatch, events.append)
    full = run(tmp_path / "full")
    # 3 saves (steps 1, 2, 3), each: rng-0.pt, state.pt, the rename into place, then (from the 2nd save
    # on) the removal of the older checkpoint
    assert events.count("rng-0.pt") == events.count("state.pt") == 3, events
    want = final_weights(tmp_path / "full")
    best = load_tensors(tmp_path / "full" / "best.safetensors")[0]
    for k in range(1, len(events) + 1):
        seen = []

        def kill_at_k(name, seen=seen, k=k):
            seen.append(name)
            if len(seen) == k:
                raise Killed(name)

        folder = tmp_path / f"kill-{k}"
        _hook_checkpoint_writes(monkeypatch, kill_at_k)
        with pytest.raises(Killed):
            run(folder)
        _hook_checkpoint_writes(monkeypatch, lambda name: None)
        resumed = run(folder)
        assert_same_weights(final_weights(folder), want)
        assert_same_weights(load_tensors(folder / "best.safetensors")[0], best)
        assert [_metrics(h) for h in resumed["history"]] == [_metrics(h) for h in full["history"]], seen[-1]
        names = sorted(p.name for p in (folder / "checkpoints").iterdir())
        assert names[-1] == "step-000000003" and not any(n.startswith(".tmp") for n in names), names


def test_lora_lr_gives_the_adapters_their_own_rate_and_resumes_exactly(env, tmp_path):
    from mmesid.errors import MmesidError

    base = {"variant": "mme-sid", "batch_size": 8, "epochs": 1, "max_steps": 4, "warmup_steps": 0, "eval_every": 4,
            "save_every": 100, "eval_batch_size": 64, "device": "cpu", "patience": 0, "threads": 1, "lr": 1e-3,
            "backbone": {"path": env["llama"]}}
    cfg = from_dict(FinetuneConfig, {**base, "lora_lr": 1e-4})
    full = train_finetune(env["data"], cfg, tmp_path / "a", env["emb"], env["sids"], progress=False)
    state = CheckpointStore(tmp_path / "a" / "checkpoints").load()["task"]
    groups = state["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == [1e-3, 1e-4]
    names = list(state["weights"])
    lora = [n for n in names if "lora_" in n]
    assert lora and len(groups[1]["params"]) == len(lora) and len(groups[0]["params"]) == len(names) - len(lora)
    # the adapters (lora_B starts at zero) moved less than with the one shared lr, the new modules as much
    train_finetune(env["data"], from_dict(FinetuneConfig, base), tmp_path / "c", env["emb"], env["sids"],
                   progress=False)
    slow, fast = final_weights(tmp_path / "a"), final_weights(tmp_path / "c")

    def norm(w, lora):
        return sum(float(v.norm()) for n, v in w.items() if ("lora_B" in n) == lora)

    assert 0 < norm(slow, True) < 0.5 * norm(fast, True)
    assert norm(slow, False) == pytest.approx(norm(fast, False), rel=0.2)
    part = train_finetune(env["data"], cfg, tmp_path / "b", env["emb"], env["sids"], progress=False,
                          stop_after_steps=2)
    assert part == {"interrupted_at_step": 2}
    resumed = train_finetune(env["data"], cfg, tmp_path / "b", env["emb"], env["sids"], progress=False)
    assert_same_weights(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))
    assert _metrics(resumed["test"]) == _metrics(full["test"])
    # switching lora_lr on in the middle of a run cannot restore its optimiser: refused, not silently reset
    train_finetune(env["data"], from_dict(FinetuneConfig, base), tmp_path / "d", env["emb"], env["sids"],
                   progress=False, stop_after_steps=2)
    with pytest.raises(MmesidError, match="lora_lr cannot be switched"):
        train_finetune(env["data"], cfg, tmp_path / "d", env["emb"], env["sids"], progress=False)
