"""Models: shapes, loss at init, the decoding invariants, sliding, tying, HF GPT-2 parity.

Tiny seeded CPU models in float32; "equal logits" means atol 1e-5 unless stated.
"""

from __future__ import annotations

import math

import pytest
import torch

from proselab.config import ModelConfig
from proselab.models import GPT, RNNLM, Decoder, build_model

ATOL = 1e-5
V = 50


def _gpt(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(family="gpt", vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    return build_model(ModelConfig(**{**cfg, **kw})).eval()


def _rnn(cell: str, **kw) -> RNNLM:
    torch.manual_seed(0)
    cfg = dict(family="rnn", vocab_size=V, block_size=16, cell=cell, n_embd=24, hidden_size=24, num_layers=2)
    return build_model(ModelConfig(**{**cfg, **kw})).eval()


LLAMA = dict(rope=True, norm="rmsnorm", norm_eps=1e-6, activation="silu", gated_ffn=True, ffn_dim=48, n_head=4,
             n_kv_head=2, bias=False, tie_weights=False)  # Llama style, with grouped key/value heads


def _llama(**kw) -> GPT:
    return _gpt(**{**LLAMA, **kw})


def _models():
    return [_gpt(), _llama()] + [_rnn(c) for c in ("rnn", "lstm", "gru")]


def _ids(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


MODELS = pytest.mark.parametrize("model", _models(), ids=["gpt", "llama", "rnn", "lstm", "gru"])
GPTS = pytest.mark.parametrize("make", [_gpt, _llama], ids=["gpt2", "llama"])


def test_build_model_dispatch_and_vocab_check():
    assert isinstance(_gpt(), GPT) and isinstance(_rnn("lstm"), RNNLM)
    with pytest.raises(AssertionError, match="vocab_size"):
        build_model(ModelConfig(vocab_size=0))
    with pytest.raises(ValueError, match="family"):
        build_model(ModelConfig(family="seq3seq", vocab_size=V))


@MODELS
def test_forward_shapes_and_protocol(model):
    assert isinstance(model, Decoder)
    idx = _ids(3, 10)
    logits, loss = model(idx)
    assert logits.shape == (3, 10, V) and loss is None
    logits, loss = model(idx, idx)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert logits is None if isinstance(model, GPT) else logits.shape == (3, 10, V)  # gpt: see head_loss


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("with_bias,smoothing", [(False, 0.0), (True, 0.0), (False, 0.1), (True, 0.1)])
def test_head_loss_matches_the_plain_loss_and_gradients(dtype, with_bias, smoothing, monkeypatch):
    import proselab.models.layers as layers

    monkeypatch.setattr(layers, "HEAD_CHUNK_ELEMENTS", 3 * 50)  # several row chunks, one partial
    torch.manual_seed(0)
    h = torch.randn(2, 8, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    b = torch.randn(50, requires_grad=True) if with_bias else None
    t = torch.randint(0, 50, (2, 8))
    t[0, :3] = -100
    results = []
    plain = (lambda: layers.lm_loss(h @ w.t() + (b if with_bias else 0), t, smoothing))
    fused = (lambda: layers.head_loss(h, w, t, b, smoothing))
    for fn in (plain, fused):
        h.grad = w.grad = None
        if with_bias:
            b.grad = None
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = fn()
        (loss * 3).backward()
        results.append((loss.detach(), h.grad.clone(), w.grad.clone()) + ((b.grad.clone(),) if with_bias else ()))
    tol = dict(atol=1e-5, rtol=1e-5) if dtype is None else dict(atol=2e-2, rtol=2e-2)
    for plain_value, fused_value in zip(*results):
        torch.testing.assert_close(fused_value, plain_value, **tol)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        torch.testing.assert_close(fused(), results[1][0], atol=1e-5, rtol=1e-5)  # no gradients: same loss


def test_head_loss_rejects_a_smoothing_outside_0_1():
    from proselab.models.layers import head_loss

    with pytest.raises(ValueError, match="label_smoothing must be in"):
        head_loss(torch.randn(2, 4), torch.randn(5, 4), torch.tensor([1, 2]), label_smoothing=1.5)


@MODELS
def test_loss_ignores_minus_100(model):
    idx, targets = _ids(2, 8), _ids(2, 8, seed=2)
    logits, _ = model(idx)
    masked = targets.clone()
    masked[:, :3] = -100
    _, loss = model(idx, masked)
    expected = torch.nn.functional.cross_entropy(logits[:, 3:].reshape(-1, V), targets[:, 3:].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_gpt_loss_at_init_is_ln_vocab():
    _, loss = _gpt()(_ids(4, 16), _ids(4, 16, seed=2))
    assert abs(loss.item() - math.log(V)) < 0.05, loss.item()


def test_gpt_rejects_sequences_longer_than_block_size():
    with pytest.raises(AssertionError, match="block_size"):
        _gpt()(_ids(1, 17))


@MODELS
def test_start_then_step_matches_forward(model):
    # GPT: a 3-token prompt stepped until the cache holds exactly block_size (16) tokens
    idx = _ids(2, 16)
    full, _ = model(idx)
    logits, state = model.start(idx[:, :3])
    torch.testing.assert_close(logits, full[:, 2], atol=ATOL, rtol=0)
    for t in range(3, 16):
        logits, state = model.step(idx[:, t], state)
        torch.testing.assert_close(logits, full[:, t], atol=ATOL, rtol=0)
    if isinstance(model, GPT):
        assert state.length == 16 and torch.equal(state.idx, idx)


@MODELS
def test_reorder_matches_running_the_reordered_batch(model):
    idx, nxt = _ids(3, 5), _ids(3, 1, seed=2)[:, 0]
    index = torch.tensor([2, 0, 0, 1, 2])  # a permutation with repeats, as beams and n > 1 samples need
    _, state = model.start(idx)
    logits, _ = model.step(nxt[index], model.reorder(state, index))
    _, ref_state = model.start(idx[index])
    ref, _ = model.step(nxt[index], ref_state)
    torch.testing.assert_close(logits, ref, atol=ATOL, rtol=0)


def test_reorder_leaves_the_original_state_usable():
    model, idx = _gpt(), _ids(2, 4)
    _, state = model.start(idx)
    forked = model.reorder(state, torch.tensor([1, 0]))
    model.step(torch.tensor([7, 7]), forked)
    logits, _ = model.step(torch.tensor([3, 4]), state)
    ref, _ = model(torch.cat([idx, torch.tensor([[3], [4]])], dim=1))
    torch.testing.assert_close(logits, ref[:, -1], atol=ATOL, rtol=0)


@GPTS
def test_gpt_in_place_reorder_matches_the_copying_one(make):
    """Beam search's ``reorder_`` (the changed rows only, in the cache) gives the logits that
    ``reorder`` (a new cache) does, step after step, through cache growth and window slides."""
    model = make(block_size=8)  # 23 tokens: the window slides
    _, copied = model.start(_ids(6, 3))
    _, in_place = model.start(_ids(6, 3))
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        index = (torch.arange(2)[:, None] * 3 + torch.randint(0, 3, (2, 3), generator=g)).view(-1)  # 3 beams x 2
        copied, in_place = model.reorder(copied, index), model.reorder_(in_place, index)
        tokens = torch.randint(0, V, (6,), generator=g)
        a, copied = model.step(tokens, copied)
        b, in_place = model.step(tokens, in_place)
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@GPTS
def test_gpt_generation_slides_past_block_size(make):
    model, bs = make(block_size=8), 8
    keep = bs // 2
    tokens = _ids(2, 40)
    logits, state = model.start(tokens[:, :3])
    slides = 0
    for t in range(3, 40):  # 37 steps: the window slides several times
        logits, state = model.step(tokens[:, t], state)
        n = state.length
        window = state.idx[:, :n][state.mask[:, :n]].view(2, -1)  # each row's tokens: its unmasked slots
        assert torch.equal(window, tokens[:, t + 1 - window.size(1) : t + 1]), "window must hold the latest tokens"
        ref, _ = model(window)
        torch.testing.assert_close(logits, ref[:, -1], atol=ATOL, rtol=0)
        if int(state.pos[0]) == keep and t >= bs:  # just slid: the same as a fresh start on the last keep tokens
            slides += 1
            fresh_logits, fresh = model.start(tokens[:, t + 1 - keep : t + 1])
            torch.testing.assert_close(logits, fresh_logits, atol=0, rtol=0)
            for a, b in ((state.k, fresh.k), (state.v, fresh.v)):
                torch.testing.assert_close(a[:, :, :, n - keep : n], b[:, :, :, :keep], atol=0, rtol=0)
        assert state.capacity <= bs + bs // 2
    assert slides == 7  # full at t=7; slides at t = 8, 13, ..., 38 (keep 4, then 4 steps refill it)


def test_gpt_long_prompt_is_cropped_from_the_left():
    model, idx = _gpt(), _ids(2, 30)
    logits, state = model.start(idx)
    ref, _ = model(idx[:, -16:])
    torch.testing.assert_close(logits, ref[:, -1], atol=ATOL, rtol=0)
    assert state.length == 16
    model.step(idx[:, 0], state)  # a full cache slides rather than overflowing


def test_rnn_generates_past_block_size():
    model, idx = _rnn("gru", block_size=4), _ids(2, 12)
    full, _ = model(idx)
    _, state = model.start(idx[:, :2])
    for t in range(2, 12):
        logits, state = model.step(idx[:, t], state)
    torch.testing.assert_close(logits, full[:, -1], atol=ATOL, rtol=0)


@pytest.mark.parametrize("model", [_gpt(), _rnn("lstm")], ids=["gpt", "rnn"])
def test_tying_shares_storage(model):
    assert model.lm_head.weight.data_ptr() == _embedding(model).weight.data_ptr()
    assert model.num_params() == sum(p.numel() for n, p in model.state_dict().items() if n != "lm_head.weight")


def _embedding(model):
    return model.transformer.wte if isinstance(model, GPT) else model.wte


def test_untied_models_have_separate_heads():
    for model in (_gpt(tie_weights=False), _rnn("gru", tie_weights=False, hidden_size=40)):
        assert model.lm_head.weight.data_ptr() != _embedding(model).weight.data_ptr()


@pytest.mark.parametrize("model", [_gpt(bias=False)] + [_rnn(c, bias=False) for c in ("rnn", "lstm", "gru")])
def test_bias_false_has_no_biases(model):
    names = [n for n, _ in model.named_parameters()]
    assert names and not [n for n in names if "bias" in n]


@pytest.mark.parametrize("make", [lambda: _gpt(dropout=0.5), lambda: _rnn("lstm", dropout=0.5)], ids=["gpt", "rnn"])
def test_dropout_only_in_training(make):
    model, idx = make(), _ids(2, 8)
    torch.testing.assert_close(model(idx)[0], model(idx)[0], atol=0, rtol=0)
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])


@GPTS
def test_gpt_bf16_autocast_keeps_float32_loss_and_bf16_cache(make):
    model, idx = make(), _ids(2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
        _, state = model.start(idx)
        step_logits, state = model.step(idx[:, 0], state)
    assert loss.dtype == torch.float32 and state.k.dtype == torch.bfloat16
    assert step_logits.shape == (2, V)
    _, state = model.start(idx)
    assert state.k.dtype == torch.float32


def _hf_gpt2_and_ours():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(
        vocab_size=V, n_positions=16, n_embd=32, n_layer=2, n_head=2, activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    ours = _gpt()
    hf_sd, our_sd = hf.state_dict(), ours.state_dict()
    assert set(hf_sd) == set(our_sd), set(hf_sd) ^ set(our_sd)  # the names map one-to-one
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    with torch.no_grad():
        for name, tensor in hf_sd.items():
            our_sd[name].copy_(tensor.t() if name.endswith(conv1d) else tensor)  # Conv1D is (in, out)
    return hf, ours


def _hf_llama_and_ours():
    """A random transformers LlamaForCausalLM (grouped key/value heads, an untied head) and
    proselab's GPT of the same shape with its weights, through interop.llama's mapping."""
    transformers = pytest.importorskip("transformers")
    from proselab.interop.llama import model_config, state_from_hf

    torch.manual_seed(0)
    hf_cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
                                      rms_norm_eps=1e-6, rope_theta=500.0, tie_word_embeddings=False,
                                      bos_token_id=1, eos_token_id=2)
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    cfg = model_config(hf_cfg.to_dict(), "config.json")
    ours = build_model(cfg).eval()
    ours.load_state_dict(state_from_hf(hf.state_dict(), cfg))
    return hf, ours


PAIRS = pytest.mark.parametrize("pair", ["gpt2", "llama"])


def _pair(name):
    return _hf_gpt2_and_ours() if name == "gpt2" else _hf_llama_and_ours()


@PAIRS
def test_parity_with_transformers(pair):
    hf, ours = _pair(pair)
    idx = _ids(3, 16)
    with torch.no_grad():
        ref = hf(idx).logits
    logits, _ = ours(idx)
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=0)


@PAIRS
def test_cached_greedy_matches_transformers_generate(pair):
    hf, ours = _pair(pair)
    idx = _ids(2, 4)
    with torch.no_grad():
        ref = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=12, do_sample=False)[:, 4:]
    logits, state = ours.start(idx)
    out = []
    for _ in range(12):
        out.append(logits.argmax(-1))
        logits, state = ours.step(out[-1], state)
    assert torch.equal(torch.stack(out, dim=1), ref)


def test_grouped_training_attention_gradients_match_sdpa():
    """Training on CPU (the written-out attention over expanded key/value heads) computes the
    gradients SDPA's grouped attention does."""
    import torch.nn.functional as F

    from proselab.models.layers import SelfAttention

    torch.manual_seed(0)
    attn = SelfAttention(32, 4, n_kv_head=2).train()
    x = torch.randn(2, 9, 32, requires_grad=True)
    out = attn(x)
    q, k, v = attn.heads(attn.c_attn(x))
    ref = attn.c_proj(F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                      .transpose(1, 2).reshape(2, 9, 32))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    g_out = torch.autograd.grad(out.sum(), (x, attn.c_attn.weight))
    g_ref = torch.autograd.grad(ref.sum(), (x, attn.c_attn.weight))
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_explicit_training_attention_matches_sdpa():
    """The written-out attention used for CPU training equals SDPA in values and gradients."""
    import torch.nn.functional as F

    from proselab.models.layers import _explicit_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 9, 8, requires_grad=True) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out = _explicit_attention(q, k, v, 0.0, True)
    assert torch.allclose(out, ref, atol=1e-5)
    g_ref = torch.autograd.grad(ref.sum(), (q, k, v))
    g_out = torch.autograd.grad(out.sum(), (q, k, v))
    for a, b in zip(g_out, g_ref):
        assert torch.allclose(a, b, atol=1e-5)
