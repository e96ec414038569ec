import json
import math
import subprocess
import sys

import pytest

from conftest import tiny_overrides


def cli(*args, check=True, **kwargs):
    proc = subprocess.run([sys.executable, "-m", "proselab", *map(str, args)], capture_output=True, text=True,
                          timeout=300, **kwargs)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _flags(corpus, out, **extra):
    return [f"--{k}={v}" for k, v in tiny_overrides(corpus, out, **extra).items()]


def test_demo_trains_and_prints_samples(corpus, tmp_path):
    """`proselab demo`, the README's first command, on a tiny model and a local corpus."""
    out = tmp_path / "demo"
    flags = [f for f in _flags(corpus, out) if not f.startswith("--train.out_dir=")]
    p = cli("demo", "--out", out, "--max-iters", 3, *flags)
    assert "trained 3 steps" in p.stdout and p.stdout.count("=" * 60) == 4 and "ROMEO:" in p.stdout
    assert (out / "model.safetensors").is_file() and (out / "loss.png").is_file()


@pytest.fixture
def run_dir(corpus, tmp_path):
    out = tmp_path / "run"
    cli("train", *_flags(corpus, out, **{"train.max_iters": 30, "train.lr": 3e-3}))
    return out


def test_train_generate_eval_end_to_end(run_dir, corpus):
    p = cli("generate", run_dir, "--prompt", "ROMEO:", "--max-new-tokens", 40, "--seed", 1, "--num-samples", 2,
            "--json")
    out = json.loads(p.stdout)
    assert len(out["completions"]) == 2
    for c in out["completions"]:
        assert len(c["tokens"]) == len(c["text"]) == 40 and c["finish_reason"] == "length"
        assert len(c["token_logprobs"]) == 40 and c["score"] == pytest.approx(sum(c["token_logprobs"]))
    p2 = cli("generate", run_dir, "--prompt", "ROMEO:", "--max-new-tokens", 40, "--seed", 1, "--num-samples", 2,
             "--json")
    assert json.loads(p2.stdout) == out  # seeded: reproducible
    p = cli("generate", run_dir, "--greedy", "--max-new-tokens", 10, "--json")
    greedy = json.loads(p.stdout)["completions"][0]
    assert len(greedy["text"]) == 10
    p = cli("generate", run_dir, "--greedy", "--max-new-tokens", 10, "--top-k", 5, "--temperature", 0.5, "--json")
    assert json.loads(p.stdout)["completions"][0] == greedy  # sampling knobs do not touch greedy
    p = cli("generate", run_dir, "--max-new-tokens", 10, "--num-beams", 3, "--num-samples", 2, "--length-penalty",
            0.5, "--json")
    beams = json.loads(p.stdout)["completions"]
    assert len(beams) == 2 and beams[0]["score"] >= beams[1]["score"] and beams[0]["text"] != beams[1]["text"]
    stop = greedy["text"][2:4]
    p = cli("generate", run_dir, "--greedy", "--max-new-tokens", 10, "--stop", stop, "--json")
    stopped = json.loads(p.stdout)["completions"][0]
    assert stopped["text"] == greedy["text"][: greedy["text"].index(stop)] and stopped["finish_reason"] == "stop"
    p = cli("generate", run_dir, "--max-new-tokens", 5, "--top-k", 3, "--temperature", "inf", "--json")
    scores = json.loads(p.stdout, parse_constant=lambda word: pytest.fail(f"--json printed {word}"))
    assert scores["completions"][0]["score"] is None or math.isfinite(scores["completions"][0]["score"])
    p = cli("generate", run_dir, "--prompt", "ROMEO:", "--max-new-tokens", 10, "--num-samples", 2)
    assert p.stdout.startswith("ROMEO:") and "-" * 40 in p.stdout
    p = cli("generate", run_dir, "--prompt", "ROMEO:", "--greedy", "--max-new-tokens", 10, "--stream")
    assert p.stdout == "ROMEO:" + greedy_from("ROMEO:", run_dir) + "\n"
    p = cli("generate", run_dir, "--prompt", "ROMEO:", "--greedy", "--max-new-tokens", 10, "--dtype", "bfloat16",
            "--json")
    import proselab

    in_bf16 = proselab.load(run_dir, dtype="bfloat16").complete("ROMEO:", do_sample=False, max_new_tokens=10)[0]
    assert json.loads(p.stdout)["completions"][0]["tokens"] == in_bf16.tokens
    p = cli("generate", run_dir, "--dtype", "float64", check=False)
    assert p.returncode == 2 and "invalid choice: 'float64'" in p.stderr
    p = cli("eval", run_dir, "--data", corpus, "--json")
    res = json.loads(p.stdout)
    assert res["perplexity"] == pytest.approx(2.718281828 ** res["loss"], rel=1e-6)
    assert res["tokens"] == res["chars"]  # char-level
    assert 0 < res["bits_per_char"] < 8
    p = cli("eval", run_dir, "--data", corpus)
    assert "perplexity" in p.stdout and "bits per char" in p.stdout


