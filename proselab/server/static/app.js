// The proselab playground: plain JavaScript over the server's OpenAI-compatible API.
"use strict";

const info = window.PROSELAB || {};
const $ = (id) => document.getElementById(id);
let controller = null; // aborts the request in flight
let history = []; // chat messages

function init() {
  $("model-name").textContent = info.model || "";
  $("model-family").textContent = info.seq2seq ? "seq2seq" : info.family || "";
  const d = info.defaults || {};
  for (const name of ["max_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "presence_penalty",
                      "frequency_penalty"]) {
    if (d[name] !== undefined) $(name).value = d[name];
  }
  if (info.seq2seq) $("prompt-label").textContent = "Source";
  if (info.auth) $("key-label").hidden = false;
  $("api-key").value = localStorage.getItem("proselab-key") || "";
  $("api-key").addEventListener("change", () => localStorage.setItem("proselab-key", $("api-key").value));
  if (!info.chat) $("mode-chat").hidden = true;
  const classifier = (info.labels || []).length > 0;
  if (info.seq2seq && !classifier) $("mode-classify").hidden = true; // zero-shot needs a language model
  $("zero-shot").hidden = classifier;
  $("mode-complete").addEventListener("click", () => setMode("complete"));
  $("mode-chat").addEventListener("click", () => setMode("chat"));
  $("mode-classify").addEventListener("click", () => setMode("classify"));
  $("classify").addEventListener("click", classify);
  $("classify-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) classify();
  });
  if (classifier) { // a classifier does not generate: no completion mode, no sampling settings
    $("mode-complete").hidden = true;
    setMode("classify");
    for (const el of document.querySelectorAll("#controls label:not(#key-label), #controls .hint")) el.hidden = true;
    $("controls").hidden = !info.auth;
  } else if (info.chat && !info.seq2seq) {
    setMode("chat"); // a GPT tuned for chat is talked to; a seq2seq run's box is its source text
  }
  $("generate").addEventListener("click", complete);
  for (const id of ["stop", "chat-stop"]) $(id).addEventListener("click", () => controller && controller.abort());
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) complete();
  });
  $("send").addEventListener("click", send);
  $("reset").addEventListener("click", () => { history = []; $("messages").textContent = ""; });
  $("chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
  });
}

function setMode(mode) {
  for (const m of ["complete", "chat", "classify"]) {
    $(m + "-pane").hidden = mode !== m;
    $("mode-" + m).classList.toggle("active", mode === m);
  }
}

