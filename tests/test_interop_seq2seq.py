"""Marian, BART and T5 (v1.0 and v1.1) checkpoints in proselab's TransformerSeq2Seq: parity with
`transformers` on tiny randomly initialised models saved here (no download) — encoder output and
logits within 1e-4, greedy and beam search token for token through proselab's decoding engine,
the cached step against a full forward pass — and the way back: exports that `transformers`
loads with no missing or unexpected keys and the same logits."""

import dataclasses
import json
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from proselab.checkpoint import RunError  # noqa: E402
from proselab.data.batch import Seq2SeqBatch  # noqa: E402
from proselab.decoding import generate  # noqa: E402
from proselab.interop import hf_config, load_hf_model  # noqa: E402
from proselab.interop.common import read_state_dict  # noqa: E402

from conftest import train_spm, write_marian_tokenizer  # noqa: E402

V = 64
SIZES = dict(vocab_size=V, d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
             decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=40)
CONFIGS = {
    "marian": (transformers.MarianConfig, dict(SIZES, pad_token_id=V - 1, eos_token_id=0, decoder_start_token_id=V - 1,
                                               scale_embedding=True, activation_function="swish")),
    "bart": (transformers.BartConfig, dict(SIZES, forced_bos_token_id=0)),
    "t5": (transformers.T5Config, dict(vocab_size=V, d_model=16, d_kv=8, d_ff=24, num_layers=2, num_decoder_layers=1,
                                       num_heads=2, relative_attention_num_buckets=8,
                                       relative_attention_max_distance=16, decoder_start_token_id=0)),
    "t5v11": (transformers.T5Config, dict(vocab_size=V, d_model=16, d_kv=8, d_ff=24, num_layers=1, num_heads=2,
                                          relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                          feed_forward_proj="gated-gelu", decoder_start_token_id=0)),
}
GENERATION = {  # what the checkpoints' generation_config.json say besides transformers' defaults
    "marian": {"bad_words_ids": [[V - 1]], "num_beams": 3, "max_length": 20},
    "bart": {"forced_bos_token_id": 0, "early_stopping": True, "no_repeat_ngram_size": 3},
    "t5": {},
    "t5v11": {},
}
NAMES = list(CONFIGS)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _save(name, d):
    """A tiny random ``name`` checkpoint in ``d``, as its hub checkpoints lay it out."""
    config_class, kwargs = CONFIGS[name]
    torch.manual_seed(sorted(CONFIGS).index(name))
    model = transformers.AutoModelForSeq2SeqLM.from_config(config_class(**kwargs))
    if name in ("marian", "bart"):  # a bias towards ending, so some beams finish early
        model.final_logits_bias[0, kwargs.get("eos_token_id", 2)] = 2.5
    model.save_pretrained(str(d))
    gen = json.loads((d / "generation_config.json").read_text())
    (d / "generation_config.json").write_text(json.dumps({**gen, **GENERATION[name]}))
    if name == "t5v11":  # as Flan-T5 ships: a separate head, tie_word_embeddings false
        from safetensors.torch import load_file, save_file

        state = load_file(str(d / "model.safetensors"))
        state["lm_head.weight"] = torch.randn(V, 16) * 0.5
        save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(tie_word_embeddings=False)
        cfg.pop("scale_decoder_outputs", None)
        (d / "config.json").write_text(json.dumps(cfg))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """{name: (directory, transformers model, proselab model, proselab Config)}."""
    out = {}
    for name in NAMES:
        d = tmp_path_factory.mktemp(name)
        _save(name, d)
        hf = _quiet(transformers.AutoModelForSeq2SeqLM.from_pretrained, str(d)).eval()
        model, cfg = load_hf_model(d)
        out[name] = (d, hf, model, cfg)
    return out


def _sources(seed=0, B=3, S=9):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, V - 2, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[1, 6:] = False
    mask[2, 3:] = False
    return src, mask


