"""Tokenizers of Marian, T5 and BART checkpoints: ids, decoding and special ids equal to
`transformers`' tokenizers, built from tiny sentencepiece / BPE models trained here (no download);
a run directory's copy loads back identical, and the exported files load in `transformers`."""

import json
import warnings

import pytest

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

from tokenizers import Tokenizer as HFTokenizer  # noqa: E402
from tokenizers import models, pre_tokenizers, trainers  # noqa: E402

from proselab.interop.hf_tokenizers import load_pretrained_tokenizers, save_pretrained_tokenizers  # noqa: E402
from proselab.tokenizers import SentencePieceTokenizer, TokenizerError, load_tokenizer  # noqa: E402

from conftest import SHARED, train_spm, write_marian_tokenizer  # noqa: E402

DATA = SHARED / "bible-en-es" / "train.short.tsv"
GPT2_DIR = SHARED / "gpt2-tokenizer"
SAMPLES = [
    "Héllo  wörld, Привет мир! 你好世界 🙂 12345   extra spaces\nnew line ñandú",
    "  En el principio crió Dios los cielos y la tierra. ¿Qué? «Sí» — 3,14 ",
    "a</s>b <unk> c <pad>d",
    "",
    "🙂🙂 ÆØÅ ﬁ ① x²",
    "Wait . Is it , he said ? I 'm sure it 's not ! They 've gone .",
]


