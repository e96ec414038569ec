"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a small draft model proposes
the next K tokens one by one, the target model scores all of them in one pass (``extend``), and
every token it agrees with costs it no step of its own. transformers calls it assisted
generation (``assistant_model``), llama.cpp ``--model-draft``.

- Greedy: a draft token is kept while it is the target's argmax, so the tokens are the target's
  own greedy tokens (up to float rounding between a one-token and a K-token pass).
- Sampling: a draft token d is kept with probability min(1, p(d) / q(d)), where p and q are the
  target's and the draft's distributions after the same logits processors; the first one
  refused is replaced by a draw from max(0, p - q), renormalised. The tokens then follow the
  target's own distribution exactly; only the random draws differ from plain sampling.

Either way the target adds one token of its own after the kept ones (the correction, or the
next token when all K were kept), so each pass yields 1 to K + 1 tokens. K adapts as
transformers' heuristic does: +2 after a round where all were kept, -1 otherwise.

Both models need ``extend``, ``truncate`` and ``room`` besides the Decoder protocol (the GPT
and the seq2seq Transformer have them) and must share a vocabulary. One sequence at a time:
the callers fall back to batched decoding for several.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ..config import GenerationConfig
from ..data.batch import Seq2SeqBatch
from .processors import LogitsProcessor, apply_processors
from .search import draw, grow_history
from .stopping import Deadline, Delta, Rows

MAX_DRAFT = 64  # the adaptive K never grows past this many tokens a round


def speculative_loop(model, draft, prompt: Sequence[int] | Seq2SeqBatch, cfg: GenerationConfig,
                     procs: list[LogitsProcessor], rows: Rows, generator: torch.Generator | None,
                     num_draft_tokens: int) -> Iterator[Delta]:
    """Greedy decoding or sampling of one sequence after ``prompt`` (a language model's token
    ids, or an encoder-decoder's one source), by ``model`` with ``draft`` proposing; yields
    deltas as tokens are accepted (a round's at once)."""
    if cfg.max_new_tokens == 0:
        return
    deadline = Deadline(cfg.max_time)
    source = isinstance(prompt, Seq2SeqBatch)
    history = [] if source else list(prompt)  # what the processors see before the new tokens
    inputs = prompt if source else torch.tensor([history])
    logits, state = model.start(inputs.to(_device(model)))
    dev = logits.device
    q_logits, d_state = draft.start(inputs.to(_device(draft)))
    T = len(history)
    hist = torch.tensor([history], dtype=torch.long, device=dev)  # the processors' history; grows with the text
    k, t = max(1, num_draft_tokens), 0  # t: tokens emitted
    t_pending: list[int] = []  # emitted tokens the target (the draft) has not read yet
    d_pending: list[int] = []
    sample = cfg.do_sample
    while True:
        if d_pending:
            q_logits, d_state = _feed(draft, d_state, d_pending)
        left = cfg.max_new_tokens - t
        K = min(k, left - 1, model.room(state) - len(t_pending), draft.room(d_state))
        K = max(K, 0)
        while T + t + K + 1 > hist.size(1):  # room for this round's K drafts and the run's own token
            hist = grow_history(hist, hist.size(1), left, -1)
        drafts, q_probs = [], []
        for i in range(K):  # the draft proposes K tokens, one step each
            scores = apply_processors(procs, hist[:, : T + t + i], q_logits.float())  # (1, V)
            q = torch.softmax(scores, dim=-1) if sample else None
            d = int(draw(q, [generator])) if sample else int(scores.argmax(-1))
            drafts.append(d)
            q_probs.append(q)
            hist[0, T + t + i] = d
            if i < K - 1:
                q_logits, d_state = draft.step(torch.tensor([d], device=dev), d_state)
        # the target reads what it has not read yet and the drafts, in one pass: the logits after each
        if not t_pending:  # the first round: start's logits are the first position's
            target = [logits]
            if K:
                out, state = model.extend(torch.tensor([drafts], device=dev), state)
                target += list(out[0, :, None])  # K x (1, V)
        elif K:
            out, state = model.extend(torch.tensor([t_pending + drafts], device=dev), state)
            target = list(out[0, len(t_pending) - 1 :, None])  # (K + 1) x (1, V)
        else:  # no room for drafts (the end, or a full window): a plain step
            logits, state = _feed(model, state, t_pending)
            target = [logits]
        kept, token = 0, None
        for i in range(K + 1):
            scores = apply_processors(procs, hist[:, : T + t], target[i].float())  # (1, V); t = kept + earlier
            if i == K:  # every draft kept: the target's own next token
                token = int(draw(torch.softmax(scores, -1), [generator])) if sample else int(scores.argmax(-1))
            elif sample:
                p, q, d = torch.softmax(scores, -1), q_probs[i], drafts[i]
                if float(torch.rand((), generator=generator)) * float(q[0, d]) > float(p[0, d]):
                    rest = (p - q).clamp_(min=0)
                    token = int(draw(rest if float(rest.sum()) > 0 else p, [generator]))
            elif (best := int(scores.argmax(-1))) != drafts[i]:
                token = best
            tok = drafts[i] if token is None else token
            lp = torch.log_softmax(scores, -1)[:, tok] if rows.logprobs is not None else None
            done, deltas = rows.update(torch.tensor([0]), torch.tensor([tok]), lp, t, deadline.passed())
            yield from deltas
            hist[0, T + t] = tok
            t += 1
            if done[0]:
                return
            if token is not None:
                break
            kept += 1
        # take back what was refused: the target read all K drafts, the draft the first K - 1
        state = model.truncate(state, K - kept)
        d_state = draft.truncate(d_state, max(K - 1 - kept, 0))
        d_pending = ([drafts[-1]] if K and kept == K else []) + [token]
        t_pending = [token]
        k = min(k + 2, MAX_DRAFT) if K and kept == K else max(1, k - 1)


def _feed(model, state, tokens: list[int]) -> tuple[torch.Tensor, object]:
    """``model`` reads ``tokens``: the logits (1, V) after the last one, and the state. One pass
    while the window has room; token by token (``step`` slides the window) when it has not."""
    dev = _device(model)
    if len(tokens) > 1 and model.room(state) >= len(tokens):
        out, state = model.extend(torch.tensor([tokens], device=dev), state)
        return out[:, -1], state
    for tok in tokens:
        logits, state = model.step(torch.tensor([tok], device=dev), state)
    return logits, state


def _device(model) -> torch.device:
    return next(model.parameters()).device
