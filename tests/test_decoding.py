"""The decoding engine over every family: greedy, sampling, beam search, stopping, streaming."""

import pytest
import torch

from proselab.config import ConfigError, GenerationConfig, ModelConfig
from proselab.decoding import generate, pad_prompts, stream
from proselab.decoding.processors import build_processors
from proselab.decoding.search import beam_search
from proselab.models import build_model
from proselab.tokenizers import train_tokenizer

FAMILIES = ["gpt", "rnn", "lstm"]
PROMPTS = [[1, 2, 3], [4], [5, 6, 7, 8, 9], [2, 2]]


def _model(family, vocab=20, block_size=16, scale=1.0):
    torch.manual_seed(0)
    cell = family if family in ("rnn", "lstm", "gru") else "gru"
    cfg = ModelConfig(family="gpt" if family == "gpt" else "rnn", cell=cell, vocab_size=vocab,
                      block_size=block_size, n_layer=2, n_head=2, n_embd=16, hidden_size=16, num_layers=2)
    model = build_model(cfg).eval()
    if scale != 1.0:  # peakier distributions: beams and greedy far from ties
        with torch.no_grad():
            model.lm_head.weight.mul_(scale)
    return model


def _greedy_by_forward(model, prompt, n):
    """The slow reference: a full forward pass over the whole sequence per new token."""
    seq = torch.tensor([prompt])
    for _ in range(n):
        logits, _ = model(seq)
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[0, len(prompt):].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_is_argmax_of_the_full_forward(family):
    model = _model(family)
    out = generate(model, [[1, 2, 3]], GenerationConfig(do_sample=False, max_new_tokens=10))
    assert out[0].tokens == _greedy_by_forward(model, [1, 2, 3], 10)
    assert out[0].finish_reason == "length" and out[0].prompt_index == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_prompts_of_different_lengths_equal_one_by_one(family):
    model = _model(family, scale=5.0)
    cfg = GenerationConfig(do_sample=False, max_new_tokens=12)
    batched = [g.tokens for g in generate(model, PROMPTS, cfg)]
    alone = [generate(model, [p], cfg)[0].tokens for p in PROMPTS]
    assert batched == alone
    assert alone[0] == _greedy_by_forward(model, PROMPTS[0], 12)


