"""Request bodies of the OpenAI-compatible API, validated by pydantic (types and ranges).

Field names and ranges follow OpenAI's API reference, so its clients (the ``openai`` package,
LangChain, curl scripts) work unchanged. OpenAI fields proselab cannot honour are accepted
only at their neutral value (e.g. ``presence_penalty: 0``, ``logit_bias: {}``), so a client
that sends its defaults works and one that relies on them gets a clear 400. proselab's own
sampling settings (``top_k``, ``repetition_penalty``, ``num_beams``, ...) are accepted too,
with their ``proselab generate`` meanings. Unknown fields are rejected (422), so a typo is
not silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt
from pydantic_core import PydanticCustomError

UNICODE_ERROR = "not_unicode"  # the error type app.py answers with 400, as OpenAI answers bad text


def _encodable(text: str) -> str:
    """JSON may carry a lone UTF-16 surrogate ("\\ud800"), which is no Unicode text: no tokenizer
    can read it, so it is refused here rather than failing deep inside one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PydanticCustomError(UNICODE_ERROR, "text is not valid Unicode: a lone surrogate "
                                  "{char} at position {pos}", {"char": repr(text[e.start]), "pos": e.start}) from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]
Stop = Union[Text, Annotated[list[Annotated[Text, Field(min_length=1)]], Field(max_length=16)], None]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class Sampling(BaseModel):
    """Settings shared by completions and chat completions."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="the served model's id (GET /v1/models); optional")
    max_tokens: StrictInt | None = Field(None, ge=0, description="new tokens at most (default: the run's)")
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy decoding")
    top_p: float | None = Field(None, gt=0, le=1)
    n: StrictInt = Field(1, ge=1, le=64, description="sequences per prompt")
    stop: Stop = Field(None, description="up to 16 strings that end a sequence; not returned")
    seed: StrictInt | None = Field(None, description="fixes the samples of each prompt")
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # OpenAI settings accepted only at their neutral values
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    # proselab's own settings (proselab generate --help)
    top_k: StrictInt | None = Field(None, ge=0, description="keep the k most likely tokens (0 = off)")
    min_p: float | None = Field(None, ge=0, le=1)
    typical_p: float | None = Field(None, gt=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=10, description="> 1 discourages repeats")
    no_repeat_ngram_size: StrictInt | None = Field(None, ge=0, le=64)
    min_tokens: StrictInt | None = Field(None, ge=0, description="eos cannot end a sequence before this many")
    num_beams: StrictInt | None = Field(None, ge=1, le=16, description="beam search (streams whole sequences)")
    length_penalty: float | None = Field(None, ge=-10, le=10)


class CompletionRequest(Sampling):
    prompt: Union[Text, list[Text], list[StrictInt], list[list[StrictInt]]] = Field(
        ..., description="a prompt, a list of prompts, or token ids")
    logprobs: StrictInt | None = Field(None, ge=0, le=5, description="top log-probabilities per token")
    echo: StrictBool = False
    suffix: Text | None = None
    best_of: StrictInt | None = Field(None, ge=1)


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # name, tool_call_id, ... are not used
    role: Literal["system", "user", "assistant", "developer"]
    content: Union[Text, list[dict[str, Any]]]


class ChatRequest(Sampling):
    messages: list[Message] = Field(..., min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=0)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None


class AttentionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: Text = Field(..., min_length=1)
    max_tokens: StrictInt | None = Field(None, ge=1)


class ClassifyRequest(BaseModel):
    """POST /v1/classify: texts to label, with a classifier run or zero-shot with a language model."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    input: Union[Text, list[Text]] = Field(...)  # one text or several, as OpenAI's embeddings take them
    classes: list[Text] | None = None  # zero-shot with a language model run: the class names
    template: Text | None = None  # zero-shot: the prompt, with one {text}
    verbalizers: list[Text] | None = None  # zero-shot: what follows the prompt for each class
    calibrate: StrictBool = True  # zero-shot: subtract each class's score after a content-free text
