"""Issue 12, guarantee 3: mmesid never leaves a run unresumable.

A run killed part-way (simulated with the library's `stop_after_steps`, which ends exactly as a kill
right after a checkpoint) is resumed by the plain CLI command, with the run's own configuration,
to exactly the result of an uninterrupted run; a configuration change on resume is refused by name,
or, when allowed, recorded *and used*; a damaged checkpoint is one clear message.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from conftest import run_cli
from guarantee_common import QUANT, SASREC, assert_one_error, make_dataset, snapshot
from mmesid.artifacts.checkpoint import CheckpointStore
from mmesid.io import load_tensors

SASREC_TOML = """\
epochs = 2
batch_size = 16
lr = 0.005
threads = 1
device = "cpu"

[model]
hidden = 8
layers = 1
inner = 16
max_len = 10
dropout = 0.3
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A dataset, an uninterrupted CLI SASRec run with --config, and one killed in its second epoch."""
    from mmesid.artifacts.runs import RunDir
    from mmesid.config import load_config
    from mmesid.data.dataset import SequenceData
    from mmesid.models.sasrec_train import SASRecTrainConfig, train_sasrec, training_windows

    root = tmp_path_factory.mktemp("gresume")
    make_dataset(root / "data")
    (root / "sasrec.toml").write_text(SASREC_TOML)
    env = {"root": root, "dir": root / "data", "toml": root / "sasrec.toml", "full": root / "full"}
    assert run_cli("sasrec", "train", "--data", env["dir"], "--out", env["full"], "--config", env["toml"],
                   "--quiet") == 0
    data = SequenceData.load(env["dir"])
    cfg = load_config(SASRecTrainConfig, env["toml"])
    spe = math.ceil(len(training_windows(data.sequences, cfg.model.max_len)[0]) / cfg.batch_size)
    env["killed"] = root / "killed"
    with RunDir(env["killed"], "sasrec").claim(inputs=[env["dir"]]) as run:
        assert train_sasrec(data, cfg, run, progress=False, stop_after_steps=spe + 1) == \
            {"interrupted_at_step": spe + 1}
    env["stop"] = spe + 1
    return env


def _copy_killed(env, dst):
    shutil.copytree(env["killed"], dst)
    return dst


def _resume(env, out, *extra) -> int:
    return run_cli("sasrec", "train", "--data", env["dir"], "--out", out, "--quiet", *extra)


def _weights(path):
    return load_tensors(path)[0]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _without_times(m: dict) -> dict:
    return {k: v for k, v in m.items() if "seconds" not in k}


def test_resume_without_config_uses_the_runs_own_and_equals_uninterrupted(env, tmp_path):
    run = _copy_killed(env, tmp_path / "run")
    config = (run / "config.toml").read_bytes()
    assert config == (env["full"] / "config.toml").read_bytes()
    assert _resume(env, run) == 0  # neither --config nor --set
    assert (run / "config.toml").read_bytes() == config
    assert _same(_weights(run / "best.safetensors"), _weights(env["full"] / "best.safetensors"))
    assert _same(_weights(run / "item_embeddings.safetensors"), _weights(env["full"] / "item_embeddings.safetensors"))
    got, want = (json.loads((p / "metrics.json").read_text()) for p in (run, env["full"]))
    assert _without_times(got["test"]) == _without_times(want["test"])
    assert [_without_times(h) for h in got["history"]] == [_without_times(h) for h in want["history"]]


def _final_lrs(run) -> list[float]:
    st = CheckpointStore(run / "checkpoints").load()
    return [g["lr"] for g in st["task"]["optimizer"]["param_groups"]]


def test_changed_lr_on_resume_is_refused_or_recorded_and_used(env, tmp_path, capsys):
    run = _copy_killed(env, tmp_path / "run")
    before = snapshot(run)
    capsys.readouterr()
    assert _resume(env, run, "--set", "lr=0.02") == 2
    assert_one_error(capsys.readouterr().err, "lr (0.005 -> 0.02)", "--allow-config-change")
    assert snapshot(run) == before
    assert _resume(env, run, "--set", "lr=0.02", "--allow-config-change") == 0
    assert "lr = 0.02\n" in (run / "config.toml").read_text()
    assert _final_lrs(run) == [0.02]  # the optimiser ran with the new value, not the checkpoint's
    assert _final_lrs(env["full"]) == [0.005]
    assert not _same(_weights(run / "best.safetensors"), _weights(env["full"] / "best.safetensors"))


def test_truncated_checkpoint_is_one_message_naming_it(env, tmp_path, capsys):
    run = _copy_killed(env, tmp_path / "run")
    [ckpt] = (run / "checkpoints").iterdir()
    state = ckpt / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    before = snapshot(run)
    info = json.loads((run / "run.json").read_text())
    capsys.readouterr()
    assert _resume(env, run) == 2
    assert_one_error(capsys.readouterr().err, f"{ckpt}: damaged checkpoint", "delete this folder")
    # nothing deleted or rewritten behind the user's back (run.json may gain the command line)
    after = snapshot(run)
    assert {k: v for k, v in after.items() if not k.endswith("run.json")} == \
        {k: v for k, v in before.items() if not k.endswith("run.json")}
    assert {k: v for k, v in json.loads((run / "run.json").read_text()).items() if k in info} == info


def _trainer(kind, tmp_path):
    """(train(*extra) -> exit status, run folder, first-run flags, more-steps flags) of one command."""
    from rec_fixtures import fake_export, random_embeddings, tiny_llama

    data = make_dataset(tmp_path / "data")
    emb = random_embeddings(tmp_path, data.n_items, {"c": 8}, fingerprint=data.fingerprint)
    run = tmp_path / "run"
    if kind == "sasrec":
        argv = ["sasrec", "train", "--data", tmp_path / "data", "--out", run, *SASREC]
        first, more = ["--set", "epochs=1"], ["--set", "epochs=2"]
    elif kind == "quantize":
        argv = ["quantize", "train", "--emb", f"c={emb['c']}", "--out", run, *QUANT]
        first, more = ["--set", "epochs=1"], ["--set", "epochs=2"]
    else:
        llama = tiny_llama(tmp_path / "llama", hidden=16)
        sids = fake_export(tmp_path / "export", data.n_items, modalities=("c",), fingerprint=data.fingerprint)
        argv = ["finetune", "--data", tmp_path / "data", "--emb", f"c={emb['c']}", "--sids", sids, "--out", run,
                "--quiet", "--device", "cpu", "--threads", "1", "--set", f"backbone.path={llama}",
                "--set", "batch_size=16", "--set", "warmup_steps=0", "--set", "epochs=2"]
        first, more = ["--set", "max_steps=2"], ["--set", "max_steps=4"]
    return (lambda *extra: run_cli(*argv, *extra)), run, first, more


@pytest.mark.parametrize("kind", ["quantize", "finetune"])
def test_changed_lr_allowed_on_resume_is_used(tmp_path, kind):
    """The other two training commands: the new lr is the one the optimiser (and schedule) runs with."""
    train, run, first, more = _trainer(kind, tmp_path)
    assert train(*first) == 0
    assert train(*more, "--set", "lr=0.0123", "--allow-config-change") == 0
    assert "lr = 0.0123\n" in (run / "config.toml").read_text()
    st = CheckpointStore(run / "checkpoints").load()["task"]
    if kind == "quantize":
        assert [g["lr"] for g in st["optimizer"]["param_groups"]] == [0.0123]
    else:  # the cosine schedule scales the base value: it must be the new one
        assert st["scheduler"]["base_lrs"] == [0.0123]
        assert [g["initial_lr"] for g in st["optimizer"]["param_groups"]] == [0.0123]


SHAPE = {"sasrec": "model.hidden=16", "quantize": "model.latent_dim=6", "finetune": "lora.r=4"}


@pytest.mark.parametrize("kind", ["sasrec", "quantize", "finetune"])
def test_an_allowed_change_the_checkpoint_cannot_take_leaves_the_run_resumable(tmp_path, capsys, kind):
    """--allow-config-change of a key that changes the weights' shapes: one message, and the run's
    config.toml is not rewritten, so that the plain command still resumes it."""
    train, run, first, more = _trainer(kind, tmp_path)
    assert train(*first) == 0
    before = {k: v for k, v in snapshot(run).items() if not k.endswith("run.json")}
    capsys.readouterr()
    assert train(*more, "--set", SHAPE[kind], "--allow-config-change") == 2
    assert_one_error(capsys.readouterr().err, "do not fit")
    assert {k: v for k, v in snapshot(run).items() if not k.endswith("run.json")} == before
    assert train() == 0  # the plain command: the run's own config, resumed from its checkpoint
    assert (run / "config.toml").read_bytes() == before[str(run / "config.toml")]


def test_finetune_killed_mid_run_is_resumed_by_the_cli_exactly(tmp_path):
    from mmesid.artifacts.runs import RunDir
    from mmesid.config import load_config
    from mmesid.data.dataset import SequenceData
    from mmesid.rec.config import FinetuneConfig
    from mmesid.rec.runs import KIND
    from mmesid.rec.train import input_paths, train_finetune
    from rec_fixtures import fake_export, random_embeddings, tiny_llama

    data = make_dataset(tmp_path / "data")
    emb = random_embeddings(tmp_path, data.n_items, {"c": 8, "t": 6}, fingerprint=data.fingerprint)
    emb = {m: str(p) for m, p in emb.items()}
    sids = str(fake_export(tmp_path / "export", data.n_items, fingerprint=data.fingerprint))
    llama = str(tiny_llama(tmp_path / "llama", hidden=16))
    sets = [f"backbone.path={llama}", "batch_size=16", "warmup_steps=1", "epochs=2", "max_steps=5",
            "eval_every=3", "lora.dropout=0.3", "patience=0"]

    def cli_run(out):
        argv = ["finetune", "--data", tmp_path / "data", "--sids", sids, "--out", out, "--quiet", "--device", "cpu",
                "--threads", "1"]
        for m, f in emb.items():
            argv += ["--emb", f"{m}={f}"]
        for s in sets:
            argv += ["--set", s]
        return run_cli(*argv)

    assert cli_run(tmp_path / "full") == 0
    # the same configuration as the CLI builds it (its --device/--threads become config keys)
    cfg = load_config(FinetuneConfig, None, sets + ['device="cpu"', "threads=1"])
    with RunDir(tmp_path / "killed", KIND).claim(input_paths(emb, sids)) as run:
        out = train_finetune(SequenceData.load(tmp_path / "data"), cfg, run, emb, sids, progress=False,
                             stop_after_steps=2)
    assert out == {"interrupted_at_step": 2}
    assert cli_run(tmp_path / "killed") == 0  # the same command line resumes it
    a, b = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("full", "killed"))
    assert a["steps"] == b["steps"] == 5
    assert _same(_weights(tmp_path / "full" / "best.safetensors"), _weights(tmp_path / "killed" / "best.safetensors"))
    assert _without_times(a["test"]) == _without_times(b["test"])
    assert [_without_times(h) for h in a["history"]] == [_without_times(h) for h in b["history"]]
    assert (tmp_path / "full" / "config.toml").read_bytes() == (tmp_path / "killed" / "config.toml").read_bytes()
