"""Supervised fine-tuning examples: JSONL files with one ``{"prompt", "response"}`` or
``{"messages"}`` object per line, directories of them, and the built-in chat dataset.

``load_examples`` turns a config's ``data.dataset`` into those examples (``data.format=sft``);
``is_example_spec`` tells whether a dataset spec names them. Text corpora are
``datasets.load_texts``; sentence pairs are ``pairs.load_pairs``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .chat import ROLES
from .datasets import _KIND_FORMAT, _KIND_NAME, DATASETS, DatasetError, _decode, _dir_files, _items, _not_found, fetch

_SHAPES = (
    'expected one JSON object per line, {"prompt": str, "response": str} or '
    '{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]} with an assistant message'
)


def _json_type(value) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _prompt_response(obj: dict) -> dict:
    for key in ("prompt", "response"):
        if key not in obj:
            raise ValueError(f'has "{"prompt" if key == "response" else "response"}" but no "{key}"')
        if not isinstance(obj[key], str):
            raise ValueError(f'"{key}" must be a string, got {_json_type(obj[key])}')
    if not obj["response"].strip():
        raise ValueError('"response" is empty; there would be nothing to train on')
    return {"prompt": obj["prompt"], "response": obj["response"]}


def parse_message(i: int, m) -> dict:
    """Message ``i`` of a conversation as exactly ``{"role", "content"}``; ValueError says what is wrong."""
    if not isinstance(m, dict):
        raise ValueError(f'"messages"[{i}] must be a {{"role", "content"}} object, got {_json_type(m)}')
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
        raise ValueError(f'"messages"[{i}]["content"] must be a string, got {_json_type(m["content"])}')
    return {"role": m["role"], "content": m["content"]}


def _messages(value) -> dict:
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else _json_type(value)
        raise ValueError(f'"messages" must be a non-empty list of {{"role", "content"}} objects, got {got}')
    messages = [parse_message(i, m) for i, m in enumerate(value)]
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError('"messages" has no assistant message; there would be nothing to train on')
    return {"messages": messages}


def json_object(line: str, what: str) -> dict:
    """One JSONL line that must hold a JSON object (``what``: "an example", "a pair");
    ValueError says why it does not."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"a JSON {_json_type(obj)} is not {what}")
    return obj


def key_list(obj: dict) -> str:
    """The first few keys of a JSON object, for saying what a line holds instead."""
    return ", ".join(f'"{k}"' for k in list(obj)[:5]) or "none"


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
    text = _decode(path, path.read_bytes(), "strict")
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


def _example_files(item: str) -> list[Path]:
    path = Path(item).expanduser()
    if path.is_dir():
        return _dir_files(path, ".jsonl", "supervised fine-tuning reads .jsonl examples")
    if path.is_file():
        if path.suffix.lower() != ".jsonl":
            raise DatasetError(
                f"'{path}' is not a .jsonl file; supervised fine-tuning reads .jsonl files of examples "
                "(one JSON object per line); plain text is for language modelling (data.format=text)"
            )
        return [path]
    raise _not_found(item, [name for name, info in DATASETS.items() if info.kind == "chat"], "built-in chat dataset")


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
    items = _items(spec)
    if not items:
        raise DatasetError("data.dataset is empty; name a built-in chat dataset or .jsonl files")
    examples: list[dict] = []
    for item in items:
        if item in DATASETS:
            kind = DATASETS[item].kind
            if kind != "chat":
                raise DatasetError(
                    f"'{item}' is {_KIND_NAME[kind]}, not a chat dataset; supervised fine-tuning reads .jsonl "
                    f"examples or a chat dataset ({_KIND_FORMAT[kind]} trains on '{item}' instead)"
                )
            files = [fetch(item)]
        else:
            files = _example_files(item)
        for path in files:
            examples.extend(_read_examples(path))
    if not examples:
        raise DatasetError(f"no examples: {', '.join(items)} holds no non-blank .jsonl lines")
    return examples


def is_example_spec(spec: str | Path | list[str]) -> bool:
    """Whether ``spec`` names fine-tuning examples, so that data.format can be chosen automatically.

    True iff ``spec`` is non-empty and every item is a built-in chat dataset, an existing ``.jsonl``
    file, or a directory holding ``.jsonl`` files and no ``.txt`` files.
    """
    items = _items(spec)

    def examples(item: str) -> bool:
        if item in DATASETS:
            return DATASETS[item].kind == "chat"
        path = Path(item).expanduser()
        if path.is_dir():
            return any(path.rglob("*.jsonl")) and not any(path.rglob("*.txt"))
        return path.is_file() and path.suffix.lower() == ".jsonl"

    return bool(items) and all(examples(item) for item in items)
