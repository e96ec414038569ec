"""One decoding engine for every model family, written over the Decoder protocol only.

``generate(model, prompts, config, tokenizer=...)`` returns a Generation per sequence (text,
tokens, finish reason, scores); ``stream(...)`` yields Deltas as tokens come, and the deltas of
a sequence add up to exactly what ``generate`` returns for it. Strategies: greedy
(``do_sample=False``, or ``temperature=0`` as in OpenAI's API), sampling (temperature, top-k,
top-p, min-p, typical-p), beam search (``num_beams > 1``, deterministic or sampled), all with
the same logits processors and stopping rules. With ``draft=`` a small model proposes tokens
that the model checks several at a time (``speculative``) when one sequence is decoded.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from ..config import ConfigError, GenerationConfig, validate_generation
from ..config.checks import effective_generation
from ..data.batch import Seq2SeqBatch
from ..models.prepack import prepack_for_cpu
from ..models.protocol import Decoder, Prompt
from .processors import PAD_ID, build_processors
from .search import beam_search, row_generator, sample_loop
from .speculative import speculative_loop
from .stopping import Delta, Generation, Rows, eos_ids_for
from .text import final_text, find_stop

__all__ = ["generate", "stream", "GenerationConfig", "Generation", "Delta", "Prompt", "pad_prompts", "json_safe"]


def json_safe(obj):
    """``obj`` with every float that JSON cannot hold (-inf: a token the processors ruled out,
    as top_k does; nan: a score of such tokens) as None, so what decoding reports is always JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def pad_prompts(prompts: Sequence[Sequence[int]] | torch.Tensor | Prompt, device: torch.device | str = "cpu",
                max_new_tokens: int | None = None) -> tuple[Prompt, torch.Tensor, list[list[int]]]:
    """Left-pad token lists into a Prompt.

    Returns:
        the Prompt (on ``device``), the same ids with PAD_ID at padding (B, T) for the logits
        processors, and each prompt's tokens as a list.
    """
    if isinstance(prompts, Prompt):
        idx, mask = prompts.idx, prompts.mask
        lists = [row[m].tolist() if mask is not None else row.tolist()
                 for row, m in zip(idx, mask if mask is not None else idx)]
    elif isinstance(prompts, torch.Tensor):
        assert prompts.dim() == 2, f"prompt ids must be (B, T), got {tuple(prompts.shape)}"
        lists = prompts.tolist()
    else:
        lists = [list(map(int, p)) for p in prompts]
    if not lists:
        raise ValueError("no prompts to generate from")
    for i, p in enumerate(lists):
        if not p:
            raise ValueError(f"prompt {i} has no tokens; give it text, or a beginning-of-sequence token")
    T = max(len(p) for p in lists)
    idx = torch.zeros(len(lists), T, dtype=torch.long)
    ids = torch.full((len(lists), T), PAD_ID, dtype=torch.long)
    for i, p in enumerate(lists):
        idx[i, T - len(p):] = torch.tensor(p)
        ids[i, T - len(p):] = idx[i, T - len(p):]
    mask = ids != PAD_ID
    prompt = Prompt(idx.to(device), None if bool(mask.all()) else mask.to(device), max_new_tokens)
    return prompt, ids, lists


def _source(batch: Seq2SeqBatch, device, max_new_tokens: int) -> tuple[Seq2SeqBatch, torch.Tensor, list[list[int]]]:
    """An encoder-decoder's input: the batch on ``device``, an empty history for the logits
    processors (they see only generated tokens, as transformers' do for encoder-decoders), and
    each source's tokens (which seed its random stream)."""
    if len(batch) == 0:
        raise ValueError("no sources to generate from")
    lists = [row[m].tolist() for row, m in zip(batch.src, batch.mask)]
    batch = Seq2SeqBatch(batch.src, batch.mask, None, max_new_tokens).to(device)
    return batch, torch.zeros(len(lists), 0, dtype=torch.long), lists