@pytest.mark.parametrize("name", NAMES)
def test_encoder_output_and_logits_match_transformers(ckpts, name):
    _, hf, model, cfg = ckpts[name]
    src, mask = _sources()
    tgt = torch.randint(3, V - 2, (3, 7), generator=torch.Generator().manual_seed(1))
    tgt[:, 0] = cfg.model.bos_id
    with torch.no_grad():
        ref_enc = hf.get_encoder()(input_ids=src, attention_mask=mask.long()).last_hidden_state
        ref = hf(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
        enc, _ = model.encode(Seq2SeqBatch(src, mask))
        logits, _ = model(Seq2SeqBatch(src, mask, tgt))
    assert (ref_enc - enc)[mask].abs().max() < 1e-4
    assert (ref - logits).abs().max() < 1e-4
    assert ref.abs().max() > 0.1  # not a model of zeros


@pytest.mark.parametrize("name", NAMES)
def test_cached_step_equals_full_forward(ckpts, name):
    _, _, model, cfg = ckpts[name]
    src, mask = _sources(seed=2)
    tgt = torch.randint(3, V - 2, (3, 8), generator=torch.Generator().manual_seed(3))
    tgt[:, 0] = cfg.model.bos_id
    with torch.no_grad():
        full, _ = model(Seq2SeqBatch(src, mask, tgt))
        logits, state = model.start(Seq2SeqBatch(src, mask, None, 4))  # a small cache: it grows on the way
        steps = [logits]
        for t in range(1, tgt.size(1)):
            logits, state = model.step(tgt[:, t], state)
            steps.append(logits)
    assert (torch.stack(steps, 1) - full).abs().max() < 1e-5


def test_merged_states_decode_as_alone_with_relative_positions(ckpts):
    """Rows of different lengths merged into one state (the server's batching): T5's relative
    bias depends only on key - query, so each row's logits stay its own."""
    _, _, model, cfg = ckpts["t5"]
    src, mask = _sources(seed=4)
    tgt = torch.randint(3, V - 2, (3, 6), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        alone = []
        for r in range(3):
            _, s = model.start(Seq2SeqBatch(src[r : r + 1], mask[r : r + 1]))
            for t in range(r + 1):
                _, s = model.step(tgt[r : r + 1, t], s)
            alone.append(s)
        merged = model.merge(alone)
        logits, _ = model.step(tgt[:, 5], merged)
        for r in range(3):
            ref, _ = model.step(tgt[r : r + 1, 5], alone[r])
            assert (ref[0] - logits[r]).abs().max() < 1e-5


def _hf_generate(hf, src, mask, **kw):
    with torch.no_grad():
        out = _quiet(hf.generate, input_ids=src, attention_mask=mask.long(), do_sample=False, **kw)
    eos, pad = hf.generation_config.eos_token_id, hf.generation_config.pad_token_id
    rows = []
    for row in out[:, 1:].tolist():  # after the decoder's start token
        if eos in row:
            row = row[: row.index(eos)]
        rows.append(row)
    return rows, pad


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("beams", [1, 4])
def test_greedy_and_beam_search_equal_transformers_generate(ckpts, name, beams):
    """Through proselab's engine with the checkpoint's generation defaults (forced bos and eos,
    Marian's banned <pad>, BART's no-repeat n-grams), token for token."""
    _, hf, model, cfg = ckpts[name]
    src, mask = _sources(seed=6)
    kw = dict(max_new_tokens=11, num_beams=beams)
    if beams > 1:
        kw.update(num_return_sequences=2, length_penalty=0.6)
    ref, _ = _hf_generate(hf, src, mask, **kw)
    g = dataclasses.replace(cfg.generation, do_sample=False, **kw)
    ours = generate(model, Seq2SeqBatch(src, mask), g)
    assert [o.tokens for o in ours] == ref
    assert any(len(r) < 11 for r in ref) or name.startswith("t5")  # some finish before max_new_tokens


def test_generation_config_becomes_the_run_defaults(ckpts):
    marian, bart = ckpts["marian"][3].generation, ckpts["bart"][3].generation
    assert (marian.num_beams, marian.max_new_tokens, marian.suppress_tokens, marian.do_sample) == (3, 19, [V - 1], False)
    assert (marian.eos_token_id, marian.forced_eos_token_id) == (0, 0)
    assert (bart.forced_bos_token_id, bart.early_stopping, bart.no_repeat_ngram_size) == (0, True, 3)
    m = ckpts["bart"][3].model
    assert (m.bos_id, m.src_prefix_id, m.tgt_prefix_id, m.positions, m.hf_type) == (2, 0, 0, "learned", "bart")
    t5, t5v11 = ckpts["t5"][3].model, ckpts["t5v11"][3].model
    assert (t5.tie_weights, t5.head_scale, t5.gated_ffn) == (True, True, False)
    assert (t5v11.tie_weights, t5v11.head_scale, t5v11.gated_ffn) == (False, False, True)


def _edit(src_dir, dst, change, file="config.json"):
    import shutil

    shutil.copytree(src_dir, dst)
    data = json.loads((dst / file).read_text())
    data.update(change)
    (dst / file).write_text(json.dumps(data))
    return dst


def test_unsupported_options_are_one_line_errors(ckpts, tmp_path):
    cases = [("bart", {"add_bias_logits": True}, "add_bias_logits"),
             ("bart", {"normalize_before": True}, "normalize_before"),
             ("t5", {"feed_forward_proj": "gated-tanhshrink"}, "feed_forward_proj"),
             ("t5", {"d_kv": 4}, "d_kv"),
             ("marian", {"activation_function": "mish"}, "activation"),
             ("marian", {"decoder_ffn_dim": 8}, "decoder_ffn_dim"),
             ("t5", {"model_type": "pegasus"}, "model_type 'pegasus'")]
    for i, (name, change, words) in enumerate(cases):
        d = _edit(ckpts[name][0], tmp_path / str(i), change)
        with pytest.raises(RunError, match=words):
            hf_config(d)


def test_weights_that_do_not_match_are_refused(ckpts, tmp_path):
    from safetensors.torch import load_file, save_file

    d = _edit(ckpts["bart"][0], tmp_path / "bart", {})
    state = load_file(str(d / "model.safetensors"))
    state.pop("model.encoder.layers.1.fc1.weight")
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(RunError, match="missing: \\['model.encoder.layers.1.fc1.weight'\\]"):
        load_hf_model(d)
    assert set(read_state_dict(ckpts["bart"][0])) > set(state)


# --- with the checkpoints' tokenizers: proselab.load, fine-tuning through `train`, export ------------

PAIRS = "/work/shared/data/bible-en-es/train.short.tsv"
TEXTS = ["In the beginning God created the heaven and the earth.", "And God said, Let there be light"]


def _pairs(n=48):
    with open(PAIRS, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t")[:2] for _, line in zip(range(n), f)]


def _tokenizer_files(name, d):
    """The tokenizer files ``name``'s checkpoints ship, trained here on a few pairs; the vocabulary size."""
    pairs = _pairs(300)
    en, es = [a for a, _ in pairs], [b for _, b in pairs]
    if name == "marian":
        return write_marian_tokenizer(d, en, es, 200)
    if name == "t5":
        (d / "spiece.model").write_bytes(train_spm(en + es, 200, pad_id=0, eos_id=1, unk_id=2, bos_id=-1))
        (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 100}))
        return 300
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train_from_iterator(en + es, trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                                        show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf.model.save(str(d))
    vocab = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
    vocab["<mask>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BartTokenizer"}))
    return len(vocab)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """{name: directory} of tiny Marian, BART and T5 checkpoints with their tokenizer files."""
    out = {}
    for name in ("marian", "bart", "t5"):
        d = tmp_path_factory.mktemp(f"full_{name}")
        size = _tokenizer_files(name, d)
        config_class, kwargs = CONFIGS[name]
        kwargs = {**kwargs, "vocab_size": size}
        if name == "bart":
            kwargs.update(max_position_embeddings=128)
        if name == "marian":
            kwargs.update(pad_token_id=size - 1, decoder_start_token_id=size - 1)
        torch.manual_seed(7)
        transformers.AutoModelForSeq2SeqLM.from_config(config_class(**kwargs)).save_pretrained(str(d))
        out[name] = d
    return out


