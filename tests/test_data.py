import gzip
import json
import re
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from conftest import BEAUTY, run_cli
from mmesid.data import SequenceData, eval_examples, pad_left, read_authors, train_examples
from mmesid.data.readers import FilterOptions, read_amazon, read_interactions
from mmesid.data.synthetic import SyntheticConfig, generate
from mmesid.errors import ConfigError, InputFormatError, MmesidError


def write_authors(folder: Path, lines: list[str], table: list[str] | None = None, name="Toy"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}_new.txt").write_text("".join(l + "\n" for l in lines))
    if table is not None:
        (folder / f"{name}_text_img.csv").write_text("asin,title,imUrl,id\n" + "".join(r + "\n" for r in table))
    return folder


GOOD = ["1 1 2 3 4", "2 2 3 4 1 5", "3 5 4 3"]
TABLE = [f"A{i},item {i},http://x/{i}.jpg,{i}" for i in range(1, 6)]


def test_authors_reader_and_round_trip(tmp_path):
    data = read_authors(write_authors(tmp_path / "in", GOOD, TABLE))
    assert (data.n_users, data.n_items, data.n_interactions) == (3, 5, 12)
    assert data.items[0].raw_id == "A1" and data.items[4].title == "item 5"
    data.validate()
    out = data.save(tmp_path / "prep")
    back = SequenceData.load(out)
    assert back.n_items == 5 and back.user_ids == ["1", "2", "3"]
    assert all((a == b).all() for a, b in zip(back.sequences, data.sequences))
    freq = np.load(out / "item_freq.npy")
    # training split = sequences without their last two items: [1,2], [2,3,4], [5]
    assert freq.tolist() == [0, 1, 2, 1, 1, 1]
    assert json.loads((out / "stats.json").read_text())["interactions"] == 12


@pytest.mark.parametrize("lines,table,needle", [
    (["1 1 2 3", "2 x 3 4"], None, "Toy_new.txt:2: item id 'x' is not an integer"),
    (["1 1 2 3", "u2 1 2 3"], None, "Toy_new.txt:2: user id 'u2' is not an integer"),
    (["1 1 2 3", "2"], None, "Toy_new.txt:2: user 2 has an empty sequence"),
    (["1 1 2 3", ""], None, "Toy_new.txt:2: empty line"),
    (["1 1 2 3", "1 3 2 1"], None, "Toy_new.txt:2: duplicate user 1 (first on line 1)"),
    (["1 1 2 3", "2 3 2 1"], ["A1,t,u,1", "A9,t,u,9"], "Toy_text_img.csv:3: unknown item id 9"),
])
def test_authors_bad_input_cli(tmp_path, capsys, lines, table, needle):
    folder = write_authors(tmp_path / "in", lines, table)
    out = tmp_path / "prep"
    assert run_cli("data", "prepare", folder, "--out", out) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()
    assert not any(p.name.startswith(".prep") for p in tmp_path.iterdir()), "temp output left behind"


def test_missing_file_and_short_sequence(tmp_path, capsys):
    assert run_cli("data", "prepare", tmp_path / "nope", "--out", tmp_path / "o") == 2
    assert "nope: folder not found" in capsys.readouterr().err
    folder = write_authors(tmp_path / "in", ["1 1 2", "2 1 2 3"])
    assert run_cli("data", "prepare", folder, "--out", tmp_path / "o") == 2
    assert "leave-one-out needs at least 3" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_split_matches_spec():
    seqs = [np.array([1, 2, 3, 4, 5]), np.array([6, 7, 8])]
    test = eval_examples(seqs, "test")
    valid = eval_examples(seqs, "valid")
    assert test.targets.tolist() == [5, 8] and test.histories[0].tolist() == [1, 2, 3, 4]
    assert valid.targets.tolist() == [4, 7] and valid.histories[1].tolist() == [6]
    ex = train_examples(seqs)
    assert [(h.tolist(), t) for h, t in ex] == [([1], 2), ([1, 2], 3)]
    long = [np.arange(1, 60)]
    ex = train_examples(long, max_len=50)
    assert len(ex[-1][0]) == 50 and ex[-1][1] == 57
    padded = pad_left([np.array([1, 2]), np.array([3])])
    assert padded.tolist() == [[1, 2], [0, 3]]


