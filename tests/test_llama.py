"""Llama-style GPT: Hugging Face LlamaForCausalLM import, export, fine-tuning and parity with
transformers; training one from scratch; the errors for what it cannot hold."""

import json

import pytest
import torch

import proselab
from proselab.checkpoint import RunError
from proselab.config import ConfigError
from proselab.runs import export_hf
from proselab.tokenizers import train_tokenizer

from conftest import assert_decodes_as_transformers, shakespeare_text, tiny_overrides

transformers = pytest.importorskip("transformers")
LLAMA_RUN = {"model.rope": True, "model.norm": "rmsnorm", "model.activation": "silu", "model.gated_ffn": True,
             "model.ffn_dim": 64, "model.n_head": 4, "model.n_kv_head": 2, "model.bias": False}


def _checkpoint(path, vocab_size, **extra):
    """A randomly initialised transformers Llama (grouped key/value heads), saved."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   rope_theta=1000.0, **{"bos_token_id": 0, "eos_token_id": 0, **extra})
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # peaky distributions, so greedy and beams are far from ties
        model.model.embed_tokens.weight.mul_(20)
        for layer in model.model.layers:  # sharp attention, so positions change the function
            layer.self_attn.q_proj.weight.mul_(4)
            layer.self_attn.k_proj.weight.mul_(4)
    model.save_pretrained(path)
    return model


@pytest.fixture
def checkpoint(tmp_path):
    tok = train_tokenizer("char", [shakespeare_text(5000)])
    path = tmp_path / "hf"
    hf = _checkpoint(path, tok.vocab_size)
    tok.save(path / "tokenizer.json")
    return path, hf, tok


def test_import_matches_transformers_logits_greedy_and_beams(checkpoint):
    path, hf, tok = checkpoint
    gen = proselab.load(path)
    assert gen.config.model.rope and gen.config.model.n_kv_head == 2 and not gen.config.model.tie_weights
    idx = torch.tensor([tok.encode("ROMEO: good"), tok.encode("JULIET: say")])
    assert_decodes_as_transformers(gen.model, hf, idx)


SCALINGS = {  # rope_parameters -> the fields the import sets
    "llama3": ({"rope_type": "llama3", "rope_theta": 1000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
               {"rope_factor": 8.0, "rope_original_context": 16}),
    "linear": ({"rope_type": "linear", "rope_theta": 1000.0, "factor": 4.0}, {"rope_factor": 4.0}),
    "yarn": ({"rope_type": "yarn", "rope_theta": 1000.0, "factor": 8.0, "original_max_position_embeddings": 16,
              "beta_fast": 4.0, "beta_slow": 0.25},
             {"rope_factor": 8.0, "rope_original_context": 16, "rope_attention_factor": 0.0, "block_size": 128}),
    "yarn-mscale": ({"rope_type": "yarn", "rope_theta": 1000.0, "factor": 8.0, "original_max_position_embeddings": 16,
                     "mscale": 1.0, "mscale_all_dim": 0.5},
                    {"rope_factor": 8.0, "rope_beta_fast": 32.0, "block_size": 128}),
}


@pytest.mark.parametrize("kind", SCALINGS)
def test_rope_scalings_import_and_export_with_transformers_logits(tmp_path, kind):
    """Rope scaling as checkpoints carry it: Llama 3.1's llama3 (with head size 8 and an original
    context of 16, one frequency is kept, one scaled and one blended), linear, and yarn (with
    betas that blend one of the four frequencies, and DeepSeek's mscale pair, which scales cos and
    sin): logits match transformers' in and out of proselab."""
    params, fields = SCALINGS[kind]
    tok = train_tokenizer("char", [shakespeare_text(5000)])
    path = tmp_path / "hf"
    hf = _checkpoint(path, tok.vocab_size, rope_parameters=params)
    tok.save(path / "tokenizer.json")
    gen = proselab.load(path)
    m = gen.config.model
    assert m.rope_type == params["rope_type"] and {k: getattr(m, k) for k in fields} == fields
    idx = torch.tensor([tok.encode("ROMEO: good morrow, cousin, what news from the court?")])
    with torch.no_grad():
        ref, ours = hf(idx).logits, gen.model(idx)[0]
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
        plain = transformers.LlamaForCausalLM.from_pretrained(path, rope_parameters={"rope_type": "default",
                                                                                     "rope_theta": 1000.0})
        gap = (plain.eval()(idx).logits - ref).abs().max()  # the scaling changes the function, far beyond
        assert gap > max(20 * (ours - ref).abs().max(), 1e-4)  # the distance between the two implementations
    export_hf(path, tmp_path / "export")  # an imported checkpoint exports as a run does
    exported = json.loads((tmp_path / "export" / "config.json").read_text())["rope_parameters"]
    assert exported["rope_type"] == params["rope_type"] and exported["factor"] == params["factor"]
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(idx).logits, ref, atol=1e-4, rtol=0)


