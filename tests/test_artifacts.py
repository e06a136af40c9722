"""The artefact owners: embedding files, SID exports, output locations, run folders, checkpoints."""

import os

import numpy as np
import pytest
import torch

from mmesid.artifacts import checkpoint
from mmesid.artifacts.checkpoint import CheckpointStore
from mmesid.artifacts.embeddings import (parse_emb_args, read_item_embedding, read_modalities,
                                         write_item_embedding, write_item_tables)
from mmesid.artifacts.outputs import check_output_folder, check_output_location, folder_kind, replace_dir
from mmesid.artifacts.runs import RunDir, open_run
from mmesid.artifacts.sid_export import load_sid_export, write_sid_export
from mmesid.config import bounded
from mmesid.errors import ConfigError, MmesidError


def test_embedding_file_round_trip_with_mask_and_fingerprint(tmp_path):
    t = torch.randn(6, 3)
    mask = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool)
    write_item_embedding(tmp_path / "e.safetensors", t, mask, modality="text", encoder="x", data_fingerprint="abc")
    e = read_item_embedding(tmp_path / "e.safetensors", n_items=5, fingerprint="abc")
    assert torch.equal(e.table[1:], t[1:]) and torch.equal(e.table[0], torch.zeros(3))
    assert e.mask.tolist() == [False, True, False, True, True, True]
    assert e.fingerprint == "abc" and e.meta["modality"] == "text"
    with pytest.raises(MmesidError, match="another dataset"):
        read_item_embedding(tmp_path / "e.safetensors", fingerprint="xyz")
    with pytest.raises(MmesidError, match="5 items"):
        read_item_embedding(tmp_path / "e.safetensors", n_items=4)


def test_several_tables_in_one_file_are_read_by_key(tmp_path):
    a, b = torch.randn(4, 2), torch.randn(4, 5)
    write_item_tables(tmp_path / "t.safetensors", {"q.c": (a, torch.ones(4)), "q.t": (b, torch.tensor([1, 1, 0, 1]))})
    ec = read_item_embedding(f"{tmp_path / 't.safetensors'}:q.c")
    et = read_item_embedding(f"{tmp_path / 't.safetensors'}:q.t")
    assert torch.equal(ec.table[1:], a[1:]) and et.mask.tolist() == [False, True, False, True]


