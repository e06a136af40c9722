"""Issue 12, guarantee 1: mmesid never destroys a user's files.

Every case goes through the real command line on small synthetic data and compares the bytes of
every file involved before and after a refused command.
"""

from __future__ import annotations

import json

import pytest

from guarantee_common import (assert_one_error, cli, finetune, quantize, sasrec, snapshot, trained_stack)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return trained_stack(tmp_path_factory.mktemp("gfiles"))


def _evaluate_matches(env, capsys, run) -> None:
    """`evaluate --run` still works and reproduces the run's own test metrics."""
    out = env["root"] / "check.json"
    rc, err = cli(capsys, "evaluate", "--data", env["dir"], "--run", run, "--quiet", "--threads", "1",
                  "--out", out)
    assert rc == 0, err
    got = json.loads(out.read_text())
    want = json.loads((run / "metrics.json").read_text())["test"]
    assert {k: got[k] for k in want if "@" in k} == {k: v for k, v in want.items() if "@" in k}
    out.unlink()


def test_quantize_export_refuses_the_run_and_a_dataset(env, capsys):
    before = snapshot(env["quant"], env["dir"])
    for out in (env["quant"], env["dir"]):
        for extra in ([], ["--overwrite"]):
            rc, err = cli(capsys, "quantize", "export", "--run", env["quant"], "--out", out, *extra)
            assert rc == 2
            assert_one_error(err, f"--out {out}:")
            assert snapshot(env["quant"], env["dir"]) == before
    assert not list(env["root"].glob(".*.tmp")) and not list(env["root"].glob(".*.old"))


def test_quantize_train_refuses_export_onto_the_run_or_cwd(env, tmp_path, capsys, monkeypatch):
    x = tmp_path / "x"
    rc, err = cli(capsys, "quantize", "train", "--emb", f"c={env['ec']}", "--out", x, "--export", x, "--quiet")
    assert rc == 2
    assert_one_error(err, "--export")
    assert not x.exists()  # refused before training: not even the run folder was made
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("keep me")
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    rc, err = cli(capsys, "quantize", "train", "--emb", f"c={env['ec']}", "--out", tmp_path / "run", "--export", ".",
                  "--quiet")
    assert rc == 2
    assert_one_error(err, "--export .", "current directory")
    assert snapshot(tmp_path) == before


def _toy_interactions(folder):
    folder.mkdir()
    rows = [f"u{u},i{(u + k) % 5},{k}" for u in range(5) for k in range(5)]
    (folder / "x.csv").write_text("user,item,timestamp\n" + "\n".join(rows) + "\n")
    (folder / "items.csv").write_text("item,title,image\n" + "".join(f"i{i},Title {i},\n" for i in range(5)))
    return folder / "x.csv", folder / "items.csv"


def test_data_prepare_refuses_the_input_folder_and_cwd(tmp_path, capsys, monkeypatch):
    x, items = _toy_interactions(tmp_path / "in")
    before = snapshot(tmp_path)
    args = ["data", "prepare", x, "--format", "interactions", "--items", items, "--overwrite"]
    rc, err = cli(capsys, *args, "--out", tmp_path / "in")
    assert rc == 2
    assert_one_error(err, "contains the input")
    assert snapshot(tmp_path) == before
    monkeypatch.chdir(tmp_path / "in")
    rc, err = cli(capsys, *args, "--out", ".")
    assert rc == 2
    assert_one_error(err, "current directory")
    assert snapshot(tmp_path) == before
    rc, err = cli(capsys, *args, "--out", tmp_path / "prep")  # the same command elsewhere works
    assert rc == 0, err


@pytest.mark.parametrize("command", ["finetune", "quantize"])
def test_other_commands_refuse_a_sasrec_run(env, capsys, command):
    before = snapshot(env["sasrec"])
    capsys.readouterr()
    if command == "finetune":
        rc = finetune(env["dir"], {"c": env["ec"]}, env["sids"], env["sasrec"], env["llama"])
    else:
        rc = quantize({"c": env["ec"]}, env["sasrec"], "--data", env["dir"])
    assert rc == 2
    assert_one_error(capsys.readouterr().err, str(env["sasrec"]), "a SASRec run")
    assert snapshot(env["sasrec"]) == before
    _evaluate_matches(env, capsys, env["sasrec"])
    assert snapshot(env["sasrec"]) == before


def test_a_refused_resume_leaves_the_run_as_it_was(env, capsys):
    before = snapshot(env["sasrec"])
    capsys.readouterr()
    assert sasrec(env["dir"], env["sasrec"], "--set", "lr=0.01") == 2
    assert_one_error(capsys.readouterr().err, "lr (0.001 -> 0.01)")
    assert snapshot(env["sasrec"]) == before
    _evaluate_matches(env, capsys, env["sasrec"])


@pytest.mark.parametrize("kind", ["sasrec", "quantize", "finetune"])
def test_a_second_writer_is_refused(env, tmp_path, capsys, kind):
    from mmesid.artifacts.runs import RunDir

    out = tmp_path / "run"
    with RunDir(out, kind).claim():
        before = snapshot(out)
        capsys.readouterr()
        if kind == "sasrec":
            rc = sasrec(env["dir"], out)
        elif kind == "quantize":
            rc = quantize({"c": env["ec"]}, out)
        else:
            rc = finetune(env["dir"], {"c": env["ec"]}, env["sids"], out, env["llama"])
        assert rc == 2
        assert_one_error(capsys.readouterr().err, str(out), "another mmesid process")
        assert snapshot(out) == before == {str(out / ".lock"): b""}


def test_analyze_collapse_keeps_an_existing_plot(env, tmp_path, capsys):
    png = tmp_path / "x.png"
    rc, err = cli(capsys, "analyze", "collapse", "--emb", f"E={env['ec']}", "--out", png)
    assert rc == 0, err
    before = snapshot(tmp_path)
    rc, err = cli(capsys, "analyze", "collapse", "--emb", f"E={env['ec']}", "--out", tmp_path / "x.json")
    assert rc == 2
    assert_one_error(err, "x.json", "expected a file ending in .png")
    assert snapshot(tmp_path) == before


def test_data_synthetic_writes_no_images_when_out_is_refused(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    rc, err = cli(capsys, "data", "synthetic", "--users", "20", "--items", "12", "--categories", "3",
                  "--out", foreign, "--images", tmp_path / "img", "--overwrite")
    assert rc == 2
    assert_one_error(err, "foreign", "files not made by mmesid")
    assert snapshot(tmp_path) == before  # no image folder, no image

