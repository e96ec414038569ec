"""Turning YAML and command-line values into a config field's type, and the error for a bad one.

Dispatch is on the field's real type (``typing.get_type_hints``): a union's members, ``list[X]``,
bool, int, float and str, each with its own converter.
"""

from __future__ import annotations

import functools
import types
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A configuration value or key supplied by the user is wrong."""


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """A section's field types as real types (``from __future__ import annotations`` leaves Field.type a string)."""
    return get_type_hints(cls)


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a YAML/CLI value to the field type ``tp`` (from ``field_types``), with a clear error."""
    if get_origin(tp) is dict:  # generation.logit_bias: dict[int, float]
        return _to_bias(key, value)
    members = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)
    optional = type(None) in members
    items = [get_args(m)[0] for m in members if get_origin(m) is list]  # list[X] -> X
    scalars = [m for m in members if m in _SCALARS]
    if items == [int] and not scalars and not optional:  # generation.suppress_tokens: list[int]
        return _to_token_list(key, value)
    if items == [int]:  # generation.eos_token_id: int | list[int] | None
        return _to_token_ids(key, value)
    if items == [float]:  # model.rope_short_factor: list[float]
        return _to_float_list(key, value)
    if items == [str]:  # list[str], or str | list[str] (data.dataset)
        return _to_str_or_list(key, value) if scalars == [str] else _to_str_list(key, value)
    if set(scalars) == {bool, str}:  # generation.early_stopping: true, false or transformers' "never"
        return value if value == "never" else _to_scalar(key, value, bool, optional)
    assert len(scalars) == 1 and len(members) == 1 + optional, f"{key}: no coercion for {tp}"
    return _to_scalar(key, value, scalars[0], optional)


def _to_scalar(key: str, value: Any, kind: type, optional: bool) -> Any:
    """A bool, int, float or str; or None for an optional field, written none, None or null."""
    if isinstance(value, str) and kind is not str and value.strip():
        value = _yaml(key, value)  # CLI text, read as YAML reads a file: "3", "0.5", "true", "null"
    if optional and value in (None, "none", "None", "null"):
        return None
    try:
        return _SCALARS[kind](value)
    except (TypeError, ValueError):
        wording = kind.__name__ + (" or none" if optional else "")
        raise ConfigError(f"{key} must be {wording}, got {value!r}") from None


def _to_str_list(key: str, value: Any) -> list[str]:
    """stop, special_tokens, lora_targets: one string or a list of them."""
    value = _yaml_list(key, value)
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{key} must be a string or a list of strings, got {value!r}")


def _to_str_or_list(key: str, value: Any) -> str | list[str]:
    """data.dataset and data.val_dataset: a name or path, or a list of them; anything else becomes text."""
    value = _yaml_list(key, value)
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return str(value)


def _to_token_ids(key: str, value: Any) -> int | list[int] | None:
    """generation.eos_token_id: one token id, a list of them, or null."""
    if isinstance(value, str):
        value = _yaml(key, value) if value.strip() else None  # unlike int | None, "none" is not null here
    if value is None or _is_int(value) or (isinstance(value, list) and all(_is_int(v) for v in value)):
        return value
    raise ConfigError(f"{key} must be a token id, a list of token ids or null, got {value!r}")


def _to_token_list(key: str, value: Any) -> list[int]:
    """generation.suppress_tokens: a list of token ids; one id is a list of one."""
    if isinstance(value, str):
        value = _yaml(key, value) if value.strip() else []
    if _is_int(value):
        return [value]
    if isinstance(value, (list, tuple)) and all(_is_int(v) for v in value):
        return list(value)
    raise ConfigError(f"{key} must be a list of token ids, got {value!r}")


def _to_float_list(key: str, value: Any) -> list[float]:
    """model.rope_short_factor and rope_long_factor: a list of numbers ('[1.0, 1.2]' on the command line)."""
    if isinstance(value, str):
        value = _yaml(key, value) if value.strip() else []
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return [float(v) for v in value]
    raise ConfigError(f"{key} must be a list of numbers, got {value!r}")


def _to_bias(key: str, value: Any) -> dict[int, float]:
    """generation.logit_bias: a mapping of token ids to numbers, as YAML, JSON (whose keys are text:
    "50256") or the command line writes it: '{50256: -100}', or ID=BIAS texts (one, a list of them,
    or comma-separated)."""
    given = value
    if isinstance(value, str):
        value = _yaml(key, value) if value.strip().startswith("{") else [v for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and "=" in v for v in value):
        value = dict(v.split("=", 1) for v in value)
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must map token ids to numbers ({{50256: -100}}, or ID=BIAS), got {given!r}")
    out = {}
    for token, bias in value.items():
        try:
            out[_int(_yaml(key, token) if isinstance(token, str) else token)] = \
                _float(_yaml(key, bias) if isinstance(bias, str) else bias)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must map token ids to numbers, got {token!r}: {bias!r}") from None
    return out


def _yaml_list(key: str, value: Any) -> Any:
    """--data.dataset='[a.txt, b dir/c.txt]' is a YAML list; other values are left as they are."""
    if isinstance(value, str) and value.strip().startswith("["):
        return _yaml(key, value)
    return value


def _yaml(key: str, text: str) -> Any:
    """A command-line value read as YAML; text YAML cannot parse (an unclosed '[') is a ConfigError."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"{key}: {text!r} is not valid YAML ({problem}); quote it or fix the brackets") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not to a config


_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:  # spellings YAML leaves as text, e.g. "YeS"
        return value.lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TypeError


def _int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise TypeError  # int() would take True as 1 and truncate 1.5
    return int(value)


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError
    return float(value)


def _str(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise TypeError  # a mapping or list where text belongs is a mistake; str() would hide it
    return str(value)


_SCALARS = {bool: _bool, int: _int, float: _float, str: _str}  # each raises TypeError or ValueError on a bad value
