"""Plots people would rather look at than read: loss curves and attention heatmaps (matplotlib, Agg backend)."""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path

from .atomic import atomic_write_bytes


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl file: lines that are not JSON objects (a torn last line
    from a killed run, bytes appended by accident) are skipped."""
    out = []
    for line in Path(path).read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            out.append(record)
    return out


# eval scores besides the loss (seq2seq: BLEU, chrF 0-100; classifiers: 0-1), drawn on a second panel
_SCORE_NAMES = {"val_bleu": "BLEU", "val_chrf": "chrF", "val_accuracy": "accuracy", "val_macro_f1": "macro-F1"}


def _score_series(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Each eval score other than the loss, as (step, value) points."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for key, name in _SCORE_NAMES.items():
            if key in r:
                out.setdefault(name, []).append((r["step"], r[key]))
    return out


def _plot_scores(ax, scores: dict[str, list[tuple[int, float]]]) -> None:
    colors = ["#8172B3", "#937860", "#DA8BC3", "#64B5CD"]
    for (name, points), color in zip(scores.items(), colors):
        best = max(v for _, v in points)
        ax.plot(*zip(*points), color=color, marker="o", markersize=3, linewidth=1.5, label=f"{name} (best {best:.4g})")
    ax.set_ylabel("val score (higher is better)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", frameon=False, fontsize=8)


def _save(fig, out_path: str | Path) -> Path:
    """Write ``fig`` as a PNG atomically, then close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    with warnings.catch_warnings():
        # a token outside the font (CJK, emoji) is drawn as a box; one warning per glyph is noise
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(out_path), buf.getvalue())
    return Path(out_path)


def train_series(records: list[dict]) -> list[tuple[str, list[tuple[int, float]], dict]]:
    """The training lines of the loss plot: (label, (step, value) points, line style). A
    distilled run's logged loss mixes the cross-entropy with the KL to its teacher, so it is
    drawn as its two terms: the cross-entropy, comparable with the validation loss, and the KL."""
    def points(key: str) -> list[tuple[int, float]]:
        return [(r["step"], r[key]) for r in records if key in r]

    if ce := points("train_ce"):
        return [("train CE (batch)", ce, {"color": "#4C72B0"}),
                ("train KL to the teacher (batch)", points("train_kd"), {"color": "#8172B3", "linestyle": ":"})]
    train = points("train_loss")
    return [("train (batch)", train, {"color": "#4C72B0"})] if train else []


def plot_loss(metrics_path: str | Path, out_path: str | Path, title: str = "") -> Path:
    """Draw train and validation loss against step from metrics.jsonl into a PNG.

    A secondary y-axis shows perplexity, and the learning rate is drawn underneath, so one
    picture answers "is it learning, is it overfitting, what did the schedule do".
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = train_series(records)
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    lr = [(r["step"], r["lr"]) for r in records if "lr" in r]
    final = [r for r in records if "final_val_loss" in r]
    scores = _score_series(records)

    rows = 3 if scores else 2
    fig, axes = plt.subplots(rows, 1, figsize=(8, 5.5 + 2.2 * (rows - 2)), sharex=True,
                             gridspec_kw={"height_ratios": [4, 2.5, 1][:rows] if scores else [4, 1]},
                             constrained_layout=True)
    ax, ax_lr = axes[0], axes[-1]
    if scores:
        _plot_scores(axes[1], scores)
    for label, points, style in train:
        if points:
            ax.plot(*zip(*points), alpha=0.85, linewidth=1.2, label=label, **style)
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
    return _save(fig, out_path)


_MAX_LABELED = 60  # tick labels per axis that stay readable; beyond it every k-th token is labeled
_CELL_INCHES = 0.25  # one token's row/column at fontsize 8
_MAX_LABEL_CHARS = 16  # longer tokens are cut with "…" so one cannot squeeze the heatmap


def plot_attention(weights, src_tokens: list[str], tgt_tokens: list[str], out_path: str | Path,
                   title: str = "") -> Path:
    """Draw an attention matrix as a heatmap PNG: which source tokens each generated token looked at.

    Tokens are shown readably: newlines, tabs and other control characters are escaped
    (``\\n``), spaces are drawn as ``␣``, and markers such as byte-level BPE's ``Ġ`` are kept
    as they are. Up to 60 tokens a side every token is labeled; beyond that every k-th is.

    Args:
        weights: (T, S) attention of T generated tokens over S source tokens (rows sum to ~1),
            a torch Tensor (any device or dtype) or anything ``numpy.asarray`` takes.
        src_tokens: the S source tokens, along the x axis.
        tgt_tokens: the T generated tokens, along the y axis.
        out_path: where to write the PNG (atomically).
        title: the figure title.

    Returns:
        ``out_path`` as a Path.

    Raises:
        ValueError: if ``weights`` is not 2-D, is empty, or its shape does not match the token counts.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = _as_matrix(weights, len(src_tokens), len(tgt_tokens))
    T, S = w.shape
    width = min(S, _MAX_LABELED) * _CELL_INCHES + 2.5  # room for the y labels and the colorbar
    height = min(T, _MAX_LABELED) * _CELL_INCHES + 1.5  # room for the rotated x labels and title
    fig, ax = plt.subplots(figsize=(max(width, 4.0), max(height, 3.0)), constrained_layout=True)
    # colours start at 0 so that their brightness is proportional to the weight, not to its rank
    im = ax.imshow(w, cmap="viridis", aspect="auto", interpolation="nearest", vmin=min(0.0, float(w.min())))
    _label_axis(ax.set_xticks, src_tokens, rotation=90)
    _label_axis(ax.set_yticks, tgt_tokens)
    ax.set_xlabel("source")
    ax.set_ylabel("generated")
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, label="attention weight")
    return _save(fig, out_path)


