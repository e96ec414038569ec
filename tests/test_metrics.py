import pytest
import sacrebleu

from proselab.metrics import score, sentence_bleu

HYPS = ["the cat sat on the mat", "a quick brown fox jumps over the dog", ""]
REFS = ["the cat is on the mat", "the quick brown fox jumped over the lazy dog", "nothing was generated here"]


def test_identical_text_scores_100():
    texts = ["the cat sat on the mat today", "a quick brown fox jumps over the lazy dog"]
    out = score(texts, texts, metrics=("bleu", "chrf", "rouge"))
    for key in ("bleu", "chrf", "rouge1", "rouge2", "rougeL"):
        assert out[key] == pytest.approx(100.0), key


def test_disjoint_text_scores_0():
    out = score(["alpha beta gamma delta"], ["one two three four"], metrics=("bleu", "rouge"))
    assert out["bleu"] == 0.0
    assert out["rouge1"] == out["rouge2"] == out["rougeL"] == 0.0


def test_bleu_matches_sacrebleu_and_has_details():
    out = score(HYPS, REFS, metrics=["bleu"])
    ref = sacrebleu.corpus_bleu(HYPS, [REFS])
    assert out["bleu"] == pytest.approx(ref.score)
    assert 0.0 < out["bleu"] < 100.0
    d = out["bleu_details"]
    assert d["precisions"] == pytest.approx(ref.precisions)
    assert d["bp"] == pytest.approx(ref.bp)
    assert d["ratio"] == pytest.approx(ref.sys_len / ref.ref_len)
    assert (d["hyp_len"], d["ref_len"]) == (ref.sys_len, ref.ref_len)
    assert set(out) == {"bleu", "bleu_signature", "bleu_details"}


def test_chrf_in_range_and_matches_sacrebleu():
    out = score(HYPS, REFS, metrics=["chrf"])
    assert 0.0 < out["chrf"] < 100.0
    assert out["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)


def test_rouge_by_hand():
    # hyp and ref share the, the, cat, on, mat: 5 of 6 unigrams each way -> F1 = 5/6;
    # bigrams: "the cat", "on the", "the mat" of 5 each way -> F1 = 3/5.
    out = score(["the cat sat on the mat"], ["the cat is on the mat"], metrics=["rouge"])
    assert out["rouge1"] == pytest.approx(100 * 5 / 6)
    assert out["rouge2"] == pytest.approx(100 * 3 / 5)
    # averaged over segments: the second, identical pair scores 100
    two = score(["the cat sat on the mat", "hello world"], ["the cat is on the mat", "hello world"], "rouge")
    assert two["rouge1"] == pytest.approx((100 * 5 / 6 + 100) / 2)


def test_rouge_stems():
    out = score(["cats running"], ["cat runs"], metrics=["rouge"])
    assert out["rouge1"] == pytest.approx(100.0)


def test_empty_hypothesis_scores_0():
    out = score([""], ["some reference text"], metrics=("bleu", "chrf", "rouge"))
    assert out["bleu"] == out["chrf"] == out["rouge1"] == 0.0


def test_signatures():
    out = score(HYPS, REFS, metrics=("bleu", "chrf", "rouge"))
    assert out["bleu_signature"].startswith("nrefs:1|case:mixed|")
    assert "tok:13a" in out["bleu_signature"]
    assert f"version:{sacrebleu.__version__}" in out["bleu_signature"]
    assert "nc:6" in out["chrf_signature"]
    assert out["rouge_signature"].startswith("rouge-score ")
    assert "stemmer" in out["rouge_signature"]


def test_default_metrics_are_bleu_and_chrf():
    assert set(score(HYPS, REFS)) == {"bleu", "bleu_signature", "bleu_details", "chrf", "chrf_signature"}


def test_length_mismatch():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        score(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="0 hypotheses"):
        score([], [])


def test_single_string_rejected():
    with pytest.raises(ValueError, match="list of strings"):
        score("the cat", "the cat")


def test_unknown_metric():
    with pytest.raises(ValueError, match="meteor.*bleu, chrf, rouge"):
        score(["a"], ["a"], metrics=("bleu", "meteor"))


def test_sentence_bleu():
    hyp, ref = "the cat sat on the mat", "the cat is on the mat"
    assert sentence_bleu(hyp, ref) == pytest.approx(sacrebleu.sentence_bleu(hyp, [ref]).score)
    assert sentence_bleu(ref, ref) == pytest.approx(100.0)
    # effective order: a two-word exact match is not zeroed by missing 3- and 4-grams
    assert sentence_bleu("hello world", "hello world") == pytest.approx(100.0)
