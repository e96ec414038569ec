"""Sentiment classification on the built-in tweets-sentiment dataset, every row scored on the
same test split (3,720 tweets, stratified; see `proselab data list`):

1. TF-IDF (word 1-2 grams, sublinear tf) + logistic regression, scikit-learn: the baseline.
2. The LSTM classifier of the `tweets-sentiment-lstm` preset.
3. A GPT classifier from scratch: the architecture of `tweets-sentiment-lm`, trained as a
   classifier only (BPE 8000 trained on the training texts, lr 1e-3).
4. The GPT recipe: `tweets-sentiment-lm` (a language model on the training texts) fine-tuned
   by `tweets-sentiment-gpt`, once per seed of --seeds (the language model is trained once),
   with each seed's row and their mean: one seed's score is not the recipe's. Its training time
   is both steps.
5. Zero-shot with that pretrained language model (no labels used): each class's verbalisation
   after a prompt, scored by likelihood (the prompt and verbalisations below were picked by
   dev-split macro-F1 among a handful, never on test).

For each row: test accuracy and macro-F1 (scikit-learn), training wall time, and how many test
texts per second it classifies (batches of 64, the whole split, after the model is loaded).
Every run is trained from scratch in --out (default runs/bench-sentiment, replaced).

    python bench/sentiment.py             # about 40 minutes on one core (2026-12-07: 41 min with AMX bf16)
    python bench/sentiment.py --quick     # a few minutes: 1/10 of the steps, to try the script
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from proselab.config import load_config
from proselab.data.builtin import DATASETS, fetch
from proselab.evaluation import evaluate_labels
from proselab.training import train
from proselab.zeroshot import Prompting

TEST = "tweets-sentiment:test"
# five prompts were tried on 600 dev tweets with the tweets-sentiment-lm run; this one, calibrated,
# had the best macro-F1 there (0.50; 0.31 uncalibrated)
ZERO_SHOT = Prompting(["negative", "neutral", "positive"], template="{text}\n", verbalizers=[" bad", " ok", " good"])


def tfidf_row() -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    fetch("tweets-sentiment")
    rows = {s: [json.loads(x) for x in DATASETS["tweets-sentiment"].path(s).read_text().splitlines()]
            for s in ("train", "test")}
    start = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    X = vec.fit_transform([r["text"] for r in rows["train"]])
    clf = LogisticRegression(max_iter=2000, C=4.0).fit(X, [r["label"] for r in rows["train"]])
    trained = time.perf_counter() - start
    start = time.perf_counter()
    predicted = clf.predict(vec.transform([r["text"] for r in rows["test"]]))
    seconds = time.perf_counter() - start
    truth = [r["label"] for r in rows["test"]]
    return {"row": "TF-IDF + logistic regression", "accuracy": accuracy_score(truth, predicted),
            "macro_f1": f1_score(truth, predicted, average="macro"), "train_s": trained,
            "texts_per_s": len(truth) / seconds}


def trained_row(name: str, runs: list[tuple[str, dict]], prompting: Prompting | None = None,
                scored: Path | None = None) -> dict:
    """Train each (preset, overrides) in turn, then score the last run (or ``scored``) on test."""
    start = time.perf_counter()
    for preset, overrides in runs:
        train(preset, {"train.overwrite": True, "train.progress": False, **overrides})
    trained = time.perf_counter() - start
    run = scored or Path(runs[-1][1]["train.out_dir"])
    res = evaluate_labels(run, TEST, out_dir=run, prompting=prompting)
    return {"row": name, "accuracy": res["accuracy"], "macro_f1": res["macro_f1"], "train_s": trained,
            "texts_per_s": res["texts_per_sec"]}


def seed_list(text: str) -> list[int]:
    """``--seeds``: integers separated by commas."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, e.g. 1337,1; got {text!r}") from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/bench-sentiment", help="where the runs are written (replaced)")
    p.add_argument("--quick", action="store_true", help="1/10 of the steps: to try the script, not to report")
    p.add_argument("--seeds", type=seed_list, default="1337,1",
                   help="fine-tuning seeds of the GPT recipe (default 1337,1)")
    args = p.parse_args()
    out, scale = Path(args.out), 10 if args.quick else 1

    def steps(n: int) -> dict:
        return {"train.max_iters": max(n // scale, 20), "train.eval_interval": max(n // scale // 4, 10)}

    def preset_steps(preset: str) -> dict:
        """A preset's own schedule, as a user runs it; --quick: a tenth of its steps."""
        t = load_config(preset).train
        return {} if scale == 1 else {"train.max_iters": max(t.max_iters // scale, 20),
                                      "train.eval_interval": max(t.eval_interval // scale, 10)}

    lm = {"train.out_dir": str(out / "lm"), **preset_steps("tweets-sentiment-lm")}
    rows = [tfidf_row()]
    rows.append(trained_row("LSTM (tweets-sentiment-lstm)", [("tweets-sentiment-lstm", {
        "train.out_dir": str(out / "lstm"), **preset_steps("tweets-sentiment-lstm")})]))
    rows.append(trained_row("GPT from scratch", [("tweets-sentiment-lm", {
        "train.out_dir": str(out / "gpt-scratch"), "data.format": "labels", "data.val_dataset": "tweets-sentiment:dev",
        "train.best_by": "macro_f1", "train.eval_iters": 25, "train.lr": 1e-3, "train.min_lr": 1e-4, **steps(1500)})]))
    start = time.perf_counter()
    train("tweets-sentiment-lm", {"train.overwrite": True, "train.progress": False, **lm})
    lm_seconds = time.perf_counter() - start
    recipe = []
    for seed in args.seeds:  # each row's training time: the language model's and its own fine-tuning
        row = trained_row(f"GPT pretrained on the texts, fine-tuned (seed {seed})", [("tweets-sentiment-gpt", {
            "train.init_from": str(out / "lm"), "train.out_dir": str(out / f"gpt-{seed}"), "train.seed": seed,
            **preset_steps("tweets-sentiment-gpt")})])
        recipe.append({**row, "train_s": lm_seconds + row["train_s"]})
    if len(recipe) > 1:
        recipe.append({"row": f"GPT pretrained on the texts, fine-tuned: mean of {len(recipe)} seeds",
                       **{k: sum(r[k] for r in recipe) / len(recipe) for k in ("accuracy", "macro_f1", "train_s",
                                                                               "texts_per_s")}})
    rows += recipe
    rows.append(trained_row("zero-shot with that pretrained GPT", [], ZERO_SHOT, scored=out / "lm"))
    print("\n| row | test accuracy | test macro-F1 | training | classifies |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['train_s']:.0f} s | "
              f"{r['texts_per_s']:,.0f} texts/s |")


if __name__ == "__main__":
    main()