function settings() {
  const body = {};
  const num = (id, key, int) => {
    const v = $(id).value.trim();
    if (v !== "") body[key] = int ? parseInt(v, 10) : parseFloat(v);
  };
  num("max_tokens", "max_tokens", true);
  num("temperature", "temperature", false);
  num("top_p", "top_p", false);
  num("top_k", "top_k", true);
  num("repetition_penalty", "repetition_penalty", false);
  num("presence_penalty", "presence_penalty", false);
  num("frequency_penalty", "frequency_penalty", false);
  num("num_beams", "num_beams", true);
  num("seed", "seed", true);
  const stops = $("stop-strings").value.split(",").map((s) => s.replace(/\\n/g, "\n")).filter((s) => s);
  if (stops.length) body.stop = stops;
  return body;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value;
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

// The tokens of a stream chunk's choice with their log-probabilities ([{token, logprob}]), or null:
// completions send {tokens, token_logprobs}, chat {content: [{token, logprob}]}.
function chunkTokens(c) {
  const lp = c.logprobs;
  if (!lp) return null;
  if (lp.content) return lp.content.map((t) => ({ token: t.token, logprob: t.logprob }));
  if (lp.tokens) return lp.tokens.map((token, i) => ({ token, logprob: lp.token_logprobs[i] }));
  return null;
}

// Append streamed text to `el`: plain text, or with tokens, a span per token coloured by its
// probability (red improbable, green probable; as `proselab explain`'s token view), p on hover.
function appendText(el, text, tokens) {
  if (!tokens || !tokens.length) { el.append(text); return; }
  const prob = (t) => (t.logprob === null ? 0 : Math.exp(t.logprob)); // null: -inf, a token ruled out
  // a chunk's text is its tokens' unless a token ends inside a character or a stop string cut it:
  // then one span for the text, coloured by its least probable token
  const parts = tokens.map((t) => t.token).join("") === text ? tokens.map((t) => [t.token, [t]]) : [[text, tokens]];
  for (const [piece, toks] of parts) {
    const p = Math.min(...toks.map(prob));
    const span = document.createElement("span");
    span.className = "tokp";
    span.textContent = piece;
    span.dataset.prob = String(p);
    span.style.background = `hsl(${(120 * p).toFixed(0)}, 75%, 78%)`;
    span.title = toks.map((t) => `${JSON.stringify(t.token)}  p = ${prob(t).toFixed(4)}`).join("\n");
    el.appendChild(span);
  }
}

// Ask for each token's log-probability when "colour by probability" is on.
function logprobsOption(chat) {
  if (!$("color-probs").checked) return {};
  return chat ? { logprobs: true } : { logprobs: 0 };
}

// POST a streaming request; call onText(text, tokens) for every piece of text (tokens: see
// chunkTokens); resolve with the finish reason.
async function streamRequest(path, body, onText) {
  controller = new AbortController();
  const res = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify({ ...body, stream: true }),
    signal: controller.signal });
  if (!res.ok) {
    let msg = res.status + " " + res.statusText;
    try { msg = (await res.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "", finish = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return finish;
        const obj = JSON.parse(data);
        if (obj.error) throw new Error(obj.error.message);
        for (const c of obj.choices || []) {
          const text = c.text !== undefined ? c.text : (c.delta && c.delta.content) || "";
          if (text) onText(text, chunkTokens(c));
          if (c.finish_reason) finish = c.finish_reason;
        }
      }
    }
  }
  return finish;
}

function busy(on, statusId) {
  $("generate").disabled = on;
  $("send").disabled = on;
  $("stop").disabled = !on;
  $("chat-stop").disabled = !on;
  $("reset").disabled = on; // the history is not to change under a reply being written
  if (on) $(statusId).textContent = "generating...";
}

async function complete() {
  const prompt = $("prompt").value;
  if (!prompt.trim() && info.seq2seq) { $("status").textContent = "type a source text first"; return; }
  const out = $("output");
  out.textContent = "";
  if (!info.seq2seq) {
    const echo = document.createElement("span");
    echo.className = "prompt-echo";
    echo.textContent = prompt;
    out.appendChild(echo);
  }
  const gen = document.createElement("span");
  gen.className = "generated";
  out.appendChild(gen);
  $("attention-box").hidden = true;
  busy(true, "status");
  const started = performance.now();
  let pieces = 0;
  try {
    const body = { prompt, ...settings(), ...logprobsOption(false) };
    const finish = await streamRequest("/v1/completions", body, (t, tokens) => {
      appendText(gen, t, tokens);
      pieces += 1;
    });
    const secs = (performance.now() - started) / 1000;
    $("status").textContent = `done (${finish || "stopped"}) in ${secs.toFixed(1)} s`;
    if (info.seq2seq) await drawAttention(prompt);
  } catch (e) {
    if (e.name === "AbortError") $("status").textContent = "stopped";
    else { $("status").textContent = ""; showError(out, e.message); }
  } finally {
    busy(false, "status");
  }
}

async function send() {
  const text = $("chat-input").value;
  if (!text.trim()) return;
  $("chat-input").value = "";
  history.push({ role: "user", content: text });
  const asked = addMessage("user", text);
  const reply = addMessage("assistant", "");
  busy(true, "chat-status");
  try {
    await streamRequest("/v1/chat/completions", { messages: history, ...settings(), ...logprobsOption(true) },
      (t, tokens) => appendText(reply, t, tokens));
    history.push({ role: "assistant", content: reply.textContent });
    $("chat-status").textContent = "";
  } catch (e) {
    if (e.name === "AbortError") {
      // stopped: what was written so far is the reply, as in other chat apps (none yet: the turn is undone)
      if (reply.textContent) history.push({ role: "assistant", content: reply.textContent });
      else { history.pop(); reply.remove(); asked.remove(); $("chat-input").value = text; }
      $("chat-status").textContent = "stopped";
    } else { history.pop(); $("chat-status").textContent = ""; showError(reply, e.message); }
  } finally {
    busy(false, "chat-status");
  }
}

