"""Sequence to sequence: an encoder-decoder learns each pair's target from its source
(``data.format=pairs``); evaluation adds greedy-decoded BLEU and chrF of val pairs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..config import Config, ConfigError, GenerationConfig
from ..data.batch import Batch
from ..data import progress
from ..data.seq2seq import prepare_pairs
from ..evaluation import translate
from ..metrics import score
from ..models.prepack import refresh
from ..tokenizers import Tokenizer
from .base import BaseTask, raise_not_labelled


class Seq2SeqTask(BaseTask):
    def __init__(self, cfg: Config, data):
        super().__init__(cfg, data)
        self.src_tokenizer: Tokenizer = data.src_tokenizer
        self.bleu_samples = cfg.train.eval_bleu_samples  # val pairs decoded at each eval (0 = none)
        self.max_new_tokens, self.truncate_src = cfg.generation.max_new_tokens, cfg.data.truncate_src
        self.limits = (cfg.data.max_src_len, cfg.data.max_tgt_len)
        self.scores = ("loss", "bleu", "chrf") if self.bleu_samples else ("loss",)
        self.examples: list[tuple[str, str, str]] = []  # (source, reference, hypothesis) of the last eval

    @classmethod
    def build(cls, cfg: Config, tokenizer: Tokenizer | None, src_tokenizer: Tokenizer | None) -> Seq2SeqTask:
        if cfg.model.labels:
            raise_not_labelled(cfg)
        if cfg.model.family != "seq2seq" and cfg.train.init_from not in ("scratch", "resume"):  # the checkpoint's
            raise ConfigError(f"data.dataset holds sentence pairs, which train a seq2seq model, but train.init_from "
                              f"'{cfg.train.init_from}' is a {cfg.model.family} model: fine-tune a seq2seq run on "
                              f"pairs, or this {cfg.model.family} run on text or .jsonl examples")
        if cfg.model.family != "seq2seq":
            raise ConfigError(f"data.dataset holds sentence pairs, which train an encoder-decoder: set "
                              f"model.family=seq2seq (it is {cfg.model.family}), or give text or .jsonl examples")
        return cls(cfg, prepare_pairs(cfg.data, tokenizer, src_tokenizer, cfg.model))

    def tokenizers(self) -> dict[str, Tokenizer]:
        if self.src_tokenizer is self.tokenizer:
            return super().tokenizers()
        return {**super().tokenizers(), "src_tokenizer.json": self.src_tokenizer}

    def config_updates(self, cfg: Config) -> dict[str, Any]:
        """The source vocabulary and the decoder's start token, from the tokenizers."""
        updates, m, tok = super().config_updates(cfg), cfg.model, self.tokenizer
        src_size = 0 if self.src_tokenizer is tok else self.src_tokenizer.vocab_size
        if m.src_vocab_size < src_size:
            updates["model.src_vocab_size"] = src_size
        if m.bos_id < 0:
            updates["model.bos_id"] = tok.bos_id if tok.bos_id is not None else tok.eos_id
        if m.tgt_prefix_id >= 0 and cfg.generation.forced_bos_token_id is None:  # decoding starts targets alike
            updates["generation.forced_bos_token_id"] = m.tgt_prefix_id
        return updates

    def warnings(self) -> list[str]:
        out, d = [], self.data
        if d.dropped:
            out.append(f"{d.dropped} training pairs are longer than data.max_src_len={self.limits[0]}"
                       f" / data.max_tgt_len={self.limits[1]} tokens and were left out")
        if d.skipped:
            out.append(f"{d.skipped} malformed lines were skipped (data.bad_lines=skip)")
        return out + super().warnings()

    def evaluate(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None,
                 final: bool = False) -> dict[str, float]:
        """The val loss, and (when ``train.eval_bleu_samples`` > 0) BLEU and chrF of greedy
        decoding: of the first eval_bleu_samples val pairs, or of all of them when ``final``."""
        scores = super().evaluate(model, device, dtype, final)
        if self.bleu_samples:
            scores.update(self.decoded_scores(model, None if final else self.bleu_samples))
        return scores

    def estimate_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        """``eval_iters x batch_size`` val pairs drawn at random (all of them when the split is
        smaller), batched in length order. Runs of the length-sorted split, as training draws
        them, made the estimate swing with where the runs fell (loss grows with length): 0.64
        against the full pass's 0.96 on the reverse task, 0.92 +- 0.11 over 30 seeds."""
        val = self.data.val
        n = min(self.eval_iters * self.batch_size, len(val))
        chosen = torch.randperm(len(val), generator=generator)[:n].numpy()
        rank = np.empty(len(val), dtype=np.int64)
        rank[val.order] = np.arange(len(val))  # each pair's place in the length order
        chosen = chosen[np.argsort(rank[chosen], kind="stable")]
        for s in range(0, n, self.batch_size):
            yield self.batch("val", torch.from_numpy(chosen[s : s + self.batch_size]))

    def report(self) -> list[str]:
        """Two val pairs as the last eval decoded them, as JoeyNMT shows them."""
        lines = []
        for src, ref, hyp in self.examples:
            lines += [f"source     {_short(src)}", f"reference  {_short(ref)}", f"hypothesis {_short(hyp)}"]
        return lines

    def decoded_scores(self, model: torch.nn.Module, n: int | None) -> dict[str, float]:
        """Greedy-decoded BLEU and chrF of the first ``n`` val pairs (all when None)."""
        refresh(model)  # the fused optimizer changed the weights without a version bump
        pairs = self.data.val.text[:n]
        src_len = max(len(s) for s in self.data.val.src[: len(pairs)])
        prefix = self.data.tgt_prefix  # BART's <s>, which starts every target: forced, as its checkpoints do
        g = GenerationConfig(do_sample=False, max_new_tokens=min(self.max_new_tokens, 2 * src_len + 10),
                             forced_bos_token_id=prefix if prefix >= 0 else None)
        with progress.showing(self.progress):
            hyps = translate(model, [s for s, _ in pairs], self.src_tokenizer, self.tokenizer, g, self.batch_size,
                             self.truncate_src, desc=f"decoding {len(pairs):,} val pairs", leave=n is None)
        result = score(hyps, [t for _, t in pairs], ("bleu", "chrf"))
        self.examples = [(src, ref, hyp) for (src, ref), hyp in zip(pairs[:2], hyps)]
        return {"bleu": round(result["bleu"], 2), "chrf": round(result["chrf"], 2)}


def _short(text: str, width: int = 150) -> str:
    """One terminal line of ``text``."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