def _repeat(prompt: Prompt | Seq2SeqBatch, ids: torch.Tensor, n: int) -> tuple[Prompt | Seq2SeqBatch, torch.Tensor]:
    if n == 1:
        return prompt, ids
    if isinstance(prompt, Seq2SeqBatch):
        return prompt.repeat_interleave(n), ids.repeat_interleave(n, 0)
    mask = None if prompt.mask is None else prompt.mask.repeat_interleave(n, 0)
    return Prompt(prompt.idx.repeat_interleave(n, 0), mask, prompt.max_new_tokens), ids.repeat_interleave(n, 0)


def _setup(model, prompts, cfg: GenerationConfig | None, tokenizer, suppress_ids):
    cfg = cfg or GenerationConfig()
    validate_generation(cfg)
    cfg = effective_generation(cfg)  # temperature 0 = greedy
    if cfg.stop and tokenizer is None:
        raise ConfigError("generation.stop needs a tokenizer to match text; pass tokenizer=")
    device = torch.device("cpu")
    if isinstance(model, torch.nn.Module):
        device = next(model.parameters()).device
        prepack_for_cpu(model)  # oneDNN-packed linear weights: ~1.5x faster CPU decoding
    if isinstance(prompts, Seq2SeqBatch):
        prompt, ids, lists = _source(prompts, device, cfg.max_new_tokens)
    else:
        prompt, ids, lists = pad_prompts(prompts, device, cfg.max_new_tokens)
    eos_ids, procs = processors_for(cfg, tokenizer, suppress_ids, ids.size(1))
    return cfg, prompt, ids, lists, eos_ids, procs


def processors_for(cfg: GenerationConfig, tokenizer, suppress_ids: Sequence[int],
                   prompt_length: int) -> tuple[list[int], list]:
    """The end-of-sequence ids and the logits processors for ``cfg``, whose history starts
    with ``prompt_length`` prompt tokens (0 for an encoder-decoder). ``generate`` and the
    server's engine both set up decoding through this and ``rows_for``, so a request decodes
    the same wherever it runs."""
    eos_ids = eos_ids_for(cfg.eos_token_id, tokenizer)
    return eos_ids, build_processors(cfg, suppress_ids, prompt_length=prompt_length, eos_ids=eos_ids)


def rows_for(cfg: GenerationConfig, lists: list[list[int]], eos_ids: list[int], tokenizer,
             logprobs: bool | None = None) -> tuple[list[torch.Generator] | None, Rows]:
    """For greedy or sampled decoding of num_return_sequences rows per prompt of ``lists``:
    each row's random stream (None without sampling) and the rows' stopping and text
    bookkeeping. ``logprobs`` (default: ``cfg.output_scores``) keeps each token's log-probability."""
    n = cfg.num_return_sequences
    gens = [row_generator(cfg.seed, p, j) for p in lists for j in range(n)] if cfg.do_sample else None
    rows = Rows(len(lists) * n, [i for i in range(len(lists)) for _ in range(n)], cfg.max_new_tokens, eos_ids,
                tokenizer, cfg.stop, cfg.output_scores if logprobs is None else logprobs)
    return gens, rows


@torch.no_grad()
def stream(model: Decoder, prompts, config: GenerationConfig | None = None, *, tokenizer=None,
           suppress_ids: Sequence[int] = (), draft: Decoder | None = None, num_draft_tokens: int = 5
           ) -> Iterator[Delta]:
    """Generate and yield each sequence's new text and tokens as they come.

    Args:
        model: any model implementing the Decoder protocol (put it in eval mode).
        prompts: token-id lists (any lengths), a (B, T) LongTensor, or a Prompt; for an
            encoder-decoder, a Seq2SeqBatch of sources.
        config: generation settings (default GenerationConfig()).
        tokenizer: a proselab Tokenizer, for text, stop strings and the default eos id.
        suppress_ids: token ids never to generate (e.g. a char model's <unk>).
        draft: a smaller model of the same kind and vocabulary for speculative decoding (a GPT or
            a seq2seq Transformer, as ``model`` must be then): used for one prompt and one
            sequence, greedy or sampled;
            a batch, several sequences or beam search decode without it.
        num_draft_tokens: the draft's tokens a round to start with (adapted as it goes).

    Yields:
        Delta(index, text, tokens, finish_reason, logprobs). Beam search keeps its beams
        open to the end, so it yields each sequence once, whole, when it is done.
    """
    cfg, prompt, ids, lists, eos_ids, procs = _setup(model, prompts, config, tokenizer, suppress_ids)
    if cfg.num_beams > 1:
        for i, g in enumerate(_beam(model, prompt, ids, lists, cfg, procs, eos_ids, tokenizer)):
            yield Delta(i, g.text, g.tokens, g.finish_reason)
        return
    _, deltas = _sample(model, prompt, ids, lists, cfg, procs, eos_ids, tokenizer, draft, num_draft_tokens)
    yield from deltas


