"""Fault injection: a training run "killed" at every write, sync and rename of its checkpoints.

While a run trains, each file operation of a save (creating a temporary, syncing it, renaming it
into place) first copies the run directory as it stands: what a kill -9 at that instant would
leave on disk. Before each sync, a copy with the half-written file truncated stands for a kill
in the middle of the write. Every copy must then either resume to exactly the weights and
losses of the uninterrupted run, or be refused in one line; a directory killed before its first
checkpoint must start again with the same command, without --train.overwrite. Never a silent
mix of two checkpoints.
"""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides
from safetensors.torch import load_file

from proselab import checkpoint as ckpt
from proselab import training
from proselab.config import ConfigError
from proselab.training import train

STEPS = 2


def _overrides(corpus, out):
    return tiny_overrides(corpus, out, **{"model.n_layer": 1, "model.n_embd": 16, "model.block_size": 16,
                                          "train.max_iters": STEPS, "train.eval_interval": 2, "train.eval_iters": 1,
                                          "model.dropout": 0.1, "train.final_eval": False})


class Recorder:
    """Copies ``run_dir`` into ``into`` before every file operation of a save (and a torn-write
    copy before every sync of a file), skipping copies identical to the previous one."""

    def __init__(self, run_dir: Path, into: Path):
        self.run_dir, self.into = run_dir, into
        self.copies: list[tuple[str, Path]] = []
        self.last_digest = None
        self.active = False

    def digest(self, root: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes() if p.is_file() else b"")
        return h.hexdigest()

    def copy(self, what: str, torn: Path | None = None) -> None:
        if not self.active or not self.run_dir.exists():
            return
        self.active = False  # copying syncs and chmods files too: those are not the save's
        try:
            dest = self.into / f"{len(self.copies):03d}"
            shutil.copytree(self.run_dir, dest)
            if torn is not None:
                target = dest / torn.relative_to(self.run_dir)
                target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
        finally:
            self.active = True
        digest = self.digest(dest)
        if digest == self.last_digest:
            shutil.rmtree(dest)
            return
        self.last_digest = digest
        self.copies.append((what, dest))


@pytest.fixture(scope="module")
def crashes(tmp_path_factory):
    """(the uninterrupted run, [(the operation a kill preceded, a copy of the run dir then)])."""
    tmp = tmp_path_factory.mktemp("crash")
    corpus = tmp / "corpus.txt"
    corpus.write_text("ROMEO: what light through yonder window breaks? It is the east.\n" * 60, encoding="utf-8")
    reference = tmp / "reference"
    train(None, _overrides(corpus, reference))

    run_dir = tmp / "run"
    rec = Recorder(run_dir, tmp / "copies")
    real = {"replace": os.replace, "fsync": os.fsync, "chmod": os.chmod, "mkstemp": tempfile.mkstemp,
            "save_file": ckpt.save_file, "save": training.Trainer.save}

    def fsync(fd):
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.is_file() and run_dir in path.parents:
            rec.copy(f"before syncing {path.name} (half written)", torn=path)
        rec.copy(f"before syncing {path.name}")
        return real["fsync"](fd)

    def wrap(name, label):
        def op(*args, **kwargs):
            rec.copy(f"before {label} {Path(str(args[0] if args else '')).name}")
            return real[name](*args, **kwargs)
        return op

    patches = pytest.MonkeyPatch()
    patches.setattr(os, "replace", wrap("replace", "renaming"))
    patches.setattr(os, "chmod", wrap("chmod", "chmod of"))
    patches.setattr(os, "fsync", fsync)
    patches.setattr(tempfile, "mkstemp", lambda *a, **k: (rec.copy("before creating a temporary"),
                                                          real["mkstemp"](*a, **k))[1])
    patches.setattr(ckpt, "save_file", lambda *a, **k: (rec.copy(f"before writing {Path(a[1]).name}"),
                                                        real["save_file"](*a, **k))[1])

    def record_save(self, snap, best):
        rec.active = True
        try:
            real["save"](self, snap, best)
        finally:
            rec.copy("after the save")
            rec.active = False

    patches.setattr(training.Trainer, "save", record_save)
    try:
        train(None, _overrides(corpus, run_dir))
    finally:
        patches.undo()
    return corpus, reference, rec.copies


