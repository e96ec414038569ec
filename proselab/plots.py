"""Plots people would rather look at than read: loss curves (matplotlib, Agg backend)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from .atomic import atomic_write_bytes


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl file (a torn last line from a killed run is skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_loss(metrics_path: str | Path, out_path: str | Path, title: str = "") -> Path:
    """Draw train and validation loss against step from metrics.jsonl into a PNG.

    A secondary y-axis shows perplexity, and the learning rate is drawn underneath, so one
    picture answers "is it learning, is it overfitting, what did the schedule do".
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    lr = [(r["step"], r["lr"]) for r in records if "lr" in r]
    final = [r for r in records if "final_val_loss" in r]

    fig, (ax, ax_lr) = plt.subplots(
        2, 1, figsize=(8, 5.5), sharex=True, gridspec_kw={"height_ratios": [4, 1]}, constrained_layout=True
    )
    if train:
        ax.plot(*zip(*train), color="#4C72B0", alpha=0.85, linewidth=1.2, label="train (batch)")
    if val:
        ax.plot(*zip(*val), color="#DD8452", marker="o", markersize=4, linewidth=1.8, label="val (estimate)")
    if final:
        f = final[-1]
        ax.scatter([f["step"]], [f["final_val_loss"]], color="#C44E52", marker="*", s=160, zorder=5,
                   label=f"val, full pass: {f['final_val_loss']:.4f}")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend(loc="upper right", frameon=False)
        lo, hi = ax.get_ylim()
        ppl = ax.secondary_yaxis("right", functions=(lambda x: x, lambda x: x))
        ticks = [t for t in ax.get_yticks() if lo <= t <= hi]
        ppl.set_yticks(ticks, labels=[f"{math.exp(t):.3g}" if t < 30 else "" for t in ticks])
        ppl.set_ylabel("perplexity")
    ax.set_title(title or Path(out_path).parent.name)
    if lr:
        ax_lr.plot(*zip(*lr), color="#55A868", linewidth=1.2)
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(out_path), buf.getvalue())
    return Path(out_path)
