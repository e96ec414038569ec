"""TransformerSeq2Seq: the encoder-decoder Transformer of Vaswani et al. 2017, configurable to
compute what pretrained Marian, BART and T5 checkpoints compute.

proselab's own preset is pre-LN (layer norms at the sublayer inputs and after the last block,
as GPT-2; Xiong et al. 2020 show it trains without the careful warmup post-LN needs),
embeddings scaled by sqrt(n_embd) plus sinusoidal positions (no length built in), a tanh-GELU
feed-forward, and the output projection tied to the target embedding (``share_embeddings``
ties source and target too). The ModelConfig fields of the seq2seq transformer section switch
each choice (post-LN, RMSNorm, learned or relative positions, ...); the parts are in encdec.py.

Decoding state (``TransformerState``): per-layer self-attention KV caches, written in place
and grown by doubling, and the cross-attention keys and values of the encoder memory,
computed once in ``start``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..config import ModelConfig
from ..data.batch import Seq2SeqBatch
from .encdec import LEARNED_OFFSET, Attention, FeedForward, RelativeBias, causal_mask, make_norm, sinusoids
from .kv_cache import reorder_rows_
from .layers import head_loss, lm_loss
from .prepack import fused
from .protocol import memory_rows

__all__ = ["TransformerSeq2Seq", "TransformerState", "sinusoids"]


def _sublayer(x: Tensor, norm: nn.Module, f, pre: bool) -> Tensor:
    """A residual sublayer: x + f(norm(x)) (pre-LN) or norm(x + f(x)) (post-LN)."""
    return x + f(norm(x)) if pre else norm(x + f(x))


class EncoderBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1, self.attn = make_norm(cfg), Attention(cfg)
        self.ln_2, self.mlp = make_norm(cfg), FeedForward(cfg)
        self.pre = cfg.norm_first

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, S, C) -> (B, S, C); ``mask`` bool (B, 1, 1, S) or an additive float bias (B, nh, S, S)."""
        x = _sublayer(x, self.ln_1, lambda h: self.attn(h, mask)[0], self.pre)
        return _sublayer(x, self.ln_2, self.mlp, self.pre)


class DecoderBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1, self.attn = make_norm(cfg), Attention(cfg)
        self.ln_2, self.cross = make_norm(cfg), Attention(cfg, cross=True)
        self.ln_3, self.mlp = make_norm(cfg), FeedForward(cfg)
        self.pre = cfg.norm_first

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor, cache: tuple[Tensor, Tensor] | None = None,
                pos: int = 0, need_weights: bool = False, group: int = 1,
                self_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """x (B, T, C) -> (B, T, C); rows b * group ... b * group + group - 1 attend over memory row b
        (k, v (Bm, nh, S, hs), ``mask`` (Bm, 1, 1, S)); ``self_mask`` (bool, or an additive float
        bias) is the self-attention's mask over [0, pos + T), None = all of it."""
        x = _sublayer(x, self.ln_1, lambda h: self.attn(h, self_mask, cache, pos)[0], self.pre)
        weights = None

        def cross(h: Tensor) -> Tensor:
            nonlocal weights
            # a group's rows become one memory row's queries: cross-attention has no causal mask
            y, weights = self.cross(h.reshape(-1, group * h.size(1), h.size(2)), mask, kv=(k, v),
                                    need_weights=need_weights)
            return y.reshape(h.shape)

        x = _sublayer(x, self.ln_2, cross, self.pre)
        return _sublayer(x, self.ln_3, self.mlp, self.pre), weights


def _select_slots(cache: Tensor, index: Tensor, n: int) -> Tensor:
    """Rows ``index`` of ``cache`` (L, B, nh, capacity, hs) in a new buffer of the same capacity,
    copying only the slots in use [0, n): beam search reorders every step, and the slots past
    n are scratch (up to half the buffer after a doubling)."""
    out = cache.new_empty(cache.size(0), index.numel(), *cache.shape[2:])  # (L, B', nh, capacity, hs)
    torch.index_select(cache[:, :, :, :n], 1, index, out=out[:, :, :, :n])  # writes into the view
    return out


