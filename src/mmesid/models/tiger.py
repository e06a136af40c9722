"""TIGER-MM: generative retrieval over multimodal semantic IDs (Rajput et al. 2023, adapted as in the
paper's Table 3).

Each item is a tuple of tokens: the codes of each modality's RQ-VAE (from `mmesid quantize`, c then t
then v) plus one disambiguation code that separates items whose codes collide, as TIGER does. A
history is the concatenation of its items' tuples; an encoder-decoder transformer built from a
transformers `T5Config` (trained from scratch; TIGER's size by default) reads it and generates the
next item's tuple token by token. Decoding is beam search constrained by a prefix trie to tuples
that exist, so every beam is a real item; the beams become scores for the shared evaluator (their
log-probabilities; every other item ranks below every beam item).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..config import bounded
from ..errors import MmesidError

PAD, EOS, FIRST = 0, 1, 2  # token 0 is also T5's decoder start; codes start at FIRST
OUTSIDE_BEAMS = -1e9  # score of every item the beams did not reach (below every log-probability)


@dataclass
class TigerModelConfig:
    d_model: int = bounded(128, ge=8)  # TIGER: 128
    layers: int = bounded(4, ge=1)  # encoder and decoder layers each (TIGER: 4)
    heads: int = bounded(6, ge=1)  # TIGER: 6 heads of 64
    d_kv: int = bounded(64, ge=1)
    d_ff: int = bounded(1024, ge=1)  # TIGER: 1024
    dropout: float = bounded(0.1, ge=0.0, lt=1.0)
    max_len: int = bounded(20, ge=1)  # history items read (TIGER: 20)


class SIDTuples:
    """Every item's token tuple, the trie of valid prefixes, and the way back from a tuple to the item."""

    def __init__(self, sids: dict[str, torch.Tensor], modalities: list[str]):
        missing = [m for m in modalities if m not in sids]
        if missing:
            raise MmesidError(f"the SID export has no semantic IDs for modality {missing[0]!r} "
                              f"(it has {', '.join(sids)})")
        cols, sizes = [], []
        for m in modalities:
            c = sids[m].long().clone()
            size = int(c[1:].max()) + 2  # +1: code value for "no embedding in this modality" (-1)
            c[c < 0] = size - 1
            cols.append(c)
            sizes += [size] * c.shape[1]
        codes = torch.cat(cols, 1)[1:].numpy()  # items 1..n
        dis = _disambiguation(codes)
        sizes.append(int(dis.max()) + 1)
        full = np.concatenate([codes, dis[:, None]], 1)
        offsets = FIRST + np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.tokens = torch.zeros(len(full) + 1, full.shape[1], dtype=torch.long)
        self.tokens[1:] = torch.as_tensor(full + offsets[None, :])
        self.vocab_size = int(FIRST + sum(sizes))
        self.length = full.shape[1]
        self.collisions = int((dis > 0).sum())
        self.item_of = {tuple(t): i + 1 for i, t in enumerate(self.tokens[1:].tolist())}
        self.trie: dict[tuple, list[int]] = {}
        for t in self.tokens[1:].tolist():
            for k in range(self.length):
                self.trie.setdefault(tuple(t[:k]), set()).add(t[k])  # type: ignore[union-attr]
        self.trie = {k: sorted(v) for k, v in self.trie.items()}

    def encoder_inputs(self, histories: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded item histories [B, T] -> right-padded token sequences and their attention mask."""
        h = histories[:, -max_len:]
        toks = self.tokens.to(h.device)[h]  # [B, T', L]; padding items give zero tokens
        real = (h > 0).unsqueeze(-1).expand_as(toks)
        flat, keep = toks.reshape(len(h), -1), real.reshape(len(h), -1)
        n = keep.sum(1)
        width = max(1, int(n.max()))
        out = torch.zeros(len(h), width, dtype=torch.long, device=h.device)
        mask = torch.arange(width, device=h.device).unsqueeze(0) < n.unsqueeze(1)
        out[mask] = flat[keep]
        return out, mask.long()

    def allowed(self, prefix: list[int]) -> list[int]:
        return self.trie.get(tuple(prefix), [EOS])


def _disambiguation(codes: np.ndarray) -> np.ndarray:
    """0 for the first item of each code tuple, 1, 2, ... for the later items with the same tuple."""
    out = np.zeros(len(codes), dtype=np.int64)
    seen: dict[bytes, int] = {}
    for i, row in enumerate(codes):
        key = row.tobytes()
        out[i] = seen.get(key, 0)
        seen[key] = out[i] + 1
    return out


class TigerMM(nn.Module):
    """The seq2seq model plus the constrained decoding that turns it into an item scorer."""

    def __init__(self, tuples: SIDTuples, cfg: TigerModelConfig, n_items: int, beams: int = 20):
        super().__init__()
        from transformers import T5Config, T5ForConditionalGeneration

        t5 = T5Config(vocab_size=tuples.vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
                      num_layers=cfg.layers, num_decoder_layers=cfg.layers, num_heads=cfg.heads,
                      dropout_rate=cfg.dropout, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
                      feed_forward_proj="relu", tie_word_embeddings=True)
        self.t5 = T5ForConditionalGeneration(t5)
        self.tuples, self.cfg, self.n_items, self.beams = tuples, cfg, n_items, beams

    def loss(self, histories: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced cross-entropy of the target items' tuples given the histories."""
        ids, mask = self.tuples.encoder_inputs(histories, self.cfg.max_len)
        labels = self.tuples.tokens.to(ids.device)[targets]
        return self.t5(input_ids=ids, attention_mask=mask, labels=labels).loss

    @torch.no_grad()
    def beam_items(self, histories: torch.Tensor, beams: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Constrained beam search: item numbers [B, beams] (best first) and their log-probabilities."""
        k = beams or self.beams
        ids, mask = self.tuples.encoder_inputs(histories, self.cfg.max_len)
        out = self.t5.generate(input_ids=ids, attention_mask=mask, num_beams=k, num_return_sequences=k,
                               max_new_tokens=self.tuples.length, min_new_tokens=self.tuples.length,
                               prefix_allowed_tokens_fn=lambda b, x: self.tuples.allowed(x[1:].tolist()),
                               output_scores=True, return_dict_in_generate=True, do_sample=False,
                               length_penalty=0.0, early_stopping=True)
        seqs = out.sequences[:, 1:1 + self.tuples.length].tolist()
        items = torch.tensor([self.tuples.item_of.get(tuple(s), 0) for s in seqs]).view(len(ids), k)
        return items, out.sequences_scores.view(len(ids), k).float().cpu()

    @torch.no_grad()
    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        """The evaluator's interface: beam items get their log-probability, every other item
        OUTSIDE_BEAMS (below all of them; the evaluator counts its ties against the target)."""
        self.eval()
        items, logp = self.beam_items(histories)
        s = torch.full((len(items), self.n_items + 1), OUTSIDE_BEAMS)
        for r in range(len(items)):  # first (best) occurrence wins
            for i, v in zip(reversed(items[r].tolist()), reversed(logp[r].tolist())):
                if i > 0:
                    s[r, i] = v
        return s.to(histories.device)