async function classify() {
  const texts = $("classify-input").value.split("\n").filter((t) => t.trim());
  const out = $("classifications");
  out.textContent = "";
  if (!texts.length) { $("classify-status").textContent = "type a text first"; return; }
  const body = { input: texts };
  if (!$("zero-shot").hidden) {
    body.classes = $("classes").value.split(",").map((c) => c.trim()).filter((c) => c);
    body.template = $("template").value.replace(/\\n/g, "\n");
  }
  $("classify").disabled = true;
  $("classify-status").textContent = "classifying...";
  try {
    const res = await fetch("/v1/classify", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    const data = await res.json();
    if (!res.ok) throw new Error((data.error && data.error.message) || res.statusText);
    data.data.forEach((r, i) => out.appendChild(bars(texts[i], r)));
    $("classify-status").textContent = `${texts.length} classified`;
  } catch (e) {
    $("classify-status").textContent = "";
    showError(out, e.message);
  } finally {
    $("classify").disabled = false;
  }
}

function bars(text, result) {
  // one text, its label, and a bar per label as long as its probability
  const box = document.createElement("div");
  box.className = "classification";
  const head = document.createElement("div");
  head.className = "classified-text";
  head.textContent = text;
  box.appendChild(head);
  for (const [label, p] of Object.entries(result.probs)) {
    const row = document.createElement("div");
    row.className = "bar-row" + (label === result.label ? " top" : "");
    const name = document.createElement("span");
    name.className = "bar-label";
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "bar-track";
    const fill = document.createElement("span");
    fill.className = "bar";
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    track.appendChild(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = `${(100 * p).toFixed(1)}%`;
    row.append(name, track, value);
    box.appendChild(row);
  }
  return box;
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("messages").appendChild(div);
  return div;
}

function showError(where, message) {
  const span = document.createElement("div");
  span.className = "error";
  span.textContent = "error: " + message;
  where.appendChild(span);
}

async function drawAttention(source) {
  const body = { source };
  const max = parseInt($("max_tokens").value, 10);
  if (max > 0) body.max_tokens = max;
  const res = await fetch("/v1/attention", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!res.ok) return;
  const map = await res.json();
  const canvas = $("attention");
  const ctx = canvas.getContext("2d");
  const rows = map.tgt_tokens.length, cols = map.src_tokens.length;
  if (!rows || !cols) return;
  const left = 110, top = 90;
  const cell = Math.max(8, Math.min(28, Math.floor(560 / Math.max(rows, cols))));
  canvas.width = left + cols * cell + 10;
  canvas.height = top + rows * cell + 10;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const w = map.weights[r][c];
      const shade = Math.round(255 * (1 - w));
      ctx.fillStyle = `rgb(${shade}, ${shade}, 255)`;
      ctx.fillRect(left + c * cell, top + r * cell, cell - 1, cell - 1);
    }
  }
  ctx.fillStyle = "#1d2330";
  ctx.font = "11px system-ui, sans-serif";
  const label = (t) => JSON.stringify(t).slice(1, -1).slice(0, 14);
  ctx.textAlign = "right";
  for (let r = 0; r < rows; r++) ctx.fillText(label(map.tgt_tokens[r]), left - 4, top + r * cell + cell * 0.7);
  for (let c = 0; c < cols; c++) {
    ctx.save();
    ctx.translate(left + c * cell + cell * 0.7, top - 4);
    ctx.rotate(-Math.PI / 3);
    ctx.textAlign = "left";
    ctx.fillText(label(map.src_tokens[c]), 0, 0);
    ctx.restore();
  }
  $("attention-box").hidden = false;
}

init();
