"""What a new user types in the first hour, from habits other tools taught: temperature 0 for
greedy, transformers' max_length, misspelled flags (--top_p), and a chat that Ctrl-C and
/help behave in as they do elsewhere."""

import json

import pytest

import proselab
from conftest import shakespeare_text, tiny_overrides
from proselab.api import Generator
from proselab.cli import build_parser, cmd_chat, main
from proselab.config import ConfigError, GenerationConfig, load_config
from proselab.decoding import generate
from proselab.server.jobs import Job
from proselab.training import train


@pytest.fixture(scope="module")
def isolated(tmp_path_factory):
    """A module's own PROSELAB_CACHE (conftest's is per test; these runs are made once a module)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROSELAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def lm_run(isolated):
    """A char GPT whose config says generation.temperature=0: greedy by default."""
    corpus = isolated / "corpus.txt"
    corpus.write_text(shakespeare_text(20_000), encoding="utf-8")
    train(None, tiny_overrides(corpus, isolated / "lm", **{"train.max_iters": 2, "generation.temperature": 0}))
    return isolated / "lm"


def train_chat_run(tmp, iters: int = 2):
    """A tiny char GPT fine-tuned (for ``iters`` steps) on ChatML conversations: a chat run."""
    data = tmp / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"say {w} {i}"}, {"role": "assistant", "content": f"{w} {i}"}]}
            for i in range(10) for w in ("red", "green", "blue", "gold", "gray", "pink")]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    train(None, tiny_overrides(data, tmp / "chat", **{"model.block_size": 64, "train.max_iters": iters}))
    return tmp / "chat"


@pytest.fixture(scope="module")
def chat_run(isolated):
    return train_chat_run(isolated)


@pytest.fixture(scope="module")
def s2s_run(isolated):
    from test_seq2seq import s2s_overrides

    (isolated / "s2s").mkdir()
    train(None, s2s_overrides(isolated / "s2s", **{"model.arch": "rnn", "train.max_iters": 2}))
    return isolated / "s2s" / "run"


# ---- temperature 0 is greedy ----------------------------------------------------------------------

def test_temperature_zero_is_greedy_in_the_api_the_engine_and_the_server_jobs(lm_run):
    gen = proselab.load(lm_run)
    greedy = gen.complete("ROMEO:", do_sample=False, max_new_tokens=12)[0]
    for seed in (1, 2):  # no randomness left
        assert gen.complete("ROMEO:", temperature=0, do_sample=True, max_new_tokens=12, seed=seed)[0].tokens == \
            greedy.tokens
    assert gen.generate("ROMEO:", max_new_tokens=12) == greedy.text  # the run's config says temperature 0
    assert "".join(d.text for d in gen.stream("ROMEO:", temperature=0, max_new_tokens=12)) == greedy.text
    beams = gen.complete("ROMEO:", num_beams=3, do_sample=False, max_new_tokens=8)[0]
    assert gen.complete("ROMEO:", num_beams=3, temperature=0, max_new_tokens=8)[0].tokens == beams.tokens
    # the engine on token ids, and the server's jobs
    cfg = GenerationConfig(temperature=0, max_new_tokens=12)
    ids = gen.encode_prompt("ROMEO:")
    assert generate(gen.model, [ids], cfg, tokenizer=gen.tokenizer, suppress_ids=gen.suppress_ids)[0].tokens == \
        greedy.tokens
    assert Job(ids, cfg, emit=lambda event: None).cfg.do_sample is False
    # a run saved with temperature 0 samples again when given a temperature
    sampled = {tuple(gen.complete("ROMEO:", temperature=1.0, top_k=0, max_new_tokens=12, seed=s)[0].tokens)
               for s in range(3)}
    assert len(sampled) > 1


def test_temperature_zero_in_configs_and_the_cli_and_negative_is_an_error(lm_run, capsys):
    assert load_config(overrides=["generation.temperature=0"]).generation.temperature == 0
    with pytest.raises(ConfigError, match=r"generation.temperature must be >= 0 \(0 = greedy decoding\)"):
        load_config(overrides=["generation.temperature=-0.5"])
    with pytest.raises(ConfigError, match="temperature"):
        proselab.load(lm_run).generate("ROMEO:", temperature=-1)
    greedy = proselab.load(lm_run).complete("ROMEO:", do_sample=False, max_new_tokens=12)[0]
    assert main(["generate", str(lm_run), "--prompt", "ROMEO:", "--temperature", "0", "--do-sample",
                 "--max-new-tokens", "12", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["completions"][0]["tokens"] == greedy.tokens
    assert main(["generate", str(lm_run), "--temperature", "-1"]) == 2
    assert "generation.temperature must be >= 0" in capsys.readouterr().err


# ---- max_length ---------------------------------------------------------------------------------

def test_max_length_counts_the_prompt_as_transformers_does(lm_run, tmp_path):
    import torch
    import transformers

    from proselab.runs import export_hf

    gen = proselab.load(lm_run)
    n = len(gen.encode_prompt("ROMEO:"))
    same = gen.complete("ROMEO:", max_new_tokens=5, do_sample=False)[0]
    got = gen.complete("ROMEO:", max_length=n + 5, do_sample=False)[0]
    assert got.tokens == same.tokens and len(got.tokens) == 5
    assert "".join(d.text for d in gen.stream("ROMEO:", max_length=n + 5, do_sample=False)) == same.text
    export_hf(lm_run, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    idx = torch.tensor([gen.encode_prompt("ROMEO:")])
    ref = hf.generate(idx, attention_mask=torch.ones_like(idx), max_length=n + 5, max_new_tokens=None,  # not the
                      do_sample=False, pad_token_id=0)  # exported default's max_new_tokens, which would win
    assert ref[0, n:].tolist() == got.tokens
    # a batch: the longest prompt counts, as transformers' padding makes it
    longest = len(gen.encode_prompt("First Citizen:"))
    batch = gen.complete(["ROMEO:", "First Citizen:"], max_length=longest + 4, do_sample=False)
    assert [g.tokens for g in batch] == [g.tokens for g in gen.complete(["ROMEO:", "First Citizen:"],
                                                                        max_new_tokens=4, do_sample=False)]


def test_max_length_mistakes_name_max_new_tokens(lm_run, chat_run):
    gen = proselab.load(lm_run)
    n = len(gen.encode_prompt("ROMEO:"))
    with pytest.raises(ValueError, match=rf"max_length must be an integer > {n}: it counts the prompt's {n} tokens"
                                         r".*max_new_tokens"):
        gen.generate("ROMEO:", max_length=n)
    with pytest.raises(ValueError, match="give max_new_tokens .* or max_length .*, not both"):
        gen.generate("ROMEO:", max_length=20, max_new_tokens=3)
    with pytest.raises(ValueError, match="give max_new_tokens, the reply's length"):
        proselab.load(chat_run).chat([{"role": "user", "content": "hi"}], max_length=50)


def test_max_length_for_seq2seq_counts_the_start_token(s2s_run):
    gen = proselab.load(s2s_run)
    got = gen.complete("a b c", max_length=5, do_sample=False)[0]
    assert got.tokens == gen.complete("a b c", max_new_tokens=4, do_sample=False)[0].tokens
    assert gen.attention("a b c", max_length=5).text == got.text


def test_cli_max_length(lm_run, capsys):
    n = len(proselab.load(lm_run).encode_prompt("ROMEO:"))
    assert main(["generate", str(lm_run), "--prompt", "ROMEO:", "--max-length", str(n + 7), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["completions"][0]["tokens"]) == 7
    assert main(["generate", str(lm_run), "--prompt", "ROMEO:", "--max-length", str(n + 7), "--no-stream"]) == 0
    assert len(capsys.readouterr().out) == n + 7 + 1  # char-level: the prompt, 7 new characters, a newline
    assert main(["generate", str(lm_run), "--max-length", "40", "--max-new-tokens", "3"]) == 2
    assert "not both" in capsys.readouterr().err


# ---- did you mean ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, hint", [
    (["generate", "RUN", "--top_p", "0.9"], "--top-p"),
    (["generate", "RUN", "--temprature", "0.5"], "--temperature"),
    (["generate", "RUN", "--max_new_tokens=5"], "--max-new-tokens"),
    (["generate", "RUN", "--max_tokens", "5"], "--max-new-tokens"),  # OpenAI's name
    (["chat", "RUN", "--max-length", "50"], "--max-new-tokens"),  # transformers' name, where it does not apply
    (["chat", "RUN", "--sytem", "Be brief."], "--system"),
    (["serve", "RUN", "--max_batch", "4"], "--max-batch"),
    (["eval", "RUN", "--batch_size", "8"], "--batch-size"),
    (["classify", "RUN", "--txt", "hi"], "--text"),
    (["attention", "RUN", "--src", "a", "--num_beams", "2"], "--num-beams"),
    (["export", "RUN", "OUT", "--forse"], None),
    (["data", "reverse", "OUT", "--train_size", "5"], "--train-size"),
    (["train", "--ouy", "runs/x"], "--out"),
    (["train", "--max_iters", "10"], "--train.max_iters"),  # a config key, by its field name
    (["demo", "--max_iters", "3"], "--max-iters"),
])
def test_a_misspelled_flag_names_the_closest_option(argv, hint, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("proselab: error: unrecognized argument"), err
    assert (f"did you mean '{hint}'?" in err[0]) if hint else ("--help lists the options" in err[0]), err[0]


# ---- proselab chat: Ctrl-C, /help, unknown commands --------------------------------------------

def _recorded(monkeypatch, interrupt_after=None):
    """Generator.chat_stream recording each call's messages; with ``interrupt_after``, Ctrl-C
    (KeyboardInterrupt) arrives in the first reply after that many pieces of text, as the
    signal does while the model computes."""
    real, calls = Generator.chat_stream, []

    def chat_stream(self, messages, **overrides):
        calls.append([dict(m) for m in messages])
        for i, delta in enumerate(real(self, messages, **overrides)):
            if len(calls) == 1 and i == interrupt_after:
                raise KeyboardInterrupt
            yield delta

    monkeypatch.setattr(Generator, "chat_stream", chat_stream)
    return calls


def _chat(run, lines, *flags):
    lines = iter(lines)

    def read(prompt):
        line = next(lines)
        if isinstance(line, BaseException):
            raise line
        return line

    args = build_parser().parse_args(["chat", str(run), "--temperature", "0", "--max-new-tokens", "10", *flags])
    return cmd_chat(args, [], read=read)


def test_ctrl_c_stops_a_reply_keeps_it_and_the_chat_goes_on(chat_run, monkeypatch, capsys):
    gen = proselab.load(chat_run)
    full = gen.chat([{"role": "user", "content": "say red 1"}], do_sample=False, max_new_tokens=10).text
    calls = _recorded(monkeypatch, interrupt_after=3)
    assert _chat(chat_run, ["say red 1", "say blue 2", "/quit"]) == 0
    out, err = capsys.readouterr()
    partial = calls[1][1]["content"]
    assert 0 < len(partial) < len(full) and full.startswith(partial)
    assert calls[1] == [{"role": "user", "content": "say red 1"}, {"role": "assistant", "content": partial},
                        {"role": "user", "content": "say blue 2"}]
    second = gen.chat(calls[1], do_sample=False, max_new_tokens=10).text  # temperature 0: greedy
    assert out == partial + "\n" + second + "\n"
    assert "(reply stopped)" in err


def test_ctrl_c_before_any_text_drops_the_message_and_at_the_prompt_leaves(chat_run, monkeypatch, capsys):
    calls = _recorded(monkeypatch, interrupt_after=0)
    assert _chat(chat_run, ["say red 1", "say blue 2", KeyboardInterrupt()]) == 0
    assert calls[1] == [{"role": "user", "content": "say blue 2"}]
    assert _chat(chat_run, [EOFError()]) == 0  # Ctrl-D


def test_help_and_unknown_commands_are_not_sent_to_the_model(chat_run, monkeypatch, capsys):
    calls = _recorded(monkeypatch)
    assert _chat(chat_run, ["/help", "/tmperature 0", "/", "//etc is a directory", "/reset", "/HELP", "/exit"],
                 "--system", "Be brief.") == 0
    out, err = capsys.readouterr()
    assert calls == [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "/etc is a directory"}]]
    assert err.count("/reset") >= 2 and "/quit, /exit" in err and "Ctrl-C during a reply stops it" in err
    assert "unknown command /tmperature (not sent)" in err and "unknown command / (not sent)" in err
    assert "conversation reset" in err
    assert out == proselab.load(chat_run).chat(calls[0], do_sample=False, max_new_tokens=10).text + "\n"  # one reply
