"""Memory that follows what is done, not what is asked for: decoding buffers grow with the tokens
generated (max_new_tokens may be a billion), `data reverse` streams its files to disk, and a
config too large for the machine is refused in one line before anything is allocated."""

import resource
import subprocess
import sys
import textwrap
import tracemalloc

import pytest
from conftest import tiny_overrides

from proselab.cli import main
from proselab.config import ConfigError, ModelConfig, load_config
from proselab.config import checks
from proselab.config.checks import check_memory, model_parts
from proselab.data.pairs import write_reverse_task
from proselab.models import build_model
from proselab.training import train

# The address space a child may take: enough for torch and a tiny model, far below a buffer sized
# by max_new_tokens (4 beams x 10**9 int64 tokens = 32 GB), so sizing by it fails at once.
LIMIT = 3 << 30
GIB = 1 << 30


def _run_limited(code: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run Python ``code`` in a child process whose address space is capped at LIMIT."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], preexec_fn=cap, capture_output=True,
                          text=True, timeout=timeout)


# ---- decoding ------------------------------------------------------------------------------------

COUNTDOWN = """
    import torch
    from proselab.decoding import GenerationConfig, generate

    class Countdown:
        '''A Decoder over 4 tokens: token 2 is likely for N steps, then only eos (1) is.'''

        def start(self, prompt):
            return self._logits(torch.zeros(prompt.idx.size(0), dtype=torch.long))

        def step(self, tokens, state):
            return self._logits(state + 1)

        def reorder(self, state, index):
            return state[index]

        def _logits(self, t):
            logits = torch.full((t.size(0), 4), -20.0)
            logits[:, 2] = torch.where(t < N, 0.0, -20.0)
            logits[:, 1] = torch.where(t < N, -8.0, 0.0)
            return logits, t

    N = 300  # past the buffers' first room (64 tokens): they grow several times
    for kw in ({}, {"do_sample": True, "seed": 1}, {"num_beams": 4}, {"num_beams": 4, "do_sample": True, "seed": 1}):
        cfg = GenerationConfig(max_new_tokens=10**9, eos_token_id=1, **{"do_sample": False, **kw})
        best = generate(Countdown(), [[0, 3], [3]], cfg)
        assert [len(g.tokens) for g in best] == [N, N] and {g.finish_reason for g in best} == {"eos"}, best
    print("ok")
"""


