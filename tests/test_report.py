"""Error analysis from `proselab eval --report DIR`: the worst segments by sentence chrF, BLEU by
source length and hallucination signals of a seq2seq run; the highest-loss windows of a language
model; a classifier's confusion matrix and surest mistakes; the pages in headless Chromium; the
CLI and its one-line errors. Tiny seeded runs trained for a few steps, and hand-made strings."""

import json
import random
from pathlib import Path

import pytest
import torch
from sacrebleu import sentence_chrf
from sacrebleu.metrics import BLEU

import proselab
from conftest import shakespeare_text, tiny_overrides
from proselab.cli import main
from proselab.report import (LENGTH_RATIO, analyse_pairs, bleu_by_length, hallucination_signals, repeated_ngram,
                             too_long)
from proselab.training import train


def _train(tmp: Path, overrides: dict) -> Path:
    with pytest.MonkeyPatch.context() as mp:  # a module's fixture runs before the per-test cache exists
        mp.setenv("PROSELAB_CACHE", str(tmp / "cache"))
        mp.setattr("proselab.training.plot_loss", lambda *args, **kwargs: None)
        train(None, overrides)
    return Path(overrides["train.out_dir"])


def _pairs_file(path: Path, n: int = 40) -> Path:
    """Reversal pairs whose sources fall in every length bucket (1 to 40 words)."""
    rng = random.Random(3)
    lines = []
    for i in range(n):
        toks = [rng.choice("abcdefgh") for _ in range(1 + (i * 37) % 40)]
        lines.append(" ".join(toks) + "\t" + " ".join(reversed(toks)))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny seq2seq run, a GPT language model and a classifier: a few steps each."""
    tmp = tmp_path_factory.mktemp("report")
    from test_seq2seq import s2s_overrides

    s2s = s2s_overrides(tmp, **{"model.arch": "rnn", "model.attention": "bahdanau", "train.max_iters": 10,
                                "train.eval_interval": 10, "train.out_dir": str(tmp / "s2s")})
    out = {"seq2seq": _train(tmp, {k: v for k, v in s2s.items() if k not in ("model.n_layer", "model.n_head")})}
    corpus = tmp / "corpus.txt"
    corpus.write_text(shakespeare_text(8_000), encoding="utf-8")
    out["gpt"] = _train(tmp, tiny_overrides(corpus, tmp / "gpt", "gpt", **{"train.max_iters": 6,
                                                                           "train.eval_interval": 6}))
    rng = random.Random(0)
    words = {"pos": "great lovely superb", "neg": "awful boring terrible"}
    lines = ["text,label"] + [f"the film was {rng.choice(words[lab].split())},{lab}" for lab in ["pos", "neg"] * 40]
    (tmp / "reviews.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out["classifier"] = _train(tmp, {**tiny_overrides(tmp / "reviews.csv", tmp / "cls", "gpt", **{
        "train.max_iters": 3, "train.eval_interval": 3}), "data.tokenizer": "word", "model.block_size": 16})
    out["pairs"] = _pairs_file(tmp / "test.tsv")
    out["reviews"] = tmp / "reviews.csv"
    out["text"] = tmp / "eval.txt"
    out["text"].write_text(shakespeare_text(12_000)[8_000:], encoding="utf-8")
    return out


# ---- the detectors and the maths, on hand-made strings ------------------------------------------

def test_a_repeated_ngram_and_a_too_long_hypothesis_are_flagged_and_a_normal_one_is_not():
    assert repeated_ngram("the cat sat the cat sat the cat sat down") == "the cat sat"
    assert repeated_ngram("no no no no no") == "no no no"  # overlapping occurrences count
    assert repeated_ngram("the cat sat on the mat and the cat sat") is None  # twice is not a loop
    assert repeated_ngram("a b") is None
    assert too_long("one two", "one two three four five") and not too_long("one two three", "un deux trois quatre")
    assert too_long("x", "a b c") and not too_long("", "a b")  # an empty source counts as one word
    sources = ["le chat", "un deux trois", "bonjour", "la la", "il pleut"]
    hyps = ["the cat", "one two three", "hello hello there my friend how are you", "la la la la la", "   "]
    s = hallucination_signals(sources, hyps)
    assert [e["index"] for e in s["too_long"]["examples"]] == [2, 3]  # ratio 8 first, then 2.5
    assert s["too_long"]["examples"][0]["ratio"] == 8.0 > LENGTH_RATIO
    assert [e["index"] for e in s["repeated_ngram"]["examples"]] == [3] and s["repeated_ngram"]["count"] == 1
    assert s["empty"]["count"] == 1 and s["empty"]["examples"][0]["index"] == 4
    assert s["too_long"]["what"] == f"more than {LENGTH_RATIO:g} words of hypothesis per word of source"


def test_worst_segments_are_the_lowest_sentence_chrf_and_bucket_bleu_is_sacrebleus():
    rng = random.Random(1)
    vocab = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    sources, refs, hyps = [], [], []
    for i in range(60):
        src = rng.choices(vocab, k=rng.randint(1, 45))
        ref = [w.upper() for w in src]
        hyp = [w if rng.random() < 0.7 else rng.choice(vocab).upper() for w in ref]
        sources.append(" ".join(src))
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp[: rng.randint(0, len(hyp))]))
    a = analyse_pairs(sources, refs, hyps, worst=7)
    chrf = [sentence_chrf(h, [r]).score for h, r in zip(hyps, refs)]
    assert [w["chrf"] for w in a["worst"]] == sorted(chrf)[:7]
    assert all(w["hypothesis"] == hyps[w["index"]] and w["reference"] == refs[w["index"]] for w in a["worst"])
    buckets = bleu_by_length(sources, refs, hyps)
    assert [b["bucket"] for b in buckets] == ["1-10", "11-20", "21-30", "31+"]
    assert sum(b["pairs"] for b in buckets) == len(sources)
    for b in buckets:
        idx = [i for i, s in enumerate(sources) if b["lo"] <= len(s.split()) <= (b["hi"] or 10**9)]
        assert len(idx) == b["pairs"]
        assert b["bleu"] == BLEU().corpus_score([hyps[i] for i in idx], [[refs[i] for i in idx]]).score


# ---- each kind of run, through the CLI and the API ----------------------------------------------

def _varied(translate):
    """``evaluation.translate`` whose outputs are made to vary (a few steps of training give the same
    output for every source): right, half right, a loop, too long, or the model's own."""
    def wrapped(model, sources, *args, **kwargs):
        real = translate(model, sources, *args, **kwargs)
        made = []
        for i, (src, hyp) in enumerate(zip(sources, real)):
            words = src.split()[::-1]
            made.append([" ".join(words), " ".join(words[: len(words) // 2]), "a b c a b c a b c",
                         " ".join(words * 3), hyp][i % 5])
        return made
    return wrapped


def test_cli_pairs_report_matches_sacrebleu_on_the_hypotheses(runs, tmp_path, capsys, monkeypatch):
    from proselab import evaluation

    monkeypatch.setattr(evaluation, "translate", _varied(evaluation.translate))
    out, hyps_path = tmp_path / "report", tmp_path / "hyps.txt"
    argv = ["eval", str(runs["seq2seq"]), "--pairs", str(runs["pairs"]), "--out", str(hyps_path), "--report", str(out)]
    assert main(argv + ["--max-new-tokens", "40"]) == 0
    said = capsys.readouterr().out
    assert f"error analysis in {out / 'report.html'}" in said
    data = json.loads((out / "report.json").read_text())
    hyps = hyps_path.read_text(encoding="utf-8").splitlines()
    pairs = [line.split("\t") for line in runs["pairs"].read_text().splitlines()]
    srcs, refs = [s for s, _ in pairs], [t for _, t in pairs]
    assert data["kind"] == "pairs" and data["pairs"] == len(pairs) == len(hyps)
    chrf = sorted((sentence_chrf(h, [r]).score, i) for i, (h, r) in enumerate(zip(hyps, refs)))
    assert [(w["chrf"], w["index"]) for w in data["worst"]] == chrf[:20]
    assert data["buckets"] == bleu_by_length(srcs, refs, hyps) and len(data["buckets"]) == 4
    assert data["signals"] == json.loads(json.dumps(hallucination_signals(srcs, hyps)))
    flagged = {k: {e["index"] for e in v["examples"]} for k, v in data["signals"].items()}
    assert {2, 7, 12} <= flagged["repeated_ngram"] and {3, 8, 13} <= flagged["too_long"]
    assert not flagged["too_long"] & {0, 5, 10} and not flagged["repeated_ngram"] & {0, 1}
    assert all(b["bleu"] > 0 for b in data["buckets"])
    assert (out / "bleu_by_length.png").read_bytes()[:4] == b"\x89PNG"
    assert main(argv + ["--max-new-tokens", "40", "--json"]) == 0  # a previous report is overwritten
    assert json.loads(capsys.readouterr().out)["report"] == str(out / "report.html")


def test_cli_lm_report_highest_windows_are_the_highest_by_the_models_own_loss(runs, tmp_path, capsys):
    assert main(["eval", str(runs["gpt"]), "--data", str(runs["text"]), "--report", str(tmp_path / "lm"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    data = json.loads((tmp_path / "lm" / "report.json").read_text())
    assert res["report"] == str(tmp_path / "lm" / "report.html") and data["kind"] == "lm"
    gen = proselab.load(runs["gpt"])
    ids = gen.tokenizer.encode(runs["text"].read_text(encoding="utf-8"))
    W = data["window"]
    assert W == 32 and data["windows"] == -(-(len(ids) - 1) // W) == sum(data["histogram"]["counts"])
    losses = []
    with torch.no_grad():
        for start in range(0, len(ids) - 1, W):
            chunk = ids[start : start + W + 1]
            _, loss = gen.model(torch.tensor([chunk[:-1]]), torch.tensor([chunk[1:]]))  # the model's own loss path
            losses.append(float(loss))
    top = sorted(range(len(losses)), key=lambda k: -losses[k])[:20]
    assert [h["index"] for h in data["highest"]] == top
    for h in data["highest"]:
        assert h["loss"] == pytest.approx(losses[h["index"]], abs=1e-5) and h["start"] == h["index"] * W
        assert h["text"] == gen.tokenizer.decode(ids[h["start"] : h["start"] + h["tokens"] + 1])
    assert data["scores"]["loss"] == pytest.approx(res["loss"])
    assert (tmp_path / "lm" / "loss_distribution.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_labels_report_shows_the_confusion_matrix_and_the_surest_mistakes(runs, tmp_path, capsys):
    out = tmp_path / "cls"
    argv = ["eval", str(runs["classifier"]), "--labels", str(runs["reviews"]), "--report", str(out), "--json"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    data = json.loads((out / "report.json").read_text())
    mistakes = [json.loads(line) for line in (out / "mistakes.jsonl").read_text().splitlines()]
    assert data["kind"] == "labels" and data["mistakes"] == mistakes  # the same list, written once
    assert data["confusion"] == res["confusion"] and data["scores"]["accuracy"] == res["accuracy"]
    probs = [m["probability"] for m in mistakes]
    assert probs == sorted(probs, reverse=True) and all(m["label"] != m["predicted"] for m in mistakes)
    assert sum(map(sum, res["confusion"])) - sum(res["confusion"][i][i] for i in range(2)) >= len(mistakes)
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG" and data["confusion_png"] == "confusion.png"


# ---- the pages in Chromium --------------------------------------------------------------------


def _open(browser, path: Path, problems: list):
    page = browser.new_page()
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: problems.append(f"fetched {r.url}") if not r.url.startswith("file:") else None)
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    broken = page.eval_on_selector_all("img", "els => els.filter(e => !(e.complete && e.naturalWidth > 0)).length")
    assert broken == 0 and page.eval_on_selector_all("img", "els => els.length") == 1
    return page


def _attr(page, selector: str, name: str) -> list[float]:
    return page.eval_on_selector_all(selector, f"els => els.map(e => +e.dataset.{name})")


@pytest.mark.filterwarnings("ignore:.*outputs are empty")
def test_pages_render_without_errors_and_show_the_jsons_numbers(runs, browser, tmp_path):
    problems: list[str] = []
    proselab.evaluate_pairs(runs["seq2seq"], str(runs["pairs"]), report=tmp_path / "pairs", max_new_tokens=40)
    data = json.loads((tmp_path / "pairs" / "report.json").read_text())
    page = _open(browser, tmp_path / "pairs" / "report.html", problems)
    assert _attr(page, "#worst tr[data-chrf]", "chrf") == [w["chrf"] for w in data["worst"]]
    assert _attr(page, "#buckets tr[data-bleu]", "bleu") == [b["bleu"] for b in data["buckets"]]
    assert _attr(page, "#signals tr[data-count]", "count") == [s["count"] for s in data["signals"].values()]
    assert _attr(page, "#scores [data-score]", "value") == list(data["scores"].values())
    assert page.text_content("#worst tr:nth-child(2) td:nth-child(5)") in (data["worst"][0]["hypothesis"] or "(empty)")
    page.close()

    proselab.evaluate(runs["gpt"], str(runs["text"]), report=tmp_path / "lm")
    data = json.loads((tmp_path / "lm" / "report.json").read_text())
    page = _open(browser, tmp_path / "lm" / "report.html", problems)
    assert _attr(page, "#highest tr[data-loss]", "loss") == [h["loss"] for h in data["highest"]]
    assert page.text_content("#highest tr:nth-child(2) td.text") == data["highest"][0]["text"]
    page.close()

    proselab.evaluate_labels(runs["classifier"], str(runs["reviews"]), report=tmp_path / "cls", mistakes=5)
    data = json.loads((tmp_path / "cls" / "report.json").read_text())
    page = _open(browser, tmp_path / "cls" / "report.html", problems)
    assert _attr(page, "#confusion td[data-count]", "count") == [n for row in data["confusion"] for n in row]
    assert _attr(page, "#mistakes tr[data-prob]", "prob") == [m["probability"] for m in data["mistakes"]]
    page.close()
    assert problems == []


# ---- bad input ----------------------------------------------------------------------------------

def _one_line_error(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_bad_input_is_a_one_line_error(runs, tmp_path, capsys, monkeypatch):
    theirs = tmp_path / "mine"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    monkeypatch.setattr("proselab.evaluation.translate", lambda *a, **k: pytest.fail("decoded before refusing"))
    _one_line_error(capsys, ["eval", str(runs["seq2seq"]), "--pairs", str(runs["pairs"]), "--report", str(theirs)],
                    "is a non-empty directory without a previous report")
    assert (theirs / "notes.txt").read_text() == "keep me" and len(list(theirs.iterdir())) == 1
    _one_line_error(capsys, ["eval", str(runs["gpt"]), "--data", str(runs["text"]), "--report",
                             str(theirs / "notes.txt")], "is a file: give a directory")
    _one_line_error(capsys, ["eval", str(runs["classifier"]), "--data", str(runs["text"]), "--report",
                             str(tmp_path / "r")], "this run is a classifier: its report")
    _one_line_error(capsys, ["eval", str(runs["classifier"]), "--labels", str(runs["reviews"]), "--out",
                             str(tmp_path / "o"), "--report", str(tmp_path / "r")], "leave out --out")
    assert not (tmp_path / "r").exists()
