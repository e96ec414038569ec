"""An error analysis (report.py) as a self-contained report.html: inline styles, no script, no
network; its plots are PNGs written beside it and linked by name. Every number shown is one of
report.json's, also held in a ``data-`` attribute."""

from __future__ import annotations

import html
from pathlib import Path

from .atomic import atomic_write_text
from .plots import plot_bleu_by_length, plot_loss_histogram

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 70em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 2em; } .what { color: #555; }
table { border-collapse: collapse; margin: .5em 0; font-size: 14px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 13px; max-width: 30em; }
.scores span { display: inline-block; margin-right: 1.5em; } .scores b { font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
details { margin: .3em 0 1em; } summary { cursor: pointer; color: #4C72B0; }
.diag { background: #e8f3ea; }
"""

_WHAT = {
    "pairs": "Where a seq2seq model goes wrong on sentence pairs: its worst segments by sentence-level chrF, "
             "corpus BLEU by source length, and outputs that look made up.",
    "lm": "Where a language model is most surprised by the text: the fixed windows with the highest mean "
          "next-token loss, and how the loss is spread over the windows.",
    "labels": "Where a classifier goes wrong: which labels it confuses, and the mistakes it was surest of.",
}


def render_report(data: dict, out: Path, title: str) -> dict[str, Path]:
    """Write report.html (and its plots) for a report's JSON ``data`` into the directory ``out``.

    Returns:
        {"html": path, and each plot's name: path}.
    """
    kind = data["kind"]
    plots: dict[str, Path] = {}
    if kind == "pairs":
        b = data["buckets"]
        plots["bleu_by_length"] = plot_bleu_by_length([x["bucket"] for x in b], [x["bleu"] for x in b],
                                                      [x["pairs"] for x in b], out / "bleu_by_length.png")
        body = _pairs_body(data)
    elif kind == "lm":
        h = data["histogram"]
        plots["loss_distribution"] = plot_loss_histogram(h["edges"], h["counts"], out / "loss_distribution.png",
                                                         f"mean loss of {data['windows']} windows of "
                                                         f"{data['window']} tokens")
        body = _lm_body(data)
    else:
        plots["confusion"] = out / data["confusion_png"]
        body = _labels_body(data)
    scores = "".join(f'<span>{html.escape(k)} <b data-score="{html.escape(k)}" data-value="{v!r}">{_fmt(v)}</b></span>'
                     for k, v in data["scores"].items())
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f'<p class="what">{_WHAT[kind]}</p>\n<p class="scores" id="scores">{scores}</p>\n{body}\n</body></html>\n')
    atomic_write_text(out / "report.html", page)
    return {"html": out / "report.html", **plots}


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def _text(s: str) -> str:
    return f'<td class="text">{html.escape(s) if s else "<i>(empty)</i>"}</td>'


def _table(table_id: str, head: list[str], rows: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f'<table id="{table_id}"><tr>{th}</tr>{"".join(rows)}</table>'


def _pairs_body(data: dict) -> str:
    worst = [f'<tr data-index="{w["index"]}" data-chrf="{w["chrf"]!r}"><td class="num">{w["index"]}</td>'
             f'<td class="num">{w["chrf"]:.2f}</td>{_text(w["source"])}{_text(w["reference"])}{_text(w["hypothesis"])}'
             "</tr>" for w in data["worst"]]
    buckets = [f'<tr data-bucket="{b["bucket"]}" data-pairs="{b["pairs"]}" data-bleu="{b["bleu"]!r}"><td>{b["bucket"]}'
               f'</td><td class="num">{b["pairs"]}</td><td class="num">{b["bleu"]:.2f}</td></tr>'
               for b in data["buckets"]]
    signals, examples = [], []
    for name, s in data["signals"].items():
        share = s["count"] / max(data["pairs"], 1)
        signals.append(f'<tr data-signal="{name}" data-count="{s["count"]}"><td>{name.replace("_", " ")}</td>'
                       f'<td>{html.escape(s["what"])}</td><td class="num">{s["count"]}</td>'
                       f'<td class="num">{share:.1%}</td></tr>')
        if s["examples"]:
            extra = {"too_long": lambda e: f'ratio {e["ratio"]:.2f}', "repeated_ngram": lambda e: repr(e["ngram"]),
                     "empty": lambda e: ""}[name]
            rows = [f'<tr data-index="{e["index"]}"><td class="num">{e["index"]}</td>{_text(e["source"])}'
                    f'{_text(e["hypothesis"])}<td>{html.escape(extra(e))}</td></tr>' for e in s["examples"]]
            examples.append(f'<details><summary>{name.replace("_", " ")}: {len(s["examples"])} of {s["count"]} '
                            f'examples</summary>{_table("examples-" + name, ["#", "source", "hypothesis", ""], rows)}'
                            "</details>")
    return ('<h2>Worst segments by sentence chrF</h2>\n'
            + _table("worst", ["#", "chrF", "source", "reference", "hypothesis"], worst)
            + '\n<h2>BLEU by source length</h2>\n<img src="bleu_by_length.png" alt="BLEU by source length">\n'
            + _table("buckets", ["source words", "pairs", "corpus BLEU"], buckets)
            + "\n<h2>Hallucination signals</h2>\n"
            + _table("signals", ["signal", "flagged when", "count", "share"], signals) + "".join(examples))


def _lm_body(data: dict) -> str:
    rows = [f'<tr data-index="{h["index"]}" data-start="{h["start"]}" data-loss="{h["loss"]!r}"><td class="num">'
            f'{h["index"]}</td><td class="num">{h["start"]:,}</td><td class="num">{h["loss"]:.4f}</td>'
            f'{_text(h["text"])}</tr>' for h in data["highest"]]
    return (f'<h2>Highest-loss passages</h2>\n<p class="what">{data["windows"]:,} windows of {data["window"]} tokens; '
            f"the {len(rows)} with the highest mean loss (nats per token), highest first.</p>\n"
            + _table("highest", ["window", "first token", "loss", "text"], rows)
            + '\n<h2>Loss distribution</h2>\n<img src="loss_distribution.png" alt="loss per window">')


def _labels_body(data: dict) -> str:
    labels = data["labels"]
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{html.escape(x)}</th>" for x in labels) + "</tr>"
    body = "".join(f"<tr><th>{html.escape(t)}</th>" + "".join(
        f'<td class="num{" diag" if r == c else ""}" data-r="{r}" data-c="{c}" data-count="{n}">{n}</td>'
        for c, n in enumerate(row)) + "</tr>" for r, (t, row) in enumerate(zip(labels, data["confusion"])))
    mistakes = [f'<tr data-prob="{m["probability"]!r}"><td>{html.escape(str(m["where"]))}</td>{_text(m["text"])}'
                f'<td>{html.escape(m["label"])}</td><td>{html.escape(m["predicted"])}</td>'
                f'<td class="num">{m["probability"]:.4f}</td></tr>' for m in data["mistakes"]]
    return (f'<h2>Confusion matrix</h2>\n<img src="{html.escape(data["confusion_png"])}" alt="confusion matrix">\n'
            f'<table id="confusion">{head}{body}</table>\n<h2>The most confident mistakes</h2>\n'
            + _table("mistakes", ["where", "text", "true", "predicted", "probability"], mistakes))
