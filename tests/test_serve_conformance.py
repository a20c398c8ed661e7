"""`trainer serve` as a Messages API server, driven by the official `anthropic` SDK and raw HTTP,
on the real student for both backends: transformers (the HF checkpoint) and llama.cpp (its GGUF).

The student is tests/student.py's tiny model (built once per test session, shared with the export
and e2e tests), so what it says is known: for TARGET_PROMPT, greedy decoding gives the narration
and a Bash `ls` call; after the listing, the final answer. Every check of issue 13 is here:
the happy paths (create, stream, count_tokens, models.list/retrieve, request ids), tool_choice
(none / any / tool / disable_parallel_tool_use, checked on the raw generation too), validation
(400 invalid_request_error naming the field, never retried by the SDK, never an SSE error),
limits (prompt too long without tokenizing it whole, max_tokens up to the context), usage with
stop sequences, backpressure (529 overloaded_error), cancellation during prefill, and an
untrained base served as is. Claude Code itself on the student is tests/test_serve_e2e.py.
"""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import pytest

anthropic = pytest.importorskip("anthropic")

from tests.student import FINAL_ANSWER, LISTING, NARRATION, STUDENT_TOOLS, TARGET_PROMPT, shared_gguf, shared_student  # noqa: E402
from trainer.serve import (  # noqa: E402
    BackgroundServer,
    ContextSettings,
    GenParams,
    LlamaCppBackend,
    ServerSettings,
    TransformersBackend,
    build_prompt,
    create_app,
)
from trainer.serve_constrain import Constraint, ToolCallValidator  # noqa: E402

N_CTX = 1024
MODEL = "claude-sonnet-4-5"


@pytest.fixture(scope="module", params=["transformers", "llamacpp"])
def student(request, tmp_path_factory):
    """(backend, tools the student was taught with), one backend per parameter, loaded once."""
    model_dir, tools = shared_student(tmp_path_factory)
    if request.param == "llamacpp":
        pytest.importorskip("xllamacpp")
        backend = LlamaCppBackend(str(shared_gguf(tmp_path_factory)), n_ctx=N_CTX)
    else:
        backend = TransformersBackend(str(model_dir), n_ctx=N_CTX)
    return backend, tools


def settings(**overrides) -> ServerSettings:
    # As tests/test_serve_e2e.py serves it: the student was taught with the Bash tool only.
    return ServerSettings(context=ContextSettings(tools=list(STUDENT_TOOLS)), **overrides)


@pytest.fixture(scope="module")
def server(student):
    backend, _ = student
    with BackgroundServer(create_app(backend, settings())) as srv:
        yield srv


@pytest.fixture
def client(server):
    # max_retries=0: a 400 must be final, and a retried 5xx would hide itself.
    with anthropic.Anthropic(base_url=server.base_url, api_key="test", max_retries=0, timeout=120) as c:
        yield c


@pytest.fixture
def tools(student):
    return student[1]


def first_turn(**extra) -> dict:
    return {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": TARGET_PROMPT}], **extra}


def second_turn(tool_use_id: str = "toolu_1") -> list[dict]:
    return [
        {"role": "user", "content": TARGET_PROMPT},
        {"role": "assistant", "content": [
            {"type": "text", "text": NARRATION},
            {"type": "tool_use", "id": tool_use_id, "name": "Bash", "input": {"command": "ls"}},
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use_id, "content": LISTING}]},
    ]


def plain(content) -> list[tuple]:
    """Blocks without their random ids, for comparing two answers."""
    out = []
    for b in content:
        b = b if isinstance(b, dict) else b.model_dump()
        out.append((b["type"], b.get("text"), b.get("name"), json.dumps(b.get("input"), sort_keys=True)))
    return out


# ---------------------------------------------------------------------------------------------
# Happy paths


def test_create_returns_the_students_tool_call(client, tools):
    msg = client.messages.create(**first_turn(tools=tools))
    assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL
    assert msg.stop_reason == "tool_use" and msg.stop_sequence is None
    assert msg.content[0].type == "text" and msg.content[0].text == NARRATION
    call = msg.content[1]
    assert call.type == "tool_use" and call.name == "Bash" and call.input == {"command": "ls"} and call.id.startswith("toolu_")
    assert msg.usage.input_tokens > 0 and 0 < msg.usage.output_tokens <= 64
    assert msg._request_id and msg._request_id.startswith("req_")

    answer = client.messages.create(model=MODEL, max_tokens=64, tools=tools, messages=second_turn())
    assert answer.stop_reason == "end_turn" and plain(answer.content) == [("text", FINAL_ANSWER, None, "null")]


