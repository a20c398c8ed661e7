"""`trainer serve` without a model: the Messages API surface, request fuzzing, the context
mapping, and the A/B rollout (with tests/scripted_api.ScriptedAPI as the upstream).

A scripted backend stands in for the student so these run in seconds; the real student (the
transformers and llama.cpp backends) is exercised by tests/test_serve_e2e.py, tests/test_export.py
and benchmarks/bench_serve.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import httpx
import pytest

from tests.scripted_api import Script, ScriptedAPI, text, tool
from trainer.chat_template import DEFAULT_SYSTEM_PROMPT, render
from trainer.dataset import DatasetConfig
from trainer.serve import (
    ABSpec,
    ArmLog,
    BackgroundServer,
    ContextSettings,
    GenResult,
    OutputAssembler,
    ServerSettings,
    arm_for,
    build_prompt,
    create_app,
    session_id_of,
    to_chat,
)
from trainer.config import ConfigError

# One client for the module: a fresh httpx client per call builds an SSL context (~0.1 s).
http = httpx.Client(timeout=30)

READ_TOOL = {
    "name": "Read",
    "description": "Reads a file from the local filesystem. " * 20,
    "input_schema": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"file_path": {"type": "string", "description": "The absolute path"}},
        "required": ["file_path"],
        "additionalProperties": False,
    },
}
BASH_TOOL = {
    "name": "Bash",
    "description": "Executes a bash command.",
    "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
}


class ScriptedBackend:
    """Emits fixed pieces, one per `delay` seconds, and records the prompts it saw."""

    name = "scripted"

    def __init__(self, pieces, delay: float = 0.0, finish: str = "stop"):
        self.pieces = list(pieces)
        self.delay = delay
        self.finish = finish
        self.prompts: list[str] = []
        self.cancelled = threading.Event()
        self.running = threading.Event()
        self.lock = threading.Lock()

    def count(self, prompt: str, limit=None) -> int:
        return len(prompt.split())

    def generate(self, prompt, params, cancel, emit):
        with self.lock:
            self.prompts.append(prompt)
            self.running.set()
            n = 0
            for piece in self.pieces[: params.max_new_tokens]:
                if cancel.is_set():
                    self.cancelled.set()
                    return GenResult("cancelled", n)
                if self.delay:
                    time.sleep(self.delay)
                emit(piece)
                n += 1
            finish = "length" if params.max_new_tokens < len(self.pieces) else self.finish
            return GenResult(finish, n)


def request(**overrides):
    body = {
        "model": "claude-opus-5-5",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "read a.py"}],
        "tools": [READ_TOOL, BASH_TOOL],
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def sse_events(resp_text: str) -> list[tuple[str, dict]]:
    out = []
    for chunk in resp_text.strip().split("\n\n"):
        lines = chunk.splitlines()
        event = lines[0].removeprefix("event: ")
        data = json.loads(lines[1].removeprefix("data: "))
        out.append((event, data))
    return out


@pytest.fixture
def serve():
    servers = []

    def start(backend, **settings):
        server = BackgroundServer(create_app(backend, ServerSettings(**settings)))
        servers.append(server.__enter__())
        return server.base_url

    yield start
    for server in servers:
        server.__exit__(None, None, None)


TOOL_OUTPUT = ["I'll read ", "the file.\n", "<tool_call>", '{"name": "Read", ', '"arguments": {"file_path": "a.py"}}', "</tool_call>"]


# ---------------------------------------------------------------------------------------------
# The Messages API surface


def test_json_response_with_tool_use(serve):
    backend = ScriptedBackend(TOOL_OUTPUT)
    url = serve(backend)
    r = http.post(url + "/v1/messages", json=request())
    assert r.status_code == 200, r.text
    msg = r.json()
    assert msg["type"] == "message" and msg["role"] == "assistant" and msg["model"] == "claude-opus-5-5"
    assert msg["stop_reason"] == "tool_use"
    assert msg["content"][0] == {"type": "text", "text": "I'll read the file."}
    call = msg["content"][1]
    assert call["type"] == "tool_use" and call["name"] == "Read" and call["input"] == {"file_path": "a.py"}
    assert call["id"].startswith("toolu_")
    assert msg["usage"]["output_tokens"] == len(TOOL_OUTPUT) and msg["usage"]["input_tokens"] > 0


def test_streaming_events_and_order(serve):
    url = serve(ScriptedBackend(TOOL_OUTPUT))
    r = http.post(url + "/v1/messages", json=request(stream=True))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    names = [e for e, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    text = "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta" and d["delta"]["type"] == "text_delta")
    assert text == "I'll read the file."
    starts = [d for e, d in events if e == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use"]
    assert [s["index"] for s in starts] == [0, 1]
    args = "".join(d["delta"]["partial_json"] for e, d in events if e == "content_block_delta" and d["delta"]["type"] == "input_json_delta")
    assert json.loads(args) == {"file_path": "a.py"}
    delta = [d for e, d in events if e == "message_delta"][0]
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["output_tokens"] == len(TOOL_OUTPUT)


def test_plain_answer_and_max_tokens(serve):
    url = serve(ScriptedBackend(["The ", "answer ", "is ", "42."]))
    msg = http.post(url + "/v1/messages", json=request()).json()
    assert msg["stop_reason"] == "end_turn" and msg["content"] == [{"type": "text", "text": "The answer is 42."}]
    msg = http.post(url + "/v1/messages", json=request(max_tokens=2)).json()
    assert msg["stop_reason"] == "max_tokens" and msg["content"] == [{"type": "text", "text": "The answer"}]


def test_stop_sequences(serve):
    url = serve(ScriptedBackend(["alpha ", "beta", " END gamma"]))
    msg = http.post(url + "/v1/messages", json=request(stop_sequences=["END"])).json()
    assert msg["stop_reason"] == "stop_sequence" and msg["stop_sequence"] == "END"
    assert msg["content"] == [{"type": "text", "text": "alpha beta"}]


@pytest.mark.parametrize(
    "pieces, expected_text",
    [
        (["Let me look.\n<tool_call>{not json}</tool_call>"], "Let me look.\n<tool_call>{not json}</tool_call>"),
        (['<tool_call>{"name": "Rm", "arguments": {}}</tool_call>'], '<tool_call>{"name": "Rm", "arguments": {}}</tool_call>'),
        (['<tool_call>{"name": "Read", "arguments": {"file_path": "a'], '<tool_call>{"name": "Read", "arguments": {"file_path": "a'),
        (['<tool_call>{"name": "Read", "arguments": [1]}</tool_call>'], '<tool_call>{"name": "Read", "arguments": [1]}</tool_call>'),
    ],
    ids=["bad-json", "unknown-tool", "unclosed", "non-object-args"],
)
@pytest.mark.parametrize("stream", [False, True])
def test_malformed_tool_calls_fall_back_to_text(serve, pieces, expected_text, stream):
    url = serve(ScriptedBackend(pieces))
    r = http.post(url + "/v1/messages", json=request(stream=stream))
    assert r.status_code == 200
    if not stream:
        msg = r.json()
        assert msg["stop_reason"] == "end_turn"
        assert msg["content"] == [{"type": "text", "text": expected_text}]
    else:
        events = sse_events(r.text)
        assert [e for e, _ in events][-1] == "message_stop"
        text = "".join(d["delta"].get("text", "") for e, d in events if e == "content_block_delta")
        assert text == expected_text
        assert not any(d.get("content_block", {}).get("type") == "tool_use" for e, d in events)


def test_parallel_calls(serve):
    out = ['<tool_call>{"name": "Read", "arguments": {"file_path": "a.py"}}</tool_call>\n'
           '<tool_call>{"name": "Read", "arguments": {"file_path": "b.py"}}</tool_call>']
    msg = http.post(serve(ScriptedBackend(out)) + "/v1/messages", json=request()).json()
    assert [b["input"]["file_path"] for b in msg["content"] if b["type"] == "tool_use"] == ["a.py", "b.py"]
    assert all(b["type"] == "tool_use" for b in msg["content"])


def test_count_tokens_health_models(serve):
    backend = ScriptedBackend([])
    url = serve(backend)
    r = http.post(url + "/v1/messages/count_tokens", json={"model": "m", "messages": [{"role": "user", "content": "hi there"}]})
    assert r.status_code == 200 and r.json()["input_tokens"] > 0
    assert http.get(url + "/health").json()["status"] == "ok"
    assert http.head(url + "/").status_code == 200
    assert http.get(url + "/v1/models").json()["data"][0]["id"] == "understudy-student"


# ---------------------------------------------------------------------------------------------
# Fuzzing: every bad request gets Anthropic-style error JSON with the right status


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"null", 400, "JSON object"),
        (json.dumps({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}).encode(), 400, "model"),
        (json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]}).encode(), 400, "max_tokens"),
        (json.dumps({"model": "m", "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}).encode(), 400, "max_tokens"),
        (json.dumps({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}).encode(), 400, "max_tokens"),
        (json.dumps({"model": "m", "max_tokens": 5}).encode(), 400, "messages"),
        (json.dumps({"model": "m", "max_tokens": 5, "messages": []}).encode(), 400, "messages"),
        (json.dumps({"model": "m", "max_tokens": 5, "messages": "hi"}).encode(), 400, "messages"),
        (json.dumps({"model": "m", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}).encode(), 400, "messages.0.role"),
        (json.dumps({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 7}]}).encode(), 400, "messages.0.content"),
        (json.dumps({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]}).encode(), 400, "messages.0.content.0.text"),
        (json.dumps({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [7]}]}).encode(), 400, "messages.0.content.0"),
        (json.dumps({"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Read", "input": "x"}]}]}).encode(), 400, "input"),
        (json.dumps({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}).encode(), 400, "tool_use_id"),
        (json.dumps({"model": "m", "max_tokens": 5, "stream": "yes", "messages": [{"role": "user", "content": "x"}]}).encode(), 400, "stream"),
        (json.dumps({"model": "m", "max_tokens": 5, "tools": {"a": 1}, "messages": [{"role": "user", "content": "x"}]}).encode(), 400, "tools"),
        (json.dumps({"model": "m", "max_tokens": 5, "tools": [{"description": "x"}], "messages": [{"role": "user", "content": "x"}]}).encode(), 400, "tools.0.name"),
        (json.dumps({"model": "m", "max_tokens": 5, "system": 5, "messages": [{"role": "user", "content": "x"}]}).encode(), 400, "system"),
        (json.dumps({"model": "m", "max_tokens": 5, "temperature": "hot", "messages": [{"role": "user", "content": "x"}]}).encode(), 400, "temperature"),
        (json.dumps({"model": "m", "max_tokens": 5, "stop_sequences": [""], "messages": [{"role": "user", "content": "x"}]}).encode(), 400, "stop_sequences"),
        (b"[" * 100000 + b"]" * 100000, 400, "JSON"),
    ],
)
def test_malformed_requests(serve, body, status, fragment):
    url = serve(ScriptedBackend(["ok"]))
    r = http.post(url + "/v1/messages", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert fragment in err["error"]["message"]


def test_huge_body_is_rejected(serve):
    url = serve(ScriptedBackend(["ok"]), max_body_bytes=1 << 20)
    big = json.dumps(request(messages=[{"role": "user", "content": "x" * (2 << 20)}])).encode()
    r = http.post(url + "/v1/messages", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"

    # Without a Content-Length (chunked upload) the limit holds while reading.
    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    r = http.post(url + "/v1/messages", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_route_and_method(serve):
    url = serve(ScriptedBackend(["ok"]))
    r = http.post(url + "/v1/complete", json={})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = http.get(url + "/v1/messages")
    assert r.status_code == 405 and r.json()["type"] == "error"


def test_token_required_when_set(serve):
    url = serve(ScriptedBackend(["ok"]), token="s3cret")
    assert http.post(url + "/v1/messages", json=request()).status_code == 401
    r = http.post(url + "/v1/messages", json=request(), headers={"x-api-key": "wrong"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert http.post(url + "/v1/messages", json=request(), headers={"x-api-key": "s3cret"}).status_code == 200
    assert http.post(url + "/v1/messages", json=request(), headers={"authorization": "Bearer s3cret"}).status_code == 200
    assert http.get(url + "/health").status_code == 200  # health stays open


def test_client_disconnect_mid_stream_stops_generation(serve):
    backend = ScriptedBackend(["word "] * 400, delay=0.02)
    url = serve(backend)
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", url + "/v1/messages", json=request(stream=True)) as r:
            for line in r.iter_lines():
                if "text_delta" in line:
                    break  # leave after the first text, mid-generation
    assert backend.cancelled.wait(5), "generation kept running after the client left"
    # The server is still healthy and serves the next request.
    backend.pieces = ["fine"]
    assert http.post(url + "/v1/messages", json=request()).json()["content"][0]["text"] == "fine"


def test_client_leaving_before_the_first_token_stops_generation(serve):
    """The stream is served without Starlette's task group (trainer.serve._event_stream_class): a
    client that leaves while the first token is still being worked on cancels it all the same."""
    backend = ScriptedBackend(["word "] * 50, delay=0.2)
    url = serve(backend)
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", url + "/v1/messages", json=request(stream=True)) as r:
            for line in r.iter_lines():
                if line.startswith("event: message_start"):
                    break  # gone before any text
    assert backend.cancelled.wait(5), "generation kept running after the client left"
    backend.pieces, backend.delay = ["fine"], 0.0
    assert http.post(url + "/v1/messages", json=request()).json()["content"][0]["text"] == "fine"


def test_backend_error_is_reported_not_hung(serve):
    class Broken(ScriptedBackend):
        def generate(self, prompt, params, cancel, emit):
            emit("partial ")
            raise RuntimeError("out of memory")

    url = serve(Broken([]))
    r = http.post(url + "/v1/messages", json=request(), timeout=10)
    assert r.status_code == 500 and r.json()["error"]["type"] == "api_error"
    r = http.post(url + "/v1/messages", json=request(stream=True), timeout=10)
    events = sse_events(r.text)
    assert events[-1][0] == "error" and "out of memory" in events[-1][1]["error"]["message"]


# ---------------------------------------------------------------------------------------------
# Claude Code's request → the student's compact training context


def claude_code_like_request():
    return {
        "model": "claude-opus-5-5",
        "max_tokens": 32000,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2"}, {"type": "text", "text": "You are Claude Code. " * 500}],
        "tools": [READ_TOOL, BASH_TOOL, {"name": "Agent", "description": "Launch a subagent.", "input_schema": {"type": "object", "properties": {}}}],
        "metadata": {"user_id": json.dumps({"device_id": "d", "account_uuid": "", "session_id": "abc-123"})},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>\nCLAUDE.md says hi\n</system-reminder>\n"},
                {"type": "text", "text": "read a.py"},
            ]},
            {"role": "system", "content": [{"type": "text", "text": "# Environment\nPrimary working directory: /tmp/x"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Reading it."},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "a.py"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "print(1)"}]},
                {"type": "text", "text": "<system-reminder>Remember the todo list</system-reminder>"},
            ]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "Bash", "input": {"command": "python a.py"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "Traceback: boom", "is_error": True}]},
        ],
    }


def test_a_toolsearch_result_is_accepted_and_read_as_the_traces_read_it():
    """Claude Code 2.1.x's ToolSearch answers with `tool_reference` blocks (the tools whose
    definitions it loads): a request holding one is valid, and the student reads it as import
    recorded it (capture_daemon/content_blocks.py); one without a tool name is a 400."""
    from trainer.serve_validate import APIError, validate_request

    request = claude_code_like_request()
    request["messages"][-2]["content"].append(
        {"type": "tool_use", "id": "toolu_3", "name": "ToolSearch", "input": {"query": "select:NotebookEdit"}})
    request["messages"][-1]["content"].append(
        {"type": "tool_result", "tool_use_id": "toolu_3", "content": [{"type": "tool_reference", "tool_name": "NotebookEdit"}]})
    del request["messages"][1]  # the mid-conversation system message (validated elsewhere)
    validate_request(request)
    messages, _, _ = to_chat(request, ContextSettings())
    assert messages[-1] == {"role": "tool", "content": "[tool reference: NotebookEdit]", "tool_call_id": "toolu_3",
                            "name": "ToolSearch"}
    request["messages"][-1]["content"][-1]["content"] = [{"type": "tool_reference"}]
    with pytest.raises(APIError, match=r"^messages\.4\.content\.1\.content\.0\.tool_name"):
        validate_request(request)


def test_request_maps_to_the_dataset_context():
    settings = ContextSettings()
    messages, tools, prefill = to_chat(claude_code_like_request(), settings)
    assert prefill == ""
    assert messages == [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        # The working directory Claude Code states (here in its environment system message), as
        # the dataset names a trace's cwd: before the conversation's first prompt.
        {"role": "user", "content": "Working directory: /tmp/x\n\nread a.py"},
        {"role": "assistant", "content": "Reading it.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "Read", "arguments": '{"file_path": "a.py"}'}}]},
        {"role": "tool", "content": "print(1)", "tool_call_id": "toolu_1", "name": "Read"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "toolu_2", "type": "function", "function": {"name": "Bash", "arguments": '{"command": "python a.py"}'}}]},
        {"role": "tool", "content": "Error: Traceback: boom", "tool_call_id": "toolu_2", "name": "Bash"},
    ]
    # Tools compacted exactly as the dataset builder compacts a trace's tools_offered.
    from trainer.tool_context import tools_for

    assert tools == tools_for(claude_code_like_request()["tools"], DatasetConfig())
    assert len(tools[0]["function"]["description"]) <= DatasetConfig().tool_description_chars + 1
    assert "$schema" not in json.dumps(tools)
    # A student trained with the line in its system turn is served that way; later prompts of
    # the conversation are never prefixed.
    in_system = ContextSettings(dataset=DatasetConfig(working_directory_turn="system"))
    messages, _, _ = to_chat(claude_code_like_request(), in_system)
    assert messages[:2] == [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT + "\n\nWorking directory: /tmp/x"},
                            {"role": "user", "content": "read a.py"}]
    follow_up = claude_code_like_request()
    follow_up["messages"] += [{"role": "assistant", "content": "It failed."}, {"role": "user", "content": "fix it"}]
    messages, _, _ = to_chat(follow_up, settings)
    assert [m["content"] for m in messages if m["role"] == "user"] == ["Working directory: /tmp/x\n\nread a.py", "fix it"]


def test_working_directory_is_read_where_each_claude_code_version_states_it():
    from trainer.serve import working_directory_of

    env_2_1 = {"type": "text", "text": "# Environment\nYou have been invoked in the following environment: \n"
                                      " - Primary working directory: /home/dev/my project\n - Is a git repository: false"}
    assert working_directory_of(request(messages=[{"role": "user", "content": "hi"},
                                                   {"role": "system", "content": [env_2_1]}])) == "/home/dev/my project"
    older = request(messages=[{"role": "user", "content": "hi"}])
    older["system"] = "You are Claude Code.\n<env>\nWorking directory: /srv/app\nPlatform: linux\n</env>"
    assert working_directory_of(older) == "/srv/app"
    reminder = request(messages=[{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\n - Primary working directory: /w\n</system-reminder>"},
        {"type": "text", "text": "hi"}]}])
    assert working_directory_of(reminder) == "/w"
    assert working_directory_of(request(messages=[{"role": "user", "content": "where am I?"}])) is None
    # Without one, the system turn is the bare compact prompt, as for a trace without a cwd.
    messages, _, _ = to_chat(request(messages=[{"role": "user", "content": "hi"}]), ContextSettings())
    assert messages[0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}


def test_prompt_is_the_training_template_and_is_configurable():
    body = claude_code_like_request()
    prompt, offered = build_prompt(body, ContextSettings())
    messages, tools, _ = to_chat(body, ContextSettings())
    assert prompt == render(messages, tools, add_generation_prompt=True)
    assert offered == ["Read", "Bash", "Agent"] and "system-reminder" not in prompt and "Claude Code" not in prompt

    custom = ContextSettings(dataset=DatasetConfig(system_prompt="Be brief.", tool_description_chars=20), tools=["Bash"])
    prompt, offered = build_prompt(body, custom)
    assert "Be brief." in prompt and offered == ["Bash"] and '"Read"' not in prompt.split("<|eot_id|>")[0]

    passthrough, _ = build_prompt(body, ContextSettings(context="passthrough"))
    assert "You are Claude Code." in passthrough and "Primary working directory" in passthrough


def test_long_tool_results_are_trimmed_like_the_dataset():
    body = request(messages=[
        {"role": "user", "content": "run it"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "x"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "line\n" * 5000}]},
    ])
    messages, _, _ = to_chat(body, ContextSettings(dataset=DatasetConfig(max_tool_result_tokens=64)))
    assert "[... trimmed" in messages[-1]["content"] and len(messages[-1]["content"]) < 1000


def test_prefill_continues_the_assistant_turn():
    body = request(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure,"}])
    prompt, _ = build_prompt(body, ContextSettings())
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\nSure,")


def test_assembler_streams_only_safe_narration():
    asm = OutputAssembler(["Read"], [])
    out = "".join(asm.feed(p) for p in ["Hello", " <", "tool", "_call>", '{"name": "Read", "arguments": {}}', "</tool_call>"])
    assert out == "Hello"
    text, blocks = asm.finish()
    assert text == "Hello" and blocks[0]["name"] == "Read"


# ---------------------------------------------------------------------------------------------
# A/B rollout


def test_ab_spec_parsing():
    spec = ABSpec.parse("upstream=https://api.anthropic.com/,student=0.1")
    assert spec.upstream == "https://api.anthropic.com" and spec.student_share == 0.1
    for bad in ["student=0.1", "upstream=ftp://x,student=0.1", "upstream=http://x,student=2", "upstream=http://x,student=abc", "upstream=http://x,studnet=0.1"]:
        with pytest.raises(ConfigError):
            ABSpec.parse(bad)


def test_session_id_sources():
    assert session_id_of({"x-claude-code-session-id": "h-1"}, {}) == "h-1"
    meta = {"metadata": {"user_id": json.dumps({"device_id": "d", "session_id": "m-2"})}}
    assert session_id_of({}, meta) == "m-2"
    legacy = {"metadata": {"user_id": "user_abc_account__session_1234abcd-0000-4000-8000-000000000000"}}
    assert session_id_of({}, legacy) == "1234abcd-0000-4000-8000-000000000000"
    assert session_id_of({}, {"metadata": {"user_id": 5}}) is None and session_id_of({}, []) is None


def test_share_is_respected_and_assignment_deterministic():
    arms = Counter(arm_for(f"session-{i}", 0.1) for i in range(5000))
    assert 0.08 < arms["student"] / 5000 < 0.12
    assert all(arm_for(f"s{i}", 0.3) == arm_for(f"s{i}", 0.3) for i in range(100))
    # Growing the share only moves sessions from upstream to the student, never back.
    assert all(arm_for(f"s{i}", 0.5) == "student" for i in range(1000) if arm_for(f"s{i}", 0.1) == "student")


def test_arm_log_is_sticky_across_share_changes(tmp_path):
    log = ArmLog(tmp_path / "arms.db")
    first = {f"s{i}": log.assign(f"s{i}", 0.5) for i in range(50)}
    # Same sessions, share changed to 0: recorded sessions keep their arm.
    assert {s: log.assign(s, 0.0) for s in first} == first
    rows = {r[0]: r for r in log.rows()}
    assert rows["s0"][4] == 2 and rows["s0"][3] == 0.5


def test_ab_routes_sessions_and_proxies_upstream(serve, understudy_home):
    scripts = [Script("read", [[text("Upstream reads."), tool("Read", {"file_path": "u.py"})], [text("Done upstream.")]])]
    with ScriptedAPI(scripts) as upstream:
        backend = ScriptedBackend(TOOL_OUTPUT)
        url = serve(backend, ab=ABSpec(upstream=upstream.base_url, student_share=0.5))
        sessions = [f"sess-{i}" for i in range(40)]
        served = {}
        for sid in sessions:
            for stream in (False, True, False):  # several requests per session: never switches arm
                r = http.post(url + "/v1/messages?beta=true", json=request(stream=stream), headers={"x-claude-code-session-id": sid})
                assert r.status_code == 200, r.text
                arm = r.headers["x-understudy-arm"]
                assert served.setdefault(sid, arm) == arm
                body = sse_events(r.text) if stream else None
                if arm == "upstream":
                    if stream:
                        assert any(d.get("delta", {}).get("text") == "Upstream reads." for _, d in body)
                    else:
                        assert r.json()["content"][0]["text"] == "Upstream reads."
        expected = {sid: arm_for(sid, 0.5) for sid in sessions}
        assert served == expected
        assert 8 <= Counter(served.values())["student"] <= 32
        # The upstream saw exactly the upstream sessions' requests, bodies untouched.
        assert len(upstream.requests) == 3 * Counter(served.values())["upstream"]
        assert upstream.requests[0]["messages"] == request()["messages"]
        # No session id: upstream (the safe default), and count_tokens follows the same routing.
        r = http.post(url + "/v1/messages", json=request())
        assert r.headers["x-understudy-arm"] == "upstream"
        r = http.post(url + "/v1/messages/count_tokens", json=request(), headers={"x-claude-code-session-id": sessions[0]})
        assert r.status_code == 200 and r.json()["input_tokens"] > 0

    # The arm log in the data dir, and `trainer serve arms`.
    log_path = understudy_home / "serve" / "arms.db"
    assert log_path.exists()
    from click.testing import CliRunner

    from trainer.serve import command

    result = CliRunner().invoke(command, ["arms", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert {r["session_id"]: r["arm"] for r in rows} == served
    assert all(r["requests"] == (4 if r["session_id"] == sessions[0] else 3) and r["first_seen"] for r in rows)
    summary = CliRunner().invoke(command, ["arms"])
    assert "40 sessions" in summary.output


def test_upstream_unreachable_is_a_502(serve):
    url = serve(ScriptedBackend(["ok"]), ab=ABSpec(upstream="http://127.0.0.1:9", student_share=0.0))
    r = http.post(url + "/v1/messages", json=request(), headers={"x-claude-code-session-id": "s"})
    assert r.status_code == 502 and r.json()["error"]["type"] == "api_error"


def test_upstream_key_replaces_our_token():
    seen = {}

    def upstream(req: httpx.Request) -> httpx.Response:
        seen.update(req.headers)
        seen["url"] = str(req.url)
        return httpx.Response(200, json={"type": "message", "content": []})

    settings = ServerSettings(token="local", upstream_api_key="sk-upstream", ab=ABSpec("http://upstream.test", 0.0))
    app = create_app(ScriptedBackend(["ok"]), settings)
    app.state.http = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
    with BackgroundServer(app) as server:
        r = http.post(server.base_url + "/v1/messages?beta=true", json=request(),
                       headers={"x-api-key": "local", "x-claude-code-session-id": "s", "anthropic-version": "2023-06-01"})
    assert r.status_code == 200 and r.headers["x-understudy-arm"] == "upstream"
    assert seen["x-api-key"] == "sk-upstream" and seen["anthropic-version"] == "2023-06-01"
    assert seen["url"] == "http://upstream.test/v1/messages?beta=true"


# ---------------------------------------------------------------------------------------------
# Issue 13: tool_choice, limits, backpressure, request ids (the real student: test_serve_conformance.py)


def test_usage_stops_at_the_stop_sequence_token(serve):
    backend = ScriptedBackend(["alpha ", "beta", " END gamma", " more", " more"])
    msg = http.post(serve(backend) + "/v1/messages", json=request(stop_sequences=["END"])).json()
    # The piece holding the stop is the last one generated: nothing after it is counted.
    assert msg["stop_reason"] == "stop_sequence" and msg["usage"]["output_tokens"] == 3


@pytest.mark.parametrize(
    "text, ok",
    [
        ('<tool_call>{"name": "Read", "arguments": {"file_path": "a.py"}}</tool_call>', True),
        ('<tool_call>{"name": "Bash", "arguments": {"n": [1, -2.5e3, true, null, {"x": "\\u00e9\\n"}]}}</tool_call>', True),
        ('<tool_call>{"name": "Re', True),
        ('<tool_call>{"name": "Rm"', False),
        ("I'll read it.", False),
        ('<tool_call>{"name": "Read", "arguments": [1]}', False),
        ('<tool_call>{"name": "Read", "arguments": {"a": 01}}', False),
        ('<tool_call>{"name": "Read", "arguments": {"a": tru}}', False),
        ('<tool_call>{"name": "Read", "arguments": {"a" 1}}', False),
        ('<tool_call>{"name": "Read", "arguments": {"a": 1}}</tool_call>\n<tool_call>{"name": "Bash", ', True),
        ('<tool_call>{"name": "Read", "arguments": {}}</tool_call> and text', False),
    ],
)
def test_tool_call_validator(text, ok):
    from trainer.serve_constrain import ToolCallValidator

    assert ToolCallValidator(["Read", "Bash"]).feed(text) is ok


def test_validator_ends_only_after_a_whole_call_and_single_call_mode():
    from trainer.serve_constrain import Constraint, ToolCallValidator, gbnf

    v = ToolCallValidator(["Read"], parallel=False)
    assert v.feed('<tool_call>{"name": "Read", "arguments": {"a": "}"}}') and not v.can_end()
    assert v.feed("</tool_call>") and v.can_end()
    assert not v.clone().feed("\n")  # no second call
    grammar = gbnf(Constraint("any", ["Read", "Bash"], parallel=True))
    assert grammar.startswith('root ::= call ("\\n" call)*') and '\\"Bash\\"' in grammar


@pytest.mark.parametrize("stream", [False, True])
def test_forced_and_forbidden_calls_are_assembled(serve, stream):
    from trainer.serve_constrain import Constraint

    # A forced turn is calls only; a forced call cut off (by max_tokens) is still the call.
    asm = OutputAssembler(["Read"], [], Constraint("any", ["Read", "Bash"]))
    assert asm.feed('<tool_call>{"name": "Bash", "arguments": {"command": "l') == ""
    text, blocks = asm.finish(cut_off=True)
    assert text == "" and [(b["name"], b["input"]) for b in blocks] == [("Bash", {})]
    # tool_choice none: a call-looking text stays text.
    asm = OutputAssembler(["Read"], [], Constraint("none"))
    out = asm.feed('Sure. <tool_call>{"name": "Read", "arguments": {}}</tool_call>')
    assert out.startswith("Sure. <tool_call>") and asm.finish()[1] == []
    # disable_parallel_tool_use: the first call only, and the server stops generating after it.
    two = ['<tool_call>{"name": "Read", "arguments": {"file_path": "a"}}</tool_call>', "\n",
           '<tool_call>{"name": "Read", "arguments": {"file_path": "b"}}</tool_call>']
    backend = ScriptedBackend(two)
    r = http.post(serve(backend) + "/v1/messages", json=request(stream=stream, tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
    if stream:
        events = sse_events(r.text)
        inputs = [json.loads(d["delta"]["partial_json"]) for e, d in events if e == "content_block_delta" and d["delta"]["type"] == "input_json_delta"]
    else:
        inputs = [b["input"] for b in r.json()["content"] if b["type"] == "tool_use"]
    assert inputs == [{"file_path": "a"}]
    assert len(backend.prompts) == 1 and backend.cancelled.is_set()  # stopped after the first call


def test_queue_bound_is_a_529_and_a_waiting_client_can_leave(serve):
    backend = ScriptedBackend(["word "] * 60, delay=0.05)
    url = serve(backend, max_queue=1)
    results = {}

    def post(name, **kw):
        try:
            results[name] = http.post(url + "/v1/messages", json=request(), **kw)
        except httpx.HTTPError as e:
            results[name] = e

    first = threading.Thread(target=post, args=("first",))
    first.start()
    assert backend.running.wait(5)
    # A client that gives up while waiting leaves the queue (its timeout closes the connection).
    with pytest.raises(httpx.TimeoutException):
        httpx.post(url + "/v1/messages", json=request(), timeout=0.5)
    time.sleep(0.6)
    second = threading.Thread(target=post, args=("second",))
    second.start()
    time.sleep(0.5)
    r = http.post(url + "/v1/messages", json=request())
    assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error"
    assert r.headers["request-id"].startswith("req_")
    first.join(30)
    second.join(30)
    assert results["first"].status_code == 200 and results["second"].status_code == 200
    assert len(backend.prompts) == 2  # the client that left never ran


def test_prompt_too_long_and_max_tokens_cap(serve):
    backend = ScriptedBackend(["a ", "b ", "c "])
    url = serve(backend, n_ctx=64)
    r = http.post(url + "/v1/messages", json=request(messages=[{"role": "user", "content": "word " * 100}]))
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("prompt is too long: ")
    r = http.post(url + "/v1/messages", json=request(max_tokens=32000, tools=None))
    room = 64 - r.json()["usage"]["input_tokens"]
    assert r.status_code == 200 and r.headers["x-understudy-max-tokens"] == str(room)
    url = serve(ScriptedBackend(["a "]), max_new_tokens=2)
    assert http.post(url + "/v1/messages", json=request()).headers["x-understudy-max-tokens"] == "2"


def test_count_bounded_tokenizes_only_what_decides():
    from trainer.serve_tokens import count_bounded

    seen = []

    def count(text):
        seen.append(len(text))
        return len(text.split())

    text = "word " * 2_000_000  # 10 MB
    assert count_bounded(count, text, limit=4096) > 4096
    assert sum(seen) <= 2 * 32768
    seen.clear()
    assert count_bounded(count, "word " * 10_000, limit=None) >= 10_000  # count_tokens: chunk sums
    assert count_bounded(count, "word " * 100, limit=4096) == 100


def _words_and_specials(text: str) -> list[str]:
    """A stand-in tokenizer: special tokens split out first, then words and spaces."""
    import re

    from trainer.chat_template import SPECIAL_TOKENS

    pattern = "(" + "|".join(map(re.escape, SPECIAL_TOKENS)) + ")"
    out = []
    for part in re.split(pattern, text):
        out += [part] if part in SPECIAL_TOKENS else re.findall(r"\S+|\s+", part)
    return out


_STAND_IN_VOCAB: dict[str, int] = {}


def _stand_in_ids(text: str) -> list[int]:
    """_words_and_specials as token ids (a vocabulary that grows as it meets new pieces)."""
    return [_STAND_IN_VOCAB.setdefault(piece, len(_STAND_IN_VOCAB)) for piece in _words_and_specials(text)]


def test_prefix_tokenizer_tokenizes_only_the_new_turns():
    from trainer.serve_tokens import PrefixTokenizer

    seen = []

    def encode(text):
        seen.append(text)
        return _stand_in_ids(text)

    def count(text):
        return len(_words_and_specials(text))

    counter = PrefixTokenizer(encode)
    settings = ContextSettings()
    history = [{"role": "user", "content": "read a.py please"}]
    first = build_prompt(request(messages=history), settings)[0]
    assert counter(first) == count(first)
    assert counter.additive
    system_turn = PrefixTokenizer.turns(first)[1]
    # A new conversation: the system prompt and tools are not tokenized again.
    other = build_prompt(request(messages=[{"role": "user", "content": "list the tests"}]), settings)[0]
    seen.clear()
    assert counter(other) == len(_words_and_specials(other))
    assert seen and system_turn not in seen and all(len(t) < len(system_turn) for t in seen)
    # The next turn of the first conversation: only its new messages are tokenized.
    history += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "a.py"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "print('hi')"}]},
    ]
    second = build_prompt(request(messages=history), settings)[0]
    seen.clear()
    assert counter(second) == len(_words_and_specials(second))
    assert "read a.py please" not in "".join(seen) and "print('hi')" in "".join(seen)
    # Generation reads the ids of the prompt just counted: nothing is tokenized again.
    seen.clear()
    assert counter.ids(second) == _stand_in_ids(second) and not seen
    # Over a limit: a lower bound past it, found without counting the rest.
    long = build_prompt(request(messages=[{"role": "user", "content": "word " * 5000}]), settings)[0]
    assert counter(long, limit=1000) > 1000


def test_prefix_tokenizer_ids_are_the_whole_prompts_tokens_whatever_it_kept():
    """ids() is the prompt tokenized whole, whether its turns were kept, half evicted (a bound
    on the ids kept), or never counted; the counts stay exact as the cache turns over."""
    from trainer.serve_tokens import PrefixTokenizer

    settings = ContextSettings()
    prompts = [build_prompt(request(messages=[{"role": "user", "content": f"read mod{i}.py " + "and more words " * i}]), settings)[0]
               for i in range(30)]
    for bound in (1 << 20, 400, 0):  # everything kept, a few turns kept, nothing kept
        counter = PrefixTokenizer(_stand_in_ids, max_tokens=bound)
        for n, prompt in enumerate(prompts):
            whole = _stand_in_ids(prompt)
            if n % 3:  # a third are never counted before generation
                assert counter(prompt, limit=4096) == len(whole)
            assert counter.ids(prompt) == whole
            assert counter(prompt) == len(whole)
        assert counter._kept <= bound


def test_prompt_cache_renders_every_request_as_without_it():
    """serve keeps the compact tools and the rendered system turn between requests
    (trainer.serve.PromptCache): every prompt must come out byte for byte as rendered whole."""
    from trainer.serve import PromptCache

    history = [
        {"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"},
                                     {"type": "text", "text": "read a.py"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Reading."},
                                          {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "a.py"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "print('hi')"}]},
    ]
    bodies = [
        request(),
        request(tools=None),
        request(tools=[BASH_TOOL]),
        request(messages=history),
        request(messages=history + [{"role": "assistant", "content": "The file"}]),  # prefill
        request(system="Working directory: /srv/app\nYou are Claude Code."),
        request(system=[{"type": "text", "text": "You are Claude Code."}],
                messages=[{"role": "system", "content": "mid-conversation note"}] + history),
    ]
    for settings in (ContextSettings(), ContextSettings(context="full"), ContextSettings(tools=["Bash"]),
                     ContextSettings(dataset=DatasetConfig(system_prompt=""))):
        cache = PromptCache()
        for _ in range(2):  # the first fills the cache, the second reads it
            for body in bodies:
                assert build_prompt(body, settings, cache=cache) == build_prompt(body, settings)
        assert cache.splits


def test_prefix_tokenizer_tokenizes_whole_when_turns_do_not_add_up():
    """A tokenizer that adds a token to every text it is given (a SentencePiece prefix space,
    say) does not tokenize a prompt as its turns' tokens end to end: every prompt is counted
    whole, and its ids are left to the backend (None)."""
    from trainer.serve_tokens import PrefixTokenizer

    def encode(text):
        return [-1] + _stand_in_ids(text)

    counter = PrefixTokenizer(encode)
    prompt = build_prompt(request(), ContextSettings())[0]
    assert counter(prompt) == len(encode(prompt)) and counter(prompt) == len(encode(prompt))
    assert counter.additive is False
    assert counter.ids(prompt) is None


def test_generation_starts_before_the_stream_does(serve, monkeypatch):
    """The worker is started before the response: the prompt is processed while the status
    line and message_start go out, not after (time to first token)."""
    import trainer.serve as serve_module

    backend = ScriptedBackend(["Hello"])
    real_sse = serve_module._sse
    started = []

    def sse(event, data):
        if event == "message_start":
            started.append(backend.running.wait(5))
        return real_sse(event, data)

    monkeypatch.setattr(serve_module, "_sse", sse)
    url = serve(backend)
    r = http.post(url + "/v1/messages", json=request(stream=True, tools=None))
    assert r.status_code == 200 and started == [True]
    events = sse_events(r.text)
    assert [e for e, _ in events][:3] == ["message_start", "ping", "content_block_start"]
    assert events[3][1]["delta"]["text"] == "Hello"


def test_models_retrieve_request_ids_and_loopback(serve):
    from trainer.serve import is_loopback

    url = serve(ScriptedBackend(["ok"]))
    r = http.get(url + "/v1/models/understudy-student")
    assert r.status_code == 200 and r.json()["id"] == "understudy-student"
    ids = {http.get(url + path).headers["request-id"] for path in ("/health", "/v1/models", "/v1/nope")}
    assert len(ids) == 3 and all(i.startswith("req_") for i in ids)
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.3", "127.255.255.254", "::1", "[::1]", "localhost", "::ffff:127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.com", "128.0.0.1"))


def test_token_check_is_constant_time(monkeypatch, serve):
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    url = serve(ScriptedBackend(["ok"]), token="s3cret")
    assert http.post(url + "/v1/messages", json=request(), headers={"x-api-key": "s3cre"}).status_code == 401
    assert (b"s3cre", b"s3cret") in calls


def test_missing_serve_extra_says_how_to_install(monkeypatch):
    import builtins

    from click.testing import CliRunner

    from trainer.serve import command

    real_import = builtins.__import__

    def no_uvicorn(name, *args, **kwargs):
        if name == "uvicorn":
            raise ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    result = CliRunner().invoke(command, ["--model", "nowhere"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "understudy[serve]" in result.output and "install.sh --train" in result.output


@pytest.mark.parametrize("key, value, fragment", [("serve.max_new_tokens", -1, "serve.max_new_tokens"),
                                                  ("serve.max_queue", -2, "serve.max_queue"), ("serve.n_ctx", 8, "serve.n_ctx")])
def test_serve_limits_are_checked_at_start(key, value, fragment):
    from trainer.config import load_config

    with pytest.raises(ConfigError, match=fragment):
        ServerSettings.from_config(load_config(overrides=[(key, value)]))
    defaults = ServerSettings.from_config(load_config())
    assert defaults.max_new_tokens == 0 and defaults.max_queue == 16 and defaults.n_ctx == 4096


def test_huge_tool_result_is_cut_before_it_is_tokenized(monkeypatch):
    import trainer.chat_template as ct

    seen = []
    real = ct.count_tokens
    monkeypatch.setattr(ct, "count_tokens", lambda text, tokenizer=None: seen.append(len(text)) or real(text, tokenizer))
    big = "".join(f"line {i}\n" for i in range(600_000))  # ~6.6 MB
    body = request(messages=[
        {"role": "user", "content": "run it"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "x"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": big}]},
    ])
    settings = ContextSettings(dataset=DatasetConfig(max_tool_result_tokens=64))
    content = to_chat(body, settings)[0][-1]["content"]
    assert max(seen) <= 2 * 64 * 64  # never the whole result
    reference, _ = ct.trim_tool_result(big, 64)  # what the dataset builder would show
    head, tail = reference.split("\n[... trimmed ")[0], reference.split(" tokens ...]\n")[1]
    assert content.startswith(head + "\n[... trimmed ") and content.endswith(" tokens ...]\n" + tail)


def test_queue_hands_the_turn_over_without_a_spurious_529():
    import asyncio

    from trainer.serve_queue import GenerationQueue
    from trainer.serve_validate import APIError

    async def scenario():
        q = GenerationQueue(max_waiting=1)
        a = await q.acquire()
        b_task = asyncio.ensure_future(q.acquire())
        await asyncio.sleep(0)
        with pytest.raises(APIError) as err:  # one running, one waiting: full
            await q.acquire()
        assert err.value.status == 529
        a.release()  # the turn passes to b at once, before b's task even runs
        c_task = asyncio.ensure_future(q.acquire())  # so c may wait: no 529 at the bound
        b = await b_task
        assert q.waiting == 1 and not c_task.done()
        b.release()
        c = await c_task
        c.release()
        c.release()  # idempotent
        # A waiter whose client left gives up its place.
        held = await q.acquire()
        gone = await q.acquire(disconnected=lambda: asyncio.sleep(0, result=True), poll=0.01)
        assert gone is None and q.waiting == 0
        held.release()
        assert (await q.acquire()) is not None

    asyncio.run(scenario())


def test_serve_maps_requests_with_the_dataset_settings_the_student_was_trained_with(tmp_path):
    """A student trained with non-default dataset settings is served with them (read from the run
    that trained it), unless this command sets them itself."""
    from trainer.config import load_config
    from trainer.serve import adopt_trained_context

    run = tmp_path / "run"
    trained = load_config(None, [("dataset.working_directory", False), ("dataset.tool_schema", "required"),
                                 ("dataset.system_prompt", "Be terse.")])
    trained.save(run / "sft")
    (run / "sft" / "final").mkdir(parents=True)

    lines: list[str] = []
    cfg = load_config(None, [("dataset.tool_schema", "full")])  # set by this command: it wins
    taken = adopt_trained_context(cfg, str(run / "sft" / "final"), lines.append)
    assert sorted(taken) == ["system_prompt", "working_directory"]
    assert (cfg.dataset.working_directory, cfg.dataset.system_prompt, cfg.dataset.tool_schema) == (False, "Be terse.", "full")
    assert cfg.source("dataset.working_directory") == "trained"
    assert len(lines) == 1 and "dataset.working_directory" in lines[0]
    messages, _, _ = to_chat(claude_code_like_request(), ContextSettings.from_config(cfg))
    assert messages[0] == {"role": "system", "content": "Be terse."}

    # No run folder next to the model (a bare checkpoint): nothing changes. An unreadable one: one line.
    assert adopt_trained_context(load_config(None), str(tmp_path / "elsewhere" / "model"), lines.append) == []
    (run / "sft" / "understudy_config.json").write_text("{not json")
    assert adopt_trained_context(load_config(None), str(run / "sft" / "final"), lines.append) == []
    assert "unreadable" in lines[-1]

    # A run recorded before dataset.working_directory_turn existed trained its student with the
    # line in the system turn: it is served that way, not with today's default.
    saved = trained.save(run / "sft")
    recorded = json.loads(saved.read_text())
    del recorded["config"]["dataset"]["working_directory_turn"]
    saved.write_text(json.dumps(recorded))
    cfg = load_config(None)
    assert "working_directory_turn" in adopt_trained_context(cfg, str(run / "sft" / "final"), lines.append)
    assert cfg.dataset.working_directory_turn == "system"


# ---------------------------------------------------------------------------------------------
# A reply cut short inside a call (max_tokens, a stop sequence)

CUT_CASES = [
    # (pieces generated before the limit, content the API answers with)
    (TOOL_OUTPUT[:3], [{"type": "text", "text": "I'll read the file."}]),  # only the tag: no call yet
    (["I'll read the file.\n<tool"], [{"type": "text", "text": "I'll read the file."}]),  # half the tag
    (TOOL_OUTPUT[:4], [{"type": "text", "text": "I'll read the file."}, {"type": "tool_use", "name": "Read", "input": {}}]),
    (TOOL_OUTPUT[:5], [{"type": "text", "text": "I'll read the file."},
                       {"type": "tool_use", "name": "Read", "input": {"file_path": "a.py"}}]),  # JSON whole, tag unclosed
    (['<tool_call>{"name": "Read", "arguments": {"file_path": "a.py"}}</tool_call>\n', '<tool_call>{"name": "Bash", "argu'],
     [{"type": "tool_use", "name": "Read", "input": {"file_path": "a.py"}}, {"type": "tool_use", "name": "Bash", "input": {}}]),
    (['<tool_call>{"name": "Nope", "argu'], []),  # a name the request did not offer is no call
]


def _content(blocks: list[dict]) -> list[dict]:
    return [{k: v for k, v in b.items() if k != "id"} for b in blocks]


def _streamed_content(events: list[tuple[str, dict]]) -> list[dict]:
    blocks: list[dict] = []
    for event, data in events:
        if event == "content_block_start":
            blocks.append({k: v for k, v in data["content_block"].items() if k != "id"})
        elif event == "content_block_delta" and data["delta"]["type"] == "text_delta":
            blocks[-1]["text"] += data["delta"]["text"]
        elif event == "content_block_delta":
            blocks[-1]["input"] = json.loads(data["delta"]["partial_json"])
    return blocks


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("pieces, content", CUT_CASES, ids=["tag", "half-tag", "name", "unclosed", "second-call", "unknown"])
def test_a_reply_cut_inside_a_call_says_max_tokens(serve, pieces, content, stream):
    """The API answers a reply that hit max_tokens with stop_reason max_tokens, even when it holds
    a call, and the call it was writing as a tool_use block with the input so far: a client must
    not take it for a finished tool_use turn and run a call with its input missing, nor see the
    student's call markup as text."""
    url = serve(ScriptedBackend(pieces + ["</tool_call>", "more"]))
    r = http.post(url + "/v1/messages", json=request(max_tokens=len(pieces), stream=stream))
    assert r.status_code == 200
    if stream:
        events = sse_events(r.text)
        stop = [d for e, d in events if e == "message_delta"][0]["delta"]["stop_reason"]
        got = _streamed_content(events)
    else:
        stop, got = r.json()["stop_reason"], _content(r.json()["content"])
    assert stop == "max_tokens"
    assert got == content
    assert "<tool" not in json.dumps(got)


