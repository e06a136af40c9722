import json

import numpy as np
import pytest
import torch

from conftest import run_cli
from mmesid.config import from_dict
from mmesid.data.split import eval_examples
from mmesid.errors import MmesidError
from mmesid.eval import evaluate, metrics_from_ranks
from mmesid.io import load_tensors
from mmesid.models.popularity import Popularity
from mmesid.models.sasrec import SASRec, SASRecConfig
from mmesid.models.sasrec_train import SASRecTrainConfig, train_sasrec, training_windows

FAST = {"epochs": 12, "patience": 20, "batch_size": 64, "lr": 5e-3,
        "model": {"hidden": 32, "dropout": 0.2, "attn_dropout": 0.2, "max_len": 20}}


def test_training_windows_cover_every_target():
    seq = np.arange(1, 30)  # training part: 1..27
    ins, outs = training_windows([seq], max_len=10)
    targets = sorted(outs[outs > 0].tolist())
    assert targets == list(range(2, 28))
    assert ((ins > 0) == (outs > 0)).all()


def test_causal_no_future_leak():
    torch.manual_seed(0)
    m = SASRec(20, SASRecConfig(hidden=16, max_len=8, dropout=0.0, attn_dropout=0.0)).eval()
    a = torch.tensor([[0, 0, 3, 4, 5, 6]])
    b = torch.tensor([[0, 0, 3, 4, 5, 9]])
    ha, hb = m.hidden_states(a), m.hidden_states(b)
    assert torch.allclose(ha[:, :5], hb[:, :5], atol=1e-6)
    assert not torch.allclose(ha[:, 5], hb[:, 5])


def test_sasrec_learns_beats_popularity_and_exports(tmp_path, synthetic_data):
    cfg = from_dict(SASRecTrainConfig, FAST)
    m = train_sasrec(synthetic_data, cfg, tmp_path / "run", progress=False)
    pop = evaluate(Popularity(synthetic_data.item_frequency()), eval_examples(synthetic_data.sequences, "test"),
                   progress=False)
    assert m["test"]["nDCG@10"] > 2 * pop["nDCG@10"]
    assert m["test"]["HR@10"] > 0.3  # the planted chain is easy to learn
    emb, meta = load_tensors(tmp_path / "run" / "item_embeddings.safetensors")
    assert emb["embedding"].shape == (synthetic_data.n_items + 1, 32)
    assert meta["modality"] == "collaborative"
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["nDCG@10"] == m["test"]["nDCG@10"]


def _without_times(m):
    return {k: v for k, v in m.items() if k != "eval_seconds"}


