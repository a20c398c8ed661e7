"""trainer build-dataset: traces → chat examples, split by session, deterministic, loadable."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from capture_daemon.schema import Quality, TextStep, ToolCall, Trace
from trainer.dataset import (
    SFT_COLUMNS,
    SPLITS,
    DatasetConfig,
    build_dataset,
    load_splits,
    load_traces,
    split_by_session,
    trace_to_example,
)
from trainer.chat_template import render
from trainer.teacher_corpus import TOOLS_OFFERED, generate_corpus, write_corpus_jsonl


@pytest.fixture(scope="module")
def corpus():
    return generate_corpus(80, seed=1)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def make_trace(**overrides) -> Trace:
    fields = dict(
        trace_id="t1", session_id="s1", prompt_id="p1", prompt="Look at a.py and b.py", final_response="All good.",
        tools_offered=TOOLS_OFFERED, quality=Quality(accepted=True, score=1.0),
        tool_calls=[
            ToolCall(tool_use_id="c1", name="Read", input={"file_path": "a.py"}, output="A", parallel_group=0),
            ToolCall(tool_use_id="c2", name="Read", input={"file_path": "b.py", "limit": 5}, output="B", parallel_group=0),
            ToolCall(tool_use_id="c3", name="Bash", input={"command": "pytest -q"}, success=False,
                     error="Exit code 1\n1 failed", parallel_group=1),
        ],
        assistant_text=[TextStep(text="Reading both files.", position=0), TextStep(text="Now the tests.", position=2)],
    )
    fields.update(overrides)
    return Trace(**fields)


def test_example_layout_parallel_calls_and_errors():
    ex = trace_to_example(make_trace(), DatasetConfig())
    roles = [m["role"] for m in ex["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool", "assistant", "tool", "assistant"]
    first = ex["messages"][2]
    assert first["content"] == "Reading both files."
    # Calls that share a parallel_group are one assistant turn with several calls.
    assert [c["function"]["name"] for c in first["tool_calls"]] == ["Read", "Read"]
    assert [m["tool_call_id"] for m in ex["messages"][3:5]] == ["c1", "c2"]
    assert ex["messages"][5]["content"] == "Now the tests."
    assert ex["messages"][6]["content"] == "Error: Exit code 1\n1 failed"
    assert ex["messages"][-1] == {"role": "assistant", "content": "All good."}
    for m in ex["messages"]:
        for c in m.get("tool_calls", []):
            assert isinstance(c["function"]["arguments"], str)
    assert json.loads(first["tool_calls"][1]["function"]["arguments"]) == {"file_path": "b.py", "limit": 5}
    assert ex["tool_sequence"] == ["Read", "Read", "Bash"]
    # Every offered tool, compacted.
    tools = json.loads(ex["tools"])
    assert [t["function"]["name"] for t in tools] == [t["name"] for t in TOOLS_OFFERED]
    assert "$schema" not in ex["tools"]


def test_the_prompt_names_the_working_directory():
    # Claude Code's file tools take absolute paths: the student must be told where the session is,
    # right before the prompt (the default), or in the system turn before the tool list.
    trace = make_trace(cwd="/home/dev/billing-api",
                       tool_calls=[ToolCall(tool_use_id="c1", name="Read",
                                            input={"file_path": "/home/dev/billing-api/a.py"}, output="A")])
    system, user = trace_to_example(trace, DatasetConfig())["messages"][:2]
    assert system == {"role": "system", "content": DatasetConfig().system_prompt}
    assert user == {"role": "user", "content": "Working directory: /home/dev/billing-api\n\n" + trace.prompt}
    in_system = trace_to_example(trace, DatasetConfig(working_directory_turn="system"))["messages"]
    assert in_system[0]["content"] == DatasetConfig().system_prompt + "\n\nWorking directory: /home/dev/billing-api"
    assert in_system[1]["content"] == trace.prompt
    # Rendered, the line comes after the tool list in the default and before it with "system".
    tools = json.dumps([{"type": "function", "function": {"name": "Read", "description": "r", "parameters": {}}}])
    text = render(trace_to_example(trace, DatasetConfig())["messages"], tools)
    assert text.index("# Tools") < text.index("Working directory") < text.index(trace.prompt)
    text = render(in_system, tools)
    assert text.index("Working directory") < text.index("# Tools")
    off = trace_to_example(trace, DatasetConfig(working_directory=False))["messages"]
    assert (off[0]["content"], off[1]["content"]) == (DatasetConfig().system_prompt, trace.prompt)
    # A trace without a cwd (imported from a transcript that lacks it) keeps the bare prompt.
    bare = trace_to_example(make_trace(cwd=None), DatasetConfig())["messages"]
    assert (bare[0]["content"], bare[1]["content"]) == (DatasetConfig().system_prompt, make_trace(cwd=None).prompt)
    with pytest.raises(ValueError, match="working_directory_turn"):
        DatasetConfig(working_directory_turn="assistant")


def test_subagent_calls_only_when_asked():
    sub = ToolCall(tool_use_id="s1", name="Grep", input={"pattern": "x"}, output="hit", agent_id="agent-1")
    calls = make_trace().tool_calls
    trace = make_trace(
        tool_calls=[calls[0], calls[1], sub, calls[2]],
        # Positions count every agent's calls: "Now the tests." comes after the subagent's call.
        assistant_text=[TextStep(text="Reading both files.", position=0), TextStep(text="Now the tests.", position=3),
                        TextStep(text="sub says hi", position=2, agent_id="agent-1")],
    )
    main = trace_to_example(trace, DatasetConfig())
    assert "Grep" not in json.dumps(main["messages"]) and "sub says hi" not in json.dumps(main["messages"])
    assert main["messages"][5]["content"] == "Now the tests."
    both = trace_to_example(trace, DatasetConfig(include_subagent_calls=True))
    names = [c["function"]["name"] for m in both["messages"] for c in m.get("tool_calls") or []]
    assert names == ["Read", "Read", "Grep", "Bash"]


def test_trailing_narration_and_final_answer():
    trace = make_trace(assistant_text=[TextStep(text="Done checking.", position=3), TextStep(text="All good.", position=3)])
    ex = trace_to_example(trace, DatasetConfig())
    assert ex["messages"][-1]["content"] == "Done checking.\n\nAll good."


def test_long_tool_results_are_trimmed_with_a_marker(tmp_path):
    long = "\n".join(f"row {i} " + "data " * 20 for i in range(400))
    trace = make_trace(tool_calls=[ToolCall(tool_use_id="c1", name="Bash", input={"command": "cat big"}, output=long)],
                       assistant_text=[])
    ex = trace_to_example(trace, DatasetConfig(max_tool_result_tokens=64))
    content = ex["messages"][3]["content"]
    assert "[... trimmed " in content and len(content) < 600 and content.startswith("row 0 ")
    report = build_dataset([trace], DatasetConfig(output_dir=tmp_path, max_tool_result_tokens=64))
    assert report.stats["trimmed_tool_results"] == 1
    assert trace_to_example(trace, DatasetConfig(max_tool_result_tokens=0))["messages"][3]["content"] == long


def test_split_by_session_is_stable_and_covers_all_splits():
    ids = [f"session-{i}" for i in range(50)]
    a = split_by_session(ids, 0.1, 0.1, seed=3)
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    assert split_by_session(shuffled, 0.1, 0.1, seed=3) == a
    assert set(a.values()) == set(SPLITS)
    # A held-out session stays held out when more sessions arrive.
    more = split_by_session(ids + [f"new-{i}" for i in range(50)], 0.1, 0.1, seed=3)
    assert all(more[s] == a[s] for s in ids if a[s] == "test")
    for n in (3, 4, 7):
        small = split_by_session([f"s{i}" for i in range(n)], 0.1, 0.1, seed=0)
        assert set(small.values()) == set(SPLITS), n
    assert set(split_by_session(["a", "b"], 0.1, 0.1).values()) == {"train"}


def test_build_dataset_splits_by_session_and_is_deterministic(corpus, tmp_path):
    report = build_dataset(corpus, DatasetConfig(output_dir=tmp_path / "a"))
    rows = {split: read_jsonl(tmp_path / "a" / f"{split}.jsonl") for split in SPLITS}
    assert sum(len(r) for r in rows.values()) == len(corpus) == sum(report.counts.values())
    assert all(rows[s] for s in SPLITS)
    sessions = {split: {r["session_id"] for r in rows[split]} for split in SPLITS}
    assert not (sessions["train"] & sessions["validation"] or sessions["train"] & sessions["test"]
                or sessions["validation"] & sessions["test"])
    assert all(r["split"] == split for split in SPLITS for r in rows[split])

    shuffled = corpus[:]
    random.Random(1).shuffle(shuffled)
    build_dataset(shuffled, DatasetConfig(output_dir=tmp_path / "b"))
    for name in [f"{s}.jsonl" for s in SPLITS]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

    stats = json.loads((tmp_path / "a" / "stats.json").read_text())
    assert stats["examples"] == report.counts
    assert stats["patterns"] == {"linear": sum(t.reasoning_signals.pattern == "linear" for t in corpus),
                                 "parallel": sum(t.reasoning_signals.pattern == "parallel" for t in corpus),
                                 "exploratory": sum(t.reasoning_signals.pattern == "exploratory" for t in corpus)}
    assert stats["tools"]["Bash"] >= stats["tools"]["Glob"] > 0
    assert stats["token_lengths"]["all"]["min"] > 100 and stats["token_lengths"]["counted_with"] == "chars/4 estimate"
    md = (tmp_path / "a" / "stats.md").read_text()
    assert "| train |" in md and "## Tools" in md and "| Read |" in md


def test_load_splits_keeps_arguments_intact(corpus, tmp_path):
    build_dataset(corpus, DatasetConfig(output_dir=tmp_path))
    splits = load_splits(tmp_path)
    assert set(splits) == set(SPLITS)
    by_id = {t.trace_id: t for t in corpus}
    n_checked = 0
    for split in SPLITS:
        for row in splits[split]:
            trace = by_id[row["trace_id"]]
            loaded = [json.loads(c["function"]["arguments"])
                      for m in row["messages"] for c in (m.get("tool_calls") or [])]
            # Exactly the trace's arguments: no keys merged in from other rows' calls.
            assert loaded == [c.input for c in trace.tool_calls]
            n_checked += len(loaded)
            assert isinstance(row["tools"], str) and row["tool_sequence"] == trace.reasoning_signals.tool_sequence
    assert n_checked > 100
    sft = splits["train"].select_columns(SFT_COLUMNS)
    assert sft.column_names == SFT_COLUMNS


def test_only_accepted_and_complete_traces(tmp_path):
    traces = [
        make_trace(),
        make_trace(trace_id="t2", session_id="s2", quality=Quality(accepted=False)),
        make_trace(trace_id="t3", session_id="s3", quality=None),
        make_trace(trace_id="t4", session_id="s4", final_response=None),
    ]
    report = build_dataset(traces, DatasetConfig(output_dir=tmp_path / "a"))
    assert sum(report.counts.values()) == 1
    assert report.stats["skipped"] == {"not accepted": 2, "no final answer": 1}
    report = build_dataset(traces, DatasetConfig(output_dir=tmp_path / "b", only_accepted=False))
    assert sum(report.counts.values()) == 3


def test_token_lengths_with_tokenizer(corpus, tmp_path):
    from trainer.chat_template import render
    from trainer.tokenizer_tools import train_tiny_tokenizer

    texts = [render(e["messages"], e["tools"]) for e in (trace_to_example(t, DatasetConfig()) for t in corpus[:20])]
    tok = train_tiny_tokenizer(texts, vocab_size=500)
    report = build_dataset(corpus[:20], DatasetConfig(output_dir=tmp_path), tokenizer=tok)
    lengths = report.stats["token_lengths"]
    assert lengths["counted_with"] == "tokenizer"
    assert lengths["all"]["max"] == max(len(tok.encode(t, add_special_tokens=False)) for t in texts)


def test_load_traces_from_jsonl_and_store(tmp_path, understudy_home):
    path = write_corpus_jsonl(tmp_path / "corpus.jsonl", n=12, seed=2)
    from_file = list(load_traces(path))
    assert [t.model_dump() for t in from_file] == [t.model_dump() for t in generate_corpus(12, seed=2)]
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_traces(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="No capture store"):
        load_traces(None)

    from capture_daemon.store import TraceStore

    with TraceStore.open() as store:
        for trace in from_file:
            store.put(trace)
    from_store = list(load_traces(None))
    assert sorted(t.trace_id for t in from_store) == sorted(t.trace_id for t in from_file)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="`val_fraction`"):
        DatasetConfig(val_fraction=1.5)
    with pytest.raises(ValueError, match="`val_fraction` \\+ `test_fraction`"):
        DatasetConfig(val_fraction=0.5, test_fraction=0.5)


def _tool_names(row: dict) -> list[str]:
    return [t.get("name") or t["function"]["name"] for t in json.loads(row["tools"])]


def test_the_called_tool_set_shows_the_tools_the_training_split_calls(tmp_path):
    """dataset.tool_set = "called": every example of every split shows the tools the teacher calls in
    the training split, in the offered order, and stats.json says which; a tool called only in a
    held-out session is not among them (the held-out split must not choose the student's context).
    "offered" shows all; an explicit dataset.tools wins over both."""
    extra = [{"name": name, "description": f"{name} tool.", "input_schema": {"type": "object", "properties": {}}}
             for name in ("WebFetch", "TodoWrite")]
    offered = TOOLS_OFFERED + extra
    sessions = [f"s{i}" for i in range(40)]
    assignment = split_by_session(sessions, 0.1, 0.1, seed=0)
    held_out = next(s for s in sessions if assignment[s] == "test")
    traces = [make_trace(trace_id=f"t-{s}", session_id=s, tools_offered=offered) for s in sessions]  # Read, Bash
    traces.append(make_trace(
        trace_id="t-grep", session_id=held_out, tools_offered=offered, prompt="where is main?",
        tool_calls=[ToolCall(tool_use_id="g1", name="Grep", input={"pattern": "main"}, output="a.py:1")],
        assistant_text=[]))

    report = build_dataset(traces, DatasetConfig(output_dir=tmp_path / "called", tool_set="called"))
    rows = [r for split in SPLITS for r in read_jsonl(tmp_path / "called" / f"{split}.jsonl")]
    assert len(rows) == len(traces) and {r["split"] for r in rows} == set(SPLITS)
    assert all(_tool_names(r) == ["Bash", "Read"] for r in rows)  # offered order: Bash before Read
    assert report.stats["tools_shown"] == ["Read", "Bash"]
    assert json.loads((tmp_path / "called" / "stats.json").read_text())["tools_shown"] == ["Read", "Bash"]
    assert "shows only the tools training calls (dataset.tool_set): Read, Bash." in (tmp_path / "called" / "stats.md").read_text()
    grep_row = next(r for r in rows if r["trace_id"] == "t-grep")
    assert [c["function"]["name"] for c in grep_row["messages"][2]["tool_calls"]] == ["Grep"]

    offered_report = build_dataset(traces, DatasetConfig(output_dir=tmp_path / "offered"))
    assert offered_report.stats["tools_shown"] is None
    assert _tool_names(read_jsonl(tmp_path / "offered" / "train.jsonl")[0]) == [t["name"] for t in offered]
    named = build_dataset(traces, DatasetConfig(output_dir=tmp_path / "named", tool_set="called", tools=["Grep"]))
    assert named.stats["tools_shown"] is None
    assert _tool_names(read_jsonl(tmp_path / "named" / "train.jsonl")[0]) == ["Grep"]
    with pytest.raises(ValueError, match="`tool_set`"):
        DatasetConfig(tool_set="used")


def test_a_mid_turn_message_follows_the_results_it_came_with():
    """Claude Code shows the model a message typed mid-turn after the tool results it arrived
    with; the student must see it there to learn that the next step reacts to it."""
    from capture_daemon.schema import MidTurnMessage
    from trainer.chat_template import mid_turn_text

    ex = trace_to_example(make_trace(mid_turn_messages=[MidTurnMessage(text="skip b.py, run the tests", position=2)]),
                          DatasetConfig())
    roles = [m["role"] for m in ex["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool", "user", "assistant", "tool", "assistant"]
    told = ex["messages"][5]["content"]
    assert told == mid_turn_text("skip b.py, run the tests")
    assert told.startswith("The user sent a new message while you were working:\nskip b.py, run the tests\n")
    assert ex["messages"][6]["content"] == "Now the tests."
    # After the last call it leads into the final answer.
    ex = trace_to_example(make_trace(mid_turn_messages=[MidTurnMessage(text="thanks", position=3)]), DatasetConfig())
    assert [m["role"] for m in ex["messages"]][-3:] == ["tool", "user", "assistant"]


def test_a_mid_turn_message_is_what_serve_shows_for_claude_codes_request():
    """Training and serving give the student the same words: `trainer serve` turns Claude Code's
    tool results plus the message's text block (one user message, as the TUI sends it) into the
    dataset's turns."""
    from capture_daemon.schema import MidTurnMessage
    from trainer.chat_template import mid_turn_text
    from trainer.serve import ContextSettings, to_chat

    config = DatasetConfig(working_directory=False)
    ex = trace_to_example(make_trace(mid_turn_messages=[MidTurnMessage(text="skip b.py", position=2)]), config)
    request = {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "Look at a.py and b.py"},
        {"role": "assistant", "content": [{"type": "text", "text": "Reading both files."},
                                          {"type": "tool_use", "id": "c1", "name": "Read", "input": {"file_path": "a.py"}},
                                          {"type": "tool_use", "id": "c2", "name": "Read", "input": {"file_path": "b.py", "limit": 5}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "A"},
                                     {"type": "tool_result", "tool_use_id": "c2", "content": "B"},
                                     {"type": "text", "text": mid_turn_text("skip b.py")}]},
    ]}
    messages, _, _ = to_chat(request, ContextSettings(dataset=config))
    assert messages == ex["messages"][:6]


