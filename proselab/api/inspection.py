"""What a loaded run shows of itself: attention maps and explanations (``Generator.attention``,
``Generator.explain``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.batch import Seq2SeqBatch
from ..decoding import generate as generate_ids
from ..explain import NEW_TOKENS, Explanation
from ..explain import explain as explain_ids


@dataclass
class AttentionMap:
    """Where a model looked: for seq2seq, one row per generated token, one column per source
    token; for a GPT, its self-attention over the text, a row and a column per token."""

    weights: torch.Tensor  # (T, S) attention of each output token over the source; rows sum to 1
    src_tokens: list[str]  # the S source tokens (the last is the end-of-text token the encoder reads)
    tgt_tokens: list[str]  # the T generated tokens (and the end-of-text token, when the output ended there)
    text: str  # the generated text
    layers: torch.Tensor | None = None  # (n_layer, n_head, T, S) every layer's and head's weights (a GPT's)


class Inspecting:
    """``Generator``'s attention and explanation methods (a mixin over its model, tokenizers,
    config and prompt handling)."""

    def attention(self, source: str, **overrides) -> AttentionMap:
        """Transform ``source`` (greedy unless overridden) and return the cross-attention of
        every generated token over the source tokens: an RNN's attention, or the Transformer's
        last decoder layer averaged over heads. A GPT run returns its self-attention over
        ``source`` itself (nothing is generated), every layer's and head's in ``layers``.

        Args:
            source: the text to translate / summarize / answer (a GPT: the text to read).
            **overrides: GenerationConfig fields.
        """
        if self.config.model.family == "gpt":
            return self._self_attention(source)
        if not self.is_seq2seq:
            raise ValueError(f"attention maps are drawn for gpt and seq2seq runs; this run is an "
                             f"{self.config.model.family} model, which has no attention")
        batch = self._sources([source])
        cfg = self.generation_config(**{"do_sample": False, **self._new_tokens(batch, overrides),
                                        "num_return_sequences": 1})
        out = generate_ids(self.model, batch, cfg, tokenizer=self.tokenizer, suppress_ids=self.suppress_ids)[0]
        eos = self.tokenizer.eos_id
        tgt = torch.tensor([[self.config.model.bos_id, *out.tokens]])  # (1, T) decoder inputs
        inputs = Seq2SeqBatch(batch.src, batch.mask, tgt).to(self.device)
        weights = self.model.cross_attention(inputs)[0].float().cpu()  # (T, S)
        produced = out.tokens + ([eos] if out.finish_reason == "eos" else [])
        weights = weights[: len(produced)]
        name = self.tokenizer.id_to_token
        return AttentionMap(weights, [self.src_tokenizer.id_to_token(i) for i in batch.src[0].tolist()],
                            [name(i) for i in produced], out.text)

    def explain(self, text: str | None = None, prompt: str | None = None, method: str = "tokens",
                target: str | int | None = None, samples: int | None = None, top_k: int = 5, seed: int = 0,
                part: str = "cross", **overrides) -> Explanation:
        """Explain the model on a text: how sure it was of each token, where it looked, or which
        input tokens drove its output (see ``proselab.explain``).

        Which text is what: a language model scores ``text`` after ``prompt`` (without a prompt,
        all of ``text``; without a text, its greedy continuation of ``prompt``); with
        ig/shapley/lime, the prompt's tokens (or, alone, the text's) are attributed. A seq2seq run
        reads ``prompt`` as the source and scores ``text`` (default: its greedy output). A
        classifier explains the label of ``text``.

        Args:
            text: the text to score or classify.
            prompt: what the model reads first (a seq2seq run's source).
            method: tokens, attention, ig (integrated gradients), shapley or lime.
            target: attributions: a classifier's label (default: the predicted one), or the
                index or text of one output token (default: the whole output's log-probability).
            samples: ig: integration steps (50); shapley: permutations (20), each one forward
                pass per input token; lime: perturbed texts (200). At most ``MAX_PASSES`` passes.
            top_k: tokens: the alternatives shown per token.
            seed: shapley's and lime's sampling.
            part: attention of a seq2seq Transformer: cross (each output token over the source),
                encoder or decoder (self-attention), every layer and head.
            **overrides: GenerationConfig fields for a continuation that is generated (greedy,
                20 new tokens, unless overridden).

        Returns:
            An Explanation; ``.save(out_dir)`` writes its JSON, HTML page and PNG.
        """
        generation = None
        if not self.is_classifier:
            generation = self.generation_config(**{"do_sample": False, "num_return_sequences": 1,
                                                   "max_new_tokens": NEW_TOKENS, **overrides})
        return explain_ids(self.model, self.config, self.tokenizer, self.src_tokenizer, text, prompt, method, target,
                           samples, top_k, seed, generation, self.suppress_ids, part)

    def _self_attention(self, text: str) -> AttentionMap:
        """A GPT's attention over ``text`` (no generation): ``weights`` is the last layer's,
        averaged over heads, ``layers`` every layer's and head's."""
        ids = self.encode_prompt(text)
        if len(ids) > self.config.model.block_size:
            raise ValueError(f"the text is {len(ids)} tokens and this model's window is "
                             f"{self.config.model.block_size}: give a shorter text")
        layers = self.model.attention_weights(torch.tensor([ids], device=self.device))[:, 0].cpu()  # (L, nh, T, T)
        tokens = [self.tokenizer.decode([i], skip_special_tokens=False) for i in ids]
        return AttentionMap(layers[-1].mean(0), tokens, tokens, "", layers)
