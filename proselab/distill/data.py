"""Sequence-level knowledge distillation data (Kim & Rush 2016, "Sequence-Level Knowledge
Distillation"): a student trains on what the teacher says, not on the references.

``sequence_kd_pairs`` decodes every source of a pairs file, or of a text file of sources with
no references, with a seq2seq teacher (greedy or beam search, optionally its n best) and writes
``source -> teacher output`` pairs that ``load_pairs`` reads like any other. ``sample_corpus``
samples a synthetic corpus from a language-model teacher (GPT or RNN) for a student language
model to train on.

Both go through the one decoding engine, batch by batch, and are resumable. The output is
appended in source (sample) order and flushed after every batch; beside it a small progress
file, ``OUT.progress.json``, is written atomically after each append. It records the command
that writes the output (teacher, input, settings), how many sources are complete and the
output's length in bytes at that point. Re-running the same command truncates what an
interruption left after that length (half a batch), re-decodes from the window holding the
first missing source (so every batch is cut as in an uninterrupted run and the output is the
same, byte for byte) and appends only what is missing. An existing output without that file,
or written by another command, is refused unless ``overwrite``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..atomic import atomic_write_text
from ..data import progress
from ..data.files import DatasetError, read_text
from ..data.pairs import load_pairs
from ..data.seq2seq import source_batch
from ..decoding import generate

PROGRESS_SUFFIX = ".progress.json"  # the sidecar beside the output
SORT_WINDOW = 16  # batches whose sources are sorted by length together (Marian's maxi-batch)
PAIR_FORMATS = (".tsv", ".jsonl")
NO_EOS_SEPARATOR = "\n\n"  # between samples when the teacher's tokenizer has no end-of-text token (char)
_FLAT = re.compile(r"[\t\r\n]")  # what a .tsv pair cannot hold inside a side


class DistillDataError(ValueError):
    """A distill-data request that cannot be carried out as given: a one-line CLI error."""


def progress_path(out: str | Path) -> Path:
    """The progress file beside ``out`` that makes a run of distill-data resumable."""
    out = Path(out)
    return out.with_name(out.name + PROGRESS_SUFFIX)


def sequence_kd_pairs(teacher, pairs: str | list[str] | None, out: str | Path, n_best: int = 1, batch_size: int = 64,
                      overwrite: bool = False, bad_lines: str = "error", device: str = "auto",
                      sort_window: int = SORT_WINDOW, sources: str | Path | None = None, **generation) -> dict:
    """Decode every source of ``pairs`` with a seq2seq teacher and write ``(source, output)`` pairs.

    Sources are decoded in batches of ``batch_size``, sorted by length within windows of
    ``sort_window`` batches; outputs are written in source order. Greedy unless ``num_beams``.

    Args:
        teacher: a seq2seq run directory (or a loaded ``proselab.Generator``).
        pairs: what ``load_pairs`` reads (.tsv / .jsonl files, a pairs dataset); targets are ignored.
            None with ``sources``.
        out: a ``.tsv`` (``source<TAB>output``; tabs and newlines inside a text become spaces,
            as the format cannot hold them) or ``.jsonl`` (``{"src", "tgt"}``, exact) file.
        n_best: pairs per source: the teacher's ``n_best`` best beams (at most ``num_beams``).
        batch_size: sources decoded together.
        overwrite: replace an existing ``out`` that this command did not write.
        bad_lines: ``load_pairs``'s: error or skip malformed input lines.
        device: where the teacher decodes.
        sort_window: batches sorted by length together; larger is faster, and more work is
            redone after an interruption.
        sources: instead of ``pairs``, a UTF-8 text file of sources with no references, one a
            line (blank lines are skipped): text in the source language that only the teacher
            can turn into training pairs.
        **generation: GenerationConfig overrides (``num_beams``, ``max_new_tokens``,
            ``length_penalty``, ...); the default is the run's, with ``do_sample=False``.

    Returns:
        ``{"sources", "pairs", "empty", "flattened", "resumed_from", "seconds"}``: sources in
        the input, pairs in ``out``, outputs left out as empty (the pairs reader refuses an
        empty side), texts whose tabs or newlines became spaces, sources already in ``out`` when
        this call started, and the decoding time of this call.
    """
    if (pairs is None) == (sources is None):
        raise DistillDataError("give the sources to decode as pairs (--pairs) or as a text file (--sources), "
                               "not both or neither")
    _check_counts(n_best=n_best, batch_size=batch_size, sort_window=sort_window)
    out = Path(out)
    if out.suffix.lower() not in PAIR_FORMATS:
        raise DistillDataError(f"--out {out}: sequence-level KD writes pairs, as a .tsv or .jsonl file")
    gen = _teacher(teacher, device, seq2seq=True)
    cfg = gen.generation_config(**{"do_sample": False, **generation, "num_return_sequences": 1})
    if n_best > cfg.num_beams:
        raise DistillDataError(f"--n-best {n_best} needs at least as many beams: give --num-beams {n_best} or more "
                               f"(the teacher decodes with {cfg.num_beams})")
    cfg = dataclasses.replace(cfg, num_return_sequences=n_best)
    sources = [s for s, _ in load_pairs(pairs, bad_lines)[0]] if sources is None else read_sources(sources)
    state = _state("pairs", gen, _digest(sources), {**dataclasses.asdict(cfg), "batch_size": batch_size,
                                                    "sort_window": sort_window, "format": out.suffix.lower()})
    state.update(total=len(sources), pairs=0, empty=0, flattened=0)
    state = _open_output(out, state, overwrite)
    start, window = time.perf_counter(), batch_size * sort_window
    resumed = done = state["done"]
    desc = f"decoding {len(sources) - done:,} sources with the teacher" + (f" ({done:,} in {out})" if done else "")
    with open(out, "ab") as f, progress.bar(desc, len(sources) - done, "sentence") as bar:
        for first in range(done // window * window if done < len(sources) else done, len(sources), window):
            outputs: dict[int, list[str]] = {}
            for chunk, texts in _decoded(gen, cfg, sources, range(first, min(first + window, len(sources))),
                                         batch_size):
                outputs.update(zip(chunk, texts))
                lines = []
                while done in outputs:
                    lines += [_pair_line(sources[done], t, out.suffix.lower(), state) for t in outputs[done]]
                    done += 1
                _commit(f, out, state, [x for x in lines if x], done)
                bar.update(sum(i >= resumed for i in chunk))
    _warn_lost(state, out)
    return {"sources": len(sources), "pairs": state["pairs"], "empty": state["empty"],
            "flattened": state["flattened"], "resumed_from": resumed, "seconds": time.perf_counter() - start}


def read_sources(path: str | Path) -> list[str]:
    """The sources of a text file, one a line: stripped, blank lines skipped; none is an error."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"--sources {path}: no such file" if not path.exists() else
                           f"--sources {path} is not a file; give a text file, one source a line")
    sources = [line.strip() for line in read_text(path).splitlines()]
    sources = [s for s in sources if s]
    if not sources:
        raise DatasetError(f"--sources {path} holds no text: give one source sentence a line")
    return sources


