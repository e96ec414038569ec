"""Corpus-level scores of generated text against references: BLEU and chrF (sacrebleu), ROUGE (rouge-score).

The scoring itself is left to the libraries everyone reports with, so numbers are comparable
with published ones; each score comes with a signature string saying exactly how it was computed.
sacrebleu and rouge-score are imported inside the functions so ``import proselab`` stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence

METRICS = ("bleu", "chrf", "rouge")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def score(hypotheses: list[str], references: list[str], metrics: Sequence[str] = ("bleu", "chrf")) -> dict:
    """Score generated texts against one reference each, over the whole corpus.

    BLEU and chrF are sacrebleu's corpus scores with its defaults (13a tokenization, mixed case,
    exponential smoothing; chrF2 on character 6-grams). ROUGE is rouge-score's F-measure of each
    segment with the Porter stemmer on, averaged over segments; its default tokenizer lowercases
    and keeps only ASCII letters and digits, so text in other scripts scores 0 on ROUGE.
    An empty hypothesis is allowed and scores 0.

    Args:
        hypotheses: generated texts, one per segment.
        references: the reference text of each segment, in the same order.
        metrics: any of ``bleu``, ``chrf``, ``rouge`` (a single name is accepted too).

    Returns:
        A dict with, for the metrics asked for: ``bleu`` (0-100), ``bleu_signature``,
        ``bleu_details`` (``{"precisions": [p1, p2, p3, p4], "bp", "ratio", "hyp_len", "ref_len"}``,
        precisions in percent), ``chrf`` (0-100), ``chrf_signature``, ``rouge1``, ``rouge2``,
        ``rougeL`` (F-measure x 100) and ``rouge_signature``.

    Raises:
        ValueError: if the two lists differ in length or are empty, or a metric name is unknown.
    """
    names = _check_inputs(hypotheses, references, metrics)
    out: dict = {}
    if "bleu" in names:
        out.update(_bleu(hypotheses, references))
    if "chrf" in names:
        out.update(_chrf(hypotheses, references))
    if "rouge" in names:
        out.update(_rouge(hypotheses, references))
    return out


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """sacrebleu's sentence-level BLEU (0-100) of one hypothesis, for looking at single examples.

    Uses effective order (n-gram orders longer than the hypothesis are ignored), as sacrebleu
    recommends for sentences; corpus BLEU from ``score`` is the number to report.
    """
    if not isinstance(hypothesis, str) or not isinstance(reference, str):
        raise ValueError(
            f"sentence_bleu takes two strings, got {type(hypothesis).__name__} and {type(reference).__name__}"
        )
    from sacrebleu.metrics import BLEU

    return float(BLEU(effective_order=True).sentence_score(hypothesis, [reference]).score)


def _check_inputs(hypotheses, references, metrics) -> list[str]:
    """The metric names to compute, in order, after checking the user's arguments."""
    for name, value in (("hypotheses", hypotheses), ("references", references)):
        # a bare string would otherwise be scored character by character
        if isinstance(value, str):
            raise ValueError(f"{name} must be a list of strings, one per segment, not a single string")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"got {len(hypotheses)} hypotheses but {len(references)} references; pass one reference per hypothesis"
        )
    if not hypotheses:
        raise ValueError("got 0 hypotheses and 0 references; there is nothing to score")
    bad = [i for i, t in enumerate([*hypotheses, *references]) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"hypotheses and references must be strings; item {bad[0]} of the two lists is not")
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ValueError(f"unknown metric(s) {unknown or names}; valid metrics are: {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


def _bleu(hypotheses: list[str], references: list[str]) -> dict:
    from sacrebleu.metrics import BLEU

    bleu = BLEU()
    s = bleu.corpus_score(hypotheses, [references])
    details = {
        "precisions": [float(p) for p in s.precisions],
        "bp": float(s.bp),
        "ratio": float(s.ratio),
        "hyp_len": int(s.sys_len),
        "ref_len": int(s.ref_len),
    }
    return {"bleu": float(s.score), "bleu_signature": str(bleu.get_signature()), "bleu_details": details}


def _chrf(hypotheses: list[str], references: list[str]) -> dict:
    from sacrebleu.metrics import CHRF

    chrf = CHRF()
    s = chrf.corpus_score(hypotheses, [references])
    return {"chrf": float(s.score), "chrf_signature": str(chrf.get_signature())}


def _rouge(hypotheses: list[str], references: list[str]) -> dict:
    from importlib.metadata import version

    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, ref in zip(hypotheses, references):
        scores = scorer.score(ref, hyp)  # rouge-score takes (target, prediction)
        for t in ROUGE_TYPES:
            totals[t] += scores[t].fmeasure
    out = {t: 100.0 * total / len(hypotheses) for t, total in totals.items()}
    out["rouge_signature"] = f"rouge-score {version('rouge-score')}, F1, stemmer, mean over segments"
    return out


def classification_scores(true: Sequence[int], predicted: Sequence[int], labels: Sequence[str]) -> dict:
    """A classifier's scores, as scikit-learn computes them.

    Args:
        true, predicted: label ids, one per text, in the same order.
        labels: the label names, in id order.

    Returns:
        ``accuracy`` and ``macro_f1`` (0-1; macro-F1 is the unweighted mean over every label,
        a label never predicted counting 0), ``per_label`` (``{name: {"precision", "recall",
        "f1", "support"}}``) and ``confusion`` (rows: true label, columns: predicted, as lists).

    Raises:
        ValueError: if the two sequences differ in length or are empty.
    """
    if len(true) != len(predicted) or not len(true):
        raise ValueError(f"classification_scores needs as many predictions as texts (> 0), got {len(predicted)} "
                         f"and {len(true)}")
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(true, predicted, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(true, predicted)),
        "macro_f1": float(f1_score(true, predicted, labels=ids, average="macro", zero_division=0)),
        "per_label": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(labels)},
        "confusion": confusion_matrix(true, predicted, labels=ids).tolist(),
    }
