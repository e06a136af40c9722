"""Using a trained run: `Recommender`, `mmesid recommend` and the HTTP service through a real client."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from conftest import run_cli
from guarantee_common import finetune, trained_stack

from mmesid.data.split import pad_left
from mmesid.errors import MmesidError
from mmesid.serve import Recommender


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = trained_stack(tmp_path_factory.mktemp("serve"))
    env["ft"] = env["root"] / "ft"
    assert finetune(env["dir"], {"c": env["ec"]}, env["sids"], env["ft"], env["llama"]) == 0
    return env


@pytest.fixture(scope="module")
def sasrec(stack):
    return Recommender.load(stack["sasrec"])  # the dataset comes from the run's run.json


def raw(rec, numbers):
    return [rec.data.items[n - 1].raw_id for n in numbers]


@pytest.mark.parametrize("which", ["sasrec", "ft"])
def test_recommend_is_the_scorers_top_k(stack, which):
    rec = Recommender.load(stack[which], stack["dir"])
    seqs = rec.data.sequences[:6]
    with torch.no_grad():
        s = rec.scorer.scores(pad_left(seqs, rec.max_len)).float()
    s[:, 0] = float("-inf")
    for i, h in enumerate(seqs):
        s[i, torch.as_tensor(h)] = float("-inf")
    out = rec.recommend([raw(rec, h) for h in seqs], k=5)
    for i, r in enumerate(out):
        assert r.items == raw(rec, torch.topk(s[i], 5).indices.tolist())
        assert r.scores == sorted(r.scores, reverse=True) and len(set(r.items)) == 5
        assert not set(r.items) & set(raw(rec, seqs[i])) and r.fallback is None
        assert r.titles == [rec.data.items[rec.index[x] - 1].title for x in r.items]
    assert [r.items for r in rec.recommend_users(rec.data.user_ids[:6], k=5)] == [r.items for r in out]


def test_window_unknown_ids_and_empty_history(sasrec):
    rec = sasrec
    long = raw(rec, list(range(1, rec.n_items + 1)) * 3)  # longer than the window
    cut = long[-rec.max_len:]
    a = rec.recommend([long], k=4, exclude_history=False)[0]
    assert a.items == rec.recommend([cut], k=4, exclude_history=False)[0].items
    with pytest.raises(MmesidError, match="unknown item id.*'nope'"):
        rec.recommend([["nope", long[0]]], k=3)
    r = rec.recommend([["nope", long[0]]], k=3, unknown="drop")[0]
    assert r.dropped == ["nope"] and r.items == rec.recommend([[long[0]]], k=3)[0].items
    empty = rec.recommend([[]], k=3)[0]
    freq = rec.data.item_frequency()
    assert empty.fallback == "popularity"
    assert [freq[rec.index[x]] for x in empty.items] == sorted(freq[1:], reverse=True)[:3]
    only_unknown = rec.recommend([["nope"]], k=3, unknown="drop")[0]
    assert only_unknown.fallback == "popularity" and only_unknown.items == empty.items
    with pytest.raises(MmesidError, match="k must be between 1 and 30"):
        rec.recommend([cut], k=31)
    everything = rec.recommend([raw(rec, range(1, 29))], k=5)[0]  # 2 items left once the history is excluded
    assert len(everything.items) == 2


def test_cli_recommend_paths(stack, sasrec, tmp_path, capsys):
    rec = sasrec
    h = raw(rec, rec.data.sequences[0])
    assert run_cli("recommend", "--run", stack["sasrec"], "--history", ",".join(h), "--k", "3") == 0
    printed = capsys.readouterr().out
    assert all(x in printed for x in rec.recommend([h], k=3)[0].items)
    assert run_cli("recommend", "--run", stack["sasrec"], "--user", rec.data.user_ids[0], "--k", "3") == 0
    assert run_cli("recommend", "--run", stack["sasrec"], "--history", "zzz", "--k", "3") == 2
    assert "unknown item id(s) 'zzz'" in capsys.readouterr().err
    inp = tmp_path / "h.jsonl"
    inp.write_text(json.dumps({"id": "a", "history": h}) + "\n" + json.dumps({"history": ["zzz"]}) + "\n")
    out = tmp_path / "recs.jsonl"
    assert run_cli("recommend", "--run", stack["sasrec"], "--input", inp, "--out", out, "--drop-unknown") == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["id"] == "a" and lines[0]["items"] == rec.recommend([h])[0].items
    assert lines[1]["fallback"] == "popularity" and lines[1]["dropped"] == ["zzz"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"history": h}) + "\n{oops\n")
    assert run_cli("recommend", "--run", stack["sasrec"], "--input", bad) == 2
    assert "bad.jsonl, line 2: not JSON" in capsys.readouterr().err


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_cli_all_users_export(stack, sasrec, tmp_path, ext):
    out = tmp_path / f"top.{ext}"
    assert run_cli("recommend", "--run", stack["sasrec"], "--all-users", "--out", out, "--k", "4", "--quiet") == 0
    if ext == "csv":
        import csv

        rows = list(csv.DictReader(out.open()))
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
    assert len(rows) == sasrec.data.n_users * 4
    u = sasrec.data.user_ids[3]
    mine = sorted((r for r in rows if r["user_id"] == u), key=lambda r: int(r["rank"]))
    assert [r["item_id"] for r in mine] == sasrec.recommend_users([u], k=4)[0].items
    assert run_cli("recommend", "--run", stack["sasrec"], "--all-users", "--out", out) == 2  # exists
    assert run_cli("recommend", "--run", stack["sasrec"], "--all-users", "--out", tmp_path / "top.txt") == 2
    assert not list(tmp_path.glob(".top*"))  # no temporary leftovers


def test_recommend_refuses_a_non_model_run(stack, capsys):
    assert run_cli("recommend", "--run", stack["quant"], "--history", "x") == 2
    assert "not a trained model run" in capsys.readouterr().err


# ---------------------------------------------------------------------------- HTTP
@pytest.fixture(scope="module")
def server(sasrec):
    import httpx
    import uvicorn

    from mmesid.serve.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(sasrec, max_batch=64, max_wait_ms=50, max_body_bytes=4096)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client, app
    srv.should_exit = True
    t.join(10)


def test_http_recommend_items_health_schema(server, sasrec):
    client, _ = server
    h = raw(sasrec, sasrec.data.sequences[1])
    r = client.post("/recommend", json={"history": h, "k": 5})
    assert r.status_code == 200
    assert r.json()["recommendations"][0]["items"] == sasrec.recommend([h], k=5)[0].items
    two = client.post("/recommend", json={"histories": [h, []], "k": 2}).json()["recommendations"]
    assert two[0]["items"] == sasrec.recommend([h], k=2)[0].items and two[1]["fallback"] == "popularity"
    u = client.post("/recommend", json={"user_id": sasrec.data.user_ids[2], "k": 3}).json()
    assert u["recommendations"][0]["items"] == sasrec.recommend_users([sasrec.data.user_ids[2]], k=3)[0].items
    it = client.get(f"/items/{h[0]}").json()
    assert it["id"] == h[0] and it["title"] == sasrec.data.items[sasrec.index[h[0]] - 1].title
    assert client.get("/items/nope").status_code == 404
    assert client.get("/health").json()["status"] == "ok"
    assert "/recommend" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("body, status, needle", [
    ({"history": "abc"}, 422, "list"),
    ({"history": [["x"]]}, 422, ""),
    ({"history": [], "k": 0}, 422, "greater than or equal to 1"),
    ({"history": [], "k": 31}, 422, "k must be between 1 and 30"),
    ({"history": [], "k": "ten"}, 422, ""),
    ({"history": ["nope"]}, 422, "unknown item id(s) 'nope'"),
    ({"history": [], "user_id": "u"}, 422, "exactly one of"),
    ({}, 422, "exactly one of"),
    ({"history": [], "colour": 1}, 422, "Extra inputs"),
    ({"user_id": "no-such-user"}, 422, "unknown user id"),
    ({"history": [], "unknown": "ignore"}, 422, ""),
    ({"history": ["x"] * 2000}, 413, "request body over 4096 bytes"),
])
def test_http_bad_requests_are_4xx(server, body, status, needle):
    client, _ = server
    r = client.post("/recommend", json=body)
    assert r.status_code == status, r.text
    assert needle in r.text


def test_http_malformed_json_and_no_length(server):
    client, _ = server
    r = client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post("/recommend", content=iter([b'{"history": [', b'"x",' * 3000, b'"y"]}']),
                    headers={"content-type": "application/json"})  # chunked: no Content-Length
    assert r.status_code == 413
    assert client.get("/health").status_code == 200  # the server lives on


def test_http_concurrent_requests_share_forward_passes(server, sasrec):
    client, app = server
    batcher = app.app.state.batcher
    before = batcher.batches
    hs = [raw(sasrec, s) for s in sasrec.data.sequences[:24]]

    def call(h):
        return client.post("/recommend", json={"history": h, "k": 3}).json()["recommendations"][0]["items"]

    with ThreadPoolExecutor(24) as pool:
        got = list(pool.map(call, hs))
    assert got == [r.items for r in sasrec.recommend(hs, k=3)]
    assert batcher.batches - before < len(hs)  # fewer forwards than requests
    np.testing.assert_equal(batcher.items >= len(hs), True)


def test_evaluate_ranks_out_and_the_paired_test(stack, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from mmesid.eval.ranking import metrics_from_ranks

    files = {}
    for which in ("sasrec", "ft"):
        files[which] = tmp_path / f"{which}.npy"
        out = tmp_path / f"{which}.json"
        assert run_cli("evaluate", "--data", stack["dir"], "--run", stack[which], "--device", "cpu", "--quiet",
                       "--out", out, "--ranks-out", files[which]) == 0
        r = np.load(files[which], allow_pickle=False)
        assert r.shape == (stack["data"].n_users, 2) and list(r[:, 0]) == list(range(stack["data"].n_users))
        m = json.loads(out.read_text())
        assert metrics_from_ranks(r[:, 1])["nDCG@10"] == m["nDCG@10"] and "ranks" not in m
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "paired_test.py"
    res = subprocess.run([sys.executable, script, files["ft"], files["sasrec"]], capture_output=True, text=True,
                         check=True)
    got = json.loads(res.stdout)
    assert got["users"] == stack["data"].n_users and 0 <= got["nDCG@10"]["t_test_p"] <= 1


def test_int8_inference_quantises_the_backbone_and_keeps_the_ranking(stack, tmp_path, capsys):
    """--int8: the fine-tuned backbone's linear layers become dynamic int8 (the LoRA adapters, merged in
    first, are left alone); the scores stay close to float's; other run kinds and floors refuse it."""
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    fp = Recommender.load(stack["ft"], stack["dir"])
    q = Recommender.load(stack["ft"], stack["dir"], int8=True)
    quantised = [n for n, m in q.scorer.llm.named_modules() if isinstance(m, Int8Linear)]
    assert quantised and not any("lora_" in n for n in quantised)
    assert not any(type(m) is torch.nn.Linear and "lora_" not in n for n, m in q.scorer.llm.named_modules())
    hist = pad_left(fp.data.sequences[:8], fp.max_len)
    with torch.no_grad():
        a, b = fp.scorer.scores(hist)[:, 1:], q.scorer.scores(hist)[:, 1:]
    assert not torch.equal(a, b)  # really another computation
    for x, y in zip(a, b):
        assert np.corrcoef(x.numpy(), y.numpy())[0, 1] > 0.99
    with pytest.raises(MmesidError, match="int8 inference applies to fine-tuned LLM runs"):
        Recommender.load(stack["sasrec"], int8=True)
    out = tmp_path / "e.json"
    assert run_cli("evaluate", "--data", str(stack["dir"]), "--run", str(stack["ft"]), "--int8", "--quiet",
                   "--out", str(out)) == 0
    assert json.loads(out.read_text())["int8"] is True
    assert run_cli("evaluate", "--data", str(stack["dir"]), "--popularity", "--int8") == 2
    assert "--int8 applies to a fine-tuned LLM run" in capsys.readouterr().err