def test_system_messages_mid_conversation_are_accepted(client, tools):
    """The SDK's SystemMessageParam: Claude Code 2.1.x sends its environment as a system message
    after the first prompt (and retried without it on a 400, at the cost of a request). Accepted
    anywhere, a call and its result included; the compact context keeps only a working directory
    named in one, so with none named the student answers as it does without them."""
    environment = {"role": "system", "content": [{"type": "text", "text": "# Environment\n - Platform: linux"}]}
    [prompt, call, result] = second_turn()
    msg = client.messages.create(model=MODEL, max_tokens=64, tools=tools, messages=[prompt, environment])
    assert msg.stop_reason == "tool_use" and msg.content[1].input == {"command": "ls"}
    answer = client.messages.create(model=MODEL, max_tokens=64, tools=tools,
                                    messages=[prompt, environment, call, {"role": "system", "content": "note"}, result])
    assert answer.stop_reason == "end_turn" and plain(answer.content) == [("text", FINAL_ANSWER, None, "null")]


def test_stream_matches_the_final_message(client, tools):
    reference = client.messages.create(**first_turn(tools=tools))
    with client.messages.stream(**first_turn(tools=tools)) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert plain(final.content) == plain(reference.content)
    assert final.stop_reason == reference.stop_reason and final.usage.output_tokens == reference.usage.output_tokens


def test_raw_sse_framing(server, tools):
    body = first_turn(tools=tools, stream=True)
    with httpx.stream("POST", server.base_url + "/v1/messages", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["request-id"].startswith("req_")
        raw = r.read().decode()
    events = []
    for frame in raw.strip().split("\n\n"):
        event, data = frame.split("\n")
        assert event.startswith("event: ") and data.startswith("data: ")
        assert json.loads(data[6:])["type"] == event[7:]
        events.append(event[7:])
    assert events[:2] == ["message_start", "ping"] and events[-2:] == ["message_delta", "message_stop"]
    assert "error" not in events


def test_count_tokens_and_models(client, tools):
    count = client.messages.count_tokens(model=MODEL, tools=tools, messages=[{"role": "user", "content": TARGET_PROMPT}])
    msg = client.messages.create(**first_turn(tools=tools))
    assert count.input_tokens == msg.usage.input_tokens
    assert [m.id for m in client.models.list().data] == ["understudy-student"]
    assert client.models.retrieve("understudy-student").id == "understudy-student"
    assert client.models.retrieve(MODEL).id == MODEL  # any name a client uses is the student


# ---------------------------------------------------------------------------------------------
# tool_choice


def test_tool_choice_none_forbids_calls(client, tools):
    msg = client.messages.create(**first_turn(tools=tools, tool_choice={"type": "none"}))
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in msg.content] == ["text"] and "<tool_call>" not in msg.content[0].text


@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "Bash"}, {"type": "any", "disable_parallel_tool_use": True}])
def test_forced_tool_choice_answers_with_a_call(client, tools, choice):
    msg = client.messages.create(**first_turn(tools=tools, tool_choice=choice))
    # The API writes no text before a forced call; a call cut off by max_tokens is still the call.
    assert msg.stop_reason in ("tool_use", "max_tokens")
    assert msg.content and all(b.type == "tool_use" and b.name == "Bash" for b in msg.content)
    if choice.get("disable_parallel_tool_use"):
        assert len(msg.content) == 1


def test_forced_tool_by_name_is_a_tool_the_student_was_not_shown(client, tools):
    # serve.tools shows the student Bash only; the client's explicit choice still wins.
    name = next(t["name"] for t in tools if t["name"] != "Bash")
    msg = client.messages.create(**first_turn(tools=tools, tool_choice={"type": "tool", "name": name}))
    assert [b.name for b in msg.content] == [name]