def _losses(run: Path) -> dict:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        for key in ("train_loss", "val_loss"):
            if key in r:
                assert (key, r["step"]) not in out, f"{key} of step {r['step']} logged twice"
                out[key, r["step"]] = r[key]
    return out


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_a_kill_at_any_file_operation_of_a_save_resumes_exactly_or_is_refused(crashes, tmp_path):
    corpus, reference, copies = crashes
    assert len(copies) > 15, [what for what, _ in copies]
    outcomes: dict[str, list[str]] = {"resumed": [], "restarted": [], "refused": []}
    for what, copy in copies:
        run = tmp_path / copy.name
        shutil.copytree(copy, run)
        try:
            train(None, {"train.init_from": "resume", "train.out_dir": str(run), "train.max_iters": STEPS})
            outcome = "resumed"
        except ckpt.RunError as e:
            message = str(e)
            assert "\n" not in message, message
            if "no checkpoint yet" not in message:
                outcomes["refused"].append(f"{what}: {message}")
                continue
            # killed before the first checkpoint: the same command starts it again, no overwrite needed
            train(None, _overrides(corpus, run))
            outcome = "restarted"
        assert _same_weights(run / "last.safetensors", reference / "last.safetensors"), f"{what}: mixed weights"
        assert _losses(run) == _losses(reference), what
        leftovers = [p.name for p in run.iterdir() if p.name.startswith(".")]
        assert not leftovers, f"{what}: {leftovers}"
        outcomes[outcome].append(what)
    # the campaign reached every kind of instant: before the first checkpoint, and both sides of a commit
    assert outcomes["restarted"] and outcomes["resumed"], outcomes
    assert not outcomes["refused"], outcomes["refused"]


def test_a_run_killed_before_its_first_checkpoint_says_so_and_starts_again(crashes, tmp_path, capsys):
    corpus, _, copies = crashes
    first = next(copy for what, copy in copies if not (copy / "trainer_state.pt").exists()
                 and (copy / "config.json").exists())
    run = tmp_path / "run"
    shutil.copytree(first, run)
    from proselab.cli import main
    assert main(["generate", str(run), "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds no checkpoint yet" in err and "train" in err, err
    train(None, _overrides(corpus, run))  # no "already holds a run"
    with pytest.raises(ConfigError, match="already holds a run"):
        train(None, _overrides(corpus, run))


def test_mixed_checkpoint_files_are_refused(crashes, tmp_path):
    """last.safetensors from one checkpoint beside trainer_state.pt of another (copied by hand)."""
    _, reference, copies = crashes
    older = next(copy for what, copy in copies if (copy / "last.safetensors").exists())  # step 0's
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    shutil.copy(older / "last.safetensors", run / "last.safetensors")
    with pytest.raises(ckpt.RunError, match="different checkpoints"):
        train(None, {"train.init_from": "resume", "train.out_dir": str(run), "train.max_iters": STEPS + 2})


def test_garbage_in_metrics_does_not_stop_a_resume(crashes, tmp_path):
    _, reference, _ = crashes
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(os.urandom(64) + b"\n[1, 2]\n\"text\"\n{\"step\": \"x\"}\n")
    res = train(None, {"train.init_from": "resume", "train.out_dir": str(run), "train.max_iters": STEPS + 2})
    assert res.step == STEPS + 2
    assert all(isinstance(json.loads(line), dict) for line in (run / "metrics.jsonl").read_text().splitlines())


@pytest.mark.skipif(not Path("/proc/sys").is_dir(), reason="needs Linux's /proc, where no file can be created")
def test_an_unwritable_output_names_the_file_not_a_temporary(crashes, capsys):
    from proselab.atomic import atomic_write_text
    from proselab.cli import main

    with pytest.raises(OSError) as e:
        atomic_write_text("/proc/sys/out.txt", "x")
    assert "/proc/sys/out.txt" in str(e.value) and ".tmp" not in str(e.value)
    _, reference, _ = crashes
    assert main(["export", str(reference), "/proc/sys/exported"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "/proc/sys/exported" in err and ".tmp" not in err, err
