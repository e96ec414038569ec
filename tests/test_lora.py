"""LoRA adapters and layer freezing: exact start, only adapters train, merge parity, loading,
decoding with the KV cache and prepacked weights."""

import pytest
import torch
import torch.nn as nn

from proselab.config import GenerationConfig, ModelConfig
from proselab.decoding import generate
from proselab.models import build_model, prepack
from proselab.models.lora import LoRALinear, apply_lora, freeze_layers, has_lora, merge_lora
from proselab.models.prepack import PrepackedLinear, _ops_work, prepack_for_cpu

TARGETS = ["c_attn", "c_proj", "c_fc"]


def _gpt(**kw) -> nn.Module:
    torch.manual_seed(0)
    cfg = dict(family="gpt", n_layer=2, n_head=2, n_embd=16, vocab_size=50, block_size=16)
    return build_model(ModelConfig(**{**cfg, **kw})).eval()


def _rnn(cell: str = "lstm") -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(family="rnn", cell=cell, n_embd=16, hidden_size=16, num_layers=3,
                                   vocab_size=50, block_size=16))


def _idx(B: int = 3, T: int = 10) -> torch.Tensor:
    return torch.randint(0, 50, (B, T), generator=torch.Generator().manual_seed(1))


def _lora_gpt() -> nn.Module:
    """A GPT with adapters whose update is not zero, so they change the output."""
    model = _gpt()
    apply_lora(model, rank=4, alpha=8.0, targets=TARGETS)
    torch.manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(std=0.05)
    return model


def _adapter_names(model: nn.Module) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.endswith((".lora_A", ".lora_B"))}


def test_apply_lora_converts_targets_and_keeps_the_output():
    model = _gpt()
    idx = _idx()
    with torch.no_grad():
        before = model(idx)[0]
    names = apply_lora(model, rank=4, alpha=8.0, targets=TARGETS)
    assert names == [f"transformer.h.{i}.{n}" for i in range(2)
                     for n in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
    assert has_lora(model) and type(model.lm_head) is nn.Linear
    lin = model.transformer.h[0].attn.c_attn
    assert lin.lora_A.shape == (4, 16) and lin.lora_B.shape == (48, 4) and lin.scaling == 2.0
    assert lin.lora_A.abs().sum() > 0 and lin.lora_B.abs().sum() == 0  # B = 0: the update starts at zero
    with torch.no_grad():
        assert torch.equal(model(idx)[0], before)


def test_only_the_adapters_require_and_get_gradients():
    model = _gpt()
    apply_lora(model, rank=2, alpha=2.0, targets=["c_attn"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == _adapter_names(model) and len(trainable) == 4
    model.train()
    _, loss = model(_idx(), _idx())
    loss.backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in trainable), n
    assert model.transformer.h[0].attn.c_attn.lora_B.grad.abs().sum() > 0


def test_training_changes_the_output_and_not_the_base_weights():
    model = _gpt()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, rank=4, alpha=8.0, targets=TARGETS, dropout=0.1)
    idx = _idx()
    with torch.no_grad():
        before = model(idx)[0]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        _, loss = model(idx, _idx())
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(idx)[0], before, atol=1e-4)
    state = model.state_dict()
    for k, v in base.items():
        assert torch.equal(state[k], v), k


def test_merge_gives_the_same_logits_and_a_plain_model():
    plain_keys = _gpt().state_dict().keys()
    model = _lora_gpt()
    idx = _idx()
    with torch.no_grad():
        lora_logits = model(idx)[0]
    assert merge_lora(model) is model
    assert not has_lora(model)
    assert all(type(m) is nn.Linear for m in model.modules() if isinstance(m, nn.Linear))
    assert model.state_dict().keys() == plain_keys
    assert all(p.requires_grad for p in model.parameters())
    assert model.lm_head.weight is model.transformer.wte.weight  # tying survives
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], lora_logits, atol=1e-5, rtol=0)


def test_state_dict_holds_base_and_adapter_keys_and_loads_into_a_rebuilt_model():
    model = _lora_gpt()
    state = model.state_dict()
    adapters = _adapter_names(model)
    assert set(state) == set(_gpt().state_dict()) | adapters and len(adapters) == 16
    fresh = _gpt()
    apply_lora(fresh, rank=4, alpha=8.0, targets=TARGETS)
    fresh.load_state_dict(state)  # strict
    idx = _idx()
    with torch.no_grad():
        assert torch.equal(fresh(idx)[0], model(idx)[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(targets=["c_attn", "q_proj"]), r"'q_proj' matches no linear layer.*c_attn, c_fc, c_proj, lm_head"),
    (dict(targets=[]), "at least one target"),
    (dict(rank=0), "rank must be an integer >= 1"),
    (dict(rank=2.5), "rank must be an integer >= 1"),
    (dict(alpha=0.0), "alpha must be > 0"),
    (dict(dropout=1.0), "dropout must be in"),
    (dict(targets=["c_fc", "lm_head"]), r"lm_head share their weight with the input embedding"),
])
def test_bad_arguments_raise_and_leave_the_model_alone(kwargs, match):
    model = _gpt()
    with pytest.raises(ValueError, match=match):
        apply_lora(model, **{**dict(rank=4, alpha=8.0, targets=TARGETS), **kwargs})
    assert not has_lora(model) and all(p.requires_grad for p in model.parameters())


def test_applying_twice_raises():
    model = _lora_gpt()
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        apply_lora(model, rank=4, alpha=8.0, targets=["lm_head"])