def greedy_from(prompt, run_dir):
    p = cli("generate", run_dir, "--prompt", prompt, "--greedy", "--max-new-tokens", 10, "--json")
    return json.loads(p.stdout)["completions"][0]["text"]


def test_unknown_prompt_characters_are_reported(run_dir):
    p = cli("generate", run_dir, "--prompt", "ROMEO§☺:", "--max-new-tokens", 5)
    assert "warning" in p.stderr and "☺" in p.stderr and "§" in p.stderr
    assert p.stdout.startswith("ROMEO")


def test_resume_from_the_cli(run_dir):
    p = cli("train", "--resume", run_dir, "--train.max_iters=35")
    assert "trained 35 steps" in p.stdout


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("proselab: error:"), proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_bad_input_is_one_line_and_status_2(corpus, tmp_path):
    _one_line_error(cli("train", "--train.lrr=1", check=False), "train.lr")
    _one_line_error(cli("train", "--train.lr=-1", check=False), "train.lr")
    _one_line_error(cli("train", "--model.n_embd=100", "--model.n_head=3", check=False), "divisible")
    _one_line_error(cli("train", "--data", tmp_path / "missing.txt", check=False), "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    _one_line_error(cli("train", "--data", empty, "--out", tmp_path / "r", check=False), "empty")
    short = tmp_path / "short.txt"
    short.write_text("a tiny corpus")
    _one_line_error(cli("train", *_flags(short, tmp_path / "r2"), check=False), "block")
    _one_line_error(cli("generate", tmp_path, check=False), "not a proselab run")
    _one_line_error(cli("generate", tmp_path / "nope", check=False), "does not exist")
    _one_line_error(cli("eval", tmp_path, "--data", corpus, check=False), "not a proselab run")
    _one_line_error(cli("train", "no-such-preset", check=False), "preset")
    _one_line_error(cli("train", "--resume", tmp_path / "nope", check=False), "does not exist")


def test_bad_generation_values(run_dir):
    _one_line_error(cli("generate", run_dir, "--temperature", -1, check=False), "temperature")
    _one_line_error(cli("generate", run_dir, "--prompt", "", check=False), "prompt")
    _one_line_error(cli("generate", run_dir, "--top-p", 1.5, check=False), "top_p")
    _one_line_error(cli("generate", run_dir, "--num-beams", 2, "--num-samples", 3, "--greedy", check=False),
                    "num_return_sequences")


def test_data_list():
    p = cli("data", "list")
    assert "shakespeare" in p.stdout and "tinyshakespeare" in p.stdout


def test_help_lists_commands():
    p = cli("--help")
    for c in ["train", "generate", "eval", "demo", "data"]:
        assert c in p.stdout


@pytest.mark.parametrize("argv, words", [
    (["serve", "--port", "99999"], "--port must be a TCP port, 1-65535"),
    (["serve", "--port", "BUSY"], "cannot listen on 127.0.0.1:"),
    (["serve", "--max-tokens", "-1"], "--max-tokens must be >= 1"),
    (["serve", "--max-prompt-tokens", "0"], "--max-prompt-tokens must be >= 1"),
    (["generate", "--eos-token-id", "999999", "--max-new-tokens", "3"], "eos_token_id=999999 is not a token"),
    (["generate", "--logit-bias", "999999=1", "--max-new-tokens", "3"], "logit_bias names token 999999, which is not"),
    (["generate", "--logit-bias", "5=x"], "--logit-bias must map token ids to numbers, got '5': 'x'"),
    (["generate", "--logit-bias", "5=-101"], "logit_bias must map token ids >= 0 to biases in [-100, 100]"),
    (["generate", "--presence-penalty", "2.5"], "presence_penalty must be in [-2, 2]"),
])
def test_limits_and_ports_that_cannot_work_are_one_line_errors(run_dir, capsys, argv, words):
    import socket

    from proselab.cli import main

    with socket.socket() as held:  # a port another server holds
        held.bind(("127.0.0.1", 0))
        held.listen()
        argv = [argv[0], str(run_dir), *(str(held.getsockname()[1]) if a == "BUSY" else a for a in argv[1:])]
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


def test_logit_bias_from_the_command_line_bans_a_token(run_dir, capsys):
    from proselab.cli import main

    def tokens(*flags):
        assert main(["generate", str(run_dir), "--prompt", "The", "--greedy", "--max-new-tokens", "8", "--json",
                     *flags]) == 0
        return json.loads(capsys.readouterr().out)["completions"][0]["tokens"]

    first = tokens()[0]
    assert first not in tokens("--logit-bias", f"{first}=-100", "--logit-bias", "0=0.5")


def test_a_batch_size_below_one_is_refused_by_the_parser(run_dir, capsys):
    from proselab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["eval", str(run_dir), "--data", str(run_dir / "config.json"), "--batch-size", "0"])
    assert e.value.code == 2 and "--batch-size: must be >= 1, got 0" in capsys.readouterr().err