def test_padded_gpt_logits_match_unpadded():
    model = _model("gpt")
    prompt, _, _ = pad_prompts(PROMPTS)
    logits, state = model.start(prompt)
    for i, p in enumerate(PROMPTS):
        ref, ref_state = model.start(torch.tensor([p]))
        torch.testing.assert_close(logits[i], ref[0], atol=1e-5, rtol=0)
    nxt = torch.tensor([3, 1, 4, 1])
    logits, state = model.step(nxt, state)
    for i, p in enumerate(PROMPTS):
        ref, _ = model(torch.tensor([p + [int(nxt[i])]]))
        torch.testing.assert_close(logits[i], ref[0, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_seeded_sampling_is_reproducible_whatever_the_batch(family):
    model = _model(family)
    cfg = GenerationConfig(max_new_tokens=15, seed=7, num_return_sequences=3, temperature=1.0, top_k=0)
    a = [g.tokens for g in generate(model, PROMPTS, cfg)]
    assert a == [g.tokens for g in generate(model, PROMPTS, cfg)]
    # the same prompt alone, or in another batch at another position, samples the same tokens
    assert a[3:6] == [g.tokens for g in generate(model, [PROMPTS[1]], cfg)]
    assert a[3:6] == [g.tokens for g in generate(model, [PROMPTS[2], PROMPTS[1]], cfg)][3:6]
    assert len({tuple(t) for t in a}) > 6  # sequences do not share one random stream
    other = [g.tokens for g in generate(model, PROMPTS, GenerationConfig(max_new_tokens=15, seed=8, num_return_sequences=3,
                                                                          temperature=1.0, top_k=0))]
    assert other != a


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_search_with_one_beam_is_greedy(family):
    model = _model(family)
    cfg = GenerationConfig(do_sample=False, max_new_tokens=10, num_beams=1)
    prompt, ids, _ = pad_prompts(PROMPTS)
    beams = beam_search(model, prompt, ids, cfg, build_processors(cfg), eos_ids=[])
    greedy = generate(model, PROMPTS, cfg)
    assert [b[0].tokens for b in beams] == [g.tokens for g in greedy]


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_search_n_best_is_sorted_and_beats_greedy(family):
    model = _model(family, scale=3.0)
    cfg = GenerationConfig(do_sample=False, max_new_tokens=8, num_beams=4, num_return_sequences=4,
                           length_penalty=1.0, eos_token_id=0)
    out = generate(model, PROMPTS[:2], cfg)
    assert len(out) == 8 and [g.prompt_index for g in out] == [0] * 4 + [1] * 4
    for i, p in enumerate(PROMPTS[:2]):
        hyps = out[4 * i: 4 * i + 4]
        scores = [g.score for g in hyps]
        assert scores == sorted(scores, reverse=True) and len({tuple(g.tokens) for g in hyps}) == 4
        for g in hyps:  # each score is the hypothesis' own log-prob / its length
            seq = p + g.tokens + ([0] if g.finish_reason == "eos" else [])
            logits, _ = model(torch.tensor([seq[:-1]]))
            lp = torch.log_softmax(logits[0, len(p) - 1:], -1).gather(1, torch.tensor(seq[len(p):])[:, None]).sum()
            assert g.score == pytest.approx(float(lp) / (len(seq) - len(p)), abs=1e-4)
        greedy = generate(model, [p], GenerationConfig(do_sample=False, max_new_tokens=8, eos_token_id=0))[0]
        logits, _ = model(torch.tensor([p + greedy.tokens]))
        g_lp = torch.log_softmax(logits[0, len(p) - 1:-1], -1).gather(1, torch.tensor(greedy.tokens)[:, None]).sum()
        if greedy.finish_reason == "length":
            assert scores[0] >= float(g_lp) / len(greedy.tokens) - 1e-5


def test_beam_search_matches_transformers():
    transformers = pytest.importorskip("transformers")
    from test_models import _hf_gpt2_and_ours

    hf, ours = _hf_gpt2_and_ours()
    with torch.no_grad():  # peaky, tie-free distributions (random init is near uniform)
        hf.transformer.wte.weight.mul_(30)
        ours.transformer.wte.weight.mul_(30)
    idx = torch.tensor([[5, 9, 2, 7], [11, 3, 3, 8]])
    for lp, early in [(1.0, False), (2.0, True), (0.5, "never")]:
        ref = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=10, do_sample=False, num_beams=4,
                          num_return_sequences=4, length_penalty=lp, early_stopping=early, eos_token_id=0,
                          pad_token_id=0, output_scores=True, return_dict_in_generate=True)
        cfg = GenerationConfig(do_sample=False, max_new_tokens=10, num_beams=4, num_return_sequences=4,
                               length_penalty=lp, early_stopping=early, eos_token_id=0)
        ours_out = generate(ours, idx, cfg)
        for i, g in enumerate(ours_out):
            want = ref.sequences[i, 4:].tolist()
            if g.finish_reason == "eos":
                want = want[: len(g.tokens) + 1]
                assert want[-1] == 0
                want = want[:-1]
            assert g.tokens == want, (lp, early, i)
            assert g.score == pytest.approx(float(ref.sequences_scores[i]), abs=1e-4)
    assert transformers


def _char_setup(family="gpt"):
    text = "the cat sat on the mat. the dog sat on the log.\n" * 20
    tok = train_tokenizer("char", [text])
    model = _model(family, vocab=tok.vocab_size, block_size=32)
    return tok, model


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_streaming_equals_generate(family):
    tok, model = _char_setup(family)
    prompts = [tok.encode("the "), tok.encode("a dog")]
    for cfg in [GenerationConfig(max_new_tokens=30, seed=3, num_return_sequences=2, temperature=1.5, top_k=0),
                GenerationConfig(max_new_tokens=30, seed=3, stop=["a", "o"], temperature=1.5, top_k=0, top_p=0.9),
                GenerationConfig(max_new_tokens=30, do_sample=False, stop=["t "])]:
        full = generate(model, prompts, cfg, tokenizer=tok)
        parts: dict[int, list] = {}
        reasons = {}
        for d in stream(model, prompts, cfg, tokenizer=tok):
            parts.setdefault(d.index, []).append(d)
            if d.finish_reason:
                assert d.index not in reasons, "a sequence finishes once"
                reasons[d.index] = d.finish_reason
        assert sorted(parts) == list(range(len(full)))
        for i, g in enumerate(full):
            assert "".join(d.text for d in parts[i]) == g.text
            assert sum((d.tokens for d in parts[i]), []) == g.tokens
            assert reasons[i] == g.finish_reason


def test_stop_string_across_tokens_is_cut_and_not_returned():
    tok, model = _char_setup()
    cfg = GenerationConfig(max_new_tokens=40, do_sample=False)
    free = generate(model, [tok.encode("the ")], cfg, tokenizer=tok)[0].text
    assert len(free) >= 6
    stop = free[3:5]  # two characters = two tokens of a char model
    out = generate(model, [tok.encode("the ")], GenerationConfig(max_new_tokens=40, do_sample=False, stop=[stop]),
                   tokenizer=tok)[0]
    cut = free.index(stop)
    assert out.text == free[:cut] and out.finish_reason == "stop"
    assert tok.decode(out.tokens) == free[: cut + len(stop)]  # tokens run up to the one completing the stop
    beams = generate(model, [tok.encode("the ")],
                     GenerationConfig(max_new_tokens=40, do_sample=False, num_beams=2, stop=[stop]), tokenizer=tok)
    assert all(stop not in g.text for g in beams)


def test_eos_and_min_new_tokens():
    model = _model("gpt", scale=3.0)
    free = generate(model, [[1, 2]], GenerationConfig(do_sample=False, max_new_tokens=10))[0].tokens
    eos = free[2]
    out = generate(model, [[1, 2]], GenerationConfig(do_sample=False, max_new_tokens=10, eos_token_id=eos))[0]
    assert out.tokens == free[: free.index(eos)] and out.finish_reason == "eos"
    longer = generate(model, [[1, 2]], GenerationConfig(do_sample=False, max_new_tokens=10, eos_token_id=eos,
                                                        min_new_tokens=free.index(eos) + 1))[0]
    assert len(longer.tokens) > free.index(eos) and longer.tokens[: free.index(eos)] == free[: free.index(eos)]


def test_output_scores_are_log_probs_of_the_chosen_tokens():
    model = _model("rnn")
    g = generate(model, [[1, 2]], GenerationConfig(do_sample=False, max_new_tokens=5, output_scores=True))[0]
    logits, _ = model(torch.tensor([[1, 2] + g.tokens[:-1]]))
    want = torch.log_softmax(logits[0, 1:], -1).gather(1, torch.tensor(g.tokens)[:, None]).squeeze(1)
    assert g.token_logprobs == pytest.approx(want.tolist(), abs=1e-5)
    assert g.score == pytest.approx(sum(g.token_logprobs))


def test_gpt_prompts_longer_than_the_window_and_generation_past_it():
    model = _model("gpt", block_size=16)
    prompts = [list(range(1, 20)) * 2, [3]]  # 38 tokens (cropped to the last 16) and 1 token
    cfg = GenerationConfig(do_sample=False, max_new_tokens=50)
    batched = generate(model, prompts, cfg)
    assert [len(g.tokens) for g in batched] == [50, 50]
    assert [g.tokens for g in batched] == [generate(model, [p], cfg)[0].tokens for p in prompts]
    assert batched[0].tokens[:5] == generate(model, [prompts[0][-16:]], cfg)[0].tokens[:5]


def test_suppressed_ids_never_generated_and_zero_tokens():
    model = _model("rnn")
    out = generate(model, [[1]], GenerationConfig(max_new_tokens=200, seed=0, temperature=3.0, top_k=0),
                   suppress_ids=[0, 5])[0]
    assert len(out.tokens) == 200 and not {0, 5} & set(out.tokens)
    assert generate(model, [[1]], GenerationConfig(max_new_tokens=0))[0].tokens == []


@pytest.mark.parametrize("field,value,match", [
    ("top_p", 0.0, "top_p"), ("top_p", 1.5, "top_p"), ("temperature", -1.0, "temperature"),
    ("num_return_sequences", 5, "num_return_sequences"), ("repetition_penalty", 0.0, "repetition_penalty"),
    ("min_p", 2.0, "min_p"), ("early_stopping", "sometimes", "early_stopping"), ("stop", [""], "stop"),
])
def test_bad_values_name_the_field(field, value, match):
    model = _model("rnn")
    cfg = GenerationConfig(num_beams=4, do_sample=False) if field == "num_return_sequences" else GenerationConfig()
    setattr(cfg, field, value)
    with pytest.raises(ConfigError, match=match):
        generate(model, [[1]], cfg)


def test_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="no tokens"):
        generate(_model("rnn"), [[1], []], GenerationConfig())


