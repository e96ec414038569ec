"""Discoverability: `proselab train --help` lists the presets, `proselab config` prints the resolved
config with every field explained, and the defaults train in minutes."""

import dataclasses
import json
import re
import subprocess
import sys

import pytest
import yaml

from conftest import tiny_overrides
from proselab.cli import main
from proselab.config import SECTIONS, Config, describe_presets, field_docs, list_presets, load_config, section_doc


def _run(capsys, *argv) -> str:
    assert main([str(a) for a in argv]) == 0
    return capsys.readouterr().out


def _help(capsys, monkeypatch, *argv) -> str:
    monkeypatch.setenv("COLUMNS", "80")  # argparse and the preset list wrap to it
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # wrapped lines joined back


def test_every_preset_has_a_one_line_description():
    descriptions = describe_presets()
    assert set(descriptions) == set(list_presets())
    for name, text in descriptions.items():
        assert text and len(text) <= 100, f"{name}.yaml: its first line should say what it trains, in one line"


@pytest.mark.parametrize("command", ["train", "config"])
def test_help_lists_every_preset_with_its_description(capsys, monkeypatch, command):
    text = _help(capsys, monkeypatch, command)
    for name, description in describe_presets().items():
        assert f"{name} {' '.join(description.split())}" in text
    assert "proselab config" in text


def test_every_field_and_section_is_documented():
    for section, cls in SECTIONS.items():
        assert section_doc(section), f"{cls.__name__} needs a docstring"
        docs = field_docs(section)
        for f in dataclasses.fields(cls):
            assert docs[f.name].comment, f"{section}.{f.name} needs a comment beside it"
    assert field_docs("model")["n_layer"].heading == ("gpt",)  # a group's heading is not a field's comment
    assert field_docs("model")["n_layer"].comment == "transformer blocks"
    assert field_docs("model")["n_head"].heading == ()


def _round_trip(tmp_path, text: str) -> Config:
    path = tmp_path / "printed.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


@pytest.mark.parametrize("preset", [None, *list_presets()])
def test_config_prints_yaml_that_loads_back_the_same(capsys, tmp_path, monkeypatch, preset):
    monkeypatch.chdir(tmp_path)  # tweets-sentiment-gpt's init_from (runs/tweets-lm) does not exist here
    text = _run(capsys, "config", *([preset] if preset else []))
    assert _round_trip(tmp_path, text) == load_config(preset)
    data = yaml.safe_load(text)
    assert list(data) == list(SECTIONS)
    blocks = dict(re.findall(r"^(\w+):.*\n((?:  .*\n)+)", text, flags=re.M))  # section -> its lines
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):  # set, or commented out when the model does not read it
            shown = [line for line in blocks[section].splitlines() if re.match(rf"  (# )?{f.name}: ", line)]
            assert shown and all(f"  # {field_docs(section)[f.name].comment}" in line for line in shown), f.name
            assert (f.name in data[section]) == (not shown[0].startswith("  # ")), shown


def test_fields_the_model_does_not_read_are_commented_out(capsys, tmp_path):
    """Read back, a printed field counts as set, and training warns about options set for a
    model that ignores them: the config leaves those out unless something set them."""
    gpt = yaml.safe_load(_run(capsys, "config"))
    assert {"n_layer", "n_head", "block_size"} <= set(gpt["model"]) and "cell" not in gpt["model"]
    assert "joint_vocab" not in gpt["data"] and "eval_bleu_samples" not in gpt["train"]
    rnn = yaml.safe_load(_run(capsys, "config", "--model.family=rnn", "--model.n_head=2"))
    assert {"cell", "hidden_size"} <= set(rnn["model"]) and "n_layer" not in rnn["model"]
    assert rnn["model"]["n_head"] == 2  # set on the command line: kept, and train will say it is ignored
    s2s = yaml.safe_load(_run(capsys, "config", "reverse"))
    assert {"attention", "joint_vocab", "eval_bleu_samples"} <= {*s2s["model"], *s2s["data"], *s2s["train"]}


