"""Logits processors: small ``(ids, logits) -> logits`` callables applied in order.

``ids`` is (B, T) int64, every token so far (prompt + generated). Shorter prompts in a batch
are left-padded with ``PAD_ID``; those positions are not tokens and every processor ignores
them. ``logits`` is (B, V) for the next token, raw or log-softmaxed (beam search): the
processors work on either. A processor never writes into its input; it returns a new tensor,
or the input itself when it changes nothing. Removed tokens get ``-inf``. A processor may also
have ``apply_(ids, logits)``, the same change written into ``logits``: ``apply_processors(...,
owned=True)`` uses it for a caller that never reads its logits again (beam search, where a
copy of (beams x V) scores a step is a page-faulted 16 MB at a 50k vocabulary). Greedy decoding is
the argmax of the processed logits, so it needs no loop of its own.

``build_processors`` uses transformers' order (``GenerationMixin._get_logits_processor``):
repetition penalty, no-repeat n-gram, min new tokens, forced first and last tokens, suppressed
tokens; then, only when sampling, the warpers temperature, top-k, top-p, min-p, typical-p.
OpenAI's presence and frequency penalties and logit bias, which transformers does not have,
come right after the repetition penalty: they change raw logits, before any token is banned.

The semantics are transformers', except that where transformers breaks a tie at a cutoff by
token id (top-p, and ``min_tokens_to_keep`` in min-p), tokens with equal logits are all kept,
as top-k and typical-p already do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..config import GenerationConfig

LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

PAD_ID = -1  # left padding in ``ids``; never a token

_INF = float("inf")


def _columns(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, T) ids as columns of a (B, V + 1) table: pads (and ids past the head's vocab) land in
    the spare last column, which the caller drops."""
    return ids.masked_fill(ids == PAD_ID, vocab_size).clamp(max=vocab_size)