def test_a_sentencepiece_llama_tokenizer_prompts_as_transformers_does(tmp_path):
    """A Llama tokenizer as checkpoints ship it (sentencepiece BPE with byte fallback, converted
    by transformers to tokenizer.json, <s> put before every text): proselab encodes a prompt to
    transformers' ids, <s> included, and greedy text generation matches transformers'."""
    sentencepiece = pytest.importorskip("sentencepiece")
    (tmp_path / "corpus.txt").write_text(shakespeare_text(20_000), encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "sp"),
                                             vocab_size=400, model_type="bpe", byte_fallback=True, bos_id=1,
                                             eos_id=2, unk_id=0, pad_id=-1, minloglevel=2)
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "tokenizer.model").write_bytes((tmp_path / "sp.model").read_bytes())
    (slow / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True,
                                                            "bos_token": "<s>", "eos_token": "</s>"}))
    hf_tok = transformers.AutoTokenizer.from_pretrained(slow)
    path = tmp_path / "hf"
    hf = _checkpoint(path, len(hf_tok), bos_token_id=1, eos_token_id=2)
    hf_tok.save_pretrained(path)
    gen = proselab.load(path)
    text = "ROMEO: good morrow, ÿ cousin"  # ÿ: byte fallback
    ids = hf_tok(text).input_ids
    assert ids[0] == 1 and gen.encode_prompt(text) == ids
    ref = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                      max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
    assert gen.complete(text, do_sample=False, max_new_tokens=10, eos_token_id=None)[0].tokens == ref
    # explaining a continuation and zero-shot scoring read a prompt as generation does: after <s>
    explained = gen.explain(text=" cousin", prompt="ROMEO: good morrow,")
    assert [t["id"] for t in explained.context] == hf_tok("ROMEO: good morrow,").input_ids
    from proselab.zeroshot import Prompting, _rows

    rows, starts = _rows(gen.tokenizer, [text], Prompting(["good", "bad"], "{text} It was"), window=12)
    assert all(r[0] == 1 and 1 not in r[1:] and len(r) <= 12 for r in rows)


def test_left_padded_batches_decode_each_row_as_alone(checkpoint):
    """Rotary positions count from each row's first token: a short prompt batched with a long one
    continues as it does on its own."""
    path, _, tok = checkpoint
    gen = proselab.load(path)
    prompts = ["ROMEO: good morrow, cousin", "JULIET:"]
    together = gen.complete(prompts, do_sample=False, max_new_tokens=10)
    alone = [gen.complete([p], do_sample=False, max_new_tokens=10)[0] for p in prompts]
    assert [g.tokens for g in together] == [g.tokens for g in alone]


