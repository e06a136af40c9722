"""The prompt: instruction tokens, one input embedding per history item, then the response header.

With a chat template (Llama-3-Instruct) the text is rendered by the tokenizer itself with a marker
where the items go and split there, so the system/user/assistant headers are exactly the model's.
Without one (BERT/MiniLM) a plain "[CLS] system instruction items Response:" layout is used.

Sequences are right-padded: [prefix][item spans][suffix][pad...], so absolute and rotary positions
need no correction. The prediction `o` of a whole history is the hidden state of the last suffix
token; the prediction after the first j items is at the last embedding of item j's span.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MARKER = "<<ITEMS>>"


@dataclass
class PromptTemplate:
    prefix_ids: list[int]
    suffix_ids: list[int]
    text: str  # human-readable rendering, items shown as {items}

    @classmethod
    def build(cls, tokenizer, system: str, instruction: str) -> "PromptTemplate":
        user = f"{instruction} {MARKER}"
        if getattr(tokenizer, "chat_template", None):
            msgs = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            before, after = text.split(MARKER, 1)
            pre = tokenizer(before, add_special_tokens=False)["input_ids"]
            suf = tokenizer(after, add_special_tokens=False)["input_ids"]
        else:
            before, after = f"{system} {instruction} ", " Response:"
            pre = tokenizer(before, add_special_tokens=False)["input_ids"]
            suf = tokenizer(after, add_special_tokens=False)["input_ids"]
            start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
            if start is not None:
                pre = [start] + pre
            text = before + MARKER + after
        if not suf:
            raise ValueError("prompt suffix is empty; the prediction position would be an item")
        return cls(list(pre), list(suf), text.replace(MARKER, "{items}"))


def right_align_lengths(histories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded [B, T] histories -> (right-padded [B, T], lengths [B])."""
    lengths = (histories > 0).sum(1)
    B, T = histories.shape
    shift = T - lengths  # number of leading pads
    idx = (torch.arange(T, device=histories.device).unsqueeze(0) + shift.unsqueeze(1)) % T
    right = histories.gather(1, idx)
    pos = torch.arange(T, device=histories.device).unsqueeze(0)
    right = torch.where(pos < lengths.unsqueeze(1), right, torch.zeros_like(right))
    return right, lengths


def assemble(prefix: torch.Tensor, suffix: torch.Tensor, items: torch.Tensor, lengths: torch.Tensor,
             span: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build the backbone input.

    prefix [P, D], suffix [S, D]: token embeddings; items [B, T*span, D]: right-padded item embeddings
    (span embeddings per item); lengths [B] real items per row.
    Returns (inputs_embeds [B, P + T*span + S, D], attention_mask [B, ...], final_pos [B]).
    """
    B, TS, D = items.shape
    P, S = prefix.shape[0], suffix.shape[0]
    L = P + TS + S
    out = torch.zeros(B, L, D, dtype=items.dtype, device=items.device)
    out[:, :P] = prefix.to(items.dtype)
    out[:, P:P + TS] = items
    rows = torch.arange(B, device=items.device).unsqueeze(1)
    suf_pos = P + lengths.unsqueeze(1) * span + torch.arange(S, device=items.device).unsqueeze(0)
    out[rows, suf_pos] = suffix.to(items.dtype).unsqueeze(0).expand(B, S, D)
    end = P + lengths * span + S  # exclusive
    mask = (torch.arange(L, device=items.device).unsqueeze(0) < end.unsqueeze(1)).long()
    return out, mask, end - 1


def history_positions(n_prefix: int, T: int, span: int, device=None) -> torch.Tensor:
    """Position of the last embedding of each of the T item spans (its hidden state predicts the next item)."""
    return n_prefix + (torch.arange(T, device=device) + 1) * span - 1
