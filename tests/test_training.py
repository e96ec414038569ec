import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import proselab
from proselab import checkpoint as ckpt
from proselab.config import ConfigError
from proselab.data.files import DataError
from proselab.training import lr_at, train

from conftest import tiny_overrides


def _losses(run: Path, key: str = "train_loss") -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if key in r:
            out[r["step"]] = r[key]
    return out


@pytest.mark.parametrize("family", ["gpt", "rnn"])
def test_train_writes_a_complete_run(corpus, tmp_path, family):
    out = tmp_path / "run"
    res = train(None, tiny_overrides(corpus, out, family, **{"train.max_iters": 30, "train.lr": 3e-3}))
    assert res.step == 30 and not res.interrupted
    for name in ["config.json", "model.safetensors", "last.safetensors", "tokenizer.json",
                 "trainer_state.pt", "metrics.jsonl", "loss.png"]:
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["family"] == family and cfg["tokenizer"]["kind"] == "char"
    assert cfg["model"]["vocab_size"] > 30
    losses = _losses(out)
    assert losses[30] < losses[1] - 0.3, losses  # it learns
    assert res.val_loss is not None and math.isfinite(res.val_loss)
    state = torch.load(out / "trainer_state.pt", weights_only=True)  # nothing but tensors and primitives
    assert state["step"] == 30
    gen = proselab.load(out)
    text = gen.generate("ROMEO:", max_new_tokens=20, seed=0)
    assert isinstance(text, str) and len(text) == 20
    assert gen.generate("ROMEO:", max_new_tokens=20, seed=0) == text


def test_the_final_evaluation_measures_the_weights_the_run_keeps(corpus, tmp_path, monkeypatch):
    """The last step's weights are not always the best: the full val pass at the end (what
    ``train`` prints) is of model.safetensors, which generate, eval and serve load."""
    from safetensors.torch import load_file

    from proselab import training
    from proselab.tasks import BaseTask

    evaluate, task_evaluate = training.Trainer.evaluate, BaseTask.evaluate
    calls, seen = [], []

    def first_is_best(self):  # later evals never beat the first, so model.safetensors keeps step 0
        record, _ = evaluate(self)
        calls.append(self.step)
        return record, len(calls) == 1

    def fingerprint(self, model, device, dtype, final=False):  # the task's full pass over the val split
        if final:
            seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return task_evaluate(self, model, device, dtype, final)

    monkeypatch.setattr(training.Trainer, "evaluate", first_is_best)
    monkeypatch.setattr(BaseTask, "evaluate", fingerprint)
    out = tmp_path / "run"
    res = train(None, tiny_overrides(corpus, out, **{"train.max_iters": 30, "train.lr": 3e-3}))
    assert calls == [0, 10, 20, 30] and len(seen) == 1 and math.isfinite(res.val_loss)
    best, last = load_file(str(out / "model.safetensors")), load_file(str(out / "last.safetensors"))
    assert all(torch.equal(seen[0][k], best[k]) for k in best)
    assert not all(torch.equal(seen[0][k], last[k]) for k in last)


def test_a_wrapper_task_changes_the_loss_without_the_trainer_knowing(corpus, tmp_path, monkeypatch):
    """The task seam: a task that wraps another one (as distillation will) and adds to its loss
    is trained by the unchanged loop; its batches, scores and config stay the wrapped task's."""
    from proselab import training

    class Doubled:  # every Task method is the wrapped task's, but the loss
        def __init__(self, task):
            self.task, self.tokenizer = task, task.tokenizer

        def __getattr__(self, name):
            return getattr(self.task, name)

        def loss(self, model, batch):
            return 2 * self.task.loss(model, batch)

    overrides = tiny_overrides(corpus, tmp_path / "plain", **{"train.max_iters": 2})
    train(None, overrides)
    build_task = training.build_task
    monkeypatch.setattr(training, "build_task", lambda *args: Doubled(build_task(*args)))
    train(None, {**overrides, "train.out_dir": str(tmp_path / "doubled")})
    plain, doubled = _losses(tmp_path / "plain"), _losses(tmp_path / "doubled")
    assert doubled[1] == pytest.approx(2 * plain[1], rel=1e-6)  # the same weights and batch at the first step
    assert _losses(tmp_path / "doubled", "val_loss")[0] == _losses(tmp_path / "plain", "val_loss")[0]


