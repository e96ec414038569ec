"""Hugging Face model ids where a run directory goes (`proselab.load("gpt2")`, `--train.init_from=gpt2`),
resolved through a Hugging Face cache laid out here; offline (HF_HUB_OFFLINE=1), sockets refused:
no test touches the network."""

import hashlib
import shutil
import socket

import pytest
import torch

import proselab
from proselab.checkpoint import RunError
from proselab.cli import main
from proselab.interop import hub
from proselab.runs import resolve_run
from proselab.training import resolve_config

from conftest import SHARED, tiny_overrides

transformers = pytest.importorskip("transformers")
huggingface_hub = pytest.importorskip("huggingface_hub")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """An empty Hugging Face cache of this test's own, offline mode, and no socket can connect."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return cache


def _cache_model(cache, repo_id, files, commit=COMMIT, ref="main"):
    """Lay out ``files`` ({name: source path}) as huggingface_hub caches a download: content-addressed
    blobs, a snapshot of symlinks to them per commit, and refs/<branch> naming the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for name, src in files.items():
        data = src.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(blob)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def gpt2_cached(tmp_path, offline):
    """A tiny random GPT-2 with GPT-2's own tokenizer files, in the cache as the id ``gpt2``."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=2)  # GPT-2's 50257 tokens
    src = tmp_path / "gpt2-src"
    transformers.GPT2LMHeadModel(cfg).save_pretrained(src)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(SHARED / "gpt2-tokenizer" / name, src / name)
    (src / "README.md").write_text("not read")
    files = {p.name: p for p in src.iterdir()}
    return _cache_model(offline, "gpt2", files)


def test_gpt2_id_loads_from_the_cache_and_generates(gpt2_cached):
    gen = proselab.load("gpt2", device="cpu")
    assert gen.tokenizer.kind == "gpt2" and gen.config.model.vocab_size == 50257
    text = gen.generate("Hello, my name is", max_new_tokens=5, do_sample=False)
    assert isinstance(text, str) and text
    assert text == proselab.load(gpt2_cached, device="cpu").generate("Hello, my name is", max_new_tokens=5,
                                                                       do_sample=False)
    assert resolve_run("gpt2") == resolve_run("gpt2@main") == resolve_run(f"gpt2@{COMMIT}") == gpt2_cached


def test_init_from_a_model_id_resolves_and_fine_tunes(gpt2_cached, corpus, tmp_path):
    overrides = tiny_overrides(corpus, tmp_path / "run", **{"train.init_from": "gpt2", "data.tokenizer": "gpt2",
                                                             "train.max_iters": 2, "train.eval_interval": 2})
    cfg = resolve_config(None, overrides)
    assert cfg.train.init_from == str(gpt2_cached) and cfg.data.tokenizer == str(gpt2_cached)
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.vocab_size) == (2, 32, 50257)
    result = proselab.train(overrides=overrides)
    assert proselab.load(result.run_dir, device="cpu").tokenizer.kind == "gpt2"


def test_a_tokenizer_or_teacher_named_by_id(gpt2_cached, corpus, tmp_path):
    cfg = resolve_config(None, tiny_overrides(corpus, tmp_path / "run", **{"data.tokenizer": "gpt2"}))
    assert cfg.data.tokenizer == str(gpt2_cached) and cfg.train.init_from == "scratch"
    cfg = resolve_config(None, tiny_overrides(corpus, tmp_path / "run", **{"train.distill_teacher": "gpt2"}))
    assert cfg.train.distill_teacher == str(gpt2_cached)
    assert resolve_config(None, tiny_overrides(corpus, tmp_path / "run")).data.tokenizer == "char"


def test_an_uncached_id_offline_is_a_one_line_error(offline, capsys):
    with pytest.raises(RunError, match="HF_HUB_OFFLINE=1") as err:
        proselab.load("someone/not-cached", device="cpu")
    message = str(err.value)
    assert "\n" not in message and "HF_HUB_OFFLINE=0" in message and "pass its directory" in message
    assert str(offline) in message  # where it looked
    assert main(["generate", "someone/not-cached", "--prompt", "hi"]) == 2
    err_out = capsys.readouterr().err.strip()
    assert "someone/not-cached" in err_out and "HF_HUB_OFFLINE" in err_out and len(err_out.splitlines()) == 1
    assert main(["train", "--train.init_from=gpt2", "--data.dataset=x.txt", "--train.out_dir=out"]) == 2
    assert "'gpt2'" in capsys.readouterr().err


def test_a_revision_not_cached_offline(gpt2_cached):
    with pytest.raises(RunError, match="gpt2@v9.*HF_HUB_OFFLINE=1"):
        resolve_run("gpt2@v9")


def test_a_local_path_always_wins(gpt2_cached, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gpt2").mkdir()  # a local directory named as the model id
    assert resolve_run("gpt2") == hub.resolve("gpt2") and resolve_run("gpt2").resolve() == (tmp_path / "gpt2")
    (tmp_path / "runs").mkdir()
    assert not hub.is_hub_id("runs/mistyped")  # under an existing directory: a path, not an id
    with pytest.raises(RunError) as err:
        proselab.load("runs/mistyped", device="cpu")
    assert "Hugging Face" not in str(err.value)


@pytest.mark.parametrize("spec,is_id", [
    ("gpt2", True), ("Helsinki-NLP/opus-mt-en-es", True), ("google/flan-t5-small@main", True),
    ("org/name@refs/pr/1", True), ("a/b/c", False), ("/abs/path", False), ("./rel", False), ("~/run", False),
    ("x.json", False), ("org--name", False), ("org/../x", False), ("", False), ("with space", False),
])
def test_what_reads_as_a_model_id(spec, is_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub.is_hub_id(spec) is is_id


def test_only_the_files_proselab_reads_are_downloaded(monkeypatch, tmp_path):
    """Online, the repository's listing decides: safetensors weights, else the pickle; never the rest."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    asked = {}

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        asked.update(repo_id=repo_id, revision=revision, patterns=allow_patterns)
        return str(tmp_path)

    listing = ["config.json", "pytorch_model.bin", "tf_model.h5", "rust_model.ot", "source.spm", "vocab.json"]
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo_id, revision=None: listing)
    assert hub.resolve("Helsinki-NLP/opus-mt-en-es@v1") == tmp_path
    assert asked["repo_id"] == "Helsinki-NLP/opus-mt-en-es" and asked["revision"] == "v1"
    assert "pytorch_model.bin" in asked["patterns"] and "source.spm" in asked["patterns"]
    assert not any(p.endswith((".h5", ".ot", ".msgpack")) for p in asked["patterns"])
    listing.append("model.safetensors")
    hub.resolve("Helsinki-NLP/opus-mt-en-es")
    assert "pytorch_model.bin" not in asked["patterns"] and "model.safetensors" in asked["patterns"]


def _http_error(cls, status):
    import httpx2

    response = httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/x"))
    return cls("not found", response=response)


def test_unknown_ids_and_revisions_online(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo_id, revision=None: [])
    errors = huggingface_hub.errors
    for error, expected in ((_http_error(errors.RepositoryNotFoundError, 404), "neither a local directory nor a model"),
                            (_http_error(errors.RevisionNotFoundError, 404), "has no revision 'v9'"),
                            (errors.LocalEntryNotFoundError("no connection"), "cannot be reached"),
                            (errors.IncompleteSnapshotError("2 files missing", snapshot_path="x"), "incomplete")):
        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
        with pytest.raises(RunError, match=expected) as err:
            hub.resolve("someone/model@v9")
        assert "\n" not in str(err.value)