def test_decoding_buffers_grow_with_the_tokens_not_with_max_new_tokens():
    """Greedy, sampling, beam search and beam sampling with max_new_tokens=10**9 in 3 GB of
    address space: beam search used to allocate two (B, K, 10**9) int64 buffers up front."""
    done = _run_limited(COUNTDOWN)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bounded")
    corpus = tmp / "corpus.txt"
    corpus.write_text("ROMEO: what light through yonder window breaks?\n" * 100, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROSELAB_CACHE", str(tmp / "cache"))
        train(None, tiny_overrides(corpus, tmp / "run", **{"train.max_iters": 2, "train.eval_interval": 2}))
    return tmp / "run"


@pytest.mark.parametrize("beams", ["1", "4"])
def test_cli_generate_with_a_billion_new_tokens_stays_small(tiny_run, beams):
    """The probe's command: `proselab generate RUN --max-new-tokens 1000000000` (a GPT's KV cache
    is bounded by its block_size), stopped by --max-time, within 3 GB of address space."""
    done = _run_limited(f"""
        import sys
        from proselab.cli import main
        sys.exit(main(["generate", {str(tiny_run)!r}, "--max-new-tokens", "1000000000", "--num-beams", "{beams}",
                       "--max-time", "1", "--seed", "0"]))
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.stdout) > 10


# ---- data reverse ----------------------------------------------------------------------------------

def test_reverse_task_streams_to_disk(tmp_path):
    """100,000 pairs (5 MB) used to be built in memory first (21 MB at the peak)."""
    tracemalloc.start()
    try:
        paths = write_reverse_task(tmp_path, train_size=100_000, dev_size=10, test_size=10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert paths["train"].stat().st_size > 4_000_000
    assert peak < 1_000_000, f"{peak:,} bytes at the peak"


def test_reverse_task_larger_than_the_disk_is_refused_at_once(tmp_path):
    """`data reverse OUT --train-size 10**15` grew in memory and wrote nothing; now the files'
    size is weighed against the free disk space first (one line, exit 2, nothing written)."""
    out = tmp_path / "rev"
    done = _run_limited(f"""
        import sys
        from proselab.cli import main
        sys.exit(main(["data", "reverse", {str(out)!r}, "--train-size", "1000000000000000"]))
    """, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("proselab: error: train_size=1,000,000,000,000,000 "
                                                         "(--train-size) would write about"), err
    assert "GB free in" in err and not out.exists()


# ---- model sizes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [
    {"family": "gpt"}, {"family": "gpt", "tie_weights": False, "labels": ["a", "b"]},
    {"family": "rnn"}, {"family": "rnn", "cell": "gru", "num_layers": 3, "tie_weights": False, "n_embd": 64},
    {"family": "seq2seq", "bos_id": 0}, {"family": "seq2seq", "bos_id": 0, "attention": "bahdanau",
                                         "src_vocab_size": 300},
    {"family": "seq2seq", "bos_id": 0, "bidirectional": False, "attention": "none", "cell": "rnn", "num_layers": 3},
    {"family": "seq2seq", "bos_id": 0, "arch": "transformer", "tie_weights": False, "src_vocab_size": 700},
])
def test_the_size_estimate_is_a_close_lower_bound(model):
    m = ModelConfig(vocab_size=500, **model)
    built = build_model(m)
    real = sum(p.numel() for p in built.parameters())
    if model.get("labels"):  # built with its LM head, then dropped: the peak is the full model
        real += built.config.vocab_size * built.config.n_embd
    estimate = sum(model_parts(m).values())
    assert 0.94 * real <= estimate <= real


@pytest.mark.parametrize("override, field", [
    ("model.n_layer=100000", "model.n_layer=100000 and model.n_embd=128"),
    ("model.vocab_size=1000000000000", "model.vocab_size=1000000000000 and model.n_embd=128"),
    ("model.n_embd=1000000", "model.n_layer=4 and model.n_embd=1000000"),
    ("model.block_size=100000000000", "model.block_size=100000000000 and model.n_embd=128"),
])
def test_train_refuses_a_model_too_large_for_the_machine_before_building_it(tmp_path, monkeypatch, capsys,
                                                                              override, field):
    monkeypatch.setattr(checks, "available_memory", lambda: 16 * GIB)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("ROMEO: hello\n" * 50, encoding="utf-8")
    assert main(["train", "--data", str(corpus), "--out", str(tmp_path / "run"), f"--{override}",
                 "--model.n_head=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"proselab: error: {field} make a model of at least "), err
    assert "GB of float32 weights: more than the 17.2 GB of memory available on this machine" in err
    assert not (tmp_path / "run").exists()


def test_large_real_models_still_fit(monkeypatch):
    """GPT-2 XL (1.56 billion parameters, 6.2 GB in float32) loads on a 24 GiB machine."""
    monkeypatch.setattr(checks, "available_memory", lambda: 24 * GIB)
    xl = {"model.vocab_size": 50257, "model.block_size": 1024, "model.n_layer": 48, "model.n_head": 25,
          "model.n_embd": 1600}
    cfg = load_config(None, xl)
    assert 1.5e9 < sum(model_parts(cfg.model).values()) < 1.6e9
    check_memory(cfg.model, checks.TRAINING_BYTES)  # weights, gradients and AdamW state: 24.9 GB < 25.8 GB
    with pytest.raises(ConfigError, match="float32 weights, gradients and optimizer state: more than the 8.6 GB"):
        check_memory(cfg.model, checks.TRAINING_BYTES, available=8 * GIB)



def test_training_counts_gradients_and_optimizer_state_too(monkeypatch):
    """A model whose weights fit may not with their gradients and AdamW's two moments:
    ``runs.check_fits(..., training=True)`` is the trainer's question before it builds the model."""
    from proselab.runs import check_fits

    monkeypatch.setattr(checks, "available_memory", lambda: 4 * GIB)
    m = load_config(None, {"model.vocab_size": 50257, "model.n_layer": 24, "model.n_head": 16,
                           "model.n_embd": 1024}).model  # GPT-2 medium: 354 million parameters, 1.4 GB as float32
    check_fits(m, "cpu")
    with pytest.raises(ConfigError, match="model.n_layer=24 and model.n_embd=1024 make a model of at least 0.4 "
                                          "billion parameters, 5.7 GB of float32 weights, gradients and optimizer "
                                          "state: more than the 4.3 GB of memory available on this machine"):
        check_fits(m, "cpu", training=True)
