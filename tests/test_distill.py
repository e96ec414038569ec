"""Word-level knowledge distillation (train.distill_*): the chunked KD loss against a plain
reference, distilled runs of every generation family through the one loop, exact resume,
LoRA students, one-line errors that damage no run, and every-other-layer initialisation."""

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import proselab
import proselab.runs
from proselab.cli import main
from proselab.config import Config, ConfigError, apply_dict, config_from_dict, load_config
from proselab.data.batch import IGNORE_INDEX
from proselab.distill import copy_every_other_layer, distill_loss, kept_layers, loss as kd
from proselab.models import build_model
from proselab.training import train

from conftest import shakespeare_text, tiny_overrides


def _losses(run: Path, key: str = "train_loss") -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in records if key in r}


# ---- the loss ---------------------------------------------------------------------------

def _reference(s, t, y, alpha, T, top_k=0, eps=0.0):
    """The textbook form over whole (N, V) float32 tensors, differentiated by autograd."""
    keep = y != IGNORE_INDEX
    s, t, y = s[keep].float(), t[keep].float(), y[keep]
    ce = F.cross_entropy(s, y, label_smoothing=eps)
    log_q = F.log_softmax(s / T, -1)
    if top_k:
        vals, idx = t.topk(top_k, -1)
        log_p = F.log_softmax(vals / T, -1)
        kl = (log_p.exp() * (log_p - log_q.gather(1, idx))).sum(-1).mean()
    else:
        log_p = F.log_softmax(t / T, -1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    return (1 - alpha) * ce + alpha * T * T * kl


@pytest.mark.parametrize("top_k, eps", [(0, 0.0), (5, 0.0), (0, 0.1), (3, 0.1)])
def test_chunked_loss_and_gradient_equal_the_plain_computation(monkeypatch, top_k, eps):
    monkeypatch.setattr(kd, "CHUNK_ELEMENTS", 3 * 17)  # 3 rows a chunk: uneven chunks, several of them
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 7, 17, generator=g, dtype=torch.float64) * 3
    t = torch.randn(2, 7, 17, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 17, (2, 7), generator=g)
    y[0, :3] = IGNORE_INDEX  # a prompt
    y[1, -2:] = IGNORE_INDEX  # padding
    for alpha, T in [(0.5, 2.0), (1.0, 1.0), (0.3, 4.0)]:
        a = s.clone().requires_grad_(True)
        parts = {}
        got = distill_loss(a, t, y, alpha, T, top_k, eps, parts)
        got.backward()
        b = s.clone().requires_grad_(True)
        want = _reference(b, t, y, alpha, T, top_k, eps)
        want.backward()
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want.double(), atol=1e-5, rtol=1e-5)
        # the two terms a log shows: the gold CE alone, and the KL before its T^2
        ce, kl = _reference(s, t, y, 0.0, T, top_k, eps), _reference(s, t, y, 1.0, T, top_k, eps) / (T * T)
        assert not parts["ce"].requires_grad and not parts["kd"].requires_grad
        torch.testing.assert_close(parts["ce"].double(), ce.double(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(parts["kd"].double(), kl.double(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4)
        assert a.grad[0, :3].abs().sum() == 0 and a.grad[1, -2:].abs().sum() == 0  # untrained rows learn nothing


def test_kd_term_is_zero_for_the_teacher_itself_and_alpha_picks_the_terms():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 9, 11, generator=g), torch.randn(4, 9, 11, generator=g)
    y = torch.randint(0, 11, (4, 9), generator=g)
    a = t.clone().requires_grad_(True)
    zero = distill_loss(a, t, y, alpha=1.0, temperature=2.0)
    zero.backward()
    assert abs(zero.item()) < 1e-5 and a.grad.abs().max() < 1e-6  # nothing to learn from oneself
    assert distill_loss(s, t, y, 0.0, 2.0).item() == pytest.approx(F.cross_entropy(s.view(-1, 11), y.view(-1)).item(),
                                                                 rel=1e-6)
    only_kd = distill_loss(s, t, y, 1.0, 2.0)
    kl = F.kl_div(F.log_softmax(s / 2, -1).view(-1, 11), F.log_softmax(t / 2, -1).view(-1, 11), log_target=True,
                  reduction="batchmean")
    assert only_kd.item() == pytest.approx(4 * kl.item(), rel=1e-5)
    # bf16 logits (autocast): float32 result, gradient in the logits' dtype
    b = s.bfloat16().requires_grad_(True)
    out = distill_loss(b, t.bfloat16(), y, 0.5, 2.0, top_k=4)
    out.backward()
    assert out.dtype == torch.float32 and b.grad.dtype == torch.bfloat16
    # a teacher whose model vocabulary is larger or smaller (past the tokenizer's ids)
    assert distill_loss(s, torch.cat([t, torch.full((4, 9, 3), -1e4)], -1), y, 1.0, 2.0).item() == \
        pytest.approx(only_kd.item(), rel=1e-5)
    padded = distill_loss(torch.cat([s, torch.full((4, 9, 2), -1e4)], -1), t, y, 1.0, 2.0)
    assert torch.isfinite(padded) and padded.item() == pytest.approx(only_kd.item(), rel=1e-4)


# ---- distilled runs ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny character GPT trained on the corpus (a 4-layer one, for every-other-layer)."""
    root = tmp_path_factory.mktemp("teacher")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROSELAB_CACHE", str(root / "cache"))
        corpus = root / "corpus.txt"
        corpus.write_text(shakespeare_text(), encoding="utf-8")
        train(None, tiny_overrides(corpus, root / "gpt", **{"model.n_layer": 4, "train.max_iters": 40, "train.lr": 3e-3,
                                                           "train.eval_interval": 40, "train.final_eval": False}))
    return root / "gpt"


def _student(corpus, out, teacher, family="gpt", **extra):
    return tiny_overrides(corpus, out, family, **{"train.distill_teacher": str(teacher), "train.final_eval": False,
                                                  **extra})


def test_alpha_zero_trains_exactly_as_without_a_teacher(corpus, tmp_path, teacher):
    plain = tiny_overrides(corpus, tmp_path / "plain", **{"model.dropout": 0.1, "train.final_eval": False})
    train(None, plain)
    train(None, _student(corpus, tmp_path / "kd0", teacher, **{"model.dropout": 0.1, "train.distill_alpha": 0.0}))
    assert _losses(tmp_path / "kd0") == _losses(tmp_path / "plain")
    assert _losses(tmp_path / "kd0", "val_loss") == _losses(tmp_path / "plain", "val_loss")


@pytest.mark.parametrize("family, extra", [("gpt", {"model.n_layer": 1}),
                                           ("rnn", {"train.distill_top_k": 8, "train.distill_temperature": 1.0})])
def test_a_distilled_student_trains_and_evaluates_with_the_plain_loss(corpus, tmp_path, teacher, family, extra):
    common = {"train.lr": 3e-3, "train.final_eval": False, **extra}
    train(None, tiny_overrides(corpus, tmp_path / "plain", family, **common))
    res = train(None, _student(corpus, tmp_path / "kd", teacher, family, **common))
    vals = _losses(tmp_path / "kd", "val_loss")
    assert res.step == 20 and vals[20] < vals[0]
    # the same weights and batches at step 0, but another training loss: the KD term is in it;
    # the evaluation is the plain cross-entropy, comparable with the run trained without a teacher
    assert vals[0] == _losses(tmp_path / "plain", "val_loss")[0]
    assert _losses(tmp_path / "kd")[1] != pytest.approx(_losses(tmp_path / "plain")[1], rel=1e-3)
    # each log line splits the training loss into its two terms: (1 - alpha) CE + alpha T^2 KD
    cfg = config_from_dict(json.loads((tmp_path / "kd" / "config.json").read_text()))
    a, T = cfg.train.distill_alpha, cfg.train.distill_temperature
    ce, kl, total = _losses(tmp_path / "kd", "train_ce"), _losses(tmp_path / "kd", "train_kd"), _losses(tmp_path / "kd")
    assert sorted(ce) == sorted(kl) == sorted(total) and len(total) >= 2
    for step in total:
        assert kl[step] > 0 and total[step] == pytest.approx((1 - a) * ce[step] + a * T * T * kl[step], rel=1e-4)
    assert "train_ce" not in (tmp_path / "plain" / "metrics.jsonl").read_text()
    saved = json.loads((tmp_path / "kd" / "config.json").read_text())
    assert saved["train"]["distill_teacher"] == str(teacher)
    assert (tmp_path / "kd" / "tokenizer.json").read_text() == (teacher / "tokenizer.json").read_text()
    proselab.load(tmp_path / "kd").generate("KING", max_new_tokens=5)  # no teacher needed to use the student


def test_resume_of_a_distilled_run_is_exact(corpus, tmp_path, teacher):
    extra = {"model.dropout": 0.1, "model.n_layer": 1, "train.grad_accum": 2, "train.lr_decay_iters": 20,
             "train.distill_top_k": 6}
    train(None, _student(corpus, tmp_path / "full", teacher, **extra))
    train(None, _student(corpus, tmp_path / "part", teacher, **{**extra, "train.max_iters": 10}))
    res = train(None, {"train.init_from": "resume", "train.out_dir": str(tmp_path / "part"), "train.max_iters": 20})
    assert res.step == 20
    assert _losses(tmp_path / "full") == _losses(tmp_path / "part")
    state = torch.load(tmp_path / "part" / "trainer_state.pt", weights_only=True)
    assert not any("teacher" in k for k in state)  # the teacher is reloaded, never stored


def test_torchrun_two_processes_distil_as_one_process(corpus, tmp_path, teacher):
    """Under torchrun each process loads the teacher and distils its share of the global batch:
    two processes with batch B give the losses of one process with 2B."""
    import os
    import subprocess
    import sys

    extra = {"model.n_layer": 1, "train.max_iters": 4, "train.distill_top_k": 6}
    train(None, _student(corpus, tmp_path / "single", teacher, **{**extra, "train.batch_size": 8}))
    args = [f"--{k}={v}" for k, v in _student(corpus, tmp_path / "ddp", teacher, **{**extra, "train.batch_size": 4}).items()]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "proselab", "train", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=2e-5), step


def test_the_gpt_to_lstm_preset_distils(corpus, tmp_path, teacher):
    """shakespeare-char-lstm-kd as a user runs it, with its teacher and data pointed at tiny ones."""
    res = train("shakespeare-char-lstm-kd", {
        "train.distill_teacher": str(teacher), "data.dataset": str(corpus), "train.out_dir": str(tmp_path / "kd"),
        "model.hidden_size": 32, "model.n_embd": 32, "model.num_layers": 1, "model.block_size": 32,
        "train.batch_size": 4, "train.max_iters": 4, "train.eval_interval": 2, "train.eval_iters": 1,
        "train.progress": False, "train.dtype": "float32", "train.final_eval": False})
    saved = json.loads((tmp_path / "kd" / "config.json").read_text())
    assert res.step == 4 and saved["model"]["family"] == "rnn" and saved["train"]["distill_alpha"] == 0.5
    assert saved["train"]["distill_temperature"] == 2.0


def test_a_lora_student_trains_only_its_adapters(corpus, tmp_path, teacher):
    from safetensors.torch import load_file

    res = train(None, _student(corpus, tmp_path / "lora", teacher, **{
        "train.init_from": str(teacher), "train.lora_rank": 2, "train.max_iters": 6, "train.distill_alpha": 0.7}))
    assert res.step == 6
    weights = load_file(tmp_path / "lora" / "last.safetensors")
    base = load_file(teacher / "model.safetensors")
    assert any(k.endswith("lora_B") and v.abs().sum() > 0 for k, v in weights.items())  # the adapters learned
    for name, value in base.items():  # the frozen base is the teacher's, unchanged
        key = name if name in weights else name.replace(".weight", ".base.weight")
        if key in weights:
            assert torch.equal(weights[key], value), name


def test_a_hugging_face_gpt2_directory_teaches(corpus, tmp_path, teacher):
    hf = proselab.runs.export_hf(teacher, tmp_path / "hf")
    with pytest.warns(UserWarning, match="data.tokenizer=bpe is ignored: a distilled student takes the teacher's"):
        res = train(None, _student(corpus, tmp_path / "kd", hf, **{"model.n_layer": 1, "train.max_iters": 4,
                                                                  "train.eval_interval": 4, "data.tokenizer": "bpe"}))
    vals = _losses(tmp_path / "kd", "val_loss")
    assert res.step == 4 and vals[4] < vals[0]


def test_sft_distils_from_a_teacher_that_knows_its_tokens(tmp_path, teacher, old_run):
    rng = random.Random(0)
    words = "the king my lord good sir what shall we do now thou art here love night day".split()
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": " ".join(rng.choices(words, k=4)),
                                        "response": " ".join(rng.choices(words, k=5))}) + "\n" for _ in range(200)))
    # a plain-text teacher lacks the end-of-text token SFT data adds: refused, saying what to do
    _refused(_student(data, "", teacher, **{"model.n_layer": 1}), old_run, "fine-tune it on such data first")
    train(None, tiny_overrides(data, tmp_path / "sft_teacher", **{"train.max_iters": 20, "train.final_eval": False}))
    res = train(None, _student(data, tmp_path / "kd", tmp_path / "sft_teacher", **{
        "model.n_layer": 1, "train.lr": 3e-3, "train.distill_top_k": 4}))
    vals = _losses(tmp_path / "kd", "val_loss")
    assert res.step == 20 and vals[20] < vals[0]


