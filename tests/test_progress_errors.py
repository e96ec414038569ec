"""The first hour of a new user: progress for every step that takes seconds, and errors and
warnings that say what is really wrong (options the model ignores, a checkpoint of another
family, a run whose outputs are empty, one report under torchrun)."""

import re
import time
import warnings

import numpy as np
import pytest
from conftest import tiny_overrides

import proselab
from proselab import evaluation
from proselab.cli import main
from proselab.config import ConfigError, DataConfig, explicit_keys, list_presets, load_config
from proselab.config.checks import unused_options
from proselab.data import builtin, progress
from proselab.data.lm import count_eval_batches, eval_batches, prepare_text
from proselab.data.seq2seq import prepare_pairs
from proselab.runs import export_hf, fine_tune_config
from proselab.tasks import build_task
from proselab.training import train


@pytest.fixture
def shown(monkeypatch):
    """Every bar draws at once (they wait a second by default)."""
    monkeypatch.setattr(progress, "DELAY", 0.0)
    monkeypatch.setattr(progress, "TICK", 0.05)


def write_pairs(path, n=60):
    path.write_text("".join(f"a b {i % 7} c\tc {i % 7} b a\n" for i in range(n)), encoding="utf-8")
    return path


def s2s(tmp_path, **extra):
    pairs = write_pairs(tmp_path / "pairs.tsv")
    return {"data.dataset": str(pairs), "data.val_dataset": str(pairs), "data.tokenizer": "word",
            "model.family": "seq2seq", "model.n_embd": 16, "model.hidden_size": 16, "model.num_layers": 1,
            "train.out_dir": str(tmp_path / "s2s"), "train.batch_size": 8, "train.max_iters": 2,
            "train.eval_interval": 2, "train.eval_iters": 1, "train.eval_bleu_samples": 0, "train.progress": False,
            "train.dtype": "float32", "train.device": "cpu", **extra}


def gpt_run(tmp_path, corpus, name="gpt", **extra):
    train(None, tiny_overrides(corpus, tmp_path / name, **{"train.max_iters": 2, "train.eval_interval": 2, **extra}))
    return tmp_path / name


# ---- progress ------------------------------------------------------------------------------


def test_data_preparation_says_what_it_is_doing(shown, tmp_path, corpus, capsys):
    prepare_pairs(DataConfig(dataset=str(write_pairs(tmp_path / "p.tsv")), tokenizer="bpe", vocab_size=300))
    err = capsys.readouterr().err
    assert "training a bpe tokenizer of 300 tokens on" in err and "tokenizing train pairs" in err
    prepare_text(DataConfig(dataset=str(corpus), tokenizer="char"), block_size=8)
    err = capsys.readouterr().err
    assert "training a char tokenizer on 40.0k chars" in err and f"tokenizing {corpus}" in err


def test_a_step_shorter_than_the_delay_draws_nothing(tmp_path, monkeypatch, capsys):
    prepare_pairs(DataConfig(dataset=str(write_pairs(tmp_path / "p.tsv")), tokenizer="word"))
    assert capsys.readouterr().err == ""  # well under a second: no bar
    monkeypatch.setattr(progress, "DELAY", 0.2)
    with progress.working("waiting for the slow step"):
        time.sleep(0.5)
    assert "waiting for the slow step: 00:00" in capsys.readouterr().err  # its line, with its clock


def test_training_shows_preparation_and_the_final_pass_unless_progress_is_off(shown, tmp_path, corpus, monkeypatch,
                                                                              capsys):
    monkeypatch.setenv("PROSELAB_CACHE", str(tmp_path / "cache-quiet"))
    gpt_run(tmp_path, corpus, "quiet", **{"train.progress": False})
    err = capsys.readouterr().err
    assert "tokenizer" not in err and "tokenizing" not in err and "full pass" not in err
    monkeypatch.setenv("PROSELAB_CACHE", str(tmp_path / "cache-shown"))  # the data is tokenized again
    run = gpt_run(tmp_path, corpus, "shown", **{"train.progress": True})
    err = capsys.readouterr().err
    assert "training a char tokenizer" in err and "tokenizing" in err and "val loss, full pass" in err
    export_hf(run, tmp_path / "hf")
    assert "exporting" in capsys.readouterr().err
    builtin.fetch("tinyshakespeare", source=corpus)
    assert "converting corpus.txt into tinyshakespeare's files" in capsys.readouterr().err


def test_eval_batches_are_counted_for_the_bar():
    for n in (2, 33, 34, 65, 1001):
        for batch_size in (1, 3):
            expected = len(list(eval_batches(np.zeros(n, dtype=np.int64), 32, batch_size)))
            assert count_eval_batches(n, 32, batch_size) == expected


# ---- errors and warnings -------------------------------------------------------------------