def test_a_stop_sequence_inside_a_call_ends_it_like_max_tokens(serve):
    url = serve(ScriptedBackend(TOOL_OUTPUT))
    msg = http.post(url + "/v1/messages", json=request(stop_sequences=["a.py"])).json()
    assert msg["stop_reason"] == "stop_sequence" and msg["stop_sequence"] == "a.py"
    assert _content(msg["content"]) == [{"type": "text", "text": "I'll read the file."},
                                        {"type": "tool_use", "name": "Read", "input": {}}]


def test_forced_call_cut_by_max_tokens_says_max_tokens(serve):
    url = serve(ScriptedBackend(['<tool_call>{"name": "Read", ', '"arguments": {"file_path": "a.py"}}', "</tool_call>"]))
    msg = http.post(url + "/v1/messages", json=request(max_tokens=1, tool_choice={"type": "any"})).json()
    assert msg["stop_reason"] == "max_tokens"
    assert _content(msg["content"]) == [{"type": "tool_use", "name": "Read", "input": {}}]
    msg = http.post(url + "/v1/messages", json=request(tool_choice={"type": "any"})).json()
    assert msg["stop_reason"] == "tool_use"
    assert _content(msg["content"]) == [{"type": "tool_use", "name": "Read", "input": {"file_path": "a.py"}}]