def test_train_export_reimport(tmp_path, corpus, capfd):
    """A Llama-style GPT trained from scratch exports to LlamaForCausalLM: transformers loads it
    with no missing or unexpected keys and computes the same logits, and it imports again."""
    run = tmp_path / "run"
    proselab.train(None, tiny_overrides(corpus, run, **LLAMA_RUN, **{"train.max_iters": 5}))
    out = tmp_path / "export"
    export_hf(run, out)
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
    capfd.readouterr()
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert "MISSING" not in capfd.readouterr().err
    gen = proselab.load(run)
    text = "ROMEO: What, ho!"
    assert transformers.AutoTokenizer.from_pretrained(out)(text)["input_ids"] == gen.tokenizer.encode(text)
    idx = torch.tensor([gen.tokenizer.encode(text)])
    with torch.no_grad():
        torch.testing.assert_close(hf.eval()(idx).logits, gen.model(idx)[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(proselab.load(out).model(idx)[0], gen.model(idx)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("extra", [{}, {"train.lora_rank": 2, "train.lora_targets": ["c_attn", "c_proj"]}],
                         ids=["full", "lora"])
def test_fine_tune_a_checkpoint_then_export_it(checkpoint, tmp_path, corpus, extra):
    path, _, _ = checkpoint
    run = tmp_path / "ft"
    proselab.train(None, tiny_overrides(corpus, run, **{"train.init_from": str(path), "model.block_size": 32,
                                                        "train.max_iters": 4, "train.eval_interval": 2, **extra}))
    tuned = proselab.load(run)
    assert tuned.config.model.rope and tuned.config.model.n_kv_head == 2
    base = proselab.load(path).model.state_dict()
    assert any(not torch.equal(base[k], v) for k, v in tuned.model.state_dict().items()), "training changed nothing"
    out = tmp_path / "export"
    export_hf(run, out)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    idx = torch.tensor([tuned.tokenizer.encode("ROMEO:")])
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, tuned.model(idx)[0], atol=1e-4, rtol=0)


def test_attention_and_mlp_biases_map_both_ways():
    """A Llama with attention_bias and mlp_bias: its biases load into proselab's names (logits
    equal) and every proselab name maps back to one of the checkpoint's."""
    from proselab.interop.llama import hf_name, model_config, state_from_hf
    from proselab.models import build_model

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(".bias"):
                p.normal_()  # transformers starts them at 0
    m = model_config(cfg.to_dict(), "config.json")
    ours = build_model(m).eval()
    ours.load_state_dict(state_from_hf(hf.state_dict(), m))  # strict: every tensor placed
    idx = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, atol=1e-4, rtol=0)
    back = {hf_name(k) for k in ours.state_dict() if ".c_attn." not in k}
    assert back <= set(hf.state_dict()) and any(k.endswith("o_proj.bias") for k in back)


def test_unsupported_llama_options_are_one_line_errors(tmp_path):
    tok = train_tokenizer("char", [shakespeare_text(2000)])
    path = tmp_path / "hf"
    _checkpoint(path, tok.vocab_size)
    tok.save(path / "tokenizer.json")
    cfg = json.loads((path / "config.json").read_text())
    for params, message in [({"rope_type": "dynamic", "factor": 2.0}, "rope scaling 'dynamic'"),
                            ({"rope_type": "yarn", "factor": 8.0}, "'yarn' without a usable 'original_max_position"),
                            ({"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 16,
                              "truncate": False}, "truncate false")]:
        (path / "config.json").write_text(json.dumps({**cfg, "rope_parameters": {"rope_theta": 1000.0, **params}}))
        with pytest.raises(RunError, match=message):
            proselab.load(path)
    (path / "config.json").write_text(json.dumps({**cfg, "rope_parameters": {"rope_type": "llama3", "factor": 8.0}}))
    with pytest.raises(RunError, match="rope scaling 'llama3' without a usable 'original_max_position_embeddings'"):
        proselab.load(path)
    (path / "config.json").write_text(json.dumps({**cfg, "hidden_act": "gelu"}))
    with pytest.raises(RunError, match="hidden_act 'gelu'"):
        proselab.load(path)
    (path / "config.json").write_text(json.dumps({**cfg, "num_key_value_heads": 1}))
    with pytest.raises(RunError, match="shape"):
        proselab.load(path)


def test_bad_llama_style_configs_and_mixed_exports(tmp_path, corpus):
    with pytest.raises(ConfigError, match="n_kv_head must divide"):
        proselab.train(None, tiny_overrides(corpus, tmp_path / "a", **{**LLAMA_RUN, "model.n_kv_head": 3}))
    with pytest.raises(ConfigError, match="even head size"):
        proselab.train(None, tiny_overrides(corpus, tmp_path / "b", **{"model.rope": True, "model.n_embd": 30,
                                                                      "model.n_head": 10}))
    for bad, message in [({"model.rope_factor": 4.0, "model.rope_type": "ntk"}, "rope_type must be one of"),
                         ({"model.rope_factor": 4.0, "model.rope_type": "yarn", "model.rope_beta_slow": 40.0},
                          "0 < rope_beta_slow < rope_beta_fast"),
                         ({"model.rope_factor": 4.0, "model.rope_low_freq_factor": 5.0}, "rope_low_freq_factor <"),
                         ({"model.rope_factor": 0.5}, "rope_factor must be 0"),
                         ({"model.rope_factor": 2.0, "model.rope_type": "longrope", "model.rope_short_factor": [1.0]},
                          "rope_short_factor to hold 4 numbers > 0"),  # heads of 8: four frequencies
                         ({"model.rope_dim": 3}, "rope_dim must be even and at most the head size"),
                         ({"model.hf_type": "bart"}, "a gpt's model.hf_type must be mistral, phi3, gemma or empty")]:
        with pytest.raises(ConfigError, match=message):
            proselab.train(None, tiny_overrides(corpus, tmp_path / "c", **{**LLAMA_RUN, **bad}))
    assert not (tmp_path / "c").exists()
    run = tmp_path / "mixed"  # rotary positions with GPT-2's LayerNorm and feed-forward
    proselab.train(None, tiny_overrides(corpus, run, **{"model.rope": True, "train.max_iters": 2}))
    with pytest.raises(RunError, match="mixes GPT-2's and Llama's parts"):
        export_hf(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _variant(path, kind, vocab_size, **extra):
    """A random transformers Qwen2, Qwen3, Mistral or Phi-3 (Llama's layout with a difference
    each), saved."""
    config_class = {"qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config,
                    "mistral": transformers.MistralConfig, "phi3": transformers.Phi3Config,
                    "gemma": transformers.GemmaConfig}[kind]
    torch.manual_seed(0)
    cfg = config_class(vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, rope_theta=1000.0,
                       tie_word_embeddings=kind not in ("mistral", "phi3"), bos_token_id=0, eos_token_id=0,
                       **({"pad_token_id": 0} if kind == "phi3" else {}),
                       **({"head_dim": 8} if kind == "gemma" else {}), **{"max_position_embeddings": 64, **extra})
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # peaky distributions and sharp attention, as _checkpoint makes them
        model.model.embed_tokens.weight.mul_(20)
        for layer in model.model.layers:
            if kind == "phi3":  # q and k: the first 32 + 16 rows of the fused projection
                layer.self_attn.qkv_proj.weight[:48].mul_(4)
                continue
            if kind == "gemma":  # its norms start at weight 0 (they multiply by 1 + weight): make them matter
                layer.input_layernorm.weight.uniform_(-0.5, 0.5)
                layer.post_attention_layernorm.weight.uniform_(-0.5, 0.5)
            layer.self_attn.q_proj.weight.mul_(4)
            layer.self_attn.k_proj.weight.mul_(4)
            if kind == "qwen3":  # norms far from 1, so they matter
                layer.self_attn.q_norm.weight.uniform_(0.5, 2.0)
                layer.self_attn.k_norm.weight.uniform_(0.5, 2.0)
            if layer.self_attn.q_proj.bias is not None:  # Qwen2's: large enough to matter
                layer.self_attn.q_proj.bias.normal_(0, 1)
                layer.self_attn.k_proj.bias.normal_(0, 1)
                layer.self_attn.v_proj.bias.normal_(0, 1)
    model.save_pretrained(path)
    return model


@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "mistral", "phi3", "gemma"])
def test_qwen_mistral_and_phi3_import_and_export_with_transformers_logits_and_tokens(tmp_path, kind):
    """Qwen2 (biases on q, k and v only, a tied head), Qwen3 (q and k norms, heads of 16 over a
    hidden size of 32), Mistral (a sliding window, which becomes the model's window) and Phi-3
    (Mistral's with fused projections) and Gemma (a GELU-tanh gate, scaled embeddings, norms of
    1 + weight) decode as transformers does, and export back to their own layout with no
    missing or unexpected keys and the same logits."""
    tok = train_tokenizer("char", [shakespeare_text(5000)])
    path = tmp_path / "hf"
    extra = {"mistral": {"sliding_window": 48}, "phi3": {"sliding_window": 48}, "qwen3": {"head_dim": 16}}.get(kind, {})
    hf = _variant(path, kind, tok.vocab_size, **extra)
    tok.save(path / "tokenizer.json")
    gen = proselab.load(path)
    m = gen.config.model
    assert (m.qkv_bias, m.qk_norm, m.bias, m.tie_weights) == {
        "qwen2": (True, False, False, True), "qwen3": (False, True, False, True),
        "mistral": (False, False, False, False), "phi3": (False, False, False, False),
        "gemma": (False, False, False, True)}[kind]
    windowed = kind in ("mistral", "phi3")
    assert m.block_size == (48 if windowed else 64) and m.head_size() == (16 if kind == "qwen3" else 8)
    assert m.hf_type == (kind if kind in ("mistral", "phi3", "gemma") else "")
    idx = torch.tensor([tok.encode("ROMEO: good"), tok.encode("JULIET: say")])
    assert_decodes_as_transformers(gen.model, hf, idx)
    out = tmp_path / "export"
    export_hf(path, out)
    written = json.loads((out / "config.json").read_text())
    assert written["model_type"] == kind and written["architectures"] == [type(hf).__name__]
    back, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert type(back) is type(hf)
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(idx).logits, hf(idx).logits, atol=1e-4, rtol=0)