def _present(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, T) ids -> (B, V) bool, True where the token occurs in the row; PAD_ID is ignored."""
    seen = torch.zeros(ids.size(0), vocab_size + 1, dtype=torch.bool, device=ids.device)
    return seen.scatter_(1, _columns(ids, vocab_size), True)[:, :vocab_size]


def _ban(logits: torch.Tensor, token_ids: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """-inf in the columns ``token_ids`` (ids past the vocab are skipped), in a copy of
    ``logits`` or, ``in_place``, in ``logits`` itself."""
    token_ids = token_ids.to(logits.device)
    token_ids = token_ids[token_ids < logits.size(-1)]
    return logits.index_fill_(-1, token_ids, -_INF) if in_place else logits.index_fill(-1, token_ids, -_INF)


class SuppressTokens:
    """Never produce ``token_ids`` (e.g. a char model's <unk>, which the training text never holds)."""

    def __init__(self, token_ids: Sequence[int]):
        self.token_ids = torch.tensor(sorted(set(token_ids)), dtype=torch.long)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return _ban(logits, self.token_ids)

    def apply_(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return _ban(logits, self.token_ids, in_place=True)


class MinNewTokens:
    """Forbid every eos id until ``min_new_tokens`` tokens follow the ``prompt_length``-wide prompt.

    ``prompt_length`` is the padded width of the prompt, the same for every row, so
    ``ids.size(1) - prompt_length`` counts the tokens generated so far.
    """

    def __init__(self, prompt_length: int, min_new_tokens: int, eos_ids: Sequence[int]):
        assert prompt_length >= 0 and min_new_tokens >= 0, "prompt_length and min_new_tokens must be >= 0"
        self.prompt_length = prompt_length
        self.min_new_tokens = min_new_tokens
        self.eos_ids = torch.tensor(sorted(set(eos_ids)), dtype=torch.long)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self._ban_eos(ids, logits, in_place=False)

    def apply_(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self._ban_eos(ids, logits, in_place=True)

    def _ban_eos(self, ids: torch.Tensor, logits: torch.Tensor, in_place: bool) -> torch.Tensor:
        if ids.size(1) - self.prompt_length >= self.min_new_tokens:
            return logits
        return _ban(logits, self.eos_ids, in_place)


class ForcedToken:
    """Make the ``index``-th generated token (0 = the first) ``token_id``: transformers'
    ForcedBOSTokenLogitsProcessor (index 0) and ForcedEOSTokenLogitsProcessor (the last one
    max_new_tokens allows). The forced token scores 0, every other -inf."""

    def __init__(self, prompt_length: int, index: int, token_id: int):
        assert prompt_length >= 0 and index >= 0 and token_id >= 0, "prompt_length, index and token_id must be >= 0"
        self.prompt_length, self.index, self.token_id = prompt_length, index, token_id

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if ids.size(1) - self.prompt_length != self.index or self.token_id >= logits.size(-1):
            return logits
        out = torch.full_like(logits, -_INF)
        out[:, self.token_id] = 0.0
        return out


class RepetitionPenalty:
    """CTRL's penalty (Keskar et al., 2019) on every token already in the row, once per token.

    A negative logit is multiplied by ``penalty`` and a positive one divided, so ``penalty > 1``
    always makes a seen token less likely (and < 1 more likely).
    """

    def __init__(self, penalty: float):
        assert penalty > 0, f"repetition_penalty must be > 0, got {penalty}"
        self.penalty = penalty

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        # through a presence mask, a token seen twice is penalized once
        rows, cols = _present(ids, logits.size(-1)).nonzero(as_tuple=True)  # (N,) each
        s = logits[rows, cols]  # only the seen tokens: a where over all of V costs more
        return logits.index_put((rows, cols), torch.where(s < 0, s * self.penalty, s / self.penalty))


class OutputPenalties:
    """OpenAI's presence and frequency penalties: a token's logit loses ``presence`` if the token
    was generated already and ``frequency`` for each time it was. Only the tokens after the
    ``prompt_length``-wide prompt count, as in OpenAI's API and vLLM; negative values encourage
    repeats."""

    def __init__(self, prompt_length: int, presence: float, frequency: float):
        self.prompt_length, self.presence, self.frequency = prompt_length, presence, frequency

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        penalty = self._penalty(ids, logits)
        return logits if penalty is None else logits - penalty

    def apply_(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        penalty = self._penalty(ids, logits)
        return logits if penalty is None else logits.sub_(penalty)

    def _penalty(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        new = ids[:, self.prompt_length :]
        if new.size(1) == 0:
            return None
        V = logits.size(-1)
        cols = _columns(new, V)
        counts = torch.zeros(new.size(0), V + 1, dtype=torch.float32, device=ids.device)
        counts = counts.scatter_add_(1, cols, torch.ones_like(cols, dtype=torch.float32))[:, :V]
        penalty = counts * self.frequency + (counts > 0) * self.presence
        return penalty.to(logits.dtype)


class LogitBias:
    """OpenAI's ``logit_bias``: add each listed token's bias to its logit (-100 all but bans it,
    100 all but forces it); ids past the vocabulary are skipped."""

    def __init__(self, bias: dict[int, float]):
        self.token_ids = torch.tensor(list(bias), dtype=torch.long)
        self.values = torch.tensor(list(bias.values()), dtype=torch.float32)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self._add(logits.clone())

    def apply_(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self._add(logits)

    def _add(self, logits: torch.Tensor) -> torch.Tensor:
        keep = self.token_ids < logits.size(-1)
        token_ids, values = self.token_ids[keep].to(logits.device), self.values[keep].to(logits.device, logits.dtype)
        return logits.index_add_(-1, token_ids, values.expand(logits.size(0), -1))


class NoRepeatNGram:
    """Ban every token that would complete an ``n``-gram already in the row (n-grams with PAD_ID don't count)."""

    def __init__(self, n: int):
        assert n >= 1, f"no_repeat_ngram_size must be >= 1, got {n}"
        self.n = n

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        B, T = ids.shape
        V = logits.size(-1)
        if T < self.n:
            return logits
        # as transformers does: match the last n-1 tokens against the head of every window; a
        # match bans the window's last token. A prefix holding a pad only matches windows with one.
        prefix = ids[:, T - self.n + 1 :]  # (B, n-1)
        windows = ids.unfold(1, self.n, 1)  # (B, T-n+1, n)
        hit = (windows[..., :-1] == prefix[:, None]).all(-1) & (windows != PAD_ID).all(-1)  # (B, T-n+1)
        cols = torch.where(hit, windows[..., -1].clamp(max=V), V)  # misses go to a spare column
        banned = torch.zeros(B, V + 1, dtype=torch.bool, device=ids.device).scatter_(1, cols, True)
        return logits.masked_fill(banned[:, :V], -_INF)


class Temperature:
    """Divide logits by ``temperature``: < 1 sharpens the distribution, > 1 flattens it."""

    def __init__(self, temperature: float):
        assert temperature > 0, f"temperature must be > 0, got {temperature}"
        self.temperature = temperature

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature >= 1e-3:  # no float32 logit overflows: transformers' division, exactly
            return logits / self.temperature
        # a tiny one (below float32's smallest, even 0): from the best logit down, the best stays 0 and
        # the others go to -inf, greedy decoding, its limit; dividing the best would give +inf or NaN
        shifted = logits - logits.amax(-1, keepdim=True)
        return torch.where(shifted == 0, shifted, shifted / self.temperature)


def _kth_largest(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, V) -> (B, 1), the k-th largest value of each row."""
    if k == 1:
        return x.amax(-1, keepdim=True)  # far cheaper than topk on CPU
    return torch.topk(x, min(k, x.size(-1)), dim=-1).values[:, -1:]


class TopK:
    """Keep the ``k`` most likely tokens (ties at the k-th value are all kept)."""

    def __init__(self, k: int, min_tokens_to_keep: int = 1):
        assert k >= 1, f"top_k must be >= 1, got {k}"
        self.k = max(k, min_tokens_to_keep)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits.masked_fill(logits < _kth_largest(logits, self.k), -_INF)


_BINS, _BINS_PER_NAT = 4096, 128  # the histogram in _mass_cutoff: 32 nats below the best score


def _mass_cutoff(score: torch.Tensor, probs: torch.Tensor, mass: float) -> torch.Tensor:
    """The lowest score a token may have and still be kept.

    Tokens are ranked by ``score`` (higher is better); a token is kept when the probability
    of the tokens ranked strictly above it is < ``mass``. That is a sort and a cumsum, but
    sorting (16, 50257) takes ~30 ms on a CPU, so instead: a histogram of the scores finds,
    per row, the bin where the mass runs out, and only the tokens of that bin are sorted (one
    round of the radix select PyTorch's CUDA top-k uses).

    Args:
        score: (B, V) ranking, -inf last.
        probs: (B, V) the probability of each token.
        mass: the probability to cover.

    Returns:
        (B, 1) cutoff: keep ``score >= cutoff``.
    """
    B = score.size(0)
    best = score.amax(-1, keepdim=True)  # (B, 1)
    bins = (best - score).mul_(_BINS_PER_NAT).clamp_(max=_BINS).long()  # (B, V); -inf goes to the last bin
    hist = probs.new_zeros(B, _BINS + 1).scatter_add_(1, bins, probs)  # (B, bins + 1) mass per bin
    # float64 sums: near p = 1 a boundary token's probability is below float32's resolution at 1
    cum = torch.nn.functional.pad(hist.double().cumsum(-1), (1, 0))  # (B, bins + 2) mass before each bin
    # a share of the actual total: float32 softmax sums to 1 only within ~1e-6, like the tail
    # sums transformers compares with 1 - p
    mass = mass * cum[:, -1:]  # (B, 1)
    # the first bin that reaches `mass` (the last bin if rounding leaves the total below it)
    b = (cum[:, 1:] < mass).sum(-1, keepdim=True).clamp_(max=_BINS)  # (B, 1)
    above = cum.gather(1, b)  # (B, 1) mass of the better bins, < mass

    # the boundary bin's tokens, packed into (B, K) with -inf padding
    cand = bins == b  # (B, V)
    rows, cols = cand.nonzero(as_tuple=True)  # row-major, so rows ascend
    counts = torch.bincount(rows, minlength=B)  # (B,)
    pos = torch.arange(rows.numel(), device=score.device) - (counts.cumsum(0) - counts)[rows]
    K = max(int(counts.max()), 1)
    s = score.new_full((B, K), -_INF).index_put_((rows, pos), score[rows, cols])
    w = torch.zeros(B, K, dtype=torch.float64, device=score.device).index_put_((rows, pos), probs[rows, cols].double())
    s, order = s.sort(-1, descending=True)  # (B, K)
    w = w.gather(1, order)
    ahead = above + w.cumsum(-1) - w  # (B, K) mass ranked strictly above each candidate
    # ties share the lowest `ahead` of their group through `score >= cutoff`
    return s.masked_fill(ahead >= mass, _INF).amin(-1, keepdim=True)


def _saturated(logits: torch.Tensor) -> torch.Tensor:
    """+inf logits (a tiny repetition penalty overflows) as float's largest value: the mass
    cutoff's softmax would make them NaN."""
    return logits.clamp(max=torch.finfo(logits.dtype).max)


class TopP:
    """Nucleus sampling (Holtzman et al., 2019): keep the most likely tokens until their mass reaches ``p``.

    The token that crosses ``p`` is kept, so is the top ``min_tokens_to_keep`` whatever ``p``.
    """

    def __init__(self, p: float, min_tokens_to_keep: int = 1):
        assert 0 <= p <= 1, f"top_p must be in [0, 1], got {p}"
        assert min_tokens_to_keep >= 1, f"min_tokens_to_keep must be >= 1, got {min_tokens_to_keep}"
        self.p = p
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        logits = _saturated(logits)
        cutoff = _mass_cutoff(logits, logits.softmax(-1), self.p)
        cutoff = torch.minimum(cutoff, _kth_largest(logits, self.min_tokens_to_keep))
        return logits.masked_fill(logits < cutoff, -_INF)


class MinP:
    """Drop tokens less likely than ``p`` times the most likely one (Nguyen et al., 2024)."""

    def __init__(self, p: float, min_tokens_to_keep: int = 1):
        assert 0 <= p <= 1, f"min_p must be in [0, 1], got {p}"
        assert min_tokens_to_keep >= 1, f"min_tokens_to_keep must be >= 1, got {min_tokens_to_keep}"
        self.p = p
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        # prob < p * top_prob  <=>  logit < top_logit + log p: no softmax needed
        cutoff = logits.amax(-1, keepdim=True) + (math.log(self.p) if self.p > 0 else -_INF)
        if self.min_tokens_to_keep > 1:
            cutoff = torch.minimum(cutoff, _kth_largest(logits, self.min_tokens_to_keep))
        return logits.masked_fill(logits < cutoff, -_INF)


class TypicalP:
    """Locally typical sampling (Meister et al., 2022): keep the tokens whose surprisal is
    closest to the entropy, until their mass reaches ``mass``.

    The most likely token can be dropped; the ``min_tokens_to_keep`` most typical ones never are.
    """

    def __init__(self, mass: float, min_tokens_to_keep: int = 1):
        assert 0 < mass <= 1, f"typical_p must be in (0, 1], got {mass}"
        assert min_tokens_to_keep >= 1, f"min_tokens_to_keep must be >= 1, got {min_tokens_to_keep}"
        self.mass = mass
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        logits = _saturated(logits)
        logp = logits.log_softmax(-1)  # (B, V)
        probs = logp.exp()
        entropy = -(logp * probs).nansum(-1, keepdim=True)  # (B, 1); nansum skips 0 * -inf
        typicality = (logp + entropy).abs_().neg_()  # (B, V) -|surprisal - entropy|; -inf for -inf logits
        cutoff = _mass_cutoff(typicality, probs, self.mass)
        cutoff = torch.minimum(cutoff, _kth_largest(typicality, self.min_tokens_to_keep))
        return logits.masked_fill(typicality < cutoff, -_INF)


def build_processors(
    cfg: GenerationConfig,
    suppress_ids: Sequence[int] = (),
    prompt_length: int = 0,
    eos_ids: Sequence[int] = (),
) -> list[LogitsProcessor]:
    """The processors ``cfg`` asks for, in the order they apply (transformers' order).

    Args:
        cfg: generation settings; a setting at its "off" value adds nothing.
        suppress_ids: tokens never to produce (e.g. <unk>).
        prompt_length: the padded prompt width T of the first ``ids``, for ``min_new_tokens``
            and the presence and frequency penalties.
        eos_ids: end-of-sequence ids, which ``min_new_tokens`` holds back.
    """
    procs: list[LogitsProcessor] = []
    if cfg.repetition_penalty != 1.0:
        procs.append(RepetitionPenalty(cfg.repetition_penalty))
    if cfg.presence_penalty or cfg.frequency_penalty:
        procs.append(OutputPenalties(prompt_length, cfg.presence_penalty, cfg.frequency_penalty))
    if cfg.logit_bias:
        procs.append(LogitBias(cfg.logit_bias))
    if cfg.no_repeat_ngram_size > 0:
        procs.append(NoRepeatNGram(cfg.no_repeat_ngram_size))
    if cfg.min_new_tokens > 0 and len(eos_ids) > 0:
        procs.append(MinNewTokens(prompt_length, cfg.min_new_tokens, eos_ids))
    if cfg.forced_bos_token_id is not None:
        procs.append(ForcedToken(prompt_length, 0, cfg.forced_bos_token_id))
    if cfg.forced_eos_token_id is not None and cfg.max_new_tokens > 0:
        procs.append(ForcedToken(prompt_length, cfg.max_new_tokens - 1, cfg.forced_eos_token_id))
    suppress_ids = [*suppress_ids, *cfg.suppress_tokens]
    if suppress_ids:
        procs.append(SuppressTokens(suppress_ids))
    if not cfg.do_sample:
        return procs
    # beam sampling keeps a non-eos token in every beam so a beam can go on, as transformers does
    keep = max(len(eos_ids), 1) + 1 if cfg.num_beams > 1 else 1
    if cfg.temperature != 1.0:
        procs.append(Temperature(cfg.temperature))
    if cfg.top_k > 0:
        procs.append(TopK(cfg.top_k, keep))
    if cfg.top_p < 1.0:
        procs.append(TopP(cfg.top_p, keep))
    if cfg.min_p > 0.0:
        procs.append(MinP(cfg.min_p, keep))
    if cfg.typical_p < 1.0:
        procs.append(TypicalP(cfg.typical_p, keep))
    return procs


def apply_processors(procs: list[LogitsProcessor], ids: torch.Tensor, logits: torch.Tensor,
                     owned: bool = False) -> torch.Tensor:
    """Run ``procs`` in order: (B, T) ids, (B, V) logits -> (B, V) logits. ``owned``: the caller
    never reads ``logits`` again, so a processor with ``apply_`` may write into them."""
    for p in procs:
        apply_ = getattr(p, "apply_", None) if owned else None
        logits = apply_(ids, logits) if apply_ is not None else p(ids, logits)
    return logits
