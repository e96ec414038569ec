"""A run directory with a damaged or hostile file is one RunError naming the file and what to
do (one line and exit status 2 on the command line), never a traceback from a library, and a
hostile pickle runs no code."""

import json
import os
import pickle
import shutil
import struct

import pytest
import torch
from conftest import tiny_overrides

import proselab
from proselab.checkpoint import RunError
from proselab.cli import main
from proselab.training import train


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corrupt")
    corpus = tmp / "corpus.txt"
    corpus.write_text("ROMEO: what light through yonder window breaks?\n" * 100, encoding="utf-8")
    train(None, tiny_overrides(corpus, tmp / "good", **{"train.max_iters": 3, "train.eval_interval": 2}))
    return tmp / "good"


class Hostile:
    def __reduce__(self):
        return (os.system, ("touch HACKED",))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _huge_header(path):
    path.write_bytes(struct.pack("<Q", 1 << 62) + b"{}")


def _symlink_to_passwd(path):
    path.unlink()
    path.symlink_to("/etc/passwd")


def _config(run, **model):
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"].update(model)
    (run / "config.json").write_text(json.dumps(cfg))


LOAD_CASES = {
    "truncated weights": (lambda run: _truncate(run / "model.safetensors"), "model.safetensors: not readable"),
    "empty weights": (lambda run: (run / "model.safetensors").write_bytes(b""), "model.safetensors: not readable"),
    "a header of 2^62 bytes": (lambda run: _huge_header(run / "model.safetensors"), "model.safetensors: not readable"),
    "weights linked to /etc/passwd": (lambda run: _symlink_to_passwd(run / "model.safetensors"), "not readable"),
    "a config of another size": (lambda run: _config(run, n_embd=64), "weights do not fit the model of config.json"),
    "a tokenizer larger than the model": (lambda run: _config(run, vocab_size=5), "tokens but the model of config"),
}
RESUME_CASES = {
    "truncated trainer state": (lambda run: _truncate(run / "trainer_state.pt"), "not a readable trainer state"),
    "a trainer state without an optimizer": (lambda run: torch.save({"step": 5}, run / "trainer_state.pt"),
                                             "not a proselab trainer state \\(no optimizer"),
    "a hostile pickle": (lambda run: (run / "trainer_state.pt").write_bytes(pickle.dumps(Hostile())),
                         "not a readable trainer state"),
    "empty last weights": (lambda run: (run / "last.safetensors").write_bytes(b""), "last.safetensors: not readable"),
}


def _copy(good_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    return run


@pytest.mark.parametrize("case", list(LOAD_CASES))
def test_a_damaged_run_is_one_error_naming_the_file(good_run, tmp_path, case, capsys):
    run = _copy(good_run, tmp_path)
    damage, match = LOAD_CASES[case]
    damage(run)
    with pytest.raises(RunError, match=match):
        proselab.load(run)
    assert main(["generate", str(run), "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("proselab: error:"), err


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_a_damaged_checkpoint_refuses_to_resume_in_one_line(good_run, tmp_path, case, monkeypatch):
    run = _copy(good_run, tmp_path)
    monkeypatch.chdir(tmp_path)
    damage, match = RESUME_CASES[case]
    damage(run)
    with pytest.raises(RunError, match=match):
        train(None, {"train.init_from": "resume", "train.out_dir": str(run), "train.max_iters": 5})
    assert not (tmp_path / "HACKED").exists()  # the pickle's payload never ran
    assert proselab.load(run).generate("ROMEO", max_new_tokens=2) is not None  # the refusal damaged nothing
