"""Supervised fine-tuning examples: JSONL files with one ``{"prompt", "response"}`` or
``{"messages"}`` object per line, directories of them, and the built-in chat dataset."""

from __future__ import annotations

import json
from pathlib import Path

from ..chat import ROLES
from .files import DatasetError, items, json_object, json_type, key_list, read_text
from .sources import source_files

_SHAPES = (
    'expected one JSON object per line, {"prompt": str, "response": str} or '
    '{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]} with an assistant message'
)


def _prompt_response(obj: dict) -> dict:
    for key in ("prompt", "response"):
        if key not in obj:
            raise ValueError(f'has "{"prompt" if key == "response" else "response"}" but no "{key}"')
        if not isinstance(obj[key], str):
            raise ValueError(f'"{key}" must be a string, got {json_type(obj[key])}')
    if not obj["response"].strip():
        raise ValueError('"response" is empty; there would be nothing to train on')
    return {"prompt": obj["prompt"], "response": obj["response"]}


def parse_message(i: int, m) -> dict:
    """Message ``i`` of a conversation as exactly ``{"role", "content"}``; ValueError says what is wrong."""
    if not isinstance(m, dict):
        raise ValueError(f'"messages"[{i}] must be a {{"role", "content"}} object, got {json_type(m)}')
    missing = [f'"{k}"' for k in ("role", "content") if k not in m]
    if missing:
        raise ValueError(
            f'"messages"[{i}] must be a {{"role", "content"}} object, got one without {" or ".join(missing)}'
        )
    if m["role"] not in ROLES:
        raise ValueError(
            f'"messages"[{i}]["role"] must be "system", "user" or "assistant", got {json.dumps(m["role"])}'
        )
    if not isinstance(m["content"], str):
        raise ValueError(f'"messages"[{i}]["content"] must be a string, got {json_type(m["content"])}')
    return {"role": m["role"], "content": m["content"]}


def _messages(value) -> dict:
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else json_type(value)
        raise ValueError(f'"messages" must be a non-empty list of {{"role", "content"}} objects, got {got}')
    messages = [parse_message(i, m) for i, m in enumerate(value)]
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError('"messages" has no assistant message; there would be nothing to train on')
    return {"messages": messages}


def _example(line: str) -> dict:
    """One normalized example from one JSONL line; ValueError says what is wrong with it."""
    obj = json_object(line, "an example")
    if "messages" in obj and ("prompt" in obj or "response" in obj):
        raise ValueError('has both "messages" and "prompt"/"response"; use one shape per line')
    if "messages" in obj:
        return _messages(obj["messages"])
    if "prompt" in obj or "response" in obj:
        return _prompt_response(obj)
    raise ValueError(f'has neither "messages" nor "prompt"/"response" (keys: {key_list(obj)})')


def _read_examples(path: Path) -> list[dict]:
    text = read_text(path)
    examples = []
    # Split on \n only: str.splitlines would also split at U+2028, which JSON allows raw inside strings.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            examples.append(_example(line))
        except ValueError as e:
            raise DatasetError(f"{path}:{lineno}: {e}; {_SHAPES}") from None
    return examples


def load_examples(spec: str | Path | list[str]) -> list[dict]:
    """Load supervised fine-tuning examples from JSONL files or built-in chat datasets.

    Each non-blank line is ``{"prompt": str, "response": str}`` (extra keys ignored) or
    ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`` with at least
    one assistant message. A bad line raises a DatasetError naming ``file:line``.

    Args:
        spec: a built-in chat dataset name (e.g. ``chitchat``), a ``.jsonl`` file, a directory
            (its ``*.jsonl`` files, recursively, sorted), or a list of these.

    Returns:
        The examples in order, each exactly ``{"prompt", "response"}`` or ``{"messages"}`` (whose
        items are exactly ``{"role", "content"}``).
    """
    examples: list[dict] = []
    for _, path in source_files(spec, "chat"):
        examples.extend(_read_examples(path))
    if not examples:
        raise DatasetError(f"no examples: {', '.join(items(spec))} holds no non-blank .jsonl lines")
    return examples
