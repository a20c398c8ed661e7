"""A CPU LoRA training step with and without LoRA dropout, on a model of SmolLM2-135M's shape.

    .venv/bin/python benchmarks/bench_lora_dropout.py
    .venv/bin/python benchmarks/bench_lora_dropout.py --rounds 5 --tokens 1024

Why: profiling `trainer run --preset smollm2-demo`'s SFT on a 2-core Xeon showed `torch.dropout`
taking about a third of each forward. PEFT applies LoRA's dropout to the input of every adapted
linear layer (7 per layer x 30 layers of SmolLM2), and on a CPU drawing those Bernoulli masks costs
more than the low-rank matrix products they feed. With `lora_dropout = 0` PEFT puts no dropout
there at all. On a GPU the masks are cheap, so this matters only where CPUs train.

A random LLaMA of SmolLM2-135M-Instruct's shape (hidden 576, 30 layers, 9 heads, 3 key-value heads,
MLP 1,536, vocabulary 49,152; random weights time the same as the real ones), LoRA r 16 on every
linear layer as the preset trains it, one row of `--tokens` tokens with the loss on its last third,
under bf16 autocast where the CPU computes bf16 (float32 elsewhere), AdamW step included. The two
arms run in turn each round on the same batch; the best round of each is printed with the ratio.
Target: the arm without dropout at least 1.2x faster (it is what `--preset smollm2-demo` sets).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.random_llama import random_llama  # noqa: E402

DROPOUTS = (0.05, 0.0)


def _smollm2_shaped_model(dropout: float):
    from peft import LoraConfig, get_peft_model

    model = random_llama(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                         tie_word_embeddings=True)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    model.train()
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as configured)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="steps per arm per round")
    parser.add_argument("--tokens", type=int, default=896, help="tokens in the one row of a step")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from trainer.sft import cpu_bf16_is_native

    autocast = cpu_bf16_is_native()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'bf16 autocast' if autocast else 'float32 (bf16 is emulated on this CPU)'}")
    arms = {dropout: _smollm2_shaped_model(dropout) for dropout in DROPOUTS}
    optimizers = {d: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for d, m in arms.items()}
    ids = torch.randint(10, 49000, (1, args.tokens), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, : 2 * args.tokens // 3] = -100
    best = {dropout: float("inf") for dropout in arms}
    for _ in range(args.rounds):
        for dropout, model in arms.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    loss = model(input_ids=ids, labels=labels).loss
                loss.backward()
                optimizers[dropout].step()
                optimizers[dropout].zero_grad(set_to_none=True)
            best[dropout] = min(best[dropout], (time.perf_counter() - start) / args.steps)
    print(f"\nLoRA r 16, SmolLM2-135M's shape, 1 x {args.tokens} tokens: forward + backward + AdamW, best of {args.rounds} rounds of {args.steps}")
    for dropout, seconds in best.items():
        print(f"  lora_dropout {dropout:<5} {seconds * 1000:8.0f} ms   {best[DROPOUTS[0]] / seconds:5.2f}x")
    ratio = best[DROPOUTS[0]] / best[0.0]
    print(f"\ntarget (no dropout >= 1.2x the step with it): {'met' if ratio >= 1.2 else 'MISSED'} ({ratio:.2f}x)")
    return 0 if ratio >= 1.2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