def _raw_fixture(folder: Path):
    """A small raw Amazon 2014 fixture: JSON reviews, Python-literal metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    reviews = []
    for u in range(40):
        for k, it in enumerate(rng.choice(12, size=6, replace=False)):
            reviews.append({"reviewerID": f"U{u}", "asin": f"B{it:03d}", "unixReviewTime": 1000 + 10 * k,
                            "overall": 5.0})
    reviews.append({"reviewerID": "lonely", "asin": "B000", "unixReviewTime": 5})  # dropped by 5-core
    with gzip.open(folder / "reviews_Toy_5.json.gz", "wt") as f:
        for r in rng.permutation(len(reviews)):
            f.write(json.dumps(reviews[r]) + "\n")
    with gzip.open(folder / "meta_Toy.json.gz", "wt") as f:
        for it in range(12):
            rec = {"asin": f"B{it:03d}", "imUrl": f"http://img/{it}.jpg", "categories": [["Beauty"]]}
            if it != 11:  # item 11 has no title: removed before k-core
                rec["title"] = f"Product {it} 'quoted'"
            f.write(repr(rec) + "\n")
    return folder


def _expected_amazon_sequences(folder: Path) -> dict[str, list[str]]:
    """Directly from the fixture file: each user's asins by unixReviewTime, without the untitled
    B011, and without users left with fewer than 5 (the fixture's only k-core removal)."""
    by_user: dict[str, list[tuple[int, str]]] = {}
    with gzip.open(folder / "reviews_Toy_5.json.gz", "rt") as f:
        for line in f:
            r = json.loads(line)
            if r["asin"] != "B011":
                by_user.setdefault(r["reviewerID"], []).append((r["unixReviewTime"], r["asin"]))
    return {u: [a for _, a in sorted(v)] for u, v in by_user.items() if len(v) >= 5}


def test_raw_amazon_reader(tmp_path):
    folder = _raw_fixture(tmp_path / "raw")
    data = read_amazon(folder / "reviews_Toy_5.json.gz", folder / "meta_Toy.json.gz", FilterOptions())
    assert data.n_items == 11 and "lonely" not in data.user_ids
    assert sorted(it.raw_id for it in data.items) == [f"B{i:03d}" for i in range(11)]
    assert all(it.title == f"Product {int(it.raw_id[1:])} 'quoted'" for it in data.items)
    # chronological: the reviews were written shuffled; each sequence must follow unixReviewTime
    expected = _expected_amazon_sequences(folder)
    got = {u: [data.items[i - 1].raw_id for i in s] for u, s in zip(data.user_ids, data.sequences)}
    assert got == expected
    dropped = data.report["dropped"]
    with gzip.open(folder / "reviews_Toy_5.json.gz", "rt") as f:
        b011 = sum(json.loads(line)["asin"] == "B011" for line in f)
    assert dropped["items_without_title"] == {"items": 1, "interactions": b011}
    assert dropped["k_core"] == {"users": 1, "items": 0, "interactions": 1}  # the lonely reviewer
    assert data.n_interactions == 40 * 6 - b011
    out = tmp_path / "prep"
    assert run_cli("data", "prepare", folder, "--format", "amazon", "--name", "Toy", "--out", out) == 0
    back = SequenceData.load(out)
    assert {u: [back.items[i - 1].raw_id for i in s] for u, s in zip(back.user_ids, back.sequences)} == expected
    stats = json.loads((out / "stats.json").read_text())
    assert stats["items"] == 11 and stats["users"] == 40
    assert stats["dropped"]["items_without_title"]["interactions"] == b011


def test_raw_amazon_bad_line(tmp_path, capsys):
    folder = _raw_fixture(tmp_path / "raw")
    with gzip.open(folder / "reviews_Toy_5.json.gz", "at") as f:
        f.write("{not json\n")
    assert run_cli("data", "prepare", folder, "--format", "amazon", "--name", "Toy", "--out", tmp_path / "o") == 2
    assert "reviews_Toy_5.json.gz:242: invalid JSON" in capsys.readouterr().err


def test_interactions_csv(tmp_path, capsys):
    rows = ["user,item,timestamp"]
    for u in range(6):
        for k in range(5):
            rows.append(f"u{u},i{(u + k) % 5},{100 - k}")  # timestamps decreasing: order must flip
    (tmp_path / "inter.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "items.csv").write_text("item,title,image\n" + "".join(f"i{i},Title {i},\n" for i in range(5)))
    data = read_interactions(tmp_path / "inter.csv", tmp_path / "items.csv")
    assert data.n_users == 6 and data.n_items == 5
    first_user = data.sequences[0]
    assert [data.items[i - 1].raw_id for i in first_user] == ["i4", "i3", "i2", "i1", "i0"]
    (tmp_path / "items_bad.csv").write_text("item,title,image\ni0,a,\nzzz,b,\n")
    assert run_cli("data", "prepare", tmp_path / "inter.csv", "--format", "interactions",
                   "--items", tmp_path / "items_bad.csv", "--out", tmp_path / "o") == 2
    assert "items_bad.csv:3: unknown item 'zzz'" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("user,item,timestamp\nu1,i1,12\nu1,i2,yesterday\n")
    assert run_cli("data", "prepare", tmp_path / "bad.csv", "--format", "interactions", "--out", tmp_path / "o") == 2
    assert "bad.csv:3: timestamp 'yesterday' is not a number" in capsys.readouterr().err


def test_synthetic_is_deterministic_and_structured():
    cfg = SyntheticConfig(n_users=200, n_items=80, seed=3)
    a, b = generate(cfg), generate(cfg)
    assert all((x == y).all() for x, y in zip(a.sequences, b.sequences))
    a.validate()
    # planted chain: the most common successor of an item should be far above chance
    nxt = {}
    for s in a.sequences:
        for x, y in zip(s[:-1], s[1:]):
            nxt.setdefault(int(x), []).append(int(y))
    top_share = np.mean([np.bincount(v).max() / len(v) for v in nxt.values() if len(v) >= 5])
    assert 0.55 < top_share < 0.8  # p_chain = 0.7, minus the no-repeat replacements
    # without the chain the most common successor is near chance (1 in a category of 10)
    flat = generate(SyntheticConfig(n_users=200, n_items=80, seed=3, p_chain=0.0))
    nxt = {}
    for s in flat.sequences:
        for x, y in zip(s[:-1], s[1:]):
            nxt.setdefault(int(x), []).append(int(y))
    assert np.mean([np.bincount(v).max() / len(v) for v in nxt.values() if len(v) >= 5]) < 0.2


def test_download_from_loopback(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    for name in ("reviews_Toy_5.json.gz", "meta_Toy.json.gz"):
        (served / name).write_bytes(b"payload-" + name.encode())
    handler = partial(SimpleHTTPRequestHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert run_cli("data", "download", "--category", "Toy", "--out", tmp_path / "dl", "--base-url", url) == 0
        assert (tmp_path / "dl" / "meta_Toy.json.gz").read_bytes() == b"payload-meta_Toy.json.gz"
        assert run_cli("data", "download", "--category", "Nope", "--out", tmp_path / "dl2", "--base-url", url) == 2
        assert not (tmp_path / "dl2" / "reviews_Nope_5.json.gz").exists()
        # a file already there is kept unless --overwrite (the old --force is gone)
        (served / "meta_Toy.json.gz").write_bytes(b"new")
        assert run_cli("data", "download", "--category", "Toy", "--out", tmp_path / "dl", "--base-url", url) == 0
        assert (tmp_path / "dl" / "meta_Toy.json.gz").read_bytes() == b"payload-meta_Toy.json.gz"
        args = ("data", "download", "--category", "Toy", "--out", tmp_path / "dl", "--base-url", url, "--quiet")
        with pytest.raises(SystemExit):
            run_cli(*args, "--force")
        assert run_cli(*args, "--overwrite") == 0
        assert (tmp_path / "dl" / "meta_Toy.json.gz").read_bytes() == b"new"
        assert run_cli(*args[:3], "../x", *args[4:]) == 2  # a category is a name, never a path
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not BEAUTY.exists(), reason="shared Beauty data not present")
def test_beauty_table1(tmp_path):
    data = read_authors(BEAUTY)
    data.validate()
    assert (data.n_users, data.n_items, data.n_interactions) == (22332, 12086, 198215)


# ------------------------------------------------------------------ output safety
def _snapshot(root: Path) -> dict:
    """Every path under root with its bytes (folders as None): equal snapshots = nothing touched."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _toy_interactions(folder: Path) -> tuple[Path, Path]:
    """Five users with all five items, u5 with four (dropped by the default 5-core, kept by --min-user 4)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"u{u},i{(u + k) % 5},{k}" for u in range(5) for k in range(5)] + [f"u5,i{k},{k}" for k in range(4)]
    (folder / "x.csv").write_text("user,item,timestamp\n" + "\n".join(rows) + "\n")
    (folder / "items.csv").write_text("item,title,image\n" + "".join(f"i{i},Title {i},\n" for i in range(5)))
    return folder / "x.csv", folder / "items.csv"


def test_prepare_output_safety(tmp_path, monkeypatch, capsys):
    x, items = _toy_interactions(tmp_path / "in")
    args = ("data", "prepare", x, "--format", "interactions", "--items", items)
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("keep me")
    (tmp_path / "f.txt").write_text("a file")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("not mmesid's")
    monkeypatch.chdir(work)
    before = _snapshot(tmp_path)
    for out, needle in [(tmp_path / "in", "contains the input"), (".", "is the current directory"),
                        (tmp_path, "is the current directory or contains it"), (tmp_path / "f.txt", "is a file"),
                        (tmp_path / "foreign", "holds files not made by mmesid")]:
        assert run_cli(*args, "--out", out, "--overwrite") == 2, out
        assert needle in capsys.readouterr().err
        assert _snapshot(tmp_path) == before, f"--out {out} changed files"
    authors = write_authors(tmp_path / "authors", GOOD, TABLE)
    before = _snapshot(tmp_path)
    assert run_cli("data", "prepare", authors, "--out", authors / "prep") == 2
    assert "lies inside the input folder" in capsys.readouterr().err and _snapshot(tmp_path) == before
    out = tmp_path / "prep"
    assert run_cli(*args, "--out", out) == 0
    assert SequenceData.load(out).user_ids == ["u0", "u1", "u2", "u3", "u4"]
    prepared = _snapshot(out)
    assert run_cli(*args, "--out", out, "--min-user", "4") == 2
    assert "use --overwrite" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("user,item,timestamp\nu1,i1,yesterday\n")
    assert run_cli("data", "prepare", tmp_path / "bad.csv", "--format", "interactions", "--out", out,
                   "--overwrite") == 2
    assert _snapshot(out) == prepared, "a failed run damaged the earlier dataset"
    assert run_cli(*args, "--out", out, "--min-user", "4", "--overwrite") == 0
    assert SequenceData.load(out).user_ids == ["u0", "u1", "u2", "u3", "u4", "u5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["authors", "bad.csv", "f.txt", "foreign", "in", "prep",
                                                          "work"]


def test_synthetic_output_safety(tmp_path, capsys):
    out, img = tmp_path / "syn", tmp_path / "img"
    small = ("data", "synthetic", "--users", "30", "--items", "24", "--categories", "4")
    img.mkdir()
    (img / "holiday.jpg").write_bytes(b"photo")
    assert run_cli(*small, "--out", out, "--images", img, "--overwrite") == 2
    assert "holiday.jpg" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in img.iterdir()] == ["holiday.jpg"]
    (img / "holiday.jpg").unlink()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("x")
    assert run_cli(*small, "--out", tmp_path / "foreign", "--images", img, "--overwrite") == 2
    assert list(img.iterdir()) == [], "images written before --out was checked"
    assert run_cli(*small, "--out", out, "--images", out / "img") == 2
    assert "separate folders" in capsys.readouterr().err and not out.exists()
    assert run_cli(*small, "--out", out, "--images", img) == 0
    assert sorted(p.name for p in img.iterdir()) == [f"SYN{i:05d}.png" for i in range(24)]
    assert run_cli(*small[:5], "12", *small[6:], "--out", out, "--images", img) == 2
    assert "use --overwrite" in capsys.readouterr().err
    assert run_cli(*small[:5], "12", *small[6:], "--out", out, "--images", img, "--overwrite") == 0
    assert sorted(p.name for p in img.iterdir()) == [f"SYN{i:05d}.png" for i in range(12)]
    assert SequenceData.load(out).n_items == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "img", "syn"]


