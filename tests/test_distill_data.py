"""Sequence-level KD data (proselab distill-data): a seq2seq teacher's decoded pairs and a
language model's sampled corpus equal what the API generates, resume exactly after an
interruption, refuse an output they did not write, and train a student."""

import json
import random

import pytest
from conftest import shakespeare_text, tiny_overrides

import proselab
from proselab.cli import main
from proselab.data.pairs import load_pairs
from proselab.distill import data as kd
from proselab.distill.data import progress_path, sequence_kd_pairs
from proselab.training import train


def write_reverse(path, n, seed):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        toks = [rng.choice("abcdefgh") for _ in range(rng.randint(1, 6))]
        lines.append(" ".join(toks) + "\t" + " ".join(reversed(toks)))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny seq2seq teacher on the reverse task and a tiny GPT teacher, trained once."""
    root = tmp_path_factory.mktemp("teachers")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROSELAB_CACHE", str(root / "cache"))
        train(None, {
            "data.dataset": str(write_reverse(root / "train.tsv", 200, 0)),
            "data.val_dataset": str(write_reverse(root / "dev.tsv", 20, 1)),
            "data.tokenizer": "word", "model.family": "seq2seq", "model.arch": "rnn",
            "model.n_embd": 16, "model.hidden_size": 16, "model.num_layers": 1,
            "train.out_dir": str(root / "s2s"), "train.batch_size": 16, "train.max_iters": 20, "train.lr": 5e-3,
            "train.warmup_iters": 2, "train.eval_interval": 20, "train.eval_iters": 1, "train.eval_bleu_samples": 0,
            "train.progress": False, "train.dtype": "float32", "train.device": "cpu",
        })
        # so short a training ends every output at once: the run's own generation defaults say
        # otherwise, and distill-data decodes with them
        config = json.loads((root / "s2s" / "config.json").read_text())
        config["generation"]["min_new_tokens"] = 3
        (root / "s2s" / "config.json").write_text(json.dumps(config))
        corpus = root / "corpus.txt"
        corpus.write_text(shakespeare_text(20_000), encoding="utf-8")
        train(None, tiny_overrides(corpus, root / "gpt", **{"train.max_iters": 10}))
        train(None, tiny_overrides(corpus, root / "gpt-word", **{"train.max_iters": 2, "data.tokenizer": "word",
                                                                 "data.vocab_size": 4000}))
    return {"s2s": root / "s2s", "gpt": root / "gpt", "gpt-word": root / "gpt-word", "root": root}


@pytest.fixture
def sources(tmp_path):
    return write_reverse(tmp_path / "src.tsv", 23, 5)


def _sources(path):
    return [s for s, _ in load_pairs(str(path))[0]]


@pytest.mark.parametrize("beams", [1, 3])
def test_pairs_equal_the_api_for_each_source(runs, sources, tmp_path, beams):
    out = tmp_path / "kd.tsv"
    assert main(["distill-data", str(runs["s2s"]), "--pairs", str(sources), "--out", str(out), "--num-beams",
                 str(beams), "--max-new-tokens", "8", "--batch-size", "4"]) == 0
    got = load_pairs(str(out), bad_lines="error")[0]
    gen = proselab.load(runs["s2s"], device="cpu")
    want = [(s, gen.generate(s, do_sample=False, num_beams=beams, max_new_tokens=8).strip())
            for s in _sources(sources)]
    assert got == [w for w in want if w[1]]
    state = json.loads(progress_path(out).read_text())
    assert state["done"] == state["total"] == 23
    # the same command again: complete, nothing appended
    before = out.read_bytes()
    assert main(["distill-data", str(runs["s2s"]), "--pairs", str(sources), "--out", str(out), "--num-beams",
                 str(beams), "--max-new-tokens", "8", "--batch-size", "4"]) == 0
    assert out.read_bytes() == before


def test_n_best_and_jsonl(runs, sources, tmp_path):
    out = tmp_path / "kd.jsonl"
    res = sequence_kd_pairs(runs["s2s"], str(sources), out, n_best=2, num_beams=3, max_new_tokens=8, batch_size=5,
                            device="cpu")
    gen = proselab.load(runs["s2s"], device="cpu")
    want = []
    for s in _sources(sources):
        want += [(s, t.strip()) for t in gen.generate(s, do_sample=False, num_beams=3, num_return_sequences=2,
                                                      max_new_tokens=8) if t.strip()]
    assert load_pairs(str(out))[0] == want
    assert res["pairs"] == len(want) and res["sources"] == 23


def test_tabs_and_newlines_become_spaces_in_tsv_and_stay_in_jsonl(runs, tmp_path):
    src = tmp_path / "src.jsonl"
    rows = [{"src": "a b\tc", "tgt": "x"}, {"src": "d\ne f", "tgt": "y"}, {"src": "g h", "tgt": "z"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning, match="2 texts held tabs or newlines"):
        res = sequence_kd_pairs(runs["s2s"], str(src), tmp_path / "kd.tsv", max_new_tokens=5, device="cpu")
    assert res["flattened"] == 2
    assert [s for s, _ in load_pairs(str(tmp_path / "kd.tsv"))[0]] == ["a b c", "d e f", "g h"]
    sequence_kd_pairs(runs["s2s"], str(src), tmp_path / "kd.jsonl", max_new_tokens=5, device="cpu")
    assert [s for s, _ in load_pairs(str(tmp_path / "kd.jsonl"))[0]] == ["a b\tc", "d\ne f", "g h"]


def test_an_interrupted_run_resumes_to_the_same_output(runs, sources, tmp_path, monkeypatch):
    args = dict(num_beams=2, max_new_tokens=8, batch_size=4, sort_window=2, device="cpu")
    whole = tmp_path / "whole.tsv"
    sequence_kd_pairs(runs["s2s"], str(sources), whole, **args)

    real, calls = kd.generate, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 4:  # after the first window of two batches, and one batch into the next
            raise KeyboardInterrupt
        return real(*a, **k)

    out = tmp_path / "kd.tsv"
    monkeypatch.setattr(kd, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sequence_kd_pairs(runs["s2s"], str(sources), out, **args)
    state = json.loads(progress_path(out).read_text())
    assert 0 < state["done"] < 23 and out.stat().st_size == state["bytes"]
    with open(out, "ab") as f:  # what a kill between the append and its record leaves
        f.write(b"half a li")
    monkeypatch.setattr(kd, "generate", real)
    res = sequence_kd_pairs(runs["s2s"], str(sources), out, **args)
    assert res["resumed_from"] == state["done"]
    assert out.read_bytes() == whole.read_bytes()


def test_sources_with_no_reference_give_the_pairs_their_pairs_file_gives(runs, sources, tmp_path):
    """--sources: a text file, one source a line (blank lines skipped), decodes to the same
    pairs as a pairs file of those sources; the references play no part."""
    srcs = [s for s, _ in load_pairs(str(sources))[0]]
    text = tmp_path / "src.txt"
    text.write_text("\n".join(srcs[:10]) + "\n\n   \n" + "\n".join(srcs[10:]) + "\n", encoding="utf-8")
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    args = ["--out", "--num-beams", "2", "--max-new-tokens", "6", "--device", "cpu"]
    assert main(["distill-data", str(runs["s2s"]), "--pairs", str(sources), *args[:1], str(a), *args[1:]]) == 0
    assert main(["distill-data", str(runs["s2s"]), "--sources", str(text), *args[:1], str(b), *args[1:]]) == 0
    assert load_pairs(str(b))[0] == load_pairs(str(a))[0] and len(load_pairs(str(b))[0]) == 23


def test_an_output_from_another_command_is_refused(runs, sources, tmp_path, capsys):
    out = tmp_path / "kd.tsv"
    base = ["distill-data", str(runs["s2s"]), "--pairs", str(sources), "--out", str(out), "--max-new-tokens", "6"]
    assert main(base) == 0
    written = out.read_bytes()
    capsys.readouterr()
    other = write_reverse(tmp_path / "other.tsv", 5, 9)
    for argv, says in [(base + ["--num-beams", "2"], "other settings: num_beams 1 -> 2"),
                       ([*base[:3], str(other), *base[4:]], "another input")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("proselab: error: ") and says in err and err.count("\n") == 1
        assert out.read_bytes() == written
    mine = tmp_path / "mine.tsv"
    mine.write_text("my own\tpairs\n")
    assert main([*base[:5], str(mine)]) == 2
    assert "not written by proselab distill-data" in capsys.readouterr().err
    assert mine.read_text() == "my own\tpairs\n"
    assert main([*base[:5], str(mine), "--overwrite"]) == 0
    assert load_pairs(str(mine))[0] == load_pairs(str(out))[0]


def test_lm_corpus_is_reproducible_resumable_and_trains_a_student(runs, tmp_path, monkeypatch, capsys):
    def argv(out, seed=3):
        return ["distill-data", str(runs["gpt"]), "--num-samples", "12", "--max-new-tokens", "24", "--seed", str(seed),
                "--batch-size", "5", "--prompt", "KING", "--device", "cpu", "--out", str(out)]

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    assert main(argv(a)) == 0
    assert main(argv(b)) == 0
    assert a.read_bytes() == b.read_bytes()
    text = a.read_text(encoding="utf-8")
    assert text.startswith("KING") and text.count(kd.NO_EOS_SEPARATOR + "KING") >= 11  # char: no end-of-text token
    # interrupted after the first batch, then resumed: the same corpus
    real, calls = kd.generate, []

    def interrupted(*x, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*x, **k)

    c = tmp_path / "c.txt"
    monkeypatch.setattr(kd, "generate", interrupted)
    assert main(argv(c)) == 130
    assert "run the same command again to continue" in capsys.readouterr().err
    assert json.loads(progress_path(c).read_text())["done"] == 5
    monkeypatch.setattr(kd, "generate", real)
    assert main(argv(c)) == 0
    assert c.read_bytes() == a.read_bytes()
    d = tmp_path / "d.txt"
    assert main(argv(d, seed=4)) == 0
    assert d.read_bytes() != a.read_bytes()
    # the corpus is a training corpus
    train(None, tiny_overrides(a, tmp_path / "student", family="rnn",
                               **{"train.max_iters": 2, "model.block_size": 8, "data.val_fraction": 0.2}))
    assert (tmp_path / "student" / "model.safetensors").is_file()


def test_samples_are_separated_by_the_end_of_text_token_where_the_tokenizer_has_one(runs, tmp_path):
    out = tmp_path / "c.txt"
    assert main(["distill-data", str(runs["gpt-word"]), "--num-samples", "4", "--max-new-tokens", "6",
                 "--device", "cpu", "--out", str(out)]) == 0
    tok = proselab.load(runs["gpt-word"], device="cpu").tokenizer
    ids = tok.encode(out.read_text(encoding="utf-8"))
    assert ids.count(tok.eos_id) == 3  # between the samples, as between a corpus's documents


@pytest.mark.parametrize("argv, says", [
    (["{s2s}", "--num-samples", "3"], "this teacher is seq2seq"),
    (["{gpt}", "--pairs", "{src}"], "sample a corpus from it with --num-samples"),
    (["{root}", "--pairs", "{src}"], ""),
    (["{s2s}", "--pairs", "{missing}"], "missing.tsv"),
    (["{s2s}", "--pairs", "{bad}"], "bad.tsv:2"),
    (["{s2s}", "--pairs", "{src}", "--n-best", "3", "--num-beams", "2"], "--n-best 3 needs"),
    (["{s2s}", "--pairs", "{src}", "--batch-size", "0"], "--batch-size must be"),
    (["{s2s}", "--pairs", "{src}", "--n-best", "-1"], "--n-best must be"),
    (["{gpt}", "--num-samples", "0"], "--num-samples must be"),
    (["{s2s}", "--pairs", "{src}", "--num-samples", "2"], "one of the three"),
    (["{s2s}", "--pairs", "{src}", "--sources", "{text}"], "one of the three"),
    (["{s2s}", "--sources", "{missing}"], "missing.tsv: no such file"),
    (["{s2s}", "--sources", "{blank}"], "holds no text"),
    (["{gpt}", "--sources", "{text}"], "sample a corpus from it with --num-samples"),
    (["{s2s}", "--sources", "{text}", "--top-p", "0.5"], "--top-p applies with --num-samples only"),
    (["{s2s}", "--pairs", "{src}", "--seed", "2"], "--seed applies with --num-samples only"),
    (["{gpt}", "--num-samples", "2", "--num-beams", "2"], "--num-beams applies with --pairs or --sources only"),
    (["{gpt}", "--num-samples", "2", "--out-as", "x"], "--out"),
])
def test_bad_input_is_one_line_and_damages_nothing(runs, sources, tmp_path, capsys, argv, says):
    bad = tmp_path / "bad.tsv"
    bad.write_text("a b\tb a\nno tab here\n")
    text, blank = tmp_path / "src.txt", tmp_path / "blank.txt"
    text.write_text("a b c\n")
    blank.write_text("\n  \n")
    paths = {"s2s": runs["s2s"], "gpt": runs["gpt"], "root": runs["root"], "src": sources, "bad": bad,
             "missing": tmp_path / "missing.tsv", "text": text, "blank": blank}
    out = tmp_path / ("out.txt" if "--num-samples" in argv else "out.tsv")
    out.write_text("keep me\tplease\n")
    progress_path(out).write_text("{}")
    assert main(["distill-data", *[a.format(**paths) for a in argv], "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("proselab: error: ") and err.count("\n") == 1 and says in err, err
    assert out.read_text() == "keep me\tplease\n" and progress_path(out).read_text() == "{}"
