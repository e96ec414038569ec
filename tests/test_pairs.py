import json
import subprocess
import warnings
import zipfile
from pathlib import Path

import pytest

from proselab.cli import main
from proselab.data import builtin, corpora
from proselab.data.builtin import cache_dir, fetch, list_datasets
from proselab.data.examples import load_examples
from proselab.data.files import DatasetError, DatasetWarning
from proselab.data.pairs import load_pairs, write_reverse_task
from proselab.data.sources import is_example_spec, is_pair_spec
from proselab.data.text import load_texts


def _write(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _offline(monkeypatch):
    def run(cmd, **kwargs):
        raise AssertionError(f"no download expected: {cmd}")

    monkeypatch.setattr(builtin.subprocess, "run", run)


# --- files


def test_tsv(tmp_path):
    f = tmp_path / "a.tsv"
    f.write_bytes(b"\xef\xbb\xbf" + "Hallo Welt\thello world\r\n\r\n  \n ein  \t a \nx\u2028y\tz\n".encode())
    assert load_pairs(f) == ([("Hallo Welt", "hello world"), ("ein", "a"), ("x\u2028y", "z")], 0)
    assert load_pairs(str(f)) == load_pairs([f])


def test_jsonl(tmp_path):
    f = _write(tmp_path / "a.jsonl", '{"src": "a b", "tgt": "c", "id": 3}', "", '{"tgt": " y\\n", "src": "x"}')
    assert load_pairs(str(f)) == ([("a b", "c"), ("x", "y")], 0)


def test_directories_and_lists(tmp_path):
    d = tmp_path / "corpus"
    _write(d / "b.tsv", "b\tB")
    _write(d / "sub" / "a.jsonl", '{"src": "a", "tgt": "A"}')
    _write(d / "a.TSV", "a0\tA0")
    _write(d / "notes.txt", "ignored")
    extra = _write(tmp_path / "c.tsv", "c\tC")
    assert [s for s, _ in load_pairs(str(d))[0]] == ["a0", "b", "a"]  # sorted paths, recursively
    assert [s for s, _ in load_pairs([str(extra), str(d)])[0]] == ["c", "a0", "b", "a"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="has no .tsv or .jsonl files"):
        load_pairs(str(tmp_path / "empty"))
    with pytest.raises(DatasetError, match="neither a .tsv nor a .jsonl file"):
        load_pairs(str(d / "notes.txt"))
    with pytest.raises(DatasetError, match="is empty"):
        load_pairs([])


BAD_TSV = [
    ("no tab here", "has no tab between source and target"),
    ("a\tb\tc", "has 2 tabs, so where the source ends is ambiguous"),
    ("a\t\tb\t", "has 3 tabs"),
    ("   \tb", "the source is empty"),
    ("a\t  ", "the target is empty"),
    ("\t", "the source is empty"),
]
BAD_JSONL = [
    ('{"src": "a", "tgt": "b"', "not valid JSON"),
    ('["a", "b"]', "a JSON list is not a pair"),
    ('{"source": "a", "tgt": "b"}', 'has no "src" (keys: "source", "tgt")'),
    ('{"src": "a"}', 'has no "tgt"'),
    ('{"src": 1, "tgt": "b"}', '"src" must be a string, got number'),
    ('{"src": "a", "tgt": null}', '"tgt" must be a string, got null'),
    ('{"src": " ", "tgt": "b"}', '"src" is empty'),
    ('{"src": "a", "tgt": ""}', '"tgt" is empty'),
]


@pytest.mark.parametrize("suffix, line, problem", [(".tsv", *c) for c in BAD_TSV] + [(".jsonl", *c) for c in BAD_JSONL])
def test_bad_line_error_and_skip(tmp_path, suffix, line, problem):
    good = "g\tG" if suffix == ".tsv" else '{"src": "g", "tgt": "G"}'
    f = _write(tmp_path / f"data{suffix}", good, "", line, good)
    with pytest.raises(DatasetError) as e:
        load_pairs(str(f))
    msg = str(e.value)
    assert msg.startswith(f"{f}:3: {problem}") and "expected one" in msg and "data.bad_lines=skip" in msg, msg
    assert "\n" not in msg
    with pytest.warns(DatasetWarning) as record:
        assert load_pairs(str(f), bad_lines="skip") == ([("g", "G"), ("g", "G")], 1)
    assert len(record) == 1 and f"skipped 1 malformed line ({f}:3)" in str(record[0].message)


def test_skip_warns_once_per_file(tmp_path):
    a = _write(tmp_path / "a.tsv", "x", "ok\tOK", "a\tb\tc", "y", "z", "w")
    b = _write(tmp_path / "b.tsv", "ok\tOK", "no tab")
    with pytest.warns(DatasetWarning) as record:
        got, skipped = load_pairs([a, b], bad_lines="skip")
    assert got == [("ok", "OK"), ("ok", "OK")] and skipped == 6
    messages = [str(r.message) for r in record]
    assert len(messages) == 2
    assert f"skipped 5 malformed lines ({a}:1, {a}:3, {a}:4, ...)" in messages[0] and "the first: has no tab" in messages[0]
    assert f"skipped 1 malformed line ({b}:2)" in messages[1]
    with pytest.raises(DatasetError, match="all 1 non-blank lines are malformed"), pytest.warns(DatasetWarning):
        load_pairs(_write(tmp_path / "c.tsv", "bad"), bad_lines="skip")
    with pytest.raises(DatasetError, match="data.bad_lines must be error or skip, got 'ignore'"):
        load_pairs(a, bad_lines="ignore")


def test_no_pairs_and_not_utf8(tmp_path):
    with pytest.raises(DatasetError, match="no sentence pairs.*holds no non-blank lines"):
        load_pairs(_write(tmp_path / "blank.tsv", "", "  "))
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes(b"caf\xe9\tcoffee\n")
    with pytest.raises(DatasetError, match=r"latin1\.tsv: not UTF-8 \(byte 0xe9 at byte offset 3\)"):
        load_pairs(bad)
    with pytest.warns(DatasetWarning, match="replaced 1 bytes"):
        assert load_pairs(bad, encoding_errors="replace")[0] == [("caf\ufffd", "coffee")]


def test_unknown_names_and_paths(tmp_path):
    with pytest.raises(DatasetError, match="'aclsun:test' is neither.*did you mean the built-in dataset 'aclsum:test'"):
        load_pairs("aclsun:test")
    with pytest.raises(DatasetError, match="neither a built-in pairs dataset nor an existing file.*aclsum"):
        load_pairs(str(tmp_path / "missing.tsv"))
    with pytest.raises(DatasetError, match="'aclsum' has no split 'tst'; its splits: train, dev, test"):
        load_pairs("aclsum:tst")
    with pytest.raises(DatasetError, match="'shakespeare' is a text corpus.*not sentence pairs"):
        load_pairs("shakespeare")
    with pytest.raises(DatasetError, match="'chitchat' is a chat dataset.*not sentence pairs"):
        load_pairs(["chitchat:train"])


def test_is_pair_spec(tmp_path):
    tsv = _write(tmp_path / "a.tsv", "a\tb")
    src = _write(tmp_path / "p.jsonl", "", '{"src": "a", "tgt": "b"}')
    sft_file = _write(tmp_path / "s.jsonl", '{"prompt": "a", "response": "b"}')
    broken = _write(tmp_path / "broken.jsonl", '["src"]')
    text = _write(tmp_path / "text.jsonl", '"src and tgt"')
    tsv_dir, jsonl_dir, sft_dir = tmp_path / "t", tmp_path / "j", tmp_path / "s"
    _write(tsv_dir / "sub" / "x.tsv", "a\tb")
    _write(jsonl_dir / "x.jsonl", '{"src": "a", "tgt": "b"}')
    _write(sft_dir / "x.jsonl", '{"messages": []}')
    assert is_pair_spec("aclsum") and is_pair_spec("aclsum:dev") and is_pair_spec(["chitchat-pairs", str(tsv)])
    assert is_pair_spec(tsv) and is_pair_spec(str(src)) and is_pair_spec([str(tsv_dir), str(jsonl_dir)])
    assert not is_pair_spec("chitchat") and not is_pair_spec("shakespeare") and not is_pair_spec([])
    assert not is_pair_spec(str(sft_file)) and not is_pair_spec(str(sft_dir))
    assert not is_pair_spec(str(broken)) and not is_pair_spec(str(text))
    assert not is_pair_spec([str(tsv), str(sft_file)]) and not is_pair_spec(str(tmp_path / "missing.tsv"))


# --- built-in datasets


def _paper(pid: str, intro: list[str]) -> dict:
    aspects = ("challenge", "approach", "outcome")
    sentences = {"abstract": ["We study ( toy ) tasks , mostly ."], "introduction": intro,
                 "conclusion": ["It works ; it 's fine ."]}
    return {
        "id": pid,
        "summary": {a: f"{a} of {pid}" for a in aspects},
        "sentences": sentences,
        "highlights": {a: {s: [0] * len(v) for s, v in sentences.items()} for a in aspects},
        "heuristic_highlights": {a: {s: [0] * len(v) for s, v in sentences.items()} for a in aspects},
        "title": f"Paper {pid}",
    }


def _fake_aclsum_wheel(path: Path) -> Path:
    """Shaped like aclsum-0.1.2's: aclsum/dataset/{train,val,test}.jsonl, one paper per line."""
    splits = {"train": [_paper("P1", ["Intro one .", "Intro two ."]), _paper("P2", ["More ."])],
              "val": [_paper("V1", ["Dev intro ."])], "test": [_paper("T1", ["Test intro ."])]}
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("aclsum/aclsum.py", "")
        whl.writestr("aclsum/dataset/paper_jsons/P1.json", "{}")
        for split, papers in splits.items():
            whl.writestr(f"aclsum/dataset/{split}.jsonl", "\n".join(json.dumps(p) for p in papers))
    return path


def test_aclsum_from_local_wheel(tmp_path, monkeypatch):
    _offline(monkeypatch)
    assert [(r["kind"], r["splits"], r["cached"]) for r in list_datasets() if r["name"] == "aclsum"] == [
        ("pairs", ("train", "dev", "test"), False)
    ]
    path = fetch("aclsum", source=_fake_aclsum_wheel(tmp_path / "aclsum.whl"))
    assert path == cache_dir() / "aclsum" / "train.jsonl"
    assert all((cache_dir() / "aclsum" / f"{s}.jsonl").is_file() for s in ("train", "dev", "test"))
    got, skipped = load_pairs("aclsum")
    source = "We study (toy) tasks, mostly. Intro one. Intro two. It works; it's fine."
    assert skipped == 0 and got[:3] == [
        ("challenge: " + source, "challenge of P1"),
        ("approach: " + source, "approach of P1"),
        ("outcome: " + source, "outcome of P1"),
    ]
    assert len(got) == 6 and load_pairs("aclsum:train") == (got, 0)
    assert [t for _, t in load_pairs("aclsum:dev")[0]] == ["challenge of V1", "approach of V1", "outcome of V1"]
    assert load_pairs("aclsum:test")[0][0] == ("challenge: We study (toy) tasks, mostly. Test intro. It works; it's fine.",
                                               "challenge of T1")
    row = next(r for r in list_datasets() if r["name"] == "aclsum")
    assert row["cached"] and row["size"] == sum((cache_dir() / "aclsum" / f"{s}.jsonl").stat().st_size
                                               for s in ("train", "dev", "test"))


def test_aclsum_source_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora, "ACLSUM_MAX_WORDS", 19)  # abstract 9 tokens + conclusion 7 + one 3-token intro sentence
    fetch("aclsum", source=_fake_aclsum_wheel(tmp_path / "aclsum.whl"))
    assert load_pairs("aclsum")[0][0][0] == "challenge: We study (toy) tasks, mostly. Intro one. It works; it's fine."


