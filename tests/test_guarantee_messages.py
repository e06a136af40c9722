"""Issue 12, guarantee 4: bad input is one clear message, never a Python traceback.

Each case builds its bad input in a fresh folder (or damages a copy of a real run / dataset made
through the CLI), runs one command through the real CLI, and checks: the exit status (2, or 0 where
the input is in fact valid), exactly one error line naming the file / line / key, no traceback, and
that no input file changed.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from guarantee_common import QUANT, SASREC, assert_one_error, cli, make_dataset, sasrec, snapshot


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A prepared dataset, a SASRec run trained on it (1 epoch) and a quantiser run of its E_c."""
    root = tmp_path_factory.mktemp("gmsg")
    data = make_dataset(root / "data")
    assert sasrec(root / "data", root / "sasrec") == 0
    ec = root / "E_c.safetensors"
    ec.write_bytes((root / "sasrec" / "item_embeddings.safetensors").read_bytes())
    assert run_cli("quantize", "train", "--emb", f"c={ec}", "--out", root / "quant", *QUANT) == 0
    return {"root": root, "dir": root / "data", "data": data, "sasrec": root / "sasrec", "ec": ec,
            "quant": root / "quant"}


CSV_OK = "user,item,timestamp\n" + "".join(f"u{u},i{i},{i}\n" for u in range(5) for i in range(5))  # 26 lines
ITEMS_OK = "item,title,image\n" + "".join(f"i{i},Title {i},\n" for i in range(5))


def _interactions(tmp: Path, csv: bytes, items: bytes | None = None, extra=()) -> list:
    (tmp / "x.csv").write_bytes(csv)
    argv = ["data", "prepare", tmp / "x.csv", "--format", "interactions", "--out", tmp / "out", *extra]
    if items is not None:
        (tmp / "items.csv").write_bytes(items)
        argv += ["--items", tmp / "items.csv"]
    return argv


def _authors(tmp: Path, seq: bytes) -> list:
    (tmp / "in").mkdir()
    (tmp / "in" / "Toy_new.txt").write_bytes(seq)
    return ["data", "prepare", tmp / "in", "--out", tmp / "out"]


def _sasrec(env, tmp: Path, *extra, data=None) -> list:
    return ["sasrec", "train", "--data", data or env["dir"], "--out", tmp / "run", *SASREC, *extra]


def _quantize(tmp: Path, emb, *extra) -> list:
    return ["quantize", "train", "--emb", f"c={emb}", "--out", tmp / "run", *QUANT, *extra]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _three_each(tmp: Path) -> Path:
    from mmesid.data.dataset import ItemInfo, SequenceData

    seqs = [np.array([1, 2, 3]), np.array([2, 3, 4]), np.array([3, 4, 1]), np.array([4, 1, 2])]
    return SequenceData(seqs, [ItemInfo(f"i{i}") for i in range(1, 5)], ["a", "b", "c", "d"]).save(tmp / "three")


def _file(tmp: Path, name: str, arr=None, raw: bytes | None = None) -> Path:
    """tmp/name holding `raw` bytes, or the array `arr` saved as .npy."""
    p = tmp / name
    if raw is not None:
        p.write_bytes(raw)
    else:
        np.save(p, arr)
    return p


def _readonly(tmp: Path) -> Path:
    d = tmp / "ro"
    d.mkdir()
    d.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return d


def _truncated_checkpoint(env, tmp: Path) -> list:
    run = _copy(env["sasrec"], tmp / "run")
    [ckpt] = (run / "checkpoints").iterdir()
    state = ckpt / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    return ["sasrec", "train", "--data", env["dir"], "--out", run, "--quiet"]


def _damaged_prepared(env, tmp: Path) -> list:
    data = _copy(env["dir"], tmp / "data")
    (data / "users.tsv").unlink()
    return _sasrec(env, tmp, data=data)


def _damaged_run(env, tmp: Path) -> list:
    run = _copy(env["sasrec"], tmp / "run")
    (run / "config.toml").unlink()
    return ["evaluate", "--data", env["dir"], "--run", run, "--out", tmp / "r.json", "--quiet"]


