"""``proselab.load`` and the ``Generator`` it returns: a loaded run that generates text; its
classification, inspection and chat methods come from the mixins beside it."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from ..config import Config, GenerationConfig, override_generation
from ..data.batch import Seq2SeqBatch
from ..data.seq2seq import source_batch
from ..decoding import Delta, Generation
from ..decoding import generate as generate_ids
from ..decoding import stream as stream_ids
from ..distributed import pick_device
from ..runs import open_run
from ..tokenizers import Tokenizer
from .chatting import Chatting
from .classify import Classifying
from .inspection import Inspecting


class Generator(Classifying, Inspecting, Chatting):
    """A trained model with its tokenizer and generation defaults (from the run's config.json);
    a classifier run (``model.labels``) classifies instead of generating."""

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, config: Config, run_dir: Path | None = None,
                 src_tokenizer: Tokenizer | None = None):
        self.model, self.tokenizer, self.config, self.run_dir = model, tokenizer, config, run_dir
        self.src_tokenizer = src_tokenizer or tokenizer  # a seq2seq run's source side
        self.draft: Generator | None = None  # speculative decoding's proposer (use_draft)
        self.num_draft_tokens = 5

    def use_draft(self, draft: Generator, num_draft_tokens: int = 5) -> Generator:
        """Decode one sequence at a time speculatively: ``draft``, a smaller model of the same
        kind and vocabulary (a GPT for a GPT, a seq2seq Transformer for one; a distilled
        student, say), proposes tokens that this model checks several at a time
        (``decoding.speculative``). Greedy tokens stay this model's own; samples follow its
        distribution. Returns self."""
        for gen, what in ((self, "the model"), (draft, "the draft")):
            m = gen.config.model
            if gen.is_classifier or not callable(getattr(gen.model, "extend", None)):
                kind = "classifier" if gen.is_classifier else f"{m.arch} seq2seq" if gen.is_seq2seq else m.family
                raise ValueError(f"speculative decoding needs GPT language models or seq2seq Transformers; {what} "
                                 f"is a {kind} run")
        if draft.is_seq2seq != self.is_seq2seq:
            raise ValueError("the draft and the model must both be language models or both be seq2seq models")
        sides = [("tokenizer", draft.tokenizer, self.tokenizer)]
        if self.is_seq2seq:  # the draft reads the same source and starts from the same token
            sides.append(("source tokenizer", draft.src_tokenizer, self.src_tokenizer))
            if draft.config.model.bos_id != self.config.model.bos_id:
                raise ValueError(f"the draft's decoder starts from token {draft.config.model.bos_id}, the model's "
                                 f"from {self.config.model.bos_id}: speculative decoding needs the same start")
        for what, theirs, ours in sides:
            if theirs.hf.get_vocab(with_added_tokens=True) != ours.hf.get_vocab(with_added_tokens=True):
                raise ValueError(f"the draft's {what} is not the model's: speculative decoding needs the same "
                                 "vocabulary (a student distilled from this model has it)")
        if not isinstance(num_draft_tokens, int) or num_draft_tokens < 1:
            raise ValueError(f"num_draft_tokens must be an integer >= 1, got {num_draft_tokens!r}")
        self.draft, self.num_draft_tokens = draft, num_draft_tokens
        return self

    def _decoding(self) -> dict:
        """The keywords every decoding call of this run takes."""
        return {"tokenizer": self.tokenizer, "suppress_ids": self.suppress_ids,
                "draft": None if self.draft is None else self.draft.model, "num_draft_tokens": self.num_draft_tokens}

    @property
    def is_seq2seq(self) -> bool:
        """An encoder-decoder: prompts are sources to transform, not text to continue."""
        return self.config.model.family == "seq2seq"

    @property
    def is_classifier(self) -> bool:
        """A classifier: it labels texts (``classify``) and does not generate."""
        return bool(self.config.model.labels)

    @property
    def suppress_ids(self) -> list[int]:
        """<unk> is never generated: it stands for text the model cannot spell out."""
        return [self.tokenizer.unk_id] if self.tokenizer.unk_id is not None else []

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generation_config(self, **overrides) -> GenerationConfig:
        """The run's generation defaults with ``overrides`` applied and validated."""
        self._check_generates()
        cfg = override_generation(self.config.generation, overrides)
        eos = cfg.eos_token_id if isinstance(cfg.eos_token_id, list) else [cfg.eos_token_id]
        vocab = self.config.model.vocab_size
        if any(e is not None and e >= vocab for e in eos):
            raise ValueError(f"eos_token_id={cfg.eos_token_id} is not a token of this model (its vocabulary has "
                             f"{vocab} tokens, ids 0-{vocab - 1})")
        if outside := sorted(i for i in cfg.logit_bias if i >= vocab):
            raise ValueError(f"logit_bias names token {outside[0]}, which is not a token of this model (its "
                             f"vocabulary has {vocab} tokens, ids 0-{vocab - 1})")
        return cfg

    def _check_generates(self) -> None:
        if self.is_classifier:
            raise ValueError(f"this run is a classifier ({', '.join(self.config.model.labels)}): it labels texts and "
                             "does not generate; use classify (proselab classify RUN --text ...)")

    def encode_prompt(self, prompt: str) -> list[int]:
        """A language model's prompt ids, after the ids its tokenizer starts every text with
        (a Llama checkpoint's ``<s>``, as transformers' tokenizer adds it)."""
        if prompt:
            ids = self.tokenizer.encode(prompt)
            if self.tokenizer.count_unknown(ids):
                missing = ", ".join(repr(t) for t in self.tokenizer.unknown_tokens(prompt))
                warnings.warn(f"the prompt has text this model's vocabulary lacks, read as <unk>: {missing}",
                              stacklevel=3)
            return self.tokenizer.with_prefix(ids)
        if self.tokenizer.bos_id is not None:
            return [self.tokenizer.bos_id]
        raise ValueError(
            "the prompt is empty and this model has no beginning-of-sequence token to start from; "
            "give a non-empty prompt "
            "(e.g. prompt='\\n' for a character model)"
        )

    def _prompts(self, prompt: str | list[str] | list[int] | list[list[int]]) -> list[list[int]] | Seq2SeqBatch:
        """Prompts as token ids (a language model) or a source batch (seq2seq). Like transformers,
        a language model also takes token ids: one list of ints, or a list of such lists."""
        if isinstance(prompt, str) or _is_ids(prompt):
            prompts = [prompt]
        elif isinstance(prompt, (list, tuple)):
            prompts = list(prompt)
        else:
            raise ValueError(f"prompt must be text, a list of texts, or token ids (a list of ints, or a list of "
                             f"such lists); got {type(prompt).__name__}")
        if not prompts:
            raise ValueError("prompt is an empty list; give at least one prompt")
        if self.is_seq2seq:
            if not all(isinstance(p, str) for p in prompts):
                raise ValueError("a seq2seq run's prompts are source texts (str), not token ids")
            return self._sources(prompts)
        return [self._prompt_ids(p, i) for i, p in enumerate(prompts)]

    def _prompt_ids(self, prompt, index: int) -> list[int]:
        if isinstance(prompt, str):
            return self.encode_prompt(prompt)
        vocab = self.config.model.vocab_size
        if not _is_ids(prompt) or not prompt:
            raise ValueError(f"prompt {index} is neither text nor a non-empty list of token ids: {prompt!r:.60}")
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt {index} has token ids outside this model's vocabulary (0-{vocab - 1}): {bad[:5]}")
        return [int(t) for t in prompt]

    def _sources(self, texts: list[str]) -> Seq2SeqBatch:
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"source {i} is empty; an encoder-decoder needs text to translate or transform")
            unknown = self.src_tokenizer.unknown_tokens(text)
            if unknown:
                missing = ", ".join(repr(t) for t in unknown)
                warnings.warn(f"the source has text this model's vocabulary lacks, read as <unk>: {missing}",
                              stacklevel=4)
        return source_batch(self.src_tokenizer, texts, truncate=self.config.data.truncate_src,
                            prefix=self.config.model.src_prefix_id)

    def complete(self, prompt: str | list[str] = "", **overrides) -> list[Generation]:
        """Continue each prompt; the full result of every sequence.

        Args:
            prompt: one prompt, or a list of prompts (batched together, any lengths).
            **overrides: GenerationConfig fields, e.g. ``max_new_tokens=100, top_p=0.9,
                num_beams=4, stop=["\\n\\n"], seed=0``; ``temperature=0`` is greedy. Also
                transformers' ``max_length`` instead of ``max_new_tokens``: the prompt's tokens
                (a batch's longest) plus the new ones; for seq2seq, the output's length counting
                its start token, as in transformers (``max_length - 1`` new tokens).

        Returns:
            One Generation (text, tokens, finish_reason, score, ...) per sequence, grouped by
            prompt: num_return_sequences per prompt.
        """
        self._check_generates()  # before the prompts are read, so a classifier run says what it is first
        prompts = self._prompts(prompt)
        cfg = self.generation_config(**self._new_tokens(prompts, overrides))
        return generate_ids(self.model, prompts, cfg, **self._decoding())

    def generate(self, prompt: str | list[str] | list[int] | list[list[int]] = "", **overrides) -> str | list[str]:
        """Continue ``prompt`` and return the new text (not the prompt).

        Args:
            prompt: one prompt, or a list of prompts; a language model also takes token ids
                (one list of ints, or a list of them), as transformers' generate does.
            **overrides: GenerationConfig fields (see ``complete``).

        Returns:
            A string for one prompt (text or ids) and one sequence; otherwise a list of strings,
            grouped by prompt.
        """
        outs = [g.text for g in self.complete(prompt, **overrides)]
        single = (isinstance(prompt, str) or _is_ids(prompt)) and len(outs) == 1
        return outs[0] if single else outs

    def stream(self, prompt: str | list[str] = "", **overrides) -> Iterator[Delta]:
        """Like ``complete``, but yield each sequence's new text as it is generated.

        Yields:
            Delta(index, text, tokens, finish_reason, logprobs); the texts of one index add up
            to that sequence's ``complete`` text.
        """
        self._check_generates()  # before the prompts are read, so a classifier run says what it is first
        prompts = self._prompts(prompt)
        cfg = self.generation_config(**self._new_tokens(prompts, overrides))
        yield from stream_ids(self.model, prompts, cfg, **self._decoding())

    def _new_tokens(self, prompts: list[list[int]] | Seq2SeqBatch, overrides: dict) -> dict:
        """``overrides`` with transformers' ``max_length`` as the max_new_tokens it leaves. It
        counts what the decoder already holds: a language model's prompt (a batch's longest,
        as transformers' padding makes it), an encoder-decoder's start token."""
        if "max_length" not in overrides:
            return overrides
        over = dict(overrides)
        max_length = over.pop("max_length")
        if "max_new_tokens" in over:
            raise ValueError("give max_new_tokens (new tokens) or max_length (prompt + new tokens), not both")
        if self.is_seq2seq:
            held, what = 1, "the output's start token"
        else:
            held = max(map(len, prompts))
            what = f"the prompt's {held} tokens"
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length <= held:
            raise ValueError(f"max_length must be an integer > {held}: it counts {what} too, as in transformers; "
                             f"got {max_length!r} (max_new_tokens counts new tokens only)")
        over["max_new_tokens"] = max_length - held
        return over


