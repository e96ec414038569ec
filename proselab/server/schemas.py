"""Request bodies of the OpenAI-compatible API, validated by pydantic (types and ranges).

Field names and ranges follow OpenAI's API reference, so its clients (the ``openai`` package,
LangChain, curl scripts) work unchanged. OpenAI fields proselab cannot honour are accepted
only at their neutral value (e.g. ``echo: false``, ``tools: null``), so a client that sends
its defaults works and one that relies on them gets a clear 400. proselab's own
sampling settings (``top_k``, ``repetition_penalty``, ``num_beams``, ...) are accepted too,
with their ``proselab generate`` meanings. Unknown fields are rejected (422), so a typo is
not silently ignored.

Types are those of JSON Schema, as /openapi.json states them: an integer is any number without a
fraction (``2`` or ``2.0``), a number is never a boolean or a string (all 422 otherwise).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat, StrictInt
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


def _integral(value):
    """2.0 is an integer in JSON Schema (and in JavaScript, where ``2.0 === 2``): it is 2 here too."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def integer(**bounds) -> Any:
    """The type of an integer field with ``bounds`` (ge, le): 2 and 2.0, not 2.5, "2" or true.

    The bounds go inside, before the validator: given to the field's ``Field``, pydantic would
    write them into the JSON schema as ``ge``/``le``, which no JSON Schema tool reads."""
    return Annotated[StrictInt, Field(**bounds), BeforeValidator(_integral)]


Int = integer()
Float = StrictFloat  # 1 and 1.5; not "1.5" or true
Text = Annotated[str, AfterValidator(_encodable)]
Stop = Union[Text, Annotated[list[Annotated[Text, Field(min_length=1)]], Field(max_length=16)], None]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class Sampling(BaseModel):
    """Settings shared by completions and chat completions."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="the served model's id (GET /v1/models); optional")
    max_tokens: integer(ge=0) | None = Field(None, description="new tokens at most (default: the run's)")
    temperature: Float | None = Field(None, ge=0, le=2, description="0 = greedy decoding")
    top_p: Float | None = Field(None, gt=0, le=1)
    n: integer(ge=1, le=64) = Field(1, description="sequences per prompt")
    stop: Stop = Field(None, description="up to 16 strings that end a sequence; not returned")
    seed: Int | None = Field(None, description="fixes the samples of each prompt")
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    presence_penalty: Float = Field(0.0, ge=-2, le=2, description="subtracted from each generated token's logit")
    frequency_penalty: Float = Field(0.0, ge=-2, le=2, description="subtracted per time a token was generated")
    logit_bias: dict[str, Annotated[Float, Field(ge=-100, le=100)]] | None = Field(
        None, description="token id (as text) -> bias added to its logit; -100 bans it")
    # proselab's own settings (proselab generate --help)
    top_k: integer(ge=0) | None = Field(None, description="keep the k most likely tokens (0 = off)")
    min_p: Float | None = Field(None, ge=0, le=1)
    typical_p: Float | None = Field(None, gt=0, le=1)
    repetition_penalty: Float | None = Field(None, gt=0, le=10, description="> 1 discourages repeats")
    no_repeat_ngram_size: integer(ge=0, le=64) | None = None
    min_tokens: integer(ge=0) | None = Field(None, description="eos cannot end a sequence before this many")
    num_beams: integer(ge=1, le=16) | None = Field(None, description="beam search (streams whole sequences)")
    length_penalty: Float | None = Field(None, ge=-10, le=10)


def _examples(*bodies: dict) -> ConfigDict:
    """A request model's config with example bodies, shown by /docs and sent by schemathesis."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(bodies)})


class CompletionRequest(Sampling):
    model_config = _examples({"prompt": "ROMEO:", "max_tokens": 8, "temperature": 0.8},
                             {"prompt": ["ROMEO:", "JULIET:"], "max_tokens": 8, "stream": True, "logprobs": 2})
    prompt: Union[Text, list[Text], list[Int], list[list[Int]]] = Field(
        ..., description="a prompt, a list of prompts, or token ids")
    logprobs: integer(ge=0, le=5) | None = Field(None, description="top log-probabilities per token")
    echo: StrictBool = False
    suffix: Text | None = None
    best_of: integer(ge=1) | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # name, tool_call_id, ... are not used
    role: Literal["system", "user", "assistant", "developer"]
    content: Union[Text, list[dict[str, Any]]]


class ChatRequest(Sampling):
    model_config = _examples({"messages": [{"role": "user", "content": "Good morrow!"}], "max_tokens": 8},
                             {"messages": [{"role": "system", "content": "Answer in verse."},
                                           {"role": "user", "content": "Good morrow!"}],
                              "max_tokens": 8, "n": 2, "stream": True, "logprobs": True, "top_logprobs": 2,
                              "stream_options": {"include_usage": True}})
    messages: list[Message] = Field(..., min_length=1)
    max_completion_tokens: integer(ge=0) | None = None
    logprobs: StrictBool = False
    top_logprobs: integer(ge=0, le=20) | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None


class AttentionRequest(BaseModel):
    model_config = _examples({"source": "the cat sat on the mat", "max_tokens": 8})
    source: Text = Field(..., min_length=1)
    max_tokens: integer(ge=1) | None = None


class ClassifyRequest(BaseModel):
    """POST /v1/classify: texts to label, with a classifier run or zero-shot with a language model."""

    model_config = _examples({"input": ["I loved it", "I hated it"], "classes": ["positive", "negative"]})
    model: str | None = None
    input: Union[Text, list[Text]] = Field(...)  # one text or several, as OpenAI's embeddings take them
    classes: list[Text] | None = None  # zero-shot with a language model run: the class names
    template: Text | None = None  # zero-shot: the prompt, with one {text}
    verbalizers: list[Text] | None = None  # zero-shot: what follows the prompt for each class
    calibrate: StrictBool = True  # zero-shot: subtract each class's score after a content-free text
