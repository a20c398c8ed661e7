"""The compact tool context: Claude Code's real 14-tool request in ≤ 1.5k tokens, one mapping for
dataset building and serving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.chat_template import render
from trainer.dataset import DatasetConfig, trace_to_example
from trainer.tool_context import TOOL_SCHEMAS, context_tokens, student_tools, tools_for

# The `tools` of a real request from Claude Code 2.1.328 (../shared/samples/simple-session).
CLAUDE_CODE_TOOLS = json.loads((Path(__file__).parent / "data" / "claude_code_tools.json").read_text())


def test_signature_keeps_names_first_sentence_and_typed_parameters():
    by_name = {t["function"]["name"]: t["function"] for t in student_tools(CLAUDE_CODE_TOOLS)}
    assert len(by_name) == 14
    assert by_name["Read"]["parameters"]["file_path"] == "string"
    assert by_name["Read"]["parameters"]["offset"].endswith("?")  # optional
    assert by_name["Grep"]["parameters"]["output_mode"] == "content|files_with_matches|count?"
    assert by_name["Edit"]["description"] == "Performs exact string replacement in a file."
    required = {t["function"]["name"]: t["function"] for t in student_tools(CLAUDE_CODE_TOOLS, "required")}
    assert required["Read"]["parameters"] == {"file_path": "string"}
    full = student_tools(CLAUDE_CODE_TOOLS, "full")
    assert full[0]["function"]["parameters"]["type"] == "object"
    only = student_tools(CLAUDE_CODE_TOOLS, only=["Bash", "Read"])
    assert [t["function"]["name"] for t in only] == ["Bash", "Read"]  # the offered order
    with pytest.raises(ValueError, match="tool_schema"):
        student_tools(CLAUDE_CODE_TOOLS, "tiny")


def test_real_claude_code_request_fits_in_1_5k_tokens():
    pytest.importorskip("transformers")
    from trainer.teacher_corpus import generate_corpus
    from trainer.tokenizer_tools import train_tiny_tokenizer

    # A 4k-vocabulary BPE like the demo's, trained on examples that carry the real tools.
    traces = generate_corpus(n=40, seed=0)
    texts = []
    for schema in TOOL_SCHEMAS:
        for t in traces:
            t.tools_offered = CLAUDE_CODE_TOOLS
            e = trace_to_example(t, DatasetConfig(tool_schema=schema))
            texts.append(render(e["messages"], e["tools"]))
    tok = train_tiny_tokenizer(texts, vocab_size=4000)
    tokens = {s: context_tokens(CLAUDE_CODE_TOOLS, s, 160, tok) for s in TOOL_SCHEMAS}
    assert tokens["signature"] <= 1500 < 3000 < tokens["full"], tokens
    assert tokens["required"] < tokens["signature"]


def test_dataset_and_serve_use_the_same_mapping():
    from trainer.teacher_corpus import generate_corpus

    (trace,) = generate_corpus(n=1, seed=2)
    trace.tools_offered = CLAUDE_CODE_TOOLS
    cfg = DatasetConfig(tools=["Read", "Edit", "Bash"])
    example = trace_to_example(trace, cfg)
    assert json.loads(example["tools"]) == tools_for(CLAUDE_CODE_TOOLS, cfg)
    assert [t["function"]["name"] for t in json.loads(example["tools"])] == ["Bash", "Edit", "Read"]

    serve = pytest.importorskip("trainer.serve")
    body = {"model": "m", "max_tokens": 10, "tools": CLAUDE_CODE_TOOLS,
            "messages": [{"role": "user", "content": "hi"}]}
    _, tools, _ = serve.to_chat(body, serve.ContextSettings(dataset=cfg))
    assert tools == json.loads(example["tools"])


def test_unknown_tool_schema_is_a_config_error():
    with pytest.raises(ValueError, match="tool_schema"):
        DatasetConfig(tool_schema="json")


def test_evaluation_validates_calls_against_a_signature():
    pytest.importorskip("jsonschema")
    from trainer.evaluate import call_is_valid, tool_schemas

    schemas = tool_schemas(json.dumps(student_tools(CLAUDE_CODE_TOOLS)))
    assert schemas["Read"]["required"] == ["file_path"]
    assert call_is_valid("Read", {"file_path": "a.py"}, True, schemas)
    assert call_is_valid("Read", {"file_path": "a.py", "limit": 5}, True, schemas)
    assert not call_is_valid("Read", {"path": "a.py"}, True, schemas)  # the required file_path is missing
    assert not call_is_valid("Read", {"file_path": 3}, True, schemas)
    assert call_is_valid("Grep", {"pattern": "x", "output_mode": "count", "type": "py"}, True, schemas)
    assert not call_is_valid("Grep", {"pattern": "x", "output_mode": "lines"}, True, schemas)
    full = tool_schemas(json.dumps(student_tools(CLAUDE_CODE_TOOLS, "full")))
    assert not call_is_valid("Read", {"path": "a.py"}, True, full)