def test_the_teacher_runs_in_the_students_autocast_dtype(corpus, tmp_path, teacher, monkeypatch):
    from proselab.tasks import distill as task_module

    seen = []

    def recording(student, teacher_logits, *args):
        seen.append((student.dtype, teacher_logits.dtype, teacher_logits.requires_grad))
        return distill_loss(student, teacher_logits, *args)

    monkeypatch.setattr(task_module, "distill_loss", recording)
    res = train(None, _student(corpus, tmp_path / "bf16", teacher, **{
        "model.n_layer": 1, "train.dtype": "bfloat16", "train.max_iters": 2, "train.final_eval": False}))
    assert res.step == 2 and seen == [(torch.bfloat16, torch.bfloat16, False)] * 2


def _reverse(path: Path, n: int, seed: int, upper: bool = False) -> Path:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        toks = [rng.choice("abcdefgh") for _ in range(rng.randint(1, 6))]
        target = " ".join(reversed(toks))
        lines.append(" ".join(toks) + "\t" + (target.upper() if upper else target))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _s2s(tmp_path: Path, out: str, upper: bool = False, **extra) -> dict:
    return {"data.dataset": str(_reverse(tmp_path / "train.tsv", 300, 0, upper)),
            "data.val_dataset": str(_reverse(tmp_path / "dev.tsv", 20, 1, upper)), "data.tokenizer": "char",
            "model.family": "seq2seq", "model.arch": "transformer", "model.n_embd": 24, "model.n_layer": 2,
            "model.n_head": 2, "train.out_dir": str(tmp_path / out), "train.batch_size": 16, "train.max_iters": 30,
            "train.lr": 5e-3, "train.warmup_iters": 2, "train.eval_interval": 15, "train.eval_iters": 2,
            "train.log_interval": 5, "train.eval_bleu_samples": 0, "train.progress": False,
            "train.dtype": "float32", "train.device": "cpu", "train.final_eval": False, **extra}


