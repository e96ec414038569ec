"""Logits processors: hand-computed cases, then parity with transformers on seeded random inputs."""

import pytest
import torch

from proselab.config import GenerationConfig
from proselab.decoding.processors import (
    PAD_ID,
    LogitBias,
    MinNewTokens,
    MinP,
    NoRepeatNGram,
    OutputPenalties,
    RepetitionPenalty,
    SuppressTokens,
    Temperature,
    TopK,
    TopP,
    TypicalP,
    apply_processors,
    build_processors,
)

NEG = float("-inf")


@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip("transformers.generation.logits_process")


def _from_probs(*probs: float) -> torch.Tensor:
    """(1, V) logits whose softmax is ``probs``."""
    return torch.tensor([probs]).log()


def _kept(out: torch.Tensor) -> list[list[int]]:
    """The ids with a finite logit, per row."""
    return [row.isfinite().nonzero().flatten().tolist() for row in out]


def _random_logits(B: int = 3, V: int = 50) -> list[torch.Tensor]:
    """Flat, peaked, partly -inf and log-softmaxed (beam search) score tensors."""
    g = torch.Generator().manual_seed(0)
    out = []
    for scale in (0.3, 1.0, 4.0, 12.0):
        x = torch.randn(B, V, generator=g) * scale
        out.append(x)
        out.append(x.log_softmax(-1))
        holes = torch.rand(B, V, generator=g) < 0.2
        out.append(x.masked_fill(holes, NEG))
    return out


def _random_ids(B: int, T: int, high: int, pads: list[int], seed: int = 0) -> torch.Tensor:
    """(B, T) ids in [0, high) (small: n-grams repeat), row b left-padded with pads[b] PAD_IDs."""
    ids = torch.randint(0, high, (B, T), generator=torch.Generator().manual_seed(seed))
    for b, n in enumerate(pads):
        ids[b, :n] = PAD_ID
    return ids


# ---- processors -------------------------------------------------------------------------


def test_suppress_tokens():
    logits = torch.tensor([[0.5, 2.0, -1.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    out = SuppressTokens([3, 1, 3, 99])(None, logits)  # 99 is past the vocab: ignored
    assert _kept(out) == [[0, 2], [0, 2]]
    assert torch.equal(out[:, [0, 2]], logits[:, [0, 2]])


def test_min_new_tokens_before_and_after_threshold():
    logits = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5], [-1.0, 2.0, 0.0, 1.0, 3.0]])
    proc = MinNewTokens(prompt_length=3, min_new_tokens=2, eos_ids=[0, 2])
    for T, banned in [(3, True), (4, True), (5, False), (6, False)]:  # T - 3 new tokens so far
        ids = torch.zeros(2, T, dtype=torch.long)
        ids[1, 0] = PAD_ID
        out = proc(ids, logits)
        assert _kept(out) == ([[1, 3, 4]] * 2 if banned else [[0, 1, 2, 3, 4]] * 2), T
        assert torch.equal(out[:, [1, 3, 4]], logits[:, [1, 3, 4]])


def test_suppress_and_min_new_tokens_match_transformers(hf):
    ids = _random_ids(3, 7, 50, [0, 2, 4])
    for logits in _random_logits():
        ours = SuppressTokens([1, 3, 49])(ids, logits)
        assert torch.equal(ours, hf.SuppressTokensLogitsProcessor([1, 3, 49])(ids, logits))
        for prompt_length in (4, 5, 6):  # 3, 2 and 1 new tokens; 2 are needed
            ours = MinNewTokens(prompt_length, 2, [0, 7])(ids, logits)
            theirs = hf.MinNewTokensLengthLogitsProcessor(prompt_length, 2, [0, 7])(ids.clamp(min=0), logits)
            assert torch.equal(ours, theirs)


