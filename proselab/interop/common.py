"""What every Hugging Face layout shares: reading its weights, and its generation_config.json."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..checkpoint import RunError
from ..config import Config, GenerationConfig

GENERATION_FIELDS = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "min_p", "typical_p",
                     "repetition_penalty", "no_repeat_ngram_size", "num_beams", "length_penalty")


def read_chat_template(d: Path) -> str | None:
    """A checkpoint's own chat template: chat_template.jinja (transformers 5 writes it apart), or
    tokenizer_config.json's chat_template (a string, or named templates: the "default" one)."""
    file = d / "chat_template.jinja"
    if file.is_file():
        try:
            return file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise RunError(f"{file} is not UTF-8 text: a chat template is a Jinja text file") from None
    tok_cfg = d / "tokenizer_config.json"
    try:
        template = json.loads(tok_cfg.read_text(encoding="utf-8")).get("chat_template") if tok_cfg.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise RunError(f"{tok_cfg} is not a JSON object") from None
    if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) and template.strip() else None


def read_state_dict(d: Path) -> dict[str, torch.Tensor]:
    """The weights of a Hugging Face directory: safetensors (one file or shards) or pytorch_model.bin.
    A file that cannot be read (truncated, corrupt, a pickle of more than tensors) is a RunError naming it."""
    if (d / "model.safetensors").is_file():
        return _read_safetensors(d / "model.safetensors")
    if (d / "pytorch_model.bin").is_file():
        return _read_pickle(d / "pytorch_model.bin")
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise RunError(f"{index}: not a safetensors index ({_reason(e)}); download it again") from None
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            if not isinstance(shard, str) or Path(shard).name != shard:  # a shard beside the index, nowhere else
                raise RunError(f"{index}: names a shard outside its directory ({shard!r})")
            state.update(_read_safetensors(d / shard))
        return state
    raise RunError(f"'{d}' has no weights: expected model.safetensors or pytorch_model.bin")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError, OverflowError) as e:
        raise RunError(f"{path}: not readable safetensors weights ({_reason(e)}); the file is truncated or corrupt: "
                       "download it again") from None


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on the pickle's protocol: not the user's business
            # weights_only: a pickle from the internet must not run code
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # what weights_only raises for objects other than tensors (and for some damage)
        raise RunError(f"{path}: not plain tensor weights: a damaged file, or a pickle of other objects, which "
                       "proselab never loads (unpickling them could run code); use the checkpoint's model.safetensors, "
                       "or convert this file with a tool you trust") from None
    except Exception as e:  # noqa: BLE001 (torch.load raises whatever its reader meets in a truncated or corrupt file)
        raise RunError(f"{path}: not readable PyTorch weights ({_reason(e)}); the file is truncated or corrupt: "
                       "download it again") from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise RunError(f"{path}: not a state dict (a mapping of names to tensors); is it a model's weights?")
    return state


def _reason(e: BaseException) -> str:
    """An exception's first line, short enough for a one-line error."""
    text = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def apply_generation_config(cfg: Config, hf_gen: dict[str, Any]) -> None:
    """Take a generation_config.json's settings as the run's generation defaults.

    An encoder-decoder's also bring transformers' defaults where they differ from proselab's
    (greedy unless it says ``do_sample``), its end token, ``max_length``/``min_length`` (which
    count the decoder's start token) as max/min_new_tokens, the forced first and last tokens,
    and single-token ``bad_words_ids`` (Marian's <pad>) as ``suppress_tokens``.
    """
    g = cfg.generation
    for name in GENERATION_FIELDS:
        if hf_gen.get(name) is not None:
            setattr(g, name, hf_gen[name])
    if isinstance(hf_gen.get("eos_token_id"), list):  # several end tokens (a chat model's end of turn)
        g.eos_token_id = [int(i) for i in hf_gen["eos_token_id"]]
    if hf_gen.get("sequence_bias"):  # transformers' per-sequence biases; one token's is OpenAI's logit_bias
        g.logit_bias = _single_token_biases(hf_gen["sequence_bias"])
    if cfg.model.family != "seq2seq":
        return
    g.do_sample = bool(hf_gen.get("do_sample", False))
    if isinstance(hf_gen.get("eos_token_id"), int):
        g.eos_token_id = hf_gen["eos_token_id"]
    if isinstance(hf_gen.get("max_length"), int) and "max_new_tokens" not in hf_gen:
        g.max_new_tokens = max(hf_gen["max_length"] - 1, 1)
    if isinstance(hf_gen.get("min_length"), int) and "min_new_tokens" not in hf_gen:
        g.min_new_tokens = max(hf_gen["min_length"] - 1, 0)
    for name in ("forced_bos_token_id", "forced_eos_token_id", "early_stopping"):
        if hf_gen.get(name) is not None:
            setattr(g, name, hf_gen[name])
    bad = hf_gen.get("bad_words_ids") or []
    if not all(isinstance(w, list) and len(w) == 1 for w in bad):
        raise ValueError(f"bad_words_ids {bad}: proselab bans single tokens only (suppress_tokens)")
    g.suppress_tokens = sorted({int(w[0]) for w in bad} | {int(i) for i in hf_gen.get("suppress_tokens") or []})


def _single_token_biases(pairs: Any) -> dict[int, float]:
    """generation_config.json's sequence_bias ([[[token ids], bias], ...], or transformers'
    {"(ids,)": bias}) as logit_bias; a sequence of several tokens is refused."""
    items = list(pairs.items()) if isinstance(pairs, dict) else pairs
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"sequence_bias {pairs!r}: expected a list of [[token ids], bias] pairs")
    out = {}
    for item in items:
        ids, bias = item if isinstance(item, (list, tuple)) and len(item) == 2 else (None, None)
        if isinstance(ids, str):  # a tuple written as text: "(50256,)"
            ids = [t for t in ids.strip("()[] ").split(",") if t.strip()]
        try:
            ids = [int(t) for t in ids] if isinstance(ids, (list, tuple)) else None
        except (TypeError, ValueError):
            raise ValueError(f"sequence_bias {item!r}: token ids must be integers") from None
        if not (ids is not None and len(ids) == 1 and isinstance(bias, (int, float))):
            raise ValueError(f"sequence_bias {item!r}: proselab biases single tokens only (logit_bias)")
        out[ids[0]] = float(bias)
    return out


def generation_config(g: GenerationConfig, bos: int | None, eos: int | list[int] | None) -> dict[str, Any]:
    """A generation_config.json for a run's generation defaults (None values left out; logit_bias
    as transformers' sequence_bias of single tokens)."""
    gen = {name: getattr(g, name) for name in GENERATION_FIELDS}
    gen.update({"bos_token_id": bos, "eos_token_id": eos, "top_k": g.top_k or None,
                "sequence_bias": [[[t], b] for t, b in sorted(g.logit_bias.items())] or None})
    return {k: v for k, v in gen.items() if v is not None}
