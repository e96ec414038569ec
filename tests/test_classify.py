"""Classifiers through the one training loop: every family, init-from a language model, LoRA,
class weights, best_by, resume, the Python API and the CLI, and their one-line errors."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import proselab
from proselab.config import ConfigError, ModelConfig
from proselab.data.files import DataError, DatasetError
from proselab.evaluation import evaluate_labels
from proselab.models import build_model
from proselab.runs import load_init_weights
from proselab.tasks import ClassifyTask
from proselab.training import train

WORDS = "the a movie film plot actor scene music story ending was is very quite".split()
SENTIMENT = {"pos": ["great", "lovely", "superb"], "neg": ["awful", "boring", "terrible"],
             "neu": ["okay", "average", "fine"]}


def _reviews(path: Path, n: int = 600, seed: int = 0, weights=(1, 1, 1)) -> Path:
    """Short reviews whose label is told by one sentiment word among filler words."""
    rng = random.Random(seed)
    lines = ["text,label"]
    for _ in range(n):
        label = rng.choices(list(SENTIMENT), weights)[0]
        words = rng.choices(WORDS, k=rng.randint(3, 8))
        words.insert(rng.randint(0, len(words)), rng.choice(SENTIMENT[label]))
        lines.append(f"{' '.join(words)},{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _overrides(data: Path, out: Path, family: str = "gpt", **extra) -> dict:
    o = {"data.dataset": str(data), "data.tokenizer": "word", "train.out_dir": str(out), "model.family": family,
         "model.block_size": 16, "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32, "model.hidden_size": 32,
         "model.num_layers": 1, "train.batch_size": 16, "train.max_iters": 150, "train.eval_interval": 50,
         "train.eval_iters": 4, "train.lr": 3e-3, "train.warmup_iters": 5, "train.log_interval": 1,
         "train.progress": False, "train.device": "cpu", "train.dtype": "float32"}
    if family == "seq2seq":
        o["model.arch"] = "transformer"
    return {**o, **extra}


def _metrics(run: Path, key: str) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if key in r}


@pytest.mark.parametrize("family", ["gpt", "rnn", "seq2seq"])
def test_every_family_trains_a_classifier(tmp_path, family):
    data, out = _reviews(tmp_path / "reviews.csv"), tmp_path / "run"
    res = train(None, _overrides(data, out, family))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["labels"] == ["neg", "neu", "pos"] and set(res.val_scores) == {"accuracy", "macro_f1"}
    assert cfg["id2label"] == {"0": "neg", "1": "neu", "2": "pos"} and cfg["label2id"]["pos"] == 2
    assert res.val_scores["accuracy"] > 0.75 and res.val_scores["macro_f1"] > 0.7, res.val_scores
    assert set(_metrics(out, "val_macro_f1")) == {0, 50, 100, 150}
    gen = proselab.load(out)
    first, second = gen.classify(["the film was superb", "the plot was boring"])
    assert first.label == "pos" and second.label == "neg" and abs(sum(first.probs.values()) - 1) < 1e-5
    alone = gen.classify("the film was superb")  # a row's answer does not depend on the padding next to it
    assert alone.probs == pytest.approx(first.probs, abs=1e-5)
    scores = evaluate_labels(out, str(data))
    assert scores["texts"] == 600 and scores["accuracy"] > 0.75 and len(scores["confusion"]) == 3


def test_a_language_model_is_fine_tuned_into_a_classifier(tmp_path):
    data = _reviews(tmp_path / "reviews.csv")
    text = tmp_path / "reviews.txt"
    text.write_text("\n".join(line.split(",")[0] for line in data.read_text().splitlines()[1:]), encoding="utf-8")
    lm = tmp_path / "lm"
    train(None, _overrides(text, lm, **{"train.max_iters": 20}))
    model = build_model(ModelConfig(**{**proselab.load(lm).config.model.__dict__, "labels": ["neg", "neu", "pos"]}))
    fresh = model.score.weight.clone()
    load_init_weights(model, lm)
    lm_state = proselab.load(lm).model.state_dict()
    assert all(torch.equal(v, lm_state[k]) for k, v in model.state_dict().items() if k != "score.weight")
    assert torch.equal(model.score.weight, fresh)  # the new head keeps its fresh initialisation
    out = tmp_path / "cls"
    res = train(None, _overrides(data, out, **{"train.init_from": str(lm), "train.lora_rank": 4,
                                               "train.max_iters": 30, "train.lr": 3e-3}))
    assert res.step == 30 and json.loads((out / "config.json").read_text())["model"]["labels"] == ["neg", "neu", "pos"]
    tuned = proselab.load(out).model.state_dict()
    assert not torch.equal(tuned["score.weight"], fresh)  # LoRA froze the body, but the head trained
    with pytest.raises(proselab.runs.RunError, match="a classifier's weights cannot start a generator"):
        load_init_weights(build_model(proselab.load(lm).config.model), out)


def test_balanced_class_weights_and_best_by_macro_f1(tmp_path, monkeypatch):
    data = _reviews(tmp_path / "skewed.csv", weights=(8, 1, 1))
    plain, weighted = tmp_path / "plain", tmp_path / "weighted"
    train(None, _overrides(data, plain, **{"train.max_iters": 2}))
    train(None, _overrides(data, weighted, **{"train.max_iters": 2, "train.class_weights": "balanced"}))
    assert _metrics(weighted, "train_loss")[1] != pytest.approx(_metrics(plain, "train_loss")[1], rel=1e-3)
    f1s = iter([0.2, 0.5, 0.4])
    evaluate = ClassifyTask.evaluate

    def scripted(self, model, device, dtype, final=False):
        return {**evaluate(self, model, device, dtype, final), "macro_f1": next(f1s) if not final else 0.0}

    monkeypatch.setattr(ClassifyTask, "evaluate", scripted)
    saves = []
    real_save = proselab.training.Trainer.save
    monkeypatch.setattr(proselab.training.Trainer, "save",
                        lambda self, snap, best: (saves.append((self.step, best)), real_save(self, snap, best)))
    train(None, _overrides(data, tmp_path / "best", **{"train.best_by": "macro_f1", "train.final_eval": False,
                                                        "train.max_iters": 100}))
    assert saves == [(0, True), (50, True), (100, False)]
    text = tmp_path / "t.txt"
    text.write_text("the film was great\n" * 200, encoding="utf-8")
    with pytest.raises(ConfigError, match="best_by=macro_f1 is not a score of this training; it has loss"):
        train(None, _overrides(text, tmp_path / "lm", **{"train.best_by": "macro_f1"}))


def test_resuming_a_classifier_gives_the_same_losses(tmp_path):
    data = _reviews(tmp_path / "reviews.csv")
    extra = {"model.dropout": 0.1, "train.lr_decay_iters": 20, "train.max_iters": 20, "train.eval_interval": 10}
    full, part = tmp_path / "full", tmp_path / "part"
    train(None, _overrides(data, full, **extra))
    train(None, _overrides(data, part, **{**extra, "train.max_iters": 10}))
    train(None, {"train.init_from": "resume", "train.out_dir": str(part), "train.max_iters": 20})
    assert _metrics(full, "train_loss") == _metrics(part, "train_loss")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "proselab", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_classifies_and_scores_and_says_what_is_wrong(tmp_path):
    data, run = _reviews(tmp_path / "reviews.csv"), tmp_path / "run"
    flags = [f"--{k}={v}" for k, v in _overrides(data, run).items()]
    assert cli("train", *flags).returncode == 0
    p = cli("classify", run, "--text", "the story was superb", "--text", "the ending was awful", "--json")
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["label"] for r in rows] == ["pos", "neg"] and set(rows[0]["probs"]) == {"neg", "neu", "pos"}
    texts = tmp_path / "texts.txt"
    texts.write_text("the story was superb\n\nthe ending was awful\n", encoding="utf-8")
    p = cli("classify", run, "--file", texts)
    assert [line.split("\t")[0] for line in p.stdout.splitlines()] == ["pos", "neg"]
    test = tmp_path / "test.jsonl"
    test.write_text('{"text": "the story was superb", "label": "pos"}\n{"text": "the ending was awful", "label": "pos"}\n')
    p = cli("eval", run, "--labels", test, "--out", tmp_path / "report")
    assert p.returncode == 0 and "accuracy 0.5000" in p.stdout and "pos" in p.stdout
    assert (tmp_path / "report" / "confusion.png").is_file()
    mistakes = [json.loads(x) for x in (tmp_path / "report" / "mistakes.jsonl").read_text().splitlines()]
    assert [(m["text"], m["label"], m["predicted"], m["where"]) for m in mistakes] == [
        ("the ending was awful", "pos", "neg", f"{test}:2")]
    unseen = tmp_path / "unseen.csv"
    unseen.write_text("text,label\nfine film,neu\nodd film,mixed\n")
    errors = [
        (("eval", run, "--labels", unseen), f"{unseen}:3: label 'mixed' is not one the classifier knows"),
        (("generate", run, "--prompt", "the"), "this run is a classifier (neg, neu, pos)"),
        (("classify", run), "give --text TEXT"),
        (("train", "--data", tmp_path / "no_label.csv", "--out", tmp_path / "x"), "no column 'label'"),
    ]
    (tmp_path / "no_label.csv").write_text("text,sentiment\na,b\n")
    for args, message in errors:
        p = cli(*args)
        assert p.returncode == 2 and message in p.stderr and p.stderr.count("\n") == 1, (args, p.stderr)
    p = cli("eval", run, "--labels", unseen, "--bad-lines", "skip", "--json")
    assert json.loads(p.stdout)["texts"] == 1 and json.loads(p.stdout)["skipped"] == 1


def test_bad_data_and_wrong_runs_are_clear_errors(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("text,label\n" + "a film,pos\n" * 20)
    with pytest.raises(DataError, match="one label only"):
        train(None, _overrides(one, tmp_path / "a"))
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\na film,pos\n  ,neg\n")
    with pytest.raises(DatasetError, match=rf"{empty}:3: the text is empty"):
        train(None, _overrides(empty, tmp_path / "b"))
    with pytest.raises(ConfigError, match="model.labels .* makes a classifier, which trains on labelled texts"):
        text = tmp_path / "t.txt"
        text.write_text("words " * 500)
        train(None, _overrides(text, tmp_path / "c", **{"model.labels": "[x, y]"}))
    with pytest.raises(ConfigError, match="seq2seq classifier reads texts with a Transformer encoder"):
        train(None, _overrides(_reviews(tmp_path / "r.csv"), tmp_path / "d", "seq2seq", **{"model.arch": "rnn"}))


def test_zero_shot_scores_are_likelihoods_calibrated_by_a_content_free_text(tmp_path):
    from proselab.zeroshot import Prompting, zero_shot_scores

    text = tmp_path / "t.txt"
    text.write_text("\n".join(line.split(",")[0] for line in _reviews(tmp_path / "r.csv").read_text().splitlines()[1:]))
    lm = tmp_path / "lm"
    train(None, _overrides(text, lm, **{"train.max_iters": 30}))
    gen = proselab.load(lm)
    raw = Prompting(["pos", "neg"], "{text} was", [" great", " awful"], calibrate=False)
    scores = zero_shot_scores(gen.model, gen.tokenizer, ["the film", "the plot"], raw)
    for i, prompt in enumerate(["the film was", "the plot was"]):  # by hand: log p(verbalisation | prompt)
        for j, word in enumerate(["great", "awful"]):
            ids = gen.tokenizer.encode(prompt) + gen.tokenizer.encode(" " + word)
            with torch.no_grad():
                logits, _ = gen.model(torch.tensor([ids]))
            expected = torch.log_softmax(logits[0, -2], -1)[ids[-1]]  # the word tokenizer: one token
            assert scores[i, j].item() == pytest.approx(expected.item(), abs=1e-4)
    content_free = zero_shot_scores(gen.model, gen.tokenizer, ["N/A"], raw)
    calibrated = zero_shot_scores(gen.model, gen.tokenizer, ["the film", "the plot"], Prompting(**{
        **raw.__dict__, "calibrate": True}))
    torch.testing.assert_close(calibrated, scores - content_free)
    got = gen.classify(["the film"], classes=["pos", "neg"], template="{text} was", verbalizers=[" great", " awful"])
    assert got[0].probs["pos"] == pytest.approx(torch.softmax(calibrated[0], -1)[0].item(), abs=1e-5)
    with pytest.raises(ValueError, match="template must hold"):
        gen.classify("x", classes=["a", "b"], template="no slot")
    with pytest.raises(ValueError, match="2 verbalizers for 3 classes"):
        gen.classify("x", classes=["a", "b", "c"], verbalizers=["1", "2"])


def test_the_auxiliary_lm_loss_is_the_pretrained_heads_next_token_loss(tmp_path):
    from proselab.config import with_updates
    from proselab.training import resolve_config

    data = _reviews(tmp_path / "reviews.csv")
    text = tmp_path / "reviews.txt"
    text.write_text("\n".join(line.split(",")[0] for line in data.read_text().splitlines()[1:]), encoding="utf-8")
    lm = tmp_path / "lm"
    train(None, _overrides(text, lm, **{"train.max_iters": 20}))
    pretrained = proselab.load(lm).model
    cfg = resolve_config(None, _overrides(data, tmp_path / "cls", **{"train.init_from": str(lm),
                                                                     "train.aux_lm_weight": 0.5}))
    task = ClassifyTask.build(cfg, proselab.load(lm).tokenizer, None)
    model = build_model(with_updates(cfg, task.config_updates(cfg)).model)
    load_init_weights(model, lm)
    batch = task.batch("train", torch.arange(8))
    with torch.no_grad():
        _, ce = model(batch.inputs, batch.targets)
        total, count = 0.0, 0
        for idx, mask in zip(batch.inputs.idx, batch.inputs.mask):  # the LM run's own loss, text by text
            ids = idx[mask][None]  # (1, T)
            _, loss = pretrained(ids[:, :-1], ids[:, 1:])
            total, count = total + loss.item() * (ids.size(1) - 1), count + ids.size(1) - 1
        assert task.loss(model, batch).item() == pytest.approx(ce.item() + 0.5 * total / count, rel=1e-5)
    res = train(None, _overrides(data, tmp_path / "cls", **{"train.init_from": str(lm), "train.aux_lm_weight": 0.5,
                                                            "train.max_iters": 30, "train.eval_interval": 30}))
    assert res.step == 30 and json.loads((tmp_path / "cls" / "config.json").read_text())["train"]["aux_lm_weight"] == 0.5
    assert _metrics(tmp_path / "cls", "train_loss")[1] > _metrics(tmp_path / "cls", "val_loss")[0]  # the LM term
    for family, extra in (("rnn", {}), ("gpt", {"model.tie_weights": False})):
        with pytest.raises(ConfigError, match="train.aux_lm_weight adds a GPT classifier's next-token loss"):
            train(None, _overrides(data, tmp_path / family, family, **{"train.aux_lm_weight": 0.5, **extra}))


def test_tweet_placeholders_come_with_the_run_to_classify_and_fine_tuning(tmp_path):
    """data.tweet_placeholders lives in the tokenizer: a language model trained with it passes it
    to the classifier fine-tuned from it, whose answers do not depend on who is mentioned or
    which link is given."""
    data = _reviews(tmp_path / "reviews.csv")
    lines = data.read_text().splitlines()
    rng = random.Random(1)
    mentioned = [lines[0]] + [f"@fan{rng.randint(0, 999)} {text} https://t.co/{rng.randint(0, 10**6)},{label}"
                              for text, label in (line.rsplit(",", 1) for line in lines[1:])]
    data.write_text("\n".join(mentioned) + "\n", encoding="utf-8")
    lm = tmp_path / "lm"
    train(None, _overrides(data, lm, **{"data.format": "text", "data.tweet_placeholders": True,
                                        "train.max_iters": 10}))
    out = tmp_path / "cls"
    train(None, _overrides(data, out, **{"train.init_from": str(lm), "train.max_iters": 10}))
    gen = proselab.load(out)
    a, b, c = gen.classify(["@someone the film was superb http://a.b/c", "@user the film was superb http",
                            "the film was superb"])
    assert a.probs == pytest.approx(b.probs, abs=1e-6) and c.probs != pytest.approx(b.probs, abs=1e-6)
    assert gen.tokenizer.encode("@x") == gen.tokenizer.encode("@user")