def test_constraints_hold_on_the_raw_generation(student):
    """Below the API: what the backend writes under each constraint."""
    backend, tools = student
    body = first_turn(tools=tools)
    prompt, _ = build_prompt(body, ContextSettings(tools=list(STUDENT_TOOLS)))
    outputs = {}
    for constraint in (Constraint(), Constraint("none"), Constraint("any", ["Bash", "Read"]), Constraint("tool", ["Bash"], parallel=False)):
        pieces: list[str] = []
        backend.generate(prompt, GenParams(48, constraint=constraint), threading.Event(), pieces.append)
        outputs[constraint.kind] = "".join(pieces)
    assert "<tool_call>" in outputs["auto"] and "<tool_call>" not in outputs["none"]
    for kind, names in (("any", ["Bash", "Read"]), ("tool", ["Bash"])):
        assert outputs[kind].startswith('<tool_call>{"name": "')
        assert ToolCallValidator(names).feed(outputs[kind]), outputs[kind]


# ---------------------------------------------------------------------------------------------
# Validation: 400 invalid_request_error naming the field, before anything is generated

BAD_REQUESTS = [
    ({"temperature": 5}, "temperature"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 7}, "top_p"),
    ({"top_k": -3}, "top_k"),
    ({"max_tokens": 10**9}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "tool", "content": "be terse"}, {"role": "user", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": ""}]}, "messages.1"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}]}, "messages.1.content.0.type"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "out"}]}]}, "messages.0.content.0.tool_use_id"),
    ({"messages": [{"role": "user", "content": [{"type": "hologram", "text": "x"}]}]}, "messages.0.content.0.type"),
    ({"messages": [{"role": "user", "content": ""}]}, "messages.0"),
    ({"messages": [{"role": "user", "content": []}]}, "messages.0"),
    ({"messages": second_turn()[:2] + [{"role": "user", "content": "and?"}]}, "messages.2"),
    ({"tools": [{"name": "Bash", "description": "run"}]}, "tools.0.input_schema"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"tool_choice": {"type": "tool", "name": "Nope"}}, "tool_choice.name"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
    ({"tool_choice": {"type": "any"}, "tools": None}, "tool_choice"),
    ({"stop_sequences": ["  "]}, "stop_sequences"),
    ({"top_k": 2**64}, "top_k"),
    ({"tools": [{"name": "Bash", "input_schema": {"type": "object", "properties": "command"}}]}, "tools.0.input_schema.properties"),
    ({"tools": [{"name": "Bash", "input_schema": {"type": "object", "properties": [1]}}]}, "tools.0.input_schema.properties"),
    ({"tools": [{"name": "Bash", "input_schema": {"type": "object", "required": 5}}]}, "tools.0.input_schema.required"),
    ({"tools": [{"name": "Bash", "input_schema": {"type": "object", "required": [["command"]]}}]}, "tools.0.input_schema.required"),
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("change, field", BAD_REQUESTS, ids=[f for _, f in BAD_REQUESTS])
def test_bad_requests_are_400_naming_the_field(server, tools, change, field, stream):
    # The SDK's own arguments for the valid part; the change goes in as raw JSON (extra_body
    # overrides), since the SDK's signature no longer takes every field the API accepts.
    with anthropic.Anthropic(base_url=server.base_url, api_key="test", max_retries=2) as c:
        with pytest.raises(anthropic.BadRequestError) as err:
            # With retries allowed: a 400 is final, so the SDK must not retry it (a 5xx would be).
            c.messages.create(**first_turn(tools=tools), stream=stream, extra_body=change)
    assert err.value.status_code == 400
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert err.value.body["error"]["message"].startswith(field), err.value.body
    assert err.value.response.headers["request-id"].startswith("req_")


@pytest.mark.parametrize("path, stream", [("/v1/messages", False), ("/v1/messages", True), ("/v1/messages/count_tokens", False)])
def test_a_lone_surrogate_is_a_400(server, path, stream):
    """Half an emoji, as JavaScript's JSON.stringify writes a string cut inside one: valid JSON
    syntax, not valid Unicode. The API answers 400; it must never reach the tokenizer (a 500)."""
    raw = ('{"model": "%s", "max_tokens": 8, "stream": %s, "messages": [{"role": "user", "content": "cut \\ud83d here"}]}'
           % (MODEL, "true" if stream else "false"))
    r = httpx.post(server.base_url + path, content=raw, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error" and "surrogate" in r.json()["error"]["message"]
    # A whole emoji written as its surrogate pair, and an escaped backslash before "ud83d", are fine.
    for text in ("\\ud83d\\ude00", "\\\\ud83d"):
        ok = raw.replace("cut \\ud83d here", text)
        assert httpx.post(server.base_url + path, content=ok, headers={"content-type": "application/json"},
                          timeout=60).status_code == 200, ok


def test_sampling_at_the_edges_of_its_ranges(client, tools):
    """A subnormal temperature is greedy (dividing logits by it overflowed), and the largest top_k
    the server takes is served, on both backends."""
    greedy = client.messages.create(**first_turn(tools=tools))
    # As extra_body: this SDK's create() no longer takes the sampling fields the API accepts.
    tiny = client.messages.create(**first_turn(tools=tools), extra_body={"temperature": 5e-324})
    assert plain(tiny.content) == plain(greedy.content)
    wide = client.messages.create(**first_turn(tools=tools), extra_body={"temperature": 1.0, "top_k": 2**31 - 1})
    assert wide.stop_reason in ("end_turn", "tool_use", "max_tokens")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_forced_call_cut_by_max_tokens_says_so(client, tools, stream):
    """The API's stop_reason for a reply that ran out of tokens is max_tokens, even inside a
    forced call (the client must not run the call with its input missing), and the block is the
    call it was writing: the named tool from the first token on, any tool once its name is out."""
    def ask(**args):
        if stream:
            with client.messages.stream(**first_turn(tools=tools, **args)) as s:
                return s.get_final_message()
        return client.messages.create(**first_turn(tools=tools, **args))

    for n in (1, 2, 3):
        msg = ask(tool_choice={"type": "tool", "name": "Bash"}, max_tokens=n)
        assert msg.stop_reason == "max_tokens"
        assert [(b.type, b.name, b.input) for b in msg.content] == [("tool_use", "Bash", {})]
    # Forced, this student writes its command on and on: every cut is inside the call.
    for n in (4, 8, 16, 64):
        msg = ask(tool_choice={"type": "any"}, max_tokens=n)
        assert msg.stop_reason == "max_tokens"
        assert [(b.type, b.name, b.input) for b in msg.content] in ([], [("tool_use", "Bash", {})])
    assert msg.content, "the name is out by 64 tokens"


def test_fuzzed_requests_never_500(server):
    import random

    rng = random.Random(13)
    values = [None, 0, -1, 1.5, 10**12, "", "x", [], {}, [1], {"type": "text"}, True]
    fields = ["model", "max_tokens", "messages", "system", "tools", "tool_choice", "temperature", "top_p", "top_k",
              "stop_sequences", "stream", "metadata"]
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        for _ in range(60):
            body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
            for key in rng.sample(fields, 2):
                body[key] = rng.choice(values)
            r = http.post("/v1/messages", json=body)
            assert r.status_code < 500, (body, r.text)
            if r.status_code == 400:
                assert r.json()["error"]["type"] == "invalid_request_error"


# ---------------------------------------------------------------------------------------------
# Limits


def test_prompt_longer_than_the_context_is_a_400(client):
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "word " * 5000}])
    message = err.value.body["error"]["message"]
    assert message.startswith("prompt is too long: ") and message.endswith(f"tokens > {N_CTX - 1} maximum")


