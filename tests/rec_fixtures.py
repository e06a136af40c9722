"""Tiny synthetic inputs for the fine-tuning tests: a random Llama, item embeddings, a quantiser export.

Nothing here is downloaded: the tiny Llama reuses the offline MiniLM tokenizer (with a small chat
template, so the chat-template prompt path is exercised too). Files are written by the artefact
owners (`write_item_embedding`, `write_sid_export`), so the tests read exactly the real format.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mmesid.artifacts.embeddings import MODALITY_NAMES, write_item_embedding
from mmesid.artifacts.sid_export import write_sid_export
from mmesid.rec.backbone import default_backbone_path

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def tiny_llama(folder: str | Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer LlamaModel plus a tokenizer with a chat template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    folder = Path(folder)
    tok = AutoTokenizer.from_pretrained(default_backbone_path())
    tok.chat_template = CHAT_TEMPLATE
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    LlamaModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def random_embeddings(folder: str | Path, n_items: int, dims: dict[str, int], seed: int = 0,
                      fingerprint: str | None = None) -> dict[str, str]:
    """E_j files in the project's embedding format (row 0 zeros); returns {modality: path}."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for j, d in dims.items():
        e = torch.randn(n_items + 1, d, generator=g)
        p = Path(folder) / f"E_{j}.safetensors"
        write_item_embedding(p, e, modality=MODALITY_NAMES[j], encoder="random", data_fingerprint=fingerprint)
        out[j] = str(p)
    return out


def fake_export(folder: str | Path, n_items: int, modalities=("c", "t"), levels: int = 3, codes: int = 8,
                d_latent: int = 16, seed: int = 0, fingerprint: str | None = None) -> Path:
    """A quantiser export in the exact on-disk format (random SIDs and codebooks)."""
    g = torch.Generator().manual_seed(seed)
    sids, books, tables = {}, {}, {}
    for j in modalities:
        s = torch.randint(0, codes, (n_items + 1, levels), generator=g)
        s[0] = -1
        sids[j] = s.long()
        books[j] = torch.randn(levels, codes, d_latent, generator=g)
    for j in modalities:
        z = torch.zeros(n_items + 1, d_latent)
        tables[j] = {"z": z, "z_hat": z.clone(), "s_hat": z.clone(),
                     "mask": torch.ones(n_items + 1, dtype=torch.bool)}
    return write_sid_export(folder, sids, books, tables, {}, data_fingerprint=fingerprint)


def _llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp stores q/k rows interleaved per rotary pair; the GGUF loader undoes this."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
              "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}


def tiny_llama_gguf(path: str | Path, hidden: int = 32, layers: int = 2, seed: int = 0):
    """Write a random tiny LlamaForCausalLM as an F32 GGUF file (llama.cpp's names and q/k layout, a
    byte-level BPE vocabulary, a ChatML chat template); returns (path, the HF model it holds)."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = list(bytes_to_unicode().values()) + ["\u0120t", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [1] * (len(tokens) - 3) + [3, 3, 3]
    cfg = LlamaConfig(vocab_size=len(tokens), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(512)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(2 * hidden)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_dimension_count(hidden // 4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["\u0120 t"])
    w.add_bos_token_id(len(tokens) - 2)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_chat_template(CHAT_TEMPLATE)
    sd = model.state_dict()
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"].numpy())
    w.add_tensor("output_norm.weight", sd["model.norm.weight"].numpy())
    for i in range(layers):
        for hf, gg in GGUF_NAMES.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if gg in ("attn_q", "attn_k"):
                t = _llama_cpp_permute(t, 4 if gg == "attn_q" else 2)
            w.add_tensor(f"blk.{i}.{gg}.weight", t.contiguous().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path), model
