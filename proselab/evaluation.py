"""Evaluation: perplexity and bits per character/token of a language model on a text, and
decoded BLEU / chrF / ROUGE of an encoder-decoder on sentence pairs (scores in metrics.py)."""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write_text
from .config import GenerationConfig, override_generation
from .data import progress
from .data.batch import IGNORE_INDEX, Batch
from .data.cache import tokenize_to_cache
from .data.classify import collate_texts, known_labels
from .data.labels import load_labelled
from .data.lm import count_eval_batches, eval_batches
from .data.pairs import load_pairs
from .data.seq2seq import source_batch
from .data.text import load_texts
from .decoding import generate
from .distributed import autocast, pick_device
from .metrics import classification_scores, score
from .plots import plot_confusion
from .report import (ReportError, analyse_labels, analyse_lm, analyse_pairs, check_report_dir,
                     confident_mistakes, write_report)
from .runs import open_run
from .zeroshot import Prompting, zero_shot_scores


def _open(run):
    """(model, tokenizer, config, source tokenizer) of a run directory (loaded on the best device)
    or of a loaded ``proselab.Generator``."""
    if isinstance(run, (str, Path)):
        _, model, tokenizer, cfg, src_tokenizer = open_run(run, pick_device("auto"))
        return model, tokenizer, cfg, src_tokenizer or tokenizer
    return run.model, run.tokenizer, run.config, run.src_tokenizer


def evaluate(run, data: str | list[str], encoding_errors: str = "strict", report: str | Path | None = None) -> dict:
    """Score a language model on text it may never have seen.

    Args:
        run: a run directory or a loaded Generator.
        data: text file(s), a directory of .txt files, or a built-in dataset name.
        encoding_errors: ``strict`` or ``replace`` for non-UTF-8 bytes.
        report: a directory for an error analysis (``report.write_report``): the highest-loss
            windows of the text and the distribution of the windows' losses.

    Returns:
        ``{"loss", "perplexity", "bits_per_token", "bits_per_char", "tokens", "chars", "unknown_tokens"}``;
        loss is the mean next-token cross-entropy in nats. With ``report``, also ``"report"``: the page.
    """
    if report is not None:
        check_report_dir(report)
    model, tokenizer, cfg, _ = _open(run)
    if report is not None and cfg.model.labels:
        raise ReportError("this run is a classifier: its report (confusion matrix, surest mistakes) comes from "
                          "labelled texts (--labels FILE), not running text")
    if cfg.model.family == "seq2seq":
        raise ValueError("this is a seq2seq run: score it on sentence pairs (proselab eval RUN --pairs FILE, "
                         "or proselab.evaluate_pairs(RUN, FILE)), not on running text")
    docs = load_texts(data, encoding_errors=encoding_errors)
    ids, unknown = tokenize_to_cache(docs, tokenizer)
    if len(ids) < 2:
        raise ValueError(f"{data}: the text must hold at least two tokens to be scored")
    loss = evaluate_tokens(model, ids, cfg.model.block_size, next(model.parameters()).device)
    n_pred = len(ids) - 1
    chars = sum(len(text) for _, text in docs)
    total_bits = loss * n_pred / math.log(2)
    result = {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_token": loss / math.log(2),
        "bits_per_char": total_bits / max(chars, 1),
        "tokens": int(len(ids)),
        "chars": chars,
        "unknown_tokens": int(unknown),
    }
    if report is not None:
        analysis = analyse_lm(model, tokenizer, ids, cfg.model.block_size, scores=result)
        result["report"] = str(write_report(analysis, report)["html"])
    return result


def evaluate_tokens(model: torch.nn.Module, ids: np.ndarray, block_size: int, device: torch.device,
                    dtype: torch.dtype | None = None, batch_size: int = 32) -> float:
    """Exact mean next-token loss (nats) over a whole token array, block by block."""
    batches = progress.iterate(eval_batches(ids, block_size, batch_size), "scoring the text",
                               count_eval_batches(len(ids), block_size, batch_size), "batch")
    return evaluate_batches(model, batches, device, dtype)