def plot_confusion(matrix: list[list[int]], labels: list[str], out_path: str | Path, title: str = "") -> Path:
    """Draw a classifier's confusion matrix: rows are the true labels, columns the predicted ones,
    each cell its count and its share of the row (the row's recall on the diagonal).

    Args:
        matrix: counts (L, L), as ``metrics.classification_scores`` returns them.
        labels: the L label names, in id order.
        out_path: where to write the PNG (atomically).
        title: the figure title.

    Returns:
        ``out_path`` as a Path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix, dtype=np.int64)
    if counts.shape != (len(labels), len(labels)):
        raise ValueError(f"a confusion matrix for {len(labels)} labels must be {len(labels)} x {len(labels)}, "
                         f"got shape {counts.shape}")
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)  # each row sums to 1
    side = min(len(labels), _MAX_LABELED) * 0.7 + 2.5
    fig, ax = plt.subplots(figsize=(side + 1.0, side), constrained_layout=True)
    im = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    if len(labels) <= _MAX_LABELED:  # the numbers, where the cells are big enough to read them
        for (r, c), n in np.ndenumerate(counts):
            ax.text(c, r, f"{n}\n{shares[r, c]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if shares[r, c] > 0.6 else "black")
    _label_axis(ax.set_xticks, labels, rotation=45)
    _label_axis(ax.set_yticks, labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.colorbar(im, ax=ax, label="share of the true label's texts")
    return _save(fig, out_path)


def _as_matrix(weights, n_src: int, n_tgt: int):
    """``weights`` as a float numpy (T, S) array, checked against the token counts."""
    import numpy as np

    if hasattr(weights, "detach"):  # a torch Tensor, without importing torch here
        weights = weights.detach().float().cpu().numpy()
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"attention weights must be 2-D (generated x source), got shape {tuple(w.shape)}")
    if w.shape != (n_tgt, n_src):
        raise ValueError(
            f"attention weights have shape {tuple(w.shape)} but there are {n_tgt} generated tokens "
            f"and {n_src} source tokens; expected shape ({n_tgt}, {n_src})"
        )
    if w.size == 0:
        raise ValueError("attention weights are empty: need at least one source and one generated token")
    return w


def _label_axis(set_ticks, tokens: list[str], rotation: int = 0) -> None:
    step = math.ceil(len(tokens) / _MAX_LABELED)
    ticks = list(range(0, len(tokens), step))
    # parse_math=False: a token holding two "$" must not be read as mathtext
    set_ticks(ticks, labels=[_display_token(tokens[i]) for i in ticks], fontsize=8, rotation=rotation,
              parse_math=False)


def _display_token(token: str) -> str:
    """A token as a readable one-line label: control characters escaped, spaces visible, long ones cut."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(token))
    text = text.replace(" ", "\u2423") or "\u2205"
    return text if len(text) <= _MAX_LABEL_CHARS else text[: _MAX_LABEL_CHARS - 1] + "\u2026"