def _file_as_out(tmp: Path, argv: list) -> list:
    (tmp / "f.txt").write_text("my notes")
    return [a if a != "@OUT" else tmp / "f.txt" for a in argv]


def _amazon_not_gzip(tmp: Path) -> list:
    (tmp / "raw").mkdir()
    (tmp / "raw" / "reviews_Toy_5.json.gz").write_bytes(b'{"reviewerID": "U", "asin": "B", "unixReviewTime": 1}\n')
    (tmp / "raw" / "meta_Toy.json.gz").write_bytes(gzip.compress(b"{'asin': 'B', 'title': 't'}\n"))
    return ["data", "prepare", tmp / "raw", "--format", "amazon", "--name", "Toy", "--out", tmp / "out"]


# name -> (argv builder (env, tmp) -> argv, exit status, needles of the error line, argparse error?)
CASES = {
    # --- text inputs that are not what they claim
    "interactions csv non-utf8": (lambda e, t: _interactions(t, CSV_OK.encode() + b"u9,\xff\xfe,3\n"), 2,
                                  ["x.csv:27: not UTF-8 text (byte 0xff"], False),
    "item table non-utf8": (lambda e, t: _interactions(t, CSV_OK.encode(),
                                                       b"item,title,image\ni0,ok,\ni1,\xe9t\xe9,\n"),
                            2, ["items.csv:3: not UTF-8 text (byte 0xe9"], False),
    "authors file non-utf8": (lambda e, t: _authors(t, b"1 1 2 3\n2 1 \xff 3\n"), 2,
                              ["Toy_new.txt:2: not UTF-8 text (byte 0xff"], False),
    "config toml non-utf8": (lambda e, t: _sasrec(e, t, "--config", _file(t, "bad.toml", raw=b"lr = 0.1\n# \xff\n")), 2,
                             ["bad.toml:2: not UTF-8 text (byte 0xff)"], False),
    "config toml syntax": (lambda e, t: _sasrec(e, t, "--config", _file(t, "bad.toml", raw=b"epochs = 1\nlr = = 2\n")),
                           2, ["bad.toml: invalid TOML", "line 2"], False),
    "infinite timestamp": (lambda e, t: _interactions(t, CSV_OK.encode() + b"u1,i1,inf\n"), 2,
                           ["x.csv:27: timestamp 'inf' is not a finite number"], False),
    "csv field over the csv limit": (lambda e, t: _interactions(t, CSV_OK.encode(),
                                                                b"item,title\ni1," + b"x" * 200_000 + b"\n"), 2,
                                     ["items.csv:2: malformed CSV", "field limit"], False),
    "user id beyond int64": (lambda e, t: _authors(t, b"9223372036854775808 1 2 3\n"), 2,
                             ["Toy_new.txt:1: user id '9223372036854775808' is outside the 64-bit integer range"],
                             False),
    "item id beyond int64": (lambda e, t: _authors(t, b"1 1 2 99999999999999999999\n"), 2,
                             ["Toy_new.txt:1: item id '99999999999999999999' is outside the 64-bit"], False),
    "timestamp beyond int64": (lambda e, t: _interactions(t, CSV_OK.encode() + b"u1,i1,9223372036854775808\n"), 2,
                               ["x.csv:27: timestamp '9223372036854775808' is outside the 64-bit"], False),
    ".gz that is not gzip": (lambda e, t: _amazon_not_gzip(t), 2, ["reviews_Toy_5.json.gz: not a valid gzip file"],
                             False),
    # --- a folder where a file is expected, and the other way round
    "--emb is a folder": (lambda e, t: (t / "d").mkdir() or _quantize(t, t / "d"), 2, ["d", "is a folder"], False),
    "--config is a folder": (lambda e, t: (t / "d").mkdir() or _sasrec(e, t, "--config", t / "d"), 2,
                             ["d: is a folder, expected a TOML config file"], False),
    "--items is a folder": (lambda e, t: (t / "d").mkdir() or _interactions(t, CSV_OK.encode(), None,
                                                                            ["--items", t / "d"]), 2,
                            ["d: is a folder, expected a file"], False),
    "--data is a file": (lambda e, t: _sasrec(e, t, data=_file(t, "x.csv", raw=CSV_OK.encode())), 2,
                         ["x.csv: is a file, expected a prepared dataset folder"], False),
    "--data is an empty folder": (lambda e, t: (t / "d").mkdir() or ["evaluate", "--data", t / "d", "--popularity"],
                                  2, ["d"], False),
    "existing file as data prepare --out": (lambda e, t: _file_as_out(t, _interactions(t, CSV_OK.encode())[:-2]
                                                                      + ["--out", "@OUT"]), 2,
                                            ["f.txt: is a file, expected a folder"], False),
    "existing file as sasrec --out": (lambda e, t: _file_as_out(t, ["sasrec", "train", "--data", e["dir"],
                                                                    "--out", "@OUT", "--quiet"]), 2,
                                      ["f.txt: is a file, expected a folder"], False),
    "existing file as quantize export --out": (lambda e, t: _file_as_out(t, ["quantize", "export", "--run",
                                                                             e["quant"], "--out", "@OUT"]), 2,
                                               ["f.txt: is a file, expected a folder"], False),
    "read-only folder for evaluate --out": (lambda e, t: ["evaluate", "--data", e["dir"], "--run", e["sasrec"],
                                                          "--out", _readonly(t) / "r.json", "--quiet"], 2,
                                            ["r.json: no permission to write in"], False),
    # --- invalid settings
    "synthetic zero users": (lambda e, t: ["data", "synthetic", "--users", "0", "--out", t / "syn"], 2,
                             ["argument --users", ">= 1"], True),
    "synthetic two items": (lambda e, t: ["data", "synthetic", "--items", "2", "--out", t / "syn"], 2,
                            ["argument --items", ">= 3"], True),
    "synthetic more categories than items": (lambda e, t: ["data", "synthetic", "--items", "5", "--categories", "8",
                                                           "--out", t / "syn"], 2,
                                             ["--categories: 8 categories need at least as many items"], False),
    "sasrec negative lr": (lambda e, t: _sasrec(e, t, "--set", "lr=-1"), 2, ["lr", "-1"], False),
    "sasrec batch 0": (lambda e, t: _sasrec(e, t, "--set", "batch_size=0"), 2, ["batch_size", "0"], False),
    "sasrec heads 0": (lambda e, t: _sasrec(e, t, "--set", "model.heads=0"), 2, ["model.heads"], False),
    "sasrec hidden not divisible by heads": (lambda e, t: _sasrec(e, t, "--set", "model.heads=3"), 2,
                                             ["model.hidden (8) must be divisible by model.heads (3)"], False),
    "sasrec dropout 1.5": (lambda e, t: _sasrec(e, t, "--set", "model.dropout=1.5"), 2, ["model.dropout", "1.5"],
                           False),
    "sasrec unknown metric": (lambda e, t: _sasrec(e, t, "--set", 'metric="HR@7"'), 2, ["metric", "HR@7"], False),
    "sasrec max_len 0": (lambda e, t: _sasrec(e, t, "--set", "model.max_len=0"), 2, ["model.max_len"], False),
    "sasrec unknown key": (lambda e, t: _sasrec(e, t, "--set", "model.hiden=8"), 2, ["hiden"], False),
    "every user has 3 interactions": (lambda e, t: _sasrec(e, t, data=_three_each(t)), 2, ["no training targets"],
                                      False),
    # --- embedding files
    ".npz embedding": (lambda e, t: _quantize(t, (np.savez(t / "e.npz", a=np.ones((31, 4))), t / "e.npz")[1]), 2,
                       ["e.npz", "unsupported format"], False),
    "empty .npy embedding": (lambda e, t: _quantize(t, _file(t, "e.npy", raw=b"")), 2,
                             ["e.npy", "not a plain numeric .npy"], False),
    "NaN in an embedding": (lambda e, t: _quantize(t, _file(t, "e.npy", np.array([[0, 0], [1, 2], [np.nan, 1]] * 5,
                                                                                 dtype=np.float32))), 2,
                            ["e.npy", "non-finite"], False),
    "big-endian .npy embedding works": (lambda e, t: _quantize(t, _file(t, "e.npy", np.random.default_rng(0).normal(
        size=(31, 6)).astype(">f4"))), 0, [], False),
    # --- damaged artefacts
    "prepared folder without users.tsv": (_damaged_prepared, 2, ["users.tsv: missing"], False),
    "run folder without config.toml": (_damaged_run, 2, ["config.toml: config file not found"], False),
    "truncated checkpoint": (_truncated_checkpoint, 2, ["damaged checkpoint", "step-"], False),
    "evaluate a quantiser run": (lambda e, t: ["evaluate", "--data", e["dir"], "--run", e["quant"]], 2,
                                 ["not a trained model run"], False),
    "finetune --sids is a file": (lambda e, t: ["finetune", "--data", e["dir"], "--emb", f"c={e['ec']}", "--sids",
                                                _file(t, "s.txt", raw=b"x"), "--out", t / "run"], 2,
                                  ["s.txt: not a folder"], False),
}


