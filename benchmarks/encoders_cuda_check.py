"""CUDA check of the encoders (run on a GPU machine): CPU vs CUDA agreement on tiny random models,
then the Beauty titles with MiniLM on CUDA (float32 and float16), timed.

    python benchmarks/encoders_cuda_check.py --minilm DIR --beauty PREPARED --out RESULTS_DIR

DIR is a MiniLM folder (config, tokenizer, weights); PREPARED a prepared Beauty folder. Writes
`cuda_check.json` and `beauty_cuda_sample.safetensors` (rows of a fixed item sample, to compare
with the CPU file) into RESULTS_DIR.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from mmesid.data.synthetic import SyntheticConfig, generate, write_images
from mmesid.encoders import encode_text, text_encoder
from mmesid.encoders.image import ImageSource, encode_images, image_encoder
from mmesid.io import load_tensors, save_tensors

TOK = ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def tiny_models(root: Path, minilm: Path) -> tuple[Path, Path]:
    from transformers import BertConfig, BertModel, CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    bert = root / "bert"
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(bert)
    clip = root / "clip"
    CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64,
                         bos_token_id=101, eos_token_id=102, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8), projection_dim=16)).save_pretrained(clip)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(clip)
    for d in (bert, clip):
        for f in TOK:
            shutil.copy(minilm / f, d / f)
    return bert, clip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minilm", type=Path, required=True)
    ap.add_argument("--beauty", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda", help="cpu only to dry-run this script")
    ap.add_argument("--skip-beauty", action="store_true")
    ap.add_argument("--n-items", type=int, default=12086)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gpu = args.device
    if gpu == "cuda":
        assert torch.cuda.is_available(), "no CUDA"
    res: dict = {"gpu": torch.cuda.get_device_name(0) if gpu == "cuda" else "cpu", "torch": torch.__version__}
    half = "float16" if gpu == "cuda" else "bfloat16"
    root = Path(tempfile.mkdtemp())
    bert, clip = tiny_models(root, args.minilm)
    cfg = SyntheticConfig(n_users=80, n_items=48, n_categories=6, seed=3)
    data = generate(cfg)
    imgs = write_images(data, root / "img", cfg)
    titles = [it.title for it in data.items]
    for pooling in ("mean", "cls", "last"):
        a = text_encoder(bert, pooling=pooling, device="cpu").encode(titles)
        for dt in ("float32", half):
            b = text_encoder(bert, pooling=pooling, device=gpu, dtype=dt).encode(titles)
            res[f"tiny_bert_{pooling}_{dt}_maxdiff"] = (a - b.cpu()).abs().max().item()
    a = text_encoder(clip, device="cpu").encode(titles)
    b = text_encoder(clip, device=gpu, dtype="float32").encode(titles)
    res["tiny_clip_text_float32_maxdiff"] = (a - b.cpu()).abs().max().item()
    outs = {}
    for dev, dt in (("cpu", "float32"), (gpu, "float32"), (gpu, half)):
        enc = image_encoder(clip, device=dev, dtype=dt)
        r = encode_images(data, enc, ImageSource(image_dir=imgs), root / f"v_{dev}_{dt}.safetensors",
                          batch_size=16, progress=False)
        outs[(dev, dt)] = load_tensors(r.path)[0]["embedding"]
    res["tiny_clip_image_float32_maxdiff"] = (outs[("cpu", "float32")] - outs[(gpu, "float32")]).abs().max().item()
    res[f"tiny_clip_image_{half}_maxdiff"] = (outs[("cpu", "float32")] - outs[(gpu, half)]).abs().max().item()
    if args.skip_beauty:
        print(json.dumps(res, indent=2))
        return
    # Beauty titles with MiniLM on CUDA: model loaded outside the timer, each dtype twice, alternating
    sample = torch.arange(1, args.n_items + 1, 24)
    encs = {dt: text_encoder(args.minilm, kind="hf", pooling="mean", device=gpu, dtype=dt)
            for dt in ("float32", half)}
    for rep in range(2):
        for dt, enc in encs.items():
            enc.load()
            if gpu == "cuda":
                torch.cuda.synchronize()
            t0 = time.time()
            r = encode_text(args.beauty, enc, root / f"beauty_{dt}_{rep}.safetensors", batch_size=256,
                            progress=False)
            if gpu == "cuda":
                torch.cuda.synchronize()
            res.setdefault(f"beauty_minilm_{dt}_bs256_seconds", []).append(round(time.time() - t0, 2))
            if rep == 0:
                emb = load_tensors(r.path)[0]["embedding"]
                save_tensors(args.out / f"beauty_cuda_{dt}_sample.safetensors",
                             {"embedding": emb[sample], "ids": sample})
    if gpu == "cuda":
        res["peak_cuda_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(res, indent=2))
    (args.out / "cuda_check.json").write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