def test_huge_prompt_is_refused_without_tokenizing_it_whole(server, student, monkeypatch):
    backend, _ = student
    seen = []
    real = backend._count
    monkeypatch.setattr(backend, "_count", lambda text: seen.append(len(text)) or real(text))
    body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "lorem ipsum " * (10 * 2**20 // 12)}]}
    t0 = time.monotonic()
    r = httpx.post(server.base_url + "/v1/messages", json=body, timeout=120)
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("prompt is too long")
    assert sum(seen) < 200_000, f"tokenized {sum(seen)} characters of a 10 MiB prompt"
    assert time.monotonic() - t0 < 30


def test_counting_matches_the_tokenizer(student):
    """Prompts are counted through the Rust tokenizer directly (trainer.serve_tokens.token_encoder),
    exactly as the transformers call counts them."""
    backend, _ = student
    tokenizer = backend.tokenizer if isinstance(backend, TransformersBackend) else backend._tokenizer
    texts = ["", "plain words", "<|start_header_id|>user<|end_header_id|>\n\nÜnïcödé 🙂\t tabs<|eot_id|>",
             '<tool_call>{"name": "Bash", "arguments": {"command": "ls -la"}}</tool_call>',
             build_prompt({"messages": [{"role": "user", "content": "list the files"}]}, ContextSettings())[0]]
    for text in texts:
        assert backend._count(text) == len(tokenizer(text, add_special_tokens=False)["input_ids"]), text


def _prompt_texts(tools) -> list[str]:
    context = ContextSettings(tools=list(STUDENT_TOOLS))
    bodies = [first_turn(tools=tools), {"tools": tools, "messages": second_turn()},
              {"messages": [{"role": "user", "content": "Ünïcödé 🙂\t tabs  and <tool_call> in text"}]}]
    return [LlamaCppBackend._prompt(build_prompt(body, context)[0]) for body in bodies]


def _greedy_text(backend, prompt) -> str:
    pieces = []
    backend._complete(prompt, GenParams(max_new_tokens=24), threading.Event(), pieces.append)
    return "".join(pieces)


def test_llamacpp_is_given_its_own_tokens(student, tmp_path, tmp_path_factory):
    """The llama.cpp backend hands llama.cpp the prompt as the token ids counting already made
    (llama.cpp tokenizing the text cost ~1.4 ms of a ~10 ms time to first token): they must be
    exactly llama.cpp's own tokens for the text, BOS included, and generate the same text. Also
    for a GGUF with no tokenizer beside it (ids from llama.cpp's /tokenize)."""
    backend, tools = student
    if not isinstance(backend, LlamaCppBackend):
        pytest.skip("the llama.cpp backend's prompt")
    alone = tmp_path / "alone.gguf"
    shutil.copy(shared_gguf(tmp_path_factory), alone)
    for b in (backend, LlamaCppBackend(str(alone), n_ctx=N_CTX)):
        assert b._lead is not None and len(b._lead) == 1
        for text in _prompt_texts(tools):
            b.count(text, N_CTX)
            ids = b._prompt_tokens(text)
            assert ids == b._llama_tokenize(text, add_special=True)
            assert _greedy_text(b, ids) == _greedy_text(b, text)
    assert backend._tokenizer is not None and b._tokenizer is None


def test_max_tokens_up_to_what_the_context_leaves(client, tools):
    short = client.messages.with_raw_response.create(**dict(first_turn(tools=tools), max_tokens=5))
    msg = short.parse()
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 5
    assert short.headers["x-understudy-max-tokens"] == "5"
    # Claude Code asks for 32000 output tokens: what the context leaves is used, and said.
    big = client.messages.with_raw_response.create(**dict(first_turn(tools=tools), max_tokens=32000))
    assert int(big.headers["x-understudy-max-tokens"]) == N_CTX - big.parse().usage.input_tokens


def test_usage_with_a_stop_sequence_is_exact(client, tools):
    msg = client.messages.create(**first_turn(tools=tools, stop_sequences=["files"]))
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "files"
    assert plain(msg.content) == [("text", "I'll list the", None, "null")]
    # The same generation cut by max_tokens: the first length whose text reaches the stop.
    for n in range(1, 12):
        cut = client.messages.create(**first_turn(tools=tools, max_tokens=n, tool_choice={"type": "none"}))
        if "files" in "".join(b.text for b in cut.content if b.type == "text"):
            break
    assert msg.usage.output_tokens == n


# ---------------------------------------------------------------------------------------------
# Backpressure and cancellation


class Gated:
    """The real backend behind a gate: generate() waits until the test opens it."""

    def __init__(self, backend):
        self.backend = backend
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)
        self.results = []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def generate(self, prompt, params, cancel, emit):
        self.started.release()
        self.gate.wait(60)
        result = self.backend.generate(prompt, params, cancel, emit)
        self.results.append(result)
        return result


