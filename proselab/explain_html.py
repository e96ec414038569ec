"""An Explanation as files: explanation.json, a self-contained explanation.html (no external
resources: styles and the attention picker's script are inline) and explanation.png."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_write_text
from .decoding import json_safe
from .plots import plot_attention, plot_attention_grid, plot_attributions, plot_token_probs

if TYPE_CHECKING:
    from .explain import Explanation

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 60em; color: #222; }
h1 { font-size: 1.3em; } .what { color: #555; }
.text { white-space: pre-wrap; font-family: ui-monospace, monospace; line-height: 2.1; }
.tok { position: relative; border-radius: 3px; padding: 1px 0; cursor: default; }
.ctx { color: #666; }
.tip { display: none; position: absolute; left: 0; top: 1.9em; z-index: 2; background: #fff; color: #222;
       border: 1px solid #aaa; border-radius: 4px; padding: 4px 8px; white-space: pre; font-size: 12px;
       line-height: 1.4; box-shadow: 0 2px 6px rgba(0,0,0,.2); }
.tok:hover .tip { display: block; }
.explained { border-bottom: 2px solid #4C72B0; }
.target { outline: 2px solid #4C72B0; }
.query { outline: 2px solid #000; }
table.matrix { border-collapse: collapse; font-size: 10px; margin-top: 1em; }
.matrix td { width: 14px; height: 14px; padding: 0; }
.matrix th { font-weight: normal; white-space: pre; font-family: ui-monospace, monospace; }
.details { color: #555; font-size: 13px; }
"""

_METHODS = {
    "tokens": "How sure the model was of each token: colour from red (improbable) to green (probable); "
              "hover a token for its probability, surprisal, rank and the top alternatives.",
    "attention": "Where the model looked: pick a layer and a head, hover (or click) a token to see its "
                 "attention over the others.",
    "ig": "Integrated gradients on the token embeddings: each input token's contribution to {target}.",
    "shapley": "Shapley value sampling: each input token's contribution to {target}.",
    "lime": "LIME: each input token's contribution to {target}, from a linear model fit to perturbed texts.",
}


def write_explanation(expl: Explanation, out_dir: str | Path, title: str = "") -> dict[str, Path]:
    """Write explanation.json, explanation.html and explanation.png into ``out_dir``.

    Returns:
        {"json": path, "html": path, "png": path}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = json_safe(expl.to_dict())
    title = title or f"{expl.method}: {expl.family} {expl.kind}"
    paths = {"json": out / "explanation.json", "html": out / "explanation.html", "png": out / "explanation.png"}
    atomic_write_text(paths["json"], json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    atomic_write_text(paths["html"], render_html(data, title))
    _figure(expl, paths["png"], title)
    return paths


def _figure(expl: Explanation, path: Path, title: str) -> None:
    context, output = [t["text"] for t in expl.context], [t["text"] for t in expl.output]
    if expl.method == "tokens":
        plot_token_probs(output, [t["prob"] for t in expl.output], path, title)
    elif expl.method == "attention":
        a = expl.attention
        if len(a["weights"]) == 1 and len(a["weights"][0]) == 1:  # one map: seq2seq alignment
            plot_attention(a["weights"][0][0], a["cols"], a["rows"], path, title)
        else:
            plot_attention_grid(a["weights"], a["rows"], a["cols"], path, title)
    else:
        plot_attributions(context, expl.attributions, path, f"{title}\n{expl.target}")


def render_html(data: dict, title: str) -> str:
    """The page of an explanation's JSON ``data``: every number shown is one of ``data``'s."""
    method = data["method"]
    what = _METHODS[method].format(target=html.escape(str(data.get("target"))))
    if method == "tokens":
        body = _token_body(data)
    elif method == "attention":
        body = _attention_body(data)
    else:
        body = _attribution_body(data)
    details = data.get("details") or {}
    info = " · ".join(f"{html.escape(str(k))}: {html.escape(_fmt(v))}" for k, v in details.items())
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f'<p class="what">{what}</p>\n{body}\n<p class="details">{info}</p>\n</body></html>\n')


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _shown(text: str) -> str:
    """A token's text for the page: a newline drawn as ↵ and kept, an empty token as ∅."""
    if not text:
        return "\u2205"
    return html.escape(text).replace("\n", "\u21b5\n")


def _span(token: dict, cls: str, style: str = "", attrs: str = "", tip: str = "") -> str:
    tip_html = f'<span class="tip">{html.escape(tip)}</span>' if tip else ""
    return (f'<span class="tok {cls}" data-id="{token["id"]}"{attrs}'
            f'{f" style={chr(34)}{style}{chr(34)}" if style else ""}>{_shown(token["text"])}{tip_html}</span>')


def _prob_colour(p: float) -> str:
    return f"background: hsl({120 * p:.0f}, 75%, 78%)"


def _token_body(data: dict) -> str:
    spans = [_span(t, "ctx", tip="context (not scored)") for t in data["context"]]
    for t in data["output"]:
        alts = "\n".join(f"  {a['text']!r}  {a['prob']:.4f}" for a in t["top"])
        bits = "\u221e" if t["surprisal"] is None else f"{t['surprisal']:.2f}"  # p = 0 in float32: JSON's null
        tip = f"p = {t['prob']:.4f}\nsurprisal = {bits} bits\nrank = {t['rank']}\ntop:\n{alts}"
        attrs = f' data-prob="{t["prob"]!r}" data-surprisal="{t["surprisal"]!r}" data-rank="{t["rank"]}"'
        spans.append(_span(t, "out", _prob_colour(t["prob"]), attrs, tip))
    sep = "" if data["kind"] == "lm" else '\n<span class="ctx">\u2192 </span>'
    n = len(data["context"])
    return f'<div class="text" id="tokens">{"".join(spans[:n])}{sep}{"".join(spans[n:])}</div>'


