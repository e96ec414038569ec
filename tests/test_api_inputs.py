"""The Python API's inputs as transformers users write them (token ids), and one clear
ValueError for what it cannot take."""

import pytest
from conftest import tiny_overrides

import proselab
from proselab.training import train


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    corpus = tmp / "corpus.txt"
    corpus.write_text("ROMEO: what light through yonder window breaks?\n" * 200, encoding="utf-8")
    train(None, tiny_overrides(corpus, tmp / "run", **{"train.max_iters": 5}))
    return proselab.load(tmp / "run")


def test_token_id_prompts_give_what_their_text_gives(gen):
    ids = gen.encode_prompt("ROMEO:")
    text = gen.generate("ROMEO:", do_sample=False, max_new_tokens=8)
    assert gen.generate(ids, do_sample=False, max_new_tokens=8) == text
    assert gen.generate([ids, gen.encode_prompt("what")], do_sample=False, max_new_tokens=8)[0] == text
    assert gen.complete(tuple(ids), do_sample=False, max_new_tokens=8)[0].text == text


@pytest.mark.parametrize("prompt, match", [
    ([10_000], "outside this model's vocabulary"),
    ([[1, 2], []], "prompt 1 is neither text nor a non-empty list of token ids"),
    ([1.5, 2], "prompt 0 is neither text"),
    (None, "prompt must be text, a list of texts, or token ids"),
    (42, "got int"),
    ([], "empty list"),
])
def test_prompts_it_cannot_read_are_a_value_error_naming_the_prompt(gen, prompt, match):
    with pytest.raises(ValueError, match=match):
        gen.generate(prompt, max_new_tokens=2)


@pytest.mark.parametrize("call, match", [
    (lambda run: proselab.load(None), "run_dir must be the path of a run directory"),
    (lambda run: proselab.load(run, device="tpu"), "device must be auto, cpu, cuda, cuda:N or mps; got 'tpu'"),
    (lambda run: proselab.train(123), "config must be a preset name.*got int"),
    (lambda run: proselab.train(None, "train.lr=1"), "overrides must be a dict or a list; got str"),
    (lambda run: proselab.load(run).generate("R", do_sample="no"), "do_sample must be true or false"),
])
def test_arguments_of_the_wrong_kind_are_a_value_error_naming_them(gen, call, match):
    with pytest.raises(ValueError, match=match):
        call(gen.run_dir)