def test_repetition_penalty_hand_computed():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0, -2.0, 1.0],
                           [2.0, -1.0, 0.5, 3.0, -2.0, 1.0]])
    ids = torch.tensor([[PAD_ID, PAD_ID, 1, 3, 1, 0],
                        [4, 4, 4, 4, 4, 4]])
    before = logits.clone()
    out = RepetitionPenalty(2.0)(ids, logits)
    expected = torch.tensor([[1.0, -2.0, 0.5, 1.5, -2.0, 1.0],  # 1 twice is penalized once; the pads
                             [2.0, -1.0, 0.5, 3.0, -4.0, 1.0]])  # must not touch token V-1 (index -1)
    assert torch.equal(out, expected)
    assert torch.equal(logits, before)
    rewarded = RepetitionPenalty(0.5)(ids, logits)  # < 1 favours seen tokens
    assert torch.equal(rewarded[0], torch.tensor([4.0, -0.5, 0.5, 6.0, -2.0, 1.0]))


@pytest.mark.parametrize("penalty", [0.7, 1.3, 2.5])
def test_repetition_penalty_matches_transformers(hf, penalty):
    pads = [0, 3, 9]
    ids = _random_ids(3, 12, 50, pads, seed=1)
    for logits in _random_logits():
        # transformers skips left padding through prompt_ignore_length (from the attention mask)
        ref = hf.RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=torch.tensor(pads))
        assert torch.equal(RepetitionPenalty(penalty)(ids, logits), ref(ids.clamp(min=0), logits))


def test_no_repeat_ngram_hand_computed():
    logits = torch.zeros(1, 10)
    row = torch.tensor([[5, 1, 2, 3, 1, 2]])
    assert _kept(NoRepeatNGram(3)(row, logits)) == [[0, 1, 2, 4, 5, 6, 7, 8, 9]]  # (1, 2) -> 3 seen
    assert _kept(NoRepeatNGram(2)(row, logits)) == [[0, 1, 2, 4, 5, 6, 7, 8, 9]]  # (2,) -> 3 seen
    assert _kept(NoRepeatNGram(7)(row, logits)) == [list(range(10))]  # shorter than n
    padded = torch.tensor([[PAD_ID, PAD_ID, 4, 7, 4]])
    assert _kept(NoRepeatNGram(1)(padded, logits)) == [[0, 1, 2, 3, 5, 6, 8, 9]]  # 9 (= index -1) stays
    # (PAD, 8, 2) would ban 2 after (PAD, 8), and (8, PAD) would ban the pad: neither counts
    holes = torch.tensor([[PAD_ID, 8, 2, PAD_ID, 8]])
    assert _kept(NoRepeatNGram(3)(holes, logits)) == [list(range(10))]
    assert _kept(NoRepeatNGram(2)(torch.tensor([[8, PAD_ID, 8]]), logits)) == [list(range(10))]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("T", [3, 9, 24])
def test_no_repeat_ngram_matches_transformers(hf, n, T):
    pads = [0, 1, T - 2]
    ids = _random_ids(3, T, 4, pads, seed=T + n)
    logits = _random_logits()[1]
    out = NoRepeatNGram(n)(ids, logits)
    for b, p in enumerate(pads):  # ignoring left padding = transformers on the row without it
        ref = hf.NoRepeatNGramLogitsProcessor(n)(ids[b : b + 1, p:], logits[b : b + 1])
        assert torch.equal(out[b : b + 1], ref), (b, p)


# ---- warpers ----------------------------------------------------------------------------


def test_presence_and_frequency_penalties_hand_computed():
    # prompt width 3 (row 0 left-padded); generated: row 0 [3, 3, 4], row 1 [1, 1, 1]
    ids = torch.tensor([[PAD_ID, 1, 2, 3, 3, 4], [5, 6, 7, 1, 1, 1]])
    out = OutputPenalties(3, presence=0.5, frequency=0.25)(ids, torch.zeros(2, 8))
    want = torch.zeros(2, 8)
    want[0, 3], want[0, 4] = -(0.5 + 2 * 0.25), -(0.5 + 0.25)  # the prompt's 1 and 2 are not counted
    want[1, 1] = -(0.5 + 3 * 0.25)  # nor the prompt's 5, 6, 7
    assert torch.equal(out, want)
    assert OutputPenalties(6, 0.5, 0.25)(ids, want) is want  # nothing generated yet: unchanged
    encourage = OutputPenalties(3, presence=-1.0, frequency=0.0)(ids, torch.zeros(2, 8))  # negative: repeats
    assert encourage[0, 3] == encourage[0, 4] == encourage[1, 1] == 1.0 and encourage[0, 1] == 0


