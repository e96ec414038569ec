"""OpenAI's response objects: whole completions, stream chunks, logprobs, usage and errors."""

from __future__ import annotations

import json
import time

from fastapi.responses import JSONResponse

from ..decoding import json_safe

class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


def error_response(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}}, status,
                        headers=headers)


FINISH = {"eos": "stop", "stop": "stop", "length": "length", "time": "length"}  # proselab -> OpenAI


def sse_data(obj: dict) -> str:
    return f"data: {json.dumps(json_safe(obj), ensure_ascii=False, allow_nan=False)}\n\n"


def usage_of(usage: dict, completion: int) -> dict:
    return {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": completion,
            "total_tokens": usage["prompt_tokens"] + completion}


class Shape:
    """OpenAI's response and chunk objects for one request."""

    def __init__(self, rid: str, model: str, chat: bool, tokenizer, n: int, top: int):
        self.rid, self.model, self.chat, self.tok, self.n, self.top = rid, model, chat, tokenizer, n, top
        self.created = int(time.time())
        self.offsets: dict[int, int] = {}  # completions logprobs: text offset per choice

    def head(self) -> dict:
        kind = ("chat.completion.chunk" if self.chat else "text_completion")
        return {"id": self.rid, "object": kind, "created": self.created, "model": self.model}

    def chunk(self, index: int, delta: dict | str, finish: str | None, logprobs=None) -> dict:
        if self.chat:
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        else:
            choice = {"index": index, "text": delta, "logprobs": logprobs, "finish_reason": finish}
        return {**self.head(), "choices": [choice]}

    def delta_chunk(self, index: int, d, top) -> dict:
        tops = [top.get(d.index)] if top is not None and len(d.tokens) == 1 else None
        lp = self._logprobs(index, d.tokens, d.logprobs, tops) if d.logprobs else None
        finish = FINISH.get(d.finish_reason) if d.finish_reason else None
        if self.chat:
            return self.chunk(index, {"content": d.text} if d.text or not finish else {}, finish, lp)
        return self.chunk(index, d.text, finish, lp)

    def _token(self, t: int) -> str:
        return self.tok.decode([t])

    def _logprobs(self, index: int, tokens: list[int], lps: list[float] | None, tops: list | None):
        """OpenAI's logprobs object for ``tokens``; ``tops`` holds each token's top (id, logprob)s."""
        if lps is None:
            return None
        if tops is None or len(tops) != len(tokens):
            tops = [None] * len(tokens)
        if self.chat:
            return {"content": [{"token": self._token(t), "logprob": lp, "bytes": list(self._token(t).encode()),
                                 "top_logprobs": [{"token": self._token(a), "logprob": b,
                                                   "bytes": list(self._token(a).encode())} for a, b in (tp or [])]}
                                for t, lp, tp in zip(tokens, lps, tops)]}
        start = self.offsets.get(index, 0)
        offsets = []
        for t in tokens:
            offsets.append(start)
            start += len(self._token(t))
        self.offsets[index] = start
        return {"tokens": [self._token(t) for t in tokens], "token_logprobs": lps,
                "top_logprobs": [({self._token(a): b for a, b in tp} if tp is not None else None) for tp in tops]
                if self.top else None, "text_offset": offsets}

    def final(self, results: dict[int, list], tops: dict[int, list], usage: dict) -> dict:
        choices, completion = [], 0
        for i in sorted(results):
            for j, g in enumerate(results[i]):
                index = i * self.n + j
                completion += len(g.tokens)
                lp = None
                if g.token_logprobs is not None:
                    lp = self._logprobs(index, g.tokens, g.token_logprobs, tops.get(index))
                finish = FINISH.get(g.finish_reason, "length")
                if self.chat:
                    choices.append({"index": index, "message": {"role": "assistant", "content": g.text},
                                    "logprobs": lp, "finish_reason": finish})
                else:
                    choices.append({"index": index, "text": g.text, "logprobs": lp, "finish_reason": finish})
        kind = "chat.completion" if self.chat else "text_completion"
        return json_safe({"id": self.rid, "object": kind, "created": self.created, "model": self.model,
                          "choices": choices, "usage": usage_of(usage, completion)})
