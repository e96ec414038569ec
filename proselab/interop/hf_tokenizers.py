"""The tokenizers of Hugging Face encoder-decoder checkpoints (Marian, BART, T5), read and written
so that their ids equal ``transformers``' (5.x) token for token.

- marian: ``source.spm`` and ``target.spm`` cut each side's text and ``vocab.json`` (and
  ``target_vocab.json`` when ``separate_vocabs``) numbers the pieces. ``MarianTokenizer`` encodes
  through the ``sentencepiece`` library, so these are ``SentencePieceTokenizer`` s, which do too.
- t5: the Unigram pipeline ``T5Tokenizer`` builds from ``spiece.model`` (or from the vocabulary
  and normalizer of a ``tokenizer.json``): the sentencepiece normalizer, split at whitespace,
  ``▁`` before every word, and ``<extra_id_N>`` sentinels after the pieces in reverse order.
- bart: GPT-2's byte-level BPE with RoBERTa's vocabulary, from ``tokenizer.json`` or
  ``vocab.json`` + ``merges.txt``, with ``<s> <pad> </s> <unk> <mask>``.

Special token names come from ``tokenizer_config.json`` / ``special_tokens_map.json`` when present.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from ..atomic import atomic_write_bytes, atomic_write_text
from ..tokenizers import SentencePieceTokenizer, Tokenizer, TokenizerError, load_tokenizer

MODEL_TYPES = ("marian", "bart", "t5")
_DEFAULTS = {  # model_type -> its special tokens as transformers' tokenizer class names them
    "marian": {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
    "t5": {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
    "bart": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
             "mask_token": "<mask>"},
}
_CLASSES = {"marian": "MarianTokenizer", "t5": "T5Tokenizer", "bart": "BartTokenizer"}
_SPACE = "\u2581"  # sentencepiece's word boundary
# transformers' clean_up_tokenization, for a tokenizer_config that asks for it (T5's may)
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def load_pretrained_tokenizers(d: Path, model_type: str) -> tuple[Tokenizer, Tokenizer | None]:
    """The tokenizers of a Hugging Face checkpoint directory.

    Args:
        d: the directory.
        model_type: its config.json's model_type: marian, bart or t5 (or gpt2: its
            tokenizer.json or vocab.json + merges.txt, through ``tokenizers.load_tokenizer``).

    Returns:
        (target tokenizer, source tokenizer or None when the source side uses the same one).
        Marian always has a source tokenizer: its sides have their own sentencepiece models.
    """
    d = Path(d)
    if model_type == "gpt2":
        return load_tokenizer(d), None
    if model_type not in MODEL_TYPES:
        raise TokenizerError(f"no tokenizer reader for model_type '{model_type}'; proselab reads those of "
                             f"{', '.join(MODEL_TYPES)} (and gpt2) checkpoints")
    config = _tokenizer_config(d)
    if model_type == "marian":
        return _load_marian(d, config)
    if model_type == "t5":
        return _load_t5(d, config), None
    return _load_bart(d, config), None


def save_pretrained_tokenizers(out: Path, model_type: str, tokenizer: Tokenizer,
                               src_tokenizer: Tokenizer | None) -> None:
    """Write the tokenizer files of ``model_type``'s layout into the directory ``out``, which
    ``transformers.AutoTokenizer`` (MarianTokenizer, T5Tokenizer, BartTokenizer) loads and which
    encode as ``tokenizer`` (and ``src_tokenizer`` for Marian's source side) do."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if model_type == "marian":
        _save_marian(out, tokenizer, src_tokenizer)
    elif model_type in ("t5", "bart"):
        if src_tokenizer is not None and src_tokenizer is not tokenizer:
            raise TokenizerError(f"a {model_type} checkpoint has one tokenizer for both sides; this run has a "
                                 "separate source tokenizer")
        tokenizer.save(out / "tokenizer.json")
        if model_type == "bart":
            tokenizer.hf.model.save(str(out))  # vocab.json + merges.txt, for tools that read those
        if model_type == "t5":
            decoder = json.loads(tokenizer.hf.to_str())["decoder"] or {}
            extra = {"extra_ids": sum(t.startswith("<extra_id_") for t in tokenizer.hf.get_vocab()),
                     "clean_up_tokenization_spaces": decoder.get("type") == "Sequence"}  # see _load_t5
        else:
            extra = {"add_prefix_space": False, "trim_offsets": True}
        _save_config(out, model_type, tokenizer, extra)
    else:
        raise TokenizerError(f"no tokenizer writer for model_type '{model_type}'; use one of "
                             f"{', '.join(MODEL_TYPES)}")


# --- reading -----------------------------------------------------------------------------------

def _tokenizer_config(d: Path) -> dict[str, Any]:
    """tokenizer_config.json over special_tokens_map.json (both optional), each a JSON object."""
    merged: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = d / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise TokenizerError(f"{path}: not valid JSON ({e})") from None
            if not isinstance(data, dict):
                raise TokenizerError(f"{path}: not a JSON object")
            merged.update(data)
    return merged


def _name(config: dict[str, Any], model_type: str, role: str) -> str:
    """A special token's text: the config's (a string or {"content": ...}) or the default."""
    value = config.get(role) or _DEFAULTS[model_type][role]
    return str(value.get("content") if isinstance(value, dict) else value)


def _added_tokens(config: dict[str, Any], model_type: str, spec: Any = None) -> list[AddedToken]:
    """The special tokens and any other added token, with their flags (lstrip, ...) from the
    tokenizer.json ``spec``'s added_tokens, then tokenizer_config.json's ``added_tokens_decoder``."""
    flags: dict[str, dict] = {}
    listed = spec.get("added_tokens") if isinstance(spec, dict) else None
    for entry in [*(listed if isinstance(listed, list) else []), *(config.get("added_tokens_decoder") or {}).values()]:
        if isinstance(entry, dict) and isinstance(entry.get("content"), str):
            flags[entry["content"]] = entry
    names = [_name(config, model_type, role) for role in _DEFAULTS[model_type]]
    extra = config.get("additional_special_tokens") or config.get("extra_special_tokens") or []
    names += [str(t.get("content") if isinstance(t, dict) else t) for t in extra if isinstance(t, (str, dict))]
    names += [n for n in flags if n not in names]
    out = []
    for n in dict.fromkeys(names):
        f = flags.get(n, {})
        out.append(AddedToken(n, single_word=bool(f.get("single_word", False)), lstrip=bool(f.get("lstrip", False)),
                              rstrip=bool(f.get("rstrip", False)), normalized=bool(f.get("normalized", False)),
                              special=bool(f.get("special", True))))
    return out


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerError(f"'{path.parent}' lacks {path.name} ({what}); download the checkpoint again") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: not readable JSON ({e}); download the checkpoint again") from None


def _spm_proto(path: Path):
    """The parsed ModelProto of a sentencepiece model file."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf's DecodeError, whichever implementation is installed
        raise TokenizerError(f"{path}: not a sentencepiece model ({e}); download the checkpoint again") from None
    if not proto.pieces:
        raise TokenizerError(f"{path}: a sentencepiece model without pieces; download the checkpoint again")
    return proto


def _metaspace_pipeline(hf: HFTokenizer, charsmap: bytes | None, split_whitespace: bool) -> None:
    """sentencepiece's normalizer and word boundaries as ``tokenizers`` components."""
    if charsmap:
        hf.normalizer = normalizers.Precompiled(charsmap)
    meta = pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="always", split=True)
    hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), meta]) if split_whitespace else meta
    hf.decoder = decoders.Metaspace(replacement=_SPACE, prepend_scheme="always", split=True)


