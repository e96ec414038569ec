"""TransformerSeq2Seq: the encoder-decoder Transformer of Vaswani et al. 2017, with pre-LN blocks.

Layer norms sit at the sublayer inputs, as GPT-2 and most later models put them (Xiong et
al. 2020 show it trains without the careful warmup post-LN needs). Embeddings are scaled by
sqrt(n_embd) and added to sinusoidal positions, so no source or target length is built in.
The output projection is tied to the target embedding, and ``share_embeddings`` ties source
and target too (one joint vocabulary). ``n_layer`` blocks each for encoder and decoder.

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
from .layers import MLP, SelfAttention, head_loss, lm_loss
from ..data.batch import Seq2SeqBatch
from .protocol import memory_rows


def sinusoids(positions: Tensor, dim: int) -> Tensor:
    """Sinusoidal position encodings (T,) -> (T, dim) (Vaswani et al. 2017, sin and cos halves)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / max(half, 1))  # (half,)
    angles = positions[:, None].float() * freq[None]  # (T, half)
    pe = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (T, 2 * half)
    return F.pad(pe, (0, dim - 2 * half))


class CrossAttention(nn.Module):
    """Multi-head attention of decoder positions over the encoder memory."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.c_q = nn.Linear(n_embd, n_embd, bias=bias)
        self.c_kv = nn.Linear(n_embd, 2 * n_embd, bias=bias)  # keys and values in one matmul
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head, self.dropout = n_head, dropout

    def memory(self, mem: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder output (B, S, C) -> keys and values, each (B, nh, S, hs)."""
        B, S, C = mem.shape
        k, v = self.c_kv(mem).split(C, dim=2)
        k = k.view(B, S, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, S, hs)
        v = v.view(B, S, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, S, hs)
        return k, v

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """x (B, T, C) over memory k, v with ``mask`` (B, 1, 1, S) True on real source tokens ->
        (B, T, C), and the weights (B, nh, T, S) when asked for."""
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights or (q.requires_grad and q.device.type == "cpu"):
            # written out: the weights are wanted, or training on CPU, where SDPA's backward is slow
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (B, nh, T, S)
            weights = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = F.dropout(weights, dropout) @ v if dropout > 0 else weights @ v  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y)), weights


class EncoderBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = SelfAttention(cfg.n_embd, cfg.n_head, cfg.dropout, cfg.bias, causal=False)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg.n_embd, cfg.dropout, cfg.bias)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask=mask)
        return x + self.mlp(self.ln_2(x))


class DecoderBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = SelfAttention(cfg.n_embd, cfg.n_head, cfg.dropout, cfg.bias, causal=True)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.cross = CrossAttention(cfg.n_embd, cfg.n_head, cfg.dropout, cfg.bias)
        self.ln_3 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg.n_embd, cfg.dropout, cfg.bias)

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor, cache: tuple[Tensor, Tensor] | None = None,
                pos: int = 0, need_weights: bool = False, group: int = 1,
                self_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """x (B, T, C) -> (B, T, C); rows b * group ... b * group + group - 1 attend over memory row b;
        ``self_mask`` (B, 1, T, pos + T) limits the self-attention (rows that start late in the cache)."""
        x = x + self.attn(self.ln_1(x), cache, pos, self_mask)
        h = self.ln_2(x)
        # a group's rows become one memory row's queries: cross-attention has no causal mask
        y, weights = self.cross(h.reshape(-1, group * h.size(1), h.size(2)), k, v, mask, need_weights)
        x = x + y.reshape(x.shape)
        return x + self.mlp(self.ln_3(x)), weights


@dataclass
class TransformerState:
    k: Tensor  # (n_layer, B, nh, capacity, hs) self-attention keys, written in place
    v: Tensor  # (n_layer, B, nh, capacity, hs) self-attention values
    cross_k: Tensor  # (n_layer, Bm, nh, S, hs) keys of the encoder memory, one row per source
    cross_v: Tensor  # (n_layer, Bm, nh, S, hs) values of the encoder memory
    mask: Tensor  # (Bm, 1, 1, S) bool, True on real source tokens
    length: int  # cache slots in use
    group: int = 1  # decoder rows per memory row (B = Bm * group): see protocol.memory_rows
    start: Tensor | None = None  # (B,) the slot where each row's tokens begin (merged states); None = 0


