"""A chat checkpoint's own Jinja chat template (Llama 3's headers here): imported with the
checkpoint, rendered as transformers' apply_chat_template renders it, used by chat and by
fine-tuning on conversations (replies found by rendering prefixes), and exported back."""

import json

import pytest
import torch
from conftest import shakespeare_text, tiny_overrides

import proselab
from proselab.chat import (
    ChatError,
    RewritesTurns,
    add_special_tokens,
    chat_stop_ids,
    encode_example,
    encode_rows,
    render_chat,
)
from proselab.runs import export_hf
from proselab.tokenizers import train_tokenizer
from proselab.training import train

transformers = pytest.importorskip("transformers")

SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|end_of_text|>"]
# Llama 3's template, as its tokenizer_config.json ships it
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
          "{% endif %}")
CHAT = [{"role": "system", "content": "Speak as a king."}, {"role": "user", "content": "What news?"},
        {"role": "assistant", "content": "The duke is dead."}, {"role": "user", "content": "  And the queen? "},
        {"role": "assistant", "content": "She lives, my lord."}]


def _chat_checkpoint(path, in_tokenizer_config=False):
    """A random Llama with a char tokenizer, Llama 3's special tokens and chat template, saved
    by transformers (chat_template.jinja), or with the template in tokenizer_config.json."""
    tok = add_special_tokens(train_tokenizer("char", [shakespeare_text(5000)]), SPECIALS)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=48,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=128, bos_token_id=tok.token_to_id(SPECIALS[0]),
                                   eos_token_id=tok.token_to_id("<|end_of_text|>"))  # Llama 3's, not the turn's end
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save(path / "tokenizer.json")
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"),
                                                  bos_token=SPECIALS[0], eos_token="<|end_of_text|>")
    hf_tok.chat_template = LLAMA3
    hf_tok.save_pretrained(path)
    if in_tokenizer_config:  # the older layout: the template inside tokenizer_config.json
        (path / "chat_template.jinja").unlink()
        tok_cfg = json.loads((path / "tokenizer_config.json").read_text())
        (path / "tokenizer_config.json").write_text(json.dumps({**tok_cfg, "chat_template": LLAMA3}))
    return hf_tok


def _ids(encoded):
    return encoded["input_ids"] if isinstance(encoded, dict) or hasattr(encoded, "keys") else encoded


@pytest.mark.parametrize("in_tokenizer_config", [False, True])
def test_an_imported_template_prompts_as_apply_chat_template(tmp_path, in_tokenizer_config):
    hf_tok = _chat_checkpoint(tmp_path / "hf", in_tokenizer_config)
    gen = proselab.load(tmp_path / "hf")
    assert gen.config.data.chat_template == LLAMA3
    for turns in (CHAT[:2], CHAT[:4], CHAT[1:2]):
        want = _ids(hf_tok.apply_chat_template(turns, add_generation_prompt=True, tokenize=True))
        assert gen.chat_prompt(turns, 8) == [want]
    eot, eos = gen.tokenizer.token_to_id("<|eot_id|>"), gen.tokenizer.token_to_id("<|end_of_text|>")
    assert gen.config.generation.eos_token_id == [eot, eos]  # a reply ends at the template's end of turn too
    reply = gen.chat(CHAT[:2], do_sample=False, max_new_tokens=6)
    assert reply.text and "<|" not in reply.text


def test_replies_and_their_end_of_turn_are_what_fine_tuning_trains(tmp_path):
    hf_tok = _chat_checkpoint(tmp_path / "hf")
    tok = proselab.load(tmp_path / "hf").tokenizer
    ids, trained, starts = encode_example({"messages": CHAT}, tok, LLAMA3)
    assert ids == _ids(hf_tok.apply_chat_template(CHAT, tokenize=True))  # the whole conversation, as rendered
    eot = tok.token_to_id("<|eot_id|>")
    replies = [tok.encode(m["content"].strip()) + [eot] for m in CHAT if m["role"] == "assistant"]
    got, run = [], []
    for i, t in zip(ids, trained):  # the trained runs of tokens, in order
        if t:
            run.append(i)
        elif run:
            got, run = got + [run], []
    assert got + ([run] if run else []) == replies
    assert starts[0] == 0 and len(starts) == 2  # each exchange starts after a reply
    assert chat_stop_ids(tok, LLAMA3)[0] == tok.token_to_id("<|eot_id|>")


def test_fine_tuning_keeps_the_template_and_exports_it(tmp_path):
    _chat_checkpoint(tmp_path / "hf")
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": CHAT}) + "\n" for _ in range(40)))
    out = tmp_path / "ft"
    train(None, tiny_overrides(data, out, **{"train.init_from": str(tmp_path / "hf"), "train.max_iters": 3,
                                             "model.block_size": 128}))
    gen = proselab.load(out)
    assert gen.config.data.chat_template == LLAMA3 and gen.tokenizer.vocab_size == proselab.load(
        tmp_path / "hf").tokenizer.vocab_size  # no ChatML tokens added
    assert gen.config.generation.eos_token_id[0] == gen.tokenizer.token_to_id("<|eot_id|>")
    gen.chat(CHAT[:2], max_new_tokens=3)
    export_hf(out, tmp_path / "exported")
    back = transformers.AutoTokenizer.from_pretrained(tmp_path / "exported")
    assert back.chat_template == LLAMA3
    assert _ids(back.apply_chat_template(CHAT[:2], add_generation_prompt=True, tokenize=True)) == \
        gen.chat_prompt(CHAT[:2], 8)[0]


