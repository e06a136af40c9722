"""Issue 12, guarantee 2: mmesid never reports wrong metrics.

A diverged or impossible training run, a nonsensical setting, or inputs made from another dataset
end with one error and no metrics file; what `data prepare` drops is counted, never silent.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli
from guarantee_common import assert_one_error, cli, finetune, quantize, sasrec, snapshot, trained_stack
from mmesid.io import load_tensors


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("gmetrics")
    env = trained_stack(root / "main")
    # the same item count, other sequences: every artefact of it records another fingerprint
    env["other"] = trained_stack(root / "other", seed=1, llama=False)
    assert env["other"]["data"].n_items == env["data"].n_items
    assert env["other"]["data"].fingerprint != env["data"].fingerprint
    return env


def _train(env, kind, out, *extra) -> int:
    if kind == "sasrec":
        return sasrec(env["dir"], out, *extra)
    if kind == "quantize":
        return quantize({"c": env["ec"]}, out, *extra)
    return finetune(env["dir"], {"c": env["ec"]}, env["sids"], out, env["llama"], *extra)


DIVERGE = {"sasrec": ["--set", "epochs=3"], "quantize": ["--set", "epochs=3"],
           "finetune": ["--set", "max_steps=4", "--set", "eval_every=1"]}


@pytest.mark.parametrize("kind", ["sasrec", "quantize", "finetune"])
def test_diverged_training_is_an_error_without_metrics(env, tmp_path, capsys, kind):
    out = tmp_path / "run"
    capsys.readouterr()
    assert _train(env, kind, out, "--set", "lr=1e10", *DIVERGE[kind]) == 2
    assert_one_error(capsys.readouterr().err, "diverged")
    assert not (out / "metrics.json").exists() and not (out / "export").exists()
    assert not (out / "item_embeddings.safetensors").exists()
    if (out / "best.safetensors").exists():  # only ever weights of a finite validation
        best, _ = load_tensors(out / "best.safetensors")
        assert all(torch.isfinite(v).all() for v in best.values())


def test_negative_sasrec_batch_size_is_refused(env, tmp_path, capsys):
    capsys.readouterr()
    assert sasrec(env["dir"], tmp_path / "run", "--set", "batch_size=-5") == 2
    assert_one_error(capsys.readouterr().err, "batch_size", "-5")
    assert not (tmp_path / "run").exists()


def test_finetune_without_training_prompts_is_refused(env, tmp_path, capsys):
    from rec_fixtures import fake_export, random_embeddings

    # every user has exactly 3 interactions: the training part (all but the last two) has no target
    rows = [f"u{u},i{(u + k) % 4},{k}" for u in range(6) for k in range(3)]
    (tmp_path / "x.csv").write_text("user,item,timestamp\n" + "\n".join(rows) + "\n")
    rc, err = cli(capsys, "data", "prepare", tmp_path / "x.csv", "--format", "interactions", "--min-user", "3",
                  "--min-item", "1", "--out", tmp_path / "data")
    assert rc == 0, err
    from mmesid.data.dataset import SequenceData

    data = SequenceData.load(tmp_path / "data")
    assert {len(s) for s in data.sequences} == {3}
    emb = random_embeddings(tmp_path, data.n_items, {"c": 4}, fingerprint=data.fingerprint)
    sids = fake_export(tmp_path / "export", data.n_items, modalities=("c",), fingerprint=data.fingerprint)
    capsys.readouterr()
    assert finetune(tmp_path / "data", emb, sids, tmp_path / "run", env["llama"]) == 2
    assert_one_error(capsys.readouterr().err, "no training prompts")
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "best.safetensors").exists()


def test_evaluate_negative_batch_size_is_refused(env, tmp_path, capsys):
    rc, err = cli(capsys, "evaluate", "--data", env["dir"], "--run", env["sasrec"], "--batch-size", "-1",
                  "--out", tmp_path / "r.json")
    assert rc == 2
    assert_one_error(err, "--batch-size", prefix="mmesid evaluate: error: ")
    assert not (tmp_path / "r.json").exists()


def test_evaluate_popularity_never_writes_into_a_run(env, capsys):
    rc, err = cli(capsys, "evaluate", "--data", env["dir"], "--run", env["sasrec"], "--quiet")
    assert rc == 0, err
    before = snapshot(env["sasrec"])
    assert (env["sasrec"] / "eval_test.json").exists()
    rc, err = cli(capsys, "evaluate", "--data", env["dir"], "--popularity", "--run", env["sasrec"], "--quiet")
    assert rc == 2
    assert_one_error(err, "--run", "--popularity", prefix="mmesid evaluate: error: ")
    assert snapshot(env["sasrec"]) == before


def _another_dataset_case(env, name, tmp_path):
    """argv of a command on the main dataset fed one artefact of the other dataset (same item count)."""
    o = env["other"]
    if name == "embedding -> quantize train --data":
        return ["quantize", "train", "--emb", f"c={o['ec']}", "--data", env["dir"], "--out", tmp_path / "run"]
    ft = ["finetune", "--data", env["dir"], "--out", tmp_path / "run", "--set", f"backbone.path={env['llama']}",
          "--device", "cpu", "--quiet"]
    if name == "embedding -> finetune":
        return ft + ["--emb", f"c={o['ec']}", "--sids", env["sids"]]
    if name == "sid export -> finetune":
        return ft + ["--emb", f"c={env['ec']}", "--sids", o["sids"]]
    return ["evaluate", "--data", env["dir"], "--run", o["sasrec"], "--out", tmp_path / "r.json", "--quiet"]


@pytest.mark.parametrize("name", ["embedding -> quantize train --data", "embedding -> finetune",
                                  "sid export -> finetune", "trained run -> evaluate"])
def test_artefacts_of_another_dataset_are_refused(env, tmp_path, capsys, name):
    argv = _another_dataset_case(env, name, tmp_path)
    watched = [env["root"].parent]
    before = snapshot(*watched)
    rc, err = cli(capsys, *argv)
    assert rc == 2
    assert_one_error(err, "another dataset")
    assert snapshot(*watched) == before
    assert list(tmp_path.iterdir()) == []  # no run folder, no results file


# ------------------------------------------------------------------ nothing dropped silently
# u0..u5 watch i0..i4 at distinct times; three rows are exact copies of earlier rows; i5 and i6
# have no row in the item table (3 and 1 interactions)
ROWS = [(f"u{u}", f"i{(u + k) % 5}", 10 * k + u) for u in range(6) for k in range(5)]
DUPLICATES = [ROWS[0], ROWS[7], ROWS[7]]
MISSING = [("u0", "i5", 100), ("u1", "i5", 101), ("u2", "i5", 102), ("u3", "i6", 103)]


@pytest.fixture(scope="module")
def dropped(tmp_path_factory):
    root = tmp_path_factory.mktemp("drops")
    lines = ["user,item,timestamp"] + [f"{u},{i},{t}" for u, i, t in ROWS + DUPLICATES + MISSING]
    (root / "x.csv").write_text("\n".join(lines) + "\n")
    (root / "items.csv").write_text("item,title,image\n" + "".join(f"i{i},Title {i},\n" for i in range(5)))
    assert run_cli("data", "prepare", root / "x.csv", "--format", "interactions", "--items", root / "items.csv",
                   "--min-user", "1", "--min-item", "1", "--out", root / "prep") == 0
    from mmesid.data.dataset import SequenceData

    return json.loads((root / "prep" / "stats.json").read_text()), SequenceData.load(root / "prep")


def _expected_sequences(rows):
    """Independent: unique rows of items in the table, each user's items by time, users by first row."""
    seen, users = set(), {}
    for u, i, t in rows:
        if (u, i, t) in seen or i not in {f"i{k}" for k in range(5)}:
            continue
        seen.add((u, i, t))
        users.setdefault(u, []).append((t, i))
    return {u: [i for _, i in sorted(v)] for u, v in users.items()}