def test_eval_pairs_shows_decoding_and_warns_when_most_outputs_are_empty(shown, tmp_path, monkeypatch, capsys):
    train(None, s2s(tmp_path))
    run, pairs = str(tmp_path / "s2s"), str(tmp_path / "pairs.tsv")
    capsys.readouterr()
    assert main(["eval", run, "--pairs", pairs]) == 0
    assert "decoding 60 pairs" in capsys.readouterr().err
    monkeypatch.setattr(evaluation, "translate", lambda model, sources, *a, **k: [""] * len(sources))
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # the model may have said it already, above
        assert main(["eval", run, "--pairs", pairs]) == 0
    err = capsys.readouterr().err
    assert "proselab: warning: 60 of 60 outputs are empty" in err
    assert f"train it longer (proselab train --resume {run} --train.max_iters=MORE)" in err
    with pytest.warns(UserWarning, match="outputs are empty"):
        proselab.evaluate_pairs(run, pairs)
    # the error that sends a user to evaluate_pairs names what proselab exports
    assert "evaluate_pairs" in proselab.__all__ and proselab.evaluate_pairs is evaluation.evaluate_pairs
    with pytest.raises(ValueError, match=r"proselab\.evaluate_pairs\(RUN, FILE\)"):
        proselab.evaluate(run, pairs)


def test_fine_tuning_across_families_names_both_and_what_to_do(tmp_path, corpus):
    gpt = gpt_run(tmp_path, corpus)
    pairs = str(write_pairs(tmp_path / "p.tsv"))
    where = re.escape(f"train.init_from '{gpt}' is a gpt model")
    with pytest.raises(ConfigError, match=f"{where}, but this config trains a seq2seq model .*give a seq2seq run as "
                                          "train.init_from, or leave train.init_from out to train from scratch"):
        proselab.train("reverse", {"train.init_from": str(gpt), "data.dataset": pairs, "data.val_dataset": pairs,
                                   "train.out_dir": str(tmp_path / "rev")})
    with pytest.raises(ConfigError, match=f"sentence pairs, which train a seq2seq model, but {where}: fine-tune a "
                                          "seq2seq run on pairs"):
        train(None, {"train.init_from": str(gpt), "data.dataset": pairs, "train.out_dir": str(tmp_path / "ft")})
    # an architecture field set for the fine-tuned run is the checkpoint's: said, not silently dropped
    with pytest.warns(UserWarning, match="model.n_layer=7 is ignored: fine-tuning keeps the architecture .*n_layer=2"):
        fine_tune_config(load_config(None, {"train.init_from": str(gpt), "model.n_layer": 7}))


def test_options_the_model_does_not_read_are_warned(tmp_path):
    pairs = str(write_pairs(tmp_path / "p.tsv"))
    cfg = load_config("bible-en-es-rnn", {"model.n_layer": 8, "data.dataset": pairs, "data.val_dataset": pairs,
                                          "data.vocab_size": 300, "train.progress": False})
    assert build_task(cfg).warnings() == ["model.n_layer=8 is ignored: a seq2seq model with model.arch=rnn does not "
                                          "read it; its size is set by model.cell, num_layers, hidden_size, n_embd"]
    gpt = load_config(None, {"model.hidden_size": 64, "model.num_layers": 3, "data.max_src_len": 10})
    assert unused_options(gpt, explicit_keys(gpt)) == [
        "model.hidden_size=64 and model.num_layers=3 are ignored: a gpt model does not read them; its size is set "
        "by model.n_layer, n_head, n_embd",
        "data.max_src_len=10 is ignored: only seq2seq models read it, and this is a gpt model"]
    transformer = load_config("bible-en-es", {"model.attention": "bahdanau"})
    assert unused_options(transformer, explicit_keys(transformer))[0].startswith(
        "model.attention=bahdanau is ignored: a seq2seq model with model.arch=transformer")
    for name in list_presets():  # what a preset sets, its model reads
        cfg = load_config(name)
        assert unused_options(cfg, explicit_keys(cfg)) == [], name


def test_a_resumed_run_does_not_warn_about_its_saved_config(tmp_path, corpus):
    with pytest.warns(UserWarning, match="model.hidden_size=32 and model.num_layers=1 are ignored"):
        run = gpt_run(tmp_path, corpus, **{"model.hidden_size": 32, "model.num_layers": 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(None, {"train.init_from": "resume", "train.out_dir": str(run), "train.max_iters": 3})
    assert not [w for w in caught if "ignored" in str(w.message)]


def test_only_rank_0_reports_the_training(tmp_path, corpus, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")  # what torchrun sets in the second process (WORLD_SIZE unset: no process group)
    overrides = [f"--{k}={v}" for k, v in tiny_overrides(corpus, tmp_path / "r1", **{"train.max_iters": 2}).items()]
    assert main(["train", *overrides]) == 0
    assert capsys.readouterr().out == ""  # rank 0 prints the summary
    assert (tmp_path / "r1" / "model.safetensors").is_file()
