"""RNNLM: a recurrent language model (RNN, LSTM or GRU) for character or word generation.

embedding -> dropout -> stacked recurrent layers -> dropout -> linear head, as in Zaremba et
al. 2014 ("Recurrent Neural Network Regularization") and PyTorch's word_language_model.
The decoding state is the recurrent hidden state: h (num_layers, B, H), or (h, c) for LSTM.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ..config import ModelConfig
from .layers import lm_loss
from .protocol import Prompt

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

Hidden = Tensor | tuple[Tensor, Tensor]  # h, or (h, c) for LSTM; each (num_layers, B, H)


def select_hidden(state: Hidden, index: Tensor) -> Hidden:
    """Rows ``index`` (B',) of a recurrent state (batch is dim 1 of h and c)."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)


def concat_hidden(states: list[Hidden]) -> Hidden:
    """One recurrent state holding the rows of ``states`` in order."""
    if isinstance(states[0], tuple):
        return tuple(torch.cat(parts, dim=1) for parts in zip(*states))
    return torch.cat(states, dim=1)


class RNNLM(nn.Module):
    """Embedding, stacked RNN/LSTM/GRU and a (tied) linear head; hidden state as decoding state."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.cell in CELLS, f"cell must be one of {', '.join(CELLS)}, got '{cfg.cell}'"
        assert not cfg.tie_weights or cfg.n_embd == cfg.hidden_size, (
            f"tie_weights needs n_embd == hidden_size, got {cfg.n_embd} and {cfg.hidden_size}"
        )
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.rnn = CELLS[cfg.cell](
            cfg.n_embd,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            bias=cfg.bias,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,  # torch only drops between layers
        )
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=cfg.bias)
        self._init_weights()
        if cfg.tie_weights:
            # one matrix for input and output embeddings (Press & Wolf 2017; Inan et al. 2017)
            self.lm_head.weight = self.wte.weight

    def _init_weights(self) -> None:
        # small uniform embeddings and head, as in Zaremba et al. 2014: logits start near uniform
        nn.init.uniform_(self.wte.weight, -0.1, 0.1)
        nn.init.uniform_(self.lm_head.weight, -0.1, 0.1)
        if self.lm_head.bias is not None:
            nn.init.zeros_(self.lm_head.bias)
        if self.config.cell == "lstm" and self.config.bias:
            # forget-gate bias 1 so early gradients flow through time (Jozefowicz et al. 2015);
            # torch orders the gates i, f, g, o and adds bias_ih and bias_hh
            H = self.config.hidden_size
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_"):
                    nn.init.zeros_(p)
                    if name.startswith("bias_ih"):
                        nn.init.ones_(p[H : 2 * H])

    def num_params(self) -> int:
        """Number of parameters, a tied matrix counted once."""
        return sum(p.numel() for p in self.parameters())

    def hidden_states(self, idx: Tensor) -> Tensor:
        """The top layer's outputs (B, T, H) of idx (B, T) from a zero state: what a head reads.
        With right padding, a row's outputs before its padding do not depend on it."""
        out, _ = self.rnn(self.drop(self.wte(idx)))
        return out

    def _run(self, idx: Tensor, hidden: Hidden | None = None) -> tuple[Tensor, Hidden]:
        out, hidden = self.rnn(self.drop(self.wte(idx)), hidden)  # out (B, T, H)
        return self.lm_head(self.drop(out)), hidden  # (B, T, V)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Logits for every position, and the loss when targets are given.

        Args:
            idx: (B, T) token ids.
            targets: (B, T) next-token ids; -100 marks positions left out of the loss.

        Returns:
            logits (B, T, V) and the mean cross-entropy over non-ignored targets (float32),
            or None without targets.
        """
        logits, _ = self._run(idx)
        return logits, lm_loss(logits, targets)

    @torch.no_grad()
    def start(self, batch: Prompt | Tensor) -> tuple[Tensor, Hidden]:
        """Run each prompt from a zero state, to its own length.

        There is no length limit: block_size is only the training length. Left-padded rows are
        packed (``pack_padded_sequence``), so padding never enters the recurrence.

        Args:
            batch: a Prompt (left-padded idx and mask), or idx (B, T) with T >= 1.

        Returns:
            logits (B, V) for the token after each prompt, and the hidden state.
        """
        prompt = batch if isinstance(batch, Prompt) else Prompt(batch)
        idx, mask = prompt.idx, prompt.mask
        assert idx.dim() == 2 and idx.size(1) >= 1, f"prompt must be (B, T) with T >= 1, got {tuple(idx.shape)}"
        if mask is None or bool(mask.all()):
            logits, hidden = self._run(idx)
            return logits[:, -1], hidden
        B, T = idx.shape
        lengths = mask.sum(1)  # (B,)
        # left padding -> right padding: row r starts at column T - lengths[r]
        cols = (torch.arange(T, device=idx.device)[None, :] + (T - lengths)[:, None]).clamp(max=T - 1)  # (B, T)
        packed = nn.utils.rnn.pack_padded_sequence(self.wte(idx.gather(1, cols)), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, hidden = self.rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)  # (B, max(lengths), H)
        last = out[torch.arange(B, device=idx.device), lengths - 1]  # (B, H) each row's last real step
        return self.lm_head(last), hidden

    @torch.no_grad()
    def step(self, tokens: Tensor, state: Hidden) -> tuple[Tensor, Hidden]:
        """Feed one token per row.

        Args:
            tokens: (B,) token ids.
            state: the hidden state from ``start``, ``step`` or ``reorder``.

        Returns:
            logits (B, V) and the new hidden state.
        """
        logits, hidden = self._run(tokens[:, None], state)  # (B, 1, V)
        return logits[:, 0], hidden

    def merge(self, states: list[Hidden]) -> Hidden:
        """One hidden state holding the rows of ``states`` in order."""
        return concat_hidden(states)

    def reorder(self, state: Hidden, index: Tensor) -> Hidden:
        """Rows ``index`` (B',) of the hidden state (batch is dim 1 of h and c)."""
        return select_hidden(state, index)
