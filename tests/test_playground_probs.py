"""The playground's "colour by probability" toggle, in headless Chromium: on, each streamed token
is a span coloured by its probability, whose title and data-prob are exp(logprob) of the API's
own answer; off, plain text as before. The server and browser fixtures are test_server's."""

import math

import pytest

from test_server import KEY, client, gpt_run, served  # noqa: F401  (fixtures)

PROMPT, N = "ROMEO:", 40


def _green_minus_red(css: str) -> int:
    r, g, _ = (int(x) for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return g - r


def _generate(page, colour: bool) -> None:
    page.fill("#api-key", KEY)
    page.fill("#prompt", PROMPT)
    page.fill("#temperature", "0")
    page.fill("#max_tokens", str(N))
    if colour != page.is_checked("#color-probs"):
        page.click("#color-probs")
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=30_000)


def test_streamed_tokens_are_coloured_by_the_apis_probabilities_when_the_toggle_is_on(served, browser):  # noqa: F811
    answer = client(served).completions.create(model="tiny", prompt=PROMPT, max_tokens=N, temperature=0, logprobs=0)
    tokens, logprobs = answer.choices[0].logprobs.tokens, answer.choices[0].logprobs.token_logprobs
    assert len(tokens) == N and "".join(tokens) == answer.choices[0].text

    page = browser.new_page()
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(served.url)
    assert page.is_visible("#color-probs") and not page.is_checked("#color-probs")
    _generate(page, colour=True)
    spans = page.eval_on_selector_all("#output .generated .tokp", "els => els.map(e => "
                                      "[e.textContent, +e.dataset.prob, e.title, getComputedStyle(e).backgroundColor])")
    assert [s[0] for s in spans] == tokens  # a span per token: this tiny BPE's tokens are whole characters
    for (text, prob, title, colour), lp in zip(spans, logprobs):
        assert prob == pytest.approx(math.exp(lp), rel=1e-6)
        assert title.endswith(f"p = {math.exp(lp):.4f}") and colour != "rgba(0, 0, 0, 0)"
    # red for improbable, green for probable: green minus red rises with the probability
    greenness = [(p, _green_minus_red(c)) for _, p, _, c in sorted(spans, key=lambda s: s[1])]
    assert all(a[1] <= b[1] for a, b in zip(greenness, greenness[1:])) and greenness[0][1] < 0
    assert page.text_content("#output .generated") == answer.choices[0].text

    _generate(page, colour=False)  # off: plain text, as before the toggle
    assert page.eval_on_selector_all("#output .generated *", "els => els.length") == 0
    assert page.text_content("#output .generated") == answer.choices[0].text
    page.close()
    assert problems == []


def test_chat_replies_are_coloured_too(tmp_path, browser):  # noqa: F811
    import proselab
    from proselab.server import create_app
    from test_cli_idioms import train_chat_run
    from test_server import Server

    gen = proselab.load(train_chat_run(tmp_path))
    messages = [{"role": "user", "content": "say red 1"}]
    with Server(create_app(gen)) as server:
        model = client(server).models.list().data[0].id
        answer = client(server).chat.completions.create(model=model, messages=messages, max_tokens=10, temperature=0,
                                                        logprobs=True)
        content = answer.choices[0].logprobs.content
        page = browser.new_page()
        page.goto(server.url)
        page.fill("#temperature", "0")
        page.fill("#max_tokens", "10")
        page.click("#color-probs")
        page.fill("#chat-input", "say red 1")
        page.press("#chat-input", "Enter")
        page.wait_for_function("!document.getElementById('send').disabled && "
                               "document.querySelectorAll('#messages .assistant').length == 1", timeout=30_000)
        spans = page.eval_on_selector_all("#messages .assistant .tokp", "els => els.map(e => +e.dataset.prob)")
        assert "".join(page.eval_on_selector_all("#messages .assistant .tokp", "els => els.map(e => e.textContent)")) \
            == answer.choices[0].message.content
        # a span per token, or per chunk of tokens ending inside a character (its least probable token's p)
        assert spans and all(any(p == pytest.approx(math.exp(t.logprob), rel=1e-6) for t in content) for p in spans)
        page.close()
