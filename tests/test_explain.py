"""Explaining a model: the token view, attention per layer and head, attributions by Captum
(integrated gradients, Shapley value sampling, LIME), their pages in headless Chromium, the CLI
and its one-line errors. Tiny seeded models: a few training steps, or weights set by hand."""

import json
import random
from pathlib import Path

import pytest
import torch

import proselab
from conftest import shakespeare_text, tiny_overrides
from proselab.cli import main
from proselab.config import ModelConfig
from proselab.data.batch import IGNORE_INDEX, Seq2SeqBatch
from proselab.explain import MAX_PASSES, ExplainError, Inputs, attribute
from proselab.models import build_model
from proselab.training import train


def _train(tmp: Path, overrides: dict) -> Path:
    with pytest.MonkeyPatch.context() as mp:  # a module's fixture runs before the per-test cache exists
        mp.setenv("PROSELAB_CACHE", str(tmp / "cache"))
        mp.setattr("proselab.training.plot_loss", lambda *args, **kwargs: None)  # a second each, not needed here
        train(None, overrides)
    return Path(overrides["train.out_dir"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs of every family that generates, and a classifier: a few steps each."""
    tmp = tmp_path_factory.mktemp("explain")
    corpus = tmp / "corpus.txt"
    corpus.write_text(shakespeare_text(8_000), encoding="utf-8")
    few = {"train.max_iters": 4, "train.eval_interval": 4}
    out = {"gpt": _train(tmp, tiny_overrides(corpus, tmp / "gpt", "gpt", **few)),
           "rnn": _train(tmp, tiny_overrides(corpus, tmp / "rnn", "rnn", **few))}
    from test_seq2seq import s2s_overrides

    s2s = s2s_overrides(tmp, **{"model.arch": "rnn", "model.attention": "bahdanau", "train.max_iters": 4,
                                "train.eval_interval": 4, "train.out_dir": str(tmp / "s2s")})
    out["seq2seq"] = _train(tmp, {k: v for k, v in s2s.items() if k not in ("model.n_layer", "model.n_head")})
    rng = random.Random(0)
    words = {"pos": "great lovely superb", "neg": "awful boring terrible"}
    lines = ["text,label"] + [f"the film was {rng.choice(words[lab].split())},{lab}" for lab in ["pos", "neg"] * 40]
    (tmp / "reviews.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out["classifier"] = _train(tmp, {**tiny_overrides(tmp / "reviews.csv", tmp / "cls", "gpt", **few),
                                     "data.tokenizer": "word", "model.block_size": 16})
    return out


# ---- the token view ---------------------------------------------------------------------------

def _loss_at(model, kind, inputs: Inputs, j: int) -> float:
    """The model's own loss (forward with targets) on output token j alone."""
    out = torch.tensor([inputs.output])
    with torch.no_grad():
        if kind == "seq2seq":
            targets = torch.full_like(out, IGNORE_INDEX)
            targets[0, j] = out[0, j]
            src = torch.tensor([inputs.context])
            tgt = torch.tensor([[model.config.bos_id] + inputs.output[:-1]])
            return float(model(Seq2SeqBatch(src, torch.ones_like(src, dtype=torch.bool), tgt), targets)[1])
        idx = torch.tensor([inputs.context + inputs.output])
        targets = torch.full_like(idx, IGNORE_INDEX)
        targets[0, len(inputs.context) + j - 1] = out[0, j]
        return float(model(idx, targets)[1])


@pytest.mark.parametrize("family", ["gpt", "rnn", "seq2seq"])
def test_token_view_probabilities_are_the_models_own_loss_and_ranks_are_right(runs, family):
    gen = proselab.load(runs[family])
    if family == "seq2seq":
        expl = gen.explain("cba", prompt="a b c", top_k=3)
    else:
        expl = gen.explain(" my lord", prompt="ROMEO:", top_k=3)
    kind = "seq2seq" if family == "seq2seq" else "lm"
    inputs = Inputs(kind, [t["id"] for t in expl.context], [t["id"] for t in expl.output])
    assert expl.output and len(expl.output[0]["top"]) == 3
    for j, t in enumerate(expl.output):
        assert t["prob"] == pytest.approx(torch.exp(torch.tensor(-_loss_at(gen.model, kind, inputs, j))).item(),
                                          rel=1e-5)
        assert t["surprisal"] == pytest.approx(-torch.log2(torch.tensor(t["prob"])).item(), rel=1e-5)
        top = t["top"]
        assert top[0]["prob"] >= t["prob"] and all(a["prob"] >= b["prob"] for a, b in zip(top, top[1:]))
        assert (t["rank"] == 1) == (top[0]["id"] == t["id"]) or top[0]["prob"] == t["prob"]
        if t["rank"] <= 3:
            assert top[t["rank"] - 1]["prob"] == pytest.approx(t["prob"])
    mean = torch.tensor([_loss_at(gen.model, kind, inputs, j) for j in range(len(expl.output))]).mean()
    assert expl.details["perplexity"] == pytest.approx(float(mean.exp()), rel=1e-5)
    # ranks against a full sort of the model's logits
    if kind == "lm":
        with torch.no_grad():
            logits = gen.model(torch.tensor([inputs.context + inputs.output]))[0][0]
        for j, t in enumerate(expl.output):
            row = logits[len(inputs.context) + j - 1]
            assert t["rank"] == int((row > row[t["id"]]).sum()) + 1


def test_a_text_alone_is_scored_from_its_second_token_and_a_prompt_alone_is_continued(runs):
    gen = proselab.load(runs["gpt"])  # a char model: no beginning-of-text token
    expl = gen.explain("ROMEO")
    assert [t["text"] for t in expl.context] == ["R"] and "".join(t["text"] for t in expl.output) == "OMEO"
    cont = gen.explain(prompt="ROMEO:", max_new_tokens=5)
    assert len(cont.output) == 5
    assert "".join(t["text"] for t in cont.output) == gen.generate("ROMEO:", do_sample=False, max_new_tokens=5)


# ---- attention --------------------------------------------------------------------------------

LLAMA_STYLE = dict(rope=True, norm="rmsnorm", gated_ffn=True, activation="silu", n_kv_head=2, bias=False)


@pytest.mark.parametrize("style", [{}, LLAMA_STYLE], ids=["gpt2", "llama"])
def test_gpt_attention_rows_sum_to_one_are_zero_on_the_future_and_are_what_the_blocks_use(style):
    from proselab.models.layers import expand_kv, rope_tables

    torch.manual_seed(0)
    model = build_model(ModelConfig(family="gpt", vocab_size=20, block_size=12, n_layer=3, n_head=4, n_embd=32,
                                    **style)).eval()
    idx = torch.randint(0, 20, (2, 9))
    w = model.attention_weights(idx)  # (L, B, nh, T, T)
    assert w.shape == (3, 2, 4, 9, 9)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 2, 4, 9))
    future = torch.ones(9, 9, dtype=torch.bool).triu(1)
    assert float(w[..., future].abs().max()) == 0.0
    # the weights times the values are each block's attention output (computed through SDPA)
    tr = model.transformer
    with torch.no_grad():
        x, rope = tr.wte(idx), None
        if style:
            rope = rope_tables(torch.arange(9), 8, model.config.rope_theta, torch.float32)
        else:
            x = x + tr.wpe(torch.arange(9))
        for i, block in enumerate(tr.h):
            qkv = block.attn.c_attn(block.ln_1(x))
            v = expand_kv(block.attn.heads(qkv)[2], 4)  # (B, nh, T, hs)
            mine = (w[i] @ v).transpose(1, 2).reshape(2, 9, 32)
            torch.testing.assert_close(mine, block.attn.attend(qkv, rope=rope), atol=1e-5, rtol=1e-4)
            x = block(x, rope=rope)