def _is_ids(value) -> bool:
    """A list of ints (bools are not token ids)."""
    return isinstance(value, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool) for t in value) \
        and len(value) > 0


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load(run_dir: str | Path, device: str = "auto", dtype: str = "auto", draft: str | Path | None = None,
         num_draft_tokens: int = 5) -> Generator:
    """Load a run directory for generation.

    Args:
        run_dir: a directory written by ``proselab train``, a Hugging Face checkpoint
            directory, or a Hugging Face model id (``gpt2``, ``Helsinki-NLP/opus-mt-en-es``,
            ``name@revision``), downloaded once into the Hugging Face cache.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda[:N]``.
        dtype: the weights' dtype for decoding: ``auto`` (as saved; a trained run's are
            float32), ``float32``, ``bfloat16`` or ``float16``. bfloat16 reads half the bytes
            per step and uses the bf16 matrix units of recent CPUs (AMX) and GPUs; its tokens
            can differ from float32's once two candidates are close.
        draft: a smaller GPT run of the same vocabulary, for speculative decoding
            (``Generator.use_draft``), loaded on the same device and in the same dtype.
        num_draft_tokens: the draft's tokens a round to start with.
    """
    if not isinstance(run_dir, (str, os.PathLike)):
        raise ValueError(f"run_dir must be the path of a run directory (or a Hugging Face checkpoint directory); "
                         f"got {type(run_dir).__name__}")
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"dtype must be auto, {', '.join(DTYPES)}; got '{dtype}'")
    # a local directory, or a Hugging Face model id's snapshot in the Hugging Face cache
    run_dir, model, tokenizer, cfg, src_tokenizer = open_run(run_dir, pick_device(device, "device"))
    if dtype != "auto":
        model.to(DTYPES[dtype])
    gen = Generator(model, tokenizer, cfg, Path(run_dir), src_tokenizer)
    return gen if draft is None else gen.use_draft(load(draft, device, dtype), num_draft_tokens)