def test_presence_and_frequency_penalties_against_counting():
    ids = _random_ids(4, 12, 30, [0, 3, 7, 0], seed=3)
    ids[3, -2:] = PAD_ID  # a pad among the generated tokens (a row that ended) is no token
    for logits in _random_logits(4, 30):
        out = OutputPenalties(5, 0.4, 0.7)(ids, logits)
        for b in range(4):
            new = [t for t in ids[b, 5:].tolist() if t != PAD_ID]
            for v in range(30):
                c = new.count(v)
                want = logits[b, v] - (0.7 * c + 0.4 * (c > 0))
                assert out[b, v] == want or (want == NEG and out[b, v] == NEG)


def test_logit_bias_adds_to_the_named_tokens_only():
    logits = torch.zeros(2, 6)
    out = LogitBias({2: -100.0, 0: 1.5, 9: 3.0})(None, logits)  # 9 is past this vocabulary: skipped
    assert out[:, 2].tolist() == [-100.0] * 2 and out[:, 0].tolist() == [1.5] * 2
    assert out[:, [1, 3, 4, 5]].abs().sum() == 0 and logits.abs().sum() == 0
    bf16 = LogitBias({1: 0.5})(None, torch.zeros(1, 4, dtype=torch.bfloat16))
    assert bf16.dtype == torch.bfloat16 and bf16[0, 1] == 0.5


def test_temperature():
    assert torch.equal(Temperature(2.0)(None, torch.tensor([[1.0, -2.0, 4.0]])), torch.tensor([[0.5, -1.0, 2.0]]))


def test_temperature_matches_transformers(hf):
    for logits in _random_logits():
        assert torch.equal(Temperature(0.7)(None, logits), hf.TemperatureLogitsWarper(0.7)(None, logits))


def test_top_k_keeps_ties_at_the_boundary():
    logits = torch.tensor([[1.0, 5.0, 3.0, 3.0, -1.0]])
    assert _kept(TopK(2)(None, logits)) == [[1, 2, 3]]  # the 2nd value is tied: both 3.0 stay
    assert _kept(TopK(3)(None, logits)) == [[1, 2, 3]]
    assert _kept(TopK(4)(None, logits)) == [[0, 1, 2, 3]]
    assert _kept(TopK(1, min_tokens_to_keep=4)(None, logits)) == [[0, 1, 2, 3]]
    assert torch.equal(TopK(10)(None, logits), logits)  # k > V keeps everything


def test_top_p_hand_computed():
    logits = _from_probs(0.15, 0.5, 0.05, 0.3)
    assert _kept(TopP(0.7)(None, logits)) == [[1, 3]]  # 0.5 < 0.7, so 0.3 (which crosses it) stays
    assert _kept(TopP(0.81)(None, logits)) == [[0, 1, 3]]
    assert _kept(TopP(0.1, min_tokens_to_keep=3)(None, logits)) == [[0, 1, 3]]
    out = TopP(0.7)(None, logits)
    assert torch.equal(out[:, [1, 3]], logits[:, [1, 3]])


@pytest.mark.parametrize("p", [0.0, 1e-9, 1e-3])
def test_top_p_keeps_one_token_when_p_is_tiny(p):
    logits = torch.tensor([[0.3, 2.0, 1.9, -1.0], [5.0, 5.5, 1.0, 0.0]])
    assert _kept(TopP(p)(None, logits)) == [[1], [1]]


def test_top_p_keeps_tied_tokens_together():
    # transformers keeps token 3 and drops 1 and 2 (by token id); all three tie, so all stay
    logits = torch.tensor([[2.0, 1.0, 1.0, 1.0, 0.0]])
    assert _kept(TopP(0.6)(None, logits)) == [[0, 1, 2, 3]]


def test_min_p_hand_computed():
    logits = _from_probs(0.15, 0.5, 0.05, 0.3)
    assert _kept(MinP(0.2)(None, logits)) == [[0, 1, 3]]  # below 0.2 * 0.5 = 0.1 goes
    assert _kept(MinP(0.5)(None, logits)) == [[1, 3]]  # below 0.25 goes
    assert _kept(MinP(0.9, min_tokens_to_keep=3)(None, logits)) == [[0, 1, 3]]
    assert torch.equal(MinP(0.0)(None, logits), logits)


