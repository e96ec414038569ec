"""Running a request on the engine and answering it: a whole response, or a stream of
Server-Sent Events in OpenAI's chunk format."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from ..config import ConfigError
from ..decoding.stopping import Delta
from .engine import Engine, Event, Job, QueueFull
from .responses import APIError, Shape, sse_data, usage_of


async def respond(request: Request, engine: Engine, mailbox: Mailbox, generator, body, gcfg,
                  prompts: list[list[int]], top: int, chat: bool, model: str):
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    jobs = []
    for i, ids in enumerate(prompts):
        job = Job(ids, gcfg, _emitter(mailbox, loop, queue, i), top_logprobs=top)
        jobs.append(job)
    try:
        for job in jobs:
            engine.submit(job)
    except QueueFull as e:
        for job in jobs:
            job.cancel()
        raise APIError(429, str(e), "rate_limit_error", code="rate_limit_exceeded") from None
    except ValueError as e:
        for job in jobs:
            job.cancel()
        raise APIError(400, str(e), param="n") from None
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    shape = Shape(rid, model, chat, generator.tokenizer, gcfg.num_return_sequences, top)
    usage = {"prompt_tokens": sum(map(len, prompts))}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(sse(request, queue, jobs, shape, usage, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    results: dict[int, list] = {}
    tops: dict[int, list] = {}  # choice -> each token's top log-probabilities
    try:
        while len(results) < len(jobs):
            try:
                i, event = await asyncio.wait_for(queue.get(), timeout=0.5)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    raise asyncio.CancelledError from None
                continue
            if event.error is not None:
                raise engine_error(event.error)
            if event.top is not None:
                for d in event.deltas:
                    if d.tokens:
                        tops.setdefault(i * shape.n + d.index, []).append(event.top.get(d.index))
            if event.results is not None:
                results[i] = event.results
    finally:
        for job in jobs:
            job.cancel()  # a no-op for finished jobs; stops the rest when the client went away
    return shape.final(results, tops, usage)


class Mailbox:
    """Events from the engine thread to the event loop, handed over in one wakeup per step.

    Waking the loop (``call_soon_threadsafe``, a write to its self-pipe) for every event cost
    the engine thread a system call and, worse, the GIL: the woken loop thread took it while
    the engine waited to go on. ``post`` only files the event; ``wake``, which the engine calls
    once a step's events are all out, schedules one delivery per loop.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._items: dict[asyncio.AbstractEventLoop, list] = {}
        self._scheduled: set[asyncio.AbstractEventLoop] = set()

    def post(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, item) -> None:
        with self._lock:
            self._items.setdefault(loop, []).append((queue, item))

    def wake(self) -> None:
        with self._lock:
            loops = [loop for loop in self._items if loop not in self._scheduled]
            self._scheduled.update(loops)
        for loop in loops:
            try:
                loop.call_soon_threadsafe(self._deliver, loop)
            except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
                with self._lock:
                    self._items.pop(loop, None)
                    self._scheduled.discard(loop)

    def _deliver(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            items = self._items.pop(loop, [])
            self._scheduled.discard(loop)
        for queue, item in items:
            queue.put_nowait(item)


def _emitter(mailbox: Mailbox, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, i: int):
    def emit(event: Event) -> None:
        mailbox.post(loop, queue, (i, event))
    return emit


def _joined(a: Delta, b: Delta) -> Delta:
    """One delta for two consecutive ones of a sequence (``a`` not its last)."""
    lps = a.logprobs + b.logprobs if a.logprobs is not None and b.logprobs is not None else None
    return Delta(a.index, a.text + b.text, a.tokens + b.tokens, b.finish_reason, lps)


def engine_error(e: BaseException) -> APIError:
    if isinstance(e, (ConfigError, ValueError)):
        return APIError(400, str(e))
    return APIError(500, f"generation failed: {type(e).__name__}: {e}", "server_error")


async def sse(request: Request, queue: asyncio.Queue, jobs: list[Job], shape: Shape, usage: dict,
               include_usage: bool) -> AsyncIterator[str]:
    done, completion = 0, 0
    try:
        if shape.chat:
            for i in range(len(jobs) * shape.n):
                yield sse_data(shape.chunk(i, {"role": "assistant", "content": ""}, None))
        failed = None
        while done < len(jobs) and failed is None:
            events = [await queue.get()]
            while not queue.empty():  # the client is behind: what has piled up goes in fewer chunks
                events.append(queue.get_nowait())
            chunks: list[list] = []  # [choice, delta, top], in order
            for i, event in events:
                if event.error is not None:
                    failed = engine_error(event.error)
                    break
                for d in event.deltas:
                    choice = i * shape.n + d.index
                    last = next((c for c in reversed(chunks) if c[0] == choice), None)
                    if last is not None and event.top is None and last[2] is None and last[1].finish_reason is None:
                        last[1] = _joined(last[1], d)
                    else:
                        chunks.append([choice, d, event.top])
                if event.results is not None:
                    done += 1
            for choice, d, top in chunks:
                completion += len(d.tokens)
                yield sse_data(shape.delta_chunk(choice, d, top))
        if failed is not None:
            yield sse_data({"error": {"message": failed.message, "type": failed.type, "param": None,
                                      "code": failed.code}})
        if include_usage:
            yield sse_data({**shape.head(), "choices": [], "usage": usage_of(usage, completion)})
        yield "data: [DONE]\n\n"
    finally:
        for job in jobs:
            job.cancel()