def test_config_applies_overrides_and_train_flags(capsys, tmp_path):
    text = _run(capsys, "config", "demo", "--train.max_iters=7", r'--generation.stop=[a, "\n\nUser:"]',
                "--data.dataset", "[a.txt, b dir/c.txt]", "--out", tmp_path / "run")
    cfg = _round_trip(tmp_path, text)
    assert cfg.train.max_iters == 7 and cfg.generation.stop == ["a", "\n\nUser:"]
    assert cfg.data.dataset == ["a.txt", "b dir/c.txt"] and cfg.train.out_dir == str(tmp_path / "run")
    assert cfg.model == load_config("demo").model
    assert "  stop: [a, \"\\n\\nUser:\"]" in text  # text with line breaks stays on its field's line


def test_config_errors_are_one_line(capsys):
    assert main(["config", "no-such-preset"]) == 2
    assert main(["config", "--train.lrr=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "preset" in err[0] and "did you mean 'train.lr'" in err[1]


def test_config_shows_what_fine_tuning_resolves(capsys, tmp_path):
    """With train.init_from the architecture, window and tokenizer come from the checkpoint and
    the learning rate takes the fine-tuning default: `proselab config` shows those, as train uses."""
    hf = tmp_path / "gpt2-small"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32,
                                                "n_positions": 64, "vocab_size": 100}))
    text = _run(capsys, "config", f"--train.init_from={hf}")
    cfg = _round_trip(tmp_path, text)
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.block_size) == (2, 32, 64)
    assert cfg.train.lr == 1e-4 and cfg.data.tokenizer == str(hf)


def test_defaults_are_a_small_model_that_trains_in_minutes(capsys, tmp_path):
    """No preset means a GPT of the demo's size: ~0.8M weights and ~3M training tokens (minutes
    on 2 cores), not a 10M-weight GPT for 6M tokens (an hour). `proselab config` shows just that."""
    cfg = _round_trip(tmp_path, _run(capsys, "config"))
    assert cfg == Config().validate()
    m, t = cfg.model, cfg.train
    assert 12 * m.n_layer * m.n_embd ** 2 < 1_000_000  # weights in the blocks
    assert t.batch_size * t.grad_accum * m.block_size * t.max_iters <= 4_000_000  # tokens trained on
    demo = load_config("demo")
    for name in ("family", "block_size", "n_layer", "n_embd", "dropout", "tokenizer"):
        section = "data" if name == "tokenizer" else "model"
        assert getattr(getattr(cfg, section), name) == getattr(getattr(demo, section), name), name
    for name in ("batch_size", "max_iters", "lr", "min_lr", "warmup_iters", "eval_interval"):
        assert getattr(t, name) == getattr(demo.train, name), name
    load_config(overrides=["model.family=rnn"])  # tie_weights fits the default widths


def test_train_accepts_what_config_prints(corpus, tmp_path):
    """The round trip through the command line: config's output is a file train runs from."""
    out = tmp_path / "run"
    gpt = {k: v for k, v in tiny_overrides(corpus, out, **{"train.max_iters": 2}).items()
           if k not in ("model.hidden_size", "model.num_layers")}  # an rnn's: a gpt would warn that it ignores them
    flags = [f"--{k}={v}" for k, v in gpt.items()]
    cmd = [sys.executable, "-m", "proselab"]
    printed = subprocess.run([*cmd, "config", *flags], capture_output=True, text=True, timeout=300, check=True).stdout
    path = tmp_path / "tiny.yaml"
    path.write_text(printed, encoding="utf-8")
    p = subprocess.run([*cmd, "train", path], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "trained 2 steps" in p.stdout and "ignored" not in p.stderr  # no option the model does not read
    saved = json.loads((out / "config.json").read_text())
    expected = load_config(path).to_dict()
    expected["model"]["vocab_size"] = saved["model"]["vocab_size"]  # the tokenizer fixes it at training
    assert {s: saved[s] for s in SECTIONS} == expected