def _load_marian(d: Path, config: dict[str, Any]) -> tuple[Tokenizer, Tokenizer]:
    missing = [n for n in ("source.spm", "target.spm") if not (d / n).is_file()]
    if missing:
        raise TokenizerError(f"'{d}' is a Marian checkpoint without its sentencepiece models ({', '.join(missing)} "
                             "missing); download the checkpoint's tokenizer files too")
    separate = bool(config.get("separate_vocabs", False))
    vocab = _marian_vocab(d / "vocab.json")
    tgt_vocab = _marian_vocab(d / "target_vocab.json") if separate else vocab
    added = _added_tokens(config, "marian")
    unk = _name(config, "marian", "unk_token")
    sides = []
    for spm_name, v in (("target.spm", tgt_vocab), ("source.spm", vocab)):
        if unk not in v:
            raise TokenizerError(f"'{d}': the vocabulary lacks the unknown token {unk!r}")
        proto = _spm_proto(d / spm_name)
        scores = {p.piece: p.score for p in proto.pieces}
        floor = min(scores.values()) - 10.0  # pieces of the other side: never preferred
        hf = HFTokenizer(models.Unigram([(t, scores.get(t, floor)) for t in v], unk_id=v.index(unk)))
        _metaspace_pipeline(hf, proto.normalizer_spec.precompiled_charsmap, split_whitespace=False)
        hf.add_tokens([t for t in added if t.content in v])  # ids from the vocabulary; others have none
        sides.append(SentencePieceTokenizer(_settled(hf), (d / spm_name).read_bytes(), "unigram"))
    return sides[0], sides[1]


