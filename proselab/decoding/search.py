"""Search over the Decoder protocol: one sampling loop (greedy = argmax) and beam search.

Both take a left-padded ``Prompt`` and ``ids`` (B, T), the same prompt with PAD_ID (-1) where
there is padding (what the logits processors see), and call only ``start``/``step``/``reorder``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ..config import GenerationConfig
from ..models.protocol import Decoder, Prompt, State
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
    hist = grow_history(ids.to(dev), T, cfg.max_new_tokens, fill_token)  # (N, T + room): grows as tokens come
    alive = torch.arange(N)  # rows of the batch, by sequence number
    for t in range(cfg.max_new_tokens):
        if T + t == hist.size(1):
            hist = grow_history(hist, T + t, cfg.max_new_tokens - t, fill_token)
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


def grow_history(hist: torch.Tensor, used: int, left: int, fill_token: int) -> torch.Tensor:
    """``hist`` (N, used) with room for more tokens: as many again (at least 64), never more than
    the ``left`` that may still come. Memory follows what is generated, not max_new_tokens, which
    a user may set to a billion."""
    room = min(left, max(used, 64))
    return torch.cat([hist[:, :used], hist.new_full((hist.size(0), room), fill_token)], dim=1)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, K, ...) rows chosen by index (B, K') along dim 1 -> (B, K', ...)."""
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:]))


@dataclass
class BeamState:
    """Beam search's tensors for B prompts and K beams, with room for R new tokens so far.

    Each prompt has K running beams (its best unfinished continuations, best first) and a pool
    of at most K finished hypotheses, as transformers keeps ``running_sequences`` and
    ``sequences`` in its vectorised beam search. The token buffers grow as tokens come
    (``_make_room``), never to max_new_tokens up front, which a user may set to a billion.
    """

    run_tok: torch.Tensor  # (B, K, R) running beams' new tokens; columns not yet generated are 0
    run_score: torch.Tensor  # (B, K) their summed log-probs, best first; NEG = an empty beam
    fin_tok: torch.Tensor  # (B, K, R) finished hypotheses' new tokens (eos included)
    fin_score: torch.Tensor  # (B, K) their log-prob / length ** length_penalty; -inf = empty slot
    fin_len: torch.Tensor  # (B, K) their lengths, in new tokens
    fin_reason: torch.Tensor  # (B, K) why each ended: an index into REASONS
    fin_done: torch.Tensor  # (B, K) the slot holds a hypothesis
    improvable: torch.Tensor  # (B, 1) the prompt's running beams may still beat its finished ones
    logits: torch.Tensor  # (B * K, V) next-token logits of every running beam
    model_state: State  # the model's state for the running beams, in the order of logits


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
    B, K, L = ids.size(0), cfg.num_beams, cfg.max_new_tokens
    if L == 0:
        return [[Generation("", [], "length", b, 0.0) for _ in range(K)] for b in range(B)]
    deadline = Deadline(cfg.max_time)
    st, prompt_ids = _start(model, prompt, ids, K)
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=prompt_ids.device)
    # enough candidates that K can go on even if every eos id ends one of them (transformers' beams_to_keep)
    keep = max(2, 1 + len(eos_ids)) * K
    # the old state is never used again: a model may reorder it in place (protocol.py)
    reorder = getattr(model, "reorder_", None) or model.reorder
    for t in range(L):
        _make_room(st, t, L)
        top_lp, src, tok = _candidates(st, procs, prompt_ids, t, keep, cfg.do_sample, generators)
        cand = _gather(st.run_tok, src).clone()  # (B, keep, R)
        cand[:, :, t] = tok
        reason = _finish_reasons(cand, tok, t, L, eos, deadline.passed(), stop_hit)
        run_src = _advance(st, cand, top_lp, src, reason > 0)
        _collect_finished(st, cand, top_lp, reason, t, cfg)
        if _search_done(st, reason > 0, t, cfg) or t + 1 == L:
            break
        rows = (torch.arange(B, device=src.device)[:, None] * K + run_src).view(-1)  # (B * K,)
        state = reorder(st.model_state, rows)
        st.logits, st.model_state = model.step(st.run_tok[:, :, t].reshape(-1), state)  # tokens (B * K,)
    return _n_best(st)


def _start(model: Decoder, prompt: Prompt, ids: torch.Tensor, K: int) -> tuple[BeamState, torch.Tensor]:
    """The first logits and state, repeated for K beams per prompt, and empty beams and pools
    (with no room for tokens yet); with the prompts' ids, one row per beam (B * K, T)."""
    B = ids.size(0)
    logits, state = model.start(prompt)
    dev = logits.device
    expand = torch.arange(B, device=dev).repeat_interleave(K)  # (B * K,)
    logits, state = logits[expand], model.reorder(state, expand)
    run_score = torch.zeros(B, K, device=dev)
    run_score[:, 1:] = NEG  # all beams start equal: let the first step choose from beam 0 only
    st = BeamState(
        run_tok=torch.zeros(B, K, 0, dtype=torch.long, device=dev),
        run_score=run_score,
        fin_tok=torch.zeros(B, K, 0, dtype=torch.long, device=dev),
        fin_score=torch.full((B, K), float("-inf"), device=dev),
        fin_len=torch.zeros(B, K, dtype=torch.long, device=dev),
        fin_reason=torch.zeros(B, K, dtype=torch.long, device=dev),
        fin_done=torch.zeros(B, K, dtype=torch.bool, device=dev),
        improvable=torch.ones(B, 1, dtype=torch.bool, device=dev),
        logits=logits,
        model_state=state,
    )
    return st, ids.to(dev)[expand]