def test_bad_templates_are_one_line_errors(tmp_path):
    tok = add_special_tokens(train_tokenizer("char", [shakespeare_text(2000)]), SPECIALS)
    with pytest.raises(ChatError, match="not a valid Jinja template"):
        render_chat(CHAT, template="{% for m in messages %}{{ m.content }}", tokenizer=tok)
    strict = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('start with a user') }}{% endif %}{{ 'x' }}"
    with pytest.raises(ChatError, match="refused the conversation: start with a user"):
        render_chat(CHAT, template=strict, tokenizer=tok)
    # a template whose generation prompt is not how it writes a reply: the reply cannot be found
    rewrites = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|eot_id|>{% endfor %}"
                "{% if add_generation_prompt %}A: {% endif %}")
    with pytest.raises(ChatError, match="does not render a reply after the conversation before it"):
        encode_rows({"messages": CHAT}, tok, rewrites, 1000)
    with pytest.raises(ValueError, match="data.chat_template must be chatml or a Jinja chat template"):
        proselab.config.load_config(None, {"data.chat_template": "llama3", "data.dataset": "x"})


def test_unreadable_template_files_are_one_line_errors(tmp_path):
    from proselab.checkpoint import RunError
    from proselab.interop.common import read_chat_template

    (tmp_path / "chat_template.jinja").write_bytes(b"\xff\xfe{{ messages }}")
    with pytest.raises(RunError, match="chat_template.jinja is not UTF-8 text"):
        read_chat_template(tmp_path)
    (tmp_path / "chat_template.jinja").unlink()
    (tmp_path / "tokenizer_config.json").write_text("[1, 2]")
    with pytest.raises(RunError, match="tokenizer_config.json is not a JSON object"):
        read_chat_template(tmp_path)


# Llama 3's layout with Qwen3's habit: a reply's reasoning (here what comes before "Said: ") is
# dropped once a later user message follows it, so a conversation does not render as the beginning of its continuation
QWEN3_LIKE = ("{% set ns = namespace(last=0) %}{% for m in messages %}{% if m['role'] == 'user' %}"
              "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}{% for message in messages %}"
              "{% set text = message['content'] %}{% if message['role'] == 'assistant' and loop.index0 < ns.last %}"
              "{% set text = text.split('Said: ')[-1] %}{% endif %}{% set content = '<|start_header_id|>' + "
              "message['role'] + '<|end_header_id|>\n\n' + text | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
              "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
              "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
THINKING = [CHAT[0], CHAT[1], {"role": "assistant", "content": "Aside: the duke. Said: The duke is dead."},
            {"role": "user", "content": "And the king?"},
            {"role": "assistant", "content": "Aside: the king. Said: He lives, my lord."}]


def test_a_template_that_rewrites_earlier_turns_trains_each_reply_in_a_row_of_its_own(tmp_path):
    """Qwen3's template drops earlier replies' reasoning: each reply then trains in a row of its
    own, after the conversation as generation renders it (the earlier reasoning gone), and a row
    too long for the window leaves out its oldest turns, never the system message."""
    _chat_checkpoint(tmp_path / "hf")
    tok = proselab.load(tmp_path / "hf").tokenizer
    with pytest.raises(RewritesTurns):
        encode_example({"messages": THINKING}, tok, QWEN3_LIKE)
    rows = encode_rows({"messages": THINKING}, tok, QWEN3_LIKE, 1000)
    eot = tok.token_to_id("<|eot_id|>")
    assert len(rows) == 2
    for (ids, trained, starts), i in zip(rows, (2, 4)):
        assert tok.decode(ids, skip_special_tokens=False) == render_chat(THINKING[: i + 1], False, QWEN3_LIKE, tok)
        assert tok.decode([t for t, on in zip(ids, trained) if on], skip_special_tokens=False) == \
            THINKING[i]["content"] + "<|eot_id|>" and ids[-1] == eot and starts == [0]
    second = tok.decode(rows[1][0], skip_special_tokens=False)
    assert "The duke is dead." in second and "Aside: the duke" not in second  # as generation sees the reply
    short = encode_rows({"messages": THINKING}, tok, QWEN3_LIKE, len(rows[1][0]) - 1)
    kept = tok.decode(short[1][0], skip_special_tokens=False)
    assert kept.startswith("<|begin_of_text|><|start_header_id|>system") and "What news?" not in kept
    assert "And the king?" in kept and len(short[1][0]) < len(rows[1][0])
    # fine-tuning on such conversations runs (encode_rows makes its rows)
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": THINKING}) + "\n" for _ in range(40)))
    out = tmp_path / "ft"
    train(None, tiny_overrides(data, out, **{"train.init_from": str(tmp_path / "hf"), "train.max_iters": 3,
                                             "model.block_size": 128, "data.chat_template": QWEN3_LIKE}))
    assert proselab.load(out).config.data.chat_template == QWEN3_LIKE