def _marian_vocab(path: Path) -> list[str]:
    """vocab.json's tokens in id order; its ids must be 0..n-1."""
    data = _read_json(path, "the vocabulary")
    if not isinstance(data, dict) or not all(isinstance(i, int) for i in data.values()):
        raise TokenizerError(f"{path}: not a vocabulary (a JSON object of token -> id)")
    tokens = sorted(data, key=data.__getitem__)
    if [data[t] for t in tokens] != list(range(len(tokens))):
        raise TokenizerError(f"{path}: the ids are not 0..{len(tokens) - 1} each once; download the checkpoint again")
    return tokens


def _load_t5(d: Path, config: dict[str, Any]) -> Tokenizer:
    spec = None
    if (d / "tokenizer.json").is_file():  # transformers takes its vocabulary and normalizer, not its pipeline
        spec = _read_json(d / "tokenizer.json", "the tokenizer")
        model = spec.get("model") if isinstance(spec, dict) else None
        if not isinstance(model, dict) or model.get("type", "Unigram") != "Unigram" or not model.get("vocab"):
            raise TokenizerError(f"{d / 'tokenizer.json'}: not a T5 (sentencepiece Unigram) tokenizer")
        vocab = [(str(p), float(s)) for p, s in model["vocab"]]
        charsmap = _json_charsmap(spec.get("normalizer"))
    elif (d / "spiece.model").is_file():
        proto = _spm_proto(d / "spiece.model")
        vocab = [(p.piece, p.score) for p in proto.pieces]
        vocab += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(int(config.get("extra_ids", 100))))]
        charsmap = proto.normalizer_spec.precompiled_charsmap
    else:
        raise TokenizerError(f"'{d}' is a T5 checkpoint without its tokenizer (spiece.model or tokenizer.json); "
                             "download the checkpoint's tokenizer files too")
    pieces = [p for p, _ in vocab]
    unk = _name(config, "t5", "unk_token")
    hf = HFTokenizer(models.Unigram(vocab, unk_id=pieces.index(unk) if unk in pieces else 2, byte_fallback=False))
    _metaspace_pipeline(hf, charsmap, split_whitespace=True)
    if config.get("clean_up_tokenization_spaces"):
        hf.decoder = decoders.Sequence([hf.decoder, decoders.Fuse(), *(decoders.Replace(a, b) for a, b in _CLEAN_UP)])
    sentinels = [AddedToken(p, special=True, normalized=False) for p in pieces if p.startswith("<extra_id_")]
    hf.add_tokens(_added_tokens(config, "t5", spec) + sorted(sentinels, key=lambda t: pieces.index(t.content))[::-1])
    return Tokenizer(_settled(hf), "unigram")


def _settled(hf: HFTokenizer) -> HFTokenizer:
    """``hf`` as its tokenizer.json reads back: JSON rounds the float32 scores of sentencepiece in
    the last digit, so a run's saved copy is this one exactly (same fingerprint, same cache)."""
    return HFTokenizer.from_str(hf.to_str())


