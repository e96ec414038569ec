"""What training tells the user while it runs (model size, time left, each eval's scores and
examples), a time budget that drives the schedule, and an unbiased quick val estimate."""

import json
import re
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_overrides
from PIL import Image
from test_seq2seq import s2s_overrides

from proselab import checkpoint as ckpt
from proselab.config import Config, TrainConfig
from proselab.data.batch import IGNORE_INDEX, Batch
from proselab.plots import plot_loss, train_series
from proselab.tasks.base import BaseTask
from proselab.training import Trainer, lr_at, train


def test_the_schedule_follows_the_time_budget_when_it_ends_first():
    t = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=100_000)
    assert lr_at(10, t, budget_used=0.0) == pytest.approx(1.0)
    assert lr_at(10, t, budget_used=0.8) == pytest.approx(1.0)  # the peak until the budget's last fifth
    assert lr_at(10, t, budget_used=0.9) == pytest.approx(0.55)  # half of that fifth: half the cosine
    assert lr_at(10, t, budget_used=1.0) == pytest.approx(0.1)
    assert lr_at(5, t, budget_used=0.95) == pytest.approx(6 / 11)  # warmup is in steps
    assert lr_at(99_990, t, budget_used=0.1) == pytest.approx(lr_at(99_990, t))  # the steps end first


def test_a_time_boxed_run_ends_annealed_and_resume_counts_the_time_spent(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "train_time", lambda self: self.step * 0.01)  # a clock where a step takes 10 ms
    out = tmp_path / "run"
    o = tiny_overrides(corpus, out, **{"train.max_iters": 1000, "train.max_time": 1.0, "train.lr": 1e-2,
                                       "train.min_lr": 1e-3, "train.warmup_iters": 0, "train.eval_interval": 1000})
    res = train(None, o)
    lrs = {s: r["lr"] for s, r in _records(out).items() if "lr" in r}
    assert res.step == 100  # 1 s of 10 ms steps
    assert lrs[50] == pytest.approx(lr_at(49, TrainConfig(lr=1e-2, min_lr=1e-3, max_iters=1000, warmup_iters=0)))
    assert lrs[50] > 0.99e-2  # the budget's first four fifths: the peak (max_iters is far)
    assert lrs[90] == pytest.approx(lr_at(0, TrainConfig(lr=1e-2, min_lr=1e-3, max_iters=2, warmup_iters=0), 0.89))
    assert lrs[100] < 1.1e-3  # annealed to min_lr (1e-3) by the end of the budget, not of max_iters
    assert ckpt.load_trainer_state(out / ckpt.TRAINER_STATE_FILE)["train_seconds"] == pytest.approx(1.0)
    monkeypatch.setattr(Trainer, "train_time", lambda self: 0.0)  # the resumed session's own clock
    again = train(None, {**o, "train.init_from": "resume"})  # the budget is spent: no more steps
    assert again.step == 100
    train(None, {**o, "train.decay_by_time": False, "train.overwrite": True})  # the schedule by steps alone
    assert _records(out)[100]["lr"] == pytest.approx(lr_at(99, TrainConfig(lr=1e-2, min_lr=1e-3, max_iters=1000,
                                                                          warmup_iters=0)))


def _records(run) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        out.setdefault(r["step"], {}).update(r)
    return out


def test_training_prints_the_model_the_time_left_and_each_eval(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Trainer, "train_time", lambda self: self.step * 2.0)  # 2 s a step: the estimate comes at 10 s
    train(None, tiny_overrides(corpus, tmp_path / "run", **{"train.max_iters": 20, "train.eval_interval": 10}))
    err = capsys.readouterr().err
    assert "model: gpt, 2 layers x 32, 0.0" in err and "M parameters; 20 steps of batch 4" in err
    assert re.search(r"^2 s/step: about 3\d s for the remaining 15 steps and 1 eval, then", err, re.MULTILINE)
    assert "step 0: val loss" in err
    line = next(x for x in err.splitlines() if x.startswith("step 10:"))
    assert "train loss" in line and "val loss" in line


