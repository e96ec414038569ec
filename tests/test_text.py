import random
from pathlib import Path

import pytest

from proselab.decoding.text import TextTracker, final_text
from proselab.tokenizers import gpt2_tokenizer, train_tokenizer

GPT2_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpt2-tokenizer"
FFFD = "\ufffd"

ACCENTS = "éèàüöñçßøÅ"
EMOJI = ["😀", "🚀", "👍🏽", "👩\u200d👩\u200d👧", "🇫🇷", "❤️"]


def random_text(rng: random.Random, n: int) -> str:
    """ASCII words with accents, CJK and emoji mixed in, and now and then a genuine U+FFFD."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.45:
            out.append(rng.choice("abcdefghij klmnop\n.,!"))
        elif r < 0.6:
            out.append(rng.choice(ACCENTS))
        elif r < 0.8:
            out.append(chr(rng.randrange(0x4E00, 0x4E40)))
        elif r < 0.98:
            out.append(rng.choice(EMOJI))
        else:
            out.append(FFFD)
    return "".join(out)


def stream(tok, ids, stop=()) -> tuple[list[str], TextTracker]:
    """Every delta of a TextTracker fed ``ids``: one per push (up to a stop), then finish's."""
    tracker = TextTracker(tok, stop)
    deltas = []
    for i in ids:
        deltas.append(tracker.push(i))
        if tracker.stopped:
            break
    deltas.append(tracker.finish())
    assert "".join(deltas) == tracker.text
    return deltas, tracker


@pytest.fixture(scope="module")
def gpt2():
    if not GPT2_DIR.is_dir():
        pytest.skip("shared/data/gpt2-tokenizer not available")
    return gpt2_tokenizer(GPT2_DIR)


@pytest.fixture(scope="module")
def bpe():
    rng = random.Random(1)
    return train_tokenizer("bpe", [random_text(rng, 200) for _ in range(200)], vocab_size=600)


@pytest.fixture(scope="module")
def chars():
    return train_tokenizer("char", ["abc xyz\n\nAB!é€😀"])


def test_gpt2_split_characters_come_out_whole(gpt2):
    text = "Emoji 😀🚀 and 中文字符, 日本語 👩‍👩‍👧 done"
    ids = gpt2.encode(text)
    assert any(FFFD in gpt2.decode([i]) for i in ids), "the test needs characters split across tokens"
    deltas, tracker = stream(gpt2, ids)
    assert all(FFFD not in d for d in deltas)
    assert "".join(deltas) == gpt2.decode(ids) == text
    assert deltas[-1] == ""  # the last token completed the text: nothing left for finish
    assert tracker.tokens == ids and not tracker.stopped


def test_bpe_random_unicode_matches_final_text(bpe):
    rng = random.Random(0)
    stopped = 0
    for _ in range(300):
        text = random_text(rng, rng.randrange(1, 40))
        ids = bpe.encode(text)
        r = rng.random()
        if r < 0.4:
            stop = ()
        elif r < 0.9:  # a piece of the text, so it is found, often across tokens
            a = rng.randrange(len(text))
            stop = [text[a: a + rng.randrange(1, 5)], "never there"]
        else:
            stop = ["\n\n\n", "..."]
        deltas, tracker = stream(bpe, ids, stop)
        assert "".join(deltas) == final_text(bpe, ids, stop)
        if FFFD not in text:
            assert all(FFFD not in d for d in deltas), (text, deltas)
        stopped += tracker.stopped
    assert stopped > 100


def test_bpe_arbitrary_token_sequences_match_final_text(bpe):
    """A model may emit bytes that never make a character: the U+FFFDs must match decode's."""
    rng = random.Random(2)
    partial = [i for i in range(bpe.vocab_size) if FFFD in bpe.decode([i])]  # pieces of characters
    for _ in range(200):
        ids = [rng.choice(partial) if rng.random() < 0.9 else rng.randrange(bpe.vocab_size)
               for _ in range(rng.randrange(1, 80))]
        stop = [FFFD + FFFD] if rng.random() < 0.3 else ()
        deltas, _ = stream(bpe, ids, stop)
        assert "".join(deltas) == final_text(bpe, ids, stop)


def test_starting_inside_a_character(gpt2):
    ids = gpt2.encode("😀😀 ok")
    deltas, _ = stream(gpt2, ids[1:])  # beam search re-reads a sequence's last tokens like this
    assert "".join(deltas) == gpt2.decode(ids[1:])


def test_genuine_replacement_character_is_not_held_for_ever(gpt2):
    tracker = TextTracker(gpt2)
    for i in gpt2.encode("a\ufffdb"):
        tracker.push(i)
    assert tracker.text == "a\ufffdb"  # out before finish, once something follows it
    tracker = TextTracker(gpt2)
    pushed = "".join(tracker.push(i) for i in gpt2.encode("end\ufffd"))
    assert pushed == "end"
    assert tracker.finish() == FFFD


