"""LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") and
layer freezing, for fine-tuning.

A LoRA layer keeps its pretrained weight W frozen and learns a low-rank update:
y = x W^T + b + (x A^T B^T) * alpha / rank, with A (rank, in) and B (out, rank). B starts at
zero, so an adapted model starts out computing exactly what the base model did. Adapters are
installed by swapping the ``__class__`` of existing nn.Linear modules (as prepack.py does), so
the base parameters keep their names and the state_dict only gains ``*.lora_A``/``*.lora_B``.
``merge_lora`` folds the update into W and leaves a plain model again.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class LoRALinear(nn.Linear):
    """An nn.Linear with a trainable low-rank update next to its (frozen) weight.

    Made from an existing layer with ``LoRALinear.from_linear``; ``merge`` turns it back.
    """

    lora_A: nn.Parameter  # (rank, in_features)
    lora_B: nn.Parameter  # (out_features, rank)
    scaling: float  # alpha / rank
    lora_dropout: float  # dropout probability on the adapter's input, in training only

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rank: int, alpha: float,
                 dropout: float = 0.0, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._add_adapter(rank, alpha, dropout)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> LoRALinear:
        """Turn ``linear`` into a LoRALinear in place (the same object is returned).

        The weight must not be shared with another module (a tied head): ``merge`` would change
        the other module too. ``apply_lora`` checks this; this method cannot.
        """
        assert isinstance(linear, nn.Linear), f"LoRA needs an nn.Linear, got {type(linear).__name__}"
        linear.__class__ = cls
        # a prepacked copy of the weight (prepack.py) would only hold memory: this class never reads it
        linear.__dict__.pop("_packed", None)
        linear.__dict__.pop("_packed_key", None)
        linear._add_adapter(rank, alpha, dropout)
        return linear

    def _add_adapter(self, rank: int, alpha: float, dropout: float) -> None:
        w = self.weight
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=w.device, dtype=w.dtype))
        # A as nn.Linear initialises its weight, and as PEFT does; B = 0 makes the update start at 0
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / rank
        self.lora_dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        base = F.linear(x, self.weight, self.bias)
        if self.lora_dropout > 0:
            x = F.dropout(x, self.lora_dropout, self.training)
        # (x A^T) B^T: through the rank-r bottleneck, never forming the (out, in) product B A
        return base + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """Fold B A * scaling into the weight and turn this module into a plain nn.Linear, in place.

        Returns:
            the same module, now an nn.Linear without adapter attributes.
        """
        # the product in float32 at least, so a bf16 weight takes one rounding, not two
        dtype = torch.promote_types(self.weight.dtype, torch.float32)
        delta = (self.lora_B.to(dtype) @ self.lora_A.to(dtype)) * self.scaling  # (out, in)
        self.weight.add_(delta.to(self.weight.dtype))
        del self.lora_A, self.lora_B, self.scaling, self.lora_dropout
        self.__class__ = nn.Linear
        return self

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.lora_A.size(0)}, scaling={self.scaling:g}"


def has_lora(model: nn.Module) -> bool:
    """Whether any module of ``model`` is a LoRALinear."""
    return any(isinstance(m, LoRALinear) for m in model.modules())


def apply_lora(model: nn.Module, rank: int, alpha: float, targets: list[str], dropout: float = 0.0) -> list[str]:
    """Add LoRA adapters to the model's linear layers named in ``targets`` and freeze the rest.

    A layer matches when the last component of its qualified name is a target ("c_attn" matches
    ``transformer.h.0.attn.c_attn``). Every parameter except the adapters gets
    ``requires_grad=False``. Nothing is changed when a ValueError is raised.

    Args:
        model: the model, changed in place.
        rank: the adapters' rank r >= 1.
        alpha: the update is scaled by alpha / rank (> 0).
        targets: last name components, e.g. ["c_attn", "c_proj", "c_fc"]; "lm_head" only when the
            head is not tied to the input embedding (merging would change the embedding too).
        dropout: dropout probability on the adapters' input, in [0, 1).

    Returns:
        The qualified names of the converted layers, in module order.
    """
    if has_lora(model):
        raise ValueError("the model already has LoRA adapters; merge_lora() it first to add new ones")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank must be an integer >= 1, got {rank!r}")
    if not alpha > 0:
        raise ValueError(f"LoRA alpha must be > 0, got {alpha!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:
        raise ValueError("LoRA needs at least one target layer name, e.g. ['c_attn', 'c_proj', 'c_fc']")
    layers = _matching_linears(model, targets)
    for name, mod in layers:
        LoRALinear.from_linear(mod, rank, alpha, dropout)
    for p in model.parameters():
        p.requires_grad_(False)
    for _, mod in layers:
        mod.lora_A.requires_grad_(True)
        mod.lora_B.requires_grad_(True)
    return [name for name, _ in layers]


def _matching_linears(model: nn.Module, targets: list[str]) -> list[tuple[str, nn.Linear]]:
    """The (name, module) of every nn.Linear whose last name component is in ``targets``."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    found = [(n, m) for n, m in linears if n.rsplit(".", 1)[-1] in targets]
    available = sorted({n.rsplit(".", 1)[-1] for n, _ in linears})
    for t in targets:
        if not any(n.rsplit(".", 1)[-1] == t for n, _ in found):
            raise ValueError(f"LoRA target '{t}' matches no linear layer; the model's linear layers are: "
                             f"{', '.join(available)}")
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    tied = [n for n, m in found if id(m.weight) in embeddings]
    if tied:
        raise ValueError(f"LoRA target layer(s) {', '.join(tied)} share their weight with the input embedding "
                         "(tie_weights); merging would change the embedding too. Drop them from the targets, "
                         "or use a model with tie_weights=false")
    return found


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRA adapter into its layer's weight, in place, leaving a plain model.

    Afterwards the state_dict has exactly the keys of the model before ``apply_lora``, and every
    parameter has ``requires_grad=True`` again (undoing ``apply_lora``'s and ``freeze_layers``'
    freezing).

    Returns:
        ``model``.
    """
    for mod in list(model.modules()):
        if isinstance(mod, LoRALinear):
            mod.merge()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _layer_params(model: nn.Module) -> tuple[list[nn.Parameter], list[list[nn.Parameter]]]:
    """The embedding parameters, and the parameters of each layer in order, of a gpt, rnn or
    Transformer seq2seq model."""
    rnn = getattr(model, "rnn", None)
    if isinstance(rnn, nn.RNNBase):
        layers: list[list[nn.Parameter]] = [[] for _ in range(rnn.num_layers)]
        for name, p in rnn.named_parameters():
            # torch names them weight_ih_l{k}, weight_hh_l{k}, bias_*_l{k} (+ _reverse, weight_hr_l{k})
            layers[int(re.search(r"_l(\d+)", name).group(1))].append(p)
        return list(model.wte.parameters()), layers
    tr = getattr(model, "transformer", None)
    if tr is not None and hasattr(tr, "h"):
        wpe = [*tr.wpe.parameters()] if "wpe" in tr else []  # a rope model has no position table
        return [*tr.wte.parameters(), *wpe], [list(block.parameters()) for block in tr.h]
    encoder, decoder = getattr(model, "encoder", None), getattr(model, "decoder", None)
    if isinstance(encoder, nn.ModuleList) and isinstance(decoder, nn.ModuleList):  # a Transformer seq2seq
        names = ("src_emb", "tgt_emb", "src_pos", "tgt_pos", "src_emb_ln", "tgt_emb_ln", "enc_rel", "dec_rel")
        embeddings = {id(p): p for n in names if getattr(model, n, None) is not None
                      for p in getattr(model, n).parameters()}
        return list(embeddings.values()), [list(block.parameters()) for block in [*encoder, *decoder]]
    raise ValueError(f"freeze_layers supports the gpt, rnn and transformer seq2seq models, not {type(model).__name__}")


def freeze_layers(model: nn.Module, n: int) -> int:
    """Freeze the embeddings and the first ``n`` layers (``requires_grad=False``), for fine-tuning.

    gpt: ``transformer.wte``, ``transformer.wpe`` and blocks ``transformer.h[:n]``. With tied
    weights (the default) ``lm_head.weight`` *is* ``transformer.wte.weight``, so the head is
    frozen as well. rnn: ``wte`` (and so a tied head) and the parameters of recurrent layers
    0..n-1 (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``).
    Transformer seq2seq: the embeddings and position tables (and so a tied head), and the first
    n blocks counting the encoder's, then the decoder's.
    n = 0 freezes nothing. Frozen parameters must be left out of the optimizer
    (``training.make_optimizer`` already keeps only those with ``requires_grad``).

    Args:
        model: a gpt or rnn model, changed in place.
        n: how many layers to freeze, 0 <= n <= the number of layers.

    Returns:
        The number of parameters (elements, a tied matrix counted once) in the frozen tensors.
    """
    embeddings, layers = _layer_params(model)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(layers):
        raise ValueError(f"train.freeze_layers={n} but the model has only {len(layers)} layers; "
                         f"use 0 (freeze nothing) to {len(layers)}")
    if n == 0:
        return 0
    frozen = {id(p): p for p in embeddings + [p for layer in layers[:n] for p in layer]}
    for p in frozen.values():
        p.requires_grad_(False)
    return sum(p.numel() for p in frozen.values())