def _json_charsmap(normalizer: Any) -> bytes | None:
    """The sentencepiece charsmap of a tokenizer.json normalizer (Precompiled, maybe in a Sequence)."""
    if not isinstance(normalizer, dict):
        return None
    for n in normalizer.get("normalizers") or [normalizer]:
        if isinstance(n, dict) and n.get("type") == "Precompiled" and n.get("precompiled_charsmap"):
            return base64.b64decode(n["precompiled_charsmap"])
    return None


def _load_bart(d: Path, config: dict[str, Any]) -> Tokenizer:
    spec = None
    if (d / "tokenizer.json").is_file():  # transformers takes its vocabulary and merges, not its pipeline
        spec = _read_json(d / "tokenizer.json", "the tokenizer")
        model = spec.get("model") if isinstance(spec, dict) else None
        if not isinstance(model, dict) or model.get("type", "BPE") != "BPE" or not isinstance(model.get("vocab"), dict):
            raise TokenizerError(f"{d / 'tokenizer.json'}: not a BART (byte-level BPE) tokenizer")
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges") or []]
        bpe = models.BPE(model["vocab"], merges, fuse_unk=False)
    elif (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
        try:
            bpe = models.BPE.from_file(str(d / "vocab.json"), str(d / "merges.txt"), fuse_unk=False)
        except Exception as e:  # the Rust loader raises a bare Exception
            raise TokenizerError(f"cannot read the BART tokenizer files in '{d}': {e}") from None
    else:
        raise TokenizerError(f"'{d}' is a BART checkpoint without its tokenizer (tokenizer.json, or vocab.json and "
                             "merges.txt); download the checkpoint's tokenizer files too")
    hf = HFTokenizer(bpe)
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(config.get("add_prefix_space", False)))
    hf.decoder = decoders.ByteLevel()
    hf.add_tokens(_added_tokens(config, "bart", spec))
    return Tokenizer(hf, "bpe")


# --- writing -----------------------------------------------------------------------------------

def _save_marian(out: Path, tokenizer: Tokenizer, src_tokenizer: Tokenizer | None) -> None:
    src = src_tokenizer or tokenizer
    if not (isinstance(tokenizer, SentencePieceTokenizer) and isinstance(src, SentencePieceTokenizer)):
        raise TokenizerError("a Marian checkpoint's tokenizers are sentencepiece models with a vocab.json: only a run "
                             "fine-tuned from a Marian checkpoint has them")
    src_vocab, tgt_vocab = src.hf.get_vocab(with_added_tokens=True), tokenizer.hf.get_vocab(with_added_tokens=True)
    separate = src_vocab != tgt_vocab
    atomic_write_bytes(out / "source.spm", src.model_proto)
    atomic_write_bytes(out / "target.spm", tokenizer.model_proto)
    _write_json(out / "vocab.json", dict(sorted(src_vocab.items(), key=lambda kv: kv[1])))
    if separate:
        _write_json(out / "target_vocab.json", dict(sorted(tgt_vocab.items(), key=lambda kv: kv[1])))
    _save_config(out, "marian", src, {"separate_vocabs": separate, "model_max_length": 512})


def _save_config(out: Path, model_type: str, tokenizer: Tokenizer, extra: dict[str, Any]) -> None:
    """tokenizer_config.json and special_tokens_map.json naming the class and the special tokens."""
    decoder = tokenizer.hf.get_added_tokens_decoder()
    special = {role: tokenizer.id_to_token(getattr(tokenizer, f"{role}_id"))
               for role in ("bos", "eos", "unk", "pad") if f"{role}_token" in _DEFAULTS[model_type]
               and getattr(tokenizer, f"{role}_id") is not None}
    tokens = {f"{role}_token": t for role, t in special.items()}
    if model_type == "bart":
        tokens["mask_token"] = "<mask>" if tokenizer.token_to_id("<mask>") is not None else None
        tokens = {k: v for k, v in tokens.items() if v is not None}
    config = {
        "tokenizer_class": _CLASSES[model_type],
        **tokens,
        "clean_up_tokenization_spaces": False,
        **extra,
        "added_tokens_decoder": {str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                                          "rstrip": t.rstrip, "single_word": t.single_word, "special": t.special}
                                 for i, t in sorted(decoder.items())},
    }
    _write_json(out / "tokenizer_config.json", config)
    _write_json(out / "special_tokens_map.json", tokens)


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