def _sequences(data):
    return {u: [data.items[i - 1].raw_id for i in s] for u, s in zip(data.user_ids, data.sequences)}


def test_duplicate_rows_are_dropped_and_counted(dropped):
    stats, data = dropped
    assert stats["dropped"]["duplicate_interactions"] == len(DUPLICATES) == 3
    assert stats["input"]["interactions"] == len(ROWS) + len(DUPLICATES) + len(MISSING)
    assert _sequences(data) == _expected_sequences(ROWS + DUPLICATES + MISSING)
    assert data.n_interactions == len(ROWS)


def test_items_missing_from_the_item_table_are_counted(dropped):
    stats, data = dropped
    assert stats["dropped"]["items_not_in_item_table"] == {"items": 2, "interactions": len(MISSING)}
    assert sorted(it.raw_id for it in data.items) == [f"i{k}" for k in range(5)]
    assert stats["input"]["items"] == 7


def test_ragged_item_table_row_names_file_and_line(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("user,item,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in ROWS))
    (tmp_path / "items.csv").write_text("item,title,image\ni0,A,\ni1,B,\ni2,C,,oops\ni3,D,\ni4,E,\n")
    before = snapshot(tmp_path)
    rc, err = cli(capsys, "data", "prepare", tmp_path / "x.csv", "--format", "interactions", "--items",
                  tmp_path / "items.csv", "--out", tmp_path / "prep")
    assert rc == 2
    assert_one_error(err, "items.csv:4: expected 3 fields (as the header), got 4")
    assert snapshot(tmp_path) == before


def test_synthetic_with_zero_users_is_refused(tmp_path, capsys):
    rc, err = cli(capsys, "data", "synthetic", "--users", "0", "--out", tmp_path / "syn")
    assert rc == 2
    assert_one_error(err, "--users", prefix="mmesid data synthetic: error: ")
    assert not (tmp_path / "syn").exists()

