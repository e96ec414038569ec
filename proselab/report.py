"""Error analysis of an evaluation: where a model goes wrong on a test set.

- pairs (seq2seq): the worst segments by sentence-level chrF, corpus BLEU by source-length
  bucket, and hallucination signals (a hypothesis much longer than its source, a repeated
  n-gram, an empty hypothesis);
- language models: the fixed windows of the eval text with the highest mean loss, and the
  distribution of the windows' losses;
- classifiers: the confusion matrix and the mistakes the classifier was surest of.

Each ``analyse_*`` returns a JSON-ready dict; ``write_report`` writes it as report.json and a
self-contained report.html (report_html.py) with its plots beside it. The evaluation functions
call them when given ``report=DIR``::

    proselab.evaluate_pairs(run, "test.tsv", report="report/")
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write_text
from .data import progress
from .decoding import json_safe
from .report_html import render_report

LENGTH_RATIO = 2.0  # a hypothesis with more than this many words per source word is "too long"
REPEAT_N, REPEAT_TIMES = 3, 3  # an n-gram of REPEAT_N words appearing REPEAT_TIMES times or more
BUCKETS = ((1, 10), (11, 20), (21, 30), (31, None))  # source lengths in words (an empty source counts as 1)
EXAMPLES = 5  # examples kept per hallucination signal
# what a report writes: a directory holding report.json, or nothing but these, holds a previous report
FILES = ("report.json", "report.html", "bleu_by_length.png", "loss_distribution.png", "confusion.png",
         "mistakes.jsonl")


class ReportError(ValueError):
    """A report that cannot be written as asked: a directory in the way, a kind of run it cannot do."""


def check_report_dir(out_dir: str | Path) -> Path:
    """``out_dir`` as a Path, refused (before any work) when it is a file, or a non-empty
    directory that does not hold a previous report (which is overwritten)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--report {out} is a file: give a directory (new, empty, or a previous report's)")
    if out.is_dir() and not (out / "report.json").is_file() and any(p.name not in FILES for p in out.iterdir()):
        raise ReportError(f"--report {out} is a non-empty directory without a previous report: give a new or "
                          "empty directory, so that no file of yours is overwritten")
    return out


# ---- pairs -------------------------------------------------------------------------------------

def repeated_ngram(text: str, n: int = REPEAT_N, times: int = REPEAT_TIMES) -> str | None:
    """The most frequent n-gram of ``text``'s words when it appears ``times`` times or more, else None."""
    words = text.split()
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return None
    gram, count = grams.most_common(1)[0]
    return " ".join(gram) if count >= times else None


def length_ratio(source: str, hypothesis: str) -> float:
    """Words of the hypothesis per word of the source (an empty source counts as one word)."""
    return len(hypothesis.split()) / max(len(source.split()), 1)


def too_long(source: str, hypothesis: str, ratio: float = LENGTH_RATIO) -> bool:
    """Whether the hypothesis has more than ``ratio`` words per source word."""
    return length_ratio(source, hypothesis) > ratio


def _bucket_name(lo: int, hi: int | None) -> str:
    return f"{lo}-{hi}" if hi is not None else f"{lo}+"


def bleu_by_length(sources: list[str], references: list[str], hypotheses: list[str]) -> list[dict]:
    """sacrebleu's corpus BLEU of the pairs in each source-length bucket (``BUCKETS``, in words).

    Returns:
        One ``{"bucket", "lo", "hi", "pairs", "bleu"}`` per non-empty bucket, shortest first.
    """
    from sacrebleu.metrics import BLEU

    out = []
    for lo, hi in BUCKETS:
        idx = [i for i, s in enumerate(sources) if lo <= max(len(s.split()), 1) <= (hi or math.inf)]
        if idx:
            bleu = BLEU().corpus_score([hypotheses[i] for i in idx], [[references[i] for i in idx]]).score
            out.append({"bucket": _bucket_name(lo, hi), "lo": lo, "hi": hi, "pairs": len(idx), "bleu": float(bleu)})
    return out


def hallucination_signals(sources: list[str], hypotheses: list[str], ratio: float = LENGTH_RATIO,
                          n: int = REPEAT_N, times: int = REPEAT_TIMES, examples: int = EXAMPLES) -> dict:
    """Hypotheses that look made up: too long for their source, repeating an n-gram, or empty.

    Returns:
        ``{"too_long", "repeated_ngram", "empty"}``, each ``{"what", "count", "examples"}``;
        an example is ``{"index", "source", "hypothesis"}`` (+ ``ratio`` or ``ngram``).
    """
    found: dict[str, list[dict]] = {"too_long": [], "repeated_ngram": [], "empty": []}
    for i, (s, h) in enumerate(zip(sources, hypotheses)):
        row = {"index": i, "source": s, "hypothesis": h}
        if not h.strip():
            found["empty"].append(row)
            continue
        if too_long(s, h, ratio):
            found["too_long"].append({**row, "ratio": length_ratio(s, h)})
        gram = repeated_ngram(h, n, times)
        if gram is not None:
            found["repeated_ngram"].append({**row, "ngram": gram})
    found["too_long"].sort(key=lambda r: -r["ratio"])
    what = {"too_long": f"more than {ratio:g} words of hypothesis per word of source",
            "repeated_ngram": f"a {n}-gram of words appearing {times} times or more",
            "empty": "an empty hypothesis"}
    return {k: {"what": what[k], "count": len(v), "examples": v[:examples]} for k, v in found.items()}


def analyse_pairs(sources: list[str], references: list[str], hypotheses: list[str], scores: dict | None = None,
                  worst: int = 20) -> dict:
    """The error analysis of decoded sentence pairs.

    Args:
        sources, references, hypotheses: the pairs and the model's outputs, aligned.
        scores: the corpus scores to show (``evaluate_pairs``' result).
        worst: how many of the lowest-chrF segments to keep.

    Returns:
        ``{"kind": "pairs", "scores", "pairs", "worst", "buckets", "signals"}``; a worst segment is
        ``{"index", "chrf", "source", "reference", "hypothesis"}``, lowest chrF first.
    """
    from sacrebleu import sentence_chrf

    assert len(sources) == len(references) == len(hypotheses), "sources, references and hypotheses must align"
    chrf = [float(sentence_chrf(h, [r]).score) for h, r in zip(hypotheses, references)]
    order = sorted(range(len(chrf)), key=lambda i: (chrf[i], i))[:worst]
    return {"kind": "pairs", "scores": _headline(scores or {}), "pairs": len(sources),
            "worst": [{"index": i, "chrf": chrf[i], "source": sources[i], "reference": references[i],
                       "hypothesis": hypotheses[i]} for i in order],
            "buckets": bleu_by_length(sources, references, hypotheses),
            "signals": hallucination_signals(sources, hypotheses)}


def _headline(scores: dict) -> dict:
    """The plain numbers of an evaluation's result (no signatures, details, per-label tables or timings)."""
    return {k: v for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k != "seconds" and not k.endswith("_per_sec")}


# ---- language models -----------------------------------------------------------------------------

@torch.no_grad()
def window_losses(model: torch.nn.Module, ids: np.ndarray, window: int,
                  batch_size: int = 32) -> list[tuple[int, int, float]]:
    """Mean next-token loss (nats) of each fixed window of a token array.

    Window k reads tokens ``k*window ... k*window+window-1`` and predicts the token after each;
    the last window may be shorter (at least one prediction).

    Returns:
        ``(start, predictions, loss)`` per window, in text order.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    starts = list(range(0, len(ids) - 1, window))
    out = []
    firsts = range(0, len(starts), batch_size)
    for s in progress.iterate(firsts, f"scoring {len(starts):,} windows", len(firsts), "batch"):
        chunk = starts[s : s + batch_size]
        lengths = [min(window, len(ids) - 1 - a) for a in chunk]
        T = max(lengths)
        x = torch.zeros(len(chunk), T, dtype=torch.long)  # (B, T)
        y = torch.full((len(chunk), T), -100, dtype=torch.long)  # (B, T); -100: past a short last window
        for b, (a, n) in enumerate(zip(chunk, lengths)):
            x[b, :n] = torch.from_numpy(np.asarray(ids[a : a + n], dtype=np.int64))
            y[b, :n] = torch.from_numpy(np.asarray(ids[a + 1 : a + n + 1], dtype=np.int64))
        logits, _ = model(x.to(device))  # (B, T, V)
        nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), y.to(device),
                                                reduction="none")  # (B, T)
        for b, (a, n) in enumerate(zip(chunk, lengths)):
            out.append((a, n, float(nll[b, :n].mean())))
    model.train(was_training)
    return out


def analyse_lm(model: torch.nn.Module, tokenizer, ids: np.ndarray, window: int, scores: dict | None = None,
               top: int = 20, bins: int = 30) -> dict:
    """The error analysis of a language model on a text: its highest-loss windows, and how the
    windows' losses are spread.

    Args:
        ids: the text's token ids.
        window: tokens per window (a GPT's block_size at most).
        top: how many of the highest-loss windows to keep, with their text.

    Returns:
        ``{"kind": "lm", "scores", "window", "windows", "highest", "histogram"}``: ``highest`` holds
        ``{"index", "start", "tokens", "loss", "text"}`` (highest loss first), ``histogram`` the
        ``edges`` and ``counts`` of the windows' losses.
    """
    rows = window_losses(model, ids, window)
    losses = np.array([loss for _, _, loss in rows])
    order = sorted(range(len(rows)), key=lambda k: (-rows[k][2], k))[:top]
    highest = [{"index": k, "start": rows[k][0], "tokens": rows[k][1], "loss": rows[k][2],
                "text": tokenizer.decode([int(t) for t in ids[rows[k][0] : rows[k][0] + rows[k][1] + 1]])}
               for k in order]
    counts, edges = np.histogram(losses, bins=min(bins, max(len(rows), 1)))
    return {"kind": "lm", "scores": _headline(scores or {}), "window": window, "windows": len(rows),
            "highest": highest, "histogram": {"edges": edges.tolist(), "counts": counts.tolist()}}


# ---- classifiers ---------------------------------------------------------------------------------

def confident_mistakes(texts: list[str], true: list[str], log_probs: torch.Tensor, labels: list[str],
                       n: int, where: list | None = None) -> list[dict]:
    """The ``n`` wrong predictions the classifier was surest of, surest first.

    Returns:
        ``{"where", "text", "label", "predicted", "probability"}`` per mistake (probability of
        the predicted label, 4 decimals).
    """
    probs, predicted = log_probs.exp().max(-1)
    wrong = [i for i in range(len(texts)) if labels[int(predicted[i])] != true[i]]
    wrong.sort(key=lambda i: -float(probs[i]))
    return [{"where": where[i] if where else i, "text": texts[i], "label": true[i],
             "predicted": labels[int(predicted[i])], "probability": round(float(probs[i]), 4)} for i in wrong[:n]]


def analyse_labels(scores: dict, labels: list[str], mistakes: list[dict], confusion_png: str = "confusion.png") -> dict:
    """The error analysis of a classifier: its scores, confusion matrix and surest mistakes
    (``confident_mistakes``); the confusion matrix is drawn by ``evaluate_labels``, beside the page."""
    return {"kind": "labels", "scores": _headline(scores), "labels": list(labels),
            "per_label": scores.get("per_label", {}), "confusion": scores["confusion"],
            "confusion_png": confusion_png, "mistakes": mistakes}


# ---- writing -------------------------------------------------------------------------------------

def write_report(analysis: dict, out_dir: str | Path, title: str = "") -> dict[str, Path]:
    """Write an analysis (``analyse_pairs``, ``analyse_lm`` or ``analyse_labels``) as
    report.json, report.html and its plots in ``out_dir`` (refused when it is a non-empty
    directory without a previous report).

    Returns:
        {"json": path, "html": path, and each plot's name: path}.
    """
    out = check_report_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = json_safe(analysis)
    paths = render_report(data, out, title or f"error analysis ({analysis['kind']})")
    # report.json last: its presence marks a whole report (a directory --report may overwrite)
    atomic_write_text(out / "report.json", json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    return {"json": out / "report.json", **paths}