def test_seq2seq_evals_print_bleu_and_two_examples_and_plot_them(tmp_path, capsys):
    out = tmp_path / "run"
    train(None, s2s_overrides(tmp_path))
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("step 15:"))
    assert "bleu" in line and "chrf" in line
    after = err.split(line, 1)[1].splitlines()[1:7]
    assert [x.split()[0] for x in after] == ["source", "reference", "hypothesis"] * 2
    tall = Image.open(out / "loss.png").size
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps({k: v for k, v in r.items() if "bleu" not in k and
                                                            "chrf" not in k}) for r in records))
    short = Image.open(plot_loss(tmp_path / "m.jsonl", tmp_path / "m.png")).size
    assert tall[1] > short[1]  # the BLEU/chrF panel


def test_a_distilled_runs_plot_draws_its_losss_two_terms(tmp_path):
    plain = [{"step": 10, "train_loss": 3.0}, {"step": 20, "train_loss": 2.5, "val_loss": 2.7}]
    assert [(label, pts) for label, pts, _ in train_series(plain)] == [("train (batch)", [(10, 3.0), (20, 2.5)])]
    kd = [{"step": 10, "train_loss": 1.2, "train_ce": 3.0, "train_kd": 0.6},
          {"step": 20, "train_loss": 1.0, "train_ce": 2.6, "train_kd": 0.5}]
    lines = {label: pts for label, pts, _ in train_series(kd)}
    assert lines == {"train CE (batch)": [(10, 3.0), (20, 2.6)],
                     "train KL to the teacher (batch)": [(10, 0.6), (20, 0.5)]}
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in kd))
    assert Image.open(plot_loss(tmp_path / "m.jsonl", tmp_path / "m.png")).size[0] > 0
    assert train_series([]) == []


class _Lengths(BaseTask):
    """Val batches of one pair each: batch i has i + 1 targets, all with loss 1 / (i + 1)."""

    def __init__(self):
        cfg = Config()
        cfg.train.eval_iters, cfg.train.batch_size = 4, 1
        super().__init__(cfg, SimpleNamespace(tokenizer=None))
        self.i = 0

    def sample(self, split, rows, generator):
        self.i += 1
        return torch.tensor([self.i - 1])

    def batch(self, split, index):
        n = int(index) + 1
        targets = torch.full((1, 4), IGNORE_INDEX)
        targets[0, :n] = 0
        return Batch(torch.zeros(1, 4, dtype=torch.long), targets, n)

    def loss(self, model, batch):
        return torch.tensor(1.0 / int((batch.targets != IGNORE_INDEX).sum()))


def test_the_quick_estimate_weighs_batches_by_their_targets_as_the_full_pass_does():
    # 4 batches, 1 + 2 + 3 + 4 = 10 targets, each batch's summed loss is 1: 4 / 10 per target
    # (the mean of per-batch means would be (1 + 1/2 + 1/3 + 1/4) / 4 = 0.52)
    assert _Lengths().estimate_loss(torch.nn.Linear(1, 1), torch.device("cpu"), None) == pytest.approx(0.4)


def test_the_seq2seq_estimate_draws_pairs_at_random_and_is_the_full_pass_on_a_small_dev_set(tmp_path):
    from proselab.evaluation import evaluate_batches
    from proselab.runs import load_run
    from proselab.tasks import build_task
    from proselab.training import resolve_config

    out = tmp_path / "run"
    train(None, s2s_overrides(tmp_path))
    model, tok, _ = load_run(out)
    task = build_task(resolve_config(None, s2s_overrides(tmp_path)), tok, tok)
    cpu = torch.device("cpu")
    full = evaluate_batches(model, task.batches("val", 16), cpu)
    assert task.estimate_loss(model, cpu, None) == pytest.approx(full)  # 2 x 16 >= the 20 dev pairs: all of them
    task.eval_iters, task.batch_size = 1, 8  # 8 of the 20: a sample, in batches of similar length
    batches = list(task.estimate_batches(torch.Generator().manual_seed(0)))
    assert len(batches) == 1 and batches[0].targets.size(0) == 8
    lengths = [int((row != IGNORE_INDEX).sum()) for row in batches[0].targets]
    assert lengths == sorted(lengths)  # batched in length order