def test_overload_is_a_529_past_the_queue(student, tools):
    gated = Gated(student[0])
    with BackgroundServer(create_app(gated, settings(max_queue=1))) as srv:
        c = anthropic.Anthropic(base_url=srv.base_url, api_key="test", max_retries=0, timeout=120)
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(c.messages.create(**first_turn(tools=tools)))) for _ in range(2)]
        threads[0].start()
        assert gated.started.acquire(timeout=30)  # the first is generating
        threads[1].start()
        deadline = time.monotonic() + 30
        while _queue_of(srv).waiting < 1 and time.monotonic() < deadline:  # the second is waiting
            time.sleep(0.05)
        with pytest.raises(anthropic.APIStatusError) as err:
            c.messages.create(**first_turn(tools=tools))
        assert err.value.status_code == 529 and err.value.body["error"]["type"] == "overloaded_error"
        gated.gate.set()
        for t in threads:
            t.join(60)
        assert [a.stop_reason for a in answers] == ["tool_use", "tool_use"]


def _queue_of(srv):
    return srv.server.config.app.state.queue


def test_cancellation_during_prefill(student, monkeypatch):
    """A request cancelled while its prompt is processed stops within one chunk of it."""
    import trainer.serve_backends as sb

    backend, tools = student
    monkeypatch.setattr(sb, "PREFILL_CHUNK_TOKENS", 32)
    body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "word " * 600}]}
    prompt, _ = build_prompt(body, ContextSettings())
    cancel = threading.Event()
    chunks = []
    if isinstance(backend, TransformersBackend):
        hook = backend.model.register_forward_pre_hook(lambda module, args: chunks.append(1) or cancel.set())
        try:
            result = backend.generate(prompt, GenParams(8), cancel, lambda piece: None)
        finally:
            hook.remove()
    else:
        real = backend.server.handle_completions

        class Spy:
            def handle_completions(self, request, *rest):
                chunks.append(request)
                cancel.set()
                return real(request, *rest)

        monkeypatch.setattr(backend, "server", Spy())
        result = backend.generate(prompt, GenParams(8), cancel, lambda piece: None)
        monkeypatch.undo()
    assert result.finish == "cancelled" and result.output_tokens == 0
    assert len(chunks) == 1  # one chunk of the prompt, then it stopped