def test_typical_p_hand_computed():
    # entropy H = 1.1421; |surprisal - H|: 0.5 -> 0.449, 0.3 -> 0.062, 0.15 -> 0.755, 0.05 -> 1.854
    logits = _from_probs(0.05, 0.5, 0.15, 0.3)
    assert _kept(TypicalP(0.2)(None, logits)) == [[3]]  # the most likely token is not the most typical
    assert _kept(TypicalP(0.5)(None, logits)) == [[1, 3]]  # 0.3 < 0.5, so 0.5 (which crosses it) stays
    assert _kept(TypicalP(0.85)(None, logits)) == [[1, 2, 3]]
    assert _kept(TypicalP(0.2, min_tokens_to_keep=2)(None, logits)) == [[1, 3]]


WARPERS = [
    (lambda: TopK(5), lambda m: m.TopKLogitsWarper(5)),
    (lambda: TopK(1, min_tokens_to_keep=3), lambda m: m.TopKLogitsWarper(1, min_tokens_to_keep=3)),
    (lambda: TopP(0.05), lambda m: m.TopPLogitsWarper(0.05)),
    (lambda: TopP(0.5), lambda m: m.TopPLogitsWarper(0.5)),
    (lambda: TopP(0.95), lambda m: m.TopPLogitsWarper(0.95)),
    (lambda: TopP(0.3, 4), lambda m: m.TopPLogitsWarper(0.3, min_tokens_to_keep=4)),
    (lambda: MinP(0.05), lambda m: m.MinPLogitsWarper(0.05)),
    (lambda: MinP(0.4), lambda m: m.MinPLogitsWarper(0.4)),
    (lambda: MinP(0.9, 3), lambda m: m.MinPLogitsWarper(0.9, min_tokens_to_keep=3)),
    (lambda: TypicalP(0.2), lambda m: m.TypicalLogitsWarper(0.2)),
    (lambda: TypicalP(0.9), lambda m: m.TypicalLogitsWarper(0.9)),
    (lambda: TypicalP(0.5, 3), lambda m: m.TypicalLogitsWarper(0.5, min_tokens_to_keep=3)),
]


@pytest.mark.parametrize("ours, theirs", WARPERS)
def test_warpers_match_transformers(hf, ours, theirs):
    ours, theirs = ours(), theirs(hf)
    for logits in _random_logits():
        before = logits.clone()
        assert torch.equal(ours(None, logits), theirs(None, logits))
        assert torch.equal(logits, before)


