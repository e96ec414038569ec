"""Supervised and chat fine-tuning: masks, chat template, special tokens, LoRA and freezing in training."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import proselab
from proselab.chat import IM_END, IM_START, add_special_tokens, encode_example, render_chat, windows
from proselab.runs import load_init_weights, load_run
from proselab.cli import cmd_chat, main
from proselab.config import DataConfig, load_config
from proselab.data import DataError, prepare_data
from proselab.data.batch import IGNORE_INDEX
from proselab.tokenizers import EOT, gpt2_tokenizer, train_tokenizer
from proselab.training import train

from conftest import SHARED, tiny_overrides

GPT2_FILES = SHARED / "gpt2-tokenizer"
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there, how are you?"},
    {"role": "assistant", "content": "Fine, thanks!"},
    {"role": "user", "content": "Good: bye."},
    {"role": "assistant", "content": "Bye 👋"},
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _pairs(n=60):
    return [{"prompt": f"Q: {a} plus {b}?\nA:", "response": f" {a + b}"} for a in range(10) for b in range(n // 10)]


def _chats(n=60):
    words = ["red", "green", "blue", "gold", "gray", "pink"]
    return [{"messages": [{"role": "user", "content": f"say {w} {i}"},
                          {"role": "assistant", "content": f"{w} {i}"},
                          {"role": "user", "content": "again"},
                          {"role": "assistant", "content": f"{w} {i} again"}]}
            for i in range(n // len(words)) for w in words]


@pytest.fixture(scope="module")
def gpt2_tok():
    if not (GPT2_FILES / "vocab.json").is_file():
        pytest.skip("GPT-2 tokenizer files not available")
    return add_special_tokens(gpt2_tokenizer(GPT2_FILES), [IM_START, IM_END])


def test_chat_masks_only_the_assistant_replies(gpt2_tok):
    ids, trained, starts = encode_example({"messages": CHAT}, gpt2_tok, "chatml")
    assert ids == gpt2_tok.encode(render_chat(CHAT))  # what generation sees, encoded whole
    learned = gpt2_tok.decode([i for i, t in zip(ids, trained) if t], skip_special_tokens=False)
    assert learned == f"Fine, thanks!{IM_END}Bye 👋{IM_END}"
    assert len(starts) == 2 and starts[0] == 0  # system + user + reply, then user + reply
    assert gpt2_tok.decode(ids[starts[1]:], skip_special_tokens=False).startswith(f"{IM_START}user\nGood")


def test_prompt_response_masks_the_prompt(gpt2_tok):
    ids, trained, _ = encode_example({"prompt": "Q: 2+2?\nA:", "response": " 4"}, gpt2_tok, "chatml")
    assert gpt2_tok.decode(ids, skip_special_tokens=False) == f"Q: 2+2?\nA: 4{EOT}"
    assert gpt2_tok.decode([i for i, t in zip(ids, trained) if t], skip_special_tokens=False) == f" 4{EOT}"


def test_windows_cut_at_message_starts():
    assert windows([0], 10, 4) == [(0, 10)]  # one long message: one row, cut later
    assert windows([0, 3, 6, 9], 12, 6) == [(0, 6), (6, 12)]
    assert windows([0, 3, 6, 9], 12, 100) == [(0, 12)]


def test_sft_batches_pad_and_ignore_everything_but_responses(tmp_path):
    tok = train_tokenizer("char", ["".join(json.dumps(r) for r in _pairs())])
    dcfg = DataConfig(dataset=str(_jsonl(tmp_path / "p.jsonl", _pairs())), val_fraction=0.2)
    data = prepare_data(dcfg, block_size=32, tokenizer=tok)
    assert data.format == "sft" and data.tokenizer.eos_id is not None  # an end-of-text token was added
    assert len(data.train) == 48 and len(data.val) == 12
    batch = data.batch("train", torch.tensor([0, 1, 2]))
    x, y, n = batch.inputs, batch.targets, batch.tokens
    assert x.shape == y.shape and x.size(1) <= 32
    for r in range(3):
        row_ids, row_trained = data.train.row(r, 32)
        text = data.tokenizer.decode([int(t) for t in y[r] if t != IGNORE_INDEX], skip_special_tokens=False)
        assert text == f" {_pairs()[r]['response'].strip()}{EOT}"
        assert (x[r, : len(row_ids) - 1] == torch.as_tensor(row_ids[:-1].astype("int64"))).all()
    assert n == sum(len(data.train.row(r, 32)[0]) - 1 for r in range(3))


def test_long_conversations_become_several_rows(tmp_path):
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i}"} for i in range(40)]
    path = _jsonl(tmp_path / "c.jsonl", [{"messages": turns}] * 4)
    data = prepare_data(DataConfig(dataset=str(path), tokenizer="char", val_fraction=0.25), block_size=64)
    assert len(data.train) > 3 and data.truncated == 0  # split at messages, nothing cut
    learned = ""
    for i in range(len(data.train)):
        ids, trained = data.train.row(i, 64)
        assert len(ids) <= 65
        learned += data.tokenizer.decode(ids[trained == 1])
    assert all(f"message number {i}" in learned for i in range(1, 40, 2))


def test_bad_sft_data_says_what_is_wrong(tmp_path):
    one = _jsonl(tmp_path / "one.jsonl", _pairs()[:1])
    with pytest.raises(DataError, match="too few"):
        prepare_data(DataConfig(dataset=str(one), tokenizer="char"), block_size=16)
    long_prompt = _jsonl(tmp_path / "long.jsonl", [{"prompt": "x" * 100, "response": "y"}] * 5)
    with pytest.raises(DataError, match="block_size"):
        prepare_data(DataConfig(dataset=str(long_prompt), tokenizer="char"), block_size=16)


def test_chat_sft_from_scratch_then_chat_in_the_cli(tmp_path, monkeypatch, capsys):
    data = _jsonl(tmp_path / "chat.jsonl", _chats(120))
    out = tmp_path / "run"
    res = train(None, tiny_overrides(data, out, **{"model.block_size": 64, "train.max_iters": 60,
                                                  "train.lr": 3e-3, "train.eval_interval": 30,
                                                  "train.batch_size": 16}))
    saved = json.loads((out / "config.json").read_text())
    tok = proselab.load(out).tokenizer
    assert saved["generation"]["eos_token_id"] == [tok.token_to_id(IM_END)]
    assert res.val_loss < 0.5 * math.log(tok.vocab_size)  # replies are regular: learned well below chance
    gen = proselab.load(out)
    reply = gen.chat([{"role": "user", "content": "say blue 3"}], do_sample=False, max_new_tokens=30)
    assert reply.finish_reason == "eos" and IM_END not in reply.text
    with pytest.raises(ValueError, match=r'"messages"\[0\]\["role"\] must be "system", "user" or "assistant"'):
        gen.chat([{"role": "bot", "content": "hi"}])

    lines = iter(["say red 1", "/reset", "say gold 2", "/quit"])
    monkeypatch.setattr("sys.argv", ["proselab"])
    args = __import__("proselab.cli", fromlist=["build_parser"]).build_parser().parse_args(
        ["chat", str(out), "--greedy", "--max-new-tokens", "30"])
    assert cmd_chat(args, [], read=lambda _: next(lines)) == 0
    printed = capsys.readouterr()
    assert "conversation reset" in printed.err and printed.out.count("\n") == 2


def test_chat_refuses_a_model_not_tuned_for_chat(tmp_path, corpus, capsys):
    train(None, tiny_overrides(corpus, tmp_path / "lm", **{"train.max_iters": 2}))
    assert main(["chat", str(tmp_path / "lm")]) == 2
    assert "not fine-tuned for chat" in capsys.readouterr().err


def test_fine_tune_adds_tokens_and_grows_the_embedding(tmp_path, corpus):
    base = tmp_path / "base"
    train(None, tiny_overrides(corpus, base, **{"train.max_iters": 5}))
    base_model, base_tok, _ = load_run(base)
    V = base_tok.vocab_size
    data = _jsonl(tmp_path / "chat.jsonl", _chats())
    cfg = load_config(None, {"train.init_from": str(base), "data.dataset": str(data)})
    from proselab.runs import fine_tune_config
    from proselab.models import build_model

    cfg = fine_tune_config(cfg)
    assert (cfg.train.lr, cfg.train.warmup_iters) == (1e-4, 20)  # fine-tuning defaults
    cfg.model.vocab_size = V + 2
    model = build_model(cfg.model)
    load_init_weights(model, base)
    wte, old = model.transformer.wte.weight, base_model.transformer.wte.weight
    assert torch.equal(wte[:V], old) and torch.allclose(wte[V:], old.mean(0).expand(2, -1))

    out = tmp_path / "ft"
    train(None, tiny_overrides(data, out, **{"train.init_from": str(base), "train.max_iters": 3, "train.lr": 1e-3}))
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["vocab_size"] == V + 2 and saved["train"]["lr"] == 1e-3
    assert proselab.load(out).tokenizer.token_to_id(IM_END) == V + 1


def test_lora_trains_adapters_only_and_merges_on_load_and_export(tmp_path, corpus, gpt2_tok):
    transformers = pytest.importorskip("transformers")
    base = tmp_path / "base"
    train(None, tiny_overrides(corpus, base, **{"train.max_iters": 5, "data.tokenizer": str(GPT2_FILES)}))
    data = _jsonl(tmp_path / "chat.jsonl", _chats())
    out = tmp_path / "lora"
    train(None, tiny_overrides(data, out, **{"train.init_from": str(base), "train.max_iters": 6,
                                            "train.lora_rank": 4, "train.lr": 1e-2}))
    saved = load_file(str(out / "last.safetensors"))
    base_w = load_file(str(base / "model.safetensors"))
    name = "transformer.h.0.attn.c_attn.weight"
    assert torch.equal(saved[name], base_w[name])  # the base weight never moved
    assert saved["transformer.h.0.attn.c_attn.lora_B"].abs().sum() > 0  # the adapter did
    model, tok, _ = load_run(out)
    assert not any("lora" in k for k in model.state_dict())
    assert not torch.equal(model.state_dict()[name], base_w[name])  # merged

    hf_dir = tmp_path / "hf"
    assert main(["export", str(out), str(hf_dir)]) == 0
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    idx = torch.tensor([tok.encode(render_chat(CHAT[:2], add_generation_prompt=True))])
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf.eval()(idx).logits, atol=1e-4, rtol=0)
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert hf_tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True) == render_chat(
        CHAT, add_generation_prompt=True)
    gen_cfg = json.loads((hf_dir / "generation_config.json").read_text())
    assert gen_cfg["eos_token_id"] == [tok.token_to_id(IM_END), tok.eos_id]


def test_lora_run_resumes(tmp_path):
    data = _jsonl(tmp_path / "p.jsonl", _pairs())
    out = tmp_path / "run"
    o = tiny_overrides(data, out, **{"train.lora_rank": 2, "train.max_iters": 4, "train.eval_interval": 2})
    train(None, o)
    res = train(None, {"train.init_from": "resume", "train.out_dir": str(out), "train.max_iters": 8})
    assert res.step == 8


def test_freeze_layers_keeps_the_first_blocks(tmp_path, corpus):
    base = tmp_path / "base"
    train(None, tiny_overrides(corpus, base, **{"train.max_iters": 3}))
    out = tmp_path / "ft"
    train(None, tiny_overrides(corpus, out, **{"train.init_from": str(base), "train.freeze_layers": 1,
                                              "train.lr": 1e-2, "train.max_iters": 3}))
    a, b = load_file(str(base / "model.safetensors")), load_file(str(out / "last.safetensors"))
    assert torch.equal(a["transformer.h.0.mlp.c_fc.weight"], b["transformer.h.0.mlp.c_fc.weight"])
    assert torch.equal(a["transformer.wte.weight"], b["transformer.wte.weight"])
    assert not torch.equal(a["transformer.h.1.mlp.c_fc.weight"], b["transformer.h.1.mlp.c_fc.weight"])
    with pytest.raises(ValueError, match="freeze_layers"):
        train(None, tiny_overrides(corpus, tmp_path / "x", **{"train.init_from": str(base), "train.freeze_layers": 5}))