def test_seq2seq_transformer_attention_per_layer_and_head(tmp_path):
    """Encoder, decoder and cross-attention of every layer and head: rows sum to 1, padding and the
    future get 0, the last layer's cross-attention averaged over heads is the model's own, and
    explain(method="attention", part=...) draws each."""
    from test_seq2seq import s2s_overrides

    from proselab.explain import transformer_attention

    run = _train(tmp_path, s2s_overrides(tmp_path, **{"model.arch": "transformer", "model.n_layer": 2,
                                                      "train.max_iters": 2, "train.eval_interval": 2}))
    gen = proselab.load(run)
    model = gen.model
    src = torch.tensor([[5, 6, 7, 8, 2], [5, 6, 2, 0, 0]])  # the second source is padded
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    tgt = torch.tensor([[2, 9, 10, 11], [2, 9, 10, 11]])
    batch = Seq2SeqBatch(src, mask, tgt)
    w = transformer_attention(model, batch)
    assert w["encoder"].shape == (2, 2, 2, 5, 5) and w["decoder"].shape == (2, 2, 2, 4, 4)
    assert w["cross"].shape == (2, 2, 2, 4, 5)
    for part in ("encoder", "decoder", "cross"):
        torch.testing.assert_close(w[part].sum(-1), torch.ones(w[part].shape[:-1]))
    assert float(w["cross"][:, 1, :, :, 3:].abs().max()) == 0.0  # padding of the source
    assert float(w["encoder"][:, 1, :, :, 3:].abs().max()) == 0.0
    assert float(w["decoder"].triu(1).abs().max()) == 0.0  # the future
    torch.testing.assert_close(w["cross"][-1].mean(1), model.cross_attention(batch))
    for part, rows in (("cross", "output"), ("encoder", "context"), ("decoder", "output")):
        expl = gen.explain("cba", prompt="a b c", method="attention", part=part)
        got = torch.tensor(expl.attention["weights"])
        assert got.shape[:2] == (2, 2) and got.shape[2] == len(getattr(expl, rows)) and expl.details["part"] == part
    with pytest.raises(ValueError, match="part must be cross"):
        gen.explain("cba", prompt="a b c", method="attention", part="nope")