def test_an_untied_head_can_be_adapted_and_merged():
    model = _gpt(tie_weights=False)
    assert apply_lora(model, rank=2, alpha=4.0, targets=["lm_head"]) == ["lm_head"]
    with torch.no_grad():
        model.lm_head.lora_B.normal_(std=0.1)
        idx = _idx()
        before = model(idx)[0]
        wte = model.transformer.wte.weight.clone()
        merge_lora(model)
        torch.testing.assert_close(model(idx)[0], before, atol=1e-5, rtol=0)
        assert torch.equal(model.transformer.wte.weight, wte)


def test_lora_runs_under_bf16_autocast_and_with_bf16_weights():
    model = _gpt()
    apply_lora(model, rank=4, alpha=8.0, targets=TARGETS)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(_idx(), _idx())
        assert model(_idx())[0].dtype == torch.bfloat16
    assert logits is None and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    lin = model.transformer.h[1].mlp.c_fc
    assert lin.lora_B.grad.dtype == torch.float32 and lin.lora_B.grad.abs().sum() > 0
    half = _gpt().to(torch.bfloat16)
    apply_lora(half, rank=4, alpha=8.0, targets=["c_attn"])
    assert half.transformer.h[0].attn.c_attn.lora_A.dtype == torch.bfloat16
    with torch.no_grad():
        assert half(_idx())[0].dtype == torch.bfloat16


def test_lora_linear_compiles_without_graph_breaks():
    torch.manual_seed(0)
    lin = LoRALinear.from_linear(nn.Linear(8, 6), rank=2, alpha=4.0, dropout=0.1)
    with torch.no_grad():
        lin.lora_B.normal_()
    compiled = torch.compile(lin, fullgraph=True, backend="aot_eager")
    x = torch.randn(3, 8)
    compiled.eval()
    torch.testing.assert_close(compiled(x), lin(x))
    compiled.train()
    compiled(x).sum().backward()
    assert lin.lora_A.grad is not None


def test_kv_cache_decoding_matches_the_full_forward():
    model = _lora_gpt()
    idx = _idx(B=2, T=9)
    with torch.no_grad():
        full = model(idx)[0]  # (B, T, V)
    logits, cache = model.start(idx[:, :-1])
    torch.testing.assert_close(logits, full[:, -2], atol=1e-5, rtol=0)
    logits, cache = model.step(idx[:, -1], cache)
    torch.testing.assert_close(logits, full[:, -1], atol=1e-5, rtol=0)


@pytest.mark.skipif(not _ops_work(), reason="oneDNN linear ops are not available in this torch build")
def test_prepack_leaves_adapters_alone_and_the_merged_model_decodes_the_same(monkeypatch):
    monkeypatch.setattr(prepack, "MIN_PACKED", 1)  # the tiny layers are below the real threshold
    model = _lora_gpt()
    idx = _idx()
    with torch.no_grad():
        before = model(idx)[0]
    prepack_for_cpu(model)
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == 8
    assert not any(isinstance(m, LoRALinear) and isinstance(m, PrepackedLinear) for m in model.modules())
    assert type(model.lm_head) is PrepackedLinear  # not a target: packed as usual
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], before, atol=1e-4, rtol=0)
    cfg = GenerationConfig(do_sample=False, max_new_tokens=12)
    lora_tokens = [g.tokens for g in generate(model, idx, cfg)]
    merged = prepack_for_cpu(merge_lora(_lora_gpt()))  # the same adapters, merged before packing
    assert sum(type(m) is PrepackedLinear for m in merged.modules()) == 9
    with torch.no_grad():
        torch.testing.assert_close(merged(idx)[0], before, atol=1e-4, rtol=0)
    assert [g.tokens for g in generate(merged, idx, cfg)] == lora_tokens


def test_freeze_layers_gpt():
    model = _gpt()
    n = freeze_layers(model, 1)
    frozen = {k for k, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
    expected = {k for k in frozen if k.startswith(("transformer.wte.", "transformer.wpe.", "transformer.h.0."))}
    assert frozen == expected | {"lm_head.weight"}  # tied to wte: the head is frozen with it
    assert any(k.startswith("transformer.h.0.") for k in frozen)
    assert all(p.requires_grad for p in model.transformer.h[1].parameters())
    assert all(p.requires_grad for p in model.transformer.ln_f.parameters())
    tr = model.transformer
    assert n == sum(p.numel() for m in (tr.wte, tr.wpe, tr.h[0]) for p in m.parameters())
    assert freeze_layers(_gpt(), 2) == sum(p.numel() for p in _gpt().parameters()) - 2 * 16  # all but ln_f


def test_freeze_nothing_with_zero():
    model = _gpt()
    assert freeze_layers(model, 0) == 0
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_freeze_layers_rnn(cell):
    model = _rnn(cell)
    n = freeze_layers(model, 2)
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    assert "wte.weight" in frozen and {k for k in frozen if k.startswith("rnn.")} == {
        f"rnn.{w}_l{i}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") for i in (0, 1)}
    assert model.rnn.weight_ih_l2.requires_grad and model.rnn.bias_hh_l2.requires_grad
    assert n == model.wte.weight.numel() + sum(p.numel() for k, p in model.rnn.named_parameters()
                                               if not k.endswith("l2"))


@pytest.mark.parametrize("make, n, layers", [(_gpt, 3, 2), (_gpt, -1, 2), (_rnn, 4, 3)])
def test_freeze_layers_out_of_range(make, n, layers):
    model = make()
    with pytest.raises(ValueError, match=rf"train.freeze_layers={n} but the model has only {layers} layers"):
        freeze_layers(model, n)
    assert all(p.requires_grad for p in model.parameters())
