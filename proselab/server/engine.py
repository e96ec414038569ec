"""The serving engine: continuous batching over the Decoder protocol.

One thread owns the model. Requests (``Job``) wait in a bounded queue. At every decoding step
the engine picks each running job's next tokens with that job's own settings (logits
processors, temperature / top-k / top-p, seed), hands the new text to the job's consumer,
and feeds the tokens to the one shared ``step``; jobs that came meanwhile are prefilled and
join the batch. Jobs thus join and leave at step granularity, as in vLLM and
text-generation-inference, and each decodes the tokens ``proselab generate`` gives it alone:
the same processors, per-sequence random streams and stopping rules, set up by the same
``decoding.processors_for`` and ``decoding.rows_for``.

New jobs are prefilled in the same forward pass as the running batch's step when the model
has ``step_start`` (the GPT): a small batch's step is bound by reading the weights, so the
prompts' tokens ride along for little more than their arithmetic.

Joining and leaving avoid copying the batch's state. A finished job's rows stay in the batch
(fed a harmless token) and the next job to come takes them over (``insert``: a GPT writes
the new prompt's keys and values into those rows only). Only when free rows are half the
batch, or no job has taken them for ``STALE`` steps, is the batch compacted (``reorder``);
only when a job needs more rows than are free is the state rebuilt (``merge``).

Every family has ``merge``; a model without it would be served in static batches: waiting
jobs start together when the running batch is empty. A family without ``insert`` takes new
rows by merge and reorder. Beam search (num_beams > 1) keeps its beams to the end anyway, so
a beam job runs whole, between two steps.

With a draft model (``proselab serve --draft``), a request that finds the engine idle and no
other request waiting is decoded speculatively (``decoding.speculative``), streamed round by
round; requests that come meanwhile wait for it, as they wait for llama.cpp's server with one
slot. Speculative decoding helps one sequence at a time, the laptop's case; under load the
batch serves everyone at once as before.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future
from typing import Callable

import torch

from ..decoding import generate as generate_ids
from ..decoding.processors import apply_processors
from ..decoding.search import draw
from ..decoding.speculative import speculative_loop
from ..decoding.stopping import Delta, Generation, eos_ids_for
from ..models.prepack import overhead_bound, prepack_for_cpu
from ..models.protocol import insert_by_merge
from .jobs import Batch, Event, Job, QueueFull, model_inputs, rows_index

__all__ = ["Engine", "Event", "Job", "QueueFull"]

log = logging.getLogger("proselab.server")

STALE = 8  # steps a finished job's rows wait for a new job to take them before the batch is compacted


class Engine:
    """Runs jobs on one model in a background thread (see the module docstring).

    Args:
        generator: a loaded run (``proselab.load``).
        max_batch: most sequences decoded together.
        max_queue: most jobs waiting; ``submit`` raises QueueFull beyond it.
        threads: CPU threads for the model's operations (set on the engine thread). Fewer
            threads leave cores to the HTTP side and to other programs. 0 (auto): one for a
            model whose steps are bound by per-operation overhead (``prepack.overhead_bound``),
            else PyTorch's default, every core.
        wake: called on the engine thread once a step's events have all been emitted (and
            after any other emit), so a consumer can hand them on in one go: the server
            wakes its event loop once per step, not once per request and step.
    """

    def __init__(self, generator, max_batch: int = 16, max_queue: int = 64, threads: int = 0,
                 wake: Callable[[], None] | None = None):
        self.gen, self.model = generator, generator.model
        self.max_batch, self.max_queue, self.threads = max_batch, max_queue, threads
        self._wake = wake or (lambda: None)
        self.can_merge = callable(getattr(self.model, "merge", None))
        self.can_step_start = callable(getattr(self.model, "step_start", None))
        eos = eos_ids_for(None, generator.tokenizer)
        self.fill = eos[0] if eos else 0  # fed to finished rows until they leave
        self.device = generator.device
        self._waiting: deque[Job] = deque()
        self._calls: deque[tuple[Callable[[], object], Future]] = deque()  # other uses of the model
        self._cond = threading.Condition()
        self._closed = False
        self.steps = 0  # shared decoding steps taken (for tests and the health route)
        self.draft = None if getattr(generator, "draft", None) is None else generator.draft.model
        self.num_draft_tokens = getattr(generator, "num_draft_tokens", 5)
        self.drafted = 0  # requests decoded speculatively (for tests)
        self.running_rows = 0
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
        threads = self.threads or (1 if self.device.type == "cpu" and overhead_bound(self.model) else 0)
        if threads:  # on this thread: OpenMP's thread count is per calling thread
            torch.set_num_threads(threads)
        log.info("decoding on %d CPU thread(s)%s", torch.get_num_threads(),
                 "" if self.threads or threads != 1 else " (a small model; --threads sets it)")
        prepack_for_cpu(self.model)  # here, not on the caller's thread: see server._on_a_passing_thread
        if self.draft is not None:
            prepack_for_cpu(self.draft)
        batch = Batch()
        while True:
            with self._cond:
                while not batch.jobs and not self._waiting and not self._calls and not self._closed:
                    self._cond.wait()
                if self._closed:
                    for job in [*batch.jobs, *self._waiting]:
                        job.emit(Event(error=RuntimeError("the server is shutting down")))
                    self._wake()
                    for _, future in self._calls:
                        future.set_exception(RuntimeError("the server is shutting down"))
                    return
                new = self._take(batch.live_rows)
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
                    if len(new) == 1 and not batch.jobs and self._run_drafted(new[0]):
                        continue
                    if new and not batch.jobs:  # nothing running: the new jobs start the batch
                        self._join(batch, new, *self._admit(new))
                        new = []
                    if not batch.jobs:
                        continue
                    tokens = self._decide(batch)
                    self._wake()  # hand this step's output on before the next forward pass
                    if not batch.jobs:  # every job finished
                        batch.clear()
                        self.running_rows = 0
                        if new:
                            self._join(batch, new, *self._admit(new))
                        continue
                    free = batch.free_rows()
                    stale = free and self.steps - min(batch.freed[r] for r in free) >= STALE
                    if free and (2 * len(free) >= batch.size or stale):
                        tokens = tokens[self._compact(batch)]
                    self._step(batch, tokens.to(self.device), new)
                    self.steps += 1
                    self.running_rows = batch.live_rows
            except Exception as e:  # never wedge: fail the jobs in flight, keep serving
                log.exception("decoding failed; the requests in flight get an error")
                for job in dict.fromkeys([*batch.jobs, *new]):
                    job.emit(Event(error=e))
                batch.clear()
                self.running_rows = 0
            finally:
                self._wake()

    def _step(self, batch: Batch, tokens: torch.Tensor, new: list[Job]) -> None:
        """Feed ``tokens`` to the batch, and prefill the ``new`` jobs: in the same pass when the
        model has ``step_start`` (the weights are read once for both), else after the step."""
        if new and self.can_step_start:
            self._setup(new)
            batch.logits, batch.state, first, joined = self.model.step_start(
                tokens, batch.state, self._inputs(new, max(job.cfg.max_new_tokens for job in new)))
            self._join(batch, new, first, joined)
            return
        batch.logits, batch.state = self.model.step(tokens, batch.state)
        if new:
            self._join(batch, new, *self._admit(new))

    def _join(self, batch: Batch, new: list[Job], first: torch.Tensor, joined) -> None:
        """Put the rows of ``new`` (prefilled: ``first`` logits, state ``joined``) in the batch:
        in the rows of finished jobs when there are enough of them (``insert``, no copy of the
        others' state), else after the running rows (``merge``)."""
        need = sum(job.n for job in new)
        free = batch.free_rows()
        if batch.state is None:
            batch.state, batch.logits, targets = joined, first, list(range(need))
            batch.owner = [None] * need
        elif need <= len(free):
            targets = free[:need]
            rows = torch.tensor(targets, device=self.device)
            batch.state = self._insert(batch.state, rows, joined, batch.size)
            batch.logits[rows] = first.to(batch.logits.dtype)
        else:
            if free:
                self._compact(batch)
            B = batch.size
            batch.state = self.model.merge([batch.state, joined])
            batch.logits = torch.cat([batch.logits, first.to(batch.logits.dtype)])
            targets = list(range(B, B + need))
            batch.owner += [None] * need
        k = 0
        for job in new:
            job.slots = targets[k : k + job.n]
            k += job.n
            for r in job.slots:
                batch.owner[r] = job
                batch.freed.pop(r, None)
        batch.jobs += new
        self.running_rows = batch.live_rows

    def _insert(self, state, rows: torch.Tensor, new, B: int):
        """``new``'s rows in place of ``rows`` of ``state`` (B rows): the model's ``insert``,
        else a merge and a reorder that puts each new row where the old one was."""
        if callable(getattr(self.model, "insert", None)):
            return self.model.insert(state, rows, new)
        return insert_by_merge(self.model, state, rows, new, B)

    def _compact(self, batch: Batch) -> torch.Tensor:
        """Drop the rows of finished jobs from the batch (``reorder``); returns the rows kept."""
        keep = [r for r, job in enumerate(batch.owner) if job is not None]
        where = {r: i for i, r in enumerate(keep)}
        for job in batch.jobs:
            job.slots = [where[r] for r in job.slots]
        index = torch.tensor(keep)
        batch.state = self.model.reorder(batch.state, index.to(self.device))
        batch.logits = batch.logits[index.to(batch.logits.device)]
        batch.owner = [batch.owner[r] for r in keep]
        batch.freed = {}
        return index

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

    def _run_drafted(self, job: Job) -> bool:
        """Decode ``job`` speculatively, here, when there is a draft and no one else waits (see the
        module docstring); True when it was. Its text is handed on after every round."""
        cfg = job.cfg
        if self.draft is None or job.n != 1 or cfg.num_beams != 1 or job.top_logprobs or self._waiting:
            return False
        job.prepare(self.gen, self.fill)  # the processors, random stream and rows a batched job gets
        prompt = self._inputs([job], cfg.max_new_tokens) if self.gen.is_seq2seq else job.ids
        deltas = speculative_loop(self.model, self.draft, prompt, cfg, job.procs, job.rows,
                                  job.gens[0] if job.gens else None, self.num_draft_tokens)
        self.drafted += 1
        for delta in deltas:
            if job.cancelled:  # the client went away: drop it, as the batch does
                deltas.close()
                return True
            job.emit(Event(deltas=[delta]))
            self._wake()
        job.emit(Event(results=job.rows.results()))
        return True

    def _inputs(self, jobs: list[Job], max_new_tokens: int):
        return model_inputs(jobs, self.gen.is_seq2seq, self.device, max_new_tokens)

    def _admit(self, jobs: list[Job]):
        """Prefill the new jobs together (``start``) and set them up; returns the logits and state."""
        self._setup(jobs)
        return self.model.start(self._inputs(jobs, max(job.cfg.max_new_tokens for job in jobs)))

    def _setup(self, jobs: list[Job]) -> None:
        for job in jobs:
            job.prepare(self.gen, self.fill)

    def _decide(self, batch: Batch) -> torch.Tensor:
        """Every job's next tokens from its rows of the logits; emits their output and takes
        finished and failed jobs out of ``batch.jobs`` (their rows become free). Returns the
        tokens to feed (B,): the free rows get ``fill``.

        Each job's processors run on its own rows; the choice is then made for all rows at
        once (one softmax and one draw, each row with its own random stream), so a step's
        cost grows little with the number of jobs.
        """
        logits = batch.logits.float()
        tokens = [self.fill] * batch.size
        active, parts = [], []
        for job in batch.jobs:
            if job.cancelled:
                continue
            try:
                parts.append(apply_processors(job.procs, job.hist[:, : job.T + job.t].to(logits.device),
                                              logits[rows_index(job.slots)]))
                active.append(job)
            except Exception as e:  # one job's failure (a bad setting) is its own
                log.exception("a request failed while decoding")
                job.emit(Event(error=e))
                job.cancel()
        if active:
            scores = torch.cat(parts)  # (R, V) the active jobs' rows, in order
            nxt = torch.empty(scores.size(0), dtype=torch.long, device=scores.device)
            spans, k = [], 0
            for job in active:
                spans.append((k, k + job.n))
                k += job.n
            for sampling, pick in ((True, self._sample), (False, self._greedy)):
                chosen = [(job, a, b) for job, (a, b) in zip(active, spans) if job.cfg.do_sample == sampling]
                if not chosen:
                    continue
                if len(chosen) == len(active):  # all rows: no gather
                    nxt = pick(scores, chosen)
                    break
                idx = torch.cat([torch.arange(a, b) for _, a, b in chosen]).to(scores.device)
                nxt[idx] = pick(scores[idx], chosen)
            nxt = nxt.cpu()
            for job, (a, b) in zip(active, spans):
                done = self._record(job, scores[a:b], nxt[a:b])
                for r, tok, d in zip(job.slots, nxt[a:b].tolist(), done):
                    tokens[r] = self.fill if d else tok
        for job in [job for job in batch.jobs if job.cancelled or job.rows.finished]:
            batch.leave(job, self.steps)
        return torch.tensor(tokens)

    @staticmethod
    def _sample(scores: torch.Tensor, chosen: list) -> torch.Tensor:
        return draw(torch.softmax(scores, dim=-1), [g for job, _, _ in chosen for g in job.gens])

    @staticmethod
    def _greedy(scores: torch.Tensor, chosen: list) -> torch.Tensor:
        return scores.argmax(dim=-1)

    def _record(self, job: Job, scores: torch.Tensor, nxt: torch.Tensor) -> list[bool]:
        """Hand one step's tokens (n,) to the job's rows; emit what is new. Returns which rows are done."""
        rows = job.rows
        logp = torch.log_softmax(scores, dim=-1) if rows.logprobs is not None else None
        lps = logp.gather(1, nxt[:, None].to(logp.device)).squeeze(1) if logp is not None else None
        done, deltas = rows.update(torch.arange(job.n), nxt, lps, job.t, job.deadline.passed())
        top = None
        if job.top_logprobs and deltas:
            values, ids = logp.topk(min(job.top_logprobs, logp.size(-1)), dim=-1)
            top = {d.index: list(zip(ids[d.index].tolist(), values[d.index].tolist())) for d in deltas if d.tokens}
        job.hist[:, job.T + job.t] = nxt
        job.t += 1
        finished = all(done)
        if deltas or finished:
            job.emit(Event(deltas=deltas, top=top, results=rows.results() if finished else None))
        return done

