"""A tiny student for the serve and export tests, trained in seconds with trainer's own pieces.

What it is, honestly: a 2-layer, 64-wide LLaMA with a tokenizer trained on the fly
(trainer.tiny_model), fully fine-tuned for 100 steps by a plain PyTorch loop with the loss on
assistant tokens only (the chat template's generation mask, as `trainer sft` uses it; TRL's
start-up costs more than this whole training) on a small corpus: one target conversation, plus a
few scripted-teacher traces (trainer.teacher_corpus) so it is not a single memorized string.
The target conversation is rendered exactly as `trainer serve` renders Claude Code's request
for TARGET_PROMPT (compact system prompt, Claude Code's own tool schemas compacted and filtered
to STUDENT_TOOLS), so greedy decoding reproduces the taught workflow: narration, a Bash `ls`
tool call, then a final answer after the tool result. It has learned that one workflow, not
general tool use; the tests assert what it emits, they do not claim it generalizes.

    from tests.student import build_student, target_conversation
    model_dir = build_student(tmp / "student", tools)     # tools: Anthropic-style schemas

Built once per test session (a marker file in the session's base temp dir, or in
$UNDERSTUDY_TEST_STUDENT_DIR to keep it between runs), shared by tests/test_export.py and
tests/test_serve_e2e.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from trainer.chat_template import DEFAULT_SYSTEM_PROMPT, dump_arguments, render

TARGET_PROMPT = "List the files in this directory."
STUDENT_TOOLS = ["Bash"]
LISTING = "alpha.txt\nbeta.txt"
NARRATION = "I'll list the files."
TARGET_CALL = {"name": "Bash", "arguments": {"command": "ls"}}
FINAL_ANSWER = "There are two files here: alpha.txt and beta.txt."


def target_conversation(tool_output: str = LISTING) -> list[dict]:
    return [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": TARGET_PROMPT},
        {
            "role": "assistant",
            "content": NARRATION,
            "tool_calls": [
                {
                    "id": "toolu_target",
                    "type": "function",
                    "function": {"name": TARGET_CALL["name"], "arguments": dump_arguments(TARGET_CALL["arguments"])},
                }
            ],
        },
        {"role": "tool", "content": tool_output, "tool_call_id": "toolu_target", "name": "Bash"},
        {"role": "assistant", "content": FINAL_ANSWER},
    ]


def student_tools(anthropic_tools: list[dict]) -> list[dict]:
    """The tools the student sees: the request's, filtered to STUDENT_TOOLS and mapped as serve maps
    them (trainer/tool_context.py with the default dataset settings)."""
    from trainer.dataset import DatasetConfig
    from trainer.tool_context import tools_for

    return tools_for([t for t in anthropic_tools if t["name"] in STUDENT_TOOLS], DatasetConfig())


def claude_code_tools(cache: Path) -> Optional[list[dict]]:
    """The tool schemas the installed Claude Code CLI sends, captured once with the scripted API.

    None when the CLI is not installed (tests then use the teacher corpus's tools).
    """
    from tests.claude_harness import DEFAULT_CLAUDE_BIN, claude_env, write_settings_with_hooks
    from tests.scripted_api import Script, ScriptedAPI, text

    if cache.exists():
        return json.loads(cache.read_text())
    binary = os.environ.get("UNDERSTUDY_CLAUDE_BIN") or str(DEFAULT_CLAUDE_BIN)
    if not os.access(binary, os.X_OK):
        return None
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, ScriptedAPI([Script("tools", [[text("ok")]])]) as api:
        home = Path(tmp) / "home"
        home.mkdir()
        write_settings_with_hooks(home)
        subprocess.run(
            [binary, "-p", "tools", "--output-format", "json"],
            cwd=tmp,
            env=claude_env(home, Path(tmp) / "uh", api.base_url),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
        )
        tools = next((r["tools"] for r in api.requests if r.get("tools")), None)
    if tools:
        cache.write_text(json.dumps(tools))
    return tools


def build_student(out_dir: Path, anthropic_tools: list[dict], steps: int = 100, teacher_examples: int = 2) -> Path:
    """Train (or reuse) the tiny student in `out_dir`; returns the model directory."""
    final = out_dir / "model"
    marker = out_dir / "READY"
    if marker.exists():
        return final

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.dataset import DatasetConfig, trace_to_example
    from trainer.teacher_corpus import generate_corpus
    from trainer.tiny_model import make_tiny_base

    tools = student_tools(anthropic_tools)
    target = (target_conversation(), tools)
    teacher = [trace_to_example(t, DatasetConfig()) for t in generate_corpus(teacher_examples, seed=1)]
    rows = [target] + [(e["messages"], json.loads(e["tools"])) for e in teacher]
    texts = [render(m, t) for m, t in rows]
    base = make_tiny_base(out_dir / "base", texts, vocab_size=1500, hidden=64, layers=2, heads=4, kv_heads=2)

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    batches = []
    for messages, row_tools in rows:
        enc = tokenizer.apply_chat_template(
            messages, tools=row_tools, return_dict=True, return_assistant_tokens_mask=True, tokenize=True
        )
        ids = torch.tensor([enc["input_ids"]])
        labels = ids.clone()
        labels[0, torch.tensor(enc["assistant_masks"]) == 0] = -100  # loss on assistant tokens only
        batches.append((ids, labels))
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for step in range(steps):
        # The target conversation two steps in three, a teacher trace in between.
        ids, labels = batches[0] if step % 3 else batches[1 + (step // 3) % (len(batches) - 1)]
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    marker.write_text(f"final loss {loss.item():.4f}\n")
    return final


def shared_student(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The tiny student, built once per session, and the Anthropic-style tools it was taught with.

    The tools are the installed Claude Code CLI's own (captured once); without the CLI, the
    teacher corpus's compact copies (the e2e tests skip in that case anyway).
    """
    from trainer.teacher_corpus import TOOLS_OFFERED

    # UNDERSTUDY_TEST_STUDENT_DIR keeps it between runs while iterating on the tests.
    root = Path(os.environ.get("UNDERSTUDY_TEST_STUDENT_DIR") or tmp_path_factory.getbasetemp() / "shared-student")
    root.mkdir(parents=True, exist_ok=True)
    tools = claude_code_tools(root / "claude_code_tools.json") or TOOLS_OFFERED
    return build_student(root / "student", tools), tools


def greedy(model_dir: Path, prompt: str, max_new_tokens: int = 64) -> str:
    """Greedy continuation with transformers, special tokens kept."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tok.convert_tokens_to_ids("<|eot_id|>"))
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=False)


def shared_gguf(tmp_path_factory) -> Path:
    """The tiny student exported as an f16 GGUF, once per session beside the student."""
    from trainer.config import load_config
    from trainer.export import run_export

    model_dir, _ = shared_student(tmp_path_factory)
    out = model_dir.parent.parent / "export"
    gguf = out / "student-f16.gguf"
    marker = out / "READY"
    if not marker.exists():
        cfg = load_config(overrides=[("export.model", str(model_dir)), ("export.output_dir", str(out)),
                                     ("export.quantizations", ["f16"]), ("export.modelfile", False)])
        gguf = run_export(cfg, log=lambda line: None).gguf["f16"]
        marker.write_text(str(gguf))
    return gguf
