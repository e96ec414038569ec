"""Knowledge distillation: does a small student learn more from a teacher than from the data?

**bible-en-es short** (English -> Spanish, the .short pairs). The teacher is the `bible-en-es`
preset (3+3 layers x 256) trained for ``--teacher-minutes``. The student is a Transformer of a
quarter of its weights or so (3+3 layers x 128, 4 heads; both counts are printed), trained for
the same ``--student-steps`` four ways, all with the teacher's tokenizer:

- ``reference``: on the reference pairs;
- ``word-KD``: on the reference pairs, with the teacher's next-token distributions
  (``train.distill.teacher``, alpha 0.5, temperature 1, as Kim & Rush 2016's word-level KD);
- ``seq-KD``: on the teacher's beam-5 translations of the training sources (``proselab
  distill-data``), as Kim & Rush's sequence-level KD;
- ``both``: on the teacher's translations, with the word-KD term.

``--seq-data union`` trains the two seq-KD students on the reference pairs followed by the
teacher's translations (each source twice) instead of the translations alone; ``--alpha`` sets
the word-KD weight of the two word-KD students.

Each is scored on the dev pairs, greedy and beam 5 (BLEU, chrF with sacrebleu), with its decoding
speed (sentences/s, batches of 64, the whole dev set). The teacher is scored the same way.

**Shakespeare char**: a GPT teacher (`shakespeare-char-gpt`, ``--lm-teacher-minutes``) and an LSTM
student (`shakespeare-char-lstm`) trained for ``--lm-student-steps`` with and without word-KD
(alpha 0.5, temperature 2, DistilGPT2's); the student's final val loss (cross-entropy on the
validation text, comparable between the two) and sampling speed against the teacher's.

Each run is pinned by the caller (``taskset -c N``, ``OMP_NUM_THREADS=1``). The rows' own speeds
come from passes up to an hour apart; only the alternated ratios below compare speeds.

    OMP_NUM_THREADS=1 taskset -c 0 python bench/distill.py --bible ../shared/data/bible-en-es \\
        --shakespeare ../shared/data/tinyshakespeare/input.txt
    python bench/distill.py --bible ../shared/data/bible-en-es --quick   # minutes: to try the script

The speed ratios (a student's greedy decoding against the teacher's beam 5; a student's sampling
against the teacher's) are measured at the end with all models in turn, in the same minutes
(``alternated``); ``--speed RUN...`` and ``--lm-speed RUN...`` do only that.
``--teacher`` and ``--lm-teacher`` reuse trained teachers; ``--ways`` trains some of the bible
students only, so two processes (one per core, each scoring the teacher again for its own
same-minutes speed ratio) can share the work; the second reuses the first's finished ``kd.tsv``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import proselab
from proselab.distill.data import DistillDataError, sequence_kd_pairs
from proselab.evaluation import evaluate_pairs
from proselab.training import train

QUICK: dict = {}  # --quick: generation overrides that keep an untrained teacher's outputs short
STUDENT = {"model.n_embd": 128, "model.n_head": 4, "model.n_layer": 3}
WORD_KD = {"train.distill.alpha": 0.5, "train.distill.temperature": 1.0}


def params(run: Path) -> int:
    return proselab.load(run, device="cpu").model.num_params()


def scored(run: Path, dev: Path, label: str, steps: int | None, train_s: float | None) -> dict:
    gen = proselab.load(run, device="cpu")  # loaded once for both passes and the weight count
    greedy = evaluate_pairs(gen, str(dev), num_beams=1, **QUICK)
    beam = evaluate_pairs(gen, str(dev), num_beams=5, **QUICK)
    row = {"row": label, "params": gen.model.num_params(), "steps": steps, "train_s": train_s,
           "greedy_bleu": greedy["bleu"], "greedy_chrf": greedy["chrf"], "greedy_sent_s": greedy["sentences_per_sec"],
           "beam_bleu": beam["bleu"], "beam_chrf": beam["chrf"], "beam_sent_s": beam["sentences_per_sec"]}
    print(json.dumps(row), flush=True)
    return row


WAYS = ("reference", "word-KD", "seq-KD", "seq-KD + word-KD")


def student_dir(out: Path, way: str) -> Path:
    return out / f"student-{way.replace(' ', '').replace('+', '-')}"


def bible(data: Path, out: Path, teacher_minutes: float, steps: int, teacher: Path | None,
          max_pairs: int = 0, teacher_steps: int = 0, ways: tuple[str, ...] = WAYS, seq_data: str = "teacher",
          alpha: float = 0.5) -> list[dict]:
    train_pairs, dev = data / "train.short.tsv", data / "dev.short.tsv"
    if max_pairs:  # --quick: the first pairs of each file
        out.mkdir(parents=True, exist_ok=True)
        for name in ("train", "dev"):
            lines = (data / f"{name}.short.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
            (out / f"{name}.short.tsv").write_text("".join(lines[:max_pairs]), encoding="utf-8")
        train_pairs, dev = out / "train.short.tsv", out / "dev.short.tsv"
    common = {"data.val_dataset": str(dev), "train.overwrite": True, "train.progress": False}
    if teacher is None:
        teacher = out / "teacher"
        start = time.perf_counter()
        budget = ({"train.max_iters": teacher_steps} if teacher_steps else
                  {"train.max_time": teacher_minutes * 60, "train.max_iters": 100_000})
        res = train("bible-en-es", {**common, **budget, "data.dataset": str(train_pairs),
                                    "train.out_dir": str(teacher)})
        rows = [scored(teacher, dev, "teacher (bible-en-es)", res.step, time.perf_counter() - start)]
    else:
        rows = [scored(teacher, dev, f"teacher ({teacher})", None, None)]
    kd_pairs = out / "kd.tsv"
    if any(w.startswith("seq-KD") for w in ways):  # a finished kd.tsv of the same teacher is reused, not redone
        start = time.perf_counter()
        try:  # the same command's output: resumed, or returned at once when complete
            done = sequence_kd_pairs(teacher, str(train_pairs), kd_pairs, num_beams=5, **QUICK)
        except DistillDataError:  # another command's (another teacher's, say): replaced
            done = sequence_kd_pairs(teacher, str(train_pairs), kd_pairs, num_beams=5, overwrite=True, **QUICK)
        print(f"seq-KD data: {time.perf_counter() - start:.0f} s for {train_pairs} "
              f"({done['resumed_from']} sources already decoded)", flush=True)
    if seq_data == "union":  # references, then the teacher's translations; written whole, then renamed in place,
        union = out / "union.tsv"  # since a second process (--ways) may be writing the same file
        part = union.with_suffix(f".{os.getpid()}.part")
        part.write_bytes(train_pairs.read_bytes().rstrip(b"\n") + b"\n" + kd_pairs.read_bytes())
        os.replace(part, union)
        kd_pairs = union
    tokenizer = str(teacher / "tokenizer.json")
    data_of = {"reference": (train_pairs, False), "word-KD": (train_pairs, True), "seq-KD": (kd_pairs, False),
               "seq-KD + word-KD": (kd_pairs, True)}
    for label in ways:
        pairs, word = data_of[label]
        run = student_dir(out, label)
        extra = ({"train.distill.teacher": str(teacher), **WORD_KD, "train.distill.alpha": alpha} if word
                 else {"data.tokenizer": tokenizer})
        start = time.perf_counter()
        res = train("bible-en-es", {**common, **STUDENT, **extra, "data.dataset": str(pairs), "train.out_dir": str(run),
                                    "train.max_iters": steps, "train.eval_interval": max(steps // 4, 10)})
        rows.append(scored(run, dev, f"student, {label}", res.step, time.perf_counter() - start))
    rows += same_minute_speeds(teacher, [student_dir(out, w) for w in ways], dev)
    return rows


def alternated(runs: dict[str, Path], measure, rounds: int = 3) -> dict[str, list[float]]:
    """Each run's speed in every round, all runs measured in turn in the same minutes (the order
    reversed every other round): ``measure(name, generator, round)``."""
    models = {name: proselab.load(run, device="cpu") for name, run in runs.items()}
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for r in range(rounds):
        for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
            speeds[name].append(measure(name, models[name], r))
    return speeds


def ratio_rows(speeds: dict[str, list[float]], what: str) -> list[dict]:
    """Each student's speed over the teacher's, the median of the rounds' ratios."""
    rows = []
    for name, values in speeds.items():
        if name != "teacher":
            ratios = sorted(a / b for a, b in zip(values, speeds["teacher"]))
            rows.append({"speed": name, "what": what, "student": values, "teacher": speeds["teacher"],
                         "ratio": ratios[len(ratios) // 2]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def same_minute_speeds(teacher: Path, students: list[Path], dev: Path, rounds: int = 3) -> list[dict]:
    """Each student's greedy decoding speed over the teacher's beam 5 (sentences/s on the dev
    sources), measured in the same minutes. (The speeds in the score rows come from passes up
    to an hour apart.)"""
    def measure(name, gen, _):
        return evaluate_pairs(gen, str(dev), num_beams=5 if name == "teacher" else 1, **QUICK)["sentences_per_sec"]

    runs = {"teacher": teacher} | {s.name: s for s in students}
    return ratio_rows(alternated(runs, measure, rounds), "greedy sent/s against the teacher's beam 5")


def same_minute_sampling(teacher: Path, students: list[Path], tokens: int = 500, rounds: int = 3) -> list[dict]:
    """Each student's sampling speed over the teacher's (tokens/s of one ``tokens``-long sample
    after a newline), measured in the same minutes."""
    def measure(name, gen, r):
        if r == 0:
            gen.generate("\n", max_new_tokens=20, do_sample=True, seed=0)  # warm up
        start = time.perf_counter()
        out = gen.complete("\n", max_new_tokens=tokens, do_sample=True, seed=r)
        return len(out[0].tokens) / (time.perf_counter() - start)

    runs = {"teacher": teacher} | {s.name: s for s in students}
    return ratio_rows(alternated(runs, measure, rounds), f"sampling tok/s ({tokens} tokens) against the teacher's")


def shakespeare(text: Path, out: Path, teacher_minutes: float, steps: int, teacher: Path | None = None) -> list[dict]:
    common = {"data.dataset": str(text), "train.overwrite": True, "train.progress": False}
    if teacher is None:
        teacher = out / "lm-teacher"
        start = time.perf_counter()
        res = train("shakespeare-char-gpt", {**common, "train.out_dir": str(teacher),
                                             "train.max_time": teacher_minutes * 60, "train.max_iters": 100_000})
        row = {"row": "teacher (shakespeare-char-gpt)", "steps": res.step, "train_s": time.perf_counter() - start,
               "val_loss": res.val_loss}
    else:  # an existing run: its own final val loss, on the same validation text as the students'
        records = [json.loads(line) for line in (teacher / "metrics.jsonl").read_text().splitlines() if line.strip()]
        final = [r for r in records if "final_val_loss" in r]
        row = {"row": f"teacher ({teacher})", "steps": max(r.get("step", 0) for r in records), "train_s": None,
               "val_loss": final[-1]["final_val_loss"] if final else float("nan")}
    rows = [{**row, "params": params(teacher)}]
    print(json.dumps(rows[-1]), flush=True)
    for label, extra in [("student, reference", {"data.tokenizer": str(teacher / "tokenizer.json")}),
                         ("student, word-KD", {"train.distill.teacher": str(teacher), "train.distill.alpha": 0.5,
                                               "train.distill.temperature": 2.0})]:
        run = out / f"lm-{label.split(', ')[1]}"
        start = time.perf_counter()
        res = train("shakespeare-char-lstm", {**common, **extra, "train.out_dir": str(run), "train.max_iters": steps,
                                              "train.eval_interval": max(steps // 5, 10)})
        rows.append({"row": label, "params": params(run), "steps": res.step, "train_s": time.perf_counter() - start,
                     "val_loss": res.val_loss})
        print(json.dumps(rows[-1]), flush=True)
    return rows + same_minute_sampling(teacher, [out / "lm-reference", out / "lm-word-KD"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bible", type=Path, help="a directory with train.short.tsv and dev.short.tsv")
    p.add_argument("--shakespeare", type=Path, help="the tiny-shakespeare text file")
    p.add_argument("--teacher", type=Path, help="an existing bible-en-es teacher run (skips training one)")
    p.add_argument("--teacher-minutes", type=float, default=20.0, help="the teacher's training budget")
    p.add_argument("--teacher-steps", type=int, default=0, help="a budget in steps instead (the preset's schedule)")
    p.add_argument("--student-steps", type=int, default=1500)
    p.add_argument("--lm-teacher-minutes", type=float, default=10.0)
    p.add_argument("--lm-student-steps", type=int, default=1000)
    p.add_argument("--lm-teacher", type=Path, help="an existing shakespeare-char-gpt teacher run (skips training one)")
    p.add_argument("--ways", default=",".join(WAYS),
                   help=f"the bible students to train, comma-separated among: {', '.join(WAYS)}")
    p.add_argument("--seq-data", choices=("teacher", "union"), default="teacher",
                   help="the seq-KD students' pairs: the teacher's translations, or the references followed by them")
    p.add_argument("--alpha", type=float, default=WORD_KD["train.distill.alpha"],
                   help="the word-KD students' alpha (the weight of the KD term)")
    p.add_argument("--speed", type=Path, nargs="+", metavar="RUN",
                   help="only compare these students' greedy speed with --teacher's beam 5, in the same minutes")
    p.add_argument("--lm-speed", type=Path, nargs="+", metavar="RUN",
                   help="only compare these students' sampling speed with --lm-teacher's, in the same minutes")
    p.add_argument("--out", type=Path, default=Path("runs/bench-distill"))
    p.add_argument("--quick", action="store_true", help="tiny budgets, to try the script, not to report")
    args = p.parse_args()
    if args.quick:
        args.teacher_minutes, args.student_steps, args.lm_teacher_minutes, args.lm_student_steps = 0.5, 30, 0.3, 30
        QUICK.update(max_new_tokens=16, min_new_tokens=4)  # an untrained teacher would end every output at once
    ways = tuple(w.strip() for w in args.ways.split(","))
    if unknown := [w for w in ways if w not in WAYS]:
        p.error(f"--ways: unknown {', '.join(unknown)}; choose among {', '.join(WAYS)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)", flush=True)
    rows = []
    if args.speed:
        if not (args.bible and args.teacher):
            p.error("--speed needs --bible (its dev pairs) and --teacher")
        table(same_minute_speeds(args.teacher, args.speed, args.bible / "dev.short.tsv"))
        return
    if args.lm_speed:
        if not args.lm_teacher:
            p.error("--lm-speed needs --lm-teacher")
        table(same_minute_sampling(args.lm_teacher, args.lm_speed))
        return
    if args.bible:
        rows += bible(args.bible, args.out, args.teacher_minutes, args.student_steps, args.teacher,
                      200 if args.quick else 0, args.teacher_steps, ways, args.seq_data, args.alpha)
    if args.shakespeare:
        rows += shakespeare(args.shakespeare, args.out, args.lm_teacher_minutes, args.lm_student_steps, args.lm_teacher)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    table(rows)


def table(rows: list[dict]) -> None:
    """The rows as the markdown tables bench/RESULTS.md keeps."""
    pairs = [r for r in rows if "beam_bleu" in r]
    if pairs:
        print("\n| model | weights | steps | training | greedy BLEU / chrF | greedy sent/s | beam-5 BLEU / chrF "
              "| beam-5 sent/s |\n|---|---:|---:|---:|---|---:|---|---:|")
        for r in pairs:
            t = "" if r["train_s"] is None else f"{r['train_s']:.0f} s"
            print(f"| {r['row']} | {r['params'] / 1e6:.2f}M | {r['steps'] or ''} | {t} | {r['greedy_bleu']:.2f} / "
                  f"{r['greedy_chrf']:.2f} | {r['greedy_sent_s']:.1f} | {r['beam_bleu']:.2f} / {r['beam_chrf']:.2f} "
                  f"| {r['beam_sent_s']:.1f} |")
    speeds = [r for r in rows if "ratio" in r]
    if speeds:
        print("\n| student | what | student (rounds) | teacher (rounds) | ratio (median) |\n|---|---|---|---|---:|")
        for r in speeds:
            print(f"| {r['speed']} | {r['what']} | {', '.join(f'{v:.1f}' for v in r['student'])} | "
                  f"{', '.join(f'{v:.1f}' for v in r['teacher'])} | {r['ratio']:.2f}x |")
    lms = [r for r in rows if "val_loss" in r]
    if lms:
        print("\n| model | weights | steps | training | val loss |\n|---|---:|---:|---:|---:|")
        for r in lms:
            t = "" if r["train_s"] is None else f"{r['train_s']:.0f} s"
            print(f"| {r['row']} | {r['params'] / 1e6:.2f}M | {r['steps']} | {t} | {r['val_loss']:.4f} |")


if __name__ == "__main__":
    main()