def _doubled(cache: Tensor) -> Tensor:
    """``cache`` (L, B, nh, capacity, hs) in a buffer of twice the capacity; the new slots are
    left uninitialised (scratch, as in _select_slots), not zero-filled."""
    out = cache.new_empty(*cache.shape[:3], 2 * cache.size(3), cache.size(4))
    out[:, :, :, : cache.size(3)] = cache
    return out


@dataclass
class TransformerState:
    k: Tensor  # (n_dec_layer, B, nh, capacity, hs) self-attention keys, written in place
    v: Tensor  # (n_dec_layer, B, nh, capacity, hs) self-attention values
    cross_k: Tensor  # (n_dec_layer, Bm, nh, S, hs) keys of the encoder memory, one row per source
    cross_v: Tensor  # (n_dec_layer, Bm, nh, S, hs) values of the encoder memory
    mask: Tensor  # (Bm, 1, 1, S) bool, True on real source tokens
    length: int  # cache slots in use
    group: int = 1  # decoder rows per memory row (B = Bm * group): see protocol.memory_rows
    start: Tensor | None = None  # (B,) the slot where each row's tokens begin (merged states); None = 0


class TransformerSeq2Seq(nn.Module):
    """Transformer encoder-decoder; implements the Decoder protocol."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.bos_id >= 0, "model.bos_id must be set (from the target tokenizer) before building a seq2seq model"
        self.config = cfg
        C = cfg.n_embd
        self.label_smoothing = 0.0  # set by the trainer; applied in training mode only
        self.src_emb = nn.Embedding(cfg.src_vocab_size or cfg.vocab_size, C)
        self.tgt_emb = self.src_emb if cfg.share_embeddings else nn.Embedding(cfg.vocab_size, C)
        learned, relative = cfg.positions == "learned", cfg.positions == "relative"
        self.src_pos = nn.Embedding(cfg.block_size + LEARNED_OFFSET, C) if learned else None
        self.tgt_pos = nn.Embedding(cfg.block_size + LEARNED_OFFSET, C) if learned else None
        self.enc_rel = RelativeBias(cfg, bidirectional=True) if relative else None
        self.dec_rel = RelativeBias(cfg, bidirectional=False) if relative else None
        self.src_emb_ln = make_norm(cfg) if cfg.embed_norm else None
        self.tgt_emb_ln = make_norm(cfg) if cfg.embed_norm else None
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_layer))
        self.enc_ln = make_norm(cfg) if cfg.norm_first else None  # post-LN blocks end normed already
        self.decoder = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_dec_layer or cfg.n_layer))
        self.dec_ln = make_norm(cfg) if cfg.norm_first else None
        self.head = nn.Linear(C, cfg.vocab_size, bias=False)
        if cfg.logits_bias:  # a buffer, as in transformers: fine-tuning leaves it as it is
            self.register_buffer("logits_bias", torch.zeros(cfg.vocab_size))
        else:
            self.logits_bias = None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections, scaled as in GPT-2
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(3 * cfg.n_layer))
        if cfg.tie_weights:
            self.head.weight = self.tgt_emb.weight  # Press & Wolf 2017; Vaswani et al. tie all three

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            # N(0, 1/C) and a sqrt(C) scale in _embed, as in fairseq: unit-size inputs, and a tied
            # head whose logits start small
            nn.init.normal_(module.weight, mean=0.0, std=self.config.n_embd ** -0.5)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _embed(self, side: str, ids: Tensor, pos: Tensor) -> Tensor:
        """Token ids (B, T) at positions ``pos`` (T,) or (B, T) -> the blocks' input (B, T, C)."""
        emb, table, norm = ((self.src_emb, self.src_pos, self.src_emb_ln) if side == "src"
                            else (self.tgt_emb, self.tgt_pos, self.tgt_emb_ln))
        x = emb(ids)
        if self.config.embed_scale:
            x = x * math.sqrt(self.config.n_embd)
        if self.config.positions == "sinusoidal":
            x = x + sinusoids(pos, self.config.n_embd).to(x.dtype)
        elif table is not None:
            if int(pos.max()) + LEARNED_OFFSET >= table.num_embeddings:
                raise ValueError(f"a {side} of {int(pos.max()) + 1} tokens is longer than the model's learned "
                                 f"positions (model.block_size={self.config.block_size}); cut sources with "
                                 "data.truncate_src and targets with data.max_tgt_len or max_new_tokens")
            x = x + table(pos + LEARNED_OFFSET)
        return self.drop(norm(x) if norm is not None else x)

    def _logits(self, h: Tensor) -> Tensor:
        h = self._head_input(h)
        if self.logits_bias is None:
            return self.head(h)
        if torch.is_grad_enabled():
            return self.head(h) + self.logits_bias
        # decoding: the bias inside the head's matmul on CPU, else added in place (no second (B, V) tensor)
        logits = fused(self.head, h, bias=self.logits_bias)
        return self.head(h).add_(self.logits_bias) if logits is None else logits

    def _head_input(self, h: Tensor) -> Tensor:
        # T5 v1.0 rescales before its tied head (Mesh TensorFlow's convention)
        return h * self.config.n_embd ** -0.5 if self.config.head_scale else h

    def encode(self, batch: Seq2SeqBatch) -> tuple[Tensor, Tensor]:
        """Encoder output (B, S, C) and the attention mask (B, 1, 1, S) of the source."""
        mask = batch.mask[:, None, None, :]  # (B, 1, 1, S)
        pos = torch.arange(batch.src.size(1), device=batch.src.device)  # (S,)
        x = self._embed("src", batch.src, pos)
        attn_mask = mask
        if self.enc_rel is not None:  # relative position bias + the padding mask, shared by every layer
            attn_mask = self.enc_rel(pos, pos).to(x.dtype).masked_fill(~mask, float("-inf"))  # (B, nh, S, S)
        for block in self.encoder:
            x = block(x, attn_mask)
        return (self.enc_ln(x) if self.enc_ln is not None else x), mask

    def _self_mask(self, queries: Tensor, n_keys: int, allowed: Tensor, dtype: torch.dtype) -> Tensor:
        """The decoder self-attention's mask: ``allowed`` bool (B or 1, 1, T, S), with T5's
        relative bias for ``queries`` (T,) over keys [0, n_keys) an additive float one."""
        if self.dec_rel is None:
            return allowed
        keys = torch.arange(n_keys, device=queries.device)  # (S,)
        return self.dec_rel(queries, keys).to(dtype).masked_fill(~allowed, float("-inf"))  # (B, nh, T, S)

    def _hidden(self, batch: Seq2SeqBatch, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        memory, mask = self.encode(batch)
        T = batch.tgt.size(1)
        pos = torch.arange(T, device=batch.tgt.device)  # (T,)
        x = self._embed("tgt", batch.tgt, pos)
        self_mask = self._self_mask(pos, T, causal_mask(T, T, x.device)[None, None], x.dtype)
        weights = None
        for i, block in enumerate(self.decoder):
            k, v = block.cross.memory(memory)
            x, weights = block(x, k, v, mask, need_weights=need_weights and i == len(self.decoder) - 1,
                               self_mask=self_mask)
        return (self.dec_ln(x) if self.dec_ln is not None else x), weights

    def forward(self, batch: Seq2SeqBatch, targets: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """Teacher-forced logits and the loss.

        Args:
            batch: source ids and mask, and decoder inputs ``tgt`` (B, T) (bos + target).
            targets: (B, T) the next tokens (target + eos); -100 marks padding.

        Returns:
            Without targets: logits (B, T, V) and None. With targets: the mean cross-entropy
            (label-smoothed in training mode), computed by ``head_loss`` without materializing
            float32 logits, and None for the logits (a LoRA-adapted head: its logits and the loss).
        """
        h, _ = self._hidden(batch)
        if targets is None:
            return self._logits(h), None
        smoothing = self.label_smoothing if self.training else 0.0
        if type(self.head) is nn.Linear:  # a LoRA head needs its own forward
            return None, head_loss(self._head_input(h), self.head.weight, targets, self.logits_bias, smoothing)
        logits = self._logits(h)
        return logits, lm_loss(logits, targets, smoothing)

    @torch.no_grad()
    def cross_attention(self, batch: Seq2SeqBatch) -> Tensor:
        """Last decoder layer's cross-attention, averaged over heads: (B, T, S) for the inputs ``batch.tgt``."""
        _, weights = self._hidden(batch, need_weights=True)
        return weights.mean(dim=1)

    @torch.no_grad()
    def start(self, batch: Seq2SeqBatch) -> tuple[Tensor, TransformerState]:
        """Encode the source and feed the decoder's start token: logits (B, V) for the first target token."""
        memory, mask = self.encode(batch)
        cross = [block.cross.memory(memory) for block in self.decoder]
        B, C, nh = memory.size(0), self.config.n_embd, self.config.n_head
        # grown by doubling in step. Uninitialised: slots are read only once written, and the
        # memory pages of a slot are touched only when it is, so a short output never pays for
        # a long cache; 64 slots saved BART-base's beam search (32 tokens) a doubling's copy
        capacity = min((batch.max_new_tokens or 63) + 1, 64)
        cache = memory.new_empty(len(self.decoder), B, nh, capacity, C // nh)
        state = TransformerState(cache, torch.empty_like(cache), torch.stack([k for k, _ in cross]),
                                 torch.stack([v for _, v in cross]), mask, 0)
        bos = batch.src.new_full((B,), self.config.bos_id)
        return self.step(bos, state)

    @torch.no_grad()
    def step(self, tokens: Tensor, state: TransformerState) -> tuple[Tensor, TransformerState]:
        """One target token per row (B,) -> logits (B, V) and the state (its cache written in place)."""
        if state.length == state.k.size(3):  # full: double the cache (slots past length are never read)
            state.k, state.v = _doubled(state.k), _doubled(state.v)
        n, allowed = state.length, None
        here = torch.full((1,), n, dtype=torch.long, device=tokens.device)  # (1,) this token's slot
        if state.start is None:
            x = self._embed("tgt", tokens[:, None], here)  # (B, 1, C)
        else:  # rows of merged states: each at its own position, blind to the slots before its start
            x = self._embed("tgt", tokens[:, None], (n - state.start)[:, None])  # (B, 1, C)
            allowed = (torch.arange(n + 1, device=tokens.device)[None] >= state.start[:, None])[:, None, None]
        if self.dec_rel is not None:  # relative positions: key - query is the same in every row
            ones = torch.ones(1, 1, 1, n + 1, dtype=torch.bool, device=tokens.device)
            allowed = self._self_mask(here, n + 1, ones if allowed is None else allowed, x.dtype)
        for i, block in enumerate(self.decoder):
            x, _ = block(x, state.cross_k[i], state.cross_v[i], state.mask, (state.k[i], state.v[i]), n,
                         group=state.group, self_mask=allowed)
        state.length += 1
        h = self.dec_ln(x) if self.dec_ln is not None else x
        return self._logits(h[:, 0]), state

    @torch.no_grad()
    def extend(self, tokens: Tensor, state: TransformerState) -> tuple[Tensor, TransformerState]:
        """Feed K target tokens per row in one pass and return the logits after each: tokens
        (B, K) -> (B, K, V), the caches written in place (as ``step``'s). Speculative decoding
        checks a draft's K tokens this way; ``truncate`` takes back the ones it rejects. The
        rows must share their start (not a merged batch's state)."""
        B, K = tokens.shape
        assert state.start is None and 0 < K <= self.room(state), f"extend takes 1 to {self.room(state)} tokens"
        while state.length + K > state.k.size(3):
            state.k, state.v = _doubled(state.k), _doubled(state.v)
        n = state.length
        pos = torch.arange(n, n + K, device=tokens.device)  # (K,)
        x = self._embed("tgt", tokens, pos)  # (B, K, C)
        allowed = self._self_mask(pos, n + K, causal_mask(K, n + K, tokens.device)[None, None], x.dtype)
        for i, block in enumerate(self.decoder):
            x, _ = block(x, state.cross_k[i], state.cross_v[i], state.mask, (state.k[i], state.v[i]), n,
                         group=state.group, self_mask=allowed)
        state.length += K
        h = self.dec_ln(x) if self.dec_ln is not None else x
        return self._logits(h), state

    def truncate(self, state: TransformerState, k: int) -> TransformerState:
        """``state`` without its last ``k`` target tokens (in place: their cache slots are reused)."""
        assert 0 <= k <= state.length, f"cannot take back {k} of {state.length} tokens"
        state.length -= k
        return state

    def room(self, state: TransformerState) -> int:
        """How many more target tokens the decoder can read: its learned positions' count, or
        unbounded (sinusoidal and relative positions)."""
        if self.tgt_pos is None:
            return 1 << 30
        return self.tgt_pos.num_embeddings - LEARNED_OFFSET - state.length

    def reorder(self, state: TransformerState, index: Tensor) -> TransformerState:
        """Rows ``index`` of the self-attention caches (a new state); the encoder memory is shared
        while the rows stay grouped by source (beam search), gathered otherwise."""
        group, rows = memory_rows(index, state.group, state.mask.size(0))
        cross_k, cross_v, mask = state.cross_k, state.cross_v, state.mask
        if rows is not None:
            cross_k, cross_v, mask = cross_k.index_select(1, rows), cross_v.index_select(1, rows), mask.index_select(0, rows)
        start = None if state.start is None else state.start.index_select(0, index)
        n = state.length
        return TransformerState(_select_slots(state.k, index, n), _select_slots(state.v, index, n), cross_k, cross_v,
                                mask, n, group, start)

    def reorder_(self, state: TransformerState, index: Tensor) -> TransformerState:
        """``reorder`` that consumes ``state``: when the rows stay grouped by source and their
        number stays (beam search), only the rows that change are copied, within the caches.
        Beam search keeps most beams in place from one step to the next (63% of the rows on the
        random BART-base shape of bench/pretrained_seq2seq.py at batch 16), and copying every
        row of the caches each step was 15% of its time there."""
        group, rows = memory_rows(index, state.group, state.mask.size(0))
        if rows is not None or index.numel() != state.k.size(1) or state.start is not None:
            return self.reorder(state, index)
        reorder_rows_((state.k, state.v), index, state.length)
        state.group = group
        return state

    def merge(self, states: list[TransformerState]) -> TransformerState:
        """One state holding the rows of ``states`` in order (requests joining a running batch).

        Self-attention caches are right-aligned, as the GPT's are: a row that has fed fewer tokens
        starts later in the cache and gets a per-row position and mask. Encoder memories are
        padded to the longest source (masked) and get one row per decoder row.
        """
        n = max(s.length for s in states)
        S = max(s.mask.size(-1) for s in states)
        parts: dict[str, list[Tensor]] = {"k": [], "v": [], "cross_k": [], "cross_v": [], "mask": [], "start": []}
        for s in states:
            B = s.k.size(1)
            off = n - s.length
            for name in ("k", "v"):
                buf = getattr(s, name)
                shape = (buf.size(0), B, buf.size(2), n + 1, buf.size(4))
                out = buf.new_zeros(shape)
                out[:, :, :, off:n] = buf[:, :, :, : s.length]
                parts[name].append(out)
            pad = S - s.mask.size(-1)
            for name in ("cross_k", "cross_v"):
                mem = getattr(s, name).repeat_interleave(s.group, 1)  # (L, B, nh, S_s, hs)
                parts[name].append(F.pad(mem, (0, 0, 0, pad)))
            parts["mask"].append(F.pad(s.mask.repeat_interleave(s.group, 0), (0, pad), value=False))
            own = s.start if s.start is not None else torch.zeros(B, dtype=torch.long, device=s.k.device)
            parts["start"].append(own + off)
        return TransformerState(torch.cat(parts["k"], 1), torch.cat(parts["v"], 1), torch.cat(parts["cross_k"], 1),
                                torch.cat(parts["cross_v"], 1), torch.cat(parts["mask"], 0), n, 1,
                                torch.cat(parts["start"]))
