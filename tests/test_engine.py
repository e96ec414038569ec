"""Continuous batching: model states merge exactly, and the serving engine's requests join and
leave a running batch yet decode exactly as they would alone."""

import threading
import time

import pytest
import torch

from proselab.config import ModelConfig
from proselab.decoding import pad_prompts
from proselab.models import Seq2SeqBatch, build_model

LM = {
    "gpt": dict(family="gpt", n_layer=2, n_head=2, n_embd=16, block_size=12),
    "lstm": dict(family="rnn", cell="lstm", hidden_size=16, n_embd=16, num_layers=2),
    "gru": dict(family="rnn", cell="gru", hidden_size=16, n_embd=16, num_layers=1),
}


def lm(kind):
    torch.manual_seed(0)
    return build_model(ModelConfig(vocab_size=20, **LM[kind])).eval()


def steps(model, state, tokens):
    out = []
    for tok in tokens:
        logits, state = model.step(torch.tensor(tok), state)
        out.append(logits)
    return torch.stack(out), state


@pytest.mark.parametrize("kind", LM)
def test_merged_lm_states_decode_as_they_did_apart(kind):
    """A batch that has run a few steps merges with a fresh one (different prompt lengths, so the
    GPT's rows are realigned) and every row then gives the logits it gives alone. The GPT's
    window of 12 slides during the steps."""
    model = lm(kind)
    a_prompt, b_prompt = [[1, 2, 3, 4, 5], [6, 7]], [[8, 9, 10], [3] * 9]
    _, a = model.start(pad_prompts(a_prompt)[0])
    _, a = steps(model, a, [[4, 5], [6, 7]])  # a has fed 2 tokens more than its prompts
    _, b = model.start(pad_prompts(b_prompt)[0])
    merged = model.merge([model.reorder(a, torch.arange(2)), model.reorder(b, torch.arange(2))])
    feed = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 1, 2, 3], [4, 5, 6, 7], [8, 9, 1, 2]]
    together, _ = steps(model, merged, feed)
    alone_a, _ = steps(model, a, [f[:2] for f in feed])
    alone_b, _ = steps(model, b, [f[2:] for f in feed])
    torch.testing.assert_close(together, torch.cat([alone_a, alone_b], dim=1), atol=1e-5, rtol=1e-5)


S2S = {
    "rnn": dict(arch="rnn", cell="gru", attention="bahdanau", num_layers=1),
    "transformer": dict(arch="transformer", n_layer=2, n_head=2),
}


@pytest.mark.parametrize("arch", S2S)
def test_merged_seq2seq_states_pad_the_memory_and_ungroup_beams(arch):
    """A state with two beams over one long source that has fed two tokens merges with a fresh
    one over two short sources; every row then gives the logits it gives alone."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="seq2seq", vocab_size=20, src_vocab_size=20, bos_id=1, n_embd=16,
                                    hidden_size=16, **S2S[arch])).eval()
    src_a, src_b = torch.tensor([[3, 4, 5, 6, 7, 8]]), torch.tensor([[9, 10], [11, 12]])
    _, a = model.start(Seq2SeqBatch(src_a, torch.ones_like(src_a, dtype=torch.bool)))
    a = model.reorder(a, torch.tensor([0, 0]))  # two beams over one source: the memory is shared
    assert a.group == 2
    _, a = steps(model, a, [[4, 5], [6, 7]])
    _, b = model.start(Seq2SeqBatch(src_b, torch.ones_like(src_b, dtype=torch.bool)))
    merged = model.merge([model.reorder(a, torch.arange(2)), model.reorder(b, torch.arange(2))])
    feed = [[4, 5, 6, 7], [8, 9, 2, 3], [5, 5, 5, 5]]
    together, _ = steps(model, merged, feed)
    alone_a, _ = steps(model, a, [f[:2] for f in feed])
    alone_b, _ = steps(model, b, [f[2:] for f in feed])
    torch.testing.assert_close(together, torch.cat([alone_a, alone_b], dim=1), atol=1e-5, rtol=1e-5)


# ---- the engine ----------------------------------------------------------------------------

def lm_run(tmp_path, family):
    from conftest import tiny_overrides, shakespeare_text

    from proselab.training import train

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_text(20_000), encoding="utf-8")
    train(None, tiny_overrides(corpus, tmp_path / family, family, **{"train.max_iters": 10, "data.tokenizer": "bpe",
                                                                        "data.vocab_size": 300}))
    import proselab

    return proselab.load(tmp_path / family)


class Collector:
    def __init__(self):
        self.events, self.done = [], threading.Event()
        self.first = self.finished = None  # when the first and the last event came

    def __call__(self, event):
        self.first = self.first or time.monotonic()
        self.events.append(event)
        if event.results is not None or event.error is not None:
            self.finished = time.monotonic()
            self.done.set()

    def text(self, i=0):
        return "".join(d.text for e in self.events for d in e.deltas if d.index == i)


@pytest.mark.parametrize("family", ["gpt", "rnn"])
def test_jobs_that_join_a_running_batch_decode_as_they_would_alone(tmp_path, family):
    """Jobs arrive while others run (greedy, seeded sampling with n=2, a stop string, different
    settings per job); each gets exactly what Generator.complete gives it alone, and the
    engine shares steps: far fewer than the jobs' tokens added up."""
    from proselab.server.engine import Engine, Job

    gen = lm_run(tmp_path, family)
    settings = [
        ("ROMEO:", dict(do_sample=False, max_new_tokens=30)),
        ("The king", dict(do_sample=True, seed=3, temperature=0.9, top_k=20, num_return_sequences=2,
                          max_new_tokens=25)),
        ("JULIET:\nO", dict(do_sample=True, seed=1, top_p=0.8, repetition_penalty=1.3, max_new_tokens=40)),
        ("a", dict(do_sample=False, max_new_tokens=20, stop=["e"])),
        ("What", dict(do_sample=False, max_new_tokens=5, num_beams=3)),
    ]
    engine = Engine(gen, max_batch=8)
    try:
        collectors = []
        for k, (prompt, over) in enumerate(settings):
            c = Collector()
            engine.submit(Job(gen.encode_prompt(prompt), gen.generation_config(**over), c))
            collectors.append(c)
            if k == 1:  # the first jobs are running when the others come
                while engine.steps < 3:
                    time.sleep(0.001)
        for c in collectors:
            assert c.done.wait(60)
        for (prompt, over), c in zip(settings, collectors):
            alone = gen.complete(prompt, **over)
            got = c.events[-1].results
            assert [g.tokens for g in got] == [g.tokens for g in alone], (prompt, over)
            assert [g.text for g in got] == [g.text for g in alone]
            assert c.text(0) == alone[0].text  # the streamed deltas add up
        assert collectors[2].first < collectors[0].finished  # joined while the first job ran
        total = sum(len(g.tokens) for c in collectors for g in c.events[-1].results)
        assert engine.steps < total * 0.6
    finally:
        engine.close()