@pytest.mark.parametrize("flags", [["--users", "0"], ["--items", "0"], ["--items", "2"], ["--categories", "0"],
                                   ["--categories", "13"], ["--seed", "-1"], ["--users", "many"]])
def test_synthetic_invalid_sizes(tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as e:
        run_cli("data", "synthetic", "--out", tmp_path / "o", *flags)
    assert e.value.code == 2 and not (tmp_path / "o").exists()
    assert f"argument {flags[0]}" in capsys.readouterr().err


def test_synthetic_config_is_checked(tmp_path, capsys):
    assert run_cli("data", "synthetic", "--out", tmp_path / "o", "--items", "5", "--categories", "8") == 2
    assert "--categories: 8 categories need at least as many items (--items = 5)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="n_users: must be >= 1"):
        generate(SyntheticConfig(n_users=0))
    with pytest.raises(ConfigError, match="min_length: 6 is above max_length"):
        generate(SyntheticConfig(min_length=6, max_length=5))
    with pytest.raises(SystemExit):
        run_cli("data", "prepare", tmp_path, "--format", "interactions", "--min-item", "0", "--out", tmp_path / "o")


# ------------------------------------------------------------------ nothing dropped silently
DROP_ROWS = """user,item,timestamp
u1,i1,1
u1,i1,1
u1,i2,2
u1,i3,3
u1,i1,4
u2,i1,1
u2,i2,5
u2,i3,6
u2,i4,7
u3,i3,2
u3,i2,3
u3,i1,4
u4,i5,1
u4,i6,2
u4,i5,3
u5,i1,1
u5,i7,2
u5,i2,3
"""


def test_drop_report(tmp_path, capsys):
    """Worked by hand: one exact duplicate (u1,i1,1); i5 has no table row (2 rows), i6 no title (1
    row), so u4 keeps nothing; k-core (3, 2): i7 occurs once, then u5 has 2 < 3, then i4 occurs
    once: 1 user, 2 items, 4 interactions. Kept: u1 i1 i2 i3 i1, u2 i1 i2 i3, u3 i3 i2 i1."""
    (tmp_path / "x.csv").write_text(DROP_ROWS)
    (tmp_path / "items.csv").write_text("item,title\ni1,a\ni2,b\ni3,c\ni4,d\ni6,\ni7,g\n")
    out = tmp_path / "prep"
    assert run_cli("data", "prepare", tmp_path / "x.csv", "--format", "interactions", "--items",
                   tmp_path / "items.csv", "--min-user", "3", "--min-item", "2", "--out", out) == 0
    printed = capsys.readouterr().out
    data = SequenceData.load(out)
    assert [s.tolist() for s in data.sequences] == [[1, 2, 3, 1], [1, 2, 3], [3, 2, 1]]
    assert data.user_ids == ["u1", "u2", "u3"] and [it.raw_id for it in data.items] == ["i1", "i2", "i3"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["input"] == {"users": 5, "items": 7, "interactions": 18}
    assert stats["filters"] == {"min_user": 3, "min_item": 2, "require_title": True, "require_image": False}
    assert stats["dropped"] == {
        "duplicate_interactions": 1, "duplicate_item_records": 0,
        "items_not_in_item_table": {"items": 1, "interactions": 2},
        "items_without_title": {"items": 1, "interactions": 1},
        "items_without_image": {"items": 0, "interactions": 0},
        "users_without_kept_items": 1,
        "k_core": {"users": 1, "items": 2, "interactions": 4},
    }
    lines = ["1 duplicate interaction (same user, item and timestamp)",
             "1 item missing from the item table, with 2 interactions",
             "1 item without a title, with 1 interaction",
             "1 user left with no interactions by the above",
             "k-core (min_user=3, min_item=2): 1 user, 2 items, 4 interactions"]
    assert all(line in printed for line in lines)
    assert run_cli("data", "stats", out) == 0
    shown = capsys.readouterr().out
    assert all(line in shown for line in lines) and json.loads(shown[:shown.rindex("}") + 1])["dropped"] == stats["dropped"]


@pytest.mark.parametrize("which,text,needle", [
    ("items", "item,title,image\ni1,T1,,extra\n", "items.csv:2: expected 3 fields (as the header), got 4"),
    ("items", "item,title,image\ni1,T1,\ni2,T2\n", "items.csv:3: expected 3 fields (as the header), got 2"),
    ("x", "user,item,timestamp\nu1,i1,1\nu1,i2\n", "x.csv:3: expected 3 fields (as the header), got 2"),
    ("x", "user,item,timestamp\nu1,i1,1,9\n", "x.csv:2: expected 3 fields (as the header), got 4"),
])
def test_ragged_rows_are_errors(tmp_path, capsys, which, text, needle):
    (tmp_path / "x.csv").write_text("user,item,timestamp\n" + "".join(f"u{u},i{i},{i}\n" for u in range(5)
                                                                      for i in range(1, 6)))
    (tmp_path / "items.csv").write_text("item,title,image\n" + "".join(f"i{i},T{i},\n" for i in range(1, 6)))
    (tmp_path / f"{which}.csv").write_text(text)
    assert run_cli("data", "prepare", tmp_path / "x.csv", "--format", "interactions", "--items",
                   tmp_path / "items.csv", "--out", tmp_path / "o") == 2
    assert needle in capsys.readouterr().err


def test_authors_table_ragged_row(tmp_path, capsys):
    folder = write_authors(tmp_path / "in", GOOD, TABLE[:2] + ["A3,item 3,http://x/3.jpg,3,extra"] + TABLE[3:])
    assert run_cli("data", "prepare", folder, "--out", tmp_path / "o") == 2
    assert "Toy_text_img.csv:4: expected 4 fields (as the header), got 5" in capsys.readouterr().err
    with pytest.raises(InputFormatError) as e:
        read_authors(folder)
    assert (e.value.path.name, e.value.line) == ("Toy_text_img.csv", 4)


# ------------------------------------------------------------------ one message, never a traceback
def _interactions_case(body: bytes, items: bytes | None = None):
    def make(tmp: Path):
        (tmp / "x.csv").write_bytes(body)
        argv = ["data", "prepare", tmp / "x.csv", "--format", "interactions"]
        if items is not None:
            (tmp / "items.csv").write_bytes(items)
            argv += ["--items", tmp / "items.csv"]
        return argv
    return make


def _authors_case(seq: bytes, table: bytes | None = None):
    def make(tmp: Path):
        (tmp / "in").mkdir()
        (tmp / "in" / "Toy_new.txt").write_bytes(seq)
        if table is not None:
            (tmp / "in" / "Toy_text_img.csv").write_bytes(table)
        return ["data", "prepare", tmp / "in"]
    return make


GZ_REVIEWS = gzip.compress("".join(json.dumps({"reviewerID": f"U{u}", "asin": f"B{i}", "unixReviewTime": i}) + "\n"
                                   for u in range(5) for i in range(5)).encode())
GZ_META = gzip.compress("".join(repr({"asin": f"B{i}", "title": f"t{i}"}) + "\n" for i in range(5)).encode())


def _amazon_case(reviews: bytes = GZ_REVIEWS, meta: bytes = GZ_META):
    """The two files exactly as given (gzip-compressed unless a case says otherwise)."""
    def make(tmp: Path):
        (tmp / "raw").mkdir()
        (tmp / "raw" / "reviews_Toy_5.json.gz").write_bytes(reviews)
        (tmp / "raw" / "meta_Toy.json.gz").write_bytes(meta)
        return ["data", "prepare", tmp / "raw", "--format", "amazon", "--name", "Toy"]
    return make


def _review(time='1', user='"U"'):
    return gzip.compress(f'{{"reviewerID": {user}, "asin": "B", "unixReviewTime": {time}}}\n'.encode())


CSV_OK = b"user,item,timestamp\n" + b"".join(b"u%d,i%d,%d\n" % (u, i, i) for u in range(5) for i in range(5))

BAD_INPUTS = {
    "authors non-utf8": (_authors_case(b"1 1 2 3\n2 1 \xff 3\n"), "Toy_new.txt:2: not UTF-8 text (byte 0xff"),
    "authors table non-utf8": (_authors_case(b"1 1 2 3\n", b"asin,title,imUrl,id\nA,t,u,1\nB,\xe9t\xe9,u,2\n"),
                               "Toy_text_img.csv:3: not UTF-8 text (byte 0xe9"),
    "interactions non-utf8": (_interactions_case(CSV_OK + b"u9,\xc3(,1\n"), "x.csv:27: not UTF-8 text (byte 0xc3"),
    "items non-utf8": (_interactions_case(CSV_OK, b"item,title\ni1,ok\ni2,\x80\n"), "items.csv:3: not UTF-8 text"),
    "amazon non-utf8": (_amazon_case(reviews=_review() + gzip.compress(b"\xfe\n")),  # two gzip members
                        "reviews_Toy_5.json.gz:2: not UTF-8 text"),
    "timestamp inf": (_interactions_case(CSV_OK + b"u1,i1,inf\n"), "x.csv:27: timestamp 'inf' is not a finite number"),
    "timestamp nan": (_interactions_case(CSV_OK + b"u1,i1,NaN\n"), "x.csv:27: timestamp 'NaN' is not a finite number"),
    "timestamp 1e400": (_interactions_case(CSV_OK + b"u1,i1,1e400\n"),
                        "x.csv:27: timestamp '1e400' is not a finite number"),
    "timestamp int64": (_interactions_case(CSV_OK + b"u1,i1,9223372036854775808\n"),
                        "x.csv:27: timestamp '9223372036854775808' is outside the 64-bit integer range"),
    "timestamp 1e19": (_interactions_case(CSV_OK + b"u1,i1,1e19\n"), "x.csv:27: timestamp '1e19' is outside"),
    "amazon time 1e400": (_amazon_case(reviews=_review("1e400")),
                          "reviews_Toy_5.json.gz:1: timestamp inf is not a finite number"),
    "amazon time huge": (_amazon_case(reviews=_review("1e30")),
                         "reviews_Toy_5.json.gz:1: timestamp 1e+30 is outside the 64-bit integer range"),
    "amazon time bool": (_amazon_case(reviews=_review("true")),
                         "reviews_Toy_5.json.gz:1: unixReviewTime must be a number, got bool"),
    "amazon id list": (_amazon_case(reviews=_review(user="[1]")),
                       "reviews_Toy_5.json.gz:1: reviewerID must be a string, got list"),
    "amazon lone surrogate": (_amazon_case(reviews=_review(user='"\\ud800"')),
                              "reviews_Toy_5.json.gz:1: reviewerID contains an invalid character"),
    "field over limit": (_interactions_case(CSV_OK, b"item,title\ni1," + b"x" * 200_000 + b"\n"),
                         "items.csv:2: malformed CSV (field larger than field limit (131072))"),
    "stray quote": (_interactions_case(CSV_OK + b'u1,"i1"x,5\n'), "x.csv:27: malformed CSV"),
    "authors user int64": (_authors_case(b"9223372036854775808 1 2 3\n"),
                           "Toy_new.txt:1: user id '9223372036854775808' is outside the 64-bit integer range"),
    "authors item huge": (_authors_case(b"1 1 2 100000000000000000000000\n"),
                          "Toy_new.txt:1: item id '100000000000000000000000' is outside the 64-bit integer range"),
    "authors item gap": (_authors_case(b"1 1 2 5000000000\n"),
                         "Toy_new.txt: item ids must be 1..5000000000 without gaps; item 3 occurs in no sequence"),
    "authors unicode digit": (_authors_case("1 1 2 \u0663\n".encode()), "Toy_new.txt:1: item id '\u0663' is not"),
    "gz not gzip": (_amazon_case(reviews=b"plain text\n"), "reviews_Toy_5.json.gz: not a valid gzip file"),
    "gz truncated": (_amazon_case(reviews=GZ_REVIEWS[:-30]),
                     "reviews_Toy_5.json.gz:16: truncated gzip file"),
    "empty interactions": (_interactions_case(b""), "x.csv: empty file"),
    "empty authors": (_authors_case(b""), "Toy_new.txt: empty file"),
    "empty meta gz": (_amazon_case(meta=gzip.compress(b"")), "meta_Toy.json.gz: empty file"),
    "empty file .gz": (_amazon_case(meta=b""), "meta_Toy.json.gz: empty file"),
    "header only": (_interactions_case(b"user,item,timestamp\n"), "x.csv: no interactions (only a header)"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_message(tmp_path, capsys, case):
    make, needle = BAD_INPUTS[case]
    argv = make(tmp_path)
    before = _snapshot(tmp_path)
    assert run_cli(*argv, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert needle in err
    assert err.count("\n") == 1 and err.startswith("mmesid: error: ") and "Traceback" not in err
    assert _snapshot(tmp_path) == before


def test_folder_and_file_mixups(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "x.csv").write_bytes(CSV_OK)
    cases = [
        (["data", "prepare", tmp_path / "d", "--format", "interactions"], "d: is a folder, expected a file"),
        (["data", "prepare", tmp_path / "x.csv", "--format", "interactions", "--items", tmp_path / "d"],
         "d: is a folder, expected a file"),
        (["data", "prepare", tmp_path / "x.csv"], "x.csv: is a file, expected a folder with <Name>_new.txt"),
        (["data", "prepare", tmp_path / "x.csv", "--format", "amazon"], "x.csv: is a file, expected a folder"),
        (["data", "prepare", "--format", "amazon", "--reviews", tmp_path / "d", "--meta", tmp_path / "x.csv"],
         "d: is a folder, expected a file"),
        (["data", "stats", tmp_path / "x.csv"], "x.csv: is a file, expected a prepared dataset folder"),
        (["data", "prepare", tmp_path / "x.csv", "--format", "interactions", "--name", "Toy"],
         "--name does not apply to --format interactions"),
    ]
    for argv, needle in cases:
        assert run_cli(*argv, *(["--out", tmp_path / "o"] if argv[1] == "prepare" else [])) == 2
        assert needle in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "x.csv"]


def _damage(kind: str, path: Path) -> None:
    z = dict(np.load(path / "sequences.npz"))
    if kind.startswith("missing "):
        (path / kind.split()[1]).unlink()
    elif kind == "garbage npz":
        (path / "sequences.npz").write_bytes(b"PK\x03\x04 not really a zip")
    elif kind == "npy not npz":
        with open(path / "sequences.npz", "wb") as f:
            np.save(f, z["items"])
    elif kind == "pickled npz":
        with open(path / "sequences.npz", "wb") as f:
            np.savez(f, items=np.array([{"a": 1}], dtype=object), offsets=z["offsets"])
    elif kind in ("offsets not monotone", "offsets not matching", "item out of range"):
        if kind == "offsets not monotone":
            z["offsets"][1], z["offsets"][2] = z["offsets"][2], z["offsets"][1]
        elif kind == "offsets not matching":
            z["offsets"][-1] -= 1
        else:
            z["items"][3] = 6
        with open(path / "sequences.npz", "wb") as f:
            np.savez(f, **z)
    elif kind == "items id":
        text = (path / "items.csv").read_text()
        (path / "items.csv").write_text(text.replace("\n1,A1,", "\nx,A1,"))
    elif kind == "items header":
        text = (path / "items.csv").read_text()
        (path / "items.csv").write_text(text.replace("id,raw_id,title,image", "id,raw,title,image"))
    elif kind == "users count":
        (path / "users.tsv").write_text("0\t1\n1\t2\n")
    elif kind == "meta json":
        (path / "meta.json").write_bytes(b"{\xff")


DAMAGE = {
    "missing sequences.npz": "sequences.npz: missing", "missing users.tsv": "users.tsv: missing",
    "missing items.csv": "items.csv: missing", "missing meta.json": "meta.json: missing",
    "garbage npz": "sequences.npz: unreadable", "npy not npz": "sequences.npz: not an .npz archive",
    "pickled npz": "sequences.npz: unreadable", "offsets not monotone": "sequences.npz: offsets are not non-decreasing",
    "offsets not matching": "sequences.npz: offsets must run from 0 to 12",
    "item out of range": "sequences.npz: item id 6 out of range 1..5",
    "items id": "items.csv:2: expected id 1, got 'x'", "items header": "items.csv:1: header must be id,raw_id,title,image",
    "users count": "users.tsv: 2 users, but sequences.npz holds 3", "meta json": "meta.json: not valid JSON",
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_prepared_folder(tmp_path, capsys, kind):
    out = read_authors(write_authors(tmp_path / "in", GOOD, TABLE)).save(tmp_path / "prep")
    _damage(kind, out)
    with pytest.raises(MmesidError, match=re.escape(DAMAGE[kind])):
        SequenceData.load(out)
    assert run_cli("data", "stats", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and DAMAGE[kind] in err


def test_cli_data_does_not_import_torch():
    code = "import sys, mmesid.cli.data; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
