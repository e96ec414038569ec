"""The one training loop for every model family and task: scratch, resume and init-from.

``build_trainer`` builds a run (its task, model, optimizer, resumed state); ``Trainer.run``
steps it: the optimizer and schedule of ``optim``, grad clipping and accumulation, bf16
autocast where the hardware has it, optional torch.compile, DistributedDataParallel under
torchrun, atomic best/last checkpoints and exact resume, with ``console`` saying what happens.
What is learned is the task's business (``proselab.tasks``): the loop asks it for batches, a
loss and named scores, and never what kind of data it holds.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .config import Config, ConfigError, apply_overrides, config_from_dict, load_config, parse_overrides, with_updates
from .console import describe_model, eta_line, eval_line, progress_bar, say
from .distributed import Dist, autocast, pick_device, pick_dtype, setup_distributed
from .distill import init_from_teacher, take_teacher_vocabulary, teacher_tokenizers
from .interop import hub
from .models import build_model
from .models.heads import keep_head_trainable
from .models.lora import apply_lora, freeze_layers
from .optim import WeightAverage, keep_freed_memory, lr_at, make_optimizer
from .plots import plot_loss
from .runs import check_fits, fine_tune_config, load_init_weights, run_tokenizers
from .tasks import Task, build_task
from .tokenizers import TRAINABLE


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # optimizer steps completed
    val_loss: float | None  # full val pass at the end, of the best weights (model.safetensors); None if skipped/interrupted
    best_val_loss: float  # best quick estimate seen
    tokens_per_sec: float  # training throughput over train_time (all processes)
    train_time: float = 0.0  # seconds in training steps: the loop minus its evals and checkpoints
    interrupted: bool = False
    val_scores: dict = field(default_factory=dict)  # the task's other final scores (seq2seq: greedy bleu, chrf)

# Redrawing loss.png costs ~0.3 s of matplotlib (0.8 s the first time), so at evals it is
# redrawn at most this often; the end of a run always redraws it.
PLOT_INTERVAL = 60.0


def resolve_config(config: Config | str | Path | dict | None, overrides: dict | list | None) -> Config:
    """The Config to train with; on resume, the run's saved config with ``overrides`` on top."""
    for name, value, kinds, what in (("config", config, (Config, str, Path, dict), "a preset name, a YAML path, a dict"
                                      " or a Config"), ("overrides", overrides, (dict, list), "a dict or a list")):
        if value is not None and not isinstance(value, kinds):
            raise ConfigError(f"{name} must be {what}; got {type(value).__name__}")
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    overrides = dict(overrides or {})
    if isinstance(config, Config):
        cfg = apply_overrides(config, overrides)
    elif isinstance(config, dict):
        cfg = apply_overrides(config_from_dict(config), overrides)
    else:
        cfg = load_config(config, overrides)
    _resolve_model_ids(cfg)
    if cfg.train.init_from not in ("scratch", "resume"):
        return fine_tune_config(cfg)
    if cfg.train.init_from != "resume":
        if cfg.train.distill_teacher:
            take_teacher_vocabulary(cfg)
        return cfg
    saved = config_from_dict(ckpt.read_run_config(cfg.train.out_dir))
    if not (Path(cfg.train.out_dir) / ckpt.TRAINER_STATE_FILE).is_file():
        raise ckpt.RunError(f"'{cfg.train.out_dir}' has no {ckpt.TRAINER_STATE_FILE} to resume from (its weights can "
                            "still be fine-tuned: --train.init_from=RUN)")
    # model and data define what the weights are: they always come from the run
    if isinstance(config, Config):
        saved.train, saved.generation = cfg.train, cfg.generation
    else:
        saved = apply_overrides(saved, overrides)
    saved.train.init_from, saved.train.out_dir = "resume", cfg.train.out_dir
    return saved.validate()


def _resolve_model_ids(cfg: Config) -> None:
    """Hugging Face model ids where the config names a tokenizer or a teacher become their
    snapshots in the Hugging Face cache, downloaded once (train.init_from: fine_tune_config)."""
    if cfg.data.tokenizer not in TRAINABLE and hub.is_hub_id(cfg.data.tokenizer):
        cfg.data.tokenizer = str(hub.resolve(cfg.data.tokenizer, weights=False))
    if cfg.train.distill_teacher and hub.is_hub_id(cfg.train.distill_teacher):
        cfg.train.distill_teacher = str(hub.resolve(cfg.train.distill_teacher))


