"""Item encoders: text (MiniLM, tiny BERT, CLIP text), image (tiny CLIP), URL cache, policies,
precomputed matrices, cache reuse and the CLI. Tiny models are random and built in temp folders."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mmesid.data.dataset import ItemInfo, SequenceData  # noqa: E402
from mmesid.data.synthetic import SyntheticConfig, generate, item_categories, write_images  # noqa: E402
from mmesid.encoders import default_text_model, encode_text, text_encoder  # noqa: E402
from mmesid.encoders.image import ImageSource, encode_images, image_encoder  # noqa: E402
from mmesid.encoders.precomputed import import_precomputed  # noqa: E402
from mmesid.errors import MmesidError  # noqa: E402
from mmesid.io import load_tensors, save_tensors  # noqa: E402

CFG = SyntheticConfig(n_users=80, n_items=48, n_categories=6, seed=3)
TOKENIZER_FILES = ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def data() -> SequenceData:
    return generate(CFG)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data) -> Path:
    return data.save(tmp_path_factory.mktemp("prep") / "syn")


@pytest.fixture(scope="module")
def images(tmp_path_factory, data) -> Path:
    return write_images(data, tmp_path_factory.mktemp("img") / "images", CFG, size=40)


def _copy_tokenizer(dest: Path) -> None:
    src = default_text_model()
    for name in TOKENIZER_FILES:
        shutil.copy(src / name, dest / name)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bert") / "tiny-bert"
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(path)
    _copy_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "tiny-clip"
    cfg = CLIPConfig(
        text_config=dict(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64,
                         bos_token_id=101, eos_token_id=102, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    CLIPModel(cfg).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    _copy_tokenizer(path)  # a BERT tokenizer is enough to exercise the text projection
    return path


@pytest.fixture(scope="module")
def tiny_vision_tower(tmp_path_factory, tiny_clip) -> Path:
    """A bare vision tower (no projection), as the vision half of a two-tower model is often shipped."""
    from transformers import CLIPModel

    path = tmp_path_factory.mktemp("vt") / "tiny-vision"
    CLIPModel.from_pretrained(tiny_clip).vision_model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def minilm():
    return text_encoder(device="cpu")


@pytest.fixture(scope="module")
def clip_image(tiny_clip):
    return image_encoder(tiny_clip, device="cpu")


# ------------------------------------------------------------------------------------ text
def test_minilm_shapes_norm_and_sentence_transformers_agree(tmp_path, data, minilm):
    out = tmp_path / "t.safetensors"
    res = encode_text(data, minilm, out, batch_size=16, progress=False)
    tensors, meta = load_tensors(out)
    emb, mask = tensors["embedding"], tensors["mask"]
    assert emb.dtype == torch.float32 and emb.shape == (data.n_items + 1, 384)
    assert mask.dtype == torch.uint8 and mask[0] == 0 and bool(mask[1:].all())
    assert torch.all(emb[0] == 0)
    assert torch.allclose(emb[1:].norm(dim=1), torch.ones(data.n_items), atol=1e-5)
    assert meta["modality"] == "text" and meta["dim"] == "384" and meta["n_items"] == str(data.n_items)
    assert "MiniLM" in meta["encoder"] and len(meta["content_hash"]) == 64
    assert res.dim == 384 and res.n_missing == 0 and not res.cached
    # the plain-HF mean pooling reproduces the sentence-transformers recipe of the same folder
    pytest.importorskip("sentence_transformers")
    st = text_encoder(default_text_model(), kind="sentence-transformers", device="cpu")
    ref = st.encode([it.title for it in data.items[:6]])
    assert torch.allclose(ref, emb[1:7], atol=1e-5)


def test_minilm_titles_of_same_category_are_closer(data, minilm):
    emb = minilm.encode([it.title for it in data.items])
    cats = torch.as_tensor(item_categories(CFG)[1:])
    sim = emb @ emb.T
    same = (cats[:, None] == cats[None, :]) & ~torch.eye(len(cats), dtype=torch.bool)
    diff = cats[:, None] != cats[None, :]
    within, across = sim[same].mean().item(), sim[diff].mean().item()
    assert within > across + 0.1, (within, across)
    # nearest neighbour (excluding itself) is of the same category for most items
    sim.fill_diagonal_(-2)
    nn_same = (cats[sim.argmax(1)] == cats).float().mean().item()
    assert nn_same >= 0.8, nn_same


def test_pooling_choices_and_padding_invariance(tiny_bert):
    texts = ["Lumina matte shampoo no. 1", "a much longer title about a deluxe travel size hair dryer no. 7"]
    vecs = {}
    for pooling in ("mean", "cls", "last"):
        enc = text_encoder(tiny_bert, pooling=pooling, device="cpu")
        both = enc.encode(texts)
        alone = enc.encode(texts[:1])  # no padding: must equal the padded batch row
        assert both.shape == (2, 32)
        assert torch.allclose(both.norm(dim=1), torch.ones(2), atol=1e-5)
        assert torch.allclose(both[0], alone[0], atol=1e-5), pooling
        vecs[pooling] = both
    assert not torch.allclose(vecs["mean"], vecs["cls"]) and not torch.allclose(vecs["mean"], vecs["last"])
    raw = text_encoder(tiny_bert, pooling="cls", device="cpu", normalize=False).encode(texts)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(2))
    assert torch.allclose(torch.nn.functional.normalize(raw, dim=1), vecs["cls"], atol=1e-5)
    with pytest.raises(MmesidError, match="two-tower"):
        text_encoder(tiny_bert, pooling="projection", device="cpu")


def test_clip_text_side_uses_projection(tiny_clip):
    enc = text_encoder(tiny_clip, device="cpu")
    assert enc.pooling == "projection"
    v = enc.encode(["Orchid glossy lipstick no. 2", "Sola fresh sunscreen no. 6"])
    assert v.shape == (2, 16)


def test_text_cache_reuse_and_invalidation(tmp_path, data, tiny_bert):
    enc = text_encoder(tiny_bert, device="cpu")
    out = tmp_path / "t.safetensors"
    first = encode_text(data, enc, out, progress=False)
    stamp = out.stat().st_mtime_ns
    again = encode_text(data, enc, out, progress=False)
    assert not first.cached and again.cached and out.stat().st_mtime_ns == stamp
    fresh = text_encoder(tiny_bert, device="cpu")  # an up-to-date output needs no model weights
    assert encode_text(data, fresh, out, progress=False).cached and fresh.model is None
    # another encoder setting changes the hash
    other = text_encoder(tiny_bert, pooling="cls", device="cpu")
    assert not encode_text(data, other, out, progress=False).cached
    # so does a changed title
    changed = SequenceData(data.sequences, [ItemInfo(i.raw_id, i.title, i.image) for i in data.items],
                           data.user_ids)
    changed.items[5].title += " refill"
    assert not encode_text(changed, other, out, progress=False).cached
    assert encode_text(changed, other, out, progress=False).cached
    assert not encode_text(changed, other, out, progress=False, force=True).cached


def test_empty_title_policies(tmp_path, data, tiny_bert):
    items = [ItemInfo(i.raw_id, i.title, i.image) for i in data.items]
    items[3].title = "  "
    d = SequenceData(data.sequences, items, data.user_ids)
    enc = text_encoder(tiny_bert, device="cpu")
    with pytest.raises(MmesidError, match=r"item 4 \('SYN00003'\): empty title"):
        encode_text(d, enc, tmp_path / "a.safetensors", progress=False)
    assert not (tmp_path / "a.safetensors").exists()
    res = encode_text(d, enc, tmp_path / "b.safetensors", missing="zero", progress=False)
    t, meta = load_tensors(tmp_path / "b.safetensors")
    assert res.n_missing == 1 and meta["n_missing"] == "1"
    assert t["mask"][4] == 0 and torch.all(t["embedding"][4] == 0) and t["mask"].sum() == d.n_items - 1
    assert "SYN00003\tempty title" in (tmp_path / "b.safetensors.missing.tsv").read_text()


# ------------------------------------------------------------------------------------ images
def test_image_encoder_local_folder(tmp_path, data, images, clip_image):
    out = tmp_path / "v.safetensors"
    res = encode_images(data, clip_image, ImageSource(image_dir=images), out, batch_size=10, progress=False)
    t, meta = load_tensors(out)
    emb = t["embedding"]
    assert emb.shape == (data.n_items + 1, 16) and meta["modality"] == "visual" and res.n_missing == 0
    assert torch.allclose(emb[1:].norm(dim=1), torch.ones(data.n_items), atol=1e-5)
    assert bool(t["mask"][1:].all()) and t["mask"][0] == 0
    # the same picture gives the same vector whatever the batch it is in
    single = clip_image.encode([_load(images / data.items[0].image)])
    assert torch.allclose(single[0], emb[1], atol=1e-4)
    assert encode_images(data, clip_image, ImageSource(image_dir=images), out, progress=False).cached


def test_image_lookup_by_raw_id_and_relative_path(tmp_path, data, images, clip_image):
    renamed = tmp_path / "by_asin"
    renamed.mkdir()
    for it in data.items:  # e.g. Amazon: <asin>.jpg next to each other, table has URLs
        shutil.copy(images / it.image, renamed / f"{it.raw_id}.png")
    items = [ItemInfo(i.raw_id, i.title, f"http://example.invalid/img/{i.raw_id}-x.jpg") for i in data.items]
    d = SequenceData(data.sequences, items, data.user_ids)
    res = encode_images(d, clip_image, ImageSource(image_dir=renamed, download=False), tmp_path / "v.safetensors",
                        progress=False)
    assert res.n_missing == 0
    # relative paths in the item table resolve against the prepared folder
    rel = [ItemInfo(i.raw_id, i.title, f"pics/{i.image}") for i in data.items]
    shutil.copytree(images, tmp_path / "prep" / "pics")
    d2 = SequenceData(data.sequences, rel, data.user_ids)
    res2 = encode_images(d2, clip_image, ImageSource(data_dir=tmp_path / "prep"), tmp_path / "w.safetensors",
                         progress=False)
    assert res2.n_missing == 0


def test_vision_tower_poolings(data, images, tiny_vision_tower, tiny_clip):
    imgs = [_load(images / it.image) for it in data.items[:3]]
    out = {}
    for pooling in ("auto", "mean", "cls"):
        enc = image_encoder(tiny_vision_tower, processor=tiny_clip, pooling=pooling, device="cpu")
        v = enc.encode(imgs)
        assert v.shape == (3, 32) and torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-5)
        out[pooling] = v
    assert not torch.allclose(out["mean"], out["cls"])


def test_missing_and_corrupt_images_under_both_policies(tmp_path, data, images, clip_image):
    folder = tmp_path / "imgs"
    shutil.copytree(images, folder)
    (folder / data.items[2].image).unlink()  # item 3: missing
    (folder / data.items[6].image).write_bytes(b"this is not a png")  # item 7: not an image
    whole = (folder / data.items[8].image).read_bytes()
    (folder / data.items[8].image).write_bytes(whole[: len(whole) // 2])  # item 9: truncated
    src = ImageSource(image_dir=folder)
    with pytest.raises(MmesidError) as e:
        encode_images(data, clip_image, src, tmp_path / "a.safetensors", progress=False)
    msg = str(e.value)
    assert "item 3 ('SYN00002'): image file not found" in msg and str(folder / "SYN00002.png") in msg
    assert "item 7 ('SYN00006'): unreadable image" in msg and "policy 'fail'" in msg
    assert not (tmp_path / "a.safetensors").exists()
    res = encode_images(data, clip_image, src, tmp_path / "b.safetensors", missing="zero", progress=False)
    t, meta = load_tensors(tmp_path / "b.safetensors")
    assert res.n_missing == 3 and meta["n_missing"] == "3" and meta["missing_policy"] == "zero"
    assert [int(i) for i in torch.nonzero(t["mask"] == 0).flatten()] == [0, 3, 7, 9]
    assert torch.all(t["embedding"][[3, 7, 9]] == 0) and torch.all(t["embedding"][1].abs().sum() > 0)
    listing = (tmp_path / "b.safetensors.missing.tsv").read_text().splitlines()
    assert [line.split("\t")[:2] for line in listing[1:]] == [["3", "SYN00002"], ["7", "SYN00006"],
                                                               ["9", "SYN00008"]]
    # the truncated file opens (header) but cannot be decoded: found while encoding, still reported
    for k in (2, 6):
        shutil.copy(images / data.items[k].image, folder / data.items[k].image)
    with pytest.raises(MmesidError, match=r"item 9 \('SYN00008'\): unreadable image"):
        encode_images(data, clip_image, src, tmp_path / "c.safetensors", progress=False)
    # a fixed input changes the content hash: the zero-policy output is not reused
    shutil.copy(images / data.items[8].image, folder / data.items[8].image)
    again = encode_images(data, clip_image, src, tmp_path / "b.safetensors", missing="zero", progress=False)
    assert not again.cached and again.n_missing == 0
    assert not (tmp_path / "b.safetensors.missing.tsv").exists()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def http_images(images):
    """A loopback HTTP server serving the synthetic images; stopped at the end of the test."""
    handler = functools.partial(_QuietHandler, directory=str(images))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_url_download_cache_and_failures(tmp_path, data, images, clip_image, http_images):
    base, server = http_images
    items = [ItemInfo(i.raw_id, i.title, f"{base}/{i.image}") for i in data.items]
    items[4].image = f"{base}/does-not-exist.png"  # item 5: 404
    d = SequenceData(data.sequences, items, data.user_ids)
    cache = tmp_path / "cache"
    src = ImageSource(cache_dir=cache, timeout=5, retries=0)
    with pytest.raises(MmesidError, match=r"item 5 \('SYN00004'\): download failed \(HTTP 404\)"):
        encode_images(d, clip_image, src, tmp_path / "a.safetensors", progress=False)
    res = encode_images(d, clip_image, src, tmp_path / "v.safetensors", missing="zero", workers=4,
                        progress=False)
    assert res.n_missing == 1
    assert len(list(cache.glob("*.png"))) == data.n_items - 1
    # downloaded bytes are the served files, and the vectors equal the local-folder ones
    ref = encode_images(data, clip_image, ImageSource(image_dir=images), tmp_path / "ref.safetensors",
                        progress=False)
    got, _ = load_tensors(res.path)
    want, _ = load_tensors(ref.path)
    keep = torch.ones(data.n_items + 1, dtype=torch.bool)
    keep[[0, 5]] = False
    assert torch.allclose(got["embedding"][keep], want["embedding"][keep], atol=1e-5)
    # with the server gone and downloads off, the cache alone serves every downloaded image
    server.shutdown()
    offline = ImageSource(cache_dir=cache, download=False)
    path, prob = offline.locate(1, items[0])
    assert prob is None and path.parent == cache
    _, prob = offline.locate(5, items[4])
    assert prob is not None and "downloads are off" in prob.reason


def test_unreachable_host_gives_up_after_consecutive_failures(tmp_path, data, clip_image):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on: connection refused, at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    items = [ItemInfo(i.raw_id, i.title, f"http://127.0.0.1:{port}/{i.image}") for i in data.items]
    d = SequenceData(data.sequences, items, data.user_ids)
    src = ImageSource(cache_dir=tmp_path / "cache", timeout=2, retries=0, give_up_after=3)
    with pytest.raises(MmesidError, match="no item has a usable image"):
        encode_images(d, clip_image, src, tmp_path / "v.safetensors", missing="zero", workers=1, progress=False)
    reasons = [src.locate(i, items[i - 1])[1].reason for i in (1, 2)]
    assert all(r.startswith("download skipped: 3 network failures") for r in reasons)
    fresh = ImageSource(cache_dir=tmp_path / "cache", timeout=2, retries=0)
    assert fresh.locate(1, items[0])[1].reason.startswith("download failed (")


# ------------------------------------------------------------------------------------ precomputed
def test_precomputed_valid_shapes(tmp_path, data):
    n = data.n_items
    rng = np.random.default_rng(0)
    full = rng.normal(size=(n + 1, 8)).astype(np.float32)
    np.save(tmp_path / "full.npy", full)
    res = import_precomputed(data, tmp_path / "full.npy", tmp_path / "a.safetensors", modality="collaborative")
    t, meta = load_tensors(res.path)
    assert t["embedding"].shape == (n + 1, 8) and torch.all(t["embedding"][0] == 0)
    assert torch.allclose(t["embedding"][1:], torch.from_numpy(full[1:]))
    assert meta["modality"] == "collaborative" and bool(t["mask"][1:].all())
    np.save(tmp_path / "rows.npy", full[1:].astype(np.float64))  # n rows, float64: padded, cast
    t2, _ = load_tensors(import_precomputed(data, tmp_path / "rows.npy", tmp_path / "b.safetensors",
                                            modality="text", normalize=True).path)
    assert t2["embedding"].dtype == torch.float32 and torch.all(t2["embedding"][0] == 0)
    assert torch.allclose(t2["embedding"][1:].norm(dim=1), torch.ones(n), atol=1e-5)
    save_tensors(tmp_path / "m.safetensors", {"vecs": torch.from_numpy(full).to(torch.bfloat16)})
    res3 = import_precomputed(data, tmp_path / "m.safetensors", tmp_path / "c.safetensors", modality="visual")
    assert res3.dim == 8
    assert import_precomputed(data, tmp_path / "m.safetensors", tmp_path / "c.safetensors",
                              modality="visual").cached


def test_precomputed_errors(tmp_path, data):
    n = data.n_items
    out = tmp_path / "o.safetensors"
    np.save(tmp_path / "short.npy", np.ones((n - 1, 4), np.float32))
    with pytest.raises(MmesidError, match=rf"{n - 1} rows, but the dataset has {n} items"):
        import_precomputed(data, tmp_path / "short.npy", out, modality="text")
    np.save(tmp_path / "ints.npy", np.ones((n + 1, 4), np.int64))
    with pytest.raises(MmesidError, match="dtype int64 is not a floating-point type"):
        import_precomputed(data, tmp_path / "ints.npy", out, modality="text")
    np.save(tmp_path / "vec.npy", np.ones(n + 1, np.float32))
    with pytest.raises(MmesidError, match="expected a 2-D matrix"):
        import_precomputed(data, tmp_path / "vec.npy", out, modality="text")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MmesidError, match="not a plain numeric .npy"):
        import_precomputed(data, tmp_path / "obj.npy", out, modality="text")
    (tmp_path / "x.pt").write_bytes(b"\x80\x04")
    with pytest.raises(MmesidError, match="not read"):
        import_precomputed(data, tmp_path / "x.pt", out, modality="text")
    save_tensors(tmp_path / "two.safetensors", {"a": torch.ones(n + 1, 2), "b": torch.ones(n + 1, 2)})
    with pytest.raises(MmesidError, match="choose one with --key"):
        import_precomputed(data, tmp_path / "two.safetensors", out, modality="text")
    with pytest.raises(MmesidError, match="no tensor 'c'"):
        import_precomputed(data, tmp_path / "two.safetensors", out, modality="text", key="c")
    assert not out.exists()


def test_precomputed_nan_rows_under_both_policies(tmp_path, data):
    m = np.random.default_rng(1).normal(size=(data.n_items + 1, 4)).astype(np.float32)
    m[3, 1] = np.nan
    m[9] = 0.0
    np.save(tmp_path / "nan.npy", m)
    with pytest.raises(MmesidError, match=r"item 3 .*NaN/Inf(.|\n)*item 9 .*all zeros"):
        import_precomputed(data, tmp_path / "nan.npy", tmp_path / "a.safetensors", modality="visual")
    res = import_precomputed(data, tmp_path / "nan.npy", tmp_path / "b.safetensors", modality="visual",
                             missing="zero")
    t, _ = load_tensors(res.path)
    assert res.n_missing == 2 and t["mask"][3] == 0 and t["mask"][9] == 0
    assert torch.isfinite(t["embedding"]).all() and torch.all(t["embedding"][3] == 0)


# ------------------------------------------------------------------------------------ errors, CLI
def test_unknown_model_folders(tmp_path):
    with pytest.raises(MmesidError, match="folder not found"):
        text_encoder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MmesidError, match="no config.json"):
        image_encoder(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "no-such-model-type"}')
    with pytest.raises(MmesidError, match="cannot load"):
        text_encoder(bad, kind="hf")
    with pytest.raises(MmesidError, match="cannot load"):
        image_encoder(bad)


def test_text_model_is_not_an_image_model(tiny_bert):
    with pytest.raises(MmesidError):
        image_encoder(tiny_bert)


def test_cli_text_image_precomputed_and_exit_codes(tmp_path, prepared, images, tiny_bert, tiny_clip, capsys):
    from mmesid.cli import main

    out = tmp_path / "t.safetensors"
    args = ["encode", "text", "--data", str(prepared), "--out", str(out), "--model", str(tiny_bert),
            "--device", "cpu", "--batch-size", "7", "--max-length", "16", "--quiet"]
    assert main(args) == 0 and out.exists()
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    vout = tmp_path / "v.safetensors"
    assert main(["encode", "image", "--data", str(prepared), "--out", str(vout), "--model", str(tiny_clip),
                 "--images", str(images), "--device", "cpu", "--quiet"]) == 0
    t, meta = load_tensors(vout)
    assert t["embedding"].shape == (CFG.n_items + 1, 16) and meta["modality"] == "visual"
    capsys.readouterr()
    # bad input -> one message, exit status 2
    assert main(["encode", "text", "--data", str(prepared), "--out", str(out), "--model",
                 str(tmp_path / "missing-model")]) == 2
    assert "text model folder not found" in capsys.readouterr().err
    assert main(["encode", "image", "--data", str(prepared), "--out", str(vout), "--model", str(tiny_clip),
                 "--images", str(tmp_path / "nowhere")]) == 2
    np.save(tmp_path / "bad.npy", np.ones((3, 2), np.float32))
    assert main(["encode", "precomputed", "--data", str(prepared), "--out", str(tmp_path / "p.safetensors"),
                 "--input", str(tmp_path / "bad.npy"), "--modality", "text"]) == 2
    assert "3 rows" in capsys.readouterr().err
    assert main(["encode", "text", "--data", str(tmp_path / "no-data"), "--out", str(out)]) == 2


def _load(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")
