"""Speculative decoding: the GPT's extend/truncate against a plain forward pass; greedy tokens
equal to the model's own (windows sliding, processors on, any draft); samples that follow the
model's distribution, not the draft's; fewer passes of the model with a good draft; the API,
the CLI and their errors."""

import itertools
import json
from collections import Counter

import pytest
import torch

import proselab
from proselab.cli import main
from proselab.config import GenerationConfig, ModelConfig
from proselab.data.batch import Seq2SeqBatch
from proselab.decoding import generate
from proselab.decoding.processors import apply_processors, build_processors
from proselab.models import build_model
from proselab.training import train

from conftest import tiny_overrides


def _model(seed: int, vocab: int = 50, scale: float = 0.5, **kw) -> torch.nn.Module:
    """A random GPT whose weights are large enough for peaked, varied next-token distributions, in
    float64: a pass over K tokens and K one-token steps round differently, and in float64 that
    cannot turn a near-tie into another greedy token on any CPU."""
    torch.manual_seed(seed)
    m = build_model(ModelConfig(family="gpt", dropout=0.0, vocab_size=vocab, **kw)).eval().double()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, scale)
    return m


GPT2 = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 24}
LLAMA = {"n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 32, "block_size": 24, "rope": True, "norm": "rmsnorm",
         "gated_ffn": True, "activation": "silu", "bias": False}


@pytest.mark.parametrize("kind", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_extend_and_truncate_match_a_plain_forward_pass(kind):
    m = _model(0, **kind)
    prompt, more = torch.tensor([[3, 1, 4, 1, 5, 9]]), torch.tensor([[2, 6, 5, 3]])
    _, state = m.start(prompt)
    logits, state = m.extend(more, state)  # (1, 4, V)
    full, _ = m(torch.cat([prompt, more], 1))
    torch.testing.assert_close(logits[0], full[0, -4:], atol=1e-10, rtol=1e-10)
    state = m.truncate(state, 3)  # keep 2 of the 4
    step, state = m.step(torch.tensor([7]), state)
    full, _ = m(torch.tensor([[3, 1, 4, 1, 5, 9, 2, 7]]))
    torch.testing.assert_close(step[0], full[0, -1], atol=1e-10, rtol=1e-10)
    assert m.room(state) == 24 - 8
    with pytest.raises(AssertionError, match="extend takes 1 to 16"):
        m.extend(torch.zeros(1, 17, dtype=torch.long), state)


SETTINGS = [{}, {"repetition_penalty": 1.3, "presence_penalty": 0.5, "no_repeat_ngram_size": 3},
            {"min_new_tokens": 50, "eos_token_id": 7}]


@pytest.mark.parametrize("kind", [GPT2, LLAMA], ids=["gpt2", "llama"])
@pytest.mark.parametrize("prompt", [[1, 2, 3, 4, 5], list(range(30))], ids=["short", "past-the-window"])
@pytest.mark.parametrize("settings", SETTINGS, ids=["plain", "penalties", "min-new-tokens"])
def test_greedy_tokens_are_the_models_own_whatever_the_draft(kind, prompt, settings):
    m = _model(0, **kind)
    g = GenerationConfig(do_sample=False, max_new_tokens=60, **settings)
    want = generate(m, [prompt], g)[0]
    assert len(set(want.tokens)) > 3  # varied enough to tell drafts apart
    for draft, k in [(_model(1, **GPT2), 5), (_model(2, n_layer=1, n_head=2, n_embd=16, block_size=16), 1),
                     (m, 3)]:  # a poor draft, a one-token draft with another window, a perfect one
        got = generate(m, [prompt], g, draft=draft, num_draft_tokens=k)[0]
        assert (got.tokens, got.finish_reason) == (want.tokens, want.finish_reason)


def _seq2seq(seed: int, scale: float = 0.5, **kw) -> torch.nn.Module:
    """A random seq2seq Transformer in float64 (as ``_model``), its source and target vocabularies
    of 40, decoding from token 1."""
    torch.manual_seed(seed)
    cfg = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 64, **kw}
    m = build_model(ModelConfig(family="seq2seq", arch="transformer", vocab_size=40, src_vocab_size=40, bos_id=1,
                                dropout=0.0, **cfg)).eval().double()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, scale)
    return m