@pytest.mark.parametrize("family, dropout", [("gpt", 0.1), ("rnn", 0.0)])
def test_resume_gives_the_same_losses_as_an_uninterrupted_run(corpus, tmp_path, family, dropout):
    # the same schedule in both (it decays over lr_decay_iters), as for a run stopped at step 10 and resumed
    extra = {"model.dropout": dropout, "train.grad_accum": 2, "train.lr_decay_iters": 20}
    full = tmp_path / "full"
    train(None, tiny_overrides(corpus, full, family, **extra))
    part = tmp_path / "part"
    train(None, tiny_overrides(corpus, part, family, **{**extra, "train.max_iters": 10}))
    res = train(None, {"train.init_from": "resume", "train.out_dir": str(part), "train.max_iters": 20})
    assert res.step == 20
    a, b = _losses(full), _losses(part)
    assert sorted(a) == sorted(b) == list(range(1, 21))
    for step in range(1, 21):
        assert a[step] == b[step], (step, a[step], b[step])


def test_ema_keeps_the_average_of_the_steps_weights_and_resumes_it(corpus, tmp_path, monkeypatch):
    """train.ema_decay: model.safetensors holds the moving average of the weights after every
    step (its decay warmed up as min(decay, (1 + n) / (10 + n))), last.safetensors the weights
    themselves; a resumed run carries the average on, and ends where an uninterrupted one does."""
    from safetensors.torch import load_file

    from proselab import training

    step, after = training.Trainer.train_step, []

    def recorded(self, *args):
        lr = step(self, *args)
        after.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return lr

    monkeypatch.setattr(training.Trainer, "train_step", recorded)
    extra = {"train.ema_decay": 0.9, "train.lr": 3e-3, "train.lr_decay_iters": 20, "model.dropout": 0.1}
    full = tmp_path / "full"
    train(None, tiny_overrides(corpus, full, **{**extra, "train.eval_interval": 20}))
    assert len(after) == 20
    expected = dict(after[0])
    for n, weights in enumerate(after[1:], start=1):
        decay = min(0.9, (1 + n) / (10 + n))
        expected = {k: decay * expected[k] + (1 - decay) * weights[k] for k in expected}
    kept, last = load_file(str(full / "model.safetensors")), load_file(str(full / "last.safetensors"))
    assert all(torch.equal(last[k], after[-1][k]) for k in last)
    for k in kept:
        assert torch.allclose(kept[k], expected[k], atol=1e-6), k
    assert not any(torch.allclose(kept[k], last[k]) for k in kept if k.endswith("c_fc.weight"))

    part = tmp_path / "part"
    train(None, tiny_overrides(corpus, part, **{**extra, "train.eval_interval": 10, "train.max_iters": 10}))
    train(None, {"train.init_from": "resume", "train.out_dir": str(part), "train.max_iters": 20,
                 "train.eval_interval": 20})
    resumed = load_file(str(part / "model.safetensors"))
    assert all(torch.equal(resumed[k], kept[k]) for k in kept)


def test_ema_decay_outside_its_range_is_a_config_error(corpus, tmp_path):
    with pytest.raises(ConfigError, match=r"train.ema_decay must be in \[0, 1\)"):
        train(None, tiny_overrides(corpus, tmp_path / "run", **{"train.ema_decay": 1.0}))
    assert not (tmp_path / "run").exists()


def test_gradient_accumulation_matches_a_bigger_batch(corpus, tmp_path):
    big = tmp_path / "big"
    train(None, tiny_overrides(corpus, big, **{"train.batch_size": 8, "train.max_iters": 5}))
    acc = tmp_path / "acc"
    train(None, tiny_overrides(corpus, acc, **{"train.batch_size": 4, "train.grad_accum": 2, "train.max_iters": 5}))
    a, b = _losses(big), _losses(acc)
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=1e-5)