def test_seq2seq_transformer_distils_and_starts_from_every_other_layer(tmp_path):
    train(None, _s2s(tmp_path, "teacher", **{"train.max_iters": 30}))
    teacher = tmp_path / "teacher"
    res = train(None, _s2s(tmp_path, "student", **{"model.n_layer": 1, "train.distill_teacher": str(teacher),
                                                   "train.label_smoothing": 0.1, "train.max_iters": 20,
                                                   "train.eval_interval": 10}))
    vals = _losses(tmp_path / "student", "val_loss")
    assert res.step == 20 and vals[20] < vals[0]
    eol = _s2s(tmp_path, "eol", **{"model.n_layer": 1, "train.distill_teacher": str(teacher),
                                   "train.distill_init": "every-other-layer", "train.max_iters": 1})
    train(None, eol)
    start = _losses(tmp_path / "eol", "val_loss")[0]
    assert start < vals[0]  # the teacher's layers predict better than a fresh student


# ---- every-other-layer ------------------------------------------------------------------

def test_kept_layers_are_distilgpt2s():
    assert kept_layers(12, 6) == [0, 2, 4, 7, 9, 11]
    assert kept_layers(4, 2) == [0, 3] and kept_layers(2, 1) == [0] and kept_layers(6, 3) == [0, 2, 5]