def test_a_row_that_ends_early_stays_ended_while_the_batch_goes_on():
    model = _model("gpt", scale=3.0)
    cfg = GenerationConfig(do_sample=False, max_new_tokens=12)
    free = [g.tokens for g in generate(model, PROMPTS, cfg)]
    eos = free[0][1]  # ends row 0 at its second token; the other rows may or may not contain it
    ended = generate(model, PROMPTS, GenerationConfig(do_sample=False, max_new_tokens=12, eos_token_id=eos))
    for g, want in zip(ended, free):
        cut = want.index(eos) if eos in want else len(want)
        assert g.tokens == want[:cut] and g.finish_reason == ("eos" if eos in want else "length")
    reasons = [g.finish_reason for g in ended]
    assert "eos" in reasons and "length" in reasons and reasons.count("eos") < len(PROMPTS) / 2  # no compaction


def test_rows_ignore_steps_of_finished_rows():
    from proselab.decoding.stopping import Rows

    rows = Rows(3, [0, 1, 2], max_new_tokens=5, eos_ids=[0])
    done, _ = rows.update(torch.tensor([0, 1, 2]), torch.tensor([0, 4, 5]), None, 0, False)
    assert done == [True, False, False]
    done, deltas = rows.update(torch.tensor([0, 1, 2]), torch.tensor([7, 8, 0]), None, 1, False)
    assert done == [True, False, True] and [d.index for d in deltas] == [1, 2]
    res = rows.results()
    assert [g.tokens for g in res] == [[], [4, 8], [5]] and [g.finish_reason for g in res] == ["eos", "length", "eos"]


