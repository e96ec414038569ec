"""POST /v1/classify: a classifier's labels, zero-shot with a language model, requests batched
together, OpenAI-style errors; and the playground's bars in a real browser."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_classify import _overrides, _reviews
from test_server import KEY, Server, gpt_run, post  # noqa: F401 (fixtures)

import proselab
from proselab.server import create_app
from proselab.training import train


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("classifier")
    train(None, _overrides(_reviews(tmp / "reviews.csv"), tmp / "cls"))
    return tmp / "cls"


@pytest.fixture(scope="module")
def served_classifier(classifier_run):
    gen = proselab.load(classifier_run)
    app = create_app(gen, api_key=KEY)
    with Server(app) as server:
        server.gen, server.app = gen, app
        yield server


def test_classify_returns_each_texts_label_and_probabilities(served_classifier):
    texts = ["the film was superb", "the plot was boring", "an okay story"]
    status, body = post(served_classifier, "/v1/classify", {"input": texts})
    out = json.loads(body)
    expected = served_classifier.gen.classify(texts)
    assert status == 200 and out["object"] == "list" and out["model"] == "cls"
    assert [d["index"] for d in out["data"]] == [0, 1, 2] and [d["label"] for d in out["data"]] == [
        e.label for e in expected]
    assert all(d["probs"] == pytest.approx(e.probs, abs=1e-5) for d, e in zip(out["data"], expected))
    assert out["usage"]["prompt_tokens"] == sum(len(served_classifier.gen.tokenizer.encode(t)) for t in texts)
    status, body = post(served_classifier, "/v1/classify", {"input": "the film was superb"})
    assert json.loads(body)["data"][0]["label"] == expected[0].label


def test_concurrent_requests_are_classified_together(served_classifier):
    engine, gen = served_classifier.app.state.engine, served_classifier.gen
    calls = []
    real = gen.classify
    gen.classify = lambda texts, **kw: (calls.append(len(texts)), real(texts, **kw))[1]
    release = threading.Event()
    try:
        engine.call(release.wait)  # the engine thread is busy: requests queue up behind it
        bodies = [{"input": [f"the story was superb {i}", "the plot was boring"]} for i in range(5)]
        with ThreadPoolExecutor(5) as pool:
            futures = [pool.submit(post, served_classifier, "/v1/classify", b) for b in bodies]
            while sum(1 for _ in served_classifier.app.state.server.classifier._pending) < 5:
                threading.Event().wait(0.01)
            release.set()
            results = [json.loads(f.result()[1]) for f in futures]
    finally:
        release.set()
        del gen.classify
    assert calls == [10]  # five requests, one forward pass
    assert all([d["label"] for d in r["data"]] == [c.label for c in real(b["input"])] for r, b in zip(results, bodies))


def test_errors_have_openais_shape(served_classifier, gpt_run):  # noqa: F811
    status, body = post(served_classifier, "/v1/classify", {"input": ["fine", "  "]})
    err = json.loads(body)["error"]
    assert status == 400 and err["param"] == "input" and "text 1 is empty" in err["message"]
    status, body = post(served_classifier, "/v1/classify", {"input": []})
    assert status == 400 and "1 to 2048 texts" in json.loads(body)["error"]["message"]
    status, body = post(served_classifier, "/v1/completions", {"prompt": "the", "max_tokens": 3})
    assert status == 400 and "this run is a classifier" in json.loads(body)["error"]["message"]
    status, body = post(served_classifier, "/v1/classify", {"input": "x"}, key="wrong")
    assert status == 401
    lm = proselab.load(gpt_run)
    with Server(create_app(lm)) as server:
        status, body = post(server, "/v1/classify", {"input": "ROMEO:"})
        assert status == 400 and json.loads(body)["error"]["param"] == "classes"
        zero_shot = {"input": ["ROMEO:", "JULIET:"], "classes": ["love", "war"], "template": "{text} my"}
        status, body = post(server, "/v1/classify", zero_shot)
        expected = lm.classify(["ROMEO:", "JULIET:"], classes=["love", "war"], template="{text} my")
        assert status == 200 and [d["probs"] for d in json.loads(body)["data"]] == [
            pytest.approx(e.probs, abs=1e-5) for e in expected]


def test_the_playground_draws_a_classifiers_bars(served_classifier, browser):  # noqa: F811
    page = browser.new_page()
    page.goto(served_classifier.url)
    assert page.is_hidden("#mode-complete") and page.is_visible("#classify-pane") and page.is_hidden("#zero-shot")
    page.fill("#api-key", KEY)
    page.fill("#classify-input", "the film was superb\n\nthe plot was boring")
    page.click("#classify")
    page.wait_for_function("document.querySelectorAll('.classification').length == 2", timeout=30_000)
    expected = served_classifier.gen.classify(["the film was superb", "the plot was boring"])
    tops = page.eval_on_selector_all(".bar-row.top .bar-label", "els => els.map(e => e.textContent)")
    assert tops == [e.label for e in expected] and len(page.query_selector_all(".bar-row")) == 6
    width = page.eval_on_selector(".bar-row.top .bar", "e => e.style.width")
    assert width == f"{100 * expected[0].probs[expected[0].label]:.1f}%"
    page.close()