@torch.no_grad()
def evaluate_batches(model: torch.nn.Module, batches: Iterable[Batch], device: torch.device,
                     dtype: torch.dtype | None = None) -> float:
    """Mean loss (nats) over every target of ``batches`` that is not IGNORE_INDEX: the exact
    per-token loss of the data, however the batches are cut or padded (each batch's mean
    loss weighted by its number of targets)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        batch = batch.to(device)
        n = int((batch.targets != IGNORE_INDEX).sum())
        if n == 0:
            continue
        with autocast(device, dtype):
            _, loss = model(batch.inputs, batch.targets)  # the model's own loss path (gpt: head_loss, no float32 logits)
        total += loss.item() * n
        count += n
    model.train(was_training)
    assert count > 0, "evaluate_batches needs at least one target"
    return total / count


@torch.no_grad()
def classify_batches(model: torch.nn.Module, batches: Iterable[Batch], device: torch.device,
                     dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A classifier's label log-probabilities (N, L) (float32) for every text of ``batches``,
    and their targets (N,), in the batches' order."""
    was_training = model.training
    model.eval()
    log_probs, targets = [], []
    for batch in batches:
        with autocast(device, dtype):
            logits, _ = model(batch.inputs.to(device))
        log_probs.append(torch.log_softmax(logits.float(), dim=-1).cpu())
        targets.append(batch.targets)
    model.train(was_training)
    return torch.cat(log_probs), torch.cat(targets)