def _pairs():
    with open(DATA, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t")[:2] for _, line in zip(range(300), f)]


def _auto(d):
    from transformers import AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MarianTokenizer recommends sacremoses
        return AutoTokenizer.from_pretrained(str(d))


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """{name: directory} of Marian, T5 and BART tokenizers, as their checkpoints ship them."""
    root = tmp_path_factory.mktemp("hf_tok")
    pairs = _pairs()
    en, es = [a for a, _ in pairs], [b for _, b in pairs]
    out = {}
    # Marian: one sentencepiece model per side (Marian's ids: </s>=0, <unk>=1), vocab.json their union + <pad>
    marian = root / "marian"
    marian.mkdir()
    write_marian_tokenizer(marian, en, es, 300)
    (marian / "config.json").write_text(json.dumps({"model_type": "marian"}))
    out["marian"] = marian
    # T5: spiece.model (T5's ids: <pad>=0, </s>=1, <unk>=2) + 100 sentinels; and transformers' tokenizer.json of it
    t5 = root / "t5"
    t5.mkdir()
    (t5 / "spiece.model").write_bytes(train_spm(en + es, 300, pad_id=0, eos_id=1, unk_id=2, bos_id=-1))
    (t5 / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 100}))
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5"}))
    out["t5"] = t5
    out["t5_json"] = root / "t5_json"
    _auto(t5).save_pretrained(str(out["t5_json"]))
    out["t5_clean"] = root / "t5_clean"  # a tokenizer_config asking decode to clean up spaces (" ." -> ".")
    out["t5_clean"].mkdir()
    (out["t5_clean"] / "spiece.model").write_bytes((t5 / "spiece.model").read_bytes())
    (out["t5_clean"] / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "extra_ids": 100, "clean_up_tokenization_spaces": True}))
    # BART: byte-level BPE with <s> <pad> </s> <unk> first and <mask> last, as vocab.json + merges.txt
    bart = root / "bart"
    bart.mkdir()
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train_from_iterator(en + es, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf.model.save(str(bart))
    bart_vocab = json.loads((bart / "vocab.json").read_text(encoding="utf-8"))
    bart_vocab["<mask>"] = len(bart_vocab)
    (bart / "vocab.json").write_text(json.dumps(bart_vocab, ensure_ascii=False), encoding="utf-8")
    (bart / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BartTokenizer"}))
    out["bart"] = bart
    out["bart_json"] = root / "bart_json"
    _auto(bart).save_pretrained(str(out["bart_json"]))
    return out


def _model_type(name):
    return name.split("_")[0]


def _check_same(ref, tok, target=False):
    """``tok`` encodes, decodes and names its special tokens as the transformers tokenizer ``ref``."""
    for text in SAMPLES:
        if target:  # the target side: text_target, without the eos transformers appends
            ids = ref(text_target=text).input_ids
            assert ids[-1] == ref.eos_token_id
            ids = ids[:-1]
        else:
            ids = ref(text, add_special_tokens=False).input_ids
        assert tok.encode(text) == ids, text
        assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=True), text
    assert tok.encode_batch(SAMPLES[:2]) == [tok.encode(t) for t in SAMPLES[:2]]
    with_specials = tok.encode(SAMPLES[0]) + [tok.eos_id, tok.pad_id, tok.unk_id]
    assert tok.decode(with_specials) == ref.decode(with_specials, skip_special_tokens=True)
    for role in ("eos", "pad", "unk", "bos"):
        assert getattr(tok, f"{role}_id") == getattr(ref, f"{role}_token_id"), role


@pytest.mark.parametrize("name", ["marian", "t5", "t5_json", "t5_clean", "bart", "bart_json"])
def test_ids_equal_transformers(dirs, name):
    ref = _auto(dirs[name])
    tok, src = load_pretrained_tokenizers(dirs[name], _model_type(name))
    if name == "marian":
        assert isinstance(src, SentencePieceTokenizer) and src.model_proto != tok.model_proto
        _check_same(ref, src)
        _check_same(ref, tok, target=True)
        assert tok.vocab_size == src.vocab_size == ref.vocab_size
    else:
        assert src is None
        _check_same(ref, tok)
        assert tok.vocab_size == len(ref)
    if name.startswith("t5"):
        sentinels = [f"<extra_id_{i}>" for i in (0, 99)]
        assert [tok.token_to_id(t) for t in sentinels] == ref.convert_tokens_to_ids(sentinels) == [399, 300]
        assert tok.encode("a <extra_id_0> b") == ref("a <extra_id_0> b", add_special_tokens=False).input_ids


def test_marian_language_code_and_unknown(dirs):
    ref = _auto(dirs["marian"])
    _, src = load_pretrained_tokenizers(dirs["marian"], "marian")
    for text in (">>es<< Hello", ">>fr<<", "x >>es<< y", ">>a<b<< c"):
        assert src.encode(text) == ref(text, add_special_tokens=False).input_ids, text
    assert src.unknown_tokens("wörld 你好")  # pieces outside the vocabulary, by their text
    assert src.count_unknown(src.encode("你好")) >= 1


@pytest.mark.parametrize("name", ["marian", "t5", "bart"])
def test_run_dir_round_trip(dirs, tmp_path, name):
    """What a fine-tuned run saves (tokenizer.json, src_tokenizer.json) loads back identical."""
    tok, src = load_pretrained_tokenizers(dirs[name], name)
    tok.save(tmp_path / "tokenizer.json")
    if src is not None:
        src.save(tmp_path / "src_tokenizer.json")
    for original, file in ((tok, "tokenizer.json"), (src, "src_tokenizer.json")):
        if original is None:
            continue
        back = load_tokenizer(tmp_path / file)
        assert type(back) is type(original) and back.kind == original.kind == "unigram" or name == "bart"
        assert back.fingerprint() == original.fingerprint()
        assert (back.bos_id, back.eos_id, back.pad_id, back.unk_id, back.vocab_size) == \
            (original.bos_id, original.eos_id, original.pad_id, original.unk_id, original.vocab_size)
        for text in SAMPLES:
            assert back.encode(text) == original.encode(text)
            assert back.decode(original.encode(text)) == original.decode(original.encode(text))
    if name == "marian":  # the vocabulary half is a tokenizer.json Hugging Face's library reads
        assert HFTokenizer.from_file(str(tmp_path / "tokenizer.json")).get_vocab_size() == tok.vocab_size


@pytest.mark.parametrize("name", ["marian", "t5", "bart"])
def test_export_round_trip(dirs, tmp_path, name):
    """save_pretrained_tokenizers writes files transformers loads, encoding as the originals do."""
    tok, src = load_pretrained_tokenizers(dirs[name], name)
    run = tmp_path / "run"  # through a run directory first, as an export of a fine-tuned run does
    tok.save(run / "tokenizer.json")
    if src is not None:
        src.save(run / "src_tokenizer.json")
        src = load_tokenizer(run / "src_tokenizer.json")
    tok = load_tokenizer(run / "tokenizer.json")
    out = tmp_path / "out"
    save_pretrained_tokenizers(out, name, tok, src)
    original, exported = _auto(dirs[name]), _auto(out)
    assert type(exported) is type(original)
    for text in SAMPLES:
        assert exported(text, add_special_tokens=False).input_ids == original(text, add_special_tokens=False).input_ids
        assert exported(text).input_ids == original(text).input_ids  # the eos (and bos) they add
        if name == "marian":
            assert exported(text_target=text).input_ids == original(text_target=text).input_ids
    again, again_src = load_pretrained_tokenizers(out, name)
    assert again.fingerprint() == tok.fingerprint()
    assert (again_src is None) == (src is None)


def test_gpt2_directories_read_as_before():
    tok, src = load_pretrained_tokenizers(GPT2_DIR, "gpt2")
    assert src is None and tok.kind == "gpt2" and tok.fingerprint() == load_tokenizer(GPT2_DIR).fingerprint()


def test_bad_directories(dirs, tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"<unk>": 0}))
    with pytest.raises(TokenizerError, match="without its sentencepiece models"):
        load_pretrained_tokenizers(tmp_path, "marian")
    with pytest.raises(TokenizerError, match="T5 checkpoint without its tokenizer"):
        load_pretrained_tokenizers(tmp_path, "t5")
    with pytest.raises(TokenizerError, match="BART checkpoint without its tokenizer"):
        load_pretrained_tokenizers(tmp_path, "bart")
    with pytest.raises(TokenizerError, match="model_type 'bert'"):
        load_pretrained_tokenizers(tmp_path, "bert")
    (tmp_path / "source.spm").write_bytes(b"not a model")
    (tmp_path / "target.spm").write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="not a sentencepiece model"):
        load_pretrained_tokenizers(tmp_path, "marian")
    tok, _ = load_pretrained_tokenizers(dirs["marian"], "marian")
    tok.save(tmp_path / "run" / "tokenizer.json")
    (tmp_path / "run" / "tokenizer.spm").write_bytes(b"damaged")
    with pytest.raises(TokenizerError, match="tokenizer.spm: not a sentencepiece model"):
        load_tokenizer(tmp_path / "run")
    tok, _ = load_pretrained_tokenizers(dirs["bart"], "bart")
    with pytest.raises(TokenizerError, match="only a run fine-tuned from a Marian"):
        save_pretrained_tokenizers(tmp_path / "out", "marian", tok, None)
