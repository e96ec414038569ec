"""Supervised fine-tuning examples as tokens: chat templates, special tokens, response masks.

An example is ``{"prompt", "response"}`` (the response follows the prompt and ends with the
tokenizer's end-of-text token) or ``{"messages": [{"role", "content"}, ...]}``, laid out by a
chat template. Each becomes token ids plus a mask of the tokens the loss is computed on: the
responses (and the token that ends them, so the model learns to stop), never the prompts.

The one template, ``chatml``, is OpenAI's ChatML as used by many open models::

    <|im_start|>user
    Hi!<|im_end|>
    <|im_start|>assistant
    Hello.<|im_end|>

It is also written as a Jinja chat template on export, so ``transformers``'
``apply_chat_template`` and servers such as vLLM format conversations the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

from .tokenizers import EOT, Tokenizer

ROLES = ("system", "user", "assistant")
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
TEMPLATES = ("chatml",)
# Jinja for tokenizer_config.json's chat_template; must render exactly as render_chat does
CHATML_JINJA = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class ChatError(ValueError):
    """A chat template, conversation or run cannot be used for chat."""


def template_tokens(template: str) -> list[str]:
    """The special tokens a chat template needs in the vocabulary, its end-of-turn marker last."""
    _check_template(template)
    return [IM_START, IM_END]


def jinja_template(template: str) -> str:
    """The template as a Jinja string, for ``tokenizer_config.json``."""
    _check_template(template)
    return CHATML_JINJA


def _check_template(template: str) -> None:
    if template not in TEMPLATES:
        raise ChatError(f"data.chat_template must be one of {', '.join(TEMPLATES)}, got '{template}'")


def needed_tokens(examples: Iterable[dict], template: str, extra: Iterable[str] = ()) -> list[str]:
    """Special tokens the examples need: the template's (for conversations), an end-of-text
    token (for prompt/response pairs) and ``extra``, in that order, without duplicates."""
    kinds = {"messages" if "messages" in ex else "prompt" for ex in examples}
    tokens = template_tokens(template) if "messages" in kinds else []
    if "prompt" in kinds:
        tokens.append(EOT)
    return list(dict.fromkeys([*tokens, *extra]))


def add_special_tokens(tokenizer: Tokenizer, tokens: Iterable[str]) -> Tokenizer:
    """``tokenizer`` with ``tokens`` added as special tokens (new ids at the end); the same
    object when it already has them all. A token the vocabulary holds as a normal token is
    promoted to special in place, keeping its id."""
    special = {t.content for t in tokenizer.hf.get_added_tokens_decoder().values()}
    missing = [t for t in tokens if t not in special]
    if not missing:
        return tokenizer
    for t in missing:
        if not t or t.isspace():
            raise ChatError(f"data.special_tokens: {t!r} cannot be a special token (empty or whitespace)")
    hf = type(tokenizer.hf).from_str(tokenizer.hf.to_str())  # a copy: the original stays as it was
    hf.add_special_tokens(missing)
    return tokenizer.with_hf(hf)


def is_chat_tokenizer(tokenizer: Tokenizer, template: str) -> bool:
    """Whether the tokenizer holds the template's special tokens (a run fine-tuned for chat)."""
    return all(tokenizer.token_to_id(t) is not None for t in template_tokens(template))


def render_chat(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """A conversation as ChatML text; with ``add_generation_prompt`` it ends where the
    assistant's reply begins (the prompt for generating that reply)."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def chat_stop_ids(tokenizer: Tokenizer, template: str) -> list[int]:
    """Token ids that end an assistant turn: the template's end marker, then end-of-text."""
    ids = [tokenizer.token_to_id(template_tokens(template)[-1]), tokenizer.eos_id]
    return list(dict.fromkeys(i for i in ids if i is not None))


def _segments(example: dict, template: str) -> list[tuple[str, bool, bool]]:
    """(text, is_special_token, trained) pieces of one example, in order."""
    if "messages" not in example:
        return [(example["prompt"], False, False), (example["response"], False, True), (EOT, True, True)]
    _check_template(template)
    out: list[tuple[str, bool, bool]] = []
    for m in example["messages"]:
        reply = m["role"] == "assistant"
        out += [(IM_START, True, False), (f"{m['role']}\n", False, False), (m["content"], False, reply),
                (IM_END, True, reply), ("\n", False, False)]
    return out


def encode_example(example: dict, tokenizer: Tokenizer, template: str) -> tuple[list[int], list[bool], list[int]]:
    """Token ids of an example, per token whether the loss is computed on it, and where each
    exchange starts: the first message and each one after an assistant reply (``[0]`` for a
    prompt/response pair). Long conversations are cut there (``windows``), so every piece
    ends with the replies to its own prompts.

    Text between special tokens is encoded piece by piece, a prompt apart from its response,
    as generation sees them: the prompt is encoded alone and the reply follows it. The
    tokenizers split at special tokens first and never merge across a newline, so a rendered
    conversation encodes to the same ids whole (tests check this).
    """
    ids: list[int] = []
    trained: list[bool] = []
    starts: list[int] = []
    pieces = _segments(example, template)
    texts = [text for text, special, _ in pieces if not special and text]
    encoded = iter(tokenizer.encode_batch(texts))
    after_reply = True
    for text, special, train in pieces:
        if not ids or (special and text == IM_START and after_reply):
            starts.append(len(ids))
        if special and text == IM_START:
            after_reply = False
        elif special and text == IM_END:
            after_reply = train  # the end of an assistant message is trained
        if special:
            tid = tokenizer.token_to_id(text)
            assert tid is not None, f"special token {text!r} missing from the tokenizer; call add_special_tokens"
            piece = [tid]
        elif text:
            piece = next(encoded)
        else:
            continue
        ids += piece
        trained += [train] * len(piece)
    return ids, trained, starts


def windows(starts: list[int], length: int, size: int) -> list[tuple[int, int]]:
    """Cut a tokenized conversation into spans of at most ``size`` tokens at exchange starts.

    Greedy: each span takes as many whole exchanges as fit; an exchange longer than ``size``
    gets a span of its own (the data loader cuts it). A long conversation thus trains on all
    its replies instead of only those in its first ``size`` tokens.
    """
    bounds = [*starts, length]
    spans, a = [], bounds[0]
    for prev, b in zip(bounds[1:-1], bounds[2:]):
        if b - a > size and prev > a:
            spans.append((a, prev))
            a = prev
    spans.append((a, length))
    return spans


def example_text(example: dict) -> str:
    """The plain text of an example, for training a tokenizer on SFT data."""
    if "messages" in example:  # the role names too: the template writes them as text
        return "".join(f"{m['role']}\n{m['content']}\n" for m in example["messages"])
    return f"{example['prompt']}\n{example['response']}"
