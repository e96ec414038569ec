"""Supervised fine-tuning: the loss on responses only, of prompt/response pairs or chat
conversations (``data.format=sft``)."""

from __future__ import annotations

from typing import Any

from ..chat import chat_stop_ids, is_chat_tokenizer
from ..config import Config
from ..data.sft import prepare_examples
from ..tokenizers import Tokenizer
from .base import BaseTask
from .lm import check_not_seq2seq


class SFTTask(BaseTask):
    """Examples cut to ``model.block_size + 1`` tokens; a chat run stops its replies at the end of a turn."""

    def __init__(self, cfg: Config, data):
        super().__init__(cfg, data)
        self.window = cfg.model.block_size + 1

    @classmethod
    def build(cls, cfg: Config, tokenizer: Tokenizer | None, src_tokenizer: Tokenizer | None) -> SFTTask:
        check_not_seq2seq(cfg)
        return cls(cfg, prepare_examples(cfg.data, cfg.model.block_size, tokenizer))

    def config_updates(self, cfg: Config) -> dict[str, Any]:
        """A run fine-tuned on conversations ends its replies at the template's end-of-turn token."""
        updates = super().config_updates(cfg)
        template = cfg.data.chat_template
        if is_chat_tokenizer(self.tokenizer, template) and cfg.generation.eos_token_id is None:
            updates["generation.eos_token_id"] = chat_stop_ids(self.tokenizer, template)
        return updates

    def warnings(self) -> list[str]:
        out, d = super().warnings(), self.data
        if d.truncated:
            out.append(f"{d.truncated} examples (or exchanges of a long conversation) are longer than "
                       f"model.block_size + 1 = {self.window} tokens and were cut at the end")
        if d.dropped:
            out.append(f"{d.dropped} examples have no response token within their first {self.window} tokens "
                       "and are left out")
        return out
