"""RNNSeq2Seq: a recurrent encoder-decoder with Bahdanau or Luong attention, or none.

The encoder is a (bidirectional) RNN/LSTM/GRU over the source; a "bridge" (a linear layer
and tanh) turns its final states into the decoder's initial state. Each decoder step follows
Luong et al. 2015 ("Effective Approaches to Attention-based Neural Machine Translation"), as
JoeyNMT does for both scoring functions: the RNN steps first, its new top state h attends over
the encoder states, and the attentional vector tanh(W_c [h; context]) predicts the token and,
with input feeding, joins the next step's input. The attention variants differ in the score:
``bahdanau`` is additive, v^T tanh(W_k m + W_q h) (Bahdanau et al. 2015); ``luong-general`` is
h^T W m and ``luong-dot`` h^T m; ``none`` is the encoder-decoder of Sutskever et al. 2014,
where the decoder sees the source only through its initial state.

The decoding state (``RNNState``) holds the decoder's hidden state, the last attentional
vector, and the encoder memory with its precomputed keys, so ``step`` costs one RNN step
and one attention.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn as nn
from torch import Tensor

from ..config import ModelConfig
from .layers import head_loss, lm_loss
from ..data.batch import Seq2SeqBatch
from .protocol import memory_rows
from .rnn import CELLS, concat_hidden, select_hidden

Hidden = Tensor | tuple[Tensor, Tensor]  # h, or (h, c) for LSTM; each (num_layers, B, H)


@dataclass
class RNNState:
    hidden: Hidden  # the decoder's recurrent state
    feed: Tensor | None  # (B, H) the last attentional vector (input feeding), or None
    memory: Tensor  # (Bm, S, M) encoder outputs, one row per source
    keys: Tensor | None  # (Bm, S, A) the memory projected for scoring, computed once per source
    mask: Tensor  # (Bm, S) bool, True on real source tokens
    weights: Tensor | None = None  # (B, S) the last step's attention, for attention maps
    group: int = 1  # decoder rows per memory row (B = Bm * group): see protocol.memory_rows

    MEMORY = ("memory", "keys", "mask")  # the fields with one row per memory row


class Attention(nn.Module):
    """Scores a decoder state against every encoder state; returns the context and weights."""

    def __init__(self, kind: str, query_size: int, memory_size: int):
        super().__init__()
        self.kind = kind
        if kind == "bahdanau":
            self.key = nn.Linear(memory_size, query_size, bias=False)
            self.query = nn.Linear(query_size, query_size, bias=False)
            self.v = nn.Linear(query_size, 1, bias=False)
        elif kind == "luong-general":
            self.key = nn.Linear(memory_size, query_size, bias=False)
        else:
            assert kind == "luong-dot" and memory_size == query_size, (
                f"luong-dot needs memory size == query size, got {memory_size} and {query_size}")

    def keys(self, memory: Tensor) -> Tensor:
        """(B, S, M) -> (B, S, A): the part of the score that depends on the source only."""
        return memory if self.kind == "luong-dot" else self.key(memory)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, T, H) -> context (B, T, M) and weights (B, T, S), masked to real source tokens."""
        if self.kind == "bahdanau":
            q = self.query(query)[:, :, None]  # (B, T, 1, A)
            scores = self.v(torch.tanh(q + keys[:, None])).squeeze(-1)  # (B, T, S)
        else:
            scores = query @ keys.transpose(1, 2)  # (B, T, S)
        scores = scores.float().masked_fill(~mask[:, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)  # (B, T, S)
        return weights.to(memory.dtype) @ memory, weights  # (B, T, M)


class RNNSeq2Seq(nn.Module):
    """Recurrent encoder-decoder with attention (or without); implements the Decoder protocol."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.cell in CELLS, f"cell must be one of {', '.join(CELLS)}, got '{cfg.cell}'"
        assert cfg.bos_id >= 0, "model.bos_id must be set (from the target tokenizer) before building a seq2seq model"
        self.config = cfg
        H, E, L = cfg.hidden_size, cfg.n_embd, cfg.num_layers
        dirs = 2 if cfg.bidirectional else 1
        self.label_smoothing = 0.0  # set by the trainer; applied in training mode only
        self.src_emb = nn.Embedding(cfg.src_vocab_size or cfg.vocab_size, E)
        self.tgt_emb = self.src_emb if cfg.share_embeddings else nn.Embedding(cfg.vocab_size, E)
        self.drop = nn.Dropout(cfg.dropout)
        between = cfg.dropout if L > 1 else 0.0  # torch only drops between layers
        self.encoder = CELLS[cfg.cell](E, H, num_layers=L, batch_first=True, dropout=between,
                                       bidirectional=cfg.bidirectional)
        self.bridge = nn.Linear(dirs * H, H)  # final encoder states -> initial decoder state, per layer
        self.attn = None if cfg.attention == "none" else Attention(cfg.attention, H, dirs * H)
        self.feeds = self.attn is not None and cfg.input_feeding
        self.decoder = CELLS[cfg.cell](E + (H if self.feeds else 0), H, num_layers=L, batch_first=True,
                                       dropout=between)
        self.combine = None if self.attn is None else nn.Linear(H + dirs * H, H, bias=False)  # Luong's W_c
        self.head = nn.Linear(H, cfg.vocab_size, bias=cfg.bias)
        self._init_weights()
        if cfg.tie_weights:
            self.head.weight = self.tgt_emb.weight  # Press & Wolf 2017

    def _init_weights(self) -> None:
        # small uniform init as in Luong et al. 2015 (and Zaremba et al. for the RNN LM)
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)
        for rnn in (self.encoder, self.decoder):
            for name, p in rnn.named_parameters():
                if name.startswith("bias_"):
                    nn.init.zeros_(p)
                    if self.config.cell == "lstm" and name.startswith("bias_ih"):
                        H = self.config.hidden_size
                        nn.init.ones_(p[H : 2 * H])  # forget-gate bias 1 (Jozefowicz et al. 2015)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- encoder -----------------------------------------------------------------------
    def _bridge(self, h: Tensor) -> Tensor:
        """Final encoder states (L * dirs, B, H) -> initial decoder state (L, B, H)."""
        L, dirs = self.config.num_layers, 2 if self.config.bidirectional else 1
        h = h.view(L, dirs, h.size(1), h.size(2)).transpose(1, 2).reshape(L, h.size(1), -1)  # (L, B, dirs * H)
        return torch.tanh(self.bridge(h))

    def encode(self, batch: Seq2SeqBatch) -> RNNState:
        """Run the encoder over the (right-padded, packed) source; the state before the first step."""
        src, mask = batch.src, batch.mask
        lengths = mask.sum(1)  # (B,)
        assert bool((lengths > 0).all()), "every source needs at least one token"
        packed = nn.utils.rnn.pack_padded_sequence(self.drop(self.src_emb(src)), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, final = self.encoder(packed)
        memory, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=src.size(1))  # (B, S, M)
        hidden = tuple(self._bridge(f) for f in final) if isinstance(final, tuple) else self._bridge(final)
        B = src.size(0)
        feed = memory.new_zeros(B, self.config.hidden_size) if self.feeds else None
        keys = self.attn.keys(memory) if self.attn is not None else None
        return RNNState(hidden, feed, memory, keys, mask)

    # ---- decoder -----------------------------------------------------------------------
    def _decode(self, tokens: Tensor, state: RNNState) -> tuple[Tensor, RNNState]:
        """Decoder inputs (B, T) -> attentional vectors (B, T, H); T > 1 only without input feeding."""
        x = self.drop(self.tgt_emb(tokens))  # (B, T, E)
        if self.feeds:
            x = torch.cat([x, state.feed[:, None].to(x.dtype)], dim=-1)  # (B, 1, E + H)
        out, hidden = self.decoder(x, state.hidden)  # (B, T, H)
        if self.attn is None:
            return out, replace(state, hidden=hidden)
        g = state.group  # a group's rows query the same memory row: (Bm, g * T, H)
        context, weights = self.attn(out.reshape(-1, g * out.size(1), out.size(2)), state.keys, state.memory,
                                     state.mask)
        context, weights = context.reshape(*out.shape[:2], -1), weights.reshape(*out.shape[:2], -1)
        vec = torch.tanh(self.combine(torch.cat([out, context], dim=-1)))  # (B, T, H)
        return vec, replace(state, hidden=hidden, feed=vec[:, -1] if self.feeds else None, weights=weights[:, -1])

    def _teacher_forced(self, batch: Seq2SeqBatch, weights: list[Tensor] | None = None) -> Tensor:
        """Attentional vectors (B, T, H) for the decoder inputs ``batch.tgt``, with scheduled
        sampling when training with teacher_forcing < 1."""
        state = self.encode(batch)
        tgt = batch.tgt
        ratio = self.config.teacher_forcing if self.training else 1.0
        if not self.feeds and ratio >= 1.0 and weights is None:
            return self._decode(tgt, state)[0]  # the whole sequence in one RNN call
        vecs, prev = [], None
        for t in range(tgt.size(1)):
            tok = tgt[:, t]
            if prev is not None and ratio < 1.0:  # scheduled sampling (Bengio et al. 2015)
                own = torch.rand(tok.shape, device=tok.device) >= ratio
                tok = torch.where(own, self.head(prev).argmax(-1), tok)
            vec, state = self._decode(tok[:, None], state)
            prev = vec[:, 0].detach()
            vecs.append(vec)
            if weights is not None:
                weights.append(state.weights)
        return torch.cat(vecs, dim=1)

    def forward(self, batch: Seq2SeqBatch, targets: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """Teacher-forced logits for every target position, and the loss when targets are given.

        Args:
            batch: source ids and mask, and decoder inputs ``tgt`` (B, T) (bos + target).
            targets: (B, T) the next tokens (target + eos); -100 marks padding.

        Returns:
            Without targets: logits (B, T, V) and None. With targets: None and the mean
            cross-entropy (label-smoothed in training mode), computed by ``head_loss`` without
            materializing float32 logits (a LoRA-adapted head: its logits and the loss).
        """
        h = self.drop(self._teacher_forced(batch))  # (B, T, H)
        if targets is None:
            return self.head(h), None
        smoothing = self.label_smoothing if self.training else 0.0
        if type(self.head) is nn.Linear:
            return None, head_loss(h, self.head.weight, targets, self.head.bias, smoothing)
        logits = self.head(h)
        return logits, lm_loss(logits, targets, smoothing)

    @torch.no_grad()
    def cross_attention(self, batch: Seq2SeqBatch) -> Tensor:
        """Attention weights (B, T, S) of each decoder input position of ``batch.tgt`` over the source."""
        if self.attn is None:
            raise ValueError("this model has no attention (model.attention=none): there is no map to draw")
        weights: list[Tensor] = []
        self._teacher_forced(batch, weights)
        return torch.stack(weights, dim=1)

    @torch.no_grad()
    def start(self, batch: Seq2SeqBatch) -> tuple[Tensor, RNNState]:
        """Encode the source and feed the bos token: logits (B, V) for the first target token."""
        state = self.encode(batch)
        bos = batch.src.new_full((batch.src.size(0),), self.config.bos_id)
        return self.step(bos, state)

    @torch.no_grad()
    def step(self, tokens: Tensor, state: RNNState) -> tuple[Tensor, RNNState]:
        """One target token per row (B,) -> logits (B, V) and the new state."""
        vec, state = self._decode(tokens[:, None], state)
        return self.head(vec[:, 0]), state

    def merge(self, states: list[RNNState]) -> RNNState:
        """One state holding the rows of ``states`` in order; the encoder memories are padded to
        the longest source (masked) and get one row per decoder row."""
        S = max(s.mask.size(1) for s in states)

        def rows(s: RNNState, name: str) -> Tensor | None:
            value = getattr(s, name)
            if value is None:
                return None
            if s.group > 1:
                value = value.repeat_interleave(s.group, 0)
            pad = S - value.size(1)
            if pad:
                value = torch.cat([value, value.new_zeros(value.size(0), pad, *value.shape[2:])], dim=1)
            return value

        def cat(parts: list) -> Tensor | None:
            return None if parts[0] is None else torch.cat(parts, dim=0)

        memory = (cat([rows(s, name) for s in states]) for name in RNNState.MEMORY)
        return RNNState(concat_hidden([s.hidden for s in states]), cat([s.feed for s in states]),
                        *memory)  # weights: the next step's

    def reorder(self, state: RNNState, index: Tensor) -> RNNState:
        """Rows ``index`` of every tensor in the state (the hidden state has batch in dim 1); the
        encoder memory is shared while the rows stay grouped by source (beam search)."""
        group, rows = memory_rows(index, state.group, state.mask.size(0))

        def pick(name: str, value):
            if name == "group":
                return group
            if value is None:
                return None
            if name == "hidden":
                return select_hidden(value, index)
            if name in RNNState.MEMORY:
                return value if rows is None else value.index_select(0, rows)
            return value.index_select(0, index)

        return RNNState(**{f.name: pick(f.name, getattr(state, f.name)) for f in fields(state)})