def _model(**fields):
    cfg = Config().model
    for k, v in {"vocab_size": 13, "n_embd": 16, "n_head": 2, "block_size": 8, **fields}.items():
        setattr(cfg, k, v)
    return build_model(cfg)


LLAMA_STYLE = {"rope": True, "norm": "rmsnorm", "gated_ffn": True, "activation": "silu", "n_kv_head": 1, "bias": False}


@pytest.mark.parametrize("kind", ["gpt", "llama", "seq2seq"])
def test_every_other_layer_copies_the_right_tensors(kind):
    extra = {"seq2seq": {"family": "seq2seq", "arch": "transformer", "bos_id": 1}, "llama": LLAMA_STYLE}.get(kind, {})
    torch.manual_seed(0)
    teacher = _model(n_layer=4, **extra)
    student = _model(n_layer=2, **(extra if kind == "seq2seq" else {**extra, "block_size": 6}))
    assert copy_every_other_layer(student, teacher) == [0, 3]
    t, s = teacher.state_dict(), student.state_dict()
    blocks = ("encoder", "decoder") if kind == "seq2seq" else ("transformer.h",)
    for name, value in s.items():
        for prefix in blocks:
            for i, j in enumerate([0, 3]):
                if name.startswith(f"{prefix}.{i}."):
                    name = name.replace(f"{prefix}.{i}.", f"{prefix}.{j}.", 1)
                    break
            else:
                continue
            break
        want = t[name][: value.size(0)] if name == "transformer.wpe.weight" else t[name]
        assert torch.equal(value, want), name
    if kind != "seq2seq":  # a student block is not its neighbour's
        assert not torch.equal(s["transformer.h.1.attn.c_attn.weight"], t["transformer.h.1.attn.c_attn.weight"])


