"""Search over the Decoder protocol: one sampling loop (greedy = argmax) and beam search.

Both take a left-padded ``Prompt`` and ``ids`` (B, T), the same prompt with PAD_ID (-1) where
there is padding (what the logits processors see), and call only ``start``/``step``/``reorder``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Iterator, Sequence

import torch

from ..config import GenerationConfig
from ..models.protocol import Decoder, Prompt
from .processors import LogitsProcessor, apply_processors
from .stopping import Deadline, Delta, Generation, Rows

NEG = -1.0e9  # "removed" score in beam search: finite, so sums stay ordered
REASONS = ("", "eos", "stop", "length", "time")  # beam search's finish-reason codes; 0 = still running


def row_generator(seed: int | None, prompt: Sequence[int], j: int) -> torch.Generator:
    """The random stream of return sequence ``j`` of ``prompt``.

    Derived from the seed, the prompt's tokens and j, never from the batch: a prompt sampled
    alone or beside others, at any position, gives the same text, and two prompts (or two
    return sequences) do not share draws, which would make their samples echo each other.
    """
    if seed is None:
        return torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    h = hashlib.blake2b(f"{seed}/{j}/".encode() + b",".join(str(t).encode() for t in prompt), digest_size=8)
    return torch.Generator().manual_seed(int.from_bytes(h.digest(), "little") >> 1)


def draw(probs: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row of probs (N, V) by inverse-CDF sampling with row i's own generator."""
    u = torch.stack([torch.rand((), generator=g) for g in generators]).to(probs.device)  # (N,)
    cdf = probs.cumsum(dim=-1)  # (N, V)
    tok = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(1)  # (N,)
    # rounding can put u * total at the very end: take the last token with probability > 0
    V = probs.size(-1)
    last = V - 1 - (probs > 0).flip(-1).int().argmax(-1)  # (N,)
    return torch.where(tok >= V, last, tok)


