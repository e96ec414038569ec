import json
import random
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer

from proselab.tokenizers import (
    EOT,
    UNK,
    TokenizerError,
    get_tokenizer,
    gpt2_tokenizer,
    load_tokenizer,
    train_tokenizer,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GPT2_DIR = DATA / "gpt2-tokenizer"
TINY = DATA / "tinyshakespeare" / "input.txt"
needs_gpt2 = pytest.mark.skipif(not GPT2_DIR.is_dir(), reason="shared/data/gpt2-tokenizer not available")
needs_tiny = pytest.mark.skipif(not TINY.is_file(), reason="shared/data/tinyshakespeare not available")

CORPUS = [
    (
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n\tFirst Citizen:\nYou are all resolved rather to die than to famish?\n"
    ),
    "The king's men, 1599 of them; the queen's men -- fewer!\n" * 20,
]
TRICKY = [
    "",
    " ",
    "  leading and trailing  ",
    "tabs\tand\r\nwindows\rline ends\n",
    "emoji 😀👩‍👩‍👧 and flags 🇫🇷",
    "中文字符 日本語 한국어",
    "combining e\u0301 vs é, a\u0308\u0301",
    "zero\u200bwidth and nbsp\u00a0here",
    "\n\n\n  \n\t \n",
    "x" * 300,
]


@pytest.fixture(scope="module")
def toks():
    return {
        "char": train_tokenizer("char", CORPUS),
        "word": train_tokenizer("word", CORPUS, vocab_size=60),
        "bpe": train_tokenizer("bpe", CORPUS, vocab_size=400),
    }


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer(GPT2_DIR)


@pytest.fixture(scope="module")
def gpt2_ref():
    transformers = pytest.importorskip("transformers")
    return transformers.GPT2TokenizerFast.from_pretrained(str(GPT2_DIR))


@needs_gpt2
def test_gpt2_matches_openai_ids(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.kind == "gpt2" and gpt2.vocab_size == 50257
    assert gpt2.bos_id == gpt2.eos_id == 50256 and gpt2.id_to_token(50256) == EOT
    assert gpt2.pad_id is None and gpt2.unk_id is None
    assert gpt2.decode([15496, 995, 50256]) == "Hello world"
    assert gpt2.decode([15496, 995, 50256], skip_special_tokens=False) == "Hello world<|endoftext|>"


@needs_gpt2
def test_gpt2_matches_transformers(gpt2, gpt2_ref):
    texts = [*TRICKY, "Hello world", " Hello world", "It's 2024, isn't it?  Yes.\n\nNo!", CORPUS[0]]
    for text in texts:
        assert gpt2.encode(text) == gpt2_ref.encode(text), text
        assert gpt2.decode(gpt2.encode(text)) == text
    assert gpt2.encode_batch(texts) == [gpt2_ref.encode(t) for t in texts]


@needs_gpt2
def test_gpt2_from_file_paths(gpt2, tmp_path):
    assert load_tokenizer(GPT2_DIR).fingerprint() == gpt2.fingerprint()
    assert load_tokenizer(GPT2_DIR / "vocab.json").kind == "gpt2"
    assert get_tokenizer(str(GPT2_DIR)).encode("Hello world") == [15496, 995]
    saved = load_tokenizer(gpt2.save(tmp_path))
    assert saved.kind == "gpt2" and saved.fingerprint() == gpt2.fingerprint()


def test_bpe_round_trips_tricky_text(toks):
    bpe = toks["bpe"]
    assert bpe.bos_id == bpe.eos_id == bpe.token_to_id(EOT) and bpe.unk_id is None
    for text in TRICKY:
        assert bpe.decode(bpe.encode(text)) == text
    assert bpe.count_unknown(bpe.encode("😀 never seen")) == 0
    ids = bpe.encode("a<|endoftext|>b")  # the special token in text is the special token, as in GPT-2
    assert bpe.eos_id in ids and bpe.decode(ids, skip_special_tokens=False) == "a<|endoftext|>b"


def _random_text(rng: random.Random) -> str:
    pools = [
        " \t\n\r\x0b\x0c\x00\u00a0\u2028\u3000",  # whitespace and controls
        "abcXYZ019.,;'!?-\"",
        "".join(map(chr, range(0x80, 0x250))),  # Latin-1 and extensions
        "\u0300\u0301\u0308\u200d\ufe0f",  # combining marks, joiners, selectors
        "中文字符日本語한국어العربيةעברית",
        "😀👩🇫🇷🏳🌈𝔘𝔫𝔦",
    ]
    out = []
    for _ in range(rng.randint(0, 40)):
        if rng.random() < 0.1:  # any code point but surrogates
            c = rng.randint(0, 0x10FFFF)
            out.append(chr(c) if not 0xD800 <= c < 0xE000 else "x")
        else:
            out.append(rng.choice(rng.choice(pools)))
    return "".join(out)


def test_bpe_round_trips_any_unicode(toks):
    bpe, rng = toks["bpe"], random.Random(0)
    texts = [_random_text(rng) for _ in range(500)]
    for text, ids in zip(texts, bpe.encode_batch(texts)):
        assert bpe.decode(ids) == text


def test_bpe_vocab_size(toks):
    assert toks["bpe"].vocab_size <= 400
    with pytest.raises(TokenizerError, match="vocab_size must be >= 257"):
        train_tokenizer("bpe", CORPUS, vocab_size=200)


def test_long_text_encodes_like_one_piece(toks):
    # Long texts are cut before newlines and encoded in parallel; the ids must not change.
    unit = "word  \n  \r\nx\n\n\tspaced   \n.\nend'\n 12\n" * 8000 + "tail"
    assert len(unit) > 3 * 65536
    for tok in toks.values():
        assert tok.encode(unit) == tok.hf.encode(unit, add_special_tokens=False).ids, tok.kind


@needs_tiny
def test_char_vocab_of_tinyshakespeare_matches_nanogpt():
    text = TINY.read_text(encoding="utf-8")
    tok = train_tokenizer("char", [text])
    chars = sorted(set(text))
    assert len(chars) == 65 and tok.vocab_size == 66
    assert [tok.token_to_id(c) for c in chars] == list(range(65))
    assert tok.unk_id == 65 and tok.id_to_token(65) == UNK
    assert tok.bos_id is tok.eos_id is tok.pad_id is None
    assert tok.encode(text[:1000]) == [chars.index(c) for c in text[:1000]]


def test_char_round_trip_and_unknown(toks):
    char = toks["char"]
    known = "Speak,\tspeak.\n\n  All: die\n"
    assert char.decode(char.encode(known)) == known
    ids = char.encode("Speak ~ ü!~")
    assert char.count_unknown(ids) == 3
    assert char.count_unknown(np.array(ids)) == 3
    assert char.unknown_tokens("Speak ~ ü!~") == {"~": 2, "ü": 1}
    assert char.decode(ids) == "Speak  !"
    assert char.decode(ids, skip_special_tokens=False) == f"Speak {UNK} {UNK}!{UNK}"


def test_word_round_trip_and_unknown(toks):
    word = toks["word"]
    assert word.unk_id is not None and word.eos_id == word.bos_id == word.token_to_id(EOT)
    assert word.vocab_size <= 60
    known = "First Citizen:\nThe king's men, the queen's men!\n"
    ids = word.encode(known)
    assert word.count_unknown(ids) == 0
    assert word.decode(ids) == known
    assert word.id_to_token(ids[1]) == " Citizen"  # tokens carry their leading space
    ids = word.encode("The zebra men")
    assert word.count_unknown(ids) == 1 and word.unknown_tokens("The zebra men") == {" zebra": 1}


def test_word_vocab_is_most_frequent():
    tok = train_tokenizer("word", ["a a a b b c\n"], vocab_size=4)  # "a" " a" " a" " b" " b" " c" "\n"
    assert tok.vocab_size == 4
    assert tok.token_to_id(" a") is not None and tok.token_to_id(" b") is not None
    assert tok.token_to_id("a") is None and tok.token_to_id(" c") is None


def _specials(tok):
    return tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_save_load_round_trip(toks, kind, tmp_path):
    tok = toks[kind]
    text = CORPUS[0] + " ~zzz~ é"
    path = tok.save(tmp_path / "run")
    assert path == tmp_path / "run" / "tokenizer.json"
    assert not [p for p in path.parent.iterdir() if p.name != "tokenizer.json"]  # no temp files left
    for loaded in (load_tokenizer(path), load_tokenizer(path.parent), get_tokenizer(str(path))):
        assert loaded.kind == kind
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.vocab_size == tok.vocab_size
        assert _specials(loaded) == _specials(tok)
        assert loaded.fingerprint() == tok.fingerprint()
    assert tok.save(tmp_path / "other.json") == tmp_path / "other.json"


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_saved_file_loads_in_hugging_face(toks, kind, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = toks[kind]
    path = tok.save(tmp_path)
    text = CORPUS[0] + " zzz é 😀"
    assert HFTokenizer.from_file(str(path)).encode(text, add_special_tokens=False).ids == tok.encode(text)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path), **tok.special_tokens())
    assert fast(text, add_special_tokens=False)["input_ids"] == tok.encode(text)


def test_fingerprint(toks):
    fps = {k: t.fingerprint() for k, t in toks.items()}
    assert len(set(fps.values())) == 3 and all(len(f) == 64 for f in fps.values())
    assert train_tokenizer("char", CORPUS).fingerprint() == fps["char"]
    assert train_tokenizer("char", CORPUS + ["~"]).fingerprint() != fps["char"]
    assert train_tokenizer("bpe", CORPUS, vocab_size=400).fingerprint() == fps["bpe"]
    assert train_tokenizer("bpe", CORPUS, vocab_size=270).fingerprint() != fps["bpe"]


def test_bad_inputs(tmp_path):
    with pytest.raises(TokenizerError, match="unknown tokenizer kind 'chr'.*did you mean 'char'"):
        get_tokenizer("chr", CORPUS)
    with pytest.raises(TokenizerError, match="vocab.json and merges.txt"):
        get_tokenizer("gpt2", CORPUS)
    with pytest.raises(TokenizerError, match="does not exist"):
        get_tokenizer(str(tmp_path / "nope" / "tokenizer.json"))
    with pytest.raises(TokenizerError, match="neither a tokenizer.json nor vocab.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(TokenizerError, match="vocab.json and merges.txt"):
        gpt2_tokenizer(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match="not a Hugging Face tokenizer.json"):
        load_tokenizer(bad)
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(TokenizerError, match="not a Hugging Face tokenizer.json"):
        load_tokenizer(bad)
    with pytest.raises(TokenizerError, match="unknown tokenizer kind"):
        load_tokenizer(bad, kind="sentencepiece")
    with pytest.raises(TokenizerError, match="empty corpus"):
        train_tokenizer("char", [""])
    with pytest.raises(TokenizerError, match="empty corpus"):
        train_tokenizer("bpe", [])
    with pytest.raises(TokenizerError, match="gpt2 tokenizer is not trained"):
        train_tokenizer("gpt2", CORPUS)


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_tweet_placeholders_live_in_the_tokenizer_file(tmp_path, kind):
    from proselab.tokenizers import train_tokenizer

    texts = ["@bob look at https://t.co/abc123 now, www.example.com/x and @alice_2 too", "plain words\nhere"] * 30
    tok = train_tokenizer(kind, texts, 300, tweet_placeholders=True)
    assert tok.encode("@carol see http://foo.bar/baz?q=1") == tok.encode("@user see http")
    assert tok.encode("mail a@b.c") == tok.encode("mail a@user.c")  # the rule as TweetEval applies it
    loaded = load_tokenizer(tok.save(tmp_path / "tok.json"))
    assert loaded.encode("@dan https://x.y/z") == tok.encode("@user http")
    long = "\n".join(f"@u{i} says https://t.co/{i} line {i}." for i in range(9000))  # longer than one chunk
    assert loaded._chunkable and loaded.encode(long) == loaded.hf.encode(long, add_special_tokens=False).ids
    plain = train_tokenizer(kind, texts, 300)
    assert plain.encode("@bob") != plain.encode("@user")


def test_tweet_placeholders_need_a_tokenizer_proselab_trains():
    from proselab.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="data.tweet_placeholders is for a tokenizer proselab trains"):
        load_config(None, {"data.tweet_placeholders": True, "data.tokenizer": "gpt2"})