def test_aclsum_download(monkeypatch, tmp_path):
    wheel = _fake_aclsum_wheel(tmp_path / "w.whl")
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        assert "aclsum==0.1.2" in cmd and "--no-deps" in cmd and "--only-binary" in cmd
        assert "--ignore-requires-python" in cmd  # aclsum wants Python >= 3.11; nothing is installed
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / "aclsum-0.1.2-py3-none-any.whl").write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(builtin.subprocess, "run", run)
    assert len(load_pairs("aclsum:test")[0]) == 3 and len(load_pairs(["aclsum", "aclsum:dev"])[0]) == 9
    assert len(calls) == 1


def test_builtin_errors(monkeypatch, tmp_path):
    stderr = "ERROR: No matching distribution found for aclsum==0.1.2\n"
    monkeypatch.setattr(builtin.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", stderr))
    with pytest.raises(DatasetError, match="could not download the aclsum dataset.*No matching.*data fetch aclsum --from"):
        load_pairs("aclsum")
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable aclsum-0.1.2-py3-none-any.whl.*delete it and fetch"):
        fetch("aclsum", source=bad)
    with pytest.raises(DatasetError, match="not a readable chitchat_dataset-0.9.0-py3-none-any.whl.*KeyError"):
        fetch("chitchat-pairs", source=_fake_aclsum_wheel(tmp_path / "aclsum.whl"))
    with pytest.raises(DatasetError, match="does not exist"):
        fetch("aclsum", source=tmp_path / "missing.whl")


def _fake_chitchat_wheel(path: Path, n: int = 40) -> Path:
    """Shaped like chitchat_dataset-0.9.0's dataset.json: {uuid: {"messages": [[{text, timestamp, sender}]]}}."""
    def msg(text, sender):
        return {"text": text, "timestamp": "2018-05-02T19:38:00Z", "sender": sender}

    data = {f"conv-{i:02d}": {"prompt": "p", "start": "s", "messages": [
        [msg(f"hi {i}", "A"), msg("there", "A")], [msg(f"yo {i}", "B")], [msg(f"bye {i}", "A")]]} for i in range(n)}
    data["conv-05"]["messages"] = [[msg("alone", "A")]]  # one turn: no pair
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("chitchat_dataset/dataset.json", json.dumps(data))
    return path


def test_chitchat_pairs(tmp_path, monkeypatch):
    _offline(monkeypatch)
    path = fetch("chitchat-pairs", source=_fake_chitchat_wheel(tmp_path / "chitchat.whl"))
    assert path == cache_dir() / "chitchat-pairs" / "train.jsonl"
    train, _ = load_pairs("chitchat-pairs")
    assert train[:2] == [("hi 0\nthere", "yo 0"), ("yo 0", "bye 0")]
    assert len(train) == 2 * 37 and ("alone", "yo 5") not in train  # 38 train conversations, one without a reply
    dev, _ = load_pairs("chitchat-pairs:dev")  # the last 5% of 40 conversations
    assert dev == [("hi 38\nthere", "yo 38"), ("yo 38", "bye 38"), ("hi 39\nthere", "yo 39"), ("yo 39", "bye 39")]


def test_other_loaders_reject_pairs_datasets(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match="'aclsum' is a sentence-pair dataset.*data.format=pairs.*not a text corpus"):
        load_texts("aclsum")
    with pytest.raises(DatasetError, match="'chitchat-pairs' is a sentence-pair dataset.*not a chat dataset"):
        load_examples(["chitchat-pairs"])
    assert not is_example_spec("aclsum")


# --- the reverse task


def test_reverse_task(tmp_path):
    paths = write_reverse_task(tmp_path / "rev", train_size=300, dev_size=20, test_size=10, max_len=8, seed=3)
    assert paths == {s: tmp_path / "rev" / f"{s}.tsv" for s in ("train", "dev", "test")}
    got = {s: load_pairs(p)[0] for s, p in paths.items()}
    assert [len(v) for v in got.values()] == [300, 20, 10]
    lengths = set()
    for src, tgt in got["train"]:
        tokens = src.split(" ")
        assert tgt.split(" ") == tokens[::-1] and set(tokens) <= set("0123456789abcdefghijklmnopqrstuvwxyz")
        lengths.add(len(tokens))
    assert lengths == set(range(1, 9))
    for line in paths["train"].read_text().splitlines():
        assert line.count("\t") == 1 and "  " not in line
    again = write_reverse_task(tmp_path / "again", train_size=300, dev_size=20, test_size=10, max_len=8, seed=3)
    assert all(again[s].read_bytes() == paths[s].read_bytes() for s in paths)
    other = write_reverse_task(tmp_path / "other", train_size=50, dev_size=20, test_size=10, max_len=8, seed=4)
    assert other["dev"].read_bytes() != paths["dev"].read_bytes()
    bigger = write_reverse_task(tmp_path / "bigger", train_size=500, dev_size=20, test_size=10, max_len=8, seed=3)
    assert bigger["dev"].read_bytes() == paths["dev"].read_bytes()  # dev does not depend on train_size
    fixed = write_reverse_task(tmp_path / "fixed", train_size=5, dev_size=1, test_size=1, min_len=4, max_len=4)
    assert {len(s.split()) for s, _ in load_pairs(fixed["train"])[0]} == {4}


@pytest.mark.parametrize("kwargs, message", [
    ({"train_size": 0}, "train_size must be a whole number, at least 1, got 0"),
    ({"dev_size": 1.5}, "dev_size must be a whole number"),
    ({"test_size": True}, "test_size must be"),
    ({"min_len": 0}, "min_len must be a whole number, at least 1"),
    ({"min_len": 5, "max_len": 4}, "need 1 <= min_len <= max_len, got min_len=5 and max_len=4"),
])
def test_reverse_task_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        write_reverse_task(tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())


def test_cli_data_reverse_and_list(tmp_path, capsys):
    out = tmp_path / "rev"
    assert main(["data", "reverse", str(out), "--train-size", "30", "--dev-size", "5", "--test-size", "5",
                 "--max-len", "6", "--seed", "7"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"{s}: {out / f'{s}.tsv'}" for s in ("train", "dev", "test")]
    assert out.joinpath("train.tsv").read_bytes() == write_reverse_task(
        tmp_path / "api", train_size=30, dev_size=5, test_size=5, max_len=6, seed=7)["train"].read_bytes()
    assert main(["data", "reverse", str(tmp_path / "x"), "--train-size", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "proselab: error: train_size must be a whole number, at least 1, got 0"
    assert main(["data", "list"]) == 0
    listing = capsys.readouterr().out
    for name, splits in (("aclsum", "train/dev/test"), ("chitchat-pairs", "train/dev")):
        line = next(ln for ln in listing.splitlines() if ln.startswith(name + " "))
        assert " pairs " in line and splits in line and " no " in line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["data", "fetch", "aclsum", "--from", str(_fake_aclsum_wheel(tmp_path / "a.whl"))]) == 0
    assert capsys.readouterr().out.strip() == f"aclsum: {cache_dir() / 'aclsum' / 'train.jsonl'}"