@pytest.mark.parametrize("student, match", [
    ({"n_layer": 3}, "model.n_layer=3 \\(half the teacher's 4 is 2\\)"),
    ({"n_layer": 2, "n_embd": 32}, "model.n_embd=32"),
    ({"n_layer": 2, "block_size": 16}, "model.block_size=16"),
    ({"family": "rnn", "hidden_size": 16}, "a rnn student and a gpt teacher"),
    ({"n_layer": 2, "rope": True}, "model.rope=True \\(the teacher's False\\)"),
])
def test_every_other_layer_says_what_must_match(student, match):
    with pytest.raises(ConfigError, match=match) as e:
        copy_every_other_layer(_model(**student), _model(n_layer=4))
    assert "\n" not in str(e.value)


# ---- settings and bad input ---------------------------------------------------------------

def test_settings_spelled_as_the_issue_names_them_and_saved_flat(tmp_path):
    cfg = load_config(None, ["train.distill.teacher=runs/big", "train.distill.alpha=0.3", "train.distill.top_k=50"])
    assert (cfg.train.distill_teacher, cfg.train.distill_alpha, cfg.train.distill_top_k) == ("runs/big", 0.3, 50)
    nested = apply_dict(Config(), {"train": {"distill": {"temperature": 4, "init": "every-other-layer"}}})
    assert nested.train.distill_temperature == 4.0 and nested.train.distill_init == "every-other-layer"
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))).train.distill_top_k == 50
    assert cfg.train.distill_temperature == 2.0 and Config().train.distill_teacher == ""  # off by default
    with pytest.raises(ConfigError, match="unknown config key 'train.distill.alhpa'"):
        load_config(None, ["train.distill.alhpa=0.3"])


