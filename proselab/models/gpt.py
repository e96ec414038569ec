"""GPT: a decoder-only Transformer with GPT-2's architecture and parameter names, or Llama's.

Names match Hugging Face's GPT2LMHeadModel one-to-one (``transformer.h.0.attn.c_attn`` ...);
HF stores c_attn, c_proj and c_fc as Conv1D, so their weights are transposed on import.
Llama style (Touvron et al. 2023) is configuration: rotary positions instead of the learned
table (``model.rope``), RMSNorm (``model.norm``), a gated SiLU feed-forward (``model.gated_ffn``,
``model.activation``, ``model.ffn_dim``), grouped key/value heads (``model.n_kv_head``) and no
biases; interop/llama.py maps Hugging Face's LlamaForCausalLM onto these names.
Decoding uses a preallocated KV cache (``KVCache``) that travels through ``start``/``step``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from ..config import ModelConfig
from . import kv_cache
from .encdec import FeedForward, make_norm
from .kv_cache import KVCache
from .layers import RopeScaling, SelfAttention, expand_kv, head_loss, lm_loss, rope_tables
from .protocol import Prompt, insert_by_merge


class Block(nn.Module):
    """A pre-norm Transformer block (GPT-2 moved the norms to the sublayer inputs; Llama too)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = make_norm(cfg)
        self.attn = SelfAttention(cfg.n_embd, cfg.n_head, cfg.dropout, cfg.bias, causal=True, n_kv_head=cfg.n_kv_head,
                                  qkv_bias=cfg.qkv_bias, head_size=cfg.head_dim, qk_norm=cfg.qk_norm,
                                  norm_eps=cfg.norm_eps)
        self.ln_2 = make_norm(cfg)
        self.mlp = FeedForward(cfg)

    def forward(self, x: Tensor, cache: tuple[Tensor, Tensor] | None = None, pos: int = 0,
                attn_mask: Tensor | None = None, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        B, T, C = x.shape
        return self.forward_flat(x.reshape(B * T, C), [(B, T)], [(cache, pos, attn_mask, rope)]).view(B, T, C)

    def forward_flat(self, x: Tensor, shapes: list[tuple[int, int]], attends: list[tuple]) -> Tensor:
        """``forward`` for several batches in one pass: x (N, C) holds batch j's (B_j, T_j)
        tokens flattened, one batch after another. Every matmul runs once over all N tokens
        (its weights are read once); attention runs per batch, with ``attends[j]`` =
        (cache, pos, attn_mask, rope) as ``forward`` takes them."""
        qkv = self.attn.c_attn(self.ln_1(x))  # (N, C + 2 kv)
        ys, at = [], 0
        for (B, T), (cache, pos, attn_mask, rope) in zip(shapes, attends):
            ys.append(self.attn.attend(qkv[at : at + B * T].view(B, T, -1), cache, pos, attn_mask, rope)
                      .reshape(B * T, -1))
            at += B * T
        x = x + self.attn.resid_dropout(self.attn.c_proj(ys[0] if len(ys) == 1 else torch.cat(ys)))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2: token + learned position embeddings, pre-LN blocks, a (tied) linear head; or
    Llama: token embeddings, rotary positions in every attention, pre-RMSNorm blocks."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.vocab_size > 0 and cfg.block_size > 0, "GPT needs vocab_size and block_size > 0"
        self.config = cfg
        parts = dict(wte=nn.Embedding(cfg.vocab_size, cfg.n_embd))
        if not cfg.rope:
            parts["wpe"] = nn.Embedding(cfg.block_size, cfg.n_embd)
        parts.update(drop=nn.Dropout(cfg.dropout), h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                     ln_f=make_norm(cfg))
        self.transformer = nn.ModuleDict(parts)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                # residual projections scaled by 1/sqrt(2 * n_layer), per the GPT-2 paper: each
                # block adds two of them to the residual stream, so its variance stays bounded
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.tie_weights:
            # one matrix for input and output embeddings (Press & Wolf 2017), as GPT-2 does
            self.lm_head.weight = self.transformer.wte.weight

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Number of parameters, a tied matrix counted once."""
        return sum(p.numel() for p in self.parameters())

    def _trunk(self, idx: Tensor, cache: KVCache | None = None, positions: Tensor | None = None,
               attn_mask: Tensor | None = None) -> Tensor:
        """The hidden states (B, T, C) of idx (B, T), written into ``cache`` from slot ``length``."""
        return self._trunks([(idx, cache, positions, attn_mask)])[0]

    def _trunks(self, parts: list[tuple]) -> list[Tensor]:
        """``_trunk`` for several (idx, cache, positions, attn_mask) at once, each layer's
        weights read once for all of them (``Block.forward_flat``)."""
        tr, xs, attends = self.transformer, [], []
        for idx, cache, positions, attn_mask in parts:
            pos = 0 if cache is None else cache.length
            if positions is None:
                positions = torch.arange(pos, pos + idx.size(1), dtype=torch.long, device=idx.device)
            x, rope = self._embed(idx, positions)
            xs.append(x.reshape(-1, self.config.n_embd))
            attends.append((cache, pos, attn_mask, rope))
        shapes = [tuple(p[0].shape) for p in parts]
        x = tr.drop(xs[0] if len(xs) == 1 else torch.cat(xs))  # (N, C)
        for i, block in enumerate(tr.h):
            x = block.forward_flat(x, shapes, [(None if c is None else (c.k[i], c.v[i]), pos, m, rope)
                                               for c, pos, m, rope in attends])
        x = tr.ln_f(x)
        out, at = [], 0
        for B, T in shapes:
            out.append(x[at : at + B * T].view(B, T, -1))
            at += B * T
        return out

    def _embed(self, idx: Tensor, positions: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Token (+ learned position) embeddings (B, T, C) of idx (B, T) at ``positions`` (T,) or
        (B, T), and the rotary tables for those positions (None without rope)."""
        tr, cfg = self.transformer, self.config
        x = tr.wte(idx)
        if cfg.embed_multiplier:  # Gemma's sqrt(n_embd)
            x = x * cfg.embed_multiplier
        if not cfg.rope:
            return x + tr.wpe(positions), None
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        scaling = RopeScaling(cfg.rope_type, cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor,
                              cfg.rope_original_context, cfg.rope_beta_fast, cfg.rope_beta_slow,
                              cfg.rope_attention_factor, tuple(cfg.rope_short_factor)) if cfg.rope_factor else None
        return x, rope_tables(positions, cfg.rope_dim or cfg.head_size(), cfg.rope_theta, dtype, scaling)

    def hidden_states(self, idx: Tensor) -> Tensor:
        """The final hidden states (B, T, C) of idx (B, T), T <= block_size: what a head reads."""
        T = idx.size(1)
        assert T <= self.config.block_size, f"sequence of {T} tokens exceeds block_size {self.config.block_size}"
        return self._trunk(idx)

    @torch.no_grad()
    def attention_weights(self, idx: Tensor) -> Tensor:
        """Every layer's and head's causal self-attention over idx (B, T), T <= block_size.

        The blocks attend through scaled_dot_product_attention, which never forms the weights;
        this pass writes softmax(q k^T / sqrt(hs)) out beside them, for explaining a model only.

        Returns:
            (n_layer, B, n_head, T, T) float32; each row sums to 1 and is 0 on future positions.
        """
        B, T = idx.shape
        assert T <= self.config.block_size, f"sequence of {T} tokens exceeds block_size {self.config.block_size}"
        tr = self.transformer
        x, rope = self._embed(idx, torch.arange(T, device=idx.device))
        x = tr.drop(x)  # (B, T, C)
        future = torch.ones(T, T, dtype=torch.bool, device=idx.device).triu(1)  # (T, T)
        out = []
        for block in tr.h:
            q, k, _ = block.attn.heads(block.attn.c_attn(block.ln_1(x)).float(),
                                       None if rope is None else tuple(t.float() for t in rope))
            k = expand_kv(k, q.size(1))  # (B, nh, T, hs)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, nh, T, T)
            out.append(att.masked_fill(future, float("-inf")).softmax(dim=-1))
            x = block(x, rope=rope)
        return torch.stack(out)  # (n_layer, B, nh, T, T)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Logits for every position, and the loss when targets are given.

        Args:
            idx: (B, T) token ids, T <= block_size.
            targets: (B, T) next-token ids; -100 marks positions left out of the loss.

        Returns:
            Without targets: logits (B, T, V) and None. With targets: None and the mean
            cross-entropy over non-ignored targets (float32, even under bf16 autocast),
            computed by ``head_loss`` without materializing the logits, the largest tensors
            of a training step.
        """
        x = self.hidden_states(idx)  # (B, T, C)
        if targets is None:
            return self.lm_head(x), None
        if torch.compiler.is_compiling() or type(self.lm_head) is not nn.Linear:
            # inductor fuses the plain form itself; a LoRA head needs its own forward
            return None, lm_loss(self.lm_head(x), targets)
        return None, head_loss(x, self.lm_head.weight, targets)

    def _cache_dtype(self, device: torch.device) -> torch.dtype:
        # store k, v in the dtype c_attn produces them in, so autocast decoding keeps bf16 caches
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return self.lm_head.weight.dtype

    @torch.no_grad()
    def start(self, batch: Prompt | Tensor) -> tuple[Tensor, KVCache]:
        """Prefill the KV cache with a batch of prompts.

        Prompts longer than block_size keep their last block_size tokens. Left-padded rows get
        positions counted from their first real token and never attend to padding, and each
        row's window slides on its own (see ``step``), so a row's output does not depend on
        the other prompts in the batch.

        Args:
            batch: a Prompt (left-padded idx and mask), or idx (B, T) with T >= 1.

        Returns:
            logits (B, V) for the token after each prompt, and the KVCache.
        """
        part = self._start_part(batch)
        x = self._trunk(*part)  # (B, T, C)
        return self.lm_head(x[:, -1]), self._started(part)  # (B, V)

    def _start_part(self, batch: Prompt | Tensor) -> tuple:
        """A fresh cache for ``batch`` and the trunk's input to fill it: (idx, cache, positions, attn_mask)."""
        prompt = batch if isinstance(batch, Prompt) else Prompt(batch)
        idx, mask = prompt.idx, prompt.mask
        assert idx.dim() == 2 and idx.size(1) >= 1, f"prompt must be (B, T) with T >= 1, got {tuple(idx.shape)}"
        bs = self.config.block_size
        idx = idx[:, -bs:]  # (B, min(T, block_size))
        mask = torch.ones_like(idx, dtype=torch.bool) if mask is None else mask[:, -bs:]
        extra = prompt.max_new_tokens if prompt.max_new_tokens is not None else bs
        capacity = min(bs, idx.size(1) + max(extra, 1))
        cache = self._empty_cache(idx.size(0), capacity, idx.device)
        cache.idx[:, : idx.size(1)], cache.mask[:, : idx.size(1)] = idx, mask
        return (idx, cache, *self._prefill_masks(mask))

    @staticmethod
    def _started(part: tuple) -> KVCache:
        """The cache of ``_start_part`` once the trunk has filled it."""
        idx, cache = part[0], part[1]
        mask = cache.mask[:, : idx.size(1)]
        cache.length, cache.pos, cache.padded = idx.size(1), mask.sum(1), not bool(mask.all())
        return cache

    @torch.no_grad()
    def step_start(self, tokens: Tensor, state: KVCache,
                   batch: Prompt | Tensor) -> tuple[Tensor, KVCache, Tensor, KVCache]:
        """``step(tokens, state)`` and ``start(batch)`` in one pass through the weights.

        At small batches a decoding step is bound by reading the weights; a prompt's prefill
        done beside it costs little more than its arithmetic (vLLM's chunked prefill does the
        same). The server's engine uses it when requests join a running batch.

        Returns:
            step's (logits, state), then start's (logits, cache).
        """
        part = self._start_part(batch)
        logits, state, x = self._advance(tokens, state, part)
        return logits, state, x, self._started(part)

    def _empty_cache(self, B: int, capacity: int, device: torch.device) -> KVCache:
        cfg = self.config
        return kv_cache.empty((cfg.n_layer, B, cfg.n_kv_head or cfg.n_head, capacity, cfg.head_size()),
                              self._cache_dtype(device), device)

    @staticmethod
    def _prefill_masks(mask: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Positions (B, T) and attention mask (B, 1, T, T) for a left-padded prefill (``mask``
        (B, T) True on tokens); None, None without padding (plain causal attention from 0)."""
        if bool(mask.all()):
            return None, None
        T = mask.size(1)
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)  # (B, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=mask.device).tril()  # (T, T)
        # padding queries attend to themselves only: a row of all -inf would give NaN in SDPA
        eye = torch.eye(T, dtype=torch.bool, device=mask.device)  # (T, T)
        return positions, ((causal & mask[:, None, :]) | eye)[:, None]  # (B, 1, T, T)

    def _make_room(self, state: KVCache, sliding: Tensor) -> KVCache:
        """Free slot ``length``: grow the buffers, or drop the slots no row uses any more.

        Buffers grow up to 1.5 x block_size slots, not block_size: when such a cache is full,
        every row starts at slot block_size // 2 or later, so the shift that frees room drops
        at least half a window at once. At exactly block_size, rows that started at different
        times (a server's batch) would leave one free slot per shift, a copy of the whole
        cache in every step.
        """
        bs, n = self.config.block_size, state.length
        limit = bs + bs // 2
        if state.capacity < limit:
            new = self._empty_cache(state.idx.size(0), min(limit, 2 * state.capacity), state.idx.device)
            new.k[:, :, :, :n], new.v[:, :, :, :n] = state.k[:, :, :, :n], state.v[:, :, :, :n]
            new.idx[:, :n], new.mask[:, :n] = state.idx[:, :n], state.mask[:, :n]
            new.pos, new.length, new.padded = state.pos, n, state.padded
            return new
        # a full cache: every row that is not sliding now has < block_size tokens, so starts
        # at slot >= n - block_size + 1, and a sliding row will start at n - keep + 1: shift all left by the least
        first = state.mask[:, :n].int().argmax(1)  # (B,) each row's first slot
        keep = max(1, bs // 2)
        first = torch.where(sliding, n - keep + 1, first)
        shift = int(first.min())
        assert shift >= 1, "KV cache full with a row of block_size tokens that is not sliding"
        return kv_cache.shift(state, shift)

    @torch.no_grad()
    def step(self, tokens: Tensor, state: KVCache) -> tuple[Tensor, KVCache]:
        """Append one token per row to the cache (in place) and return the next logits.

        When a row's window is full (block_size tokens), it slides like a context shift: that
        row is re-prefilled with its most recent block_size // 2 tokens (the new one included),
        so it then conditions on the latest half-window and generation of any length never
        overflows. Its positions restart at 0, as they would for a fresh prompt. Rows slide
        independently, when their own window fills.

        Args:
            tokens: (B,) token ids.
            state: the KVCache from ``start``, ``step`` or ``reorder`` (consumed).

        Returns:
            logits (B, V) and the updated KVCache.
        """
        logits, state, _ = self._advance(tokens, state)
        return logits, state

    def _advance(self, tokens: Tensor, state: KVCache, part: tuple | None = None):
        """``step``, and with ``part`` (from ``_start_part``) that prefill in the same pass;
        returns (logits, state, the prefill's logits or None).

        Sliding rows (see ``step``) are re-prefilled in the same pass too: their window is one
        more part of ``_trunks``, its keys and values then written over the rows' slots.
        """
        bs = self.config.block_size
        sliding = state.pos >= bs  # (B,)
        state = kv_cache.trim(state)
        if state.length == state.capacity:
            state = self._make_room(state, sliding)
        n = state.length
        parts = []
        stepping = not bool(sliding.all())
        if stepping:
            state.mask[:, n] = True
            positions = attn_mask = None
            if state.padded or bool(sliding.any()):
                positions = state.pos.masked_fill(sliding, 0)[:, None]  # (B, 1); sliding rows are redone below
                attn_mask = state.mask[:, None, None, : n + 1]  # (B, 1, 1, n + 1)
            parts.append((tokens[:, None], state, positions, attn_mask))
        if part is not None:
            parts.append(part)
        slide = self._slide_part(tokens, state, sliding) if bool(sliding.any()) else None
        if slide is not None:
            parts.append(slide[1])
        xs = self._trunks(parts)
        # one head call for the last positions of every part (the head is the largest matrix)
        last = self.lm_head(torch.cat([x[:, -1] for x in xs]))  # (B [+ B'] [+ R], V)
        sizes = [x.size(0) for x in xs]
        heads = list(last.split(sizes))
        logits = heads.pop(0) if stepping else None
        first = heads.pop(0) if part is not None else None
        if stepping:
            state.idx[:, n] = tokens
        state.pos = state.pos + 1
        state.length = n + 1
        if slide is not None:
            rows, (window, fresh, _, _) = slide
            kv_cache.write_window(state, rows, window, fresh)
            new = heads.pop(0)
            if logits is None:
                logits = new
            else:
                logits[rows] = new.to(logits.dtype)
        return logits, state, first

    def _slide_part(self, tokens: Tensor, state: KVCache, sliding: Tensor) -> tuple[Tensor, tuple]:
        """The ``sliding`` rows' window, their last block_size // 2 tokens ending at the new one,
        as a trunk part over a fresh cache (from position 0, as a new prompt); (rows, part)."""
        n, keep = state.length, max(1, self.config.block_size // 2)
        rows = sliding.nonzero().squeeze(1)  # (R,)
        window = torch.cat([state.idx[rows, n - keep + 1 : n], tokens[rows, None]], dim=1)  # (R, keep)
        return rows, (window, self._empty_cache(rows.numel(), keep, window.device), None, None)

    def room(self, state: KVCache) -> int:
        """How many tokens ``extend`` may append before a row's window is full (a ``step`` then slides it)."""
        return self.config.block_size - int(state.pos.max())

    @torch.no_grad()
    def extend(self, tokens: Tensor, state: KVCache) -> tuple[Tensor, KVCache]:
        """Append K tokens per row in one pass and return the logits after each: tokens (B, K)
        -> (B, K, V), the cache updated in place (consumed, as ``step``'s). A speculative step
        checks a draft's K tokens this way; ``truncate`` takes back the ones it rejects. At most
        ``room(state)`` tokens: windows do not slide here."""
        B, K = tokens.shape
        assert 0 < K <= self.room(state), f"extend takes 1 to {self.room(state)} tokens here, got {K}"
        state = kv_cache.trim(state)
        while state.capacity - state.length < K:
            state = self._make_room(state, torch.zeros_like(state.pos, dtype=torch.bool))
        n = state.length
        positions = state.pos[:, None] + torch.arange(K, device=tokens.device)  # (B, K)
        causal = torch.ones(K, K, dtype=torch.bool, device=tokens.device).tril()  # (K, K)
        attn_mask = torch.cat([state.mask[:, None, :n].expand(B, K, n), causal.expand(B, K, K)], dim=2)[:, None]
        x = self._trunk(tokens, state, positions, attn_mask)  # (B, K, C)
        state.idx[:, n : n + K], state.mask[:, n : n + K] = tokens, True
        state.pos, state.length = state.pos + K, n + K
        return self.lm_head(x), state

    def truncate(self, state: KVCache, k: int) -> KVCache:
        """``state`` without its last ``k`` tokens (in place): see ``kv_cache.truncate``."""
        return kv_cache.truncate(state, k)

    def merge(self, states: list[KVCache]) -> KVCache:
        """One cache holding the rows of ``states`` in order (requests joining a running batch);
        see ``kv_cache.merge``."""
        n = max(s.length for s in states)
        return kv_cache.merge(states, min(self.config.block_size, n + 1))

    def insert(self, state: KVCache, rows: Tensor, new: KVCache) -> KVCache:
        """The rows of ``new`` in place of rows ``rows`` of ``state``: in place when they fit
        (``kv_cache.insert``), else rebuilt through merge."""
        if new.length > state.length:
            return insert_by_merge(self, state, rows, new, state.idx.size(0))
        return kv_cache.insert(state, rows, new)

    def reorder(self, state: KVCache, index: Tensor) -> KVCache:
        """Rows ``index`` (B',) of the cache, as a new KVCache (beams, num_return_sequences)."""
        return kv_cache.select(state, index)

    def reorder_(self, state: KVCache, index: Tensor) -> KVCache:
        """``reorder`` consuming ``state`` (beam search): see ``kv_cache.select_``."""
        return kv_cache.select_(state, index)
