"""Trainer throughput: dataset build (traces/s, tokenization included) and SFT tokens/s.

    .venv/bin/python benchmarks/bench_trainer.py                     # CPU, tiny model, ~1-2 minutes
    .venv/bin/python benchmarks/bench_trainer.py --traces 1000 --steps 30
    .venv/bin/python benchmarks/bench_trainer.py --gpu-model meta-llama/Llama-3.2-1B-Instruct

CPU part: the scripted-teacher corpus → `build_dataset` with the tiny tokenizer (so every example is
rendered and tokenized), then `trainer sft` (full fine-tuning of a tiny random LLaMA) for a fixed
number of steps; tokens/s counts non-padding input tokens.

GPU part (`--gpu-model`, runs only where CUDA is available, otherwise it says so and skips): the
same data through QLoRA (understudy's path: NF4 base + LoRA) and through plain TRL (bf16 base,
the same LoRA settings, SFTTrainer with its peft_config), side by side: tokens/s and peak GPU
memory. The model must be on local disk or in the Hugging Face cache.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bench_dataset(root: Path, n_traces: int):
    from trainer.chat_template import render
    from trainer.dataset import DatasetConfig, build_dataset, trace_to_example
    from trainer.teacher_corpus import generate_corpus
    from trainer.tokenizer_tools import train_tiny_tokenizer

    traces = generate_corpus(n=n_traces, seed=0)
    cfg = DatasetConfig(output_dir=root / "dataset", max_tool_result_tokens=96)
    tokenizer = train_tiny_tokenizer(
        [render(e["messages"], e["tools"]) for e in (trace_to_example(t, cfg) for t in traces[:300])], vocab_size=1500
    )
    t0 = time.perf_counter()
    report = build_dataset(traces, cfg, tokenizer)
    dt = time.perf_counter() - t0
    tokens = report.stats["token_lengths"]["all"]["total"]
    print(f"dataset build: {n_traces} traces in {dt:.2f}s = {n_traces / dt:.0f} traces/s ({tokens / dt:.0f} tokens/s tokenized)")
    return tokenizer, cfg.output_dir


def bench_cpu_sft(root: Path, tokenizer, data_dir: Path, steps: int, hidden: int, layers: int, batch: int):
    from trainer.config import load_config
    from trainer.sft import train_sft
    from trainer.tiny_model import build_tiny_model

    base = build_tiny_model(tokenizer, root / "base", hidden=hidden, layers=layers, heads=4)
    cfg = load_config(
        overrides=[
            ("sft.base_model", str(base)),
            ("sft.method", "full"),
            ("sft.max_steps", steps),
            ("sft.per_device_train_batch_size", batch),
            ("sft.gradient_accumulation_steps", 1),
            ("sft.learning_rate", 1e-3),
            ("sft.save_steps", 10_000),
            ("sft.logging_steps", max(1, steps // 2)),
            ("sft.max_length", 1024),
        ]
    )
    result = train_sft(cfg, data_dir, root / "sft", log=lambda _: None)
    print(
        f"SFT on CPU (tiny LLaMA hidden={hidden} layers={layers}, full, batch {batch}): {steps} steps, "
        f"{result.tokens_seen} tokens in {result.train_runtime_s:.1f}s = {result.tokens_per_second:.0f} tokens/s"
    )


def bench_gpu(model: str, data_dir: Path, steps: int, batch: int):
    import torch

    if not torch.cuda.is_available():
        print(f"GPU comparison skipped: no CUDA here (it needs a GPU and {model} on local disk or in the HF cache).")
        return
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from trainer.config import load_config
    from trainer.dataset import SFT_COLUMNS, load_splits
    from trainer.sft import build_trainer, load_tokenizer

    rows = []
    # understudy's path: NF4 base, LoRA, bf16 compute.
    cfg = load_config(
        overrides=[
            ("sft.base_model", model), ("sft.method", "qlora"), ("sft.max_steps", steps),
            ("sft.per_device_train_batch_size", batch), ("sft.gradient_accumulation_steps", 1),
            ("sft.save_steps", 10_000), ("sft.logging_steps", steps), ("sft.max_length", 2048),
        ]
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        torch.cuda.reset_peak_memory_stats()
        setup = build_trainer(cfg, data_dir, Path(tmp), log=lambda _: None)
        t0 = time.perf_counter()
        setup.trainer.train()
        dt = time.perf_counter() - t0
        rows.append(("understudy QLoRA (NF4)", setup.trainer.state.num_input_tokens_seen / dt, torch.cuda.max_memory_allocated()))
        del setup
        gc.collect()
        torch.cuda.empty_cache()

        # Plain TRL: bf16 base, the same LoRA settings, no quantization.
        torch.cuda.reset_peak_memory_stats()
        tokenizer, _ = load_tokenizer(model)
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16, device_map={"": 0})
        base.resize_token_embeddings(len(tokenizer))
        s = cfg.sft
        trainer = SFTTrainer(
            model=base,
            args=SFTConfig(
                output_dir=str(Path(tmp) / "plain"), max_steps=steps, per_device_train_batch_size=batch,
                gradient_accumulation_steps=1, learning_rate=s.learning_rate, bf16=True, max_length=2048,
                assistant_only_loss=True, activation_checkpointing=True, save_strategy="no", report_to=[],
                include_num_input_tokens_seen="non_padding", disable_tqdm=True,
            ),
            train_dataset=load_splits(data_dir)["train"].select_columns(SFT_COLUMNS),
            processing_class=tokenizer,
            peft_config=LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                                   target_modules="all-linear", task_type="CAUSAL_LM"),
        )  # fmt: skip
        t0 = time.perf_counter()
        trainer.train()
        dt = time.perf_counter() - t0
        rows.append(("plain TRL LoRA (bf16)", trainer.state.num_input_tokens_seen / dt, torch.cuda.max_memory_allocated()))
    print(f"\nGPU, {model}, {steps} steps, batch {batch}:")
    print(f"  {'':24s} {'tokens/s':>10s} {'peak GPU memory':>16s}")
    for name, tps, mem in rows:
        print(f"  {name:24s} {tps:10.0f} {mem / 2**30:13.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=int, default=600)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--gpu-model", help="A 1B-class model (local path or cached id) for the CUDA comparison.")
    parser.add_argument("--gpu-steps", type=int, default=30)
    args = parser.parse_args()
    import os

    import torch

    # CPU numbers swing with other load on the machine (torch's threads contend badly): say what it was.
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    root = Path(tempfile.mkdtemp(prefix="bench_trainer_"))
    try:
        tokenizer, data_dir = bench_dataset(root, args.traces)
        bench_cpu_sft(root, tokenizer, data_dir, args.steps, args.hidden, args.layers, args.batch)
        if args.gpu_model:
            bench_gpu(args.gpu_model, data_dir, args.gpu_steps, args.batch)
        else:
            print("GPU comparison (QLoRA vs plain TRL): pass --gpu-model on a CUDA machine.")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