S2S_LAYOUTS = {"sinusoidal": {}, "learned-positions": {"positions": "learned", "block_size": 40},
               "relative (T5)": {"positions": "relative", "norm": "rmsnorm", "attn_scale": False}}


@pytest.mark.parametrize("layout", S2S_LAYOUTS)
def test_seq2seq_extend_and_truncate_match_steps(layout):
    m = _seq2seq(0, **S2S_LAYOUTS[layout])
    src = Seq2SeqBatch(torch.tensor([[5, 6, 7, 8, 9]]), torch.ones(1, 5, dtype=torch.bool))
    _, state = m.start(src)
    logits, state = m.extend(torch.tensor([[3, 4, 5]]), state)  # (1, 3, V)
    _, ref = m.start(src)
    for i, tok in enumerate([3, 4, 5]):
        step, ref = m.step(torch.tensor([tok]), ref)
        torch.testing.assert_close(logits[:, i], step, atol=1e-10, rtol=1e-10)
    state = m.truncate(state, 2)  # keep 3 of 3 + 4 + 5
    after, _ = m.step(torch.tensor([9]), state)
    _, ref = m.start(src)
    _, ref = m.step(torch.tensor([3]), ref)
    want, _ = m.step(torch.tensor([9]), ref)
    torch.testing.assert_close(after, want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("layout", S2S_LAYOUTS)
def test_seq2seq_greedy_tokens_are_the_models_own_whatever_the_draft(layout):
    """A translation model drafted by a smaller one (or by itself, or a poor one) keeps its own
    greedy output, and a draft that always agrees saves most of its passes."""
    m = _seq2seq(0, **S2S_LAYOUTS[layout])
    src = Seq2SeqBatch(torch.tensor([[5, 6, 7, 8, 9, 10, 11]]), torch.ones(1, 7, dtype=torch.bool))
    g = GenerationConfig(do_sample=False, max_new_tokens=25, min_new_tokens=20, no_repeat_ngram_size=1, eos_token_id=2)
    want = generate(m, src, g)[0]
    assert len(set(want.tokens)) > 3
    for draft, k in [(_seq2seq(3, n_layer=1, n_embd=16, **S2S_LAYOUTS[layout]), 4), (m, 2)]:
        got = generate(m, src, g, draft=draft, num_draft_tokens=k)[0]
        assert (got.tokens, got.finish_reason) == (want.tokens, want.finish_reason)
    counted = Counting(m)
    generate(counted, src, g, draft=m, num_draft_tokens=4)
    assert counted.passes <= 5 < len(want.tokens)


class Counting(torch.nn.Module):
    """A model's passes, counted: start, step and extend each read all the weights once."""

    def __init__(self, model):
        super().__init__()
        self.model, self.passes = model, 0

    def __getattr__(self, name):
        inner = self._modules["model"]
        if name == "model":
            return inner
        if name not in ("start", "step", "extend"):
            return getattr(inner, name)

        def counted(*args):
            self.passes += 1
            return getattr(inner, name)(*args)
        return counted


def test_a_draft_that_agrees_saves_most_of_the_models_passes():
    m = _model(0, **GPT2)
    g = GenerationConfig(do_sample=False, max_new_tokens=20)
    counted = Counting(m)
    generate(counted, [[1, 2, 3]], g)
    assert counted.passes == 20  # start, then one step a token
    counted.passes = 0
    got = generate(counted, [[1, 2, 3]], g, draft=m, num_draft_tokens=4)[0]
    assert got.tokens == generate(m, [[1, 2, 3]], g)[0].tokens
    assert counted.passes <= 4  # start + extends of 4, 6 and 8 drafts: every draft kept


def _exact_two_tokens(m, prompt, g):
    """The model's own distribution of its first two tokens under ``g``'s processors."""
    procs = build_processors(g, prompt_length=len(prompt))
    V = m.config.vocab_size
    out = {}
    with torch.no_grad():
        first = torch.softmax(apply_processors(procs, torch.tensor([prompt]), m(torch.tensor([prompt]))[0][:, -1]), -1)
        for a in range(V):
            ids = torch.tensor([prompt + [a]])
            second = torch.softmax(apply_processors(procs, ids, m(ids)[0][:, -1]), -1)
            for b in range(V):
                out[a, b] = float(first[0, a] * second[0, b])
    return out


def test_samples_follow_the_models_distribution_not_the_drafts():
    m, d = _model(0, vocab=6, scale=0.8, **GPT2), _model(5, vocab=6, scale=0.8, **GPT2)
    prompt, g = [1, 2, 3], GenerationConfig(do_sample=True, temperature=0.9, top_k=5, max_new_tokens=2)
    want, drafts = _exact_two_tokens(m, prompt, g), _exact_two_tokens(d, prompt, g)
    n = 3000
    got = Counter(tuple(generate(m, [prompt], GenerationConfig(**{**g.__dict__, "seed": s}), draft=d)[0].tokens)
                  for s in range(n))
    tv = 0.5 * sum(abs(got[ab] / n - p) for ab, p in want.items())
    assert tv < 0.05, tv
    assert 0.5 * sum(abs(drafts[ab] - p) for ab, p in want.items()) > 0.2  # the draft alone would be far off
    assert all(len(k) == 2 for k in got) and set(got) <= set(itertools.product(range(6), repeat=2))


# ---- the API and the CLI ----------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A model and a smaller draft trained with its tokenizer, and a run of another vocabulary."""
    from conftest import shakespeare_text

    tmp = tmp_path_factory.mktemp("spec")
    corpus = tmp / "corpus.txt"
    corpus.write_text(shakespeare_text(20_000), encoding="utf-8")
    train(None, tiny_overrides(corpus, tmp / "big", **{"train.max_iters": 40, "train.lr": 3e-3}))
    train(None, tiny_overrides(corpus, tmp / "small", **{"train.max_iters": 40, "train.lr": 3e-3, "model.n_layer": 1,
                                                         "data.tokenizer": str(tmp / "big" / "tokenizer.json")}))
    train(None, tiny_overrides(corpus, tmp / "words", **{"data.tokenizer": "word", "data.vocab_size": 200}))
    return tmp


def test_a_run_loaded_with_a_draft_generates_its_own_greedy_text(runs):
    plain, spec = proselab.load(runs / "big"), proselab.load(runs / "big", draft=runs / "small", num_draft_tokens=3)
    args = {"do_sample": False, "max_new_tokens": 40, "output_scores": True}
    want, got = plain.complete("ROMEO:", **args)[0], spec.complete("ROMEO:", **args)[0]
    assert got.text == want.text and got.tokens == want.tokens
    assert got.token_logprobs == pytest.approx(want.token_logprobs, abs=1e-4)  # the model's, not the draft's
    assert "".join(d.text for d in spec.stream("ROMEO:", do_sample=False, max_new_tokens=40)) == want.text
    stop = want.text[5:8]
    stopped = spec.complete("ROMEO:", do_sample=False, max_new_tokens=40, stop=[stop])[0]
    assert stopped.finish_reason == "stop" and stopped.text == want.text[: want.text.index(stop)]
    # several prompts or sequences decode batched, without the draft, as before
    assert spec.generate(["a", "b"], do_sample=False, max_new_tokens=8) == \
        plain.generate(["a", "b"], do_sample=False, max_new_tokens=8)


@pytest.mark.parametrize("draft, num, match", [
    ("words", 5, "the draft's tokenizer is not the model's"),
    ("small", 0, "num_draft_tokens must be an integer >= 1"),
])
def test_a_draft_that_cannot_help_is_refused(runs, draft, num, match):
    with pytest.raises(ValueError, match=match):
        proselab.load(runs / "big", draft=runs / draft, num_draft_tokens=num)


def test_the_cli_takes_a_draft(runs, capsys):
    argv = ["generate", str(runs / "big"), "--prompt", "KING", "--greedy", "--max-new-tokens", "12", "--json"]
    assert main(argv) == 0
    want = json.loads(capsys.readouterr().out)["completions"][0]["tokens"]
    assert main([*argv, "--draft", str(runs / "small"), "--num-draft-tokens", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["completions"][0]["tokens"] == want
    assert main([*argv, "--draft", str(runs / "words")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the draft's tokenizer is not the model's" in err


def test_memory_follows_the_text_not_max_new_tokens():
    m = _model(0, **GPT2)  # 10**10 tokens of history up front would be 80 GB
    out = generate(m, [[1, 2, 3]], GenerationConfig(do_sample=False, max_new_tokens=10**10, max_time=0.3),
                   draft=m)[0]
    assert out.finish_reason == "time" and len(out.tokens) > 10


def test_the_server_decodes_a_request_alone_with_the_draft(runs):
    """`serve --draft`: a request that finds the server idle is decoded speculatively and gives the
    run's own greedy text, whole and streamed; several sequences at once go to the batch."""
    from proselab.server import create_app
    from test_server import Server, client

    plain = proselab.load(runs / "big")
    greedy = plain.complete("ROMEO:", do_sample=False, max_new_tokens=30)[0]
    want = greedy.text
    gen = proselab.load(runs / "big", draft=runs / "small", num_draft_tokens=3)
    sampled = gen.complete("ROMEO:", temperature=0.9, top_p=0.9, top_k=30, seed=7,  # offline, with the draft
                           max_new_tokens=30)[0].text
    app = create_app(gen, api_key="k")
    engine = app.state.engine
    with Server(app) as server:
        c = client(server, key="k")
        r = c.completions.create(model="big", prompt="ROMEO:", max_tokens=30, temperature=0)
        assert r.choices[0].text == want and r.usage.completion_tokens == len(greedy.tokens)
        r = c.completions.create(model="big", prompt="ROMEO:", max_tokens=30, temperature=0.9, top_p=0.9, seed=7,
                                 extra_body={"top_k": 30})
        assert r.choices[0].text == sampled
        chunks = c.completions.create(model="big", prompt="ROMEO:", max_tokens=30, temperature=0, stream=True)
        assert "".join(ch.choices[0].text for ch in chunks) == want
        r = c.completions.create(model="big", prompt="ROMEO:", max_tokens=30, temperature=0, n=2)
        assert [ch.text for ch in r.choices] == [want, want]
    assert engine.drafted == 3  # the three requests alone; n=2 went to the batch


def test_serve_refuses_a_bad_draft_setting_in_one_line(runs, capsys):
    assert main(["serve", str(runs / "big"), "--draft", str(runs / "small"), "--num-draft-tokens", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--num-draft-tokens must be >= 1" in err


def test_a_translation_run_drafted_by_a_smaller_one_translates_as_it_does_alone(tmp_path):
    """A seq2seq Transformer run loaded with a smaller one of the same tokenizers as its draft
    gives its own greedy translation; an RNN seq2seq draft, or a GPT one, is refused."""
    from test_seq2seq import s2s_overrides

    big = s2s_overrides(tmp_path, **{"model.arch": "transformer", "model.n_layer": 2,
                                     "train.out_dir": str(tmp_path / "big")})
    train(None, big)
    tok = str(tmp_path / "big" / "tokenizer.json")
    train(None, {**big, "model.n_layer": 1, "train.out_dir": str(tmp_path / "small"), "data.tokenizer": tok})
    train(None, {**big, "model.arch": "rnn", "train.out_dir": str(tmp_path / "rnn"), "data.tokenizer": tok})
    plain = proselab.load(tmp_path / "big")
    spec = proselab.load(tmp_path / "big", draft=tmp_path / "small", num_draft_tokens=3)
    for source in ("abcdef", "hello there"):
        assert spec.generate(source, do_sample=False, max_new_tokens=20) == \
            plain.generate(source, do_sample=False, max_new_tokens=20)
    from proselab.server import create_app
    from test_server import Server, client

    app = create_app(spec, api_key="k")
    with Server(app) as server:  # served: a request alone is drafted too
        r = client(server, key="k").completions.create(model="big", prompt="abcdef", max_tokens=20, temperature=0)
    assert r.choices[0].text == plain.generate("abcdef", do_sample=False, max_new_tokens=20)
    assert app.state.engine.drafted == 1
    with pytest.raises(ValueError, match="the draft is a rnn seq2seq run"):
        proselab.load(tmp_path / "big", draft=tmp_path / "rnn")