def test_llamacpp_cancels_between_prompt_batches(student, monkeypatch):
    """llama.cpp streams a progress chunk as prompt processing starts and after each batch of
    PREFILL_CHUNK_TOKENS: a request cancelled after the first batch stops there, in one call,
    whatever the prompt's length (no prefix round trips)."""
    import trainer.serve_backends as sb

    backend, _ = student
    if not isinstance(backend, LlamaCppBackend):
        pytest.skip("llama.cpp's batches")
    words = 40
    while backend.count("word " * words) < sb.PREFILL_CHUNK_TOKENS + 128:
        words += 40
    # A text no earlier request had, so llama.cpp's prompt cache holds the system turn at most.
    text = f"{time.time_ns()} " + "word " * words
    body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": text}]}
    prompt, _ = build_prompt(body, ContextSettings())
    total = backend.count(prompt)
    assert sb.PREFILL_CHUNK_TOKENS < total < N_CTX
    cancel = threading.Event()
    calls, progress = [], []
    real = backend.server.handle_completions

    class Spy:
        def handle_completions(self, request, callback=None):
            calls.append(request)

            def spy(chunk):
                data = json.loads(chunk) if isinstance(chunk, str) else chunk
                if "prompt_progress" in data:
                    progress.append(data["prompt_progress"])
                    if len(progress) > 1:
                        cancel.set()  # after the first batch (the first chunk: what the cache held)
                return callback(chunk)

            return real(request, spy)

    monkeypatch.setattr(backend, "server", Spy())
    result = backend.generate(prompt, GenParams(8), cancel, lambda piece: None)
    monkeypatch.undo()
    assert result.finish == "cancelled" and result.output_tokens == 0
    assert len(calls) == 1
    assert len(progress) == 2
    assert progress[1]["processed"] - progress[0]["processed"] == sb.PREFILL_CHUNK_TOKENS
    assert progress[1]["processed"] < progress[1]["total"]  # stopped with the rest unprocessed


def test_llamacpp_asks_for_prompt_progress_only_when_the_prompt_spans_batches(student, monkeypatch):
    """Progress chunks exist to cancel between prompt batches; a prompt of one batch has no such
    point, and each chunk is a call into Python before the first token. Uncounted: asked for."""
    import trainer.serve_backends as sb

    backend, _ = student
    if not isinstance(backend, LlamaCppBackend):
        pytest.skip("llama.cpp's requests")
    asked = []
    real = backend.server.handle_completions

    class Spy:
        def handle_completions(self, request, *rest):
            asked.append(request["return_progress"])
            return real(request, *rest)

    monkeypatch.setattr(backend, "server", Spy())
    prompt, _ = build_prompt({"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
                             ContextSettings())
    for tokens in (sb.PREFILL_CHUNK_TOKENS, sb.PREFILL_CHUNK_TOKENS + 1, None):
        backend.generate(prompt, GenParams(2, prompt_tokens=tokens), threading.Event(), lambda piece: None)
    assert asked == [False, True, True]


def test_client_leaving_during_prefill_frees_the_student(student, tools, monkeypatch):
    """The F6 case: a client disconnects while its prompt is processed; the next is served at once."""
    import trainer.serve_backends as sb

    backend, _ = student
    monkeypatch.setattr(sb, "PREFILL_CHUNK_TOKENS", 8)
    long_body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "word " * 300}]}
    gated = Gated(backend)
    with BackgroundServer(create_app(gated, settings())) as srv:
        def leave():
            try:
                httpx.post(srv.base_url + "/v1/messages", json=long_body, timeout=0.5)
            except httpx.TimeoutException:
                pass  # gone

        leaving = threading.Thread(target=leave)
        leaving.start()
        assert gated.started.acquire(timeout=30)
        leaving.join()
        time.sleep(0.6)  # the server notices the disconnect (it polls every 0.25 s)
        gated.gate.set()
        t0 = time.monotonic()
        with anthropic.Anthropic(base_url=srv.base_url, api_key="test", max_retries=0) as c:
            msg = c.messages.create(**first_turn(tools=tools))
        assert msg.stop_reason == "tool_use"
        assert gated.results[0].finish == "cancelled" and gated.results[0].output_tokens == 0
        assert time.monotonic() - t0 < 20


