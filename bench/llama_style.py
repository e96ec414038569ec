"""Llama-style GPT: what the style buys in training, and its decoding speed against transformers.

    OMP_NUM_THREADS=1 taskset -c 0 python bench/llama_style.py --text ../shared/data/tinyshakespeare/input.txt
    python bench/llama_style.py --text ../shared/data/tinyshakespeare/input.txt --quick   # minutes: to try it

**Training** (``--steps``, default 2000): nanoGPT's CPU config (``nanogpt-cpu``: 4 layers x 4
heads x 128, block 64, batch 12, char-level tiny Shakespeare) in GPT-2's style and in Llama's
(rotary positions, RMSNorm, a gated SiLU feed-forward 384 wide so a block keeps GPT-2's weight
count, 2 key/value heads for the 4 query heads, no biases), same seed, same steps. The rows
give the final validation loss (a full pass) and the training time; the two runs alternate
(GPT-2, Llama, Llama, GPT-2 with ``--seeds 1337,1``), so the times come from the same minutes.

**Decoding**: SmolLM2-135M's shape (a Llama: 30 layers x 576, 9 heads, 3 key/value heads,
feed-forward 1536, vocabulary 49152, tied head, rope_theta 100000) with random weights:
transformers' ``LlamaForCausalLM`` saved to a temp dir, and proselab's import of that directory.
Greedy, 16-token random prompts, ``--new-tokens`` new tokens, batch 1 and 8, float32 and
bfloat16 (both models cast), ``--rounds`` alternated rounds; the ratio is the median of the
rounds' ratios. The fp32 tokens must be identical (printed).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

import proselab
from proselab.config import GenerationConfig
from proselab.decoding import generate

LLAMA = {"model.rope": True, "model.norm": "rmsnorm", "model.norm_eps": 1e-6, "model.activation": "silu",
         "model.gated_ffn": True, "model.ffn_dim": 384, "model.n_kv_head": 2, "model.bias": False}
SMOLLM = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
              num_key_value_heads=3, max_position_embeddings=2048, rope_theta=100000.0, tie_word_embeddings=True,
              bos_token_id=0, eos_token_id=0)


def training(text: Path, out: Path, steps: int, seeds: list[int]) -> list[dict]:
    rows = []
    for i, seed in enumerate(seeds):
        styles = [("GPT-2", {}), ("Llama", LLAMA)]
        for style, extra in styles if i % 2 == 0 else styles[::-1]:
            run = out / f"{style.lower()}-{seed}"
            start = time.perf_counter()
            res = proselab.train("nanogpt-cpu", {"data.dataset": str(text), "train.out_dir": str(run),
                                                 "train.max_iters": steps, "train.lr_decay_iters": steps,
                                                 "train.eval_interval": max(steps // 4, 10), "train.seed": seed,
                                                 "train.overwrite": True, "train.progress": False, **extra})
            row = {"style": style, "seed": seed, "params": proselab.load(run, device="cpu").model.num_params(),
                   "steps": res.step, "val_loss": round(res.val_loss, 4), "train_s": round(time.perf_counter() - start)}
            print(row, flush=True)
            rows.append(row)
    return rows


def _import(d: Path) -> torch.nn.Module:
    """proselab's model of a Llama directory without a tokenizer (random weights need none)."""
    from proselab.interop import hf_config, read_state_dict
    from proselab.interop.llama import state_from_hf
    from proselab.models import build_model

    cfg = hf_config(d).model
    model = build_model(cfg)
    model.load_state_dict(state_from_hf(read_state_dict(d), cfg), strict=False)
    return model.eval()


def decoding(rounds: int, new_tokens: int, quick: bool) -> list[str]:
    import transformers

    shape = dict(SMOLLM, num_hidden_layers=2) if quick else SMOLLM
    with tempfile.TemporaryDirectory(prefix="proselab-bench-llama-") as d:
        torch.manual_seed(0)
        transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape)).save_pretrained(d)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf = transformers.AutoModelForCausalLM.from_pretrained(d).eval()
        ours = _import(Path(d))
    g = hf.generation_config
    g.eos_token_id = g.bos_token_id = g.pad_token_id = None
    models = {("proselab", "float32"): ours, ("transformers", "float32"): hf,
              ("proselab", "bfloat16"): copy.deepcopy(ours).to(torch.bfloat16),
              ("transformers", "bfloat16"): copy.deepcopy(hf).to(torch.bfloat16)}
    gen = torch.Generator().manual_seed(0)
    lines = ["| batch x dtype | proselab tok/s | transformers tok/s | ratio (median of rounds) | per-round ratios |",
             "|---|---:|---:|---:|---|"]

    def run(lib, dt, prompts, n):
        if lib == "proselab":
            return [r.tokens for r in generate(models[lib, dt], prompts, GenerationConfig(do_sample=False,
                                                                                         max_new_tokens=n))]
        out = models[lib, dt].generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                                       max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
        return out[:, prompts.size(1):].tolist()

    for B in (1, 8):
        prompts = torch.randint(3, shape["vocab_size"], (B, 16), generator=gen)
        for dt in ("float32", "bfloat16"):
            with torch.no_grad():
                for lib in ("proselab", "transformers"):
                    run(lib, dt, prompts, 4)  # warm-up
                times = {"proselab": [], "transformers": []}
                for r in range(rounds):
                    for lib in ("proselab", "transformers") if r % 2 == 0 else ("transformers", "proselab"):
                        start = time.perf_counter()
                        run(lib, dt, prompts, new_tokens)
                        times[lib].append(time.perf_counter() - start)
                if dt == "float32":
                    same = run("proselab", dt, prompts, new_tokens) == run("transformers", dt, prompts, new_tokens)
                    print(f"b{B} float32: tokens identical to transformers: {'yes' if same else 'NO'}", flush=True)
            ratios = [h / p for p, h in zip(times["proselab"], times["transformers"])]
            p, h = (B * new_tokens / statistics.median(times[k]) for k in ("proselab", "transformers"))
            lines.append(f"| b{B} {dt} | {p:.1f} | {h:.1f} | {statistics.median(ratios):.2f}x | "
                         f"{', '.join(f'{x:.2f}' for x in ratios)} |")
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--text", type=Path, required=True, help="tiny Shakespeare's input.txt")
    p.add_argument("--out", type=Path, default=Path("runs/bench-llama-style"))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seeds", default="1337,1", help="comma-separated training seeds (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="20 steps, one seed, a 2-layer decoding shape, 1 round")
    p.add_argument("--skip-training", action="store_true")
    args = p.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got '{args.seeds}'")
    if args.quick:
        args.steps, seeds, args.rounds, args.new_tokens = 20, seeds[:1], 1, 8
    torch.manual_seed(0)
    rows = [] if args.skip_training else training(args.text, args.out, args.steps, seeds)
    print("\n| style | seed | params | steps | val loss | train s |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['style']} | {r['seed']} | {r['params']:,} | {r['steps']} | {r['val_loss']} | {r['train_s']} |")
    print("\n" + "\n".join(decoding(args.rounds, args.new_tokens, args.quick)))


if __name__ == "__main__":
    main()
