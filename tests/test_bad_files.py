"""The bad files test_corrupt_runs.py leaves out: a run's damaged or oversized tokenizers, a
config.json too large for the machine, a Hugging Face directory with a hostile or truncated
pytorch_model.bin, and binary input to `proselab chat`. Each is one RunError naming the file
(one line and exit status 2 on the command line), found before any slow work."""

import io
import json
import os
import pickle
import shutil
import sys
import warnings

import pytest
import torch
from conftest import tiny_overrides
from test_seq2seq import s2s_overrides

import proselab
from proselab import runs
from proselab.checkpoint import RunError
from proselab.cli import main
from proselab.config import checks
from proselab.runs import export_hf
from proselab.training import train


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny GPT run, its Hugging Face export, and a seq2seq run with its own source tokenizer."""
    tmp = tmp_path_factory.mktemp("bad_files")
    corpus = tmp / "corpus.txt"
    corpus.write_text("ROMEO: what light through yonder window breaks?\n" * 100, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROSELAB_CACHE", str(tmp / "cache"))
        train(None, tiny_overrides(corpus, tmp / "gpt", **{"train.max_iters": 2, "train.eval_interval": 2}))
        export_hf(tmp / "gpt", tmp / "hf")
        (tmp / "s2s").mkdir()
        mp.setattr(warnings, "showwarning", lambda *a, **k: None)  # s2s_overrides' sizes for the other arch
        train(None, s2s_overrides(tmp / "s2s", **{"data.joint_vocab": False, "train.max_iters": 2,
                                                  "train.eval_bleu_samples": 0}))
    return {"gpt": tmp / "gpt", "hf": tmp / "hf", "s2s": tmp / "s2s" / "run"}


class Hostile:
    def __reduce__(self):
        return (os.system, ("touch HACKED",))


def _json(path, **changes):
    data = json.loads(path.read_text())
    section = data["model"] if "model" in data else data  # a run's config.json, or a Hugging Face one
    section.update(changes)
    path.write_text(json.dumps(data))


def _grow_tokenizer(path, n):
    """``n`` more entries in the tokenizer's vocabulary, ids after the last."""
    spec = json.loads(path.read_text())
    vocab = spec["model"]["vocab"]
    start = max(vocab.values()) + 1
    vocab.update({f"extra{i}": start + i for i in range(n)})
    path.write_text(json.dumps(spec))


def _id_past_the_embedding(path):
    spec = json.loads(path.read_text())
    first = next(iter(spec["model"]["vocab"]))
    spec["model"]["vocab"][first] = 999_999  # as many tokens as before, one id far past them
    path.write_text(json.dumps(spec))