class Trainer:
    """One run being stepped: ``run()`` is the loop; evaluations and checkpoints happen in it."""

    def __init__(self, cfg: Config, dist: Dist, task: Task, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, device: torch.device, dtype: torch.dtype | None):
        self.cfg, self.dist, self.task = cfg, dist, task
        self.model, self.optimizer, self.device, self.dtype = model, optimizer, device, dtype
        self.run_dir = Path(cfg.train.out_dir)
        self.train_model = model  # what the steps call: compiled and/or DDP-wrapped by build_trainer
        self.data_gen = torch.Generator().manual_seed(cfg.train.seed)  # same global batches on every rank
        self.step, self.best_val = 0, float("inf")
        self.best_key = float("inf")  # train.best_by's value of model.safetensors, lower is better
        self.final_scores: dict = {}  # the task's final scores besides the loss
        self.last_eval_step = -1
        self.tokens_seen = 0  # real (unpadded) input tokens, all processes
        self.loss_acc = torch.zeros((), device=device)  # summed train loss since the last log line
        self.loop_start = self.last_plot = 0.0  # perf_counter() times, set when run() starts
        self.eval_time = 0.0  # seconds of the loop spent in evals and checkpoints
        self.last_log = (0.0, 0, 0)  # (train_time, step, tokens_seen) at the last log line
        self.last_train_loss: float | None = None  # the mean train loss of the last log line
        self.seconds_before = 0.0  # training seconds of the run's earlier sessions (max_time counts them)
        self.eta_said = False
        self.eval_count = 0  # evals run this session (their mean time goes into the estimate)
        # train.ema_decay's average, which evals score and model.safetensors keeps (rank 0 only)
        self.average = WeightAverage(model, cfg.train.ema_decay) if cfg.train.ema_decay and dist.is_main else None

    @property
    def kept_model(self) -> torch.nn.Module:
        """The weights evaluations score and model.safetensors keeps: the model's, or their average."""
        return self.average.module if self.average is not None else self.model

    # ---- checkpoints -------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from the run's last checkpoint: weights, optimizer, step, best scores, RNG states."""
        with self.dist.rank0_first():  # rank 0 finishes or discards a save a kill interrupted; the others read
            state = ckpt.settle_checkpoint(self.run_dir)
        if state is None:
            raise ckpt.RunError(f"'{self.run_dir}' has no {ckpt.TRAINER_STATE_FILE} to resume from")
        ckpt.load_weights(self.model, self.run_dir / ckpt.LAST_WEIGHTS_FILE)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.best_val = int(state["step"]), float(state["best_val_loss"])
        if state.get("evaluated", self.step > 0):  # its eval is in metrics.jsonl already: not again
            self.last_eval_step = self.step
        self.seconds_before = float(state.get("train_seconds", 0.0))
        self.best_key = float(state.get("best_key", self.best_val if self.cfg.train.best_by == "loss" else "inf"))
        self.data_gen.set_state(state["data_rng"])
        if self.average is not None and "weight_average" in state:  # else it starts from these weights
            self.average.load_state_dict(state["weight_average"])
        if self.dist.is_main:  # rank 0's dropout stream resumes exactly; others reseed
            torch.set_rng_state(state["torch_rng"])
        else:
            torch.manual_seed(self.cfg.train.seed + 1000 * self.dist.rank + self.step)
        if self.dist.is_main:  # drop metrics logged after the checkpoint we resume from
            ckpt.truncate_metrics(self.run_dir, self.step)

    def snapshot(self) -> dict[str, Any]:
        """RNG states and training seconds at the start of a step: what a checkpoint taken now
        must resume from."""
        return {"data_rng": self.data_gen.get_state(), "torch_rng": torch.get_rng_state(),
                "train_seconds": self.seconds_before + self.train_time()}

    def save(self, snap: dict[str, Any], best: bool, evaluated: bool = True) -> None:
        """Write config, tokenizers, last weights + trainer state, and the best weights if ``best``;
        ``evaluated``: whether this step's eval is logged (an interrupted run saves without one)."""
        if not self.dist.is_main:
            return
        meta = {"format_version": ckpt.FORMAT_VERSION, "tokenizer": {"kind": self.task.tokenizer.kind}}
        if self.cfg.model.labels:  # as Hugging Face configs name a classifier's labels
            labels = self.cfg.model.labels
            meta.update(id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
        state = {"optimizer": self.optimizer.state_dict(), "step": self.step, "best_val_loss": self.best_val,
                 "best_key": self.best_key, "evaluated": evaluated, **snap}
        if self.average is not None:
            state["weight_average"] = self.average.state_dict()
        ckpt.save_checkpoint(self.run_dir, {**self.cfg.to_dict(), **meta}, self.task.tokenizers(), self.model,
                             state, best, kept=self.kept_model)

    def log(self, record: dict) -> None:
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / ckpt.METRICS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # ---- evaluation --------------------------------------------------------------------
    def evaluate(self) -> tuple[dict, bool]:
        """The task's quick scores (the eager model: compiling a second, eval-mode graph costs
        more than it saves): the record to log, and whether these weights are the best by
        ``train.best_by``."""
        scores = self.task.evaluate(self.kept_model, self.device, self.dtype)
        record = {"step": self.step, **{f"val_{name}": value for name, value in scores.items()}}
        self.best_val = min(self.best_val, scores["loss"])
        best_by = self.cfg.train.best_by
        key = scores["loss"] if best_by == "loss" else -scores[best_by]
        best = key < self.best_key
        self.best_key = min(self.best_key, key)
        return record, best

    def final_evaluation(self) -> float:
        """The task's exact scores of the weights the run keeps: model.safetensors holds the best
        weights, which generate, eval and serve load, and may be older than the last step's."""
        ckpt.load_weights(self.model, self.run_dir / ckpt.WEIGHTS_FILE)
        scores = self.task.evaluate(self.model, self.device, self.dtype, final=True)
        val = scores.pop("loss")
        self.final_scores = scores
        self.log({"step": self.step, "final_val_loss": val, "val_perplexity": math.exp(min(val, 50)),
                  **{f"final_val_{name}": value for name, value in scores.items()}})
        return val

    def say(self, message: str) -> None:
        """One line on the terminal (rank 0 only), above the progress bar."""
        if self.dist.is_main:
            say(message)

    def say_eval(self, record: dict, best: bool) -> None:
        """The eval's one-line summary, then what the task shows of it (seq2seq: example translations)."""
        self.say(eval_line(self.step, self.last_train_loss, record, self.cfg.train.best_by if best and self.step else None))
        for line in self.task.report():
            self.say("  " + line)

    def eval_and_checkpoint(self, snap: dict[str, Any]) -> None:
        start = time.perf_counter()
        self.last_eval_step = self.step
        if self.dist.is_main:
            record, best = self.evaluate()
            self.log(record)
            self.say_eval(record, best)
            self.save(snap, best=best)
            if start - self.last_plot >= PLOT_INTERVAL:
                plot_loss(self.run_dir / ckpt.METRICS_FILE, self.run_dir / ckpt.PLOT_FILE)
                self.last_plot = time.perf_counter()
        self.eval_time += time.perf_counter() - start
        self.eval_count += 1

    # ---- the loop ----------------------------------------------------------------------
    def train_time(self) -> float:
        """Seconds since the loop started, less those spent in evals and checkpoints."""
        return time.perf_counter() - self.loop_start - self.eval_time

    def budget_used(self) -> float:
        """The fraction of ``train.max_time`` spent so far, earlier sessions included, by rank 0's
        clock on every process (0 without a time limit)."""
        t = self.cfg.train
        if not t.max_time:
            return 0.0
        return self.dist.main_value((self.seconds_before + self.train_time()) / t.max_time)

    def train_step(self, budget_used: float = 0.0) -> float:
        """One optimizer step over ``train.grad_accum`` micro-batches; returns its learning rate."""
        t, dist = self.cfg.train, self.dist
        lr = lr_at(self.step, t, budget_used)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        for micro in range(t.grad_accum):
            index = self.task.sample("train", t.batch_size * dist.world_size, self.data_gen)
            mine = index[dist.rank * t.batch_size : (dist.rank + 1) * t.batch_size]
            batch = self.task.batch("train", mine).to(self.device, non_blocking=True)
            self.tokens_seen += batch.tokens * dist.world_size
            with dist.maybe_no_sync(self.train_model, micro == t.grad_accum - 1), autocast(self.device, self.dtype):
                loss = self.task.loss(self.train_model, batch) / t.grad_accum
            loss.backward()
            self.loss_acc += loss.detach()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.average is not None:
            self.average.update(self.model)
        self.step += 1
        return lr

    def log_progress(self, lr: float, bar) -> None:
        """Every ``train.log_interval`` steps: the mean train loss, the learning rate and throughput."""
        if self.step % self.cfg.train.log_interval and self.step != self.cfg.train.max_iters:
            return
        last_time, last_step, last_tokens = self.last_log
        train_loss = self.dist.mean(self.loss_acc).item() / (self.step - last_step)  # the only host sync between evals
        now = self.train_time()
        tps = (self.tokens_seen - last_tokens) / max(now - last_time, 1e-9)
        parts = getattr(self.task, "train_parts", None)  # a loss of several terms (distillation): each one
        parts = {k: self.dist.mean(v).item() for k, v in parts().items()} if parts else {}
        self.log({"step": self.step, "train_loss": train_loss, **parts, "lr": lr, "tokens_per_sec": round(tps, 1),
                  "elapsed": round(time.perf_counter() - self.loop_start, 3)})
        bar.set_postfix_str(f"loss {train_loss:.4f}  {tps:,.0f} tok/s", refresh=False)
        self.loss_acc.zero_()
        self.last_log = (now, self.step, self.tokens_seen)
        self.last_train_loss = train_loss

    def say_eta(self, start_step: int) -> None:
        """Once, after the first ~10 s of steps: how long the rest of the run should take."""
        t, done, seconds = self.cfg.train, self.step - start_step, self.train_time()
        if self.eta_said or seconds < 10.0:
            return
        self.eta_said = True
        per_step = seconds / max(done, 1)
        steps_left = t.max_iters - self.step
        if t.max_time:
            steps_left = min(steps_left, int(max(t.max_time - self.seconds_before - seconds, 0) / per_step))
        if steps_left <= 0:
            return
        self.say(eta_line(per_step, steps_left, steps_left < t.max_iters - self.step, self.step,
                          steps_left // t.eval_interval, self.eval_time / max(self.eval_count, 1)))

    def run(self) -> TrainResult:
        t, dist = self.cfg.train, self.dist
        self.say(describe_model(self.cfg, self.model))
        bar = progress_bar(t, self.step, enabled=t.progress and dist.is_main)
        start_step = self.step
        self.loop_start = self.last_plot = time.perf_counter()
        self.eval_time, self.eval_count, self.last_log = 0.0, 0, (0.0, self.step, 0)
        snap, interrupted = self.snapshot(), False
        self.model.train()
        try:
            while self.step < t.max_iters:
                if self.step % t.eval_interval == 0 and self.last_eval_step != self.step:
                    self.eval_and_checkpoint(snap)
                # rank 0's clock decides, so every process stops at the same step
                used = self.budget_used()
                if used >= 1.0:
                    break
                lr = self.train_step(used if t.decay_by_time else 0.0)
                snap = self.snapshot()
                self.log_progress(lr, bar)
                bar.update(1)
                self.say_eta(start_step)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        return self.finish(snap, interrupted)

    def finish(self, snap: dict[str, Any], interrupted: bool) -> TrainResult:
        """The last checkpoint, the final evaluation and loss.png; the run's result."""
        seconds = self.train_time()
        val = None
        if interrupted:
            self.save(snap, best=False, evaluated=self.last_eval_step == self.step)
        else:
            if self.last_eval_step != self.step and self.dist.is_main:  # max_time can stop right after an eval
                record, best = self.evaluate()
                self.log(record)
                self.say_eval(record, best)
                self.save(snap, best=best)
            if self.cfg.train.final_eval and self.dist.is_main:
                val = self.final_evaluation()
        if self.dist.is_main:
            plot_loss(self.run_dir / ckpt.METRICS_FILE, self.run_dir / ckpt.PLOT_FILE)
        self.dist.barrier()
        return TrainResult(self.run_dir, self.step, val, self.best_val, self.tokens_seen / max(seconds, 1e-9),
                           seconds, interrupted, self.final_scores)


def _check_out_dir(cfg: Config) -> None:
    run_dir = Path(cfg.train.out_dir)
    if cfg.train.init_from != "resume" and ckpt.holds_checkpoint(run_dir) and not cfg.train.overwrite:
        raise ConfigError(
            f"'{run_dir}' already holds a run; resume it with --resume, choose another "
            "--train.out_dir, or pass --train.overwrite=true to replace it"
        )


def _given_tokenizers(cfg: Config):
    """The tokenizers a resumed run, a fine-tuning checkpoint or a distillation teacher fixes;
    (None, None) from scratch."""
    t = cfg.train
    if t.init_from == "resume":
        return run_tokenizers(t.out_dir)
    if t.init_from != "scratch":  # a run's, or a checkpoint's own files (Marian, BART, T5: theirs)
        return run_tokenizers(t.init_from)  # fine_tune_config made data.tokenizer this directory too
    if t.distill_teacher:  # a distilled student predicts the teacher's ids
        return teacher_tokenizers(t.distill_teacher)
    return None, None


def _build_model(cfg: Config) -> torch.nn.Module:
    """The model, with fine-tuning weights, frozen layers and LoRA adapters as configured."""
    t = cfg.train
    torch.manual_seed(t.seed)  # identical initial weights on every process
    model = build_model(cfg.model)
    model.label_smoothing = t.label_smoothing  # seq2seq models apply it in training mode
    if t.init_from not in ("scratch", "resume"):
        load_init_weights(model, t.init_from)
    elif t.init_from == "scratch" and t.distill_init == "every-other-layer":
        init_from_teacher(model, t.distill_teacher)
    try:  # which weights train (the optimizer takes only those)
        if t.lora_rank:
            apply_lora(model, t.lora_rank, t.lora_alpha, t.lora_targets, t.lora_dropout)
        if t.freeze_layers:
            freeze_layers(model, t.freeze_layers)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    keep_head_trainable(model)
    return model


def build_trainer(cfg: Config, dist: Dist) -> Trainer:
    """Build a run: its task (data prepared), its config completed by the data, the model,
    the optimizer and, on resume, the state it stopped in."""
    t = cfg.train
    device = dist.device if dist.enabled else pick_device(t.device)
    if device.type == "cpu":
        keep_freed_memory()
    _check_out_dir(cfg)
    tokenizer, src_tokenizer = _given_tokenizers(cfg)
    with dist.rank0_first():  # rank 0 fills the token cache, the others then read it
        task = build_task(cfg, tokenizer, src_tokenizer)
    if t.best_by not in task.scores:
        raise ConfigError(f"train.best_by={t.best_by} is not a score of this training; it has {', '.join(task.scores)}")
    if dist.is_main:
        for message in task.warnings():
            warnings.warn(message, stacklevel=3)
    cfg = with_updates(cfg, task.config_updates(cfg))  # complete now; never edited after
    check_fits(cfg.model, device, training=True)  # weights, gradients and AdamW's moments, before the model is built
    model = _build_model(cfg).to(device)
    trainer = Trainer(cfg, dist, task, model, make_optimizer(model, t, device), device, pick_dtype(t.dtype, device))
    if t.init_from == "resume":
        trainer.resume()
    else:
        if dist.is_main:  # an overwritten run keeps nothing of the old one (deleted only once all is built)
            ckpt.remove_run(trainer.run_dir)
        torch.manual_seed(t.seed + 1000 * dist.rank)  # dropout stream per process
    trainer.train_model = dist.wrap(torch.compile(model) if t.compile else model)
    return trainer


def train(config: Config | str | Path | dict | None = None, overrides: dict | list | None = None) -> TrainResult:
    """Train a model and write its run directory.

    Args:
        config: a Config, a YAML path, a preset name (see ``proselab/configs``), a dict
            with ``model``/``data``/``train``/``generation`` sections, or None for defaults.
        overrides: dotted overrides, ``{"train.lr": 3e-4}`` or ``["train.lr=3e-4"]``. With
            ``train.init_from=resume`` the run's saved config is used and these go on top.

    Returns:
        A TrainResult with the run directory, steps done and losses.
    """
    cfg = resolve_config(config, overrides)
    dist = setup_distributed(cfg.train.device)
    try:
        return build_trainer(cfg, dist).run()
    finally:
        dist.close()
