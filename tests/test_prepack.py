"""Prepacked linear weights for CPU decoding: same outputs, and never in the way of training."""

import copy

import pytest
import torch

from proselab.config import GenerationConfig, ModelConfig
from proselab.decoding import generate
from proselab.models import build_model
from proselab.models import prepack
from proselab.models.prepack import PrepackedLinear, _ops_work, prepack_for_cpu

pytestmark = pytest.mark.skipif(not _ops_work(), reason="oneDNN linear ops are not available in this torch build")


@pytest.fixture(autouse=True)
def _pack_small_layers_too(monkeypatch):
    monkeypatch.setattr(prepack, "MIN_PACKED", 1)  # the tiny test models' layers are all below the threshold


def _gpt():
    torch.manual_seed(0)
    return build_model(ModelConfig(family="gpt", vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_model_gives_the_same_logits_and_tokens(dtype):
    plain = _gpt().to(dtype)
    packed = prepack_for_cpu(copy.deepcopy(plain))
    assert sum(isinstance(m, PrepackedLinear) for m in packed.modules()) == 2 * 4 + 1  # 4 per block + the head
    idx = torch.randint(0, 50, (3, 10))
    with torch.no_grad():
        torch.testing.assert_close(packed(idx)[0], plain(idx)[0], atol=1e-4 if dtype == torch.float32 else 2e-2,
                                   rtol=0)
    cfg = GenerationConfig(do_sample=False, max_new_tokens=20)
    assert [g.tokens for g in generate(packed, idx, cfg)] == [g.tokens for g in generate(plain, idx, cfg)]
    assert packed.state_dict().keys() == plain.state_dict().keys()


def test_a_changed_weight_is_repacked_and_training_is_untouched():
    model = prepack_for_cpu(_gpt())
    lin = model.lm_head
    x = torch.randn(2, 32)
    with torch.no_grad():
        before = lin(x)
        lin.weight.mul_(2)  # in place, like an optimizer step
        torch.testing.assert_close(lin(x), 2 * before, atol=1e-4, rtol=0)
    model.train()
    logits, loss = model(torch.randint(0, 50, (2, 8)), torch.randint(0, 50, (2, 8)))
    loss.backward()  # the grad path is plain F.linear
    assert model.transformer.h[0].attn.c_attn.weight.grad is not None


def test_generate_prepacks_unless_told_not_to(monkeypatch):
    model = _gpt()
    monkeypatch.setenv("PROSELAB_PREPACK", "0")
    generate(model, [[1, 2]], GenerationConfig(max_new_tokens=2))
    assert not any(isinstance(m, PrepackedLinear) for m in model.modules())
    monkeypatch.delenv("PROSELAB_PREPACK")
    generate(model, [[1, 2]], GenerationConfig(max_new_tokens=2))
    assert isinstance(model.lm_head, PrepackedLinear)


def test_small_layers_stay_plain(monkeypatch):
    monkeypatch.setattr(prepack, "MIN_PACKED", 32 * 32 * 4)  # c_fc / c_proj (32 x 128) and above
    model = prepack_for_cpu(_gpt())
    packed = {n for n, m in model.named_modules() if isinstance(m, PrepackedLinear)}
    assert packed == {f"transformer.h.{i}.mlp.{n}" for i in range(2) for n in ("c_fc", "c_proj")}


def test_refresh_repacks_weights_a_fused_optimizer_changed():
    """AdamW(fused=True) leaves a weight's version as it was, so the packed copy would be stale;
    after refresh, decoding uses the new weights (the trainer refreshes before its BLEU evals)."""
    from proselab.config import GenerationConfig, ModelConfig
    from proselab.decoding import generate
    from proselab.models import build_model
    from proselab.models.prepack import refresh

    torch.manual_seed(0)
    mcfg = ModelConfig(family="gpt", n_layer=1, n_head=2, n_embd=256, vocab_size=1100, block_size=32)
    model = build_model(mcfg).eval()
    cfg = GenerationConfig(do_sample=False, max_new_tokens=12)
    generate(model, [[1, 2, 3]], cfg)  # packs the head (1100 x 256)
    opt = torch.optim.AdamW(model.parameters(), lr=0.5, fused=True)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    fresh = build_model(mcfg).eval()
    fresh.load_state_dict(model.state_dict())
    stale = generate(model, [[1, 2, 3]], cfg)[0].tokens
    refresh(model)
    expected = generate(fresh, [[1, 2, 3]], cfg)[0].tokens
    assert generate(model, [[1, 2, 3]], cfg)[0].tokens == expected
    assert stale != expected  # what the bug looked like


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("activation", sorted(prepack.POST_OPS))
def test_fused_activation_and_bias_equal_the_unfused_ops(dtype, activation):
    """The activation (a oneDNN post-op) and an extra bias computed inside the packed matmul:
    the same as the layer, then the bias, then the activation."""
    from proselab.models.encdec import ACTIVATIONS

    torch.manual_seed(0)
    plain = torch.nn.Linear(24, 40, bias=False).to(dtype).eval()
    lin = copy.deepcopy(plain)
    lin.__class__ = PrepackedLinear
    x, bias = torch.randn(5, 24, dtype=dtype), torch.randn(40, dtype=dtype)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=3e-2, rtol=2e-2)
    with torch.no_grad():
        want = ACTIVATIONS[activation]((plain(x).float() + bias.float()))
        torch.testing.assert_close(prepack.fused(lin, x, activation, bias).float(), want, **tol)
        torch.testing.assert_close(prepack.fused(lin, x, activation).float(), ACTIVATIONS[activation](plain(x).float()),
                                   **tol)
        assert prepack.fused(plain, x, activation) is None  # not packed: the caller computes it
        assert prepack.fused(lin, x, "tanh") is None  # no post-op for it
    assert prepack.fused(lin, x, activation) is None  # with grad: training never takes the packed path


def test_seq2seq_decoding_fuses_the_activation_and_the_logits_bias():
    """A BART-like model (GELU, a final logits bias) decodes to the same logits packed, where the
    activation and the bias go into the matmuls, as plain."""
    from proselab.data.batch import Seq2SeqBatch

    torch.manual_seed(0)
    cfg = ModelConfig(family="seq2seq", arch="transformer", bos_id=1, vocab_size=60, block_size=32, n_layer=2,
                      n_head=2, n_embd=32, activation="gelu", logits_bias=True, positions="learned")
    plain = build_model(cfg).eval()
    with torch.no_grad():
        plain.logits_bias.normal_()
    packed = prepack_for_cpu(copy.deepcopy(plain))
    batch = Seq2SeqBatch(torch.randint(3, 60, (3, 7)), torch.ones(3, 7, dtype=torch.bool))
    cfg_g = GenerationConfig(do_sample=False, num_beams=3, max_new_tokens=12)
    with torch.no_grad():
        a, b = plain.start(batch)[0], packed.start(batch)[0]
        torch.testing.assert_close(b, a, atol=1e-4, rtol=0)
    assert [g.tokens for g in generate(packed, batch, cfg_g)] == [g.tokens for g in generate(plain, batch, cfg_g)]