def _make_room(st: BeamState, t: int, L: int) -> None:
    """Room for step t's token in the token buffers: when they are full, as many columns again
    (at least 64), never more than the L - t tokens that may still come."""
    B, K, R = st.run_tok.shape
    if t < R:
        return
    more = min(L - t, max(R, 64))
    st.run_tok = torch.cat([st.run_tok, st.run_tok.new_zeros(B, K, more)], dim=2)  # (B, K, R + more)
    st.fin_tok = torch.cat([st.fin_tok, st.fin_tok.new_zeros(B, K, more)], dim=2)


def _candidates(st: BeamState, procs: list[LogitsProcessor], prompt_ids: torch.Tensor, t: int, keep: int,
                sample: bool, generators: list[torch.Generator] | None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step t's ``keep`` best continuations of each prompt over all its beams (with ``sample``,
    drawn without replacement, prompt b's with ``generators[b]``): their summed log-probs,
    source beams and tokens, each (B, keep)."""
    B, K, R = st.run_tok.shape
    hist = torch.cat([prompt_ids, st.run_tok.view(B * K, R)[:, :t]], dim=1)  # (B * K, T + t)
    # (B * K, V) tensors are this loop's cost at a large vocabulary: each fresh one is a page-
    # faulted allocation, so the log-softmax is written in place into the logits, which no one
    # reads again (.float() copies them when they are bf16), and the beams' scores are added to
    # the candidates only (find_top_k), unless sampling
    scores = st.logits.float()  # (B * K, V)
    torch.log_softmax(scores, -1, out=scores)  # in place: the public op with out= (the same kernel)
    logp = apply_processors(procs, hist, scores, owned=True)  # (B * K, V)
    V = logp.size(-1)
    if sample:
        acc = logp.view(B, K, V).add_(st.run_score[..., None]).view(B, K * V)  # (B, K * V)
        probs = torch.softmax(acc, dim=-1)
        top_idx = torch.stack([torch.multinomial(probs[b].cpu(), keep, generator=generators[b])
                               for b in range(B)]).to(acc.device)  # (B, keep)
        top_lp = acc.gather(1, top_idx)
    else:  # the beams' scores added to the candidates only
        top_lp, top_idx = find_top_k(logp.view(B, K, V), keep, st.run_score)  # (B, keep)
    return top_lp, top_idx // V, top_idx % V


TOPK_BLOCK = 64  # elements per block in find_top_k's first pass


def find_top_k(x: torch.Tensor, k: int, offset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest of ``x + offset[..., None]`` over each row's K x V values, and their
    columns in (K x V): ``(x + offset[..., None]).view(B, -1).topk(k)`` for x (B, K, V) and
    offset (B, K) (None = 0), in two passes that never write a (B, K, V) tensor.

    The k blocks of TOPK_BLOCK columns (within one beam's V) with the largest maxima hold the k
    largest values (a block holding one of them has a maximum at least as large as the k-th),
    so only those k x TOPK_BLOCK values are offset and ranked. torch's topk over beam search's
    (B, K x 50k) scores took longer than the head's matmul here, and adding the beams' scores
    to every log-prob took a pass over them. Equal values may come in another order than
    torch's topk gives them."""
    B, K, V = x.shape
    blocks, full = -(-V // TOPK_BLOCK), V // TOPK_BLOCK  # per beam, and those with TOPK_BLOCK columns

    def ranked_whole() -> tuple[torch.Tensor, torch.Tensor]:
        acc = x if offset is None else x + offset[..., None]
        return acc.reshape(B, K * V).topk(k, dim=-1)

    if K * blocks < 8 * k:
        return ranked_whole()
    maxima = x[..., : full * TOPK_BLOCK].reshape(B, K, full, TOPK_BLOCK).amax(-1)  # (B, K, full)
    if full < blocks:  # each beam's last, partial block
        maxima = torch.cat([maxima, x[..., full * TOPK_BLOCK :].amax(-1, keepdim=True)], dim=2)
    if offset is not None:
        maxima = maxima + offset[..., None]
    best = maxima.view(B, K * blocks).topk(k, dim=-1).indices  # (B, k)
    beam = best // blocks
    cols = (best % blocks)[:, :, None] * TOPK_BLOCK + torch.arange(TOPK_BLOCK, device=x.device)  # (B, k, blk)
    flat = (beam[:, :, None] * V + cols.clamp(max=V - 1)).view(B, -1)  # (B, k * blk) columns in K x V
    vals = x.reshape(B, K * V).gather(1, flat).view(B, k, TOPK_BLOCK)
    if offset is not None:
        vals = vals + offset.gather(1, beam)[:, :, None]
    vals = vals.masked_fill(cols >= V, float("-inf")).view(B, -1)  # past a beam's V: never picked
    top, pick = vals.topk(k, dim=-1)  # (B, k)
    if bool(torch.isneginf(top[:, -1]).any()):  # fewer than k finite values: let torch rank them all
        return ranked_whole()
    return top, flat.gather(1, pick)


def _finish_reasons(cand: torch.Tensor, tok: torch.Tensor, t: int, L: int, eos: torch.Tensor,
                    late: bool, stop_hit) -> torch.Tensor:
    """Why each candidate (B, keep, R) ends at step t, as an index into REASONS (0 = it goes
    on): (B, keep). Eos wins over the others, as it is the token that was chosen."""
    reason = torch.zeros_like(tok)
    if t + 1 == L:
        reason.fill_(REASONS.index("length"))
    if late:
        reason.fill_(REASONS.index("time"))
    if stop_hit is not None:
        for b, k in (reason == 0).nonzero().tolist():
            if stop_hit(cand[b, k, : t + 1].tolist()):
                reason[b, k] = REASONS.index("stop")
    return torch.where(torch.isin(tok, eos), REASONS.index("eos"), reason)


def _advance(st: BeamState, cand: torch.Tensor, top_lp: torch.Tensor, src: torch.Tensor,
             hits: torch.Tensor) -> torch.Tensor:
    """Make the K best candidates that do not end (``hits`` False) the running beams; returns
    the beam each came from (B, K), to reorder the model's state with."""
    K = st.run_score.size(1)
    run_lp = top_lp + hits.float() * NEG
    nxt = run_lp.topk(K, dim=-1).indices  # (B, K)
    st.run_tok, st.run_score = _gather(cand, nxt), run_lp.gather(1, nxt)
    return src.gather(1, nxt)


def _collect_finished(st: BeamState, cand: torch.Tensor, top_lp: torch.Tensor, reason: torch.Tensor,
                      t: int, cfg: GenerationConfig) -> None:
    """Put the candidates that end at step t into their prompt's pool, which keeps the K best.

    As transformers' ``_update_finished_beams``: only the top K candidates may finish (the
    others are spares so K beams can go on), and none may once the pool is full with
    early_stopping=True or once the prompt's beams cannot improve on it.
    """
    K, keep = st.fin_score.size(1), top_lp.size(1)
    top_mask = torch.arange(keep, device=top_lp.device) < K
    full = st.fin_done.all(1, keepdim=True) & (cfg.early_stopping is True)
    new_ok = (reason > 0) & top_mask & ~full & st.improvable  # (B, keep)
    new_score = torch.where(new_ok, top_lp / ((t + 1) ** cfg.length_penalty), float("-inf"))
    scores = torch.cat([st.fin_score, new_score], 1)  # (B, K + keep)
    pick = scores.topk(K, dim=-1).indices  # (B, K)
    st.fin_score = scores.gather(1, pick)
    st.fin_tok = _gather(torch.cat([st.fin_tok, cand], 1), pick)
    st.fin_len = torch.cat([st.fin_len, torch.full_like(reason, t + 1)], 1).gather(1, pick)
    st.fin_reason = torch.cat([st.fin_reason, reason], 1).gather(1, pick)
    st.fin_done = torch.cat([st.fin_done, new_ok], 1).gather(1, pick)


def _search_done(st: BeamState, hits: torch.Tensor, t: int, cfg: GenerationConfig) -> bool:
    """Update which prompts can still improve, and say whether the search is over: no prompt
    can, every pool is full with early_stopping=True, or every candidate ended (``hits``).

    As transformers' ``_check_early_stop_heuristic``: the best running beam's best possible
    score is taken at the current length, or at max_new_tokens with early_stopping="never"
    and length_penalty > 0 (longer is better then).
    """
    lp = cfg.length_penalty
    best_len = cfg.max_new_tokens if (cfg.early_stopping == "never" and lp > 0) else t + 1
    best_possible = st.run_score[:, :1] / (best_len ** lp)  # (B, 1)
    can_beat = best_possible > st.fin_score.min(1, keepdim=True).values  # the worst finished one
    st.improvable = st.improvable & (~st.fin_done.all(1, keepdim=True) | can_beat)
    pools_full = bool(st.fin_done.all()) and cfg.early_stopping is True
    return not (bool(st.improvable.any()) and not pools_full and not bool(hits.all()))


def _n_best(st: BeamState) -> list[list[Generation]]:
    """Each prompt's finished hypotheses, best first, without their eos token."""
    B, K = st.fin_done.shape
    out: list[list[Generation]] = []
    for b in range(B):
        hyps = []
        for k in range(K):
            if not bool(st.fin_done[b, k]):
                continue
            n, why = int(st.fin_len[b, k]), REASONS[int(st.fin_reason[b, k])]
            toks = st.fin_tok[b, k, :n].tolist()
            if why == "eos":
                toks = toks[:-1]
            hyps.append(Generation("", toks, why, b, float(st.fin_score[b, k])))
        out.append(hyps)
    return out