# ---------------------------------------------------------------------------------------------
# Auth, request ids, an untrained base


def test_token_and_request_ids(student):
    with BackgroundServer(create_app(student[0], settings(token="s3cret"))) as srv:
        with anthropic.Anthropic(base_url=srv.base_url, api_key="wrong", max_retries=0) as c:
            with pytest.raises(anthropic.AuthenticationError) as err:
                c.models.list()
            assert err.value.response.headers["request-id"].startswith("req_")
        with anthropic.Anthropic(base_url=srv.base_url, api_key="s3cret", max_retries=0) as c:
            assert c.models.list().data
        r = httpx.get(srv.base_url + "/v1/nowhere", headers={"x-api-key": "s3cret"})
        assert r.status_code == 404 and r.headers["request-id"].startswith("req_")
        ids = {httpx.get(srv.base_url + "/health").headers["request-id"] for _ in range(3)}
        assert len(ids) == 3


def test_an_untrained_base_is_served(student, tmp_path, tools):
    """A base whose tokenizer lacks the template's tool-call tags (as Llama 3.2 does): serve adds
    them and resizes the embeddings instead of failing every request with an IndexError."""
    if not isinstance(student[0], TransformersBackend):
        pytest.skip("the GGUF export always carries the template's tokens")
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = student[0].tokenizer.name_or_path
    base = tmp_path / "base"
    shutil.copytree(model_dir, base)
    spec = json.loads((base / "tokenizer.json").read_text())
    tags = [t for t in spec["added_tokens"] if t["content"] in ("<tool_call>", "</tool_call>")]
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t not in tags]
    (base / "tokenizer.json").write_text(json.dumps(spec))
    config = json.loads((base / "tokenizer_config.json").read_text())
    decoder = config.get("added_tokens_decoder", {})
    config["added_tokens_decoder"] = {k: v for k, v in decoder.items() if v.get("content") not in ("<tool_call>", "</tool_call>")}
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.resize_token_embeddings(min(t["id"] for t in tags))  # as if the tags never existed
    model.save_pretrained(base)

    backend = TransformersBackend(str(base), n_ctx=N_CTX)
    assert backend.model.get_input_embeddings().weight.shape[0] == len(backend.tokenizer)
    with BackgroundServer(create_app(backend, settings())) as srv:
        with anthropic.Anthropic(base_url=srv.base_url, api_key="test", max_retries=0) as c:
            msg = c.messages.create(**first_turn(tools=tools, max_tokens=8))
    assert msg.type == "message" and msg.usage.output_tokens > 0


def test_a_sampled_forced_call_is_the_greedy_call_when_calls_stay_greedy(tmp_path_factory):
    """serve.greedy_tool_calls: at a temperature that scrambles what is sampled, a call the
    request forces (tool_choice tool: the whole turn is the call) comes out as the greedy one."""
    import torch

    model_dir, tools = shared_student(tmp_path_factory)
    backend = TransformersBackend(str(model_dir), n_ctx=N_CTX)
    prompt, _ = build_prompt(first_turn(tools=tools), ContextSettings(tools=list(STUDENT_TOOLS)))
    forced = Constraint("tool", ["Bash"], parallel=False)

    def write(**params) -> str:
        pieces: list[str] = []
        backend.generate(prompt, GenParams(48, constraint=forced, **params), threading.Event(), pieces.append)
        return "".join(pieces)

    greedy = write()
    torch.manual_seed(0)
    assert write(temperature=5.0, greedy_calls=True) == greedy
    torch.manual_seed(0)
    assert write(temperature=5.0) != greedy  # what the setting prevents


