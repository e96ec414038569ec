"""Hugging Face GPT-2 interop: import, export, and parity with transformers."""

import json
import math

import pytest
import torch

import proselab
from proselab.checkpoint import RunError
from proselab.runs import export_hf
from proselab.tokenizers import train_tokenizer

from conftest import assert_decodes_as_transformers, SHARED, shakespeare_text, tiny_overrides

transformers = pytest.importorskip("transformers")
GPT2_FILES = SHARED / "gpt2-tokenizer"


def _hf_checkpoint(path, vocab_size, n_positions=32):
    """A randomly initialised transformers GPT-2, saved: a real checkpoint directory."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=32, n_layer=2, n_head=4,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # peaky distributions, so greedy and beams are far from ties
        model.transformer.wte.weight.mul_(20)
    model.save_pretrained(path)
    return model


@pytest.fixture
def char_checkpoint(tmp_path):
    tok = train_tokenizer("char", [shakespeare_text(5000)])
    path = tmp_path / "hf"
    hf = _hf_checkpoint(path, tok.vocab_size)
    tok.save(path / "tokenizer.json")
    return path, hf, tok


def test_import_matches_transformers_logits_greedy_and_beams(char_checkpoint):
    path, hf, tok = char_checkpoint
    gen = proselab.load(path)
    idx = torch.tensor([tok.encode("ROMEO: good"), tok.encode("JULIET: say")])
    assert_decodes_as_transformers(gen.model, hf, idx)


def test_pytorch_model_bin_and_bare_gpt2model_names(char_checkpoint):
    path, hf, tok = char_checkpoint
    state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    (path / "model.safetensors").unlink()
    torch.save(state, path / "pytorch_model.bin")
    gen = proselab.load(path)
    idx = torch.tensor([tok.encode("ROMEO:")])
    with torch.no_grad():
        torch.testing.assert_close(gen.model(idx)[0], hf(idx).logits, atol=1e-4, rtol=0)


def test_gpt2_tokenizer_files_and_cli_generate(tmp_path):
    if not (GPT2_FILES / "vocab.json").is_file():
        pytest.skip("GPT-2 tokenizer files are not in ../shared/data")
    import shutil
    import subprocess
    import sys

    path = tmp_path / "hf"
    hf = _hf_checkpoint(path, 50257)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2_FILES / name, path / name)
    gen = proselab.load(path)
    assert gen.tokenizer.encode("Hello world") == [15496, 995] and gen.tokenizer.eos_id == 50256
    idx = torch.tensor([gen.tokenizer.encode("Hello world")])
    ref = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=8, do_sample=False,
                      eos_token_id=50255, pad_token_id=0)[0, 2:].tolist()
    out = subprocess.run([sys.executable, "-m", "proselab", "generate", str(path), "--prompt", "Hello world",
                          "--greedy", "--max-new-tokens", "8", "--eos-token-id", "50255", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["completions"][0]["tokens"] == ref


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_export_loads_in_transformers_without_warnings(tmp_path, corpus, tokenizer, capfd):
    run = tmp_path / "run"
    proselab.train(None, tiny_overrides(corpus, run, **{"data.tokenizer": tokenizer, "data.vocab_size": 300,
                                                       "train.max_iters": 5, "model.bias": False}))
    out = tmp_path / "export"
    export_hf(run, out)
    capfd.readouterr()
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert "MISSING" not in capfd.readouterr().err  # transformers 5 prints a load report on any mismatch
    hf.eval()
    gen = proselab.load(run)
    text = "ROMEO: What, ho!"
    assert hf_tok(text)["input_ids"] == gen.tokenizer.encode(text)
    idx = torch.tensor([gen.tokenizer.encode(text)])
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, gen.model(idx)[0], atol=1e-4, rtol=0)
    back = proselab.load(out)  # and the export imports again
    with torch.no_grad():
        torch.testing.assert_close(back.model(idx)[0], gen.model(idx)[0], atol=1e-5, rtol=0)


def test_export_refuses_rnn_runs_and_non_empty_targets(tmp_path, corpus):
    run = tmp_path / "run"
    proselab.train(None, tiny_overrides(corpus, run, family="rnn", **{"train.max_iters": 2}))
    with pytest.raises(RunError, match="rnn run"):
        export_hf(run, tmp_path / "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("keep me")
    gpt = tmp_path / "gpt"
    proselab.train(None, tiny_overrides(corpus, gpt, **{"train.max_iters": 2}))
    with pytest.raises(RunError, match="not an empty directory"):
        export_hf(gpt, busy)
    assert (busy / "x").read_text() == "keep me"


def test_bad_checkpoints_say_what_is_wrong(char_checkpoint):
    path, _, _ = char_checkpoint
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"]}))
    with pytest.raises(RunError, match="model_type .gemma2. .Gemma2ForCausalLM. is not supported"):
        proselab.load(path)
    (path / "config.json").write_text(json.dumps({**cfg, "n_embd": 64}))
    with pytest.raises(RunError, match="shape"):
        proselab.load(path)
    (path / "config.json").write_text(json.dumps({**cfg, "activation_function": "relu"}))
    with pytest.raises(RunError, match="activation_function"):
        proselab.load(path)
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "model.safetensors").unlink()
    with pytest.raises(RunError, match="no weights"):
        proselab.load(path)


def test_fine_tune_from_a_checkpoint_continues_its_weights(char_checkpoint, tmp_path, corpus):
    path, hf, tok = char_checkpoint
    run = tmp_path / "ft"
    over = tiny_overrides(corpus, run, **{"train.init_from": str(path), "model.block_size": 16, "model.n_layer": 7,
                                          "train.max_iters": 6, "train.eval_interval": 3, "data.tokenizer": "word"})
    res = proselab.train(None, over)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["n_layer"] == 2 and cfg["model"]["block_size"] == 16  # architecture from the checkpoint
    assert cfg["tokenizer"]["kind"] == "char"  # and its tokenizer, not data.tokenizer
    gen = proselab.load(run)
    assert gen.model.transformer.wpe.weight.shape[0] == 16
    # step 0's estimate is the checkpoint's own loss: the weights were loaded, not re-initialised
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0
    ids = torch.tensor(tok.encode(corpus.read_text()[-2000:]))
    with torch.no_grad():
        x = ids[: 16 * 50].view(50, 16)
        ref = torch.nn.functional.cross_entropy(hf(x).logits[:, :-1].reshape(-1, tok.vocab_size), x[:, 1:].reshape(-1))
    assert first["val_loss"] == pytest.approx(float(ref), rel=0.15)
    assert abs(first["val_loss"] - math.log(tok.vocab_size)) > 1  # far from a fresh model's ~log(V)
    assert res.step == 6
    # a proselab run is a checkpoint too
    res2 = proselab.train(None, tiny_overrides(corpus, tmp_path / "ft2", **{"train.init_from": str(run),
                                                                            "train.max_iters": 2}))
    assert res2.step == 2 and proselab.load(tmp_path / "ft2").model.transformer.wpe.weight.shape[0] == 16


def test_init_from_a_missing_directory(tmp_path, corpus):
    with pytest.raises(RunError, match="init_from"):
        proselab.train(None, tiny_overrides(corpus, tmp_path / "r", **{"train.init_from": str(tmp_path / "nope")}))


def test_a_gpt2_sequence_classifier_imports_with_transformers_logits(tmp_path):
    tok = train_tokenizer("char", [shakespeare_text(5000)])
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=tok.vocab_size, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                  id2label={0: "sad", 1: "glad", 2: "mad"}, pad_token_id=0)
    hf = transformers.GPT2ForSequenceClassification(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    tok.save(tmp_path / "hf" / "tokenizer.json")
    gen = proselab.load(tmp_path / "hf")
    assert gen.is_classifier and gen.config.model.labels == ["sad", "glad", "mad"]
    texts = ["ROMEO: good", "JULIET: say so"]
    for text, got in zip(texts, gen.classify(texts)):
        with torch.no_grad():
            ref = torch.softmax(hf(torch.tensor([tok.encode(text)])).logits[0], -1)
        assert list(got.probs.values()) == pytest.approx(ref.tolist(), abs=1e-5)


def test_a_classifier_exports_to_gpt2_for_sequence_classification(tmp_path, capfd):
    from test_classify import _overrides, _reviews

    run = tmp_path / "run"
    proselab.train(None, _overrides(_reviews(tmp_path / "r.csv"), run, **{"train.max_iters": 20}))
    out = tmp_path / "export"
    export_hf(run, out)
    capfd.readouterr()
    hf, info = transformers.AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert "MISSING" not in capfd.readouterr().err
    assert type(hf).__name__ == "GPT2ForSequenceClassification" and hf.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    assert not (out / "generation_config.json").exists()
    gen, hf_tok = proselab.load(run), transformers.AutoTokenizer.from_pretrained(out)
    hf.eval()
    texts = ["the film was superb", "the plot was boring and the ending was awful"]
    batch = hf_tok(texts, padding=True, return_tensors="pt")  # right padding with pad_token_id
    with torch.no_grad():
        ref = torch.softmax(hf(**batch).logits, -1)
    assert [list(c.probs.values()) for c in gen.classify(texts)] == [pytest.approx(r, abs=1e-5) for r in ref.tolist()]
    back = proselab.load(out)
    assert [c.label for c in back.classify(texts)] == [c.label for c in gen.classify(texts)]


def test_a_gpt2_checkpoint_is_fine_tuned_into_a_classifier(char_checkpoint, tmp_path):
    path, hf, tok = char_checkpoint
    data = tmp_path / "labelled.csv"
    data.write_text("text,label\n" + "".join(f"{'good' if i % 2 else 'bad'} day {i},{i % 2}\n" for i in range(60)))
    out = tmp_path / "cls"
    proselab.train(None, {"data.dataset": str(data), "train.init_from": str(path), "train.out_dir": str(out),
                          "train.max_iters": 3, "train.lr": 1e-9, "train.min_lr": 0, "train.progress": False,
                          "train.device": "cpu", "train.dtype": "float32", "model.block_size": 32})
    gen = proselab.load(out)
    assert gen.config.model.labels == ["0", "1"] and gen.tokenizer.vocab_size == tok.vocab_size
    ours, theirs = gen.model.state_dict(), hf.state_dict()
    for name in ("transformer.wte.weight", "transformer.h.1.ln_2.weight", "transformer.ln_f.bias"):
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-6, rtol=0)  # the body is the checkpoint's
    assert "score.weight" in ours and gen.classify("good day").label in ("0", "1")


def test_logit_bias_exports_as_sequence_bias_and_back(tmp_path, corpus):
    """A run's logit_bias (OpenAI's) is transformers' sequence_bias of single tokens: the export's
    generation_config.json makes transformers' greedy search avoid the banned token as proselab
    does, and the export imports with the same logit_bias; a bias on a longer sequence is refused."""
    run = tmp_path / "run"
    proselab.train(None, tiny_overrides(corpus, run, **{"train.max_iters": 30}))
    plain = proselab.load(run).complete("ROMEO:", do_sample=False, max_new_tokens=12)[0].tokens
    cfg = json.loads((run / "config.json").read_text())
    banned, boosted = plain[0], (plain[0] + 1) % cfg["model"]["vocab_size"]
    cfg["generation"]["logit_bias"] = {str(banned): -100.0, str(boosted): 2.5}
    (run / "config.json").write_text(json.dumps(cfg))
    gen = proselab.load(run)
    ours = gen.complete("ROMEO:", do_sample=False, max_new_tokens=12)[0].tokens
    assert banned not in ours and ours != plain
    out = tmp_path / "export"
    export_hf(run, out)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert sorted(hf.generation_config.sequence_bias) == sorted([[[banned], -100.0], [[boosted], 2.5]])
    idx = torch.tensor([gen.encode_prompt("ROMEO:")])
    ref = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=12, do_sample=False,
                      repetition_penalty=1.0, eos_token_id=None, pad_token_id=0)
    assert ref[0, idx.size(1):].tolist() == ours
    assert proselab.load(out).config.generation.logit_bias == {banned: -100.0, boosted: 2.5}
    written = json.loads((out / "generation_config.json").read_text())
    (out / "generation_config.json").write_text(json.dumps({**written, "sequence_bias": [[[1, 2], -5.0]]}))
    with pytest.raises(RunError, match="sequence_bias .* proselab biases single tokens only"):
        proselab.load(out)
    for bad, message in [(5, "expected a list of"), ([[["x"], 1.0]], "token ids must be integers")]:
        (out / "generation_config.json").write_text(json.dumps({**written, "sequence_bias": bad}))
        with pytest.raises(RunError, match=f"generation_config.json: sequence_bias .*{message}"):
            proselab.load(out)
