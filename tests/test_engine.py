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
    "llama": dict(family="gpt", n_layer=2, n_head=4, n_kv_head=2, n_embd=16, block_size=12, rope=True, norm="rmsnorm",
                  gated_ffn=True, activation="silu", bias=False),
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


@pytest.mark.parametrize("kind", ["gpt", "llama"])
@pytest.mark.parametrize("fits", [True, False])
def test_a_gpt_state_takes_new_rows_in_place_of_finished_ones(fits, kind):
    """``insert`` puts a fresh prompt's rows where finished rows were: in place when the new
    prompt is no longer than the running cache, through merge when it is; either way every
    row then gives the logits it gives alone, also past the window of 12 (slides, and the
    1.5-window buffer's shift)."""
    model = lm(kind)
    _, a = model.start(pad_prompts([[1, 2, 3, 4, 5], [6, 7], [8]])[0])
    _, a = steps(model, a, [[4, 5, 6], [6, 7, 8]])
    b_prompt = [[9, 10, 11]] if fits else [[3] * 9]
    _, b = model.start(pad_prompts(b_prompt)[0])
    kept = model.reorder(a, torch.arange(3))
    if fits:
        assert b.length <= kept.length
    else:
        assert b.length > kept.length
    joined = model.insert(kept, torch.tensor([1]), model.reorder(b, torch.arange(1)))
    feed = [[1, 2, 3], [5, 6, 7], [9, 1, 2]] * 5
    together, _ = steps(model, joined, feed)
    alone_a, _ = steps(model, a, [[f[0], 0, f[2]] for f in feed])
    alone_b, _ = steps(model, b, [[f[1]] for f in feed])
    torch.testing.assert_close(together[:, [0, 2]], alone_a[:, [0, 2]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together[:, 1], alone_b[:, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["gpt", "llama"])
def test_a_gpt_steps_and_prefills_in_one_pass_as_it_does_apart(kind):
    """``step_start`` gives ``step``'s and ``start``'s logits and states, with a padded
    running batch (one row about to slide) and a padded new prompt."""
    model = lm(kind)
    prompts = pad_prompts([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [6, 7]])[0]
    new = pad_prompts([[3, 4, 5], [9]])[0]
    _, a = model.start(prompts)
    _, b = model.start(prompts)
    _, a = steps(model, a, [[1, 2]])
    _, b = steps(model, b, [[1, 2]])  # row 0 holds 12 tokens: it slides in the next step
    logits, a, first, fresh = model.step_start(torch.tensor([3, 4]), a, new)
    ref_logits, b = model.step(torch.tensor([3, 4]), b)
    ref_first, ref_fresh = model.start(new)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(first, ref_first, atol=1e-5, rtol=1e-5)
    feed = [[5, 6, 7, 8], [9, 1, 2, 3]]
    together, _ = steps(model, model.merge([a, fresh]), feed)
    apart, _ = steps(model, model.merge([b, ref_fresh]), feed)
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=1e-5)


def test_a_gpt_cache_drops_the_slots_no_row_uses():
    """When a long row is replaced by a short one, the slots before every row's first token
    are most of the cache; the next step drops them (attention reads every slot), and each
    row decodes exactly as alone."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=20, family="gpt", n_layer=2, n_head=2, n_embd=16, block_size=64)).eval()
    long, short, new = [t % 19 + 1 for t in range(40)], [5, 6, 7], [8, 9, 10]
    _, state = model.start(pad_prompts([long, short])[0])
    _, state = steps(model, state, [[1, 2]] * 5)
    _, fresh = model.start(torch.tensor([new]))
    state = model.insert(state, torch.tensor([0]), fresh)
    assert state.length == 45
    feed = [[3, 4], [5, 6], [7, 8]]
    together, state = steps(model, state, feed)
    assert state.length <= 12  # 8 + 3 slots in use: the 37 before them went
    _, s = model.start(torch.tensor([short]))
    _, s = steps(model, s, [[2]] * 5)
    alone_short, _ = steps(model, s, [[f[1]] for f in feed])
    alone_new, _ = steps(model, fresh, [[f[0]] for f in feed])
    torch.testing.assert_close(together, torch.cat([alone_new, alone_short], dim=1), atol=1e-5, rtol=1e-5)


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


@pytest.mark.parametrize("family", ["gpt", "rnn"])
def test_a_bfloat16_run_decodes_in_the_engine_as_it_does_alone(tmp_path, family):
    """``load(dtype="bfloat16")`` casts the weights, and the engine's jobs get exactly the tokens
    the bf16 model gives each alone (their states merge and decode in bf16 too). The sampled job
    runs in a batch of its own: a bf16 kernel may round a row differently in a batch of two (seen
    with the LSTM on an AMX machine), and sampling turns the last bit of a probability into
    another token; greedy decoding of two jobs batched together is the merge's test."""
    import proselab
    from proselab.server.engine import Engine, Job

    run = lm_run(tmp_path, family).run_dir
    gen = proselab.load(run, dtype="bfloat16")
    assert {p.dtype for p in gen.model.parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match="dtype must be auto, float32, bfloat16, float16; got 'float64'"):
        proselab.load(run, dtype="float64")
    settings = [("ROMEO:", dict(do_sample=False, max_new_tokens=20)), ("The", dict(do_sample=False, max_new_tokens=12)),
                ("The", dict(do_sample=True, seed=2, top_k=10, max_new_tokens=15))]
    collectors = [Collector() for _ in settings]
    for group in (slice(0, 2), slice(2, 3)):  # the two greedy jobs together, then the sampled one
        engine = Engine(gen, max_batch=4)
        try:
            for (prompt, over), c in zip(settings[group], collectors[group]):
                engine.submit(Job(gen.encode_prompt(prompt), gen.generation_config(**over), c))
            for c in collectors[group]:
                assert c.done.wait(60)
        finally:
            engine.close()
    for (prompt, over), c in zip(settings, collectors):
        assert c.events[-1].results[0].tokens == gen.complete(prompt, **over)[0].tokens


def test_the_engine_wakes_its_consumer_once_a_steps_events_are_out(tmp_path):
    """``wake`` comes after each step's events, before the next forward pass (so no output
    waits a step), and once for all of them: two jobs running together are woken for in pairs."""
    from proselab.server.engine import Engine, Job

    gen = lm_run(tmp_path, "gpt")
    log = []
    engine = Engine(gen, max_batch=4, wake=lambda: log.append(("wake", engine.steps)))
    try:
        collectors = [Collector(), Collector()]

        def emitter(c):
            def emit(event):
                log.append(("event", engine.steps))
                c(event)
            return emit

        greedy = lambda n: gen.generation_config(do_sample=False, max_new_tokens=n, min_new_tokens=n)  # noqa: E731
        jobs = [Job(gen.encode_prompt("ROMEO:"), greedy(8), emitter(collectors[0])),
                Job(gen.encode_prompt("The"), greedy(12), emitter(collectors[1]))]
        with engine._cond:  # both wait until submitted, so they start together
            for job in jobs:
                engine._waiting.append(job)
            engine._cond.notify()
        for c in collectors:
            assert c.done.wait(30)
        deadline = time.monotonic() + 5
        while log[-1][0] != "wake" and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        engine.close()
    pending, batches = [], []
    for kind, step in log:
        if kind == "event":
            pending.append(step)
        else:
            assert all(s == step for s in pending), log  # woken in the step the events came in
            if pending:
                batches.append(len(pending))
            pending = []
    assert not pending and sum(batches) == sum(len(c.events) for c in collectors)
    assert batches[:8] == [2] * 8 and batches[8:] == [1] * 4, batches  # together, then the longer job alone


@pytest.mark.parametrize("family", ["gpt", "rnn"])
def test_a_job_takes_the_row_of_one_that_finished(tmp_path, family, monkeypatch):
    """A finished job's row stays in the batch for a while; a job that comes then takes it
    (the GPT's ``insert``, or merge and reorder for a family without one) and decodes as it
    would alone, and so do the jobs around it."""
    from proselab.server import engine as engine_module
    from proselab.server.engine import Engine, Job

    monkeypatch.setattr(engine_module, "STALE", 10_000)  # keep the free row however slow the machine
    gen = lm_run(tmp_path, family)
    greedy = lambda n: gen.generation_config(do_sample=False, max_new_tokens=n, min_new_tokens=n)  # noqa: E731
    engine = Engine(gen, max_batch=4)
    try:
        prompts = [("ROMEO:", 60), ("The", 3), ("JULIET:", 60)]
        collectors = [Collector() for _ in prompts]
        jobs = [Job(gen.encode_prompt(p), greedy(n), c) for (p, n), c in zip(prompts, collectors)]
        for job in jobs:  # submitted at once, so they start together in rows 0, 1, 2
            engine.submit(job)
        assert collectors[1].done.wait(30)
        late = Collector()
        late_job = Job(gen.encode_prompt("What"), greedy(10), late)
        engine.submit(late_job)
        for c in [*collectors, late]:
            assert c.done.wait(60)
        assert [job.slots for job in jobs] == [[0], [1], [2]] and late_job.slots == [1]
        for (p, n), c in [*zip(prompts, collectors), (("What", 10), late)]:
            assert c.events[-1].results[0].tokens == gen.complete(p, do_sample=False, max_new_tokens=n,
                                                                   min_new_tokens=n)[0].tokens
    finally:
        engine.close()


def test_a_cancelled_job_leaves_and_a_failing_one_does_not_stop_the_others(tmp_path):
    from proselab.server.engine import Engine, Job

    gen = lm_run(tmp_path, "gpt")
    threads = torch.get_num_threads()
    engine = Engine(gen, max_batch=4, threads=1)
    try:
        assert engine.call(torch.get_num_threads).result(10) == 1  # --threads
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
        torch.set_num_threads(threads)


def test_overhead_bound_models_are_served_on_one_thread(tmp_path):
    """The engine's automatic thread count is one for models like nanogpt-cpu's, whose
    matrices are all small, and PyTorch's default otherwise."""
    from proselab.models.prepack import MIN_PACKED, overhead_bound
    from proselab.server.engine import Engine

    gen = lm_run(tmp_path, "gpt")
    assert overhead_bound(gen.model)
    engine = Engine(gen, max_batch=2)
    try:
        assert engine.call(torch.get_num_threads).result(10) == 1
    finally:
        engine.close()

    tiny = build_model(ModelConfig(family="gpt", vocab_size=66, n_layer=4, n_head=4, n_embd=128, block_size=64))
    assert overhead_bound(tiny)  # the nanogpt-cpu shape: 128 x 512 at most
    wide = build_model(ModelConfig(family="gpt", vocab_size=66, n_layer=1, n_head=4, n_embd=256, block_size=64))
    assert 4 * 256 * 256 >= MIN_PACKED and not overhead_bound(wide)  # its MLP's 256 x 1024
    lstm = build_model(ModelConfig(family="rnn", cell="lstm", vocab_size=66, n_embd=512, hidden_size=512, num_layers=1))
    assert not overhead_bound(lstm)  # a 2048 x 512 recurrent matrix, not an nn.Linear


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
