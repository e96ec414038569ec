import pytest
import torch

from proselab.config import GenerationConfig, ModelConfig
from proselab.decoding import generate, stream
from proselab.decoding.processors import SuppressTokens, Temperature, TopK, build_processors
from proselab.models import build_model


def _model(family):
    torch.manual_seed(0)
    cfg = ModelConfig(family=family, vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16,
                      hidden_size=16, num_layers=1)
    return build_model(cfg).eval()


def test_temperature_scales_logits():
    logits = torch.tensor([[1.0, 2.0, 4.0]])
    assert torch.equal(Temperature(2.0)(None, logits), torch.tensor([[0.5, 1.0, 2.0]]))


def test_top_k_keeps_k_and_all_ties():
    logits = torch.tensor([[1.0, 5.0, 3.0, 3.0, -1.0]])
    out = TopK(2)(None, logits)
    assert torch.isinf(out[0, [0, 4]]).all()
    assert torch.equal(out[0, [1, 2, 3]], logits[0, [1, 2, 3]])  # the tie at the 2nd value is kept
    assert torch.equal(TopK(10)(None, logits), logits)  # k larger than V keeps everything


def test_suppress_tokens_never_chosen():
    logits = torch.tensor([[9.0, 1.0, 0.0]])
    out = SuppressTokens([0])(None, logits)
    assert out[0, 0] == float("-inf") and logits[0, 0] == 9.0  # input untouched


def test_greedy_uses_no_sampling_processors():
    assert build_processors(GenerationConfig(do_sample=False, temperature=0.5, top_k=3)) == []


@pytest.mark.parametrize("family", ["gpt", "rnn"])
def test_greedy_is_argmax_of_the_full_forward(family):
    model = _model(family)
    idx = torch.tensor([[1, 2, 3]])
    new = generate(model, idx, GenerationConfig(do_sample=False, max_new_tokens=8))
    seq = idx
    for _ in range(8):  # the slow way: a full forward pass per token
        logits, _ = model(seq)
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(new, seq[:, 3:])


@pytest.mark.parametrize("family", ["gpt", "rnn"])
def test_seeded_sampling_is_reproducible(family):
    model = _model(family)
    idx = torch.tensor([[1, 2], [3, 4]])
    cfg = GenerationConfig(max_new_tokens=10, seed=7, num_return_sequences=3, temperature=1.0, top_k=0)
    a, b = generate(model, idx, cfg), generate(model, idx, cfg)
    assert a.shape == (6, 10) and torch.equal(a, b)
    c = generate(model, idx, GenerationConfig(max_new_tokens=10, seed=8, num_return_sequences=3))
    assert not torch.equal(a, c)
    assert torch.equal(torch.stack(list(stream(model, idx, cfg)), dim=1), a)


def test_generation_past_block_size_and_zero_tokens():
    model = _model("gpt")
    out = generate(model, torch.tensor([[1] * 20]), GenerationConfig(max_new_tokens=40, seed=0))
    assert out.shape == (1, 40)
    assert generate(model, torch.tensor([[1]]), GenerationConfig(max_new_tokens=0)).shape == (1, 0)


def test_suppressed_ids_never_generated():
    model = _model("rnn")
    out = generate(model, torch.tensor([[1]]), GenerationConfig(max_new_tokens=200, seed=0, temperature=3.0,
                                                                top_k=0), suppress_ids=[0, 5])
    assert not ((out == 0) | (out == 5)).any()