@torch.no_grad()
def classify_texts(model: torch.nn.Module, tokenizer, texts: list[str], block_size: int, batch_size: int = 64,
                   dtype: torch.dtype | None = None, desc: str | None = None) -> torch.Tensor:
    """A classifier's label log-probabilities (N, L) of each text (its first block_size tokens),
    in the order of ``texts``, computed in batches of similar length; with a bar saying ``desc``
    when given (an evaluation: the API and the server classify without one)."""
    device = next(model.parameters()).device
    ids = [x[:block_size] or [tokenizer.unk_id or 0] for x in tokenizer.encode_batch(texts)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    chunks = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    batches = (collate_texts([ids[i] for i in chunk], torch.zeros(len(chunk), dtype=torch.long)) for chunk in chunks)
    if desc is not None:
        batches = progress.iterate(batches, desc, len(chunks), "batch")
    log_probs, _ = classify_batches(model, batches, device, dtype)
    out = torch.empty_like(log_probs)
    out[torch.tensor(order)] = log_probs
    return out


def _write_report(out_dir: Path, rows, log_probs: torch.Tensor, labels: list[str], scores: dict, n: int) -> list[dict]:
    """confusion.png, and mistakes.jsonl: the ``n`` wrong predictions the classifier was surest of."""
    plot_confusion(scores["confusion"], labels, out_dir / "confusion.png",
                   title=f"accuracy {scores['accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f}")
    wrong = confident_mistakes([r.text for r in rows], [r.label for r in rows], log_probs, labels, n,
                               [r.where for r in rows])
    atomic_write_text(out_dir / "mistakes.jsonl", "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in wrong))
    return wrong


def _predict(model, tokenizer, cfg, texts: list[str], prompting: Prompting | None, batch_size: int) -> torch.Tensor:
    """Label log-probabilities (N, L): a classifier's head, or zero-shot likelihoods of a language model."""
    if prompting is None:
        return classify_texts(model, tokenizer, texts, cfg.model.block_size, batch_size,
                              desc=f"classifying {len(texts):,} texts")
    if cfg.model.labels or cfg.model.family == "seq2seq":
        raise ValueError("zero-shot classification (--classes) scores continuations with a language model (gpt or "
                         "rnn run); score a classifier without --classes")
    window = cfg.model.block_size if cfg.model.family == "gpt" else None
    return torch.log_softmax(zero_shot_scores(model, tokenizer, texts, prompting, window, batch_size), dim=-1)


def evaluate_labels(run, labelled: str | list[str], out_dir: str | Path | None = None, batch_size: int = 64,
                    bad_lines: str = "error", mistakes: int = 50, prompting: Prompting | None = None,
                    columns: tuple[str, str] | None = None, report: str | Path | None = None) -> dict:
    """Classify labelled texts with a classifier run, or zero-shot with a language model run, and
    score the predictions.

    Args:
        run: a run directory or a loaded Generator.
        labelled: .csv / .tsv / .jsonl files with a text and a label column, or a built-in
            labelled dataset (``tweets-sentiment:test``).
        out_dir: write ``confusion.png`` and ``mistakes.jsonl`` (the most confident mistakes) there.
        bad_lines: error, or skip (bad rows and labels the classifier does not know are left out).
        mistakes: how many mistakes to write.
        prompting: zero-shot with a language model: the classes (the file's label names), the
            template and the verbalisations (``proselab.zeroshot``).
        columns: the (text, label) columns; default: the run's ``data.text_column`` and ``label_column``.
        report: a directory for an error analysis (``report.write_report``): the page shows the
            confusion matrix and the most confident mistakes, written there (as ``out_dir``).

    Returns:
        ``classification_scores`` (accuracy, macro_f1, per_label, confusion) plus ``texts``,
        ``skipped``, ``seconds`` and ``texts_per_sec``; with ``report``, also ``"report"``: the page.
    """
    if report is not None:
        if out_dir is not None and Path(out_dir).resolve() != Path(report).resolve():
            raise ReportError("the report shows confusion.png and mistakes.jsonl beside it: give out_dir (--out) or "
                              "report (--report), not both")
        out_dir = check_report_dir(report)
    model, tokenizer, cfg, _ = _open(run)
    labels = list(prompting.classes) if prompting is not None else cfg.model.labels
    if not labels:
        raise ValueError(f"--labels scores a classifier, but this run is a {cfg.model.family} language model without "
                         "labels: give --classes for zero-shot classification, or fine-tune a classifier from it: "
                         "proselab train --train.init_from=RUN --data FILE.csv")
    rows, skipped = load_labelled(labelled, *(columns or (cfg.data.text_column, cfg.data.label_column)), bad_lines)
    rows, unseen = known_labels(rows, labels, bad_lines, "evaluation")
    start = time.perf_counter()
    log_probs = _predict(model, tokenizer, cfg, [r.text for r in rows], prompting, batch_size)
    seconds = time.perf_counter() - start
    index = {name: i for i, name in enumerate(labels)}
    scores = classification_scores([index[r.label] for r in rows], log_probs.argmax(-1).tolist(), labels)
    result = {**scores, "texts": len(rows), "skipped": skipped + unseen, "seconds": seconds,
              "texts_per_sec": len(rows) / max(seconds, 1e-9)}
    if out_dir is not None:
        if report is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        wrong = _write_report(Path(out_dir), rows, log_probs, labels, scores, mistakes)
        if report is not None:
            result["report"] = str(write_report(analyse_labels(result, labels, wrong), report)["html"])
    return result


@torch.no_grad()
def translate(model: torch.nn.Module, sources: list[str], src_tokenizer, tokenizer, config: GenerationConfig,
              batch_size: int = 64, truncate: int = 0, desc: str | None = None, leave: bool = True) -> list[str]:
    """Decode every source with an encoder-decoder, in batches of similar length (each source
    cut to its first ``truncate`` tokens when > 0), with a bar saying ``desc`` when given
    (``leave``: keep its line when done).

    Returns:
        The best (first) output text of each source, in the order of ``sources``.
    """
    was_training = model.training
    model.eval()
    suppress = [tokenizer.unk_id] if tokenizer.unk_id is not None else []
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[str] = [""] * len(sources)
    n = config.num_return_sequences
    with progress.showing(desc is not None), progress.bar(desc or "", len(sources), "sentence", leave) as bar:
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            batch = source_batch(src_tokenizer, [sources[i] for i in chunk], config.max_new_tokens, truncate,
                                 getattr(getattr(model, "config", None), "src_prefix_id", -1))
            gens = generate(model, batch, config, tokenizer=tokenizer, suppress_ids=suppress)
            for j, i in enumerate(chunk):
                out[i] = gens[j * n].text
            bar.update(len(chunk))
    model.train(was_training)
    return out


def evaluate_pairs(run, pairs: str | list[str], out: str | Path | None = None,
                   metrics: tuple[str, ...] = ("bleu", "chrf", "rouge"), batch_size: int = 64,
                   bad_lines: str = "error", report: str | Path | None = None, worst: int = 20, **generation) -> dict:
    """Decode the sources of sentence pairs with a seq2seq run and score the outputs.

    Args:
        run: a seq2seq run directory or a loaded Generator.
        pairs: .tsv / {"src", "tgt"} .jsonl files, or a built-in pair dataset (``aclsum:test``).
        out: write the hypotheses there, one per line (newlines inside escaped as ``\\n``).
        metrics: any of bleu, chrf, rouge (see ``metrics.score``).
        report: a directory for an error analysis (``report.write_report``): the ``worst``
            segments by sentence chrF, BLEU by source length, hallucination signals.
        worst: how many of the lowest-chrF segments the report shows.
        **generation: GenerationConfig overrides; the default is greedy decoding
            (``do_sample=False``), ``num_beams=5`` gives beam search.

    Returns:
        The scores with their signatures (``metrics.score``), plus ``pairs`` and ``seconds``
        (decoding time) and ``sentences_per_sec``; with ``report``, also ``"report"``: the page.
    """
    if report is not None:
        check_report_dir(report)
    model, tokenizer, cfg, src_tokenizer = _open(run)
    if cfg.model.family != "seq2seq":
        raise ValueError(f"--pairs scores an encoder-decoder, but this run is a {cfg.model.family} model; "
                         "evaluate a language model on text instead")
    data, _ = load_pairs(pairs, bad_lines)
    gcfg = override_generation(cfg.generation, {"do_sample": False, **generation})
    start = time.perf_counter()
    hyps = translate(model, [s for s, _ in data], src_tokenizer, tokenizer, gcfg, batch_size, cfg.data.truncate_src,
                     desc=f"decoding {len(data):,} pairs")
    seconds = time.perf_counter() - start
    _warn_if_empty(hyps, run)
    if out is not None:
        atomic_write_text(Path(out), "".join(h.replace("\n", "\\n") + "\n" for h in hyps))
    result = score(hyps, [t for _, t in data], metrics)
    result = {**result, "pairs": len(data), "seconds": seconds, "sentences_per_sec": len(data) / max(seconds, 1e-9)}
    if report is not None:
        analysis = analyse_pairs([s for s, _ in data], [t for _, t in data], hyps, result, worst)
        result["report"] = str(write_report(analysis, report)["html"])
    return result


def _warn_if_empty(hyps: list[str], run) -> None:
    """Warn when most outputs are empty: a model that ends every output at once is undertrained,
    and its near-zero scores would otherwise look like a bug in the data or the metric."""
    empty = sum(not h.strip() for h in hyps)
    if hyps and empty > len(hyps) / 2:
        where = f" {run}" if isinstance(run, (str, Path)) else ""
        warnings.warn(f"{empty} of {len(hyps)} outputs are empty: the model ends them at once, as an undertrained "
                      f"model does; train it longer (proselab train --resume{where or ' RUN'} "
                      "--train.max_iters=MORE) and check that its val loss fell", stacklevel=3)
