"""When a sequence ends: eos, max_new_tokens, stop strings (on decoded text) and max_time.

``Rows`` keeps, for every sequence being generated, its tokens, its text so far (through a
TextTracker, so stop strings that span tokens are found and never returned) and why it
ended. The sampling loop hands it each step's tokens and gets back which rows just finished
and the text deltas to stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .text import TextTracker

FINISH_REASONS = ("eos", "stop", "length", "time")


@dataclass
class Delta:
    """New output of one sequence: what ``stream`` yields."""

    index: int  # the sequence: prompt i, return sequence j -> i * num_return_sequences + j
    text: str  # new text, safe to show (whole characters, never part of a stop string); "" without a tokenizer
    tokens: list[int]  # new token ids
    finish_reason: str | None = None  # set on the sequence's last delta: eos, stop, length or time
    logprobs: list[float] | None = None  # with output_scores: the new tokens' log-probabilities


@dataclass
class Generation:
    """One finished sequence: what ``generate`` returns."""

    text: str  # the new text (prompt excluded, cut before a stop string); "" without a tokenizer
    tokens: list[int]  # the new token ids (eos excluded; with a stop string, up to the token completing it)
    finish_reason: str  # eos, stop, length or time
    prompt_index: int  # which prompt of the batch it continues
    score: float | None = None  # beam search: length-normalised log-prob; else the sum of token_logprobs
    token_logprobs: list[float] | None = field(default=None, repr=False)  # output_scores (sampling/greedy)


def eos_ids_for(eos_token_id: int | list[int] | None, tokenizer) -> list[int]:
    """The end-of-sequence ids: the config's, else the tokenizer's (none for a char model)."""
    if eos_token_id is not None:
        return list(eos_token_id) if isinstance(eos_token_id, list) else [eos_token_id]
    eos = getattr(tokenizer, "eos_id", None)
    return [eos] if eos is not None else []


class Deadline:
    """``max_time`` seconds from now (0 = never)."""

    def __init__(self, max_time: float):
        self.end = time.monotonic() + max_time if max_time else None

    def passed(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end


class Rows:
    """Per-sequence bookkeeping for the sampling loop."""

    def __init__(self, n: int, prompt_index: Sequence[int], max_new_tokens: int, eos_ids: Sequence[int],
                 tokenizer=None, stop: Sequence[str] = (), output_scores: bool = False):
        self.max_new_tokens, self.eos = max_new_tokens, set(eos_ids)
        self.prompt_index = list(prompt_index)
        self.trackers = [TextTracker(tokenizer, stop) for _ in range(n)] if tokenizer is not None else None
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self.logprobs: list[list[float]] | None = [[] for _ in range(n)] if output_scores else None
        self.reasons: list[str | None] = [None] * n

    def update(self, rows: torch.Tensor, tokens: torch.Tensor, logprobs: torch.Tensor | None, step: int,
               out_of_time: bool) -> tuple[list[bool], list[Delta]]:
        """Record one step for the live ``rows`` (A,); return which of them finished, and the deltas."""
        done, deltas = [], []
        last = step + 1 == self.max_new_tokens
        lps = logprobs.tolist() if logprobs is not None else None
        for j, (r, tok) in enumerate(zip(rows.tolist(), tokens.tolist())):
            if self.reasons[r] is not None:  # finished earlier, still in the batch until it is compacted
                done.append(True)
                continue
            text, new, reason = "", [], None
            if tok in self.eos:
                reason = "eos"
            else:
                new = [tok]
                self.tokens[r].append(tok)
                if self.logprobs is not None:
                    self.logprobs[r].append(lps[j])
                if self.trackers is not None:
                    text = self.trackers[r].push(tok)
                    if self.trackers[r].stopped:
                        reason = "stop"
                if reason is None and (last or out_of_time):
                    reason = "length" if last else "time"
            if reason is not None and reason != "stop" and self.trackers is not None:
                text += self.trackers[r].finish()
            self.reasons[r] = reason
            done.append(reason is not None)
            if text or new or reason:
                deltas.append(Delta(r, text, new, reason, [lps[j]] if lps is not None and new else None))
        return done, deltas

    @property
    def finished(self) -> bool:
        return all(reason is not None for reason in self.reasons)

    def results(self) -> list[Generation]:
        out = []
        for r, toks in enumerate(self.tokens):
            lps = self.logprobs[r] if self.logprobs is not None else None
            text = self.trackers[r].text if self.trackers is not None else ""
            out.append(Generation(text, toks, self.reasons[r] or "length", self.prompt_index[r],
                                  sum(lps) if lps is not None else None, lps))
        return out
