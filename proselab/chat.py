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

A checkpoint imported with a chat template of its own (``tokenizer_config.json``'s
``chat_template``, or ``chat_template.jinja``: Llama 3's headers, Llama 2's [INST], Qwen's ChatML...)
keeps it as ``data.chat_template``, the Jinja text itself, rendered as transformers renders it
(a sandboxed Jinja environment with its options and helpers). Chat, serving and fine-tuning on
``{"messages"}`` then use it: the tokens a reply is trained on are found by rendering the
conversation up to each assistant message (with the generation prompt) and up to its end, so
any template that renders a conversation as a prefix of its continuation works. A template that
rewrites earlier turns (Qwen3's drops their reasoning) trains each reply in a row of its own,
after the conversation as generation renders it (``encode_rows``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from datetime import datetime

from .config.checks import is_jinja
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


class RewritesTurns(ChatError):
    """A chat template renders a conversation differently from the beginning of its
    continuation (Qwen3's drops the reasoning of replies before the last user message)."""


def template_tokens(template: str) -> list[str]:
    """The special tokens a named chat template needs in the vocabulary, its end-of-turn marker
    last; none for a Jinja template (its checkpoint's tokenizer has them)."""
    if is_jinja(template):
        return []
    _check_template(template)
    return [IM_START, IM_END]


def jinja_template(template: str) -> str:
    """The template as a Jinja string, for ``tokenizer_config.json``."""
    if is_jinja(template):
        return template
    _check_template(template)
    return CHATML_JINJA


def _check_template(template: str) -> None:
    if template not in TEMPLATES and not is_jinja(template):
        raise ChatError(f"data.chat_template must be one of {', '.join(TEMPLATES)} or a Jinja chat template, "
                        f"got '{template[:60]}'")


def _raise(message: str) -> None:
    raise ChatError(f"the chat template refused the conversation: {message}")


@functools.lru_cache(maxsize=8)
def _compiled(template: str):
    """A Jinja template compiled as transformers compiles chat templates: sandboxed, with
    trim_blocks, lstrip_blocks, loop controls, and their helpers (raise_exception, strftime_now,
    a tojson that keeps non-ASCII text)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)
    env.globals.update(raise_exception=_raise, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    try:
        return env.from_string(template)
    except jinja2.TemplateError as e:
        raise ChatError(f"data.chat_template is not a valid Jinja template: {e}") from None


def _render_jinja(template: str, messages: list[dict], add_generation_prompt: bool, tokenizer: Tokenizer | None) -> str:
    import jinja2

    def token(i: int | None) -> str:
        return "" if tokenizer is None or i is None else tokenizer.hf.id_to_token(i) or ""

    try:
        return _compiled(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                          bos_token=token(tokenizer and tokenizer.bos_id),
                                          eos_token=token(tokenizer and tokenizer.eos_id))
    except jinja2.TemplateError as e:
        raise ChatError(f"the chat template failed on this conversation: {e}") from None


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
    """Whether the run can chat: a Jinja template (a chat checkpoint's own), or a tokenizer that
    holds the named template's special tokens (a run fine-tuned for chat)."""
    return all(tokenizer.token_to_id(t) is not None for t in template_tokens(template))


def render_chat(messages: list[dict], add_generation_prompt: bool = False, template: str = "chatml",
                tokenizer: Tokenizer | None = None) -> str:
    """A conversation as text in ``template`` (ChatML, or a Jinja template, which gets the
    ``tokenizer``'s bos and eos tokens); with ``add_generation_prompt`` it ends where the
    assistant's reply begins (the prompt for generating that reply)."""
    if is_jinja(template):
        return _render_jinja(template, messages, add_generation_prompt, tokenizer)
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


_PROBE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def chat_stop_ids(tokenizer: Tokenizer, template: str) -> list[int]:
    """Token ids that end an assistant turn: the template's end marker, then end-of-text. A
    Jinja template's marker is the first special token it writes after a reply's text."""
    if is_jinja(template):
        try:
            prompt = render_chat(_PROBE[:1], True, template, tokenizer)
            reply = render_chat(_PROBE, False, template, tokenizer)[len(prompt):]
        except ChatError:  # a template with demands of its own (a system message first...): end-of-text only
            reply = ""
        said = _PROBE[1]["content"]
        after = reply[reply.find(said) + len(said):] if said in reply else ""  # what follows the reply's text
        specials = {t.content: i for i, t in tokenizer.hf.get_added_tokens_decoder().items() if t.special}
        marks = sorted((after.find(t), i) for t, i in specials.items() if t and t in after)
        ids = [marks[0][1] if marks else None, tokenizer.eos_id]
    else:
        ids = [tokenizer.token_to_id(template_tokens(template)[-1]), tokenizer.eos_id]
    return list(dict.fromkeys(i for i in ids if i is not None))


# (text, is_special_token, trained, starts_an_exchange) pieces of an example
Segment = tuple[str, bool, bool, bool]


def _segments(example: dict, template: str, tokenizer: Tokenizer) -> list[Segment]:
    """The pieces of one example, in order."""
    if "messages" not in example:
        return [(example["prompt"], False, False, True), (example["response"], False, True, False),
                (EOT, True, True, False)]
    _check_template(template)
    if is_jinja(template):
        return _jinja_segments(example["messages"], template, tokenizer)
    out: list[Segment] = []
    after_reply = True
    for m in example["messages"]:
        reply = m["role"] == "assistant"
        out += [(IM_START, True, False, after_reply), (f"{m['role']}\n", False, False, False),
                (m["content"], False, reply, False), (IM_END, True, reply, False), ("\n", False, False, False)]
        after_reply = reply
    return out


def _jinja_segments(messages: list[dict], template: str, tokenizer: Tokenizer) -> list[Segment]:
    """A conversation in a Jinja template, cut where each assistant reply starts and ends:
    the text up to a reply is the conversation so far rendered with the generation prompt; the
    reply is what rendering it adds (its text and the template's end-of-turn marker)."""
    out: list[Segment] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render_chat(messages[:i], True, template, tokenizer)
        full = render_chat(messages[: i + 1], False, template, tokenizer)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise RewritesTurns("the chat template does not render a conversation as the beginning of its "
                                "continuation (it rewrites earlier turns)")
        out += [(prompt[len(done):], False, False, True), (full[len(prompt):], False, True, False)]
        done = full
    rest = render_chat(messages, False, template, tokenizer)
    if not rest.startswith(done):
        raise RewritesTurns("the chat template does not render a conversation as the beginning of its continuation")
    if rest[len(done):]:
        out.append((rest[len(done):], False, False, True))
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
    return _encode(_segments(example, template, tokenizer), tokenizer)


def encode_rows(example: dict, tokenizer: Tokenizer, template: str, size: int) -> list[tuple[list[int], list[bool],
                                                                                          list[int]]]:
    """The training rows of an example, each as ``encode_example`` gives one: usually the
    example itself, cut later at its exchanges (``windows``).

    A Jinja template that rewrites earlier turns (Qwen3's drops the reasoning of every reply
    before the last user message) cannot show one whole conversation as each reply was
    generated. Then every assistant reply gets a row of its own: the conversation before it,
    rendered as ``Generator.chat_prompt`` renders it for generation (the oldest turns after a
    system message left out until the row fits ``size`` tokens), then the reply.
    """
    try:
        return [encode_example(example, tokenizer, template)]
    except RewritesTurns:
        pass
    messages, rows = example["messages"], []
    system = 1 if messages and messages[0]["role"] == "system" else 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        first = system
        while True:
            turns = messages[:system] + messages[first:i]
            prompt = render_chat(turns, True, template, tokenizer)
            full = render_chat(turns + [m], False, template, tokenizer)
            if not full.startswith(prompt):
                raise ChatError("the chat template does not render a reply after the conversation before it "
                                "(it rewrites the last turn), so the replies to train on cannot be found; "
                                "fine-tune with data.chat_template=chatml instead")
            row = _encode([(prompt, False, False, True), (full[len(prompt):], False, True, False)], tokenizer)
            if len(row[0]) <= size or first >= i - 1:
                break
            first += 1  # the oldest turn leaves, as generation leaves it out of a long conversation
        rows.append(row)
    return rows


def _encode(pieces: list[Segment], tokenizer: Tokenizer) -> tuple[list[int], list[bool], list[int]]:
    """``encode_example``'s ids, trained flags and exchange starts of ``pieces``."""
    ids: list[int] = []
    trained: list[bool] = []
    starts: list[int] = []
    texts = [text for text, special, _, _ in pieces if not special and text]
    encoded = iter(tokenizer.encode_batch(texts))
    for text, special, train, start in pieces:
        if start and (not starts or starts[-1] != len(ids)):
            starts.append(len(ids))
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