def _attribution_body(data: dict) -> str:
    values = data["attributions"]
    scale = max((abs(v) for v in values), default=0.0) or 1.0
    spans = []
    for t, v in zip(data["context"], values):
        a = min(abs(v) / scale, 1.0)
        colour = f"rgba(85, 168, 104, {a:.3f})" if v >= 0 else f"rgba(196, 78, 82, {a:.3f})"
        spans.append(_span(t, "ctx-attr", f"background: {colour}", f' data-attr="{v!r}"', f"attribution = {v:.4g}"))
    target = data.get("target") or ""
    out = [_span(t, "out explained" + (" target" if f"output token {j}:" in target else ""), tip="explained output")
           for j, t in enumerate(data["output"])]
    arrow = f'\n<span class="ctx">\u2192 {html.escape(target)}</span>\n' if data["kind"] == "classifier" else \
        '<span class="ctx"> \u2192 </span>'
    return f'<div class="text" id="tokens">{"".join(spans)}{arrow}{"".join(out)}</div>'


_ATTENTION_JS = """
const data = JSON.parse(document.getElementById('data').textContent);
const W = data.attention.weights, L = W.length, H = W[0].length;
const rows = document.querySelectorAll('#rows .tok');
const cols = document.getElementById('cols') ? document.querySelectorAll('#cols .tok') : rows;  // gpt: the same tokens
const layer = document.getElementById('layer'), head = document.getElementById('head');
let query = rows.length - 1;
function weights(l, h) {  // (R, C) for a layer and a head; 'mean' averages
  const ls = l === 'mean' ? [...Array(L).keys()] : [+l], hs = h === 'mean' ? [...Array(H).keys()] : [+h];
  const R = W[0][0].length, C = W[0][0][0].length, out = [];
  for (let r = 0; r < R; r++) {
    out.push(new Array(C).fill(0));
    for (const i of ls) for (const j of hs)
      for (let c = 0; c < C; c++) out[r][c] += W[i][j][r][c] / (ls.length * hs.length);
  }
  return out;
}
function draw() {
  const w = weights(layer.value, head.value);
  rows.forEach((el, r) => el.classList.toggle('query', r === query));
  cols.forEach((el, c) => {
    const v = w[query][c];
    el.style.background = `rgba(68, 1, 84, ${Math.min(v * 1.5, 1).toFixed(3)})`;
    el.style.color = v > 0.4 ? '#fff' : '';
    el.dataset.w = String(v);
  });
  const table = document.getElementById('matrix');
  if (!table) return;
  table.querySelectorAll('td').forEach(td => {
    const v = w[+td.dataset.r][+td.dataset.c];
    td.dataset.w = String(v);
    td.title = v.toFixed(4);
    td.style.background = `rgba(68, 1, 84, ${v.toFixed(3)})`;
  });
}
rows.forEach((el, r) => { el.addEventListener('mouseenter', () => { query = r; draw(); });
                          el.addEventListener('click', () => { query = r; draw(); }); });
layer.addEventListener('change', draw); head.addEventListener('change', draw);
draw();
"""


def _attention_body(data: dict) -> str:
    a = data["attention"]
    L, H = len(a["weights"]), len(a["weights"][0])
    options = lambda n, name: "".join(f'<option value="{i}">{name} {i}</option>' for i in range(n)) + (
        f'<option value="mean">mean of {n}</option>' if n > 1 else "")
    picker = (f'<p><label>layer <select id="layer">{options(L, "layer")}</select></label> '
              f'<label>head <select id="head">{options(H, "head")}</select></label></p>')
    every = data["context"] + data["output"]
    if data["family"] == "gpt":  # rows and columns are the same tokens: one line
        tokens = f'<div class="text" id="rows">{"".join(_span(t, "") for t in every)}</div>'
    else:
        tokens = (f'<p>source</p><div class="text" id="cols">{"".join(_span(t, "") for t in data["context"])}</div>'
                  f'<p>output</p><div class="text" id="rows">{"".join(_span(t, "") for t in data["output"])}</div>')
    matrix = ""
    R, C = len(a["rows"]), len(a["cols"])
    if R <= 128 and C <= 128:
        head_row = "<tr><th></th>" + "".join(f"<th>{_shown(c)[:8]}</th>" for c in a["cols"]) + "</tr>"
        body = "".join(f"<tr><th>{_shown(r)[:12]}</th>" + "".join(f'<td data-r="{i}" data-c="{j}"></td>'
                                                                  for j in range(C)) + "</tr>"
                       for i, r in enumerate(a["rows"]))
        matrix = f'<table class="matrix" id="matrix">{head_row}{body}</table>'
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    return (f'<p class="what">{html.escape(a["what"])}</p>{picker}{tokens}{matrix}\n'
            f'<script type="application/json" id="data">{payload}</script>\n<script>{_ATTENTION_JS}</script>')