def _assert_inputs_unchanged(before: dict, after: dict, argv: list) -> None:
    """Every file that was there is byte-identical; nothing new appeared, except the --out run folder
    of a training command with its lock and run.json (the record of the command that was refused)."""
    out = str(argv[argv.index("--out") + 1]) if "--out" in argv else None
    allowed = {out, f"{out}/.lock", f"{out}/run.json"} if out and argv[0] in ("sasrec", "quantize", "finetune") \
        else set()
    assert set(after) - set(before) <= allowed, sorted(set(after) - set(before))
    assert set(before) <= set(after), sorted(set(before) - set(after))
    changed = [k for k in before if before[k] != after[k]]
    assert changed in ([], [f"{out}/run.json"]), changed
    if changed:  # run.json may gain the refused command line; what it recorded about the run stays
        import json

        old, new = json.loads(before[changed[0]]), json.loads(after[changed[0]])
        assert {k: new[k] for k in old if k not in ("command", "data")} == \
            {k: v for k, v in old.items() if k not in ("command", "data")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_message(env, tmp_path, capsys, case):
    make, status, needles, by_argparse = CASES[case]
    work = tmp_path / "case"
    work.mkdir()
    try:
        argv = make(env, work)
        if "read-only" in case and os.access(work / "ro", os.W_OK):
            pytest.skip("running with privileges that ignore file permissions")
        before = snapshot(work, env["root"])
        rc, err = cli(capsys, *argv)
        assert rc == status, err
        if status == 0:
            assert "error" not in err and "Traceback" not in err, err
        else:
            cmd = "" if not by_argparse else " " + " ".join(str(a) for a in argv[:2] if not str(a).startswith("-"))
            assert_one_error(err, *needles, prefix=f"mmesid{cmd}: error: ")
            _assert_inputs_unchanged(before, snapshot(work, env["root"]), argv)
    finally:
        if (work / "ro").exists():
            (work / "ro").chmod(stat.S_IRWXU)


def test_big_endian_table_is_read_as_its_values(tmp_path):
    """The big-endian case above trains on the same numbers as the native-endian file."""
    arr = np.random.default_rng(0).normal(size=(31, 6))
    runs = {}
    for order in ("<f4", ">f4"):
        p = tmp_path / ("be.npy" if order.startswith(">") else "le.npy")
        np.save(p, arr.astype(order))
        runs[order] = tmp_path / f"run-{p.stem}"
        assert run_cli("quantize", "train", "--emb", f"c={p}", "--out", runs[order], *QUANT) == 0
    from mmesid.io import load_tensors

    a, _ = load_tensors(runs["<f4"] / "best.safetensors")
    b, _ = load_tensors(runs[">f4"] / "best.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