class CountingTokenizer:
    """Wraps a tokenizer and records the longest slice it was asked to decode."""

    def __init__(self, tok):
        self.tok, self.longest = tok, 0

    def decode(self, ids):
        self.longest = max(self.longest, len(ids))
        return self.tok.decode(ids)


@pytest.mark.parametrize("text", ["The 😀 quick brown 中文 fox. " * 60, FFFD * 400, "😀" * 400])
def test_decodes_only_a_short_window(gpt2, text):
    counting = CountingTokenizer(gpt2)
    ids = gpt2.encode(text)
    deltas, _ = stream(counting, ids)
    assert "".join(deltas) == text
    assert counting.longest <= 24, f"decoded {counting.longest} of {len(ids)} tokens at once"


def test_char_and_word_round_trips():
    corpus = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
    for kind in ("char", "word"):
        tok = train_tokenizer(kind, [corpus], vocab_size=200)
        ids = tok.encode(corpus)
        deltas, tracker = stream(tok, ids)
        assert "".join(deltas) == corpus
        assert sum(1 for d in deltas if d) >= len(ids) - 1  # no pointless holding back
        deltas, tracker = stream(tok, ids, ["speak."])
        cut = "First Citizen:\nBefore we proceed any further, hear me "
        assert "".join(deltas) == final_text(tok, ids, ["speak."]) == cut
        assert tracker.stopped


def test_stop_spanning_two_tokens(gpt2):
    ids = gpt2.encode("Hello world, again")  # Hello | world | , | again
    tracker = TextTracker(gpt2, ["o w"])
    assert tracker.push(ids[0]) == "Hell"  # "o" may start "o w"
    assert not tracker.stopped
    assert tracker.push(ids[1]) == ""
    assert tracker.stopped and tracker.text == "Hell"
    assert tracker.tokens == ids[:2]


def test_stop_at_the_first_token(gpt2):
    ids = gpt2.encode("Hello world")
    tracker = TextTracker(gpt2, ["Hello"])
    assert tracker.push(ids[0]) == ""
    assert tracker.stopped and tracker.text == ""
    assert tracker.finish() == ""
    assert final_text(gpt2, ids, ["Hello"]) == ""


def test_earliest_stop_wins_not_the_first_listed(gpt2):
    ids = gpt2.encode("Hello world")
    stop = ["world", "o w"]  # both complete with the token " world"; "o w" starts first
    deltas, tracker = stream(gpt2, ids, stop)
    assert "".join(deltas) == final_text(gpt2, ids, stop) == "Hell"
    assert tracker.stopped


def test_held_suffix_that_is_not_a_stop_is_released(chars):
    tracker = TextTracker(chars, "\n\nB")
    deltas = [tracker.push(i) for i in chars.encode("x\n\nA\n")]
    assert deltas == ["x", "", "", "\n\nA", ""]
    assert tracker.finish() == "\n"
    assert tracker.text == "x\n\nA\n" and not tracker.stopped


def test_stop_with_a_split_multibyte_character(gpt2):
    text = "Say 😀 then go"
    ids = gpt2.encode(text)
    assert any(FFFD in gpt2.decode([i]) for i in ids), "the test needs the emoji split across tokens"
    deltas, tracker = stream(gpt2, ids, ["😀 t"])
    assert "".join(deltas) == final_text(gpt2, ids, ["😀 t"]) == "Say "
    assert tracker.stopped and all(FFFD not in d for d in deltas)
    deltas, tracker = stream(gpt2, ids, ["😀 x"])  # the emoji is held back, then released
    assert "".join(deltas) == text and not tracker.stopped


def test_finish_is_idempotent_and_push_after_the_end_fails(chars):
    tracker = TextTracker(chars, ["!!"])
    for i in chars.encode("abc!"):
        tracker.push(i)
    assert tracker.text == "abc"
    assert tracker.finish() == "!"
    assert tracker.finish() == ""
    assert tracker.text == "abc!"
    with pytest.raises(AssertionError):
        tracker.push(chars.encode("a")[0])

    tracker = TextTracker(chars, ["c x"])
    for i in chars.encode("abc x"):
        if tracker.stopped:
            break
        tracker.push(i)
    assert tracker.stopped and tracker.text == "ab"
    with pytest.raises(AssertionError):
        tracker.push(chars.encode("a")[0])


def test_empty_stop_string_is_rejected(chars):
    with pytest.raises(ValueError, match="non-empty"):
        TextTracker(chars, ["ok", ""])