def test_phi35_and_phi4_mini_style_rope_longrope_and_partial_rotary(tmp_path):
    """Phi-3.5's longrope (one divisor per frequency, and cos and sin scaled by sqrt(1 + ln(max
    / original) / ln(original))) with Phi-4-mini's partial rotary factor (half of each head
    rotates): the context is the original one, where the short factors apply, and logits and
    tokens match transformers' in and out of proselab."""
    tok = train_tokenizer("char", [shakespeare_text(5000)])
    path = tmp_path / "hf"
    rope = {"rope_type": "longrope", "rope_theta": 1000.0, "short_factor": [1.0, 3.0], "long_factor": [2.0, 5.0],
            "original_max_position_embeddings": 32, "partial_rotary_factor": 0.5}
    hf = _variant(path, "phi3", tok.vocab_size, rope_parameters=rope, max_position_embeddings=256,
                  original_max_position_embeddings=32)
    tok.save(path / "tokenizer.json")
    gen = proselab.load(path)
    m = gen.config.model
    assert (m.rope_type, m.rope_dim, m.block_size, m.rope_short_factor) == ("longrope", 4, 32, [1.0, 3.0])
    idx = torch.tensor([tok.encode("ROMEO: good"), tok.encode("JULIET: say")])
    assert_decodes_as_transformers(gen.model, hf, idx)
    plain = transformers.AutoModelForCausalLM.from_pretrained(path, rope_parameters={"rope_type": "default",
                                                                                     "rope_theta": 1000.0})
    with torch.no_grad():
        ref = hf(idx).logits
        gap = (plain.eval()(idx).logits - ref).abs().max()  # longrope and the partial rotation change the function
        assert gap > max(20 * (gen.model(idx)[0] - ref).abs().max(), 1e-4)
    export_hf(path, tmp_path / "export")
    written = json.loads((tmp_path / "export" / "config.json").read_text())
    assert written["rope_parameters"]["long_factor"] == [2.0, 5.0] and written["max_position_embeddings"] == 32
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(idx).logits, ref, atol=1e-4, rtol=0)


