"""What the serving engine keeps per request (``Job``, set up for decoding by ``prepare``, its
model input by ``model_inputs``), what it sends back (``Event``), and its running batch
(``Batch``: which job owns each row of the model's state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..config import GenerationConfig
from ..config.checks import effective_generation
from ..data.batch import Seq2SeqBatch
from ..decoding import pad_prompts, processors_for, rows_for
from ..decoding.stopping import Deadline, Delta, Generation, Rows


class QueueFull(Exception):
    """The engine's waiting queue is full: the client should retry later (HTTP 429)."""


@dataclass
class Event:
    """What a job's consumer receives, on the engine thread: new output, then a last event."""

    deltas: list[Delta] = field(default_factory=list)  # new text per sequence (index = sequence number)
    top: dict[int, list[tuple[int, float]]] | None = None  # sequence -> its new token's top (id, logprob)s
    results: list[Generation] | None = None  # set on the last event: every sequence, finished
    error: BaseException | None = None  # set on the last event when the job failed


class Job:
    """One request: ``cfg.num_return_sequences`` sequences from one prompt.

    Args:
        ids: the prompt's token ids (a language model) or the source's, eos included (seq2seq).
        cfg: validated generation settings.
        emit: called on the engine thread with each Event; it must not block.
        top_logprobs: how many most likely tokens to report per new token (0 = none).
    """

    def __init__(self, ids: list[int], cfg: GenerationConfig, emit: Callable[[Event], None], top_logprobs: int = 0):
        self.ids, self.emit, self.top_logprobs = list(ids), emit, top_logprobs
        self.cfg = effective_generation(cfg)  # as decoding.generate reads it: temperature 0 = greedy
        self.n = cfg.num_return_sequences if cfg.num_beams == 1 else 1  # rows in the batch
        self.cancelled = False  # set by the consumer (a client went away); the engine drops the job
        self.slots: list[int] = []  # the job's rows in the running batch
        # set when the job is admitted
        self.rows: Rows | None = None
        self.hist: torch.Tensor | None = None  # (n, T + max_new_tokens) prompt and new tokens, for processors
        self.T = 0  # prompt tokens the processors see (none for a seq2seq source)
        self.t = 0  # tokens generated per row so far
        self.procs: list = []
        self.gens: list[torch.Generator] | None = None
        self.deadline: Deadline | None = None

    def cancel(self) -> None:
        self.cancelled = True

    def prepare(self, generator, fill: int) -> None:
        """Set the job up for decoding with ``generator`` (a loaded run), as ``proselab generate``
        would: its processors, random streams, stopping rules and history (``fill`` after the
        prompt)."""
        cfg = self.cfg
        prompt = torch.tensor([[] if generator.is_seq2seq else self.ids], dtype=torch.long).view(1, -1)
        self.hist = torch.cat([prompt, torch.full((1, cfg.max_new_tokens), fill)], dim=1).repeat(self.n, 1)
        self.T = prompt.size(1)
        eos_ids, self.procs = processors_for(cfg, generator.tokenizer, generator.suppress_ids, self.T)
        self.gens, self.rows = rows_for(cfg, [self.ids], eos_ids, generator.tokenizer,
                                        logprobs=cfg.output_scores or self.top_logprobs > 0)
        self.deadline = Deadline(cfg.max_time)


def model_inputs(jobs: list[Job], seq2seq: bool, device: torch.device, max_new_tokens: int):
    """The model input for ``jobs``, each prompt repeated for its rows: a source batch (seq2seq)
    or left-padded prompts."""
    lists = [job.ids for job in jobs for _ in range(job.n)]
    if seq2seq:
        S = max(map(len, lists))
        src = torch.zeros(len(lists), S, dtype=torch.long)
        mask = torch.zeros(len(lists), S, dtype=torch.bool)
        for i, ids in enumerate(lists):
            src[i, : len(ids)], mask[i, : len(ids)] = torch.tensor(ids), True
        return Seq2SeqBatch(src, mask, None, max_new_tokens).to(device)
    return pad_prompts(lists, device, max_new_tokens)[0]


class Batch:
    """The running batch: the model's state and last logits, and which job owns each row."""

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.state = self.logits = None
        self.jobs: list[Job] = []  # running jobs, in the order they joined
        self.owner: list[Job | None] = []  # per row; None = free (its job finished)
        self.freed: dict[int, int] = {}  # free row -> the step it was freed at

    @property
    def size(self) -> int:
        return len(self.owner)

    @property
    def live_rows(self) -> int:
        return sum(job.n for job in self.jobs)

    def free_rows(self) -> list[int]:
        return [r for r, job in enumerate(self.owner) if job is None]

    def leave(self, job: Job, step: int) -> None:
        self.jobs.remove(job)
        for r in job.slots:
            self.owner[r] = None
            self.freed[r] = step


def rows_index(slots: list[int]) -> slice | list[int]:
    """Index for a job's rows: a slice when they are contiguous (a view, no list conversion)."""
    if slots[-1] - slots[0] == len(slots) - 1:
        return slice(slots[0], slots[-1] + 1)
    return slots