@pytest.mark.parametrize("name, make, message", [
    ("empty.npy", lambda p: p.write_bytes(b""), "not a plain numeric .npy"),
    ("x.npz", lambda p: np.savez(p, a=np.ones((3, 2))), "unsupported format"),
    ("obj.npy", lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "not a plain numeric"),
    ("int.npy", lambda p: np.save(p, np.ones((3, 2), dtype=np.int64)), "float matrix"),
    ("flat.npy", lambda p: np.save(p, np.ones(3, dtype=np.float32)), "2-D table"),
    ("nan.npy", lambda p: np.save(p, np.array([[0, 0], [1, np.nan]], dtype=np.float32)), "non-finite"),
    ("trunc.safetensors", lambda p: p.write_bytes(b"\x10\x00\x00"), "not a valid safetensors"),
    ("adir", lambda p: p.mkdir(), "is a folder"),
])
def test_bad_embedding_files_are_one_message(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(MmesidError, match=message):
        read_item_embedding(path)


def test_big_endian_npy_is_read_as_its_values(tmp_path):
    arr = np.arange(8, dtype=">f4").reshape(4, 2)
    np.save(tmp_path / "be.npy", arr)
    assert read_item_embedding(tmp_path / "be.npy").table.tolist() == arr.astype("<f4").tolist()


def test_modalities_must_agree(tmp_path):
    write_item_embedding(tmp_path / "c.safetensors", torch.randn(5, 2), modality="collaborative", encoder="x",
                         data_fingerprint="one")
    write_item_embedding(tmp_path / "t.safetensors", torch.randn(5, 2), modality="text", encoder="x",
                         data_fingerprint="two")
    files = parse_emb_args([f"c={tmp_path / 'c.safetensors'}", f"t={tmp_path / 't.safetensors'}"])
    with pytest.raises(MmesidError, match="different datasets"):
        read_modalities(files)
    for bad in (["x=foo"], ["c"], [f"c={tmp_path / 'c.safetensors'}", f"c={tmp_path / 'c.safetensors'}"],
                ["c=/nonexistent.npy"]):
        with pytest.raises(MmesidError):
            parse_emb_args(bad)


def test_sid_export_round_trip_and_refusals(tmp_path):
    sid = torch.tensor([[-1, -1], [0, 1], [2, 0], [-1, -1]])
    cb = torch.randn(2, 3, 4)
    tables = {"c": {k: torch.randn(4, 4) for k in ("z", "z_hat", "s_hat")} | {"mask": torch.tensor([0, 1, 1, 0])}}
    write_sid_export(tmp_path / "ex", {"c": sid}, {"c": cb}, tables, {"modalities": {}}, data_fingerprint="fp")
    ex = load_sid_export(tmp_path / "ex", n_items=3, fingerprint="fp")
    assert torch.equal(ex.sids["c"], sid) and torch.equal(ex.codebooks["c"], cb)
    want = torch.stack([torch.zeros(4), cb[0, 0] + cb[1, 1], cb[0, 2] + cb[1, 0], torch.zeros(4)])
    assert torch.allclose(ex.quantized("c"), want)
    assert folder_kind(tmp_path / "ex") == "sid-export"
    with pytest.raises(MmesidError, match="another dataset"):
        load_sid_export(tmp_path / "ex", fingerprint="other")
    with pytest.raises(MmesidError, match="rows"):
        load_sid_export(tmp_path / "ex", n_items=4)


def test_output_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.csv").write_text("u,i,t\n")
    for bad in (".", tmp_path, data, data / "sub", data / "x.csv"):
        with pytest.raises(MmesidError):
            check_output_location(bad, inputs=[data])
    check_output_location(tmp_path / "out", inputs=[data])  # fine
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(MmesidError, match="files not made by mmesid"):
        check_output_folder(tmp_path / "mine", "sid-export", overwrite=True)
    # a failing build leaves the old folder as it was
    (tmp_path / "ex").mkdir()
    (tmp_path / "ex" / "semantic_ids.safetensors").write_text("old")
    (tmp_path / "ex" / "stats.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with replace_dir(tmp_path / "ex", "sid-export", overwrite=True) as tmp:
            (tmp / "semantic_ids.safetensors").write_text("new")
            raise RuntimeError("interrupted")
    assert (tmp_path / "ex" / "semantic_ids.safetensors").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "ex", "mine"]  # no temporary left


def test_resume_policy_names_changed_keys(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        lr: float = bounded(0.1, gt=0)
        epochs: int = bounded(3, ge=1)
        device: str = "auto"

    run = RunDir(tmp_path / "r", "probe")
    cfg = run.resolve_config(Cfg, None, ["lr=0.5"])
    with run.claim():
        run.write_config(cfg)
        run.write_info({})
        run.checkpoints.save(1, {"x": torch.ones(1)})
    again = RunDir(tmp_path / "r", "probe")
    assert again.resolve_config(Cfg).lr == 0.5  # the run's own config, without repeating --set
    assert again.resolve_config(Cfg, None, ['device="cpu"']).device == "cpu"  # runtime keys may change
    with pytest.raises(ConfigError, match=r"lr \(0.5 -> 0.2\)"):
        again.resolve_config(Cfg, None, ["lr=0.2"])
    assert again.resolve_config(Cfg, None, ["lr=0.2"], allow_change=True).lr == 0.2
    assert again.resolve_config(Cfg, None, ["lr=0.2"], fresh=True).epochs == 3
    with pytest.raises(ConfigError, match="epochs: must be >= 1"):
        again.resolve_config(Cfg, None, ["epochs=0"], fresh=True)
    assert open_run(tmp_path / "r", "probe").info()["kind"] == "probe"
    with pytest.raises(MmesidError, match="not"):
        open_run(tmp_path / "r", "sasrec")


def test_checkpoint_interrupted_at_every_write_keeps_the_previous_one(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path / "ck")
    store.save(1, {"w": torch.tensor([1.0])})
    calls = []
    monkeypatch.setattr(checkpoint, "before_write", calls.append)
    store.save(2, {"w": torch.tensor([2.0])})
    n = len(calls)
    assert n == 4  # rng-0.pt, state.pt, the rename, the removal of step 1
    for k in range(1, n + 1):
        store = CheckpointStore(tmp_path / f"ck{k}")
        monkeypatch.setattr(checkpoint, "before_write", None)
        store.save(1, {"w": torch.tensor([1.0])})
        seen = []

        def kill(name, seen=seen, k=k):
            seen.append(name)
            if len(seen) == k:
                raise KeyboardInterrupt

        monkeypatch.setattr(checkpoint, "before_write", kill)
        with pytest.raises(KeyboardInterrupt):
            store.save(2, {"w": torch.tensor([2.0])})
        monkeypatch.setattr(checkpoint, "before_write", None)
        got = store.load()
        assert got["w"].item() == (1.0 if k <= 3 else 2.0), k  # old until the rename, new after it


def test_damaged_checkpoint_is_one_message(tmp_path):
    store = CheckpointStore(tmp_path / "ck")
    store.save(3, {"w": torch.ones(2)})
    state = tmp_path / "ck" / "step-000000003" / "state.pt"
    state.write_bytes(state.read_bytes()[:40])
    with pytest.raises(MmesidError, match="damaged checkpoint"):
        store.load()
    assert os.path.exists(state)  # nothing deleted behind the user's back
