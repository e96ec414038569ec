"""The one training loop for every model family: scratch, resume, and (later) init-from.

AdamW (fused where available, decay on matrices only), linear warmup + cosine decay, grad
clipping and accumulation, bf16 autocast where the hardware has it, optional torch.compile,
DistributedDataParallel under torchrun, atomic best/last checkpoints and exact resume.
"""

from __future__ import annotations

import ctypes
import json
import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .config import Config, ConfigError, GenerationConfig, config_from_dict, load_config, parse_overrides, _set
from .chat import chat_stop_ids, is_chat_tokenizer
from .data import Data, ExampleData, data_format, prepare_data
from .pair_data import PairData
from .distributed import Dist, setup_distributed
from .evaluation import evaluate_batches
from .models import build_model
from .models.lora import apply_lora, freeze_layers
from .plots import plot_loss
from .tokenizers import load_tokenizer


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # optimizer steps completed
    val_loss: float | None  # full val pass at the end, of the best weights (model.safetensors); None if skipped/interrupted
    best_val_loss: float  # best quick estimate seen
    tokens_per_sec: float  # training throughput over train_time (all processes)
    train_time: float = 0.0  # seconds in training steps: the loop minus its evals and checkpoints
    interrupted: bool = False
    val_scores: dict = field(default_factory=dict)  # seq2seq: greedy {"bleu", "chrf"} of those weights on the whole val split

# Redrawing loss.png costs ~0.3 s of matplotlib (0.8 s the first time), so at evals it is
# redrawn at most this often; the end of a run always redraws it.
PLOT_INTERVAL = 60.0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available; use train.device=cpu")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX), where autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    if name == "float32":
        return None
    if name == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_bf16() else None


def keep_freed_memory() -> None:
    """Stop glibc from returning freed heap memory to the OS between training steps.

    PyTorch's CPU allocator does not cache: every step frees its activations, glibc unmaps or
    trims them, and the next step page-faults them back in. On the nanogpt-cpu config that was
    ~2,400 page faults per step and ~10% of the step time. Process-wide, and a no-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's own ceiling for its adaptive threshold
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


def lr_at(step: int, cfg) -> float:
    """Linear warmup then cosine decay to min_lr (nanoGPT's schedule)."""
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1)
    if step >= decay_iters:
        return cfg.min_lr
    ratio = (step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


def make_optimizer(model: torch.nn.Module, cfg, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2) only: biases and norms are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs: dict[str, Any] = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2)}
    try:  # fused kernels exist for CPU and CUDA in recent PyTorch; fall back quietly elsewhere
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, **kwargs)


def resolve_config(config: Config | str | Path | dict | None, overrides: dict | list | None) -> Config:
    """The Config to train with; on resume, the run's saved config with ``overrides`` on top."""
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    overrides = dict(overrides or {})
    if isinstance(config, Config):
        cfg = config
        for k, v in overrides.items():
            _set(cfg, k, v)
        cfg.validate()
    elif isinstance(config, dict):
        cfg = config_from_dict(config)
        for k, v in overrides.items():
            _set(cfg, k, v)
        cfg.validate()
    else:
        cfg = load_config(config, overrides)
    if cfg.train.init_from not in ("scratch", "resume"):
        return ckpt.fine_tune_config(cfg)
    if cfg.train.init_from != "resume":
        return cfg
    saved = config_from_dict(ckpt.read_run_config(cfg.train.out_dir))
    if not (Path(cfg.train.out_dir) / ckpt.TRAINER_STATE_FILE).is_file():
        raise ckpt.RunError(f"'{cfg.train.out_dir}' has no {ckpt.TRAINER_STATE_FILE} to resume from")
    # model and data define what the weights are: they always come from the run
    if isinstance(config, Config):
        saved.train, saved.generation = cfg.train, cfg.generation
    else:
        for k, v in overrides.items():
            _set(saved, k, v)
    saved.train.init_from, saved.train.out_dir = "resume", cfg.train.out_dir
    return saved.validate()