def test_rnn_seq2seq_alignments_sum_to_one_and_are_zero_on_padding(runs):
    model = proselab.load(runs["seq2seq"]).model
    src = torch.tensor([[5, 6, 7, 8, 2], [5, 6, 2, 0, 0]])  # the second source is padded
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    tgt = torch.tensor([[2, 9, 10, 11], [2, 9, 10, 11]])
    with torch.no_grad():
        w = model.cross_attention(Seq2SeqBatch(src, mask, tgt)).float()  # (B, T, S)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4))
    assert float(w[1, :, 3:].abs().max()) == 0.0


def test_explained_attention_for_gpt_layers_heads_and_rnn_seq2seq_alignment(runs, tmp_path):
    gen = proselab.load(runs["gpt"])
    expl = gen.explain(" lord", prompt="ROMEO:", method="attention")
    w = torch.tensor(expl.attention["weights"])
    assert w.shape == (2, 2, 11, 11) and expl.attention["rows"] == expl.attention["cols"]
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 11))
    assert float(w.triu(1).abs().max()) == 0.0
    amap = gen.attention("ROMEO:")  # the attention API: every layer and head of a GPT
    assert amap.layers.shape == (2, 2, 6, 6) and amap.weights.shape == (6, 6)
    s2s = proselab.load(runs["seq2seq"]).explain("cba", prompt="a b c", method="attention")
    w = torch.tensor(s2s.attention["weights"])
    assert w.shape == (1, 1, len(s2s.output), len(s2s.context)) and "bahdanau" in s2s.attention["what"]
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 1, len(s2s.output)))
    paths = s2s.save(tmp_path / "s2s")
    assert paths["png"].stat().st_size > 1000


# ---- attributions -----------------------------------------------------------------------------

KEY = 3  # the token that decides the output of the hand-set model


def _dominated(kind: str):
    """An Elman RNN that remembers whether token KEY occurred (tanh(2h) = h holds at 0.96) and
    outputs it: label 1 of a classifier, or next token 5 of a language model. The other tokens
    nudge the output a little; token 0 (the baseline) is all zeros."""
    labels = ["no", "yes"] if kind == "classifier" else []
    cfg = ModelConfig(family="rnn", cell="rnn", vocab_size=8, n_embd=4, hidden_size=4, num_layers=1, tie_weights=False,
                      labels=labels)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.wte.weight[KEY, 0] = 3.0
        model.wte.weight[1:, 1] = torch.linspace(-0.5, 0.5, 7)
        model.rnn.weight_ih_l0.copy_(torch.eye(4))
        model.rnn.weight_hh_l0.copy_(2 * torch.eye(4))
        head = model.score if labels else model.lm_head
        head.weight[1 if labels else 5, :2] = torch.tensor([4.0, 0.5])
    return model


