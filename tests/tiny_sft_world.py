"""A small scripted-teacher dataset and a tiny random base, built with the project's own code.

    from tests.tiny_sft_world import build_tiny_sft_world
    base, data_dir = build_tiny_sft_world(tmp_path_factory.mktemp("world"), traces=30, seed=1)
"""

from __future__ import annotations

from pathlib import Path


def build_tiny_sft_world(root: Path, traces: int = 30, seed: int = 1) -> tuple[Path, Path]:
    """(base model dir, dataset dir) under `root`: a 1-layer 32-wide LLaMA, a 600-token BPE."""
    from transformers import AutoTokenizer

    from trainer.chat_template import render
    from trainer.dataset import DatasetConfig, build_dataset, trace_to_example
    from trainer.teacher_corpus import generate_corpus
    from trainer.tiny_model import make_tiny_base

    corpus = generate_corpus(n=traces, seed=seed)
    # The working directory in the system turn, as `--demo` has it: each project's examples then
    # share a system turn of their own, which the prefix-grouped batches of tests/test_sft.py need.
    dcfg = DatasetConfig(output_dir=root / "dataset", max_tool_result_tokens=48, working_directory_turn="system")
    texts = [render(e["messages"], e["tools"]) for e in (trace_to_example(t, dcfg) for t in corpus)]
    base = make_tiny_base(root / "base", texts, vocab_size=600, hidden=32, layers=1, heads=2)
    build_dataset(corpus, dcfg, AutoTokenizer.from_pretrained(base))
    return base, root / "dataset"