def _weights_as_pickle(hf, obj=None):
    """The export's weights as pytorch_model.bin (``obj`` instead of the state dict, if given)."""
    from safetensors.torch import load_file

    state = load_file(hf / "model.safetensors")
    (hf / "model.safetensors").unlink()
    torch.save(state if obj is None else obj, hf / "pytorch_model.bin")


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CASES = {
    # a run directory
    "tokenizer.json is not JSON": ("gpt", lambda d: (d / "tokenizer.json").write_bytes(b"\x00\xff{not json"),
                                   "tokenizer.json' is not a Hugging Face tokenizer.json: not UTF-8 JSON"),
    "tokenizer.json is JSON but no tokenizer": ("gpt", lambda d: (d / "tokenizer.json").write_text('{"a": 1}'),
                                                "tokenizer.json' is not a Hugging Face tokenizer.json: it has no "
                                                "'model' section; restore the tokenizer.json the run was trained with"),
    "a tokenizer with an id past the embedding": ("gpt", lambda d: _id_past_the_embedding(d / "tokenizer.json"),
                                                  "tokenizer.json has 1,000,000 tokens but the model of config.json"),
    "a config.json too large for any machine": ("gpt", lambda d: _json(d / "config.json", vocab_size=10**12),
                                                "config.json: model.vocab_size=1000000000000 and model.n_embd=32 make "
                                                "a model of at least 32,000.0 billion parameters"),
    "a damaged src_tokenizer.json": ("s2s", lambda d: _truncate(d / "src_tokenizer.json"),
                                     "src_tokenizer.json' is not a Hugging Face tokenizer.json: not UTF-8 JSON"),
    "a src_tokenizer.json larger than the encoder's vocabulary": (
        "s2s", lambda d: _grow_tokenizer(d / "src_tokenizer.json", 10),
        "src_tokenizer.json has [0-9]+ tokens but the model of config.json"),
    # a Hugging Face directory
    "a hostile pytorch_model.bin": ("hf", lambda d: (d / "model.safetensors").unlink()
                                    or (d / "pytorch_model.bin").write_bytes(pickle.dumps(Hostile())),
                                    "pytorch_model.bin: not plain tensor weights: a damaged file, or a pickle of "
                                    "other objects, which proselab never loads"),
    "a truncated pytorch_model.bin": ("hf", lambda d: _weights_as_pickle(d) or _truncate(d / "pytorch_model.bin"),
                                      "pytorch_model.bin: not readable PyTorch weights .*truncated or corrupt"),
    "a pytorch_model.bin of no state dict": ("hf", lambda d: _weights_as_pickle(d, [torch.zeros(2)]),
                                             "pytorch_model.bin: not a state dict"),
    "a truncated model.safetensors": ("hf", lambda d: _truncate(d / "model.safetensors"),
                                      "model.safetensors: not readable safetensors weights"),
    "a broken shard index": ("hf", lambda d: (d / "model.safetensors").unlink()
                             or (d / "model.safetensors.index.json").write_text("{oops"),
                             "model.safetensors.index.json: not a safetensors index"),
    "a size that is no number": ("hf", lambda d: _json(d / "config.json", n_embd="big"),
                                 "/config.json: model.n_embd must be int, got 'big'"),
    "a generation_config.json of bad values": ("hf", lambda d: (d / "generation_config.json").write_text(
        '{"max_new_tokens": "many"}'), "generation_config.json: generation.max_new_tokens must be an integer >= 0"),
    "a Hugging Face config.json too large for any machine": ("hf", lambda d: _json(d / "config.json", n_embd=10**7),
                                                             "config.json: model.n_layer=2 and model.n_embd=10000000 "
                                                             "make a model of at least 2,400,000.6 billion parameters"),
    "a Hugging Face tokenizer past the embedding": ("hf", lambda d: _grow_tokenizer(d / "tokenizer.json", 5),
                                                    "the tokenizer has 31 tokens but the model only 26"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_file_is_one_error_naming_it(made, tmp_path, monkeypatch, capsys, case):
    kind, damage, match = CASES[case]
    run = tmp_path / kind
    shutil.copytree(made[kind], run)
    monkeypatch.chdir(tmp_path)
    damage(run)
    with pytest.raises(RunError, match=match):
        proselab.load(run)
    assert not (tmp_path / "HACKED").exists()  # weights_only: the pickle's payload never ran
    args = ["--prompt", "a b"] if kind == "s2s" else []
    assert main(["generate", str(run), "--max-new-tokens", "2", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("proselab: error:"), err


def test_a_tokenizer_of_millions_of_tokens_is_refused_before_it_is_built(made, tmp_path, monkeypatch, capsys):
    """2,000,026 tokens for a 26-token model: refused from the JSON; building that tokenizer
    (the old check came after it) takes many seconds."""
    run = tmp_path / "run"
    shutil.copytree(made["gpt"], run)
    _grow_tokenizer(run / "tokenizer.json", 2_000_000)
    built = []
    real_load = runs.load_tokenizer
    monkeypatch.setattr(runs, "load_tokenizer", lambda path, *a, **k: built.append(path) or real_load(path, *a, **k))
    with pytest.raises(RunError, match="tokenizer.json has 2,000,026 tokens but the model of config.json 26: the "
                                       "files are not from the same run"):
        proselab.load(run)
    assert built == []
    assert main(["generate", str(run), "--max-new-tokens", "2"]) == 2
    assert capsys.readouterr().err.startswith("proselab: error: ")


def test_a_config_json_too_large_for_this_machine_is_refused_before_the_model_is_built(made, tmp_path, monkeypatch):
    """n_layer=100000 (1.2 billion parameters at n_embd=32) used to build for minutes, then die."""
    monkeypatch.setattr(checks, "available_memory", lambda: 1 << 30)
    for kind, name in (("gpt", "n_layer"), ("hf", "n_layer")):
        run = tmp_path / kind
        shutil.copytree(made[kind], run)
        _json(run / "config.json", **{name: 100_000})
        with pytest.raises(RunError, match="config.json: model.n_layer=100000 and model.n_embd=32 make a model of "
                                           "at least 1.2 billion parameters, 4.9 GB of float32 weights: more than "
                                           "the 1.1 GB of memory available on this machine"):
            proselab.load(run)


@pytest.mark.parametrize("errors", ["strict", "surrogateescape"])
def test_chat_skips_a_message_that_is_not_utf8(made, monkeypatch, capsys, errors):
    """Binary stdin gave a TypeError from the tokenizer (C.UTF-8 locales read it with
    surrogateescape) or ended the chat with a decode error (strict): the line is skipped, said
    so, and the chat goes on. ``errors`` is how the terminal's stdin decodes."""
    data = b"\xff\xfe\x00binary\x89PNG\na b\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors=errors))
    assert main(["chat", str(made["s2s"]), "--greedy", "--max-new-tokens", "3"]) == 0
    out, err = capsys.readouterr()
    assert "(not sent: the message is not UTF-8 text; set the terminal or the input to UTF-8)" in err
    assert err.count("not sent") == 1 and "Traceback" not in err
    assert out.startswith("> > ") and out.count("\n") == 1  # two prompts, one reply: to "a b"


def test_a_prompt_that_is_not_utf8_is_one_line(made, capsys):
    """argv holds bytes that are not UTF-8 as lone surrogates: a TypeError from the tokenizer before."""
    assert main(["generate", str(made["gpt"]), "--prompt", "RO\udcffMEO", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("proselab: error: the text is not valid Unicode: it holds a lone surrogate (U+DCFF at character "
                   "2), as bytes that are not UTF-8 become; give UTF-8 text")