@pytest.mark.parametrize("kind", ["classifier", "lm"])
@pytest.mark.parametrize("method", ["ig", "shapley", "lime"])
def test_the_token_that_decides_the_output_gets_the_largest_attribution(kind, method):
    model = _dominated(kind)
    context = [1, 6, KEY, 2, 7, 4]
    inputs = Inputs(kind, context, [] if kind == "classifier" else [5])
    values, details = attribute(model, inputs, method, target=1 if kind == "classifier" else None, baseline_id=0,
                                samples={"ig": 32, "shapley": 8, "lime": 150}[method])
    assert len(values) == len(context)
    others = [abs(v) for i, v in enumerate(values) if context[i] != KEY]
    assert values[context.index(KEY)] > 0 and values[context.index(KEY)] > 3 * max(others), values
    assert details["score"] > details["baseline_score"]


@pytest.mark.parametrize("family", ["gpt", "classifier"])
def test_integrated_gradients_are_complete(runs, family):
    gen = proselab.load(runs[family])
    if family == "gpt":
        expl = gen.explain(" lord", prompt="ROMEO: my", method="ig", samples=64)
    else:
        expl = gen.explain("the film was superb", method="ig", samples=64, target="pos")
        assert expl.target == "log p(label 'pos')" and expl.details["baseline"] == "<unk>"
    d = expl.details
    diff = d["score"] - d["baseline_score"]
    assert abs(d["delta"]) <= 1e-3 * max(abs(diff), 1e-2)  # Captum's convergence delta
    assert sum(expl.attributions) == pytest.approx(diff, rel=1e-3, abs=1e-5)


def test_shapley_attributions_sum_to_the_output_difference_and_are_seeded(runs):
    gen = proselab.load(runs["rnn"])
    a = gen.explain("ROMEO: my", method="shapley", samples=4, max_new_tokens=2)
    b = gen.explain("ROMEO: my", method="shapley", samples=4, max_new_tokens=2)
    assert a.attributions == b.attributions  # seeded
    diff = a.details["score"] - a.details["baseline_score"]
    assert sum(a.attributions) == pytest.approx(diff, rel=1e-4, abs=1e-6)  # every permutation adds up to it
    one = gen.explain("ROMEO: my", method="lime", samples=30, max_new_tokens=2, target=1)
    assert one.target.startswith("log p(output token 1:") and len(one.attributions) == len(one.context)


# ---- pages in Chromium ------------------------------------------------------------------------


def _open(browser, path: Path):
    page = browser.new_page()
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: problems.append(f"fetched {r.url}") if not r.url.startswith("file:") else None)
    page.goto(path.resolve().as_uri())
    return page, problems