def test_a_stop_hooks_feedback_follows_the_turn_it_stopped():
    """The model wrote text and stopped; a user's Stop hook sent it on. The student sees the turn
    that stopped, then the feedback as Claude Code words it, then the turn that reacts to it
    (never "the user sent a new message": a hook is not the user)."""
    from capture_daemon.schema import MidTurnMessage

    trace = make_trace(assistant_text=[TextStep(text="Reading both files.", position=0), TextStep(text="Both look fine.", position=2),
                                       TextStep(text="Now the tests.", position=2)],
                       mid_turn_messages=[MidTurnMessage(text="run the tests", position=2, kind="hook_feedback", hook="Stop",
                                                         after_text=1)])
    messages = trace_to_example(trace, DatasetConfig())["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool", "assistant", "user",
                                             "assistant", "tool", "assistant"]
    assert messages[5] == {"role": "assistant", "content": "Both look fine."}
    assert messages[6] == {"role": "user", "content": "Stop hook feedback:\nrun the tests"}
    assert messages[7]["content"] == "Now the tests." and messages[7]["tool_calls"][0]["id"] == "c3"


def test_hook_context_is_worded_as_claude_code_shows_it():
    from capture_daemon.schema import MidTurnMessage

    trace = make_trace(mid_turn_messages=[
        MidTurnMessage(text="branch is main", position=0, kind="hook_context", hook="UserPromptSubmit"),
        MidTurnMessage(text="lint runs on push", position=3, kind="hook_context", hook="PostToolUse:Bash")])
    messages = trace_to_example(trace, DatasetConfig())["messages"]
    assert messages[2] == {"role": "user", "content": "UserPromptSubmit hook additional context: branch is main"}
    assert messages[-2] == {"role": "user", "content": "PostToolUse:Bash hook additional context: lint runs on push"}


