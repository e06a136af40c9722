"""Property-based fuzzing of every input reader through the real CLI, and of the config layer.

For any generated input, `mmesid data prepare` either writes a valid prepared dataset (exit 0) or
prints exactly one `mmesid: error:` line (exit 2); any other exception fails the test, and the input
files are never changed. Where the input is well-formed, the result is compared with a direct
computation (dedup, side-information filter, k-core by peeling, chronological order).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import importlib
import io
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mmesid.cli import main
from mmesid.config import load_config
from mmesid.data.dataset import SequenceData
from mmesid.errors import ConfigError

# MMESID_FUZZ_EXAMPLES=2000 for a longer hunt; the default keeps the module under a minute
EXAMPLES = int(os.environ.get("MMESID_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


def run_prepare(folder: Path, argv: list, inputs: list[Path]) -> SequenceData | None:
    """Run `data prepare` in-process; the dataset on exit 0, None on exit 2 (after the checks)."""
    out = folder / "prepared"
    before = {p: p.read_bytes() for p in inputs}
    entries = sorted(p.name for p in folder.iterdir())
    so, se = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        rc = main([str(a) for a in argv] + ["--out", str(out)])
    assert {p: p.read_bytes() for p in inputs} == before, "an input file was changed"
    err = se.getvalue()
    assert "Traceback" not in err
    if rc == 0:
        data = SequenceData.load(out)
        data.validate()
        _check_accounting(json.loads((out / "stats.json").read_text()), data)
        event("prepared")
        return data
    event("error: " + re.sub(r"^mmesid: error: (/\S+: ?)?(\d+: )?", "", err)[:28])
    assert rc == 2, (rc, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmesid: error: "), err
    assert sorted(p.name for p in folder.iterdir()) == entries, "output left behind"
    return None


def _check_accounting(stats: dict, data: SequenceData) -> None:
    """What came in = what was kept + what the report says was dropped."""
    assert (stats["users"], stats["items"], stats["interactions"]) == (data.n_users, data.n_items,
                                                                        data.n_interactions)
    d, inp = stats["dropped"], stats["input"]
    side = [d[k] for k in ("items_not_in_item_table", "items_without_title", "items_without_image")]
    assert inp["interactions"] == (stats["interactions"] + d["duplicate_interactions"] + d["k_core"]["interactions"]
                                   + sum(x["interactions"] for x in side))
    assert inp["items"] == stats["items"] + d["k_core"]["items"] + sum(x["items"] for x in side)
    assert inp["users"] == stats["users"] + d["users_without_kept_items"] + d["k_core"]["users"]


@st.composite
def mutate(draw, data: bytes, always: bool = False) -> tuple[bytes, bool]:
    """Mostly the bytes as they are; else (always, if asked) one insertion of random bytes, a
    truncation or a flipped byte. Returns (bytes, whether they were changed)."""
    kind = draw(st.sampled_from(["keep"] * 8 * (not always) + ["insert", "truncate", "flip"]))
    if kind == "keep" or not data:
        return data, False
    at = draw(st.integers(0, len(data) - 1))
    if kind == "insert":
        junk = draw(st.one_of(st.binary(min_size=1, max_size=4),
                              st.sampled_from([b"\xff", b"\xc3(", b"\x00", b"\r", b'"', b",", b"\t", b"\n\n"])))
        return data[:at] + junk + data[at:], True
    if kind == "truncate":
        return data[:at], True
    return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:], True


# ------------------------------------------------------------------ interactions CSV + item table
@st.composite
def noisy(draw, good_list, bad) -> list:
    """A list of good elements; in a third of the cases one bad element at a random place."""
    items = list(draw(good_list))
    if draw(st.integers(0, 2)) == 0:
        items.insert(draw(st.integers(0, len(items))), draw(bad))
    return items


USERS = ["u1", "u2", "u3", "u4", " u1", "u\u00e91", "u,5", 'u"6']
ITEMS = ["i1", "i2", "i3", "i4", "i5", "\u00ef6", "i,7"]
GOOD_ROW = st.tuples(st.sampled_from(USERS), st.sampled_from(ITEMS),
                     st.integers(0, 20).map(str) | st.floats(-50, 50, allow_nan=False).map(repr))
BAD_ROW = st.tuples(st.sampled_from(USERS + ["", "u\n8", "u\t9"]), st.sampled_from(ITEMS + ["", " "]),
                    st.sampled_from(["inf", "-inf", "nan", "1e400", "9223372036854775808", "1e19", "x", "",
                                     " 4 ", "1_0", "+3", "0x10", "\u0663", "-9223372036854775808"]))
TITLES = st.sampled_from(["a title"] * 4 + ["", " ", "\u00e9\n\u2028", '"quoted", comma'])
GOOD_TABLE = st.lists(st.tuples(st.sampled_from(ITEMS), TITLES, st.sampled_from(["", "img.png", "img.png"])),
                      max_size=5, unique_by=lambda r: r[0].strip())
BAD_TABLE_ROW = st.tuples(st.sampled_from(["zz", "", "i1", " i2 "]), TITLES, st.just(""))
HEADERS = st.sampled_from([["user", "item", "timestamp"]] * 4 + [["Timestamp", "USER", "item"], ["user", "item"],
                          ["user", "item", "timestamp", "user"], ["user", " item ", "timestamp", "extra"]])


def _csv(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode("utf-8")


def _oracle_interactions(rows, table, min_user, min_item, require_title, require_image):
    """The expected users and raw-id sequences, computed directly; None where an error is due."""
    parsed = []
    for order, (u, i, t) in enumerate(rows):
        u, i = u.strip(), i.strip()
        if not u or not i or "\n" in u + i or not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", t.strip()):
            return None
        ts = int(t) if re.fullmatch(r"\s*[+-]?[0-9]+\s*", t) else float(t)
        if ts != ts or not -2**63 <= ts <= 2**63 - 1:
            return None
        parsed.append((u, i, ts, order))
    if not parsed:
        return None
    seen, users = set(), {}
    for u, i, ts, order in parsed:
        if (u, i, ts) not in seen:
            seen.add((u, i, ts))
            users.setdefault(u, []).append((ts, order, i))
    if table is not None:
        names = [r[0].strip() for r in table]
        if len(set(names)) != len(names) or not set(names) <= {i for _, i, _, _ in parsed} or "" in names:
            return None
        info = {r[0].strip(): r for r in table}
        ok = {i for i, r in info.items() if (not require_title or r[1].strip()) and (not require_image or r[2].strip())}
        users = {u: [x for x in v if x[2] in ok] for u, v in users.items()}
    users = {u: v for u, v in users.items() if v}
    while True:  # k-core by peeling one user or item at a time
        counts: dict[str, int] = {}
        for v in users.values():
            for x in v:
                counts[x[2]] = counts.get(x[2], 0) + 1
        rare = next((i for i, c in counts.items() if c < min_item), None)
        if rare is not None:
            users = {u: [x for x in v if x[2] != rare] for u, v in users.items()}
            continue
        short = next((u for u, v in users.items() if len(v) < min_user), None)
        if short is None:
            break
        del users[short]
    if not users or any(len(v) < 3 for v in users.values()):
        return None
    return {u: [x[2] for x in sorted(v)] for u, v in users.items()}


@FUZZ
@given(rows=noisy(st.lists(GOOD_ROW, min_size=12, max_size=40), BAD_ROW),
       table=st.none() | noisy(GOOD_TABLE, BAD_TABLE_ROW),
       min_user=st.sampled_from([3, 3, 2, 1]), min_item=st.integers(1, 3), no_title=st.booleans(),
       need_image=st.booleans(), header=HEADERS, data=st.data())
def test_fuzz_interactions(rows, table, min_user, min_item, no_title, need_image, header, data):
    cols = [c.strip().lower() for c in header]
    body = [header] + [[{"user": u, "item": i, "timestamp": t}.get(c, "") for c in cols] for u, i, t in rows]
    raw, broken = data.draw(mutate(_csv(body)))
    table_raw = None if table is None else _csv([["item", "title", "image"]] + [list(r) for r in table])
    if table_raw is not None:
        table_raw, broken_table = data.draw(mutate(table_raw))
        broken = broken or broken_table
    need_image = need_image and table is not None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "x.csv").write_bytes(raw)
        argv = ["data", "prepare", tmp / "x.csv", "--format", "interactions",
                "--min-user", min_user, "--min-item", min_item]
        inputs = [tmp / "x.csv"]
        if table_raw is not None:
            (tmp / "items.csv").write_bytes(table_raw)
            argv += ["--items", tmp / "items.csv"]
            inputs.append(tmp / "items.csv")
        argv += ["--no-require-title"] * no_title + ["--require-image"] * need_image
        result = run_prepare(tmp, argv, inputs)
    if broken or sorted(cols) != ["item", "timestamp", "user"]:
        return
    expected = _oracle_interactions(rows, table, min_user, min_item, table is not None and not no_title, need_image)
    event(f"oracle: {'dataset' if expected else 'error'}")
    if expected is None:
        assert result is None
    else:
        assert result is not None
        got = {u: [result.items[i - 1].raw_id for i in s] for u, s in zip(result.user_ids, result.sequences)}
        assert got == expected and result.user_ids == list(expected)


# ------------------------------------------------------------------ the authors' format
BAD_TOKENS = st.sampled_from(["0", "-1", "x", "1.5", "99999999999999999999", "\u0663", "+2", "007", "1e3"])


@st.composite
def author_lines(draw) -> list[list[str]]:
    """Users 1..n with items numbered densely from 1; in some cases one flaw: a bad token, a repeated
    user, a gap in the item ids, or a sequence too short for leave-one-out."""
    seqs = draw(st.lists(st.lists(st.integers(1, 9), min_size=3, max_size=7), min_size=1, max_size=8))
    rank = {v: r for r, v in enumerate(sorted({i for s in seqs for i in s}), start=1)}
    lines = [[str(u)] + [str(rank[i]) for i in s] for u, s in enumerate(seqs, start=1)]
    kind = draw(st.sampled_from(["keep"] * 4 + ["token", "user", "gap", "short"]))
    row = draw(st.integers(0, len(lines) - 1))
    if kind == "token":
        lines[row][draw(st.integers(0, len(lines[row]) - 1))] = draw(BAD_TOKENS)
    elif kind == "user" and len(lines) > 1:
        lines[-1][0] = lines[0][0]
    elif kind == "gap":
        lines[row][-1] = str(len(rank) + 2)
    elif kind == "short":
        lines[row] = lines[row][:draw(st.integers(1, 3))]
    return lines


def _oracle_authors(lines: list[list[str]]):
    seqs, seen = [], set()
    for toks in lines:
        if len(toks) < 2 or toks[0] in seen:
            return None
        seen.add(toks[0])
        if not all(re.fullmatch(r"[+-]?[0-9]+", t) and abs(int(t)) < 2**63 for t in toks):
            return None
        seqs.append([int(t) for t in toks[1:]])
    used = {i for s in seqs for i in s}
    if not seqs or min(used) < 1 or used != set(range(1, max(used) + 1)) or any(len(s) < 3 for s in seqs):
        return None
    return seqs


@FUZZ
@given(lines=author_lines(), sep=st.sampled_from([" ", "\t", "  ", " \r"]), table=st.booleans(), data=st.data())
def test_fuzz_authors(lines, sep, table, data):
    raw, broken = data.draw(mutate("".join(sep.join(t) + "\n" for t in lines).encode()))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        (tmp / "in" / "Toy_new.txt").write_bytes(raw)
        inputs = [tmp / "in" / "Toy_new.txt"]
        if table:
            rows = [["asin", "title", "imUrl", "id"]] + [[f"A{i}", f"t{i}", "", str(i)] for i in range(1, 5)]
            table_raw, broken_table = data.draw(mutate(_csv(rows)))
            broken = broken or broken_table
            (tmp / "in" / "Toy_text_img.csv").write_bytes(table_raw)
            inputs.append(tmp / "in" / "Toy_text_img.csv")
        before = sorted(p.name for p in (tmp / "in").iterdir())
        so, se = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
            rc = main(["data", "prepare", str(tmp / "in"), "--out", str(tmp / "prepared")])
        assert all(p.read_bytes() == b for p, b in zip(inputs, [raw] + ([table_raw] if table else [])))
        assert sorted(p.name for p in (tmp / "in").iterdir()) == before
        err = se.getvalue().splitlines()
        assert rc in (0, 2) and (rc == 0 or (len(err) == 1 and err[0].startswith("mmesid: error: "))), err
        result = SequenceData.load(tmp / "prepared") if rc == 0 else None
        event("prepared" if rc == 0 else "error: " + re.sub(r"^mmesid: error: (/\S+: ?)?(\d+: )?", "", err[0])[:28])
    if broken:
        return
    expected = _oracle_authors(lines)
    if table and expected is not None and max(i for s in expected for i in s) < 4:
        expected = None  # the table names items 1..4: an id beyond the sequences is an error
    event(f"oracle: {'dataset' if expected else 'error'}")
    assert (result is None) == (expected is None)
    if result is not None:
        assert [s.tolist() for s in result.sequences] == expected


# ------------------------------------------------------------------ raw Amazon json(.gz)
ANY_JSON = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                     st.sampled_from(["U1", "U2", "B1", "B2", "", "\ud800", "a\tb", "12", "1e400", "nan"]),
                     st.lists(st.integers(), max_size=2))
GOOD_REVIEW = st.fixed_dictionaries({"reviewerID": st.sampled_from(["U1", "U2", "U3", "U4"]),
                                     "asin": st.sampled_from(["B1", "B2", "B3", "B4"]),
                                     "unixReviewTime": st.integers(0, 30)})
BAD_REVIEW = st.one_of(
    st.fixed_dictionaries({}, optional={"reviewerID": ANY_JSON, "asin": ANY_JSON, "unixReviewTime": ANY_JSON}),
    st.sampled_from(["{bad\n", "\n", "[1, 2]\n", "[" * 300 + "\n", '{"reviewerID": "\\ud800"}\n']))
GOOD_META = st.permutations([f"B{i}" for i in range(1, 5)]).flatmap(lambda asins: st.tuples(*[
    st.fixed_dictionaries({"asin": st.just(a), "title": st.sampled_from(["a title"] * 3 + [""]) | st.text(max_size=8)},
                          optional={"imUrl": st.text(max_size=4)}) for a in asins]).map(list))
BAD_META = st.one_of(
    st.fixed_dictionaries({"asin": ANY_JSON}, optional={"title": ANY_JSON, "imUrl": ANY_JSON,
                                                        "imageURLHighRes": st.lists(ANY_JSON, max_size=2)}),
    st.sampled_from(["{'asin': 'B1', 'title': \"x\"\n", "garbage\n", "{1: 2}\n", "{[1]: 2}\n", "(" * 300 + "\n",
                     "{'asin': 'B1', 'title': '\\ud800'}\n", "\x00\n"]))


def _line(record, style: str) -> str:
    if isinstance(record, str):
        return record
    return (repr(record) if style == "repr" else json.dumps(record)) + "\n"


@FUZZ
@given(reviews=noisy(st.lists(GOOD_REVIEW, min_size=12, max_size=30), BAD_REVIEW),
       meta=noisy(GOOD_META, BAD_META),
       style=st.sampled_from(["repr", "json"]), compress=st.sampled_from(["gzip", "gzip", "gzip", "plain"]),
       min_user=st.sampled_from([3, 3, 2, 1]), data=st.data())
def test_fuzz_amazon(reviews, meta, style, compress, min_user, data):
    files = {}
    for name, records, st_ in (("reviews_Toy_5.json.gz", reviews, "json"), ("meta_Toy.json.gz", meta, style)):
        text = "".join(_line(r, st_) for r in records).encode("utf-8", "surrogatepass")
        body = gzip.compress(text) if compress == "gzip" else text
        files[name], _ = data.draw(mutate(body))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "raw").mkdir()
        for name, body in files.items():
            (tmp / "raw" / name).write_bytes(body)
        run_prepare(tmp, ["data", "prepare", "--format", "amazon", "--reviews", tmp / "raw" / "reviews_Toy_5.json.gz",
                          "--meta", tmp / "raw" / "meta_Toy.json.gz", "--min-user", min_user, "--min-item", "1"],
                    [tmp / "raw" / n for n in files])


# ------------------------------------------------------------------ a damaged prepared folder
@pytest.fixture(scope="module")
def prepared_files(tmp_path_factory) -> dict[str, bytes]:
    from mmesid.data.synthetic import SyntheticConfig, generate

    out = generate(SyntheticConfig(n_users=12, n_items=10, n_categories=2, max_length=6)).save(
        tmp_path_factory.mktemp("fuzz") / "prep")
    return {p.name: p.read_bytes() for p in out.iterdir()}


@FUZZ
@given(name=st.sampled_from(["sequences.npz", "sequences.npz", "users.tsv", "items.csv", "meta.json"]),
       data=st.data())
def test_fuzz_prepared_folder(prepared_files, name, data):
    """`data stats` on a prepared folder with one damaged file: its statistics, or one error line."""
    body, _ = data.draw(mutate(prepared_files[name], always=True) | st.just((b"", True)))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "prep"
        folder.mkdir()
        for n, b in prepared_files.items():
            (folder / n).write_bytes(body if n == name else b)
        so, se = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
            rc = main(["data", "stats", str(folder)])
    err = se.getvalue().splitlines()
    event("ok" if rc == 0 else "error: " + re.sub(r"^mmesid: error: \S+: ", "", err[0])[:24])
    assert rc == 0 or (rc == 2 and len(err) == 1 and err[0].startswith("mmesid: error: ")), err


# ------------------------------------------------------------------ the config layer
CONFIG_CLASSES = [("mmesid.models.sasrec_train", "SASRecTrainConfig"), ("mmesid.quantize.train", "QuantizeConfig"),
                  ("mmesid.rec.config", "FinetuneConfig"), ("mmesid.data.synthetic", "SyntheticConfig"),
                  ("mmesid.data.readers", "FilterOptions")]


def _keys(cls, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out.append(prefix + f.name)
        if dataclasses.is_dataclass(default):
            out += _keys(type(default), f"{prefix}{f.name}.")
    return out


def _toml_float(x: float) -> str:
    return "nan" if x != x else ("inf" if x == float("inf") else "-inf" if x == float("-inf") else repr(x))


SCALAR = st.one_of(
    st.integers(-2**70, 2**70).map(str), st.floats().map(_toml_float), st.booleans().map(lambda b: "true" if b else "false"),
    st.sampled_from(["nan", "-inf", "1e400", "-1e400", "1e-400", "0", "-1", "1_000", "0x10", "true",
                     '""', '"auto"', '"nDCG@10"', '"HR@x"', '"cpu"', "'c'", "1979-05-27", "07:32:00"]),
    st.text(max_size=8).map(json.dumps))
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3).map(lambda v: "[" + ", ".join(v) + "]"),
    st.dictionaries(st.sampled_from(["a", "r", "lr", "hidden", "x y"]).map(json.dumps), inner, max_size=2)
    .map(lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}")), max_leaves=6)


PLAUSIBLE = st.one_of(st.integers(-2, 3000).map(str), st.floats(0, 2).map(repr),
                      st.sampled_from(["true", "false", '"auto"', '"cpu"', '"nDCG@10"', '"HR@5"', '"recon"',
                                       '"sinkhorn"', '"mme-sid"', '"ce"', '["c", "t"]', "[64, 10, 64]", "[]", "[0]"]))


@pytest.mark.parametrize("module,name", CONFIG_CLASSES)
@settings(max_examples=int(EXAMPLES * 1.5), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), section=st.sampled_from([False, False, False, True]))
def test_fuzz_config(module, name, data, section):
    """Random keys and values as `--set` overrides and as a TOML file: a valid config or ConfigError."""
    cls = getattr(importlib.import_module(module), name)
    keys = _keys(cls)
    key = st.one_of(*[st.sampled_from(keys)] * 8, st.sampled_from(keys).map(lambda k: k + ".x"),
                    st.text("abz._ ", max_size=6))
    value = st.one_of(PLAUSIBLE, PLAUSIBLE, VALUE)
    raw = st.one_of(value, value, st.text(max_size=6))  # a value that is not TOML is read as a string
    overrides = data.draw(st.lists(st.tuples(key, raw).map("=".join), max_size=2), label="overrides")
    toml = data.draw(st.none() | st.none() | st.lists(st.tuples(key, value), max_size=2), label="toml")
    with tempfile.TemporaryDirectory() as tmp:
        path = None
        if toml is not None:
            path = Path(tmp) / "c.toml"
            head = "[model]\n" if section and toml else ""
            path.write_text(head + "".join(f"{k} = {v}\n" for k, v in toml), encoding="utf-8")
        try:
            cfg = load_config(cls, path, overrides)
        except ConfigError as e:
            event(f"ConfigError {str(e).replace(str(path), 'FILE')[:24]}")
            return
        event("valid config")
        assert isinstance(cfg, cls)
