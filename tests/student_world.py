"""A small scripted-teacher world for the RL, mining and A/B tests: corpus, tiny base, dataset, SFT student.

Built once per test session under pytest's base temp dir, or in $UNDERSTUDY_TEST_WORLD_DIR to keep
it between runs (a `done` marker is written last, so a second test module that asks for it reuses
it), and shared through the `student_world` fixture:

    from tests.student_world import student_world  # noqa: F401  (a fixture)

    def test_x(student_world):
        student_world.sft_model, student_world.base_model, student_world.data_dir, ...

Sizes: 120 traces of the six workflow kinds, tools reduced to their names and required arguments
and tool results to 32 tokens (every example fits sft.max_length, nothing is truncated), a
2-layer 128-wide LLaMA with a 2,000-token vocabulary, and 150 steps of full fine-tuning through
`trainer sft`'s own train_sft: a student that has learned much of the workflows but is far from
perfect, so RL has something to fix. On two free CPU cores this is the slow part of these tests.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

N_TRACES = 120
SFT_STEPS = 150
SYSTEM_PROMPT = "You are a coding agent. Use the tools, say briefly what you do, then answer."


def build_world(root: Path, n_traces: int = N_TRACES, sft_steps: int = SFT_STEPS, log=lambda s: None) -> SimpleNamespace:
    world = SimpleNamespace(
        root=root,
        base_model=root / "base",
        data_dir=root / "dataset",
        sft_dir=root / "sft",
        sft_model=root / "sft" / "final",
    )
    done = root / "done"
    if done.exists():
        world.timings = json.loads(done.read_text())
        return world
    from trainer.chat_template import render
    from trainer.config import load_config
    from trainer.dataset import DatasetConfig, build_dataset, trace_to_example
    from trainer.sft import train_sft
    from trainer.teacher_corpus import generate_corpus
    from trainer.tiny_model import make_tiny_base

    timings = {}
    t0 = time.monotonic()
    traces = generate_corpus(n_traces, seed=0)
    for trace in traces:
        # Only each tool's name and required arguments: the six full schemas would be half of every
        # example's tokens, and the tests are about workflows, not schema reading.
        trace.tools_offered = [_bare_tool(t) for t in trace.tools_offered]
    # Short contexts keep every example under sft.max_length (nothing truncated) and the steps cheap.
    ds_cfg = DatasetConfig(output_dir=world.data_dir, max_tool_result_tokens=32, tool_description_chars=40,
                           system_prompt=SYSTEM_PROMPT, val_fraction=0.15, test_fraction=0.15)
    texts = [render(e["messages"], e["tools"]) for e in (trace_to_example(t, ds_cfg) for t in traces)]
    make_tiny_base(world.base_model, texts, vocab_size=2000, hidden=128, layers=2, heads=4)
    from transformers import AutoTokenizer

    build_dataset(traces, ds_cfg, AutoTokenizer.from_pretrained(world.base_model))
    timings["corpus_base_dataset_s"] = round(time.monotonic() - t0, 1)
    cfg = load_config(
        overrides=[
            ("sft.base_model", str(world.base_model)),
            ("sft.method", "full"),
            ("sft.max_steps", sft_steps),
            ("sft.learning_rate", 3e-3),
            ("sft.warmup_steps", 0.05),
            ("sft.per_device_train_batch_size", 8),
            ("sft.gradient_accumulation_steps", 1),
            ("sft.max_length", 832),
            ("sft.save_steps", 10_000),
            ("sft.logging_steps", 25),
            ("sft.gradient_checkpointing", False),
        ]
    )
    t0 = time.monotonic()
    train_sft(cfg, data_dir=world.data_dir, output_dir=world.sft_dir, log=log)
    timings["sft_s"] = round(time.monotonic() - t0, 1)
    done.write_text(json.dumps(timings))
    world.timings = timings
    return world


def _bare_tool(tool: dict) -> dict:
    schema = tool.get("input_schema") or {}
    required = list(schema.get("required") or [])
    props = {k: v for k, v in (schema.get("properties") or {}).items() if k in required}
    return {"name": tool["name"], "description": "", "input_schema": {"type": "object", "properties": props, "required": required}}


def rows(world: SimpleNamespace, split: str) -> list[dict]:
    with open(world.data_dir / f"{split}.jsonl") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def twin_rows(world: SimpleNamespace, split: str, phrasing_seed: int = 1) -> list[dict]:
    """The split's rows as a second teacher wrote them: the same prompts, calls, results and answers,
    the narration phrased independently (teacher_corpus's phrasing twin). A student that learned the
    teacher perfectly would look like this: the "can't tell" end of the scale."""
    import copy

    from trainer.dataset import DatasetConfig, trace_to_example
    from trainer.teacher_corpus import generate_corpus

    twins = {t.trace_id: t for t in generate_corpus(N_TRACES, seed=0, phrasing_seed=phrasing_seed)}
    out = []
    for row in rows(world, split):
        twin = trace_to_example(twins[row["trace_id"]], DatasetConfig(system_prompt=SYSTEM_PROMPT))
        turns = iter(m["content"] for m in twin["messages"] if m["role"] == "assistant")
        new = copy.deepcopy(row)
        for m in new["messages"]:
            if m["role"] == "assistant":
                m["content"] = next(turns)
        out.append(new)
    return out


@pytest.fixture(scope="session")
def student_world(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    # $UNDERSTUDY_TEST_WORLD_DIR keeps the world between runs while working on these tests.
    keep = os.environ.get("UNDERSTUDY_TEST_WORLD_DIR")
    return build_world(Path(keep) if keep else tmp_path_factory.getbasetemp() / "student_world")