def test_a_stop_hooks_feedback_is_what_serve_shows_for_claude_codes_request():
    """2.1.328 sends the feedback as a user turn of its own; `trainer serve` keeps it as the
    dataset does (the reminder naming the hook's command is a system message, left out)."""
    from capture_daemon.schema import MidTurnMessage
    from trainer.serve import ContextSettings, to_chat

    config = DatasetConfig(working_directory=False)
    trace = make_trace(tool_calls=make_trace().tool_calls[:2], final_response="Now the tests.",
                       assistant_text=[TextStep(text="Reading both files.", position=0), TextStep(text="Both look fine.", position=2)],
                       mid_turn_messages=[MidTurnMessage(text="run the tests", position=2, kind="hook_feedback", hook="Stop",
                                                         after_text=1)])
    ex = trace_to_example(trace, config)
    request = {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "Look at a.py and b.py"},
        {"role": "assistant", "content": [{"type": "text", "text": "Reading both files."},
                                          {"type": "tool_use", "id": "c1", "name": "Read", "input": {"file_path": "a.py"}},
                                          {"type": "tool_use", "id": "c2", "name": "Read", "input": {"file_path": "b.py", "limit": 5}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "A"},
                                     {"type": "tool_result", "tool_use_id": "c2", "content": "B"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Both look fine."}]},
        {"role": "user", "content": "Stop hook feedback:\nrun the tests"},
        {"role": "system", "content": 'Stop hook blocking error from command: "/h/stop.sh": run the tests'},
    ]}
    messages, _, _ = to_chat(request, ContextSettings(dataset=config))
    assert messages == ex["messages"][:-1]


def test_a_subagents_hook_feedback_is_shown_only_with_its_turns():
    from capture_daemon.schema import MidTurnMessage

    told = MidTurnMessage(text="check twice", position=2, kind="hook_feedback", hook="SubagentStop", after_text=0, agent_id="a1")
    contents = [m["content"] for m in trace_to_example(make_trace(mid_turn_messages=[told]), DatasetConfig())["messages"]]
    assert "Stop hook feedback:\ncheck twice" not in contents
    with_agents = trace_to_example(make_trace(mid_turn_messages=[told]), DatasetConfig(include_subagent_calls=True))
    # Claude Code words a SubagentStop hook's reason as a Stop hook's.
    assert "Stop hook feedback:\ncheck twice" in [m["content"] for m in with_agents["messages"]]