def test_a_cancelled_job_leaves_and_a_failing_one_does_not_stop_the_others(tmp_path):
    from proselab.server.engine import Engine, Job

    gen = lm_run(tmp_path, "gpt")
    engine = Engine(gen, max_batch=4)
    try:
        long, short = Collector(), Collector()
        job = Job(gen.encode_prompt("ROMEO:"), gen.generation_config(do_sample=False, max_new_tokens=10_000), long)
        engine.submit(job)
        engine.submit(Job(gen.encode_prompt("The"), gen.generation_config(do_sample=False, max_new_tokens=8), short))
        assert short.done.wait(30)
        while engine.steps < 12:
            time.sleep(0.001)
        job.cancel()
        deadline = time.monotonic() + 10
        while engine.running_rows and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.running_rows == 0 and not long.done.is_set()
        boom = engine.call(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            boom.result(10)
        after = Collector()
        engine.submit(Job(gen.encode_prompt("The"), gen.generation_config(do_sample=False, max_new_tokens=8), after))
        assert after.done.wait(30)
        assert after.events[-1].results[0].tokens == short.events[-1].results[0].tokens
    finally:
        engine.close()


@pytest.mark.parametrize("arch", S2S)
def test_seq2seq_jobs_join_a_running_batch(tmp_path, arch):
    import proselab
    from test_seq2seq import s2s_overrides

    from proselab.server.engine import Engine, Job
    from proselab.training import train

    train(None, s2s_overrides(tmp_path, **{"model.arch": arch, "train.max_iters": 10}))
    gen = proselab.load(tmp_path / "run")
    ids = lambda text: gen.src_tokenizer.encode(text) + [gen.src_tokenizer.eos_id]  # noqa: E731
    settings = [("a b c d e f", dict(do_sample=False, max_new_tokens=20, min_new_tokens=20)),
                ("h g", dict(do_sample=True, seed=5, num_return_sequences=2, max_new_tokens=12)),
                ("c", dict(do_sample=False, max_new_tokens=6))]
    engine = Engine(gen, max_batch=8)
    try:
        collectors = []
        for k, (src, over) in enumerate(settings):
            c = Collector()
            engine.submit(Job(ids(src), gen.generation_config(**over), c))
            collectors.append(c)
            if k == 0:
                while engine.steps < 3:
                    time.sleep(0.001)
        for c in collectors:
            assert c.done.wait(60)
        assert collectors[1].first < collectors[0].finished
        for (src, over), c in zip(settings, collectors):
            assert [g.tokens for g in c.events[-1].results] == [g.tokens for g in gen.complete(src, **over)]
    finally:
        engine.close()