@torch.no_grad()
def generate(model: Decoder, prompts, config: GenerationConfig | None = None, *, tokenizer=None,
             suppress_ids: Sequence[int] = (), draft: Decoder | None = None, num_draft_tokens: int = 5
             ) -> list[Generation]:
    """Generate for a batch of prompts; arguments as for ``stream``.

    Returns:
        One Generation per sequence, grouped by prompt: num_return_sequences of them per prompt
        (for beam search, the best ones, best first).
    """
    cfg, prompt, ids, lists, eos_ids, procs = _setup(model, prompts, config, tokenizer, suppress_ids)
    if cfg.num_beams > 1:
        return _beam(model, prompt, ids, lists, cfg, procs, eos_ids, tokenizer)
    rows, deltas = _sample(model, prompt, ids, lists, cfg, procs, eos_ids, tokenizer, draft, num_draft_tokens)
    for _ in deltas:
        pass
    return rows.results()


def _sample(model, prompt, ids, lists, cfg, procs, eos_ids, tokenizer, draft=None,
            num_draft_tokens: int = 5) -> tuple[Rows, Iterator[Delta]]:
    """Greedy or sampled decoding of num_return_sequences rows per prompt: the rows' bookkeeping,
    and the (lazy) stream of their deltas."""
    if draft is not None and len(lists) == 1 and cfg.num_return_sequences == 1:
        for m in (model, draft):
            if not all(hasattr(m, name) for name in ("extend", "truncate", "room")):
                raise ValueError(f"speculative decoding needs a GPT or a seq2seq Transformer as the model and as "
                                 f"the draft, not a {type(m).__name__}")
        if num_draft_tokens < 1:
            raise ValueError(f"num_draft_tokens must be >= 1, got {num_draft_tokens}")
        if isinstance(draft, torch.nn.Module):
            prepack_for_cpu(draft)
        gens, rows = rows_for(cfg, lists, eos_ids, tokenizer)
        source = prompt if isinstance(prompt, Seq2SeqBatch) else lists[0]
        return rows, speculative_loop(model, draft, source, cfg, procs, rows, gens[0] if gens else None,
                                      num_draft_tokens)
    prompt, ids = _repeat(prompt, ids, cfg.num_return_sequences)
    gens, rows = rows_for(cfg, lists, eos_ids, tokenizer)
    return rows, sample_loop(model, prompt, ids, cfg, procs, rows, gens, eos_ids[0] if eos_ids else 0)


def _beam(model, prompt, ids, lists, cfg, procs, eos_ids, tokenizer) -> list[Generation]:
    """Beam search for every prompt; its num_return_sequences best hypotheses each, with text."""
    stop_hit = None
    if cfg.stop:
        longest = max(len(s) for s in cfg.stop)
        window = 4 * longest + 4  # tokens: enough for the longest stop string, even one byte per token

        def stop_hit(tokens: list[int]) -> bool:
            return find_stop(tokenizer.decode(tokens[-window:]), cfg.stop) is not None

    gens = [row_generator(cfg.seed, p, 0) for p in lists] if cfg.do_sample else None
    hyps = beam_search(model, prompt, ids, cfg, procs, eos_ids, stop_hit, gens)
    out = []
    for prompt_hyps in hyps:
        for g in prompt_hyps[: cfg.num_return_sequences]:
            if tokenizer is not None:
                g.text = final_text(tokenizer, g.tokens, cfg.stop)
            out.append(g)
    return out