@pytest.mark.parametrize("num_beams", [1, 3])
def test_max_time_ends_generation(num_beams):
    model = _model("gpt")
    cfg = GenerationConfig(do_sample=False, max_new_tokens=50, num_beams=num_beams, max_time=1e-9)
    out = generate(model, PROMPTS[:2], cfg)
    assert all(len(g.tokens) == 1 and g.finish_reason == "time" for g in out)


@pytest.mark.parametrize("family", FAMILIES)
def test_memory_follows_what_is_generated_not_max_new_tokens(family, monkeypatch):
    """max_new_tokens=10**12 used to allocate its (N, 10**12) token buffer up front and fail (or
    fill the machine); now a run that stops early costs what it generated. The clock max_time
    reads advances 1 ms a reading, so the run stops after the same number of steps on a fast or
    a loaded machine."""
    import itertools

    import proselab.decoding.stopping as stopping

    ticks = itertools.count()
    monkeypatch.setattr(stopping.time, "monotonic", lambda: next(ticks) / 1000)
    model = _model(family)
    out = generate(model, PROMPTS, GenerationConfig(do_sample=False, max_new_tokens=10**12, max_time=0.2))
    assert all(g.finish_reason == "time" and len(g.tokens) > 64 for g in out)  # grown past the first room
    ref = generate(model, PROMPTS, GenerationConfig(do_sample=False, max_new_tokens=len(out[0].tokens)))
    assert ref[0].tokens == out[0].tokens


@pytest.mark.parametrize("beams,vocab", [(1, 1000), (5, 1000), (1, 5000), (5, 50_265), (4, 64 * 40)])
def test_beam_search_top_k_equals_torch_topk(beams, vocab):
    """Beam search's two-pass top-k over (B, K, V) log-probs plus each beam's score: the same
    values and columns as torch's topk over the summed (B, K x V) scores, with -inf (banned
    tokens) in a third of them, beams at beam search's starting -1e9, and rows with fewer finite
    values than k."""
    from proselab.decoding.search import NEG, find_top_k

    gen = torch.Generator().manual_seed(vocab + beams)
    x = torch.randn(6, beams, vocab, generator=gen)
    offset = torch.randn(6, beams, generator=gen) * 3
    offset[0, 1:] = NEG
    x[:, :, : vocab // 3] = float("-inf")
    few = x.clone()
    few[5, :, 7:] = float("-inf")
    few[5, 1:] = float("-inf")  # 7 finite values, k = 10
    for scores in (x, few):
        for off in (offset, None):
            top, idx = find_top_k(scores, 10, off)
            ref = (scores if off is None else scores + off[..., None]).view(6, -1).topk(10, dim=-1)
            assert torch.equal(top, ref.values)
            assert torch.equal(idx[:, :7], ref.indices[:, :7]) and torch.equal(idx[:5], ref.indices[:5])