@pytest.mark.parametrize("written", ["", "<tool", "<tool_call>", '<tool_call>{"na'])
def test_a_forced_call_cut_before_its_name_is_the_named_tools(written):
    """tool_choice names one tool: however little of the call was written, it is that call."""
    from trainer.serve_constrain import Constraint

    asm = OutputAssembler(["Read", "Bash"], [], Constraint("tool", ["Bash"], parallel=False))
    asm.feed(written)
    text, blocks = asm.finish(cut_off=True)
    assert text == "" and [(b["name"], b["input"]) for b in blocks] == [("Bash", {})]
    # With `any` the name is not known until written: no block yet.
    asm = OutputAssembler(["Read", "Bash"], [], Constraint("any", ["Read", "Bash"]))
    asm.feed(written)
    assert asm.finish(cut_off=True) == ("", [])


def test_a_mid_turn_message_sent_as_a_system_message_is_the_user_turn_training_showed():
    """`claude -p` delivers a message typed mid-turn as a system message inside `messages` (the
    shape recorded from Claude Code 2.1.328 through tests/scripted_api.py), after the tool results
    it came with. The dataset shows it to the student as a user turn there (dataset.py): compact
    serving must too, not drop it with Claude Code's other system messages; passthrough keeps it
    there as well, not in the system prompt."""
    from capture_daemon.schema import MidTurnMessage
    from tests.test_dataset import make_trace
    from trainer.chat_template import mid_turn_text
    from trainer.dataset import trace_to_example

    config = DatasetConfig(working_directory=False)
    request = {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "<system-reminder>\nAttribution ...\n</system-reminder>"},
                                     {"type": "text", "text": "Look at a.py and b.py"}]},
        {"role": "system", "content": "# Environment\nYou have been invoked in the following environment: \n"},
        {"role": "assistant", "content": [{"type": "text", "text": "Reading both files."},
                                          {"type": "tool_use", "id": "c1", "name": "Read", "input": {"file_path": "a.py"}},
                                          {"type": "tool_use", "id": "c2", "name": "Read", "input": {"file_path": "b.py", "limit": 5}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "A", "is_error": False},
                                     {"type": "tool_result", "tool_use_id": "c2", "content": "B", "is_error": False}]},
        {"role": "system", "content": mid_turn_text("skip b.py")},
    ]}
    one = trace_to_example(make_trace(mid_turn_messages=[MidTurnMessage(text="skip b.py", position=2)]), config)
    messages, _, _ = to_chat(request, ContextSettings(dataset=config))
    assert messages == one["messages"][:6]
    assert messages[-1] == {"role": "user", "content": mid_turn_text("skip b.py")}
    # Two that arrived with the same results: one user turn, as the dataset joins them.
    two = trace_to_example(make_trace(mid_turn_messages=[MidTurnMessage(text="skip b.py", position=2),
                                                         MidTurnMessage(text="and be quick", position=2)]), config)
    request["messages"].append({"role": "system", "content": [{"type": "text", "text": mid_turn_text("and be quick")}]})
    messages, _, _ = to_chat(request, ContextSettings(dataset=config))
    assert messages == two["messages"][:6]
    passthrough, _, _ = to_chat(dict(request, system="You are Claude Code."), ContextSettings(context="passthrough", dataset=config))
    assert passthrough[-1] == two["messages"][5]
    assert passthrough[0]["role"] == "system" and "# Environment" in passthrough[0]["content"]
    assert "skip b.py" not in passthrough[0]["content"]