def test_pages_render_without_errors_and_show_the_jsons_numbers(runs, browser, tmp_path):
    gen = proselab.load(runs["gpt"])
    # the token view
    paths = gen.explain(" my lord\nand", prompt="ROMEO:").save(tmp_path / "tokens")
    data = json.loads(paths["json"].read_text())
    page, problems = _open(browser, paths["html"])
    shown = page.eval_on_selector_all("#tokens .out", "els => els.map(e => [+e.dataset.prob, +e.dataset.rank])")
    assert shown == [[t["prob"], t["rank"]] for t in data["output"]]
    page.hover("#tokens .out >> nth=2")
    tip = page.text_content("#tokens .out >> nth=2 >> .tip")
    assert page.is_visible("#tokens .out >> nth=2 >> .tip") and f"p = {data['output'][2]['prob']:.4f}" in tip
    assert page.is_hidden("#tokens .out >> nth=3 >> .tip")
    page.close()
    # attention: pick a layer and a head, hover a token
    paths = gen.explain(" lord", prompt="ROMEO:", method="attention").save(tmp_path / "attention")
    data = json.loads(paths["json"].read_text())
    page, more = _open(browser, paths["html"])
    problems += more
    page.select_option("#layer", "1")
    page.select_option("#head", "0")
    page.hover("#rows .tok >> nth=4")
    cells = page.eval_on_selector_all('#matrix td[data-r="4"]', "els => els.map(e => +e.dataset.w)")
    assert cells == data["attention"]["weights"][1][0][4]
    colours = page.eval_on_selector_all("#rows .tok", "els => els.map(e => +e.dataset.w)")
    assert colours == data["attention"]["weights"][1][0][4]
    page.close()
    # attributions
    paths = gen.explain(prompt="ROMEO:", method="ig", samples=8, max_new_tokens=3).save(tmp_path / "ig")
    data = json.loads(paths["json"].read_text())
    page, more = _open(browser, paths["html"])
    problems += more
    values = page.eval_on_selector_all("#tokens .ctx-attr", "els => els.map(e => +e.dataset.attr)")
    assert values == data["attributions"]
    page.close()
    # a seq2seq alignment: output tokens (rows) over the source (columns)
    paths = proselab.load(runs["seq2seq"]).explain("cba", prompt="a b c", method="attention").save(tmp_path / "s2s")
    data = json.loads(paths["json"].read_text())
    page, more = _open(browser, paths["html"])
    problems += more
    page.hover("#rows .tok >> nth=1")
    colours = page.eval_on_selector_all("#cols .tok", "els => els.map(e => +e.dataset.w)")
    assert colours == data["attention"]["weights"][0][0][1] and page.is_hidden("#layer option[value=mean]")
    page.close()
    assert problems == []


# ---- the CLI and bad input -------------------------------------------------------------------

def test_cli_explain_end_to_end(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", str(runs["gpt"]), "--prompt", "ROMEO:", "--text", " my", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "explanation.json").read_text())
    assert printed["method"] == "tokens" and len(printed["output"]) == 3
    assert (out / "explanation.png").read_bytes()[:4] == b"\x89PNG" and (out / "explanation.html").is_file()
    assert main(["explain", str(runs["classifier"]), "--text", "the film was lovely", "--method", "shapley",
                 "--samples", "3", "--target", "neg", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "shapley attributions of log p(label 'neg')" in said and "explanation.html" in said
    assert main(["attention", str(runs["gpt"]), "--text", "ROMEO:", "--out", str(tmp_path / "grid.png")]) == 0
    assert "2 layers x 2 heads over 6 tokens" in capsys.readouterr().out


@pytest.mark.parametrize("run, argv, message", [
    ("rnn", ["--text", "ROMEO:", "--method", "attention"],
     "an rnn model has no attention to draw: attention is for gpt runs and seq2seq runs"),
    ("gpt", ["--text", "ROMEO: " * 10], "the text is 70 tokens and this model's window is 32"),
    ("gpt", ["--text", "ROMEO:", "--method", "shapley", "--samples", "10000000"],
     f"forward passes for shapley (permutations x 6 input tokens); the bound is {MAX_PASSES:,}"),
    ("gpt", ["--text", "ROMEO:", "--method", "ig", "--samples", "0"], "samples must be an integer >= 1"),
    ("classifier", ["--text", "the film"], "a classifier labels texts and does not score tokens"),
    ("classifier", ["--text", "the film", "--method", "ig", "--target", "meh"], "its labels: neg, pos"),
    ("seq2seq", ["--text", "a b c"], "give the source as the prompt (--prompt)"),
    ("gpt", ["--prompt", "ROMEO:", "--method", "ig", "--target", "99"], "target 99 is not an output token"),
])
def test_bad_input_is_a_one_line_error(runs, tmp_path, capsys, run, argv, message):
    assert main(["explain", str(runs[run]), *argv, "--max-new-tokens", "3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_the_api_raises_explain_errors_as_value_errors(runs):
    gen = proselab.load(runs["gpt"])
    with pytest.raises(ExplainError, match="method must be one of tokens, attention, ig, shapley, lime"):
        gen.explain("ROMEO:", method="saliency")
    assert issubclass(ExplainError, ValueError)