def sample_loop(model: Decoder, prompt: Prompt, ids: torch.Tensor, cfg: GenerationConfig,
                procs: list[LogitsProcessor], rows: Rows, generators: list[torch.Generator] | None,
                fill_token: int) -> Iterator[Delta]:
    """Greedy decoding or sampling for every row; yields deltas as they come.

    ``ids`` and ``prompt`` have one row per returned sequence. Finished rows leave the batch
    (``reorder``) once they are at least half of it, so a long sequence does not drag dead ones.
    """
    if cfg.max_new_tokens == 0:
        return
    deadline = Deadline(cfg.max_time)
    N, T = ids.shape
    logits, state = model.start(prompt)
    dev = logits.device
    hist = torch.cat([ids.to(dev), ids.new_full((N, cfg.max_new_tokens), fill_token, device=dev)], dim=1)  # (N, T + max_new)
    alive = torch.arange(N)  # rows of the batch, by sequence number
    for t in range(cfg.max_new_tokens):
        scores = apply_processors(procs, hist[:, : T + t], logits.float())  # (A, V)
        if cfg.do_sample:
            nxt = draw(torch.softmax(scores, dim=-1), [generators[i] for i in alive.tolist()])
        else:
            nxt = scores.argmax(dim=-1)
        lps = torch.log_softmax(scores, dim=-1).gather(1, nxt[:, None]).squeeze(1) if rows.logprobs is not None else None
        done, deltas = rows.update(alive, nxt, lps, t, deadline.passed())
        yield from deltas
        hist[:, T + t] = nxt
        done_t = torch.tensor(done, dtype=torch.bool)
        if bool(done_t.all()):
            return
        n_done = int(done_t.sum())
        if n_done and 2 * n_done >= len(done):  # drop finished rows from the batch
            keep = (~done_t).nonzero().squeeze(1)
            alive = alive[keep]
            keep = keep.to(dev)
            hist, nxt, state = hist[keep], nxt[keep], model.reorder(state, keep)
        elif n_done:  # finished rows keep stepping on a harmless token until the next compaction
            nxt = nxt.masked_fill(done_t.to(dev), fill_token)
        logits, state = model.step(nxt, state)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, K, ...) rows chosen by index (B, K') along dim 1 -> (B, K', ...)."""
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:]))


def beam_search(model: Decoder, prompt: Prompt, ids: torch.Tensor, cfg: GenerationConfig,
                procs: list[LogitsProcessor], eos_ids: Sequence[int], stop_hit=None,
                generators: list[torch.Generator] | None = None) -> list[list[Generation]]:
    """Beam search with length penalty and early stopping, as transformers' ``generate`` does it.

    Each step takes the 2K best continuations over all K beams (more with several eos ids); those
    that end (eos, a stop string, max_new_tokens) go to the prompt's pool of finished hypotheses,
    scored by log-prob / generated_length ** length_penalty, if they rank in the top K; the best
    K that go on are the next beams. ``early_stopping``: True stops when K hypotheses are done;
    False when the best running beam, at its current length, cannot beat the worst finished
    one; "never" (with length_penalty > 0) assumes the beams could reach max_new_tokens.

    Args:
        stop_hit: ``tokens -> bool`` for stop strings: whether a candidate's new tokens (a
            list) hold a stop string.
        generators: one per prompt, for beam sampling (do_sample=True).

    Returns:
        For each prompt, its finished hypotheses, best first (K of them).
    """
    B, T = ids.shape
    K, L, lp = cfg.num_beams, cfg.max_new_tokens, cfg.length_penalty
    if L == 0:
        return [[Generation("", [], "length", b, 0.0) for _ in range(K)] for b in range(B)]
    deadline = Deadline(cfg.max_time)
    logits, state = model.start(prompt)
    dev = logits.device
    expand = torch.arange(B, device=dev).repeat_interleave(K)  # (B * K,)
    logits, state = logits[expand], model.reorder(state, expand)
    prompt_ids = ids.to(dev)[expand]  # (B * K, T)
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=dev)
    keep = max(2, 1 + len(eos_ids)) * K
    top_mask = torch.arange(keep, device=dev) < K  # only the top K candidates may finish
    run_tok = torch.zeros(B, K, L, dtype=torch.long, device=dev)
    run_score = torch.zeros(B, K, device=dev)
    run_score[:, 1:] = NEG  # all beams start equal: let the first step choose from beam 0 only
    fin_tok = torch.zeros(B, K, L, dtype=torch.long, device=dev)
    fin_score = torch.full((B, K), float("-inf"), device=dev)
    fin_len = torch.zeros(B, K, dtype=torch.long, device=dev)
    fin_reason = torch.zeros(B, K, dtype=torch.long, device=dev)  # index into REASONS
    fin_done = torch.zeros(B, K, dtype=torch.bool, device=dev)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=dev)
    for t in range(L):
        hist = torch.cat([prompt_ids, run_tok.view(B * K, L)[:, :t]], dim=1)  # (B * K, T + t)
        logp = apply_processors(procs, hist, torch.log_softmax(logits.float(), dim=-1))  # (B * K, V)
        V = logp.size(-1)
        acc = (logp.view(B, K, V) + run_score[..., None]).view(B, K * V)  # (B, K * V)
        if cfg.do_sample:
            probs = torch.softmax(acc, dim=-1)
            top_idx = torch.stack([torch.multinomial(probs[b].cpu(), keep, generator=generators[b])
                                   for b in range(B)]).to(dev)  # (B, keep)
            top_lp = acc.gather(1, top_idx)
        else:
            top_lp, top_idx = acc.topk(keep, dim=-1)  # (B, keep)
        src, tok = top_idx // V, top_idx % V  # beam and token of each candidate
        cand = _gather(run_tok, src).clone()  # (B, keep, L)
        cand[:, :, t] = tok
        reason = torch.zeros(B, keep, dtype=torch.long, device=dev)
        if t + 1 == L:
            reason.fill_(REASONS.index("length"))
        if deadline.passed():
            reason.fill_(REASONS.index("time"))
        if stop_hit is not None:
            for b, k in (reason == 0).nonzero().tolist():
                if stop_hit(cand[b, k, : t + 1].tolist()):
                    reason[b, k] = REASONS.index("stop")
        reason = torch.where(torch.isin(tok, eos), REASONS.index("eos"), reason)
        hits = reason > 0  # (B, keep)

        # the K best candidates that go on
        run_lp = top_lp + hits.float() * NEG
        nxt = run_lp.topk(K, dim=-1).indices  # (B, K)
        run_tok, run_score, run_src = _gather(cand, nxt), run_lp.gather(1, nxt), src.gather(1, nxt)

        # the pool of finished hypotheses
        full = fin_done.all(1, keepdim=True) & (cfg.early_stopping is True)
        new_ok = hits & top_mask & ~full & improvable  # (B, keep)
        new_score = torch.where(new_ok, top_lp / ((t + 1) ** lp), float("-inf"))
        pick = torch.cat([fin_score, new_score], 1).topk(K, dim=-1).indices  # (B, K)
        fin_score = torch.cat([fin_score, new_score], 1).gather(1, pick)
        fin_tok = _gather(torch.cat([fin_tok, cand], 1), pick)
        fin_len = torch.cat([fin_len, torch.full_like(tok, t + 1)], 1).gather(1, pick)
        fin_reason = torch.cat([fin_reason, reason], 1).gather(1, pick)
        fin_done = torch.cat([fin_done, new_ok], 1).gather(1, pick)

        best_len = L if (cfg.early_stopping == "never" and lp > 0) else t + 1
        best_possible = run_score[:, :1] / (best_len ** lp)  # (B, 1)
        improvable = improvable & (~fin_done.all(1, keepdim=True) | (best_possible > fin_score.min(1, keepdim=True).values))
        go_on = bool(improvable.any()) and not (bool(fin_done.all()) and cfg.early_stopping is True) and not bool(hits.all())
        if not go_on or t + 1 == L:
            break
        state = model.reorder(state, (torch.arange(B, device=dev)[:, None] * K + run_src).view(-1))
        logits, state = model.step(run_tok[:, :, t].reshape(-1), state)

    out: list[list[Generation]] = []
    for b in range(B):
        hyps = []
        for k in range(K):
            if not bool(fin_done[b, k]):
                continue
            n, why = int(fin_len[b, k]), REASONS[int(fin_reason[b, k])]
            toks = fin_tok[b, k, :n].tolist()
            if why == "eos":
                toks = toks[:-1]
            hyps.append(Generation("", toks, why, b, float(fin_score[b, k])))
        out.append(hyps)
    return out