def test_llamacpp_keeps_a_sampled_turns_calls_greedy(student):
    """serve.greedy_tool_calls under llama.cpp: the words of a sampled turn are sampled, and every
    call in it is what greedy decoding writes after the text before it; a forced call is the
    greedy call whole. Without the setting, sampled calls come out otherwise."""
    backend, tools = student
    if not isinstance(backend, LlamaCppBackend):
        pytest.skip("llama.cpp's phases (the transformers backend: the test above)")
    prompt, _ = build_prompt(first_turn(tools=tools), ContextSettings(tools=list(STUDENT_TOOLS)))

    def write(prefix: str = "", **params) -> str:
        pieces: list[str] = []
        backend.generate(prompt + prefix, GenParams(64, **params), threading.Event(), pieces.append)
        return "".join(pieces)

    def greedy_call(before: str) -> str:
        """What greedy decoding writes after `before` (ending in <tool_call>), to its </tool_call>."""
        out = write(before)
        return out[: out.index("</tool_call>") + len("</tool_call>")] if "</tool_call>" in out else out

    def calls_off_greedy(text: str) -> tuple[int, int]:
        """(calls in text, how many of them are not the greedy continuation of the text before)."""
        starts = [i + len("<tool_call>") for i in range(len(text)) if text.startswith("<tool_call>", i)]
        off = 0
        for start in starts:
            rest = text[start:]
            call = rest[: rest.index("</tool_call>") + len("</tool_call>")] if "</tool_call>" in rest else rest
            off += call != greedy_call(text[:start])
        return len(starts), off

    greedy = write()
    # This student is confident: about one sampled turn in three at T=3 differs from the greedy
    # one, so draw until a few have (at most 48 draws) rather than a fixed few that may all agree.
    sampled: list[str] = []
    while len(sampled) < 48 and sum(s != greedy for s in sampled) < 3:
        sampled.append(write(temperature=3.0, greedy_calls=True))
    assert any(s != greedy for s in sampled), "the words around the calls are sampled"
    counted = [calls_off_greedy(s) for s in sampled]
    assert sum(n for n, _ in counted) > 0 and sum(off for _, off in counted) == 0, counted
    unguarded = [calls_off_greedy(write(temperature=3.0)) for _ in range(16)]
    assert sum(off for _, off in unguarded) > 0, unguarded  # what the setting prevents

    forced = Constraint("tool", ["Bash"], parallel=False)
    forced_greedy = write(constraint=forced)
    assert write(temperature=5.0, greedy_calls=True, constraint=forced) == forced_greedy
    assert any(write(temperature=5.0, constraint=forced) != forced_greedy for _ in range(16))


def test_llamacpp_phases_switch_on_a_tag_split_over_chunks():
    """A GGUF whose tokenizer does not keep `<tool_call>` whole streams it in pieces: the sampled
    phase still ends at the tag and the call is asked for greedy, continuing the text so far."""
    requests: list[dict] = []
    scripts = [["Listing ", "<tool", "_call>", " never sent"], ['{"name": "Bash"}</tool_', "call>"], ["Done."]]

    class FakeServer:
        def handle_completions(self, request, callback):
            requests.append(request)
            for piece in scripts[len(requests) - 1]:
                if callback({"choices": [{"text": piece, "finish_reason": None}]}):
                    return None
            callback({"choices": [{"text": "", "finish_reason": "stop"}]})
            return None

    backend = object.__new__(LlamaCppBackend)
    backend.server, backend.lock = FakeServer(), threading.Lock()
    backend._lead = None  # no tokenizer behind the fake server: prompts go as text
    pieces: list[str] = []
    result = backend.generate("PROMPT", GenParams(64, temperature=0.7, greedy_calls=True), threading.Event(), pieces.append)
    assert "".join(pieces) == 'Listing <tool_call>{"name": "Bash"}</tool_call>Done.'
    assert [r["temperature"] for r in requests] == [0.7, 0.0, 0.7]
    assert [r["prompt"] for r in requests] == ["PROMPT", "PROMPT" + "Listing <tool_call>",
                                               "PROMPT" + 'Listing <tool_call>{"name": "Bash"}</tool_call>']
    assert result.finish == "stop" and result.output_tokens == 6