class _Trainer:
    """State of one training run; ``run()`` is the loop."""

    def __init__(self, cfg: Config, dist: Dist):
        self.cfg, self.dist = cfg, dist
        t = cfg.train
        self.run_dir = Path(t.out_dir)
        self.device = dist.device if dist.enabled else pick_device(t.device)
        self.dtype = pick_dtype(t.dtype, self.device)
        if self.device.type == "cpu":
            keep_freed_memory()
        resume = t.init_from == "resume"
        if not resume and (self.run_dir / ckpt.CONFIG_FILE).exists() and not t.overwrite:
            raise ConfigError(
                f"'{self.run_dir}' already holds a run; resume it with --resume, choose another "
                "--train.out_dir, or pass --train.overwrite=true to replace it"
            )
        fine_tune = t.init_from not in ("scratch", "resume")
        tokenizer = src_tokenizer = None
        if resume:
            tokenizer = load_tokenizer(self.run_dir / ckpt.TOKENIZER_FILE)
            src_tokenizer = ckpt.load_src_tokenizer(self.run_dir)
        elif fine_tune:
            tokenizer = load_tokenizer(cfg.data.tokenizer)
            src_tokenizer = ckpt.load_src_tokenizer(t.init_from)
        self._check_family()
        with dist.rank0_first():  # rank 0 fills the token cache, the others then read it
            self.data: Data = prepare_data(cfg.data, cfg.model.block_size, tokenizer, src_tokenizer)
        if dist.is_main:
            self._warn_about_data()
        self.tokenizer = self.data.tokenizer
        if fine_tune and cfg.model.vocab_size < self.tokenizer.vocab_size:
            cfg.model.vocab_size = self.tokenizer.vocab_size  # special tokens were added: grow the embedding
        if cfg.model.vocab_size == 0:
            cfg.model.vocab_size = self.tokenizer.vocab_size
        elif cfg.model.vocab_size < self.tokenizer.vocab_size:
            raise ConfigError(
                f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's "
                f"{self.tokenizer.vocab_size}; set it to 0 to take the tokenizer's size"
            )
        self._chat_defaults()
        if isinstance(self.data, PairData):
            self._seq2seq_sizes()
        torch.manual_seed(t.seed)  # identical initial weights on every process
        self.model = build_model(cfg.model)
        self.model.label_smoothing = t.label_smoothing  # seq2seq models apply it in training mode
        if fine_tune:
            ckpt.load_init_weights(self.model, t.init_from)
        self._freeze()
        self.model = self.model.to(self.device)
        self.optimizer = make_optimizer(self.model, t, self.device)
        self.data_gen = torch.Generator().manual_seed(t.seed)  # same global batches on every rank
        self.step, self.best_val = 0, float("inf")
        self.best_key = float("inf")  # train.best_by's value of model.safetensors, lower is better
        self.final_scores: dict = {}  # seq2seq: BLEU and chrF of the whole val split at the end
        self.last_eval_step = -1
        if resume:
            self._load_resume_state()
        elif dist.is_main:  # an overwritten run keeps nothing of the old one (deleted only once all is built)
            for name in ckpt.RUN_FILES:
                (self.run_dir / name).unlink(missing_ok=True)
        if not resume:
            torch.manual_seed(t.seed + 1000 * dist.rank)  # dropout stream per process
        self.fwd_model = torch.compile(self.model) if t.compile else self.model
        self.train_model = dist.wrap(self.fwd_model)

    def _check_family(self) -> None:
        pairs, family = data_format(self.cfg.data) == "pairs", self.cfg.model.family
        if pairs and family != "seq2seq":
            raise ConfigError(f"data.dataset holds sentence pairs, which train an encoder-decoder: set "
                              f"model.family=seq2seq (it is {family}), or give text or .jsonl examples")
        if family == "seq2seq" and not pairs:
            from .pairs import load_pairs

            load_pairs(self.cfg.data.dataset)  # a missing file or a bad line: its own, precise error
            raise ConfigError("model.family=seq2seq trains on sentence pairs: give data.dataset as .tsv "
                              "(source<TAB>target) or {\"src\", \"tgt\"} .jsonl files, or a pair dataset "
                              "(see `proselab data list`)")

    def _seq2seq_sizes(self) -> None:
        """Source vocabulary and the decoder's start token, from the tokenizers."""
        m, d = self.cfg.model, self.data
        src_size = 0 if d.src_tokenizer is d.tokenizer else d.src_tokenizer.vocab_size
        if m.src_vocab_size < src_size:
            m.src_vocab_size = src_size
        if m.bos_id < 0:
            m.bos_id = d.tokenizer.bos_id if d.tokenizer.bos_id is not None else d.tokenizer.eos_id

    def _warn_about_data(self) -> None:
        d = self.data
        if isinstance(d, PairData):
            if d.dropped:
                warnings.warn(f"{d.dropped} training pairs are longer than data.max_src_len={self.cfg.data.max_src_len}"
                              f" / data.max_tgt_len={self.cfg.data.max_tgt_len} tokens and were left out", stacklevel=3)
            if d.skipped:
                warnings.warn(f"{d.skipped} malformed lines were skipped (data.bad_lines=skip)", stacklevel=3)
        if d.unknown:
            warnings.warn(f"{d.unknown} tokens of the corpus are not in the tokenizer's vocabulary "
                          "and were read as <unk>", stacklevel=3)
        window = self.cfg.model.block_size + 1
        if isinstance(d, ExampleData) and d.truncated:
            warnings.warn(f"{d.truncated} examples (or exchanges of a long conversation) are longer than "
                          f"model.block_size + 1 = {window} tokens and were cut at the end", stacklevel=3)
        if isinstance(d, ExampleData) and d.dropped:
            warnings.warn(f"{d.dropped} examples have no response token within their first {window} tokens "
                          "and are left out", stacklevel=3)

    def _chat_defaults(self) -> None:
        """A run fine-tuned on conversations ends its replies at the template's end-of-turn token."""
        cfg = self.cfg
        if (isinstance(self.data, ExampleData) and is_chat_tokenizer(self.tokenizer, cfg.data.chat_template)
                and cfg.generation.eos_token_id is None):
            cfg.generation.eos_token_id = chat_stop_ids(self.tokenizer, cfg.data.chat_template)

    def _freeze(self) -> None:
        """train.freeze_layers and LoRA: which weights train (the optimizer takes only those)."""
        t = self.cfg.train
        try:
            if t.lora_rank:
                apply_lora(self.model, t.lora_rank, t.lora_alpha, t.lora_targets, t.lora_dropout)
            if t.freeze_layers:
                freeze_layers(self.model, t.freeze_layers)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    # ---- checkpoints -------------------------------------------------------------------
    def _load_resume_state(self) -> None:
        ckpt.load_weights(self.model, self.run_dir / ckpt.LAST_WEIGHTS_FILE)
        state = ckpt.load_trainer_state(self.run_dir / ckpt.TRAINER_STATE_FILE)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.best_val = int(state["step"]), float(state["best_val_loss"])
        self.best_key = float(state.get("best_key", self.best_val if self.cfg.train.best_by == "loss" else "inf"))
        self.data_gen.set_state(state["data_rng"])
        if self.dist.is_main:  # rank 0's dropout stream resumes exactly; others reseed
            torch.set_rng_state(state["torch_rng"])
        else:
            torch.manual_seed(self.cfg.train.seed + 1000 * self.dist.rank + self.step)
        if self.dist.is_main:  # drop metrics logged after the checkpoint we resume from
            path = self.run_dir / ckpt.METRICS_FILE
            if path.exists():
                keep = [ln for ln in path.read_text().splitlines() if _step_of(ln) <= self.step]
                ckpt.atomic_write_text(path, "".join(ln + "\n" for ln in keep))

    def snapshot(self) -> dict[str, Any]:
        """RNG states at the start of a step: what a checkpoint taken now must resume from."""
        return {"data_rng": self.data_gen.get_state(), "torch_rng": torch.get_rng_state()}

    def save(self, snap: dict[str, Any], best: bool) -> None:
        """Write config, tokenizer, last weights + trainer state, and the best weights if ``best``."""
        if not self.dist.is_main:
            return
        run = self.run_dir
        run.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": ckpt.FORMAT_VERSION, "tokenizer": {"kind": self.tokenizer.kind}}
        ckpt.write_json(run / ckpt.CONFIG_FILE, {**self.cfg.to_dict(), **meta})
        if not (run / ckpt.TOKENIZER_FILE).exists():
            self.tokenizer.save(run / ckpt.TOKENIZER_FILE)
        src_tok = getattr(self.data, "src_tokenizer", self.tokenizer)
        if src_tok is not self.tokenizer and not (run / ckpt.SRC_TOKENIZER_FILE).exists():
            src_tok.save(run / ckpt.SRC_TOKENIZER_FILE)
        ckpt.save_weights(self.model, run / ckpt.LAST_WEIGHTS_FILE)
        state = {
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "best_val_loss": self.best_val,
            "best_key": self.best_key,
            **snap,
        }
        ckpt.save_trainer_state(state, run / ckpt.TRAINER_STATE_FILE)
        if best or not (run / ckpt.WEIGHTS_FILE).exists():
            ckpt.save_weights(self.model, run / ckpt.WEIGHTS_FILE)

    def log(self, record: dict) -> None:
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / ckpt.METRICS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # ---- evaluation --------------------------------------------------------------------
    def _autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.no_grad()
    def estimate_val(self) -> float:
        """Mean loss over ``eval_iters`` random val batches (a fixed stream, so curves are comparable)."""
        t = self.cfg.train
        gen = torch.Generator().manual_seed(t.seed + 1)
        self.model.eval()
        losses = torch.zeros(t.eval_iters)
        for i in range(t.eval_iters):
            index = self.data.sample("val", t.batch_size, self.cfg.model.block_size, gen)
            x, y, _ = self.data.batch("val", index, self.cfg.model.block_size)
            x, y = x.to(self.device), y.to(self.device)
            with self._autocast():
                # the eager model: compiling a second, eval-mode graph costs more than it saves
                _, loss = self.model(x, y)
            losses[i] = loss.float()
        self.model.train()
        return losses.mean().item()

    def val_scores(self, n: int | None) -> dict:
        """Greedy-decoded BLEU and chrF of the first ``n`` val pairs (all when None), for seq2seq."""
        from .evaluation import translate
        from .metrics import score
        from .models.prepack import refresh

        refresh(self.model)  # the fused optimizer changed the weights without a version bump

        pairs = self.data.val.text[:n]
        src_len = max(len(s) for s in self.data.val.src[: len(pairs)])
        g = GenerationConfig(do_sample=False, max_new_tokens=min(self.cfg.generation.max_new_tokens, 2 * src_len + 10))
        hyps = translate(self.model, [s for s, _ in pairs], self.data.src_tokenizer, self.tokenizer, g,
                         self.cfg.train.batch_size, self.cfg.data.truncate_src)
        result = score(hyps, [t for _, t in pairs], ("bleu", "chrf"))
        return {"bleu": round(result["bleu"], 2), "chrf": round(result["chrf"], 2)}

    @torch.no_grad()
    def full_val_loss(self) -> float:
        """The exact mean per-token loss over the whole val split."""
        batches = self.data.batches("val", self.cfg.model.block_size, self.cfg.train.batch_size)
        return evaluate_batches(self.model, batches, self.device, self.dtype)

    # ---- the loop ----------------------------------------------------------------------
    def train_time(self) -> float:
        """Seconds since the loop started, less those spent in evals and checkpoints."""
        return time.perf_counter() - self.loop_start - self.eval_time

    def run(self) -> TrainResult:
        t, m, dist = self.cfg.train, self.cfg.model, self.dist
        global_rows = t.batch_size * dist.world_size
        tokens_seen = last_log_tokens = 0  # real (unpadded) input tokens, all processes
        bar = _progress(t, self.step, enabled=t.progress and dist.is_main)
        start_time, start_step = time.perf_counter(), self.step
        self.loop_start, self.eval_time, self.last_plot = start_time, 0.0, start_time
        last_log_time, last_log_step = 0.0, self.step
        loss_acc = torch.zeros((), device=self.device)
        snap = self.snapshot()
        interrupted = False
        self.model.train()
        try:
            while self.step < t.max_iters:
                if self.step % t.eval_interval == 0 and (self.step > start_step or start_step == 0):
                    self._eval_and_checkpoint(snap)
                # rank 0's clock decides, so every process stops at the same step
                if t.max_time and dist.any(dist.is_main and self.train_time() > t.max_time):
                    break
                lr = lr_at(self.step, t)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                for micro in range(t.grad_accum):
                    index = self.data.sample("train", global_rows, m.block_size, self.data_gen)
                    mine = index[dist.rank * t.batch_size : (dist.rank + 1) * t.batch_size]
                    x, y, n_tokens = self.data.batch("train", mine, m.block_size)
                    x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                    tokens_seen += n_tokens * dist.world_size
                    sync = micro == t.grad_accum - 1
                    with dist.maybe_no_sync(self.train_model, sync), self._autocast():
                        _, loss = self.train_model(x, y)
                        loss = loss / t.grad_accum
                    loss.backward()
                    loss_acc += loss.detach()
                if t.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                snap = self.snapshot()
                if self.step % t.log_interval == 0 or self.step == t.max_iters:
                    n = self.step - last_log_step
                    train_loss = dist.mean(loss_acc).item() / n  # the only host sync between evals
                    now = self.train_time()
                    tps = (tokens_seen - last_log_tokens) / max(now - last_log_time, 1e-9)
                    self.log({"step": self.step, "train_loss": train_loss, "lr": lr, "tokens_per_sec": round(tps, 1),
                              "elapsed": round(time.perf_counter() - start_time, 3)})
                    bar.set_postfix_str(f"loss {train_loss:.4f}  {tps:,.0f} tok/s", refresh=False)
                    loss_acc.zero_()
                    last_log_time, last_log_step, last_log_tokens = now, self.step, tokens_seen
                bar.update(1)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        seconds = self.train_time()
        tps_run = tokens_seen / max(seconds, 1e-9)
        val = None
        if not interrupted:
            if self.last_eval_step != self.step and dist.is_main:  # max_time can stop right after an eval
                record, best = self._evaluate()
                self.log(record)
                self.save(snap, best=best)
            if t.final_eval and dist.is_main:
                # measure what the run keeps: model.safetensors holds the best weights, which
                # generate, eval and serve load, and may be older than the last step's
                ckpt.load_weights(self.model, self.run_dir / ckpt.WEIGHTS_FILE)
                val = self.full_val_loss()
                record = {"step": self.step, "final_val_loss": val, "val_perplexity": math.exp(min(val, 50))}
                if isinstance(self.data, PairData) and t.eval_bleu_samples:
                    scores = self.val_scores(None)
                    record.update({"final_val_bleu": scores["bleu"], "final_val_chrf": scores["chrf"]})
                    self.final_scores = scores
                self.log(record)
        else:
            self.save(snap, best=False)
        if dist.is_main:
            plot_loss(self.run_dir / ckpt.METRICS_FILE, self.run_dir / "loss.png")
        dist.barrier()
        return TrainResult(self.run_dir, self.step, val, self.best_val, tps_run, seconds, interrupted,
                           self.final_scores)

    def _evaluate(self) -> tuple[dict, bool]:
        """The quick val loss (and for seq2seq BLEU and chrF of ``eval_bleu_samples`` greedy-decoded
        val pairs): the record to log, and whether these weights are the best by ``train.best_by``."""
        t = self.cfg.train
        val = self.estimate_val()
        record = {"step": self.step, "val_loss": val}
        if isinstance(self.data, PairData) and t.eval_bleu_samples:
            scores = self.val_scores(t.eval_bleu_samples)
            record.update({"val_bleu": scores["bleu"], "val_chrf": scores["chrf"]})
        self.best_val = min(self.best_val, val)
        key = val if t.best_by == "loss" else -record[f"val_{t.best_by}"]
        best = key < self.best_key
        self.best_key = min(self.best_key, key)
        return record, best

    def _eval_and_checkpoint(self, snap: dict[str, Any]) -> None:
        start = time.perf_counter()
        self.last_eval_step = self.step
        if self.dist.is_main:
            record, best = self._evaluate()
            self.log(record)
            self.save(snap, best=best)
            if start - self.last_plot >= PLOT_INTERVAL:
                plot_loss(self.run_dir / ckpt.METRICS_FILE, self.run_dir / "loss.png")
                self.last_plot = time.perf_counter()
        self.eval_time += time.perf_counter() - start


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def _progress(t, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=t.max_iters, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
                desc="train", smoothing=0.1)


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
        return _Trainer(cfg, dist).run()
    finally:
        dist.close()
