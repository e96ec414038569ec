"""Seq2seq models (RNN with each attention, Transformer): the decoding invariants, masks,
training through the one loop, and the API built on it (generate, attention maps, eval)."""

import json
import random

import pytest
import torch

import proselab
from proselab.config import ConfigError, GenerationConfig, ModelConfig, load_config
from proselab.decoding import generate
from proselab.evaluation import evaluate_pairs
from proselab.models import Seq2SeqBatch, build_model
from proselab.training import train

VARIANTS = {
    "bahdanau": dict(arch="rnn", cell="lstm", attention="bahdanau"),
    "luong-general": dict(arch="rnn", cell="gru", attention="luong-general"),
    "luong-dot": dict(arch="rnn", cell="rnn", attention="luong-dot", bidirectional=False),
    "none": dict(arch="rnn", cell="lstm", attention="none"),
    "no-input-feeding": dict(arch="rnn", cell="lstm", attention="bahdanau", input_feeding=False),
    "transformer": dict(arch="transformer", n_layer=2, n_head=2),
}


def tiny(variant: str, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    base = dict(family="seq2seq", vocab_size=30, src_vocab_size=25, bos_id=1, n_embd=16, hidden_size=16, num_layers=2)
    cfg = ModelConfig(**{**base, **VARIANTS[variant], **extra})
    return build_model(cfg).eval()


def sources(B=3, S=7):
    g = torch.Generator().manual_seed(1)
    src = torch.randint(2, 25, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.bool)
    for r in range(1, B):
        mask[r, S - 2 * r :] = False  # rows of different lengths, right-padded
    return src, mask


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_steps_equal_the_teacher_forced_forward(variant):
    model = tiny(variant)
    src, mask = sources()
    tgt = torch.randint(2, 30, (3, 6))
    tgt[:, 0] = 1  # bos
    full, _ = model(Seq2SeqBatch(src, mask, tgt))  # (B, T, V)
    logits, state = model.start(Seq2SeqBatch(src, mask))
    steps = [logits]
    for t in range(1, tgt.size(1)):
        logits, state = model.step(tgt[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_beam_search_with_one_beam_is_greedy_and_padding_changes_nothing(variant):
    model = tiny(variant)
    src, mask = sources()
    cfg = GenerationConfig(do_sample=False, max_new_tokens=8, eos_token_id=0)
    greedy = generate(model, Seq2SeqBatch(src, mask), cfg)
    beam1 = generate(model, Seq2SeqBatch(src, mask), GenerationConfig(do_sample=False, max_new_tokens=8,
                                                                      eos_token_id=0, num_beams=1))
    assert [g.tokens for g in greedy] == [g.tokens for g in beam1]
    for r in range(3):  # each source alone, without padding, decodes the same
        n = int(mask[r].sum())
        alone = generate(model, Seq2SeqBatch(src[r : r + 1, :n], mask[r : r + 1, :n]), cfg)
        assert alone[0].tokens == greedy[r].tokens



@pytest.mark.parametrize("variant", VARIANTS)
def test_reorder_grouped_and_arbitrary_rows_match_a_fresh_start(variant):
    """Beam-style reorders (rows grouped by source) share the encoder memory, any other reorder
    gathers it; either way row i then decodes as a fresh start on source index[i] does."""
    model = tiny(variant)
    src, mask = sources()
    tokens = torch.tensor([4, 9, 13])
    _, state = model.start(Seq2SeqBatch(src, mask))
    tiled = model.reorder(state, torch.arange(3).repeat_interleave(2))  # 2 rows per source
    swapped = model.reorder(tiled, torch.tensor([1, 0, 2, 2, 5, 4]))  # still grouped: memory shared
    assert swapped.group == 2
    mixed = model.reorder(swapped, torch.tensor([4, 0, 3]))  # sources 2, 0, 1: gathered
    assert mixed.group == 1
    logits, _ = model.step(tokens, mixed)
    _, fresh = model.start(Seq2SeqBatch(src[[2, 0, 1]], mask[[2, 0, 1]]))
    expected, _ = model.step(tokens, fresh)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    grouped, _ = model.step(tokens.repeat_interleave(2), swapped)
    _, plain = model.start(Seq2SeqBatch(src.repeat_interleave(2, 0), mask.repeat_interleave(2, 0)))
    torch.testing.assert_close(grouped, model.step(tokens.repeat_interleave(2), plain)[0], atol=1e-5, rtol=1e-5)


def test_in_place_reorder_matches_the_copying_one_past_the_cache_doublings():
    """Beam search's ``reorder_`` (copies only the rows that change, in the caches) and the
    copying ``reorder`` give the same logits, step after step, also after the caches double
    (16 -> 32 -> 64 slots) with their new slots left uninitialised."""
    model = tiny("transformer")
    src, mask = sources()
    _, start = model.start(Seq2SeqBatch(src, mask))
    rows = torch.arange(3).repeat_interleave(4)  # 4 beams per source
    copied, in_place = model.reorder(start, rows), model.reorder(start, rows)
    g = torch.Generator().manual_seed(2)
    for _ in range(40):
        beams = torch.randint(0, 4, (3, 4), generator=g)  # each beam's source beam, within its source
        index = (torch.arange(3)[:, None] * 4 + beams).view(-1)
        copied, in_place = model.reorder(copied, index), model.reorder_(in_place, index)
        tokens = torch.randint(2, 30, (12,), generator=g)
        a, copied = model.step(tokens, copied)
        b, in_place = model.step(tokens, in_place)
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert in_place.k.size(3) == 64


@pytest.mark.parametrize("variant", ["luong-general", "transformer"])
def test_beam_search_n_best_and_sampling(variant):
    model = tiny(variant)
    src, mask = sources()
    beams = generate(model, Seq2SeqBatch(src, mask), GenerationConfig(
        do_sample=False, max_new_tokens=6, num_beams=4, num_return_sequences=2, eos_token_id=0))
    assert len(beams) == 6 and all(a.score >= b.score for a, b in zip(beams[::2], beams[1::2]))
    cfg = GenerationConfig(do_sample=True, max_new_tokens=6, seed=3, num_return_sequences=2, eos_token_id=0)
    a = generate(model, Seq2SeqBatch(src, mask), cfg)
    b = generate(model, Seq2SeqBatch(src, mask), cfg)
    assert [g.tokens for g in a] == [g.tokens for g in b] and len(a) == 6


def test_cross_attention_rows_are_distributions_over_real_source_tokens():
    src, mask = sources()
    tgt = torch.tensor([[1, 5, 6]] * 3)
    for variant in ("bahdanau", "transformer"):
        w = tiny(variant).cross_attention(Seq2SeqBatch(src, mask, tgt))  # (B, T, S)
        assert w.shape == (3, 3, 7)
        torch.testing.assert_close(w.sum(-1), torch.ones(3, 3))
        assert float(w.masked_select(~mask[:, None, :].expand_as(w)).abs().max()) == 0.0
    with pytest.raises(ValueError, match="no attention"):
        tiny("none").cross_attention(Seq2SeqBatch(src, mask, tgt))


@pytest.mark.parametrize("variant,logits_bias", [("transformer", False), ("transformer", True),
                                                  ("luong-general", False), ("bahdanau", False)])
def test_training_loss_with_smoothing_and_a_logits_bias_equals_the_plain_loss(variant, logits_bias):
    """The fused head loss (no float32 logits) against cross-entropy on the model's logits, with
    label smoothing and Marian's/BART's final logits bias (the RNNs: the head's own bias),
    gradients included."""
    from proselab.models.layers import lm_loss

    model = tiny(variant, dropout=0.0, **({"logits_bias": True} if logits_bias else {})).train()
    if logits_bias:
        model.logits_bias.normal_()
    if getattr(model.head, "bias", None) is not None:
        torch.nn.init.normal_(model.head.bias)
    model.label_smoothing = 0.1
    src, mask = sources()
    tgt, y = torch.randint(2, 30, (3, 5)), torch.randint(2, 30, (3, 5))
    y[1, 3:] = -100
    batch = Seq2SeqBatch(src, mask, tgt)
    losses, grads = [], []
    for fused in (True, False):
        model.zero_grad()
        logits, loss = model(batch, y) if fused else (None, lm_loss(model(batch)[0], y, 0.1))
        assert logits is None
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(losses[0], losses[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_scheduled_sampling_and_label_smoothing_apply_in_training_only():
    model = tiny("luong-general", teacher_forcing=0.5)
    model.label_smoothing = 0.1
    src, mask = sources()
    tgt, y = torch.randint(2, 30, (3, 5)), torch.randint(2, 30, (3, 5))
    batch = Seq2SeqBatch(src, mask, tgt)
    with torch.no_grad():
        _, eval_loss = model(batch, y)
        model.label_smoothing = 0.0
        _, plain = model(batch, y)
    assert float(eval_loss) == float(plain)  # eval mode: no smoothing, gold inputs
    model.train()
    model.label_smoothing = 0.1
    _, smoothed = model(batch, y)
    smoothed.backward()
    assert smoothed.item() != plain.item()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_shared_embeddings_and_tied_head_are_one_matrix():
    model = tiny("transformer", share_embeddings=True, src_vocab_size=0)
    assert model.src_emb.weight is model.tgt_emb.weight is model.head.weight


@pytest.mark.parametrize("overrides, match", [
    ({"model.attention": "luong-dot"}, "luong-dot"),
    ({"model.attention": "concat"}, "model.attention must be one of"),
    ({"model.share_embeddings": True, "data.joint_vocab": False}, "data.joint_vocab=true"),
    ({"model.teacher_forcing": 1.5}, "teacher_forcing"),
    ({"model.arch": "cnn"}, "model.arch"),
    ({"train.label_smoothing": 1.0}, "label_smoothing"),
    ({"data.bad_lines": "ignore"}, "data.bad_lines"),
    ({"model.family": "gpt", "model.n_head": 8, "train.label_smoothing": 0.1}, "for seq2seq models"),
])
def test_bad_seq2seq_config_names_the_field(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, {"model.family": "seq2seq", "model.n_embd": 512, "model.hidden_size": 512, **overrides})


# ---- training through the one loop ------------------------------------------------------

def write_reverse(path, n, seed):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        toks = [rng.choice("abcdefgh") for _ in range(rng.randint(1, 6))]
        lines.append(" ".join(toks) + "\t" + " ".join(reversed(toks)))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def s2s_overrides(tmp_path, **extra):
    o = {
        "data.dataset": str(write_reverse(tmp_path / "train.tsv", 300, 0)),
        "data.val_dataset": str(write_reverse(tmp_path / "dev.tsv", 20, 1)),
        "data.tokenizer": "char",
        "model.family": "seq2seq",
        "model.n_embd": 24, "model.hidden_size": 24, "model.num_layers": 1,
        "model.n_layer": 1, "model.n_head": 2,
        "train.out_dir": str(tmp_path / "run"),
        "train.batch_size": 16, "train.max_iters": 30, "train.lr": 5e-3, "train.warmup_iters": 2,
        "train.eval_interval": 15, "train.eval_iters": 2, "train.log_interval": 5, "train.eval_bleu_samples": 8,
        "train.progress": False, "train.dtype": "float32", "train.device": "cpu",
    }
    o.update(extra)
    return o


@pytest.mark.parametrize("arch", ["rnn", "transformer"])
def test_train_generate_attention_eval_and_resume(tmp_path, arch):
    result = train(None, s2s_overrides(tmp_path, **{"model.arch": arch, "train.label_smoothing": 0.1}))
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    assert vals[-1] < vals[0]
    assert any("val_bleu" in r and "val_chrf" in r for r in records)
    assert "bleu" in result.val_scores and result.val_loss is not None
    assert not (run / "src_tokenizer.json").exists()  # joint vocabulary: one tokenizer

    gen = proselab.load(run)
    out = gen.generate(["a b c", "h g"], do_sample=False, max_new_tokens=12)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    amap = gen.attention("a b c", max_new_tokens=12)
    assert amap.weights.shape == (len(amap.tgt_tokens), len(amap.src_tokens))
    assert amap.src_tokens[-1] == "<|endoftext|>"

    pairs = write_reverse(tmp_path / "test.tsv", 10, 2)
    scores = evaluate_pairs(run, str(pairs), out=tmp_path / "hyp.txt", num_beams=3, max_new_tokens=12)
    assert scores["pairs"] == 10 and 0 <= scores["bleu"] <= 100 and "rougeL" in scores
    assert scores["bleu_signature"].startswith("nrefs:1")
    assert len((tmp_path / "hyp.txt").read_text().splitlines()) == 10

    resumed = train(None, {"train.init_from": "resume", "train.out_dir": str(run), "train.max_iters": 40})
    assert resumed.step == 40


def test_reverse_task_is_learned_with_attention(tmp_path):
    """A small bidirectional LSTM with Luong attention learns to reverse short strings."""
    result = train(None, s2s_overrides(tmp_path, **{
        "data.dataset": str(write_reverse(tmp_path / "big.tsv", 2000, 5)),
        "data.tokenizer": "word", "model.n_embd": 32, "model.hidden_size": 128, "model.tie_weights": False,
        "train.lr": 3e-3, "train.max_iters": 300, "train.batch_size": 32, "train.eval_interval": 300,
        "train.eval_bleu_samples": 0}))
    gen = proselab.load(result.run_dir)
    assert gen.generate("a b c d e", do_sample=False, max_new_tokens=20) == "e d c b a"
    assert result.val_loss < 0.2


def test_separate_vocabularies_and_length_filter(tmp_path):
    with pytest.warns(UserWarning, match="left out"):
        train(None, s2s_overrides(tmp_path, **{"data.joint_vocab": False, "data.tokenizer": "word",
                                               "data.max_src_len": 4, "train.max_iters": 4}))
    run = tmp_path / "run"
    assert (run / "src_tokenizer.json").is_file()
    gen = proselab.load(run)
    assert gen.src_tokenizer is not gen.tokenizer
    assert gen.config.model.src_vocab_size == gen.src_tokenizer.vocab_size
    gen.generate("a b", do_sample=False, max_new_tokens=4)
    gen.chat([{"role": "user", "content": "a b"}], do_sample=False, max_new_tokens=4)


def test_family_and_data_must_agree(tmp_path):
    o = s2s_overrides(tmp_path)
    with pytest.raises(ConfigError, match="model.family=seq2seq"):
        train(None, {**o, "model.family": "gpt"})
    text = tmp_path / "corpus.txt"
    text.write_text("some text " * 200)
    with pytest.raises(ValueError, match="neither a built-in pairs dataset nor an existing file"):
        train(None, {**o, "data.dataset": str(tmp_path / "missing.tsv")})
    with pytest.raises(ValueError, match="sentence pairs are"):
        train(None, {**o, "data.dataset": str(text), "data.val_dataset": ""})


def test_eval_pairs_refuses_a_language_model_and_empty_sources(tmp_path, corpus):
    from conftest import tiny_overrides

    train(None, tiny_overrides(corpus, tmp_path / "lm"))
    with pytest.raises(ValueError, match="encoder-decoder"):
        evaluate_pairs(tmp_path / "lm", str(write_reverse(tmp_path / "p.tsv", 3, 0)))
    train(None, s2s_overrides(tmp_path, **{"train.max_iters": 2}))
    gen = proselab.load(tmp_path / "run")
    with pytest.raises(ValueError, match="source 0 is empty"):
        gen.generate(" ")
    from proselab.evaluation import evaluate

    with pytest.raises(ValueError, match="--pairs"):
        evaluate(gen, str(corpus))


def test_cli_generate_eval_pairs_attention_and_chat(tmp_path, capsys):
    from proselab.cli import main

    train(None, s2s_overrides(tmp_path, **{"train.max_iters": 4}))
    run = str(tmp_path / "run")
    assert main(["generate", run, "--prompt", "a b", "--greedy", "--max-new-tokens", "5"]) == 0
    assert main(["generate", run]) == 2
    assert "--prompt TEXT" in capsys.readouterr().err
    pairs = str(tmp_path / "dev.tsv")
    assert main(["eval", run, "--pairs", pairs, "--num-beams", "2", "--max-new-tokens", "5",
                 "--out", str(tmp_path / "hyp.txt")]) == 0
    out = capsys.readouterr().out
    assert "BLEU" in out and "chrF" in out and "ROUGE-L" in out and "sentences/s" in out
    assert len((tmp_path / "hyp.txt").read_text().splitlines()) == 20
    assert main(["eval", run]) == 2  # neither --data nor --pairs
    png = tmp_path / "att.png"
    assert main(["attention", run, "--src", "a b c", "--out", str(png), "--max-new-tokens", "5"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from proselab.cli import cmd_chat, build_parser

    args = build_parser().parse_args(["chat", run, "--greedy", "--max-new-tokens", "3"])
    inputs = iter(["a b", "/reset", "c", "/quit"])
    assert cmd_chat(args, [], read=lambda _: next(inputs)) == 0


def test_best_by_bleu_keeps_the_weights_of_the_best_decoded_eval(tmp_path, monkeypatch):
    """train.best_by=bleu: model.safetensors is replaced at the eval with the highest val BLEU,
    not the lowest loss; a resumed run keeps comparing against that BLEU."""
    from proselab import training
    from proselab.tasks import BaseTask, Seq2SeqTask

    bleus = iter([5.0, 30.0, 10.0, 40.0, 20.0])
    losses = iter([1.0, 2.0, 3.0, 4.0, 5.0])  # rising: by loss the first eval would stay best
    monkeypatch.setattr(Seq2SeqTask, "decoded_scores", lambda self, model, n: {"bleu": next(bleus), "chrf": 0.0})
    monkeypatch.setattr(BaseTask, "estimate_loss", lambda self, model, device, dtype: next(losses))
    saves = []
    real_save = training.Trainer.save
    monkeypatch.setattr(training.Trainer, "save",
                        lambda self, snap, best: (saves.append((self.step, best)), real_save(self, snap, best)))
    overrides = s2s_overrides(tmp_path, **{"train.best_by": "bleu", "train.max_iters": 20, "train.eval_interval": 10,
                                           "train.final_eval": False})
    train(None, overrides)  # evals at steps 0, 10, 20
    assert saves == [(0, True), (10, True), (20, False)]
    saves.clear()
    train(None, {**overrides, "train.init_from": "resume", "train.max_iters": 40})  # evals at 30, 40
    assert saves == [(30, True), (40, False)]
    with pytest.raises(ConfigError, match="best_by"):
        load_config(None, {"model.family": "gpt", "train.best_by": "bleu"})


def test_truncated_sources_in_training_generation_and_evaluation(tmp_path):
    """data.truncate_src=2: the encoder reads a source's first two tokens everywhere, so two
    sources that start alike translate alike."""
    from proselab.data.seq2seq import prepare_pairs

    overrides = s2s_overrides(tmp_path, **{"data.tokenizer": "word", "data.truncate_src": 2, "train.max_iters": 4})
    data = prepare_pairs(load_config(None, overrides).data)
    assert max(len(s) for s in data.train.src + data.val.src) == 3  # two tokens and eos
    train(None, overrides)
    gen = proselab.load(tmp_path / "run")
    cfg = dict(do_sample=False, max_new_tokens=6)
    assert gen.generate("a b c d e", **cfg) == gen.generate("a b", **cfg)
    assert len(gen.attention("a b c d e", **cfg).src_tokens) == 3
    pairs = tmp_path / "two.tsv"
    pairs.write_text("a b c d e\tx\na b\tx\n", encoding="utf-8")
    evaluate_pairs(tmp_path / "run", str(pairs), out=tmp_path / "hyp.txt", metrics=("bleu",), max_new_tokens=6)
    first, second = (tmp_path / "hyp.txt").read_text().splitlines()
    assert first == second
    with pytest.raises(ConfigError, match="truncate_src"):
        load_config(None, {"data.truncate_src": -1})
