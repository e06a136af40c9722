import gzip
import json
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
from mmesid.errors import InputFormatError, MmesidError


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


def test_raw_amazon_reader(tmp_path):
    folder = _raw_fixture(tmp_path / "raw")
    data = read_amazon(folder / "reviews_Toy_5.json.gz", folder / "meta_Toy.json.gz", FilterOptions())
    assert data.n_items == 11 and "lonely" not in data.user_ids
    assert all(it.title.startswith("Product") for it in data.items)
    assert all(len(s) >= 5 for s in data.sequences)
    assert data.n_interactions == sum(len(s) for s in data.sequences)
    # chronological: the timestamps were written shuffled; order must follow unixReviewTime
    out = tmp_path / "prep"
    assert run_cli("data", "prepare", folder, "--format", "amazon", "--name", "Toy", "--out", out) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["items"] == 11 and stats["users"] == 40


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
    assert top_share > 0.4


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
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not BEAUTY.exists(), reason="shared Beauty data not present")
def test_beauty_table1(tmp_path):
    data = read_authors(BEAUTY)
    data.validate()
    assert (data.n_users, data.n_items, data.n_interactions) == (22332, 12086, 198215)