@pytest.mark.parametrize("scale", [0.01, 1.0, 20.0])
@pytest.mark.parametrize("p", [0.3, 0.9, 0.999])
def test_top_p_and_typical_on_a_large_vocab(hf, scale, p):
    # many tokens per histogram bin (flat), and scores more than 32 nats apart (wide), in float64
    # where the reference's sort and cumsum lose nothing to rounding
    logits = torch.randn(2, 20000, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * scale
    for ours, theirs in [(TopP(p), hf.TopPLogitsWarper(p)), (TypicalP(p), hf.TypicalLogitsWarper(p))]:
        assert torch.equal(ours(None, logits), theirs(None, logits))
    # from float32 logits too: the float32 softmax sums to 1 only within ~1e-6, more than a tail
    # token's probability here, so the cutoff must not take the total for 1
    assert _kept(TopP(p)(None, logits.float())) == _kept(hf.TopPLogitsWarper(p)(None, logits))


def test_top_p_rounding_on_a_gpt2_sized_batch(hf):
    # (16, 50257) at p = 0.999: the tail tokens' probabilities (~1e-7) are below float32's
    # resolution at 1, so the mass above a token must be summed in float64
    logits = torch.randn(16, 50257, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    assert _kept(TopP(0.999)(None, logits.float())) == _kept(hf.TopPLogitsWarper(0.999)(None, logits))


@pytest.mark.parametrize("proc", [
    SuppressTokens([1]), MinNewTokens(0, 9, [2]), RepetitionPenalty(1.5), NoRepeatNGram(1), Temperature(0.5),
    TopK(3), TopP(0.5), MinP(0.3), TypicalP(0.5), OutputPenalties(2, 0.5, 0.3), LogitBias({1: 2.0}),
], ids=lambda p: type(p).__name__)
def test_input_is_never_modified(proc):
    ids = _random_ids(3, 6, 50, [2, 0, 5])
    logits = _random_logits()[1]
    before = logits.clone()
    out = proc(ids, logits)
    assert out.shape == logits.shape and not torch.equal(out, logits)  # it did something...
    assert torch.equal(logits, before)  # ...to a copy


def test_owned_logits_are_changed_in_place_with_the_same_result():
    openai = {"presence_penalty": 0.6, "frequency_penalty": 0.4, "logit_bias": {3: -2.0, 8: 1.0}}
    procs = build_processors(GenerationConfig(**{**ALL_ON, **openai, "do_sample": False}), [7], 3, [0, 4])
    assert {OutputPenalties, LogitBias} <= {type(p) for p in procs}
    ids = _random_ids(3, 6, 50, [0, 0, 0], seed=5)
    for logits in _random_logits():
        copied = apply_processors(procs, ids, logits)
        owned = logits.clone()
        out = apply_processors(procs, ids, owned, owned=True)
        assert torch.equal(out, copied)
    bans = [MinNewTokens(5, 3, [0, 4]), SuppressTokens([7])]
    logits = _random_logits()[0]
    out = apply_processors(bans, ids, logits, owned=True)
    assert out is logits and torch.equal(logits[:, [0, 4, 7]], torch.full((3, 3), NEG))  # written into it


# ---- building the list ------------------------------------------------------------------

ALL_ON = {"do_sample": True, "temperature": 0.7, "top_k": 10, "top_p": 0.9, "min_p": 0.05, "typical_p": 0.95,
          "repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "min_new_tokens": 3}
ORDER = [RepetitionPenalty, NoRepeatNGram, MinNewTokens, SuppressTokens, Temperature, TopK, TopP, MinP, TypicalP]


def test_build_processors_order_and_skips():
    procs = build_processors(GenerationConfig(**ALL_ON), suppress_ids=[7], prompt_length=5, eos_ids=[0, 4])
    assert [type(p) for p in procs] == ORDER
    greedy = build_processors(GenerationConfig(**{**ALL_ON, "do_sample": False}), [7], 5, [0, 4])
    assert [type(p) for p in greedy] == ORDER[:4]  # no warper without sampling
    off = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0,
                           repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0)
    assert build_processors(off, eos_ids=[0]) == []
    no_eos = build_processors(GenerationConfig(**ALL_ON))  # min_new_tokens needs an eos to hold back
    assert [type(p) for p in no_eos] == [t for t in ORDER if t not in (MinNewTokens, SuppressTokens)]
    openai = GenerationConfig(**ALL_ON, presence_penalty=0.5, frequency_penalty=0.0, logit_bias={3: 1.0})
    with_openai = [type(p) for p in build_processors(openai, [7], 5, [0, 4])]  # raw logits, before any ban
    assert with_openai == [RepetitionPenalty, OutputPenalties, LogitBias, *ORDER[1:]]
    beams = build_processors(GenerationConfig(**{**ALL_ON, "num_beams": 4}), eos_ids=[0, 4])
    assert [p.min_tokens_to_keep for p in beams if isinstance(p, (TopP, MinP, TypicalP))] == [3, 3, 3]


def test_build_processors_matches_the_transformers_pipeline(hf):
    # transformers' list in the order of GenerationMixin._get_logits_processor
    theirs = hf.LogitsProcessorList([
        hf.RepetitionPenaltyLogitsProcessor(1.3),
        hf.NoRepeatNGramLogitsProcessor(2),
        hf.MinNewTokensLengthLogitsProcessor(5, 3, [0, 4]),
        hf.SuppressTokensLogitsProcessor([7]),
        hf.TemperatureLogitsWarper(0.7),
        hf.TopKLogitsWarper(10),
        hf.TopPLogitsWarper(0.9),
        hf.MinPLogitsWarper(0.05),
        hf.TypicalLogitsWarper(0.95),
    ])
    ours = build_processors(GenerationConfig(**ALL_ON), suppress_ids=[7], prompt_length=5, eos_ids=[0, 4])
    ids = _random_ids(3, 6, 5, [0, 0, 0], seed=5)  # bigrams repeat
    for logits in _random_logits():
        assert torch.equal(apply_processors(ours, ids, logits), theirs(ids, logits))