class TransformerSeq2Seq(nn.Module):
    """Pre-LN Transformer encoder-decoder; implements the Decoder protocol."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.bos_id >= 0, "model.bos_id must be set (from the target tokenizer) before building a seq2seq model"
        self.config = cfg
        C = cfg.n_embd
        self.label_smoothing = 0.0  # set by the trainer; applied in training mode only
        self.src_emb = nn.Embedding(cfg.src_vocab_size or cfg.vocab_size, C)
        self.tgt_emb = self.src_emb if cfg.share_embeddings else nn.Embedding(cfg.vocab_size, C)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_layer))
        self.enc_ln = nn.LayerNorm(C, bias=cfg.bias)
        self.decoder = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_layer))
        self.dec_ln = nn.LayerNorm(C, bias=cfg.bias)
        self.head = nn.Linear(C, cfg.vocab_size, bias=False)
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

    def _embed(self, emb: nn.Embedding, ids: Tensor, start: int = 0) -> Tensor:
        pos = torch.arange(start, start + ids.size(1), device=ids.device)  # (T,)
        x = emb(ids) * math.sqrt(self.config.n_embd) + sinusoids(pos, self.config.n_embd)  # (B, T, C)
        return self.drop(x)

    def encode(self, batch: Seq2SeqBatch) -> tuple[Tensor, Tensor]:
        """Encoder output (B, S, C) and the attention mask (B, 1, 1, S) of the source."""
        mask = batch.mask[:, None, None, :]  # (B, 1, 1, S)
        x = self._embed(self.src_emb, batch.src)
        for block in self.encoder:
            x = block(x, mask)
        return self.enc_ln(x), mask

    def _hidden(self, batch: Seq2SeqBatch, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        memory, mask = self.encode(batch)
        x = self._embed(self.tgt_emb, batch.tgt)
        weights = None
        for i, block in enumerate(self.decoder):
            k, v = block.cross.memory(memory)
            x, weights = block(x, k, v, mask, need_weights=need_weights and i == len(self.decoder) - 1)
        return self.dec_ln(x), weights

    def forward(self, batch: Seq2SeqBatch, targets: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """Teacher-forced logits and the loss.

        Args:
            batch: source ids and mask, and decoder inputs ``tgt`` (B, T) (bos + target).
            targets: (B, T) the next tokens (target + eos); -100 marks padding.

        Returns:
            Without targets: logits (B, T, V) and None. With targets: the mean cross-entropy
            (label-smoothed in training mode), and logits only when smoothing needed them
            (otherwise None: ``head_loss`` computes the loss without materializing them).
        """
        h, _ = self._hidden(batch)
        if targets is None:
            return self.head(h), None
        smoothing = self.label_smoothing if self.training else 0.0
        if smoothing == 0.0:
            return None, head_loss(h, self.head.weight, targets)
        logits = self.head(h)
        return logits, lm_loss(logits, targets, smoothing)

    @torch.no_grad()
    def cross_attention(self, batch: Seq2SeqBatch) -> Tensor:
        """Last decoder layer's cross-attention, averaged over heads: (B, T, S) for the inputs ``batch.tgt``."""
        _, weights = self._hidden(batch, need_weights=True)
        return weights.mean(dim=1)

    @torch.no_grad()
    def start(self, batch: Seq2SeqBatch) -> tuple[Tensor, TransformerState]:
        """Encode the source and feed the bos token: logits (B, V) for the first target token."""
        memory, mask = self.encode(batch)
        cross = [block.cross.memory(memory) for block in self.decoder]
        B, C, nh = memory.size(0), self.config.n_embd, self.config.n_head
        # grown by doubling in step: a short output never pays for (reorders of) a long cache
        capacity = min((batch.max_new_tokens or 63) + 1, 16)
        cache = memory.new_zeros(len(self.decoder), B, nh, capacity, C // nh)
        state = TransformerState(cache, torch.zeros_like(cache), torch.stack([k for k, _ in cross]),
                                 torch.stack([v for _, v in cross]), mask, 0)
        bos = batch.src.new_full((B,), self.config.bos_id)
        return self.step(bos, state)

    @torch.no_grad()
    def step(self, tokens: Tensor, state: TransformerState) -> tuple[Tensor, TransformerState]:
        """One target token per row (B,) -> logits (B, V) and the state (its cache written in place)."""
        if state.length == state.k.size(3):  # full: double the cache
            state.k = torch.cat([state.k, torch.zeros_like(state.k)], dim=3)
            state.v = torch.cat([state.v, torch.zeros_like(state.v)], dim=3)
        n, self_mask = state.length, None
        if state.start is None:
            x = self._embed(self.tgt_emb, tokens[:, None], n)  # (B, 1, C)
        else:  # rows of merged states: each at its own position, blind to the slots before its start
            pos = n - state.start  # (B,)
            x = self.drop(self.tgt_emb(tokens) * math.sqrt(self.config.n_embd)
                          + sinusoids(pos, self.config.n_embd).to(self.tgt_emb.weight.dtype))[:, None]
            self_mask = (torch.arange(n + 1, device=pos.device)[None] >= state.start[:, None])[:, None, None]
        for i, block in enumerate(self.decoder):
            x, _ = block(x, state.cross_k[i], state.cross_v[i], state.mask, (state.k[i], state.v[i]), n,
                         group=state.group, self_mask=self_mask)
        state.length += 1
        return self.head(self.dec_ln(x)[:, 0]), state

    def reorder(self, state: TransformerState, index: Tensor) -> TransformerState:
        """Rows ``index`` of the self-attention caches (a new state); the encoder memory is shared
        while the rows stay grouped by source (beam search), gathered otherwise."""
        group, rows = memory_rows(index, state.group, state.mask.size(0))
        cross_k, cross_v, mask = state.cross_k, state.cross_v, state.mask
        if rows is not None:
            cross_k, cross_v, mask = cross_k.index_select(1, rows), cross_v.index_select(1, rows), mask.index_select(0, rows)
        start = None if state.start is None else state.start.index_select(0, index)
        return TransformerState(state.k.index_select(1, index), state.v.index_select(1, index), cross_k, cross_v,
                                mask, state.length, group, start)

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
