"""Item encoders: text (MiniLM, tiny BERT, CLIP text), image (tiny CLIP), colour histograms, URL
cache, policies, precomputed matrices, cache reuse and the CLI. Tiny models are random and built in
temp folders. Vectors are compared with a direct computation written here (the model called on one
input at a time, pooling and normalisation by hand), never with the encoder's own output.
conftest.py sets HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE for the whole test run."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from mmesid.data.dataset import ItemInfo, SequenceData
from mmesid.data.synthetic import SyntheticConfig, generate, item_categories, write_images
from mmesid.encoders import default_text_model, encode_text, text_encoder
from mmesid.encoders.colour import ColourHistogramEncoder, colour_histogram, colour_histograms
from mmesid.encoders.image import ImageSource, encode_images, image_encoder
from mmesid.encoders.precomputed import import_precomputed
from mmesid.errors import MmesidError
from mmesid.io import load_tensors, save_tensors

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


# ------------------------------------------------------------------------------------ direct computations
def _normalised(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


@functools.lru_cache(maxsize=4)
def _plain_model(path: Path):
    from transformers import AutoModel, AutoTokenizer

    return (AutoTokenizer.from_pretrained(str(path), local_files_only=True),
            AutoModel.from_pretrained(str(path), local_files_only=True).eval())


@torch.no_grad()
def _direct_text(path: Path, texts, pooling: str = "mean", max_length: int = 128) -> torch.Tensor:
    """The model on one title at a time (no padding at all), pooled and L2-normalised by hand."""
    tok, model = _plain_model(path)
    out = []
    for t in texts:
        ids = tok(t, truncation=True, max_length=max_length, return_tensors="pt")
        h = model(**ids).last_hidden_state[0].double()
        out.append(_normalised({"mean": h.mean(0), "cls": h[0], "last": h[-1]}[pooling]))
    return torch.stack(out).float()


def _features(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def _direct_clip_images(clip_path: Path, paths) -> torch.Tensor:
    from transformers import CLIPImageProcessor, CLIPModel

    proc = CLIPImageProcessor.from_pretrained(str(clip_path), local_files_only=True)
    model = CLIPModel.from_pretrained(str(clip_path), local_files_only=True).eval()
    out = []
    for p in paths:
        pix = proc(images=[_load(p)], return_tensors="pt")["pixel_values"]
        out.append(_normalised(_features(model.get_image_features(pixel_values=pix))[0].double()))
    return torch.stack(out).float()


@pytest.fixture(scope="module")
def clip_reference(data, images, tiny_clip) -> torch.Tensor:
    """[n_items + 1, 16]: row i the directly computed image vector of item i (row 0 zero)."""
    direct = _direct_clip_images(tiny_clip, [images / it.image for it in data.items])
    return torch.cat([torch.zeros(1, direct.shape[1]), direct])


# ------------------------------------------------------------------------------------ text
def test_minilm_equals_direct_mean_pooling(tmp_path, data, minilm):
    out = tmp_path / "t.safetensors"
    res = encode_text(data, minilm, out, batch_size=16, progress=False)
    tensors, meta = load_tensors(out)
    emb, mask = tensors["embedding"], tensors["mask"]
    assert emb.dtype == torch.float32 and emb.shape == (data.n_items + 1, 384)
    assert mask.tolist() == [0] + [1] * data.n_items
    assert torch.equal(emb[0], torch.zeros(384))
    # the bundled folder's own sentence-transformers recipe is mean pooling + L2 normalisation ...
    folder = default_text_model()
    modules = [m["type"].rsplit(".", 1)[1] for m in json.loads((folder / "modules.json").read_text())]
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert modules == ["Transformer", "Pooling", "Normalize"]
    assert [k for k, v in pooling.items() if k.startswith("pooling_mode") and v] == ["pooling_mode_mean_tokens"]
    # ... and that is what the padded, batched encoder computes (checked on every third item)
    ids = list(range(1, data.n_items + 1, 3))
    direct = _direct_text(folder, [data.items[i - 1].title for i in ids])
    assert torch.allclose(emb[ids], direct, atol=2e-6), (emb[ids] - direct).abs().max()
    assert meta["modality"] == "text" and meta["dim"] == "384" and meta["n_items"] == str(data.n_items)
    assert meta["data_fingerprint"] == data.fingerprint and meta["n_missing"] == "0"
    assert "MiniLM" in meta["encoder"] and len(meta["content_hash"]) == 64
    assert (res.dim, res.n_missing, res.cached) == (384, 0, False)


def test_sentence_transformers_folder_equals_direct_computation(data):
    """Optional: the sentence-transformers loader, only where that package is installed."""
    pytest.importorskip("sentence_transformers")
    st = text_encoder(default_text_model(), kind="sentence-transformers", device="cpu")
    titles = [it.title for it in data.items[:6]]
    assert torch.allclose(st.encode(titles), _direct_text(default_text_model(), titles), atol=2e-6)


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


def test_pooling_choices_equal_direct_computation(tiny_bert):
    texts = ["Lumina matte shampoo no. 1", "a much longer title about a deluxe travel size hair dryer no. 7"]
    for pooling in ("mean", "cls", "last"):
        enc = text_encoder(tiny_bert, pooling=pooling, device="cpu")
        both = enc.encode(texts)  # padded batch: the short title is padded on the right
        assert torch.allclose(both, _direct_text(tiny_bert, texts, pooling), atol=2e-6), pooling
    raw = text_encoder(tiny_bert, pooling="cls", device="cpu", normalize=False).encode(texts)
    assert torch.allclose(torch.nn.functional.normalize(raw, dim=1), _direct_text(tiny_bert, texts, "cls"),
                          atol=2e-6)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(2), atol=1e-2)  # really not normalised
    with pytest.raises(MmesidError, match="two-tower"):
        text_encoder(tiny_bert, pooling="projection", device="cpu")


@torch.no_grad()
def test_clip_text_side_uses_projection(tiny_clip):
    from transformers import AutoTokenizer, CLIPModel

    enc = text_encoder(tiny_clip, device="cpu")
    assert enc.pooling == "projection"
    texts = ["Orchid glossy lipstick no. 2", "Sola fresh sunscreen no. 6 in a much longer title"]
    tok = AutoTokenizer.from_pretrained(str(tiny_clip), local_files_only=True)
    model = CLIPModel.from_pretrained(str(tiny_clip), local_files_only=True).eval()
    direct = []
    for t in texts:
        ids = tok(t, return_tensors="pt")
        f = model.get_text_features(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
        direct.append(_normalised(_features(f)[0]))
    assert torch.allclose(enc.encode(texts), torch.stack(direct), atol=2e-6)


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
    assert not encode_text(changed, other, out, progress=False, overwrite=True).cached
    # and another dataset with the same titles: the file records the dataset it was made from
    fewer = SequenceData(changed.sequences[:-1], changed.items, changed.user_ids[:-1])
    assert not encode_text(fewer, other, out, progress=False).cached
    assert load_tensors(out)[1]["data_fingerprint"] == fewer.fingerprint != changed.fingerprint


def test_existing_output_of_another_kind(tmp_path, data, tiny_bert):
    enc = text_encoder(tiny_bert, device="cpu")
    visual = tmp_path / "v.safetensors"
    save_tensors(visual, {"embedding": torch.ones(data.n_items + 1, 3)}, {"modality": "visual"})
    with pytest.raises(MmesidError, match="holds visual embeddings, not text .use --overwrite"):
        encode_text(data, enc, visual, progress=False)
    assert load_tensors(visual)[1]["modality"] == "visual"
    assert encode_text(data, enc, visual, progress=False, overwrite=True).dim == 32
    other = tmp_path / "notes.safetensors"
    other.write_text("my notes")
    for overwrite in (False, True):
        with pytest.raises(MmesidError, match="not an item-embedding file"):
            encode_text(data, enc, other, progress=False, overwrite=overwrite)
    assert other.read_text() == "my notes"
    with pytest.raises(MmesidError, match=r"expected a file ending in .safetensors"):
        encode_text(data, enc, tmp_path / "t.npy", progress=False)


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
    assert t["mask"].tolist() == [0, 1, 1, 1, 0] + [1] * (d.n_items - 4)
    direct = _direct_text(tiny_bert, [it.title for it in items])
    direct[3] = 0
    assert torch.allclose(t["embedding"][1:], direct, atol=2e-6)
    assert "SYN00003\tempty title" in (tmp_path / "b.safetensors.missing.tsv").read_text()


# ------------------------------------------------------------------------------------ images
def test_image_encoder_local_folder(tmp_path, data, images, clip_image, clip_reference):
    out = tmp_path / "v.safetensors"
    res = encode_images(data, clip_image, ImageSource(image_dir=images), out, batch_size=10, progress=False)
    t, meta = load_tensors(out)
    assert t["embedding"].shape == (data.n_items + 1, 16) and res.n_missing == 0
    assert torch.allclose(t["embedding"], clip_reference, atol=2e-6)
    assert t["mask"].tolist() == [0] + [1] * data.n_items
    assert meta["modality"] == "visual" and meta["data_fingerprint"] == data.fingerprint
    assert encode_images(data, clip_image, ImageSource(image_dir=images), out, progress=False).cached


def test_image_lookup_by_raw_id_and_relative_path(tmp_path, data, images, clip_image, clip_reference):
    renamed = tmp_path / "by_asin"
    renamed.mkdir()
    for it in data.items:  # e.g. Amazon: <asin>.jpg next to each other, table has URLs
        shutil.copy(images / it.image, renamed / f"{it.raw_id}.png")
    items = [ItemInfo(i.raw_id, i.title, f"http://example.invalid/img/{i.raw_id}-x.jpg") for i in data.items]
    d = SequenceData(data.sequences, items, data.user_ids)
    res = encode_images(d, clip_image, ImageSource(image_dir=renamed, download=False), tmp_path / "v.safetensors",
                        progress=False)
    assert res.n_missing == 0
    assert torch.allclose(load_tensors(res.path)[0]["embedding"], clip_reference, atol=2e-6)
    # relative paths in the item table resolve against the prepared folder
    rel = [ItemInfo(i.raw_id, i.title, f"pics/{i.image}") for i in data.items]
    shutil.copytree(images, tmp_path / "prep" / "pics")
    d2 = SequenceData(data.sequences, rel, data.user_ids)
    res2 = encode_images(d2, clip_image, ImageSource(data_dir=tmp_path / "prep"), tmp_path / "w.safetensors",
                         progress=False)
    assert res2.n_missing == 0
    assert torch.allclose(load_tensors(res2.path)[0]["embedding"], clip_reference, atol=2e-6)


@torch.no_grad()
def test_vision_tower_poolings(data, images, tiny_vision_tower, tiny_clip):
    from transformers import CLIPImageProcessor, CLIPVisionModel

    paths = [images / it.image for it in data.items[:3]]
    proc = CLIPImageProcessor.from_pretrained(str(tiny_clip), local_files_only=True)
    tower = CLIPVisionModel.from_pretrained(str(tiny_vision_tower), local_files_only=True).eval()
    direct = {"auto": [], "mean": [], "cls": []}
    for p in paths:
        o = tower(pixel_values=proc(images=[_load(p)], return_tensors="pt")["pixel_values"])
        h = o.last_hidden_state[0].double()
        direct["auto"].append(_normalised(o.pooler_output[0].double()))  # no projection: the pooled output
        direct["mean"].append(_normalised(h.mean(0)))
        direct["cls"].append(_normalised(h[0]))
    imgs = [_load(p) for p in paths]
    for pooling, want in direct.items():
        enc = image_encoder(tiny_vision_tower, processor=tiny_clip, pooling=pooling, device="cpu")
        assert torch.allclose(enc.encode(imgs), torch.stack(want).float(), atol=2e-6), pooling


def test_missing_and_corrupt_images_under_both_policies(tmp_path, data, images, clip_image, clip_reference):
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
    want = clip_reference.clone()
    want[[3, 7, 9]] = 0
    assert torch.allclose(t["embedding"], want, atol=2e-6)
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


# ------------------------------------------------------------------------------------ colour histograms
def _direct_histogram(img, bins: int) -> np.ndarray:
    """Pixel by pixel, with plain integers."""
    w = 256 // bins
    h = np.zeros(bins ** 3)
    pixels = np.asarray(img.convert("RGB")).reshape(-1, 3).tolist()
    for r, g, b in pixels:
        h[(r // w) * bins * bins + (g // w) * bins + b // w] += 1
    return (h / len(pixels)).astype(np.float32)


def test_colour_histograms_equal_direct_count(tmp_path, data, images):
    from PIL import Image

    img = Image.new("RGB", (2, 2))
    img.putdata([(255, 0, 0), (255, 0, 0), (0, 0, 255), (130, 200, 10)])
    h = colour_histogram(img, bins=4)
    want = np.zeros(64)
    want[3 * 16] = 0.5  # red: cell (3, 0, 0)
    want[3] = 0.25  # blue: cell (0, 0, 3)
    want[2 * 16 + 3 * 4 + 0] = 0.25  # (130, 200, 10) -> (2, 3, 0)
    assert np.array_equal(h, want.astype(np.float32))
    # 8 bins used to overflow uint8 cell indices (values up to 7 * 64 + 7 * 8 + 7 = 511)
    assert np.array_equal(colour_histogram(img, bins=8), _direct_histogram(img, 8))
    mat = colour_histograms(data, images)
    assert mat.shape == (data.n_items + 1, 64) and not mat[0].any()
    for i in (1, 17, data.n_items):
        np.testing.assert_allclose(mat[i], _direct_histogram(_load(images / data.items[i - 1].image), 4), atol=1e-7)
    enc = ColourHistogramEncoder(8)
    assert enc.dim == 512 and enc.fingerprint() == {"kind": "colour-histogram", "bins": 8}
    with pytest.raises(MmesidError, match="must divide 256"):
        ColourHistogramEncoder(3)
    (tmp_path / "imgs").mkdir()
    with pytest.raises(MmesidError, match=r"item 1 \('SYN00000'\): image file not found"):
        colour_histograms(data, tmp_path / "imgs")


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
    want = torch.from_numpy(full).clone()
    want[0] = 0
    assert torch.equal(t["embedding"], want) and t["mask"].tolist() == [0] + [1] * n
    assert meta["modality"] == "collaborative" and meta["data_fingerprint"] == data.fingerprint
    np.save(tmp_path / "rows.npy", full[1:].astype(np.float64))  # n rows, float64: padded, cast
    t2, _ = load_tensors(import_precomputed(data, tmp_path / "rows.npy", tmp_path / "b.safetensors",
                                            modality="t", normalize=True).path)
    rows = full[1:].astype(np.float64)
    want2 = np.concatenate([np.zeros((1, 8)), rows / np.linalg.norm(rows, axis=1, keepdims=True)])
    assert t2["embedding"].dtype == torch.float32
    np.testing.assert_allclose(t2["embedding"].numpy(), want2, rtol=0, atol=1e-6)
    assert t2["mask"].tolist() == [0] + [1] * n
    bf16 = torch.from_numpy(full).to(torch.bfloat16)
    save_tensors(tmp_path / "m.safetensors", {"vecs": bf16})
    res3 = import_precomputed(data, f"{tmp_path / 'm.safetensors'}:vecs", tmp_path / "c.safetensors",
                              modality="visual")
    want3 = bf16.float()
    want3[0] = 0
    assert res3.dim == 8 and torch.equal(load_tensors(res3.path)[0]["embedding"], want3)
    assert import_precomputed(data, f"{tmp_path / 'm.safetensors'}:vecs", tmp_path / "c.safetensors",
                              modality="visual").cached


def test_precomputed_errors(tmp_path, data):
    n = data.n_items
    out = tmp_path / "o.safetensors"
    np.save(tmp_path / "short.npy", np.ones((n - 1, 4), np.float32))
    with pytest.raises(MmesidError, match=rf"{n - 1} rows, but the dataset has {n} items"):
        import_precomputed(data, tmp_path / "short.npy", out, modality="text")
    np.save(tmp_path / "ints.npy", np.ones((n + 1, 4), np.int64))
    with pytest.raises(MmesidError, match="must hold a float matrix, got dtype int64"):
        import_precomputed(data, tmp_path / "ints.npy", out, modality="text")
    np.save(tmp_path / "vec.npy", np.ones(n + 1, np.float32))
    with pytest.raises(MmesidError, match="must be a 2-D table"):
        import_precomputed(data, tmp_path / "vec.npy", out, modality="text")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MmesidError, match="not a plain numeric .npy"):
        import_precomputed(data, tmp_path / "obj.npy", out, modality="text")
    (tmp_path / "x.pt").write_bytes(b"\x80\x04")
    with pytest.raises(MmesidError, match="never read"):
        import_precomputed(data, tmp_path / "x.pt", out, modality="text")
    save_tensors(tmp_path / "two.safetensors", {"a": torch.ones(n + 1, 2), "b": torch.ones(n + 1, 2)})
    with pytest.raises(MmesidError, match=r"no tensor 'embedding' \(keys: a, b\)"):
        import_precomputed(data, tmp_path / "two.safetensors", out, modality="text")
    with pytest.raises(MmesidError, match="no tensor 'c'"):
        import_precomputed(data, f"{tmp_path / 'two.safetensors'}:c", out, modality="text")
    with pytest.raises(MmesidError, match="expected one of collaborative, text, visual"):
        import_precomputed(data, f"{tmp_path / 'two.safetensors'}:a", out, modality="audio")
    save_tensors(tmp_path / "foreign.safetensors", {"embedding": torch.ones(n + 1, 2)},
                 {"data_fingerprint": "0123456789abcdef"})
    with pytest.raises(MmesidError, match="made from another dataset"):
        import_precomputed(data, tmp_path / "foreign.safetensors", out, modality="text")
    assert not out.exists()


def test_precomputed_zero_and_nan_rows(tmp_path, data):
    n = data.n_items
    m = np.random.default_rng(1).normal(size=(n + 1, 4)).astype(np.float32)
    m[9] = 0.0
    np.save(tmp_path / "zero.npy", m)
    with pytest.raises(MmesidError, match=r"policy 'fail'(.|\n)*item 9 \('SYN00008'\): row is all zeros"):
        import_precomputed(data, tmp_path / "zero.npy", tmp_path / "a.safetensors", modality="visual")
    res = import_precomputed(data, tmp_path / "zero.npy", tmp_path / "b.safetensors", modality="visual",
                             missing="zero")
    t, _ = load_tensors(res.path)
    want = m.copy()
    want[0] = 0
    assert res.n_missing == 1 and np.array_equal(t["embedding"].numpy(), want)
    assert t["mask"].tolist() == [0] + [1] * 8 + [0] + [1] * (n - 9)
    # NaN in a row the file marks as present is refused under either policy, naming the item
    m[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", m)
    for missing in ("fail", "zero"):
        with pytest.raises(MmesidError, match=r"non-finite values \(NaN/inf\), first at item 3"):
            import_precomputed(data, tmp_path / "nan.npy", tmp_path / "c.safetensors", modality="visual",
                               missing=missing)
    # rows a .safetensors mask marks as absent are passed on as absent, whatever they hold
    mask = np.ones(n + 1, dtype=np.uint8)
    mask[[3, 9]] = 0
    save_tensors(tmp_path / "masked.safetensors", {"embedding": torch.from_numpy(m), "mask": torch.from_numpy(mask)})
    res = import_precomputed(data, tmp_path / "masked.safetensors", tmp_path / "d.safetensors", modality="visual")
    t, meta = load_tensors(res.path)
    want[3] = 0
    assert res.n_missing == 2 and meta["n_missing"] == "2"
    assert np.array_equal(t["embedding"].numpy(), want) and t["mask"].tolist() == [0] + mask[1:].tolist()


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


def test_cli_text_image_precomputed_and_exit_codes(tmp_path, prepared, images, tiny_bert, tiny_clip,
                                                   clip_reference, capsys):
    from mmesid.cli import main

    out = tmp_path / "t.safetensors"
    args = ["encode", "text", "--data", str(prepared), "--out", str(out), "--model", str(tiny_bert),
            "--device", "cpu", "--batch-size", "7", "--max-length", "16", "--threads", "1", "--quiet"]
    assert main(args) == 0
    data = SequenceData.load(prepared)
    want = _direct_text(tiny_bert, [it.title for it in data.items], max_length=16)
    assert torch.allclose(load_tensors(out)[0]["embedding"][1:], want, atol=2e-6)
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    stamp = out.stat().st_mtime_ns
    assert main(args + ["--overwrite"]) == 0 and out.stat().st_mtime_ns != stamp
    vout = tmp_path / "v.safetensors"
    assert main(["encode", "image", "--data", str(prepared), "--out", str(vout), "--model", str(tiny_clip),
                 "--images", str(images), "--device", "cpu", "--quiet"]) == 0
    t, meta = load_tensors(vout)
    assert torch.allclose(t["embedding"], clip_reference, atol=2e-6) and meta["modality"] == "visual"
    np.save(tmp_path / "m.npy", clip_reference.numpy())
    pout = tmp_path / "p.safetensors"
    assert main(["encode", "precomputed", "--data", str(prepared), "--out", str(pout),
                 "--input", str(tmp_path / "m.npy"), "--modality", "visual"]) == 0
    assert torch.equal(load_tensors(pout)[0]["embedding"], clip_reference)
    capsys.readouterr()
    # bad input -> one message, exit status 2, nothing written
    refusals = {
        "text model folder not found": ["encode", "text", "--data", str(prepared), "--out", str(out),
                                        "--model", str(tmp_path / "missing-model")],
        "image folder not found": ["encode", "image", "--data", str(prepared), "--out", str(vout),
                                   "--model", str(tiny_clip), "--images", str(tmp_path / "nowhere")],
        "holds visual embeddings, not text": ["encode", "text", "--data", str(prepared), "--out", str(vout),
                                              "--model", str(tiny_bert)],
        "lies inside the input folder": ["encode", "text", "--data", str(prepared), "--out",
                                         str(prepared / "t.safetensors"), "--model", str(tiny_bert)],
        "contains the input": ["encode", "precomputed", "--data", str(prepared), "--out", str(tmp_path / "m.npy"),
                               "--input", str(tmp_path / "m.npy"), "--modality", "visual"],
        "prepared dataset folder not found": ["encode", "text", "--data", str(tmp_path / "no-data"),
                                              "--out", str(tmp_path / "n.safetensors"), "--model", str(tiny_bert)],
    }
    np.save(tmp_path / "bad.npy", np.ones((3, 2), np.float32))
    refusals["3 rows"] = ["encode", "precomputed", "--data", str(prepared), "--out", str(tmp_path / "q.safetensors"),
                          "--input", str(tmp_path / "bad.npy"), "--modality", "text"]
    for msg, argv in refusals.items():
        assert main(argv) == 2, msg
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "q.safetensors").exists() and not (prepared / "t.safetensors").exists()
    assert load_tensors(vout)[1]["modality"] == "visual"
    for flags in (["--batch-size", "0"], ["--threads", "-1"], ["--max-length", "0"], ["--force"],
                  ["--no-progress"]):
        with pytest.raises(SystemExit) as e:
            main(args + flags)
        assert e.value.code == 2, flags


def test_encode_cli_sets_no_environment_at_import():
    import subprocess
    import sys

    code = ("import os; os.environ.pop('HF_HUB_OFFLINE', None); os.environ.pop('TRANSFORMERS_OFFLINE', None); "
            "import mmesid.cli.encode; print(os.environ.get('HF_HUB_OFFLINE'), os.environ.get('TRANSFORMERS_OFFLINE'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "None"]


def _load(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")
