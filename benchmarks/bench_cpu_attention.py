"""A CPU training step in float32, in bf16 autocast, and in bf16 autocast with float32 attention.

    .venv/bin/python benchmarks/bench_cpu_attention.py            # the demo's tiny LLaMA
    .venv/bin/python benchmarks/bench_cpu_attention.py --threads 1 --rounds 5

Forward and backward of a random LLaMA of the `--demo`'s shape (hidden 128, 4 layers, 4 heads,
vocabulary 1,500) on the two batch shapes the demo trains: the copy warm-up's (16 rows of 97
tokens, loss on the second half) and SFT's (4 rows of 900 tokens). The three arms run in turn,
each round, the same batches; the best round of each is printed with its ratio to float32.
`trainer sft` uses the third arm with `sft.float32_attention = true` where the CPU computes bf16
(AMX or AVX512-BF16; trainer/cpu_attention.py says why, and why it is off by default). On a CPU without them bf16 is emulated and the
autocast arms are slow: the script says so and runs anyway.
Target: the third arm faster than float32 on both shapes where the CPU computes bf16.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.random_llama import random_llama  # noqa: E402

SHAPES = {"warm-up (16 x 97)": (16, 97, 48), "SFT (4 x 900)": (4, 900, 400)}


def _model():
    model = random_llama(vocab_size=1500, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                         tie_word_embeddings=True)
    model.train()
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as configured)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="steps per arm per round")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from trainer.copy_warmup import labelled_loss
    from trainer.cpu_attention import _float32_on_cpu_autocast
    from trainer.sft import cpu_bf16_is_native

    native = cpu_bf16_is_native()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 native on this CPU: {native}")
    model = _model()
    plain_sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    float32_sdpa = _float32_on_cpu_autocast(plain_sdpa)
    arms = {"float32": (False, plain_sdpa), "bf16": (True, plain_sdpa), "bf16, float32 attention": (True, float32_sdpa)}
    target_met = True
    for shape, (rows, length, unlabelled) in SHAPES.items():
        ids = torch.randint(10, 1490, (rows, length), generator=torch.Generator().manual_seed(1))
        labels = ids.clone()
        labels[:, :unlabelled] = -100
        best = {arm: float("inf") for arm in arms}
        for _ in range(args.rounds):
            for arm, (autocast, attention) in arms.items():
                ALL_ATTENTION_FUNCTIONS["sdpa"] = attention
                start = time.perf_counter()
                for _ in range(args.steps):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                        loss = labelled_loss(model, ids, labels)
                    loss.backward()
                    model.zero_grad(set_to_none=True)
                best[arm] = min(best[arm], (time.perf_counter() - start) / args.steps)
        ALL_ATTENTION_FUNCTIONS["sdpa"] = plain_sdpa
        print(f"\n{shape}: forward + backward, best of {args.rounds} rounds of {args.steps}")
        for arm, seconds in best.items():
            print(f"  {arm:26s} {seconds * 1000:8.1f} ms   {best['float32'] / seconds:5.2f}x float32")
        target_met &= best["bf16, float32 attention"] < best["float32"]
    if not native:
        print("\nbf16 is emulated on this CPU: trainer keeps float32 here (sft.precision = native).")
        return 0
    print(f"\ntarget (float32 attention under bf16 faster than float32 on both shapes): {'met' if target_met else 'MISSED'}")
    return 0 if target_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
