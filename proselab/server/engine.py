"""The serving engine: continuous batching over the Decoder protocol.

One thread owns the model. Requests (``Job``) wait in a bounded queue. Before every decoding
step the engine admits waiting jobs into the running batch (one prefill for all of them, then
``model.merge``), picks each job's next tokens with that job's own settings (logits
processors, temperature / top-k / top-p, seed), hands the new text to the job's consumer, and
drops finished or cancelled jobs (``model.reorder``) before the one shared ``step``. Jobs thus
join and leave at step granularity, as in vLLM and text-generation-inference, and each
decodes the tokens ``proselab generate`` gives it alone: the same processors, the same
per-sequence random streams (``row_generator``), the same stopping rules (``Rows``).

Every family has ``merge``; a model without it would be served in static batches: waiting
jobs start together when the running batch is empty. Beam search (num_beams > 1) keeps its
beams to the end anyway, so a beam job runs whole, between two steps.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..config import GenerationConfig
from ..decoding import generate as generate_ids
from ..decoding import pad_prompts
from ..decoding.processors import apply_processors, build_processors
from ..decoding.search import draw, row_generator
from ..decoding.stopping import Deadline, Delta, Generation, Rows, eos_ids_for
from ..models.prepack import prepack_for_cpu
from ..models.protocol import Seq2SeqBatch

log = logging.getLogger("proselab.server")


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
        self.ids, self.cfg, self.emit, self.top_logprobs = list(ids), cfg, emit, top_logprobs
        self.n = cfg.num_return_sequences if cfg.num_beams == 1 else 1  # rows in the batch
        self.cancelled = False  # set by the consumer (a client went away); the engine drops the job
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


class Engine:
    """Runs jobs on one model in a background thread (see the module docstring).

    Args:
        generator: a loaded run (``proselab.load``).
        max_batch: most sequences decoded together.
        max_queue: most jobs waiting; ``submit`` raises QueueFull beyond it.
    """

    def __init__(self, generator, max_batch: int = 16, max_queue: int = 64):
        self.gen, self.model = generator, generator.model
        self.max_batch, self.max_queue = max_batch, max_queue
        self.can_merge = callable(getattr(self.model, "merge", None))
        eos = eos_ids_for(None, generator.tokenizer)
        self.fill = eos[0] if eos else 0  # fed to finished rows until they leave
        self.device = generator.device
        self._waiting: deque[Job] = deque()
        self._calls: deque[tuple[Callable[[], object], Future]] = deque()  # other uses of the model
        self._cond = threading.Condition()
        self._closed = False
        self.steps = 0  # shared decoding steps taken (for tests and the health route)
        self.running_rows = 0
        prepack_for_cpu(self.model)
        self._thread = threading.Thread(target=self._run, name="proselab-engine", daemon=True)
        self._thread.start()

    # ---- the consumer side ---------------------------------------------------------------
    def submit(self, job: Job) -> None:
        if job.n > self.max_batch:
            raise ValueError(f"n={job.n} sequences exceed this server's batch of {self.max_batch} (--max-batch)")
        with self._cond:
            if self._closed:
                raise RuntimeError("the engine is shut down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"the server is busy: {len(self._waiting)} requests are already waiting; retry later")
            self._waiting.append(job)
            self._cond.notify()

    def call(self, fn: Callable[[], object]) -> Future:
        """Run ``fn`` on the engine thread between two steps (the model is used by one thread
        only); the Future holds its result or exception."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the engine is shut down")
            self._calls.append((fn, future))
            self._cond.notify()
        return future

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    # ---- the engine thread ---------------------------------------------------------------
    def _run(self) -> None:
        running: list[Job] = []
        state = logits = None
        while True:
            with self._cond:
                while not running and not self._waiting and not self._calls and not self._closed:
                    self._cond.wait()
                if self._closed:
                    for job in [*running, *self._waiting]:
                        job.emit(Event(error=RuntimeError("the server is shutting down")))
                    for _, future in self._calls:
                        future.set_exception(RuntimeError("the server is shutting down"))
                    return
                new = self._take(sum(j.n for j in running))
                calls = list(self._calls)
                self._calls.clear()
            for fn, future in calls:
                try:
                    future.set_result(fn())
                except Exception as e:
                    future.set_exception(e)
            try:
                with torch.no_grad():
                    new = [job for job in new if not self._run_whole(job)]
                    if new:
                        first, joined = self._admit(new)
                        logits = first if state is None else torch.cat([logits, first.to(logits.dtype)])
                        state = joined if state is None else self.model.merge([state, joined])
                        running += new
                        self.running_rows = sum(j.n for j in running)
                    if not running:
                        continue
                    tokens, keep = self._decide(running, logits)
                    if not all(keep):  # finished and cancelled jobs leave the batch
                        spans, offset = [], 0
                        for job, k in zip(running, keep):
                            if k:
                                spans.append(torch.arange(offset, offset + job.n))
                            offset += job.n
                        running = [job for job, k in zip(running, keep) if k]
                        if not running:
                            state = logits = None
                            self.running_rows = 0
                            continue
                        index = torch.cat(spans)
                        tokens, state = tokens[index], self.model.reorder(state, index.to(self.device))
                    logits, state = self.model.step(tokens.to(self.device), state)
                    self.steps += 1
                    self.running_rows = sum(j.n for j in running)
            except Exception as e:  # never wedge: fail the jobs in flight, keep serving
                log.exception("decoding failed; the requests in flight get an error")
                for job in dict.fromkeys([*running, *new]):
                    job.emit(Event(error=e))
                running, state, logits = [], None, None
                self.running_rows = 0

    def _take(self, rows: int) -> list[Job]:
        """Waiting jobs that fit in the batch now (called with the lock held)."""
        taken: list[Job] = []
        if rows and not self.can_merge:
            return taken
        while self._waiting:
            job = self._waiting[0]
            if job.cancelled:
                self._waiting.popleft()
                continue
            if rows + job.n > self.max_batch:
                break
            taken.append(self._waiting.popleft())
            rows += job.n
        return taken

    def _run_whole(self, job: Job) -> bool:
        """Beam search and max_new_tokens=0 run whole, here; True when the job was one of those."""
        cfg = job.cfg
        if cfg.num_beams == 1 and cfg.max_new_tokens > 0:
            return False
        if cfg.max_new_tokens == 0:
            results = [Generation("", [], "length", 0) for _ in range(cfg.num_return_sequences)]
        else:
            results = generate_ids(self.model, self._inputs([job], cfg.max_new_tokens), cfg,
                                   tokenizer=self.gen.tokenizer, suppress_ids=self.gen.suppress_ids)
        deltas = [Delta(i, g.text, g.tokens, g.finish_reason) for i, g in enumerate(results)]
        job.emit(Event(deltas=deltas, results=results))
        return True

    def _inputs(self, jobs: list[Job], max_new_tokens: int):
        """The model input for ``jobs``, each prompt repeated for its rows."""
        lists = [job.ids for job in jobs for _ in range(job.n)]
        if self.gen.is_seq2seq:
            S = max(map(len, lists))
            src = torch.zeros(len(lists), S, dtype=torch.long)
            mask = torch.zeros(len(lists), S, dtype=torch.bool)
            for i, ids in enumerate(lists):
                src[i, : len(ids)], mask[i, : len(ids)] = torch.tensor(ids), True
            return Seq2SeqBatch(src, mask, None, max_new_tokens).to(self.device)
        return pad_prompts(lists, self.device, max_new_tokens)[0]

    def _admit(self, jobs: list[Job]):
        """Prefill the new jobs together; set up each one's processors, streams and bookkeeping."""
        max_new = max(job.cfg.max_new_tokens for job in jobs)
        logits, state = self.model.start(self._inputs(jobs, max_new))
        for job in jobs:
            cfg, n = job.cfg, job.n
            prompt = torch.tensor([[] if self.gen.is_seq2seq else job.ids], dtype=torch.long).view(1, -1)
            job.hist = torch.cat([prompt, torch.full((1, cfg.max_new_tokens), self.fill)], dim=1).repeat(n, 1)
            job.T = prompt.size(1)
            eos_ids = eos_ids_for(cfg.eos_token_id, self.gen.tokenizer)
            job.procs = build_processors(cfg, self.gen.suppress_ids, prompt_length=job.T, eos_ids=eos_ids)
            job.gens = [row_generator(cfg.seed, job.ids, j) for j in range(n)] if cfg.do_sample else None
            wants_logprobs = cfg.output_scores or job.top_logprobs > 0
            job.rows = Rows(n, [0] * n, cfg.max_new_tokens, eos_ids, self.gen.tokenizer, cfg.stop, wants_logprobs)
            job.deadline = Deadline(cfg.max_time)
        return logits, state

    def _decide(self, running: list[Job], logits: torch.Tensor) -> tuple[torch.Tensor, list[bool]]:
        """Each job's next tokens from its rows of ``logits``; emits their output. Returns the
        tokens to feed (B,) and, per job, whether it stays in the batch."""
        tokens, keep, offset = [], [], 0
        for job in running:
            n = job.n
            part = logits[offset : offset + n].float()
            offset += n
            if job.cancelled:
                tokens.append(torch.full((n,), self.fill))
                keep.append(False)
                continue
            try:
                nxt, done = self._choose(job, part)
            except Exception as e:  # one job's failure (a bad setting) is its own
                log.exception("a request failed while decoding")
                job.emit(Event(error=e))
                tokens.append(torch.full((n,), self.fill))
                keep.append(False)
                continue
            tokens.append(nxt.masked_fill(torch.tensor(done), self.fill))
            keep.append(not all(done))
        return torch.cat(tokens), keep

    def _choose(self, job: Job, logits: torch.Tensor) -> tuple[torch.Tensor, list[bool]]:
        cfg, rows = job.cfg, job.rows
        scores = apply_processors(job.procs, job.hist[:, : job.T + job.t].to(logits.device), logits)  # (n, V)
        if cfg.do_sample:
            nxt = draw(torch.softmax(scores, dim=-1), job.gens)
        else:
            nxt = scores.argmax(dim=-1)
        logp = torch.log_softmax(scores, dim=-1) if rows.logprobs is not None else None
        lps = logp.gather(1, nxt[:, None]).squeeze(1) if logp is not None else None
        done, deltas = rows.update(torch.arange(job.n), nxt.cpu(), lps, job.t, job.deadline.passed())
        top = None
        if job.top_logprobs and deltas:
            values, ids = logp.topk(min(job.top_logprobs, logp.size(-1)), dim=-1)
            top = {d.index: list(zip(ids[d.index].tolist(), values[d.index].tolist())) for d in deltas if d.tokens}
        job.hist[:, job.T + job.t] = nxt.cpu()
        job.t += 1
        finished = all(done)
        if deltas or finished:
            job.emit(Event(deltas=deltas, top=top, results=rows.results() if finished else None))
        return nxt.cpu(), done