def test_a_qwen2_with_sliding_window_layers_is_refused(tmp_path):
    tok = train_tokenizer("char", [shakespeare_text(2000)])
    path = tmp_path / "hf"
    _variant(path, "qwen2", tok.vocab_size, use_sliding_window=True, sliding_window=16)
    tok.save(path / "tokenizer.json")
    with pytest.raises(RunError, match="this Qwen2 variant is not supported: use_sliding_window"):
        proselab.load(path)


def test_heads_wider_than_hidden_over_heads_import_and_export(tmp_path, capfd):
    """head_dim other than hidden_size / num_attention_heads (Mistral-Nemo's, Qwen3's): 4 heads of
    16 over a hidden size of 32. Logits and tokens as transformers', and the export loads back."""
    tok = train_tokenizer("char", [shakespeare_text(5000)])
    path = tmp_path / "hf"
    hf = _checkpoint(path, tok.vocab_size, head_dim=16)
    tok.save(path / "tokenizer.json")
    gen = proselab.load(path)
    assert gen.config.model.head_dim == 16 and gen.model.transformer.h[0].attn.c_proj.weight.shape == (32, 64)
    idx = torch.tensor([tok.encode("ROMEO: good"), tok.encode("JULIET: say")])
    assert_decodes_as_transformers(gen.model, hf, idx)
    out = tmp_path / "export"
    export_hf(path, out)
    assert json.loads((out / "config.json").read_text())["head_dim"] == 16
    capfd.readouterr()
    back, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(idx).logits, hf(idx).logits, atol=1e-4, rtol=0)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "head_dim": 12}))  # not what the weights hold
    with pytest.raises(RunError, match="shape"):
        proselab.load(path)
    with pytest.raises(ConfigError, match="model.rope needs an even head size, got 7 .model.head_dim."):
        proselab.config.load_config(None, {**LLAMA_RUN, "model.head_dim": 7, "model.n_embd": 32, "data.dataset": "x"})