def _hf_tokenizer(d):
    return _quiet(transformers.AutoTokenizer.from_pretrained, str(d))


@pytest.mark.parametrize("name", ["marian", "bart", "t5"])
def test_load_a_checkpoint_directory_and_generate_like_transformers(full, name):
    import proselab

    d = full[name]
    gen = proselab.load(d, device="cpu")
    hf, tok = _quiet(transformers.AutoModelForSeq2SeqLM.from_pretrained, str(d)).eval(), _hf_tokenizer(d)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    kw = dict(max_new_tokens=7, num_beams=4, num_return_sequences=2, length_penalty=0.6)
    with torch.no_grad():
        ref = _quiet(hf.generate, **enc, do_sample=False, **kw)[:, 1:].tolist()
    eos = hf.generation_config.eos_token_id
    ref = [r[: r.index(eos)] if eos in r else r for r in ref]
    assert [g.tokens for g in gen.complete(TEXTS, do_sample=False, **kw)] == ref
    batch = gen._sources(TEXTS[:1])
    assert batch.src[0].tolist() == tok(TEXTS[:1]).input_ids[0]  # bos + ids + eos (BART), ids + eos


def _pairs_file(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{a}\t{b}\n" for a, b in _pairs()), encoding="utf-8")
    return path


def _train(d, data, out, **extra):
    import proselab

    overrides = {"data.dataset": str(data), "train.init_from": str(d), "train.out_dir": str(out), "train.max_iters": 3,
                 "train.batch_size": 4, "train.eval_interval": 3, "train.eval_iters": 1, "train.progress": False,
                 "train.device": "cpu", "train.dtype": "float32", "train.eval_bleu_samples": 2, "data.truncate_src": 60,
                 "data.max_tgt_len": 60, "generation.max_new_tokens": 20, **extra}
    _quiet(proselab.train, None, overrides)


def _export_and_compare(run, out):
    """Export ``run``; transformers loads it with no missing or unexpected keys and the same logits."""
    import proselab
    from proselab.cli import main

    assert main(["export", str(run), str(out)]) == 0
    hf, info = _quiet(transformers.AutoModelForSeq2SeqLM.from_pretrained, str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    gen = proselab.load(run, device="cpu")
    src, mask = _sources(seed=9)
    src = src % 100 + 3
    tgt = torch.randint(3, 100, (3, 5), generator=torch.Generator().manual_seed(1))
    tgt[:, 0] = gen.config.model.bos_id
    with torch.no_grad():
        ref = hf.eval()(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
        ours, _ = gen.model(Seq2SeqBatch(src, mask, tgt))
    assert (ref - ours).abs().max() < 1e-4
    return gen, hf


@pytest.mark.parametrize("name", ["marian", "bart", "t5"])
def test_an_imported_checkpoint_exports_as_it_came(full, tmp_path, name):
    _export_and_compare(full[name], tmp_path / "export")
    ref, back = _hf_tokenizer(full[name]), _hf_tokenizer(tmp_path / "export")
    assert back(TEXTS, text_target=TEXTS).input_ids == ref(TEXTS, text_target=TEXTS).input_ids


@pytest.mark.parametrize("name,extra", [
    ("bart", {"model.family": "seq2seq", "train.label_smoothing": 0.1}),
    ("marian", {"train.freeze_layers": 2}),
    ("t5", {"train.lora_rank": 2, "train.lora_targets": ["c_attn", "c_q", "c_kv", "c_fc"]}),
])
def test_fine_tune_a_checkpoint_then_export_it(full, tmp_path, name, extra):
    """Full, frozen-layer and LoRA (cross-attention among the targets) fine-tuning through the one
    loop, starting from the checkpoint's weights and its tokenizers; the run exports to the
    checkpoint's layout."""
    import proselab

    d, run = full[name], tmp_path / "run"
    _train(d, _pairs_file(tmp_path), run, **extra)
    gen, hf = _export_and_compare(run, tmp_path / "export")
    base = load_hf_model(d)[0].state_dict()
    tuned = gen.model.state_dict()
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed, "training changed nothing"
    if name == "marian":  # freeze_layers=2: the embeddings and the encoder's two blocks stayed
        assert not any(k.startswith(("encoder.", "src_emb")) for k in changed)
        assert any(k.startswith("decoder.0.") for k in changed)
    if name == "t5":  # LoRA merged into the adapted layers only; cross-attention among them
        assert any(".cross.c_kv" in k for k in changed) and not any("ln_" in k for k in changed)
    back = proselab.load(tmp_path / "export", device="cpu")  # the export imports again
    assert [g.tokens for g in back.complete(TEXTS[:1], do_sample=False, max_new_tokens=5)] == \
        [g.tokens for g in gen.complete(TEXTS[:1], do_sample=False, max_new_tokens=5)]


def test_training_batches_follow_the_checkpoints_layout(full, tmp_path):
    """Pairs train as transformers trains them: the source and the labels are what its tokenizer
    gives (BART: <s> ids </s>; Marian, T5: ids </s>) and the decoder inputs are the labels shifted
    right behind the decoder's start token (BART's </s>, Marian's and T5's <pad>)."""
    from proselab.data.seq2seq import prepare_pairs
    from proselab.interop import load_hf_tokenizers

    for name in ("bart", "marian", "t5"):
        cfg = hf_config(full[name])
        cfg.data.dataset = str(_pairs_file(tmp_path))
        tok, src = load_hf_tokenizers(full[name])
        data = prepare_pairs(cfg.data, tok, src, cfg.model)
        batch = data.batch("train", torch.tensor([0]))
        source, target = data.train.text[0]
        ref = _hf_tokenizer(full[name])(source, text_target=target)
        assert data.train.src[0] == ref["input_ids"]
        assert batch.targets[0].tolist() == ref["labels"]
        assert batch.inputs.tgt[0].tolist() == [cfg.model.bos_id, *ref["labels"][:-1]]


def test_attention_map_of_an_imported_checkpoint(full):
    import proselab

    gen = proselab.load(full["bart"], device="cpu")
    att = gen.attention(TEXTS[0], max_new_tokens=4)
    assert att.weights.shape == (len(att.tgt_tokens), len(att.src_tokens))
    assert att.src_tokens[0] == "<s>" and att.src_tokens[-1] == "</s>"
    torch.testing.assert_close(att.weights.sum(-1), torch.ones(len(att.tgt_tokens)))


def test_bad_checkpoint_directories_are_one_line_errors(full, tmp_path):
    import shutil

    import proselab

    marian = tmp_path / "marian"
    shutil.copytree(full["marian"], marian)
    (marian / "source.spm").unlink()
    with pytest.raises(RunError, match="no usable tokenizer"):
        proselab.load(marian, device="cpu")
    # without generation_config.json, an older checkpoint's config.json holds its decoding settings
    (marian / "generation_config.json").unlink()
    cfg = json.loads((marian / "config.json").read_text())
    (marian / "config.json").write_text(json.dumps({**cfg, "num_beams": 5, "bad_words_ids": [[cfg["pad_token_id"]]]}))
    gen = hf_config(marian).generation
    assert (gen.num_beams, gen.suppress_tokens, gen.do_sample) == (5, [cfg["pad_token_id"]], False)
    (marian / "config.json").write_text(json.dumps({**cfg, "bad_words_ids": [[1, 2]]}))
    with pytest.raises(RunError, match="bad_words_ids"):
        hf_config(marian)


@pytest.mark.parametrize("key,value,words", [
    ("model.norm", "batchnorm", "model.norm must be layernorm or rmsnorm"),
    ("model.positions", "rotary", "model.positions must be sinusoidal, learned or relative"),
    ("model.activation", "tanh", "model.activation must be gelu_tanh, gelu, relu or silu"),
    ("model.rel_buckets", 2, "model.rel_buckets must be >= 4"),
    ("model.ffn_dim", -1, "model.ffn_dim must be >= 0"),
    ("model.hf_type", "pegasus", "model.hf_type must be marian, bart, t5 or empty"),
    ("generation.forced_bos_token_id", -2, "generation.forced_bos_token_id must be a token id >= 0 or null"),
])
def test_bad_layout_values_are_config_errors(key, value, words):
    from proselab.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=words):
        load_config(None, {"model.family": "seq2seq", "model.arch": "transformer", key: value})


def test_the_own_preset_keeps_proselabs_layout():
    """bible-en-es (and every run saved before these options) builds the pre-LN Transformer it did."""
    from proselab.config import load_config
    from proselab.models import build_model

    m = load_config("bible-en-es").model
    assert (m.norm_first, m.norm, m.positions, m.activation, m.gated_ffn, m.embed_scale, m.attn_scale, m.hf_type) == \
        (True, "layernorm", "sinusoidal", "gelu_tanh", False, True, True, "")
    model = build_model(dataclasses.replace(m, vocab_size=50, bos_id=1, n_layer=1, n_embd=16, n_head=2))
    names = set(model.state_dict())
    assert {"src_emb.weight", "encoder.0.attn.c_attn.weight", "decoder.0.cross.c_kv.weight", "enc_ln.weight",
            "dec_ln.weight", "decoder.0.mlp.c_fc.weight"} <= names
    assert not any(k.startswith(("src_pos", "enc_rel", "src_emb_ln", "logits_bias")) or "c_gate" in k for k in names)


def test_eval_pairs_on_a_checkpoint_reads_sources_with_its_source_tokenizer(full, tmp_path, capsys):
    """`proselab eval DIR --pairs`: Marian's sources are segmented by source.spm, as transformers does."""
    import proselab
    from proselab.cli import main

    gen = proselab.load(full["marian"], device="cpu")
    src = gen.src_tokenizer
    assert src is not gen.tokenizer and src.encode(TEXTS[0]) + [0] == _hf_tokenizer(full["marian"])(TEXTS[0]).input_ids
    assert main(["eval", str(full["marian"]), "--pairs", str(_pairs_file(tmp_path)), "--max-new-tokens", "4",
                 "--json"]) == 0
    assert "bleu" in capsys.readouterr().out


def test_a_marian_checkpoint_teaches_a_student_from_scratch_with_its_own_tokenizers(full, tmp_path):
    """Word-level KD from a Hugging Face encoder-decoder: the student takes the checkpoint's own
    source and target tokenizers (Marian: one sentencepiece model a side), and trains."""
    import proselab

    d = full["marian"]
    out = tmp_path / "student"
    overrides = {"data.dataset": str(_pairs_file(tmp_path)), "train.out_dir": str(out), "train.max_iters": 4,
                 "train.batch_size": 4, "train.eval_interval": 2, "train.eval_iters": 1, "train.progress": False,
                 "train.device": "cpu", "train.dtype": "float32", "train.eval_bleu_samples": 0,
                 "data.truncate_src": 60, "data.max_tgt_len": 60, "model.family": "seq2seq",
                 "model.arch": "transformer", "model.n_layer": 1, "model.n_head": 2, "model.n_embd": 16, "train.distill.teacher": str(d),
                 "train.distill.alpha": 0.5}
    res = _quiet(proselab.train, None, overrides)
    assert res.step == 4 and res.val_loss == res.val_loss
    teacher = proselab.load(d, device="cpu")
    student = proselab.load(out, device="cpu")
    assert student.tokenizer.encode(TEXTS[0]) == teacher.tokenizer.encode(TEXTS[0])
    assert student._sources(TEXTS[:1]).src.tolist() == teacher._sources(TEXTS[:1]).src.tolist()


def test_a_student_sharing_embeddings_is_refused_a_teacher_with_a_source_tokenizer(full, tmp_path):
    import proselab
    from proselab.config import ConfigError

    with pytest.raises(ConfigError, match="model.share_embeddings=false"):
        proselab.train("bible-en-es-small-kd", {"data.dataset": str(_pairs_file(tmp_path)),
                                                "data.val_dataset": str(_pairs_file(tmp_path)),
                                                "train.out_dir": str(tmp_path / "s"),
                                                "train.distill.teacher": str(full["marian"])})
    assert not (tmp_path / "s").exists()
