"""Word-level knowledge distillation's loss: the gold cross-entropy and the KL to a teacher's
softened distribution, on the positions a task trains, computed a chunk of rows at a time.

loss = (1 - alpha) * CE(student, gold) + alpha * T^2 * KL(teacher_T || student_T)
(Hinton et al. 2015; DistilGPT2 with T = 2). The T^2 keeps the KD gradient's size independent
of T. With ``top_k`` the teacher's distribution is its k most likely tokens, renormalised: the
sparse form toolkits use with cached teacher log-probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.batch import IGNORE_INDEX
from ..models.layers import HEAD_CHUNK_ELEMENTS

CHUNK_ELEMENTS = HEAD_CHUNK_ELEMENTS  # float32 (rows x V) entries converted at a time, as head_loss does


def distill_loss(student: Tensor, teacher: Tensor, targets: Tensor, alpha: float, temperature: float,
                 top_k: int = 0, label_smoothing: float = 0.0, parts: dict[str, Tensor] | None = None) -> Tensor:
    """The distillation loss of ``student`` logits against the gold ``targets`` and the ``teacher``'s logits.

    Only the rows whose target is not IGNORE_INDEX count, each once (a mean over them, as the
    task's own loss). The loss and its gradient are computed in one forward pass over chunks of
    rows (``CHUNK_ELEMENTS``), so no float32 (N, V) tensor is made whole; the backward pass
    scales the stored gradient, which is kept in the logits' dtype.

    Args:
        student: (..., V) the student's logits (bf16 under autocast, or float32).
        teacher: (..., Vt) the teacher's logits on the same inputs (no gradient). A teacher with
            a larger model vocabulary is cut to V, a smaller one padded with -inf: the ids past
            the tokenizer's are never real tokens.
        targets: (...) the gold next tokens; IGNORE_INDEX marks positions left out.
        alpha: the KD term's weight in [0, 1].
        temperature: T > 0.
        top_k: KD over the teacher's k most likely tokens (0 = all V).
        label_smoothing: of the CE term, as ``F.cross_entropy`` applies it.
        parts: a dict that receives the two terms as detached float32 scalars, each a mean over the
            rows: ``"ce"`` (the cross-entropy to the gold tokens) and ``"kd"`` (KL(teacher_T ||
            student_T), before its T^2), so that a log can show which one moves.

    Returns:
        A float32 scalar.
    """
    V = student.size(-1)
    s, t, y = student.reshape(-1, V), teacher.reshape(-1, teacher.size(-1)), targets.reshape(-1)
    valid = y != IGNORE_INDEX
    if not bool(valid.all()):  # prompts, padding: left out before any (rows, V) work
        rows = valid.nonzero().squeeze(1)
        s, t, y = s.index_select(0, rows), t.index_select(0, rows), y.index_select(0, rows)
    t = t.detach()
    if t.size(1) > V:
        t = t[:, :V]
    elif t.size(1) < V:
        t = F.pad(t, (0, V - t.size(1)), value=float("-inf"))
    t_idx = None
    if top_k and top_k < V:
        t, t_idx = t.topk(top_k, dim=-1)  # (n, k) logits and ids: softmax over them renormalises
    if len(y) == 0:  # nothing to learn in this batch
        if parts is not None:
            parts.update(ce=s.new_zeros((), dtype=torch.float32), kd=s.new_zeros((), dtype=torch.float32))
        return s.float().sum() * 0.0
    grad = torch.is_grad_enabled() and s.requires_grad
    loss, ce, kd = _DistillLoss.apply(s, t, t_idx, y, float(alpha), float(temperature), float(label_smoothing), grad)
    if parts is not None:
        parts.update(ce=ce, kd=kd)
    return loss


class _DistillLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s: Tensor, t: Tensor, t_idx: Tensor | None, y: Tensor, alpha: float, T: float,
                eps: float, grad: bool) -> Tensor:
        n, V = s.shape
        ce_total = torch.zeros((), dtype=torch.float32, device=s.device)
        kd_total = torch.zeros((), dtype=torch.float32, device=s.device)
        g = torch.empty_like(s) if grad else None
        step = max(1, CHUNK_ELEMENTS // V)
        for a in range(0, n, step):
            z = s[a : a + step].float()  # (r, V)
            logp = z - torch.logsumexp(z, dim=-1, keepdim=True)  # (r, V) student log-probs at T = 1
            nll = -logp.gather(1, y[a : a + step, None]).squeeze(1)  # (r,)
            ce = nll if eps == 0 else (1 - eps) * nll - eps * logp.mean(-1)
            ce_total += ce.sum()
            zt = z / T  # not in place: for float32 logits, z is a view of them
            logq = zt - torch.logsumexp(zt, dim=-1, keepdim=True)  # (r, V) student log-probs at T
            log_pt = (t[a : a + step].float() / T).log_softmax(dim=-1)  # (r, V) or (r, k)
            pt = log_pt.exp()
            cross = logq if t_idx is None else logq.gather(1, t_idx[a : a + step])  # (r, V) or (r, k)
            # sum p_t (log p_t - log q); 0 log 0 = 0 where the teacher gives a token no mass
            kd_total += (torch.where(pt > 0, pt * log_pt, 0.0) - pt * cross).sum()
            if grad:  # d/dz: (1 - alpha) (softmax(z) - smoothed onehot) + alpha T (softmax(z/T) - p_t), per row
                d = logp.exp_().mul_(1 - alpha)
                d.scatter_add_(1, y[a : a + step, None], d.new_full((len(d), 1), -(1 - alpha) * (1 - eps)))
                if eps:
                    d.sub_((1 - alpha) * eps / V)
                k = logq.exp_()
                if t_idx is None:
                    k.sub_(pt)
                else:
                    k.scatter_add_(1, t_idx[a : a + step], pt.neg_())
                g[a : a + step] = d.add_(k, alpha=alpha * T).div_(n)
        if grad:
            ctx.save_for_backward(g)
        ce, kd = ce_total / n, kd_total / n
        ctx.mark_non_differentiable(ce, kd)
        return (1 - alpha) * ce + alpha * T * T * kd, ce, kd

    @staticmethod
    def backward(ctx, grad_out: Tensor, _ce: Tensor, _kd: Tensor):
        (g,) = ctx.saved_tensors
        return (g * grad_out.to(g.dtype), None, None, None, None, None, None, None)
