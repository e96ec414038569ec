"""What training says on the terminal: the model it builds, the time left, each evaluation's
one-line summary, and the progress bar. Lines go to stderr through tqdm, above the bar."""

from __future__ import annotations

import sys

import torch

from .config import Config


def say(message: str) -> None:
    """One line on stderr that does not break a progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe_model(cfg: Config, model: torch.nn.Module) -> str:
    """One line: what is trained, how big, for how long."""
    m, t = cfg.model, cfg.train
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    shape = {"gpt": f"{m.n_layer} layers x {m.n_embd}", "rnn": f"{m.cell} {m.num_layers} x {m.hidden_size}",
             "seq2seq": f"{m.arch} " + (f"{m.n_layer} layers x {m.n_embd}" if m.arch == "transformer"
                                        else f"{m.cell} {m.num_layers} x {m.hidden_size}, {m.attention} attention")}
    kind = f"{m.family} classifier ({len(m.labels)} labels)" if m.labels else m.family
    params = f"{total / 1e6:.2f}M parameters" + (f" ({trained / 1e6:.2f}M trained)" if trained != total else "")
    limit = f", at most {duration(t.max_time)}" if t.max_time else ""
    return f"model: {kind}, {shape[m.family]}, {params}; {t.max_iters:,} steps of batch {t.batch_size * t.grad_accum}{limit}"


def eval_line(step: int, train_loss: float | None, record: dict, best_by: str | None) -> str:
    """nanoGPT's "step N: train loss X, val loss Y", with the task's other scores, and whether
    these weights were kept as the best (``best_by`` None: they were not)."""
    parts = [f"step {step}:"]
    if train_loss is not None:
        parts.append(f"train loss {train_loss:.4f},")
    others = [f"{key[4:]} {value:.4g}" for key, value in record.items() if key.startswith("val_") and key != "val_loss"]
    parts.append(", ".join([f"val loss {record['val_loss']:.4f}", *others]))
    if best_by:
        parts.append(f"(best by {best_by}: saved)")
    return " ".join(parts)


def eta_line(per_step: float, steps_left: int, time_limited: bool, next_step: int, evals: int, eval_s: float) -> str:
    """How long the rest of a run should take, from the steps and evals measured so far."""
    total = steps_left * per_step + evals * eval_s
    limit = f" (train.max_time ends it near step {next_step + steps_left:,})" if time_limited else ""
    return (f"{per_step:.3g} s/step: about {duration(total)} for the remaining {steps_left:,} steps{limit}"
            f" and {evals} eval{'s' * (evals != 1)}, then the final validation pass")


def progress_bar(t, initial: int, enabled: bool):
    """The training bar: steps, loss and tokens/s (set by the loop), tqdm's own ETA."""
    from tqdm.auto import tqdm

    return tqdm(total=t.max_iters, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
                desc="train", smoothing=0.1)