def sample_corpus(teacher, out: str | Path, num_samples: int, prompt: str | None = None, seed: int | None = 0,
                  batch_size: int = 64, overwrite: bool = False, device: str = "auto", **generation) -> dict:
    """Sample a synthetic corpus from a language-model teacher for a student to train on.

    Every sample is the prompt and its continuation; samples are separated by the teacher
    tokenizer's end-of-text token (``<|endoftext|>``), which proselab's tokenizers read as the
    document boundary they put between the files of a corpus, or by a blank line when it has
    none (a char tokenizer). Sample ``i`` is drawn with a seed derived from ``seed`` and its
    batch (``i // batch_size``), so the same call gives the same corpus, resumed or not.

    Args:
        teacher: a GPT or RNN run directory (or a loaded ``proselab.Generator``).
        out: the .txt file to write.
        num_samples: samples to draw.
        prompt: text every sample starts with; default none (the beginning-of-sequence token)
            where the tokenizer has one, else a newline, as ``proselab generate``.
        seed: the corpus's seed (None: 0).
        batch_size: samples drawn together.
        overwrite: replace an existing ``out`` that this command did not write.
        device: where the teacher samples.
        **generation: GenerationConfig overrides (``max_new_tokens``, ``temperature``, ``top_p``, ...).

    Returns:
        ``{"samples", "bytes", "resumed_from", "seconds"}``: the corpus's samples and size, and
        the samples already in ``out`` when this call started.
    """
    _check_counts(num_samples=num_samples, batch_size=batch_size)
    out = Path(out)
    if out.suffix.lower() != ".txt":
        raise DistillDataError(f"--out {out}: a sampled corpus is a .txt file (text corpora are read from .txt)")
    gen = _teacher(teacher, device, seq2seq=False)
    seed = 0 if seed is None else seed
    cfg = gen.generation_config(**{**generation, "seed": seed, "num_return_sequences": 1})
    if not cfg.do_sample or cfg.num_beams > 1:
        raise DistillDataError("sampling a corpus needs do_sample and one beam: greedy or beam search would write "
                               "the same text num_samples times")
    if prompt is None:
        prompt = "" if gen.tokenizer.bos_id is not None else "\n"
    ids = gen.encode_prompt(prompt)
    eos = gen.tokenizer.eos_id
    sep = gen.tokenizer.id_to_token(eos) if eos is not None else NO_EOS_SEPARATOR
    state = _state("corpus", gen, _digest([prompt]), {**dataclasses.asdict(cfg), "num_samples": num_samples,
                                                      "batch_size": batch_size, "separator": sep})
    state.update(total=num_samples)
    state = _open_output(out, state, overwrite)
    start = time.perf_counter()
    resumed = done = state["done"]
    desc = f"sampling {num_samples - done:,} texts from the teacher" + (f" ({done:,} already in {out})" if done else "")
    with open(out, "ab") as f, progress.bar(desc, num_samples - done, "sample") as bar:
        for b in range(done // batch_size if done < num_samples else num_samples, -(-num_samples // batch_size)):
            rows = range(b * batch_size, min((b + 1) * batch_size, num_samples))
            bcfg = dataclasses.replace(cfg, seed=_batch_seed(seed, b), num_return_sequences=len(rows))
            gens = generate(gen.model, [ids], bcfg, tokenizer=gen.tokenizer, suppress_ids=gen.suppress_ids)
            texts = [(sep if i else "") + prompt + g.text for i, g in zip(rows, gens) if i >= done]
            bar.update(len(texts))
            done = rows.stop
            _commit(f, out, state, texts, done)
    return {"samples": num_samples, "bytes": state["bytes"], "resumed_from": resumed,
            "seconds": time.perf_counter() - start}


def _decoded(gen, cfg, sources: list[str], window: range, batch_size: int) -> Iterator[tuple[list[int], list]]:
    """Decode the sources of ``window`` in batches of similar length (shortest first): each
    batch's source indices, and each source's ``num_return_sequences`` output texts."""
    order = sorted(window, key=lambda i: len(sources[i]))
    n = cfg.num_return_sequences
    for b in range(0, len(order), batch_size):
        chunk = order[b : b + batch_size]
        batch = source_batch(gen.src_tokenizer, [sources[i] for i in chunk], cfg.max_new_tokens,
                             gen.config.data.truncate_src, gen.config.model.src_prefix_id)
        gens = generate(gen.model, batch, cfg, tokenizer=gen.tokenizer, suppress_ids=gen.suppress_ids)
        yield chunk, [[g.text for g in gens[j * n : (j + 1) * n]] for j in range(len(chunk))]


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DistillDataError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")


def _teacher(teacher, device: str, seq2seq: bool):
    """The loaded teacher, refused when it is not the kind this data is made with."""
    from ..api import Generator, load

    gen = teacher if isinstance(teacher, Generator) else load(teacher, device=device)
    family = gen.config.model.family
    if gen.is_classifier:
        raise DistillDataError("the teacher is a classifier; distill-data needs a seq2seq or language-model run")
    if seq2seq and not gen.is_seq2seq:
        raise DistillDataError(f"--pairs decodes sources with a seq2seq teacher, but this one is a {family} language "
                               "model: sample a corpus from it with --num-samples N instead")
    if not seq2seq and gen.is_seq2seq:
        raise DistillDataError("--num-samples samples a corpus from a language model (gpt or rnn), but this teacher "
                               "is seq2seq: decode the training sources with --pairs FILE instead")
    return gen


def _digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def _teacher_identity(gen) -> dict:
    """What tells the teacher's weights apart: its directory, the content of its config and
    tokenizer files, and the size and time of its weight files (hashing gigabytes would be slow)."""
    run_dir = Path(gen.run_dir).resolve() if gen.run_dir is not None else None
    ident: dict = {"run": str(run_dir)}
    for p in sorted(run_dir.iterdir()) if run_dir is not None and run_dir.is_dir() else []:
        if p.name in ("config.json", "generation_config.json", "vocab.json", "merges.txt") or \
                (p.suffix == ".json" and "tokenizer" in p.name):
            ident[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif (p.name.startswith("model") and p.suffix == ".safetensors") or p.name.startswith("pytorch_model"):
            st = p.stat()
            ident[p.name] = [st.st_size, st.st_mtime_ns]
    return ident


def _state(kind: str, gen, input_digest: str, settings: dict) -> dict:
    return {"command": "distill-data", "kind": kind, "teacher": _teacher_identity(gen), "input": input_digest,
            "settings": settings, "done": 0, "bytes": 0}


def _mismatch(old: dict, new: dict) -> str:
    """What differs between the command that wrote an output and this one, for the error."""
    if old.get("kind") != new["kind"]:
        return f"it is a {old.get('kind')} output"
    if old.get("teacher", {}).get("run") != new["teacher"]["run"]:
        return f"another teacher, {old.get('teacher', {}).get('run')}"
    if old.get("teacher") != new["teacher"]:
        return "the teacher's files have changed since"
    if old.get("input") != new["input"]:
        return "another input" if new["kind"] == "pairs" else "another prompt"
    a, b = old.get("settings", {}), new["settings"]
    diff = [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return "other settings: " + ", ".join(diff) if diff else ""


def _open_output(out: Path, state: dict, overwrite: bool) -> dict:
    """Start ``out``, or find where an interrupted run of the same command stopped. Returns the
    state to continue from (``done``: complete sources, ``bytes``: their length in ``out``)."""
    side = progress_path(out)
    if out.is_dir():
        raise DistillDataError(f"--out {out} is a directory; give a file")
    if out.exists() and not overwrite:
        again = "give another --out, or --overwrite to replace it"
        try:
            old = json.loads(side.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DistillDataError(f"{out} exists and was not written by proselab distill-data (no {side.name} beside "
                                   f"it); {again}") from None
        except (OSError, ValueError):
            raise DistillDataError(f"{side} is damaged, so where {out} stopped is unknown; {again}") from None
        if not isinstance(old, dict) or not all(isinstance(old.get(k), int) for k in ("done", "bytes")):
            raise DistillDataError(f"{side} is damaged, so where {out} stopped is unknown; {again}")
        why = _mismatch(old, state)
        if why:
            raise DistillDataError(f"{out} was written by another distill-data command ({why}); {again}")
        size = out.stat().st_size
        if size < old["bytes"]:
            raise DistillDataError(f"{out} is shorter than {side.name} says ({size:,} < {old['bytes']:,} bytes): it "
                                   f"was edited or cut; {again}")
        if size > old["bytes"]:  # the part of a batch an interruption left before it was recorded
            os.truncate(out, old["bytes"])
        return {**state, **{k: v for k, v in old.items() if k not in ("teacher", "settings")}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"")
    atomic_write_text(side, json.dumps(state))
    return state


def _commit(f, out: Path, state: dict, texts: list[str], done: int) -> None:
    """Append ``texts``, make them durable, then record that ``done`` sources are complete."""
    f.write("".join(texts).encode("utf-8", "surrogatepass"))
    f.flush()
    os.fsync(f.fileno())
    state.update(done=done, bytes=f.tell())
    atomic_write_text(progress_path(out), json.dumps(state))


def _pair_line(source: str, output: str, suffix: str, state: dict) -> str:
    """One pair as the pairs reader reads it back, or "" for an empty output (which it refuses)."""
    output = output.strip()
    if not output:
        state["empty"] += 1
        return ""
    state["pairs"] += 1
    if suffix == ".jsonl":
        return json.dumps({"src": source, "tgt": output}, ensure_ascii=False) + "\n"
    sides = []
    for text in (source, output):
        flat = _FLAT.sub(" ", text).strip()
        state["flattened"] += flat != text
        sides.append(flat)
    return f"{sides[0]}\t{sides[1]}\n"


def _warn_lost(state: dict, out: Path) -> None:
    if state["empty"]:
        warnings.warn(f"{state['empty']} teacher outputs were empty and left out of {out} (a pair needs two sides); "
                      "an undertrained teacher ends its outputs at once", stacklevel=3)
    if state["flattened"]:
        warnings.warn(f"{state['flattened']} texts held tabs or newlines, written as spaces in {out}; write a .jsonl "
                      "file to keep them", stacklevel=3)


def _batch_seed(seed: int, batch: int) -> int:
    """Batch ``batch``'s sampling seed: the engine derives each row's stream from it and the row."""
    h = hashlib.blake2b(f"distill-data/{seed}/{batch}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") >> 1
