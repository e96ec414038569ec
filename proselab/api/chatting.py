"""A loaded run in conversation: the chat template, the window, the reply (``Generator.chat``)."""

from __future__ import annotations

from collections.abc import Iterator

from ..chat import ChatError, is_chat_tokenizer, render_chat, template_tokens
from ..data.batch import Seq2SeqBatch
from ..data.examples import parse_message
from ..decoding import Delta, Generation
from ..decoding import generate as generate_ids
from ..decoding import stream as stream_ids


class Chatting:
    """``Generator``'s chat methods (a mixin over its tokenizer, config and decoding)."""

    def chat_prompt(self, messages: list[dict], max_new_tokens: int) -> list[list[int]] | Seq2SeqBatch:
        """The model input for the assistant's reply to a conversation: for a GPT, the
        conversation in the run's chat template, the oldest turns (never a system message)
        left out until the prompt and ``max_new_tokens`` fit the model's window; for a seq2seq
        run (a response generator trained on turn pairs), the last user message as the source."""
        if self.is_seq2seq:
            users = [m["content"] for m in _parse_messages(messages) if m["role"] == "user"]
            if not users:
                raise ChatError("messages has no user message; a seq2seq model answers the last user message")
            return self._sources(users[-1:])
        template = self.config.data.chat_template
        if not is_chat_tokenizer(self.tokenizer, template):
            raise ChatError(
                f"this model was not fine-tuned for chat: its tokenizer lacks the {template} tokens "
                f"{', '.join(template_tokens(template))}; fine-tune it on {{\"messages\": [...]}} examples "
                "(see the README's chat recipe), or use generate for plain continuation"
            )
        messages = _parse_messages(messages)
        if not messages:
            raise ChatError("messages is empty; give at least one user message")
        system = [m for m in messages[:1] if m["role"] == "system"]
        turns = messages[len(system):]
        window = self.config.model.block_size if self.config.model.family == "gpt" else None
        while True:
            ids = self.tokenizer.encode(render_chat(system + turns, True, template, self.tokenizer))
            if window is None or len(ids) + max_new_tokens <= window or len(turns) <= 1:
                return [ids]
            turns = turns[1:]

    def chat(self, messages: list[dict], **overrides) -> Generation:
        """The assistant's reply to a conversation (a fine-tuned chat run; see ``chat_prompt``).

        Args:
            messages: ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``.
            **overrides: GenerationConfig fields.
        """
        cfg = self.generation_config(**_reply_length(overrides))
        ids = self.chat_prompt(messages, cfg.max_new_tokens)
        return generate_ids(self.model, ids, cfg, **self._decoding())[0]

    def chat_stream(self, messages: list[dict], **overrides) -> Iterator[Delta]:
        """Like ``chat``, but yield the reply's text as it is generated."""
        cfg = self.generation_config(**_reply_length(overrides))
        ids = self.chat_prompt(messages, cfg.max_new_tokens)
        yield from stream_ids(self.model, ids, cfg, **self._decoding())


def _reply_length(overrides: dict) -> dict:
    """A chat reply's length is max_new_tokens: transformers' max_length would count the
    conversation, which is cut to fit the window only once the reply's length is known."""
    if "max_length" in overrides:
        raise ValueError("max_length counts the prompt, and a chat's prompt is the whole conversation: give "
                         "max_new_tokens, the reply's length")
    return overrides


def _parse_messages(messages: list[dict]) -> list[dict]:
    """Each message as exactly {"role", "content"}; a ChatError says which one is wrong and how."""
    try:
        return [parse_message(i, m) for i, m in enumerate(messages)]
    except ValueError as e:
        raise ChatError(str(e)) from None