def _bars(tokens: list[str], values: list[float], colors, ylabel: str, title: str):
    """A bar per token, labeled along x; the figure (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = min(len(tokens), _MAX_LABELED) * _CELL_INCHES + 2.0
    fig, ax = plt.subplots(figsize=(max(width, 5.0), 3.6), constrained_layout=True)
    ax.bar(range(len(values)), values, color=colors, width=0.85)
    _label_axis(ax.set_xticks, tokens, rotation=90)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.set_xlim(-0.6, len(values) - 0.4)
    if title:
        ax.set_title(title, fontsize=10)
    return fig, ax


def plot_token_probs(tokens: list[str], probs: list[float], out_path: str | Path, title: str = "") -> Path:
    """Draw each scored token's surprisal (bits, the bar's height), coloured by its probability
    (red improbable, green probable).

    Args:
        tokens: the scored tokens' texts.
        probs: their probabilities under the model.
        out_path: where to write the PNG (atomically).
        title: the figure title.
    """
    import matplotlib

    cmap = matplotlib.colormaps["RdYlGn"]
    bits = [-math.log2(max(p, 1e-300)) for p in probs]
    fig, ax = _bars(tokens, bits, [cmap(p) for p in probs], "surprisal (bits)", title)
    sm = matplotlib.cm.ScalarMappable(cmap=cmap, norm=matplotlib.colors.Normalize(0, 1))
    fig.colorbar(sm, ax=ax, label="probability", fraction=0.03)
    return _save(fig, out_path)


def plot_attributions(tokens: list[str], values: list[float], out_path: str | Path, title: str = "") -> Path:
    """Draw each input token's attribution as a bar: green pushes the explained output up, red down."""
    colors = ["#55A868" if v >= 0 else "#C44E52" for v in values]
    fig, ax = _bars(tokens, values, colors, "attribution", title)
    ax.axhline(0.0, color="black", linewidth=0.8)
    return _save(fig, out_path)


_MAX_GRID = 12  # layers (rows) and heads (columns) drawn in an attention grid


def plot_attention_grid(weights, rows: list[str], cols: list[str], out_path: str | Path, title: str = "") -> Path:
    """Draw every layer's and head's attention as a grid of heatmaps (a layer per row, a head per
    column; the first 12 of each), token labels on the outer axes when they fit.

    Args:
        weights: (layers, heads, R, C): each query token's (row's) attention over the key
            tokens (columns).
        rows, cols: the R query and C key tokens.
        out_path: where to write the PNG (atomically).
        title: the figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if hasattr(weights, "detach"):
        weights = weights.detach().float().cpu().numpy()
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4 or w.shape[2:] != (len(rows), len(cols)):
        raise ValueError(f"attention weights must be (layers, heads, {len(rows)}, {len(cols)}), got {w.shape}")
    L, H = min(w.shape[0], _MAX_GRID), min(w.shape[1], _MAX_GRID)
    side = 2.2 if max(len(rows), len(cols)) <= 24 else 1.8
    fig, axes = plt.subplots(L, H, figsize=(H * side + 1.5, L * side + 1.0), squeeze=False, constrained_layout=True)
    labeled = max(len(rows), len(cols)) <= 24
    for i in range(L):
        for j in range(H):
            ax = axes[i][j]
            im = ax.imshow(w[i, j], cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"head {j}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"layer {i}", fontsize=8)
                if labeled:
                    ax.set_yticks(range(len(rows)), labels=[_display_token(t) for t in rows], fontsize=5,
                                  parse_math=False)
            if i == L - 1 and labeled:
                ax.set_xticks(range(len(cols)), labels=[_display_token(t) for t in cols], fontsize=5, rotation=90,
                              parse_math=False)
    fig.colorbar(im, ax=axes, label="attention weight", fraction=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, out_path)


def plot_bleu_by_length(buckets: list[str], bleu: list[float], pairs: list[int], out_path: str | Path,
                        title: str = "") -> Path:
    """Draw corpus BLEU per source-length bucket as bars, each labeled with its BLEU and its
    number of pairs.

    Args:
        buckets: the buckets' names ("1-10", ...), shortest sources first.
        bleu: each bucket's corpus BLEU (0-100).
        pairs: how many pairs each bucket holds.
        out_path: where to write the PNG (atomically).
        title: the figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(buckets) + 2.0), 3.6), constrained_layout=True)
    bars = ax.bar(range(len(bleu)), bleu, color="#4C72B0", width=0.7)
    for bar, b, n in zip(bars, bleu, pairs):
        ax.annotate(f"{b:.1f}\n({n} pairs)", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(buckets)), labels=buckets)
    ax.set_xlabel("source length (words)")
    ax.set_ylabel("corpus BLEU")
    ax.set_ylim(0, max([*bleu, 1.0]) * 1.25)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "BLEU by source length", fontsize=10)
    return _save(fig, out_path)


def plot_loss_histogram(edges: list[float], counts: list[int], out_path: str | Path, title: str = "") -> Path:
    """Draw how a language model's loss is spread over the windows of a text: a histogram of
    the windows' mean loss (nats per token), given as bin ``edges`` (n + 1) and ``counts`` (n)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6), constrained_layout=True)
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    ax.bar(edges[:-1], counts, width=[w or 0.01 for w in widths], align="edge", color="#DD8452", edgecolor="white")
    ax.set_xlabel("mean loss of a window (nats / token)")
    ax.set_ylabel("windows")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "loss per window", fontsize=10)
    return _save(fig, out_path)