def test_interrupt_saves_and_resumes(corpus, tmp_path, monkeypatch):
    import proselab.data.lm as pd

    calls = {"n": 0}
    real = pd.get_batch

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(pd, "get_batch", flaky)
    res = train(None, tiny_overrides(corpus, out, **{"train.eval_iters": 1}))
    assert res.interrupted
    assert torch.load(out / "trainer_state.pt", weights_only=True)["step"] == res.step > 0
    monkeypatch.setattr(pd, "get_batch", real)
    res2 = train(None, {"train.init_from": "resume", "train.out_dir": str(out)})
    assert res2.step == 20 and not res2.interrupted


def test_refuses_to_overwrite_a_run(corpus, tmp_path):
    out = tmp_path / "run"
    train(None, tiny_overrides(corpus, out, **{"train.max_iters": 2}))
    with pytest.raises(ConfigError, match="already holds a run"):
        train(None, tiny_overrides(corpus, out, **{"train.max_iters": 2}))
    words = tmp_path / "words.txt"
    words.write_text(corpus.read_text())
    train(None, tiny_overrides(words, out, **{"train.max_iters": 2, "train.overwrite": True, "data.tokenizer": "word",
                                              "data.vocab_size": 300}))
    assert json.loads((out / "config.json").read_text())["tokenizer"]["kind"] == "word"
    assert proselab.load(out).tokenizer.kind == "word"  # the old run's tokenizer.json is gone
    assert max(_losses(out, "val_loss")) <= 2  # and so are its metrics


def test_resume_needs_a_run(tmp_path):
    with pytest.raises(ckpt.RunError, match="does not exist"):
        train(None, {"train.init_from": "resume", "train.out_dir": str(tmp_path / "nope")})


def test_corpus_shorter_than_a_block(tmp_path):
    f = tmp_path / "short.txt"
    f.write_text("To be, or not to be, that is the question.")
    with pytest.raises(DataError, match="block"):
        train(None, tiny_overrides(f, tmp_path / "run"))


def test_lr_schedule_warmup_then_cosine():
    from proselab.config import TrainConfig

    t = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=110)
    assert lr_at(0, t) == pytest.approx(1 / 11)
    assert lr_at(10, t) == pytest.approx(1.0)
    assert lr_at(60, t) == pytest.approx(0.55)
    assert lr_at(110, t) == pytest.approx(0.1) and lr_at(500, t) == pytest.approx(0.1)


def test_torchrun_two_processes_match_one_process(corpus, tmp_path):
    """Two CPU processes with batch B each see the same global batch as one process with 2B."""
    single = tmp_path / "single"
    train(None, tiny_overrides(corpus, single, **{"train.batch_size": 8, "train.max_iters": 6}))
    ddp = tmp_path / "ddp"
    args = [f"--{k}={v}" for k, v in tiny_overrides(corpus, ddp, **{"train.batch_size": 4, "train.max_iters": 6}).items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "proselab", "train", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _losses(single), _losses(ddp)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=2e-5), step


def test_max_time_stops_training_once(corpus, tmp_path):
    out = tmp_path / "run"
    res = train(None, tiny_overrides(corpus, out, **{"train.max_iters": 100_000, "train.max_time": 0.5,
                                                    "train.eval_interval": 1}))
    assert 0 < res.step < 100_000 and not res.interrupted and res.val_loss is not None
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()
             if "val_loss" in json.loads(ln)]
    assert len(steps) == len(set(steps)) and steps[-1] == res.step  # no second estimate of the last step


def _main_value_worker(rank: int, port: int, results) -> None:
    import torch.distributed as tdist

    from proselab.distributed import Dist

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    d = Dist(rank, 2)
    results[rank] = (d.main_value(0.25 + rank), d.main_value(-1.0 - rank))
    tdist.destroy_process_group()


def test_dist_main_value_is_rank_0s_on_every_process():
    """The time budget's fraction: rank 0's clock decides every rank's learning rate and stop."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_main_value_worker, args=(port, results), nprocs=2)
    assert dict(results) == {0: (0.25, -1.0), 1: (0.25, -1.0)}


def test_a_failed_overwrite_leaves_the_old_run(corpus, tmp_path):
    out = tmp_path / "run"
    train(None, tiny_overrides(corpus, out, **{"train.max_iters": 2}))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="vocab_size"):
        train(None, tiny_overrides(corpus, out, **{"train.max_iters": 2, "train.overwrite": True, "model.vocab_size": 3}))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
