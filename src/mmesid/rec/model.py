"""The LLM sequential recommender: item inputs -> prompt -> frozen LLM (+LoRA) -> o -> item scores.

One class serves MME-SID, its ablations and the LLM-based baselines; the variant lives entirely in
`ItemInputs` (and whether the frequency-aware fusion is used).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MmesidError
from .backbone import Backbone, merge_lora
from .fusion import FrequencyFusion
from .inputs import ItemInputs
from .prompt import PromptTemplate, assemble, history_positions, right_align_lengths


class LLMRecommender(nn.Module):
    def __init__(self, backbone: Backbone, inputs: ItemInputs, freq, prompt: PromptTemplate, fusion: bool,
                 fusion_hidden: list[int], fusion_temperature: float = 1.0, seed: int = 0,
                 cache_prefix: bool = True, target_init: str = "random", fusion_mode: str = "gate"):
        super().__init__()
        self.llm = backbone.model
        self.backbone_name = backbone.name
        self.inputs = inputs
        self.prompt = prompt
        self.register_buffer("prefix_ids", torch.tensor(prompt.prefix_ids, dtype=torch.long), persistent=False)
        self.register_buffer("suffix_ids", torch.tensor(prompt.suffix_ids, dtype=torch.long), persistent=False)
        self.E_x = nn.Parameter(self._initial_targets(inputs, backbone.hidden_size, target_init, seed))
        if fusion_mode not in ("gate", "sum"):
            raise MmesidError(f"unknown fusion_mode {fusion_mode!r} (known: gate, sum)")
        self.use_fusion = fusion
        self.fusion_mode = fusion_mode if fusion else None
        self.fusion = (FrequencyFusion(freq, 1 + len(inputs.modalities), fusion_hidden, fusion_temperature)
                       if fusion and fusion_mode == "gate" else None)
        self.n_prefix = len(prompt.prefix_ids)
        self.cache_prefix = cache_prefix
        self._frozen_prefix = None  # inference-time prefix cache, see _prefix_cache

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _initial_targets(inputs: ItemInputs, hidden: int, how: str, seed: int) -> torch.Tensor:
        """The new target-item table E_x [n_items + 1, D] at initialisation (row 0: padding).

        "random" is the paper's: E_x starts with no knowledge of the items. "collaborative" starts it at
        each item's projected collaborative embedding W_c E_c[i] + b_c (the projection's own
        initialisation), so <o, E_x[i]> starts equal to the fusion's collaborative source and E_x only
        has to learn item-specific corrections. Why it exists: with a random E_x the frequency-aware
        fusion settles on the collaborative source within the first steps (w_c ~ 1 for every item on
        Beauty), E_x's gradient is scaled by w_x ~ 0 and the table never trains (BENCHMARKS.md). Screened
        there, it does not change that: the gate still drops E_x, and validation is unchanged.
        """
        if how == "random":
            gen = torch.Generator().manual_seed(seed + 1)
            ex = torch.randn(inputs.n_rows, hidden, generator=gen) * 0.02
        elif how == "collaborative":
            if "c" not in inputs.modalities:
                raise MmesidError("target_init = 'collaborative' needs the collaborative modality (--emb c=...)")
            with torch.no_grad():
                ex = inputs.projected("c").detach().float().clone()
        else:
            raise MmesidError(f"unknown target_init {how!r} (known: random, collaborative)")
        ex[0] = 0
        return ex

    def _embed_dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    def source_scores(self, o: torch.Tensor) -> list[torch.Tensor]:
        """[N, n_items + 1] score matrices: <o, E_x[i]>, then <o, P_j(E_j[i])> for each fused modality.

        <o, W_j E_j[i] + b_j> is computed as (o W_j) E_j[i] + <o, b_j>: the same numbers without
        projecting the whole catalogue every step (the catalogue is much larger than a batch).
        """
        out = [o @ self.E_x.T]
        if self.use_fusion:
            for j in self.inputs.modalities:
                lin = self.inputs.proj[j]
                e = getattr(self.inputs, f"E_{j}").to(o.dtype)
                out.append((o @ lin.weight.to(o.dtype)) @ e.T + (o @ lin.bias.to(o.dtype)).unsqueeze(1))
        return out

    def score(self, o: torch.Tensor) -> torch.Tensor:
        """Fusion off: <o, E_x[i]>. "gate" (paper, eq. 18): frequency-aware weights per item and source.
        "sum" (ours, an option): every source with weight 1, i.e. <o, E_x[i] + sum_j (W_j E_j[i] + b_j)>:
        the item's output embedding is E_x plus its projected modalities, so no source can be switched
        off (the gate settles on one source on Beauty; README "Improvements")."""
        if not self.use_fusion:
            return o @ self.E_x.T
        if self.fusion_mode == "sum":
            return sum(self.source_scores(o))
        return self.fusion(self.source_scores(o))

    def _cache_kwarg(self) -> str:
        import inspect

        base = self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm
        return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    def hidden(self, right: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Right-padded histories [B, T] -> (hidden states [B, L', D], final position [B], offset).

        With `cache_prefix` the instruction prefix (identical for every user) runs once with batch 1
        and its keys/values are shared by the batch: a causal model gives exactly the same hidden
        states, at a fraction of the cost. `hs` then starts after the prefix, and `offset` says where
        the item spans start inside `hs`.
        """
        B, T = right.shape
        emb = self.llm.get_input_embeddings()
        items = self.inputs(right)  # [B, T, span, D]
        span = items.shape[-2]
        dt = self._embed_dtype()
        items = items.reshape(B, T * span, -1).to(dt)
        prefix = emb(self.prefix_ids).to(dt)
        suffix = emb(self.suffix_ids).to(dt)
        if self.cache_prefix:
            cache = self._prefix_cache(prefix)
            cache.batch_repeat_interleave(B)
            x, mask, final = assemble(prefix[:0], suffix, items, lengths, span)
            P = prefix.shape[0]
            mask = torch.cat([mask.new_ones(B, P), mask], 1)
            out = self.llm(inputs_embeds=x, attention_mask=mask, use_cache=False, **{self._cache_kwarg(): cache})
            offset = 0
        else:
            x, mask, final = assemble(prefix, suffix, items, lengths, span)
            out = self.llm(inputs_embeds=x, attention_mask=mask)
            offset = self.n_prefix
        hs = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return hs, final, offset

    def _prefix_cache(self, prefix: torch.Tensor):
        """Keys/values of the instruction prefix (batch 1). In training they depend on the LoRA weights
        being trained, so they are computed every time; at inference (eval mode, no gradients) they are
        computed once and copied for each batch, until the model is trained or loaded again."""
        frozen = not self.training and not torch.is_grad_enabled()
        if frozen and self._frozen_prefix is not None:
            return copy.deepcopy(self._frozen_prefix)
        pre = self.llm(inputs_embeds=prefix.unsqueeze(0), use_cache=True)
        cache = getattr(pre, "cache", None) or getattr(pre, "past_key_values", None)
        if frozen:
            self._frozen_prefix = copy.deepcopy(cache)
        return cache

    def train(self, mode: bool = True):
        self._frozen_prefix = None
        return super().train(mode)

    # ------------------------------------------------------------------ training
    def forward(self, right: torch.Tensor, lengths: torch.Tensor, pos_targets: torch.Tensor,
                final_targets: torch.Tensor, loss: str = "ce", contrastive_weight: float = 0.0,
                contrastive_temperature: float = 0.07) -> dict:
        """right [B, T] right-padded histories; pos_targets [B, T]: the item the hidden state at history
        position j must predict (0 = none); final_targets [B]: the target of the whole prompt."""
        hs, final, offset = self.hidden(right, lengths)
        B, T = right.shape
        span = self.inputs.span
        rows = torch.arange(B, device=hs.device)
        o_final = hs[rows, final]
        os_, ts = [o_final], [final_targets]
        sel = pos_targets > 0
        if sel.any():
            pos = history_positions(offset, T, span, hs.device)
            o_hist = hs[:, pos][sel]
            os_.append(o_hist)
            ts.append(pos_targets[sel])
        o = torch.cat(os_).float()
        t = torch.cat(ts)
        s = self.score(o).float()
        s = s.index_fill(1, torch.zeros(1, dtype=torch.long, device=s.device), -1e9)  # padding: no candidate
        if loss == "ce":
            rec = F.cross_entropy(s, t)
        else:  # BCE over all items: one positive, every other item a negative
            y = torch.zeros_like(s)
            y[torch.arange(len(t), device=s.device), t] = 1.0
            rec = F.binary_cross_entropy_with_logits(s[:, 1:], y[:, 1:], reduction="sum") / len(t)
        out = {"loss": rec, "rec_loss": rec.detach(), "n_targets": len(t)}
        if contrastive_weight > 0 and self.inputs.spec.contrastive:
            cl = self.inputs.contrastive_loss(torch.cat([right.flatten(), t]), contrastive_temperature)
            out["loss"] = rec + contrastive_weight * cl
            out["contrastive_loss"] = cl.detach()
        return out

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def user_states(self, histories: torch.Tensor) -> torch.Tensor:
        """Left-padded histories [B, T] -> o [B, D], the last hidden state that every item score reads."""
        right, lengths = right_align_lengths(histories.to(self.E_x.device))
        hs, final, _ = self.hidden(right, lengths)
        return hs[torch.arange(len(final), device=hs.device), final].float()  # bf16 backbone -> fp32 scoring

    @torch.no_grad()
    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        """Left-padded histories [B, T] -> scores [B, n_items + 1] (the evaluator's interface).

        The item scores are computed in fp32 even under bf16 autocast: bf16 keeps ~3 significant digits,
        too few to rank a whole catalogue (on Beauty bf16 scoring cost 2.3% of test nDCG@10, fp32 scoring
        of the same bf16-trained weights none; BENCHMARKS.md section 10), and they are ~1% of the FLOPs."""
        o = self.user_states(histories)
        with torch.autocast(o.device.type, enabled=False):
            return self.score(o).float()

    @contextmanager
    def lora_merged(self):
        """Inference with every LoRA update folded into its base weight (`backbone.merge_lora`); on exit the
        weights, and the inference prefix cache computed from them, are exactly as before."""
        restore = merge_lora(self.llm)
        self._frozen_prefix = None
        try:
            yield self
        finally:
            restore()
            self._frozen_prefix = None

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self._frozen_prefix = None
        own = dict(self.named_parameters())
        missing = [n for n, p in own.items() if p.requires_grad and n not in state]
        unknown = [n for n in state if n not in own]
        if missing or unknown:
            raise RuntimeError(f"trainable weights do not match the model: missing {missing[:3]}, "
                               f"unknown {unknown[:3]}")
        with torch.no_grad():
            for n, v in state.items():
                own[n].copy_(v.to(own[n].dtype))