def test_proselab_config_documents_the_settings(capsys):
    assert main(["config", "--train.distill.teacher=runs/big"]) == 0
    out = capsys.readouterr().out
    assert "distill_teacher: runs/big" in out and "# knowledge distillation" in out
    assert "distill_temperature: 2.0" in out and "DistilGPT2" in out


@pytest.mark.parametrize("override, match", [
    ({"train.distill_alpha": 1.5}, r"train.distill_alpha must be in \[0, 1\], got 1.5"),
    ({"train.distill_alpha": -0.1}, r"train.distill_alpha must be in \[0, 1\]"),
    ({"train.distill_temperature": 0}, "train.distill_temperature must be > 0"),
    ({"train.distill_top_k": -1}, "train.distill_top_k must be >= 0"),
    ({"train.distill_init": "half"}, "train.distill_init must be scratch or every-other-layer"),
    ({"train.distill_teacher": "", "train.distill_init": "every-other-layer"}, "set train.distill_teacher too"),
    ({"model.labels": ["a", "b"]}, "model.labels .* makes a classifier"),
])
def test_bad_settings_are_one_line_config_errors(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config(None, {"train.distill_teacher": "runs/big", **override})
    assert "\n" not in str(e.value)


@pytest.fixture
def old_run(corpus, tmp_path):
    """A run in the student's out_dir: every refused distillation must leave it as it was."""
    out = tmp_path / "student"
    train(None, tiny_overrides(corpus, out, **{"train.max_iters": 2, "train.final_eval": False}))
    return out, {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def _refused(overrides: dict, old_run, match: str) -> None:
    out, files = old_run
    with pytest.raises(ConfigError, match=match) as e:
        train(None, {**overrides, "train.out_dir": str(out), "train.overwrite": True})
    assert "\n" not in str(e.value)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files


def test_a_teacher_that_is_not_a_run_is_refused(corpus, tmp_path, old_run):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for path, match in [(tmp_path / "nope", "not a directory"), (tmp_path / "file.txt", "not a directory"),
                        (tmp_path / "empty", "train.distill_teacher .* is not a usable run")]:
        _refused(_student(corpus, "", path), old_run, match)


def test_a_teacher_of_another_tokenizer_family_or_window_is_refused(corpus, tmp_path, teacher, old_run):
    other = tmp_path / "word"
    train(None, tiny_overrides(corpus, other, **{"data.tokenizer": "word", "data.vocab_size": 200,
                                                 "train.max_iters": 2, "train.final_eval": False}))
    # a student that has its tokenizer already (fine-tuned from the word run) and a char teacher
    _refused(_student(corpus, "", teacher, **{"train.init_from": str(other)}), old_run,
             "has another tokenizer than the student")
    _refused(_student(corpus, "", teacher, **{"model.block_size": 64}), old_run,
             "model.block_size=64 is longer than the teacher's window")
    _refused(_s2s(tmp_path, "x", **{"train.distill_teacher": str(teacher)}), old_run,
             "a seq2seq student needs a seq2seq teacher")
    labels = tmp_path / "labels.csv"
    labels.write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(40)))
    _refused(_student(labels, "", teacher), old_run, "this trains a classifier")


def test_a_seq2seq_teacher_with_separate_source_vocabulary_needs_the_same_split(tmp_path, old_run):
    # targets in capitals: the source and target tokenizers differ
    train(None, _s2s(tmp_path, "sep", True, **{"data.joint_vocab": False, "train.max_iters": 2}))
    _refused(_s2s(tmp_path, "x", True, **{"train.distill_teacher": str(tmp_path / "sep"), "data.joint_vocab": True}),
             old_run, "another source tokenizer")
    res = train(None, _s2s(tmp_path, "ok", True, **{"train.distill_teacher": str(tmp_path / "sep"),
                                              "train.max_iters": 2}))  # data.joint_vocab: the teacher's
    assert res.step == 2 and (tmp_path / "ok" / "src_tokenizer.json").is_file()
    src_tokenizer = (tmp_path / "ok" / "src_tokenizer.json").read_bytes()
    assert src_tokenizer == (tmp_path / "sep" / "src_tokenizer.json").read_bytes()