def test_resume_equals_uninterrupted(tmp_path, synthetic_data):
    cfg = from_dict(SASRecTrainConfig, {**FAST, "epochs": 3})
    full = train_sasrec(synthetic_data, cfg, tmp_path / "full", progress=False)
    # killed mid-epoch (after step 5 of the second epoch), then resumed from that checkpoint
    spe = int(np.ceil(len(training_windows(synthetic_data.sequences, 20)[0]) / 64))
    out = train_sasrec(synthetic_data, cfg, tmp_path / "part", progress=False, stop_after_steps=spe + 5)
    assert out == {"interrupted_at_step": spe + 5}
    resumed = train_sasrec(synthetic_data, cfg, tmp_path / "part", progress=False)
    assert _without_times(resumed["test"]) == _without_times(full["test"])
    assert [h["nDCG@10"] for h in resumed["history"]] == [h["nDCG@10"] for h in full["history"]]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"]]
    a, _ = load_tensors(tmp_path / "full" / "best.safetensors")
    b, _ = load_tensors(tmp_path / "part" / "best.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_train_and_evaluate(tmp_path, synthetic_dir, synthetic_data, capsys):
    run = tmp_path / "run"
    assert run_cli("sasrec", "train", "--data", synthetic_dir, "--out", run, "--quiet",
                   "--set", "epochs=2", "--set", "model.hidden=16") == 0
    assert (run / "config.toml").exists() and (run / "run.json").exists()
    assert run_cli("evaluate", "--data", synthetic_dir, "--run", run, "--ranks-out", tmp_path / "r.npy") == 0
    out = capsys.readouterr().out
    assert "sasrec test" in out and "nDCG@10" in out
    assert json.loads((run / "eval_test.json").read_text())["users"] == synthetic_data.n_users
    # the training run kept every test user's rank: the same as a later evaluation, and its metrics
    kept = np.load(run / "test_ranks.npy", allow_pickle=False)
    assert np.array_equal(kept, np.load(tmp_path / "r.npy", allow_pickle=False))
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert metrics_from_ranks(kept[:, 1]) == {k: v for k, v in test.items() if "@" in k}


def _train_cli(run, synthetic_dir, *extra):
    return run_cli("sasrec", "train", "--data", synthetic_dir, "--out", run, "--quiet", *extra)


def test_cli_resume_uses_the_runs_own_config(tmp_path, synthetic_dir, capsys):
    run = tmp_path / "run"
    assert _train_cli(run, synthetic_dir, "--set", "epochs=1", "--set", "model.hidden=16") == 0
    before = (run / "config.toml").read_text()
    # resuming without the original --set keeps model.hidden=16 (and more epochs may not be slipped in)
    assert _train_cli(run, synthetic_dir) == 0
    assert (run / "config.toml").read_text() == before
    capsys.readouterr()
    assert _train_cli(run, synthetic_dir, "--set", "lr=0.01") == 2
    err = capsys.readouterr().err
    assert "lr (0.001 -> 0.01)" in err and "Traceback" not in err
    assert (run / "config.toml").read_text() == before  # a refused resume changes nothing
    assert _train_cli(run, synthetic_dir, "--set", "epochs=2", "--allow-config-change") == 0
    assert "epochs = 2" in (run / "config.toml").read_text()
    hist = json.loads((run / "metrics.json").read_text())["history"]
    assert len(hist) == 2  # one more epoch was trained, from the checkpoint of the first


@pytest.mark.parametrize("override, key", [("lr=-1", "lr"), ("batch_size=0", "batch_size"),
                                           ("batch_size=-5", "batch_size"), ("model.heads=0", "model.heads"),
                                           ("model.dropout=1.5", "model.dropout"), ("model.max_len=0", "model.max_len"),
                                           ("metric=\"nDCG@7\"", "metric"), ("lr=nan", "lr")])
def test_cli_bad_hyperparameters_are_one_message(tmp_path, synthetic_dir, capsys, override, key):
    run = tmp_path / "run"
    assert _train_cli(run, synthetic_dir, "--set", override) == 2
    err = capsys.readouterr().err
    assert err.count("mmesid: error:") == 1 and key in err and "Traceback" not in err
    assert not run.exists()  # nothing written before the inputs are validated


def test_diverged_training_stops_and_keeps_no_nan_best(tmp_path, synthetic_dir, capsys):
    run = tmp_path / "run"
    assert _train_cli(run, synthetic_dir, "--set", "lr=1e10", "--set", "epochs=3", "--set", "model.hidden=16") == 2
    err = capsys.readouterr().err
    assert "diverged" in err
    assert not (run / "metrics.json").exists()


def test_no_training_targets_is_an_error(tmp_path):
    from mmesid.data.dataset import ItemInfo, SequenceData

    seqs = [np.array([1, 2, 3]), np.array([2, 3, 1]), np.array([3, 1, 2])]
    data = SequenceData(seqs, [ItemInfo(str(i)) for i in (1, 2, 3)], ["a", "b", "c"])
    with pytest.raises(MmesidError, match="no training targets"):
        train_sasrec(data, from_dict(SASRecTrainConfig, FAST), tmp_path / "run", progress=False)


def test_output_locations_that_are_refused(tmp_path, synthetic_dir, capsys, monkeypatch):
    # another command's run, a folder of foreign files, the current directory, the dataset itself
    other = tmp_path / "q"
    other.mkdir()
    (other / "run.json").write_text('{"kind": "quantize"}')
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    for out in (other, foreign, tmp_path, ".", synthetic_dir):
        assert _train_cli(out, synthetic_dir) == 2
    assert (other / "run.json").read_text() == '{"kind": "quantize"}'
    assert sorted(p.name for p in other.iterdir()) == ["run.json"]
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1
    assert "sequences.npz" in {p.name for p in synthetic_dir.iterdir()}


def test_a_locked_run_folder_refuses_a_second_writer(tmp_path, synthetic_dir, capsys):
    from mmesid.artifacts.runs import RunDir

    run = tmp_path / "run"
    with RunDir(run, "sasrec").claim():
        assert _train_cli(run, synthetic_dir, "--set", "epochs=1") == 2
        assert "another mmesid process" in capsys.readouterr().err
    assert _train_cli(run, synthetic_dir, "--set", "epochs=1", "--set", "model.hidden=16") == 0


def test_resume_on_another_dataset_is_refused(tmp_path, synthetic_dir, capsys):
    from mmesid.data.synthetic import SyntheticConfig, generate

    other = tmp_path / "other"
    generate(SyntheticConfig(n_users=300, n_items=120, seed=1)).save(other)  # same sizes, other content
    run = tmp_path / "run"
    assert _train_cli(run, synthetic_dir, "--set", "epochs=1", "--set", "model.hidden=16") == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert run_cli("sasrec", "train", "--data", other, "--out", run, "--quiet", "--set", "epochs=2",
                   "--allow-config-change") == 2
    assert "another dataset" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
