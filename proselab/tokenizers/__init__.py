"""Tokenizers: characters, words, byte-level BPE, GPT-2's and sentencepiece's, each a Hugging Face tokenizer.json.

Every kind is a ``tokenizers.Tokenizer`` underneath, so a run saves one file that
``tokenizers.Tokenizer.from_file`` and ``transformers.PreTrainedTokenizerFast`` load as is
(Marian's also keeps its sentencepiece model beside it: see the end of this docstring).
The file has no room for extra fields (the HF loader rejects unknown keys), so the kind is
read back from the tokenizer's structure:

- char: a BPE model without merges or pre-tokenizer (each character is its own token)
- word: a WordLevel model
- bpe:  a BPE model with a byte-level pre-tokenizer
- gpt2: the same, holding GPT-2's exact vocabulary
- unigram: a sentencepiece Unigram model (T5's, Marian's), imported by ``interop.hf_tokenizers``

Marian's tokenizers encode through the ``sentencepiece`` library itself, as ``transformers``
does, so that the ids are exact: a ``SentencePieceTokenizer`` keeps its sentencepiece model
beside the tokenizer.json (``tokenizer.spm``), which then holds the vocabulary and ids.
"""

from .base import (EOT, KINDS, TRAINABLE, TWEET_URL, TWEET_USER, UNK, WORD_PATTERN, Tokenizer, TokenizerError,
                   tweet_normalizer)
from .files import gpt2_tokenizer, load_tokenizer, vocab_span
from .spm import SPM_SUFFIX, SentencePieceTokenizer
from .train import get_tokenizer, train_tokenizer

__all__ = ["EOT", "KINDS", "SPM_SUFFIX", "TRAINABLE", "TWEET_URL", "TWEET_USER", "UNK", "WORD_PATTERN",
           "SentencePieceTokenizer", "Tokenizer", "TokenizerError", "get_tokenizer", "gpt2_tokenizer",
           "load_tokenizer", "train_tokenizer", "tweet_normalizer", "vocab_span"]
