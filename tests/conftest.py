import os
from pathlib import Path

import pytest

# No test reaches the Hugging Face Hub: a model id is looked up in the cache alone (set before
# huggingface_hub reads it at import; tests/test_hub.py lays out the caches it reads).
os.environ["HF_HUB_OFFLINE"] = "1"

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_SHAKESPEARE = SHARED / "tinyshakespeare" / "input.txt"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own PROSELAB_CACHE so nothing touches ~/.cache or leaks between tests."""
    monkeypatch.setenv("PROSELAB_CACHE", str(tmp_path_factory.mktemp("cache")))


def shakespeare_text(n_chars: int = 40_000) -> str:
    """The first ``n_chars`` of tiny-shakespeare, or a deterministic stand-in where it is absent."""
    if TINY_SHAKESPEARE.is_file():
        return TINY_SHAKESPEARE.read_text(encoding="utf-8")[:n_chars]
    import random

    rng = random.Random(0)
    words = "the king my lord good sir what shall we do now thou art here love night day".split()
    lines = []
    while sum(map(len, lines)) < n_chars:
        lines.append(rng.choice(["KING", "ROMEO", "JULIET"]) + ":\n" + " ".join(rng.choices(words, k=9)) + ".\n")
    return "\n".join(lines)[:n_chars]


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (Debian's, driven by Playwright) for the pages and the playground."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("no chromium here (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def train_spm(texts, vocab_size: int, **ids) -> bytes:
    """A small sentencepiece model trained on ``texts`` (``ids``: pad_id, eos_id, ...), as bytes."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size,
                                   minloglevel=2, **ids)
    return buf.getvalue()


def write_marian_tokenizer(d: Path, src_texts, tgt_texts, vocab_size: int) -> int:
    """Marian's tokenizer files in ``d``: one sentencepiece model per side (Marian's ids: </s>=0,
    <unk>=1), vocab.json their union + <pad>, and the tokenizer class; returns the vocabulary size."""
    import json

    import sentencepiece as spm

    marian_ids = dict(eos_id=0, unk_id=1, bos_id=-1, pad_id=-1)
    (d / "source.spm").write_bytes(train_spm(src_texts, vocab_size, **marian_ids))
    (d / "target.spm").write_bytes(train_spm(tgt_texts, vocab_size, **marian_ids))
    vocab = {}
    for name in ("source.spm", "target.spm"):
        p = spm.SentencePieceProcessor(model_file=str(d / name))
        for i in range(p.get_piece_size()):
            vocab.setdefault(p.id_to_piece(i), len(vocab))
    vocab["<pad>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MarianTokenizer"}))
    return len(vocab)


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(shakespeare_text(), encoding="utf-8")
    return path


def tiny_overrides(corpus: Path, out: Path, family: str = "gpt", **extra) -> dict:
    """A model and schedule small enough to train in about a second on a CPU."""
    o = {
        "data.dataset": str(corpus),
        "train.out_dir": str(out),
        "model.family": family,
        "model.block_size": 32,
        "model.n_embd": 32,
        # only the size fields the family reads: a field it ignores is a warning
        **({"model.hidden_size": 32, "model.num_layers": 1} if family == "rnn" else {"model.n_layer": 2, "model.n_head": 2}),
        "train.batch_size": 4,
        "train.max_iters": 20,
        "train.warmup_iters": 2,
        "train.eval_interval": 10,
        "train.eval_iters": 2,
        "train.log_interval": 1,
        "train.progress": False,
        "train.dtype": "float32",
        "train.device": "cpu",
    }
    o.update(extra)
    return o


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def assert_decodes_as_transformers(model, hf, idx) -> None:
    """A causal LM imported from ``hf`` gives its logits (fp32, 1e-4) and, on prompts ``idx``
    (B, T), the tokens of its greedy search and of a beam search (4 beams, 2 returned, length
    penalty 0.7)."""
    import torch

    from proselab.config import GenerationConfig
    from proselab.decoding import generate

    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, atol=1e-4, rtol=0)
    ones, T = torch.ones_like(idx), idx.size(1)
    ref = hf.generate(idx, attention_mask=ones, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
    greedy = generate(model, idx, GenerationConfig(do_sample=False, max_new_tokens=20))
    assert [g.tokens for g in greedy] == ref[:, T:].tolist()
    beam = dict(do_sample=False, max_new_tokens=12, num_beams=4, num_return_sequences=2, length_penalty=0.7)
    ref = hf.generate(idx, attention_mask=ones, eos_token_id=None, pad_token_id=0, **beam)
    assert [g.tokens for g in generate(model, idx, GenerationConfig(**beam))] == ref[:, T:].tolist()