@pytest.mark.parametrize("layout", ["llama", "mistral", "phi3"])
def test_a_llama_style_classifier_exports_and_imports_as_llama_for_sequence_classification(tmp_path, capfd, layout):
    """A Llama-style GPT classifier exports to LlamaForSequenceClassification (with
    model.hf_type, to Mistral's or Phi-3's, whose projections are fused): transformers loads it without missing or
    unexpected keys and gives its probabilities on right-padded texts; proselab reads it back as
    the same classifier."""
    from test_classify import _overrides, _reviews

    run = tmp_path / "run"
    hf_type = {"model.hf_type": layout} if layout != "llama" else {}
    proselab.train(None, _overrides(_reviews(tmp_path / "r.csv"), run, **LLAMA_RUN, **hf_type,
                                    **{"train.max_iters": 20}))
    out = tmp_path / "export"
    export_hf(run, out)
    capfd.readouterr()
    hf, info = transformers.AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert type(hf).__name__ == {"llama": "Llama", "mistral": "Mistral", "phi3": "Phi3"}[
        layout] + "ForSequenceClassification" and hf.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    assert not (out / "generation_config.json").exists()
    gen, hf_tok = proselab.load(run), transformers.AutoTokenizer.from_pretrained(out)
    texts = ["the film was superb", "the plot was boring and the ending was awful"]
    batch = hf_tok(texts, padding=True, return_tensors="pt")  # right padding with pad_token_id
    with torch.no_grad():
        ref = torch.softmax(hf.eval()(**batch).logits, -1)
    assert [list(c.probs.values()) for c in gen.classify(texts)] == [pytest.approx(r, abs=1e-5) for r in ref.tolist()]
    back = proselab.load(out)
    assert back.is_classifier and back.config.model.labels == ["neg", "neu", "pos"]
    assert [list(c.probs.values()) for c in back.classify(texts)] == [pytest.approx(r, abs=1e-5) for r in ref.tolist()]


def test_lora_on_a_llama_adapts_every_linear_layer_of_the_blocks_by_default(checkpoint, tmp_path, corpus):
    """Without train.lora_targets, LoRA on a gated feed-forward adds the gate projection to the
    default targets (q, k, v, o, gate, up, down, as QLoRA adapts them); given targets stay as given."""
    path, _, _ = checkpoint
    base = {"train.init_from": str(path), "model.block_size": 32, "train.max_iters": 2, "train.eval_interval": 2,
            "train.lora_rank": 2}
    proselab.train(None, tiny_overrides(corpus, tmp_path / "all", **base))
    assert json.loads((tmp_path / "all" / "config.json").read_text())["train"]["lora_targets"] == [
        "c_attn", "c_proj", "c_fc", "c_gate"]
    proselab.train(None, tiny_overrides(corpus, tmp_path / "some", **base, **{"train.lora_targets": ["c_attn"]}))
    assert json.loads((tmp_path / "some" / "config.json").read_text())["train"]["lora_targets"] == ["c_attn"]
    assert proselab.load(tmp_path / "all").complete("ROMEO:", max_new_tokens=3)[0].tokens
