"""A scripted Anthropic Messages API on loopback, so the real Claude Code CLI runs offline.

A *script* maps a user prompt to the assistant turns that answer it::

    Script(match="compare transformers", turns=[
        [text("First I'll look."), tool("Bash", {"command": "ls"})],
        [tool("Read", {"file_path": "/x"}), tool("Grep", {"pattern": "y"})],   # parallel calls
        [text("They differ in voltage.")],
    ])

For each request the server finds the conversation's latest user text (a prompt typed by
the user, a subagent's task, or a ``<task-notification>``), picks the first script whose
``match`` occurs in it, and answers with turn N, where N counts the assistant messages
already sent after that user text. Requests no script matches (titles, side queries) get a
short text answer. Every request is recorded in ``server.requests``.

Streaming (SSE) and plain JSON are both served, as the real API does. Run it alone with
``python tests/scripted_api.py SCRIPTS.json`` to poke at it by hand.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "claude-opus-5-5"
_ids = itertools.count(1)


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def thinking(value: str) -> dict:
    return {"type": "thinking", "thinking": value, "signature": "c2lnbmF0dXJl"}


def redacted_thinking(data: str = "ZW5jcnlwdGVk") -> dict:
    return {"type": "redacted_thinking", "data": data}


def tool(name: str, input: dict, id: str | None = None) -> dict:
    return {"type": "tool_use", "id": id or f"toolu_{next(_ids):04d}", "name": name, "input": input}


@dataclass
class Script:
    match: str
    turns: list[list[dict]]
    # Seconds to wait before answering turn N (lets a test kill the CLI mid-session).
    delays: dict[int, float] = field(default_factory=dict)
    # HTTP statuses to answer turn N with, one per request, before the turn itself (API trouble
    # the CLI retries: 500, 529 overloaded). Consumed as they are sent.
    failures: dict[int, list[int]] = field(default_factory=dict)
    # stop_reason to send with turn N instead of the one its blocks imply ("max_tokens", "refusal").
    stop_reasons: dict[int, str] = field(default_factory=dict)


def _user_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts = [b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text"]
    return "\n".join(parts)


def _is_tool_result_message(message: dict) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def _turns_answered(messages: list[dict]) -> int:
    """The assistant turns in the messages after the prompt. Claude Code 1.0.60 sends the turn
    before each tool result twice (the same tool_use id, then with cache_control added): a
    message the same as the one two before it is that copy, not a turn."""
    def bare(message: dict):
        content = message.get("content")
        if isinstance(content, list):
            content = [{k: v for k, v in b.items() if k != "cache_control"} if isinstance(b, dict) else b for b in content]
        return message.get("role"), json.dumps(content, sort_keys=True)

    seen = [bare(m) for m in messages]
    return sum(1 for i, m in enumerate(seen) if m[0] == "assistant" and (i < 2 or seen[i - 2] != m))


def _prompt_after_interrupt(message: dict) -> str:
    """A prompt typed after Esc stopped a call: the TUI sends it in the message that carries the
    rejected call's result, after the "[Request interrupted by user for tool use]" text."""
    texts = [b.get("text", "") for b in message.get("content") or [] if isinstance(b, dict) and b.get("type") == "text"]
    marks = [i for i, said in enumerate(texts) if said.startswith("[Request interrupted by user")]
    return "\n".join(texts[marks[-1] + 1:]) if marks else ""


def locate(request: dict, scripts: list[Script]) -> tuple[Script | None, int]:
    """Return the script answering this request and the index of the turn to send."""
    messages = request.get("messages") or []
    for start in range(len(messages) - 1, -1, -1):
        message = messages[start]
        if message.get("role") != "user":
            continue
        said = _prompt_after_interrupt(message) if _is_tool_result_message(message) else _user_text(message)
        if not said:
            continue
        for script in scripts:
            if script.match in said:
                return script, _turns_answered(messages[start + 1:])
    return None, 0


class ScriptedAPI:
    """Run with ``with ScriptedAPI(scripts) as api: ... api.base_url ...``."""

    def __init__(self, scripts: list[Script], host: str = "127.0.0.1", port: int = 0):
        self.scripts = scripts
        self.requests: list[dict] = []
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "ScriptedAPI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, request: dict) -> tuple[list[dict], float]:
        blocks, delay, _, _ = self.answer_turn(request)
        return blocks, delay

    def answer_turn(self, request: dict) -> tuple[list[dict], float, int | None, str | None]:
        """(blocks, delay, HTTP status to fail with or None, stop_reason override or None)."""
        script, turn = locate(request, self.scripts)
        if script is None or turn >= len(script.turns):
            return [text("OK.")], 0.0, None, None
        pending = script.failures.get(turn) or []
        status = pending.pop(0) if pending else None
        return script.turns[turn], script.delays.get(turn, 0.0), status, script.stop_reasons.get(turn)

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self._json(200, {"data": [], "has_more": False})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    request = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    return self._json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad json"}})
                if self.path.split("?")[0].endswith("/count_tokens"):
                    return self._json(200, {"input_tokens": 100})
                api.requests.append(request)
                blocks, delay, failure, stop = api.answer_turn(request)
                if delay:
                    threading.Event().wait(delay)
                if failure:
                    kind = "overloaded_error" if failure == 529 else "api_error"
                    return self._json(failure, {"type": "error", "error": {"type": kind, "message": f"scripted {failure}"}})
                stop = stop or ("tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn")
                message = {
                    "id": f"msg_{next(_ids):04d}", "type": "message", "role": "assistant",
                    "model": request.get("model", MODEL), "content": blocks, "stop_reason": stop,
                    "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 20},
                }
                if request.get("stream"):
                    self._stream(message)
                else:
                    self._json(200, message)

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, message: dict) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                for name, data in sse_events(message):
                    self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
                self.close_connection = True

        return Handler


def sse_events(message: dict):
    """The Messages API streaming events for a complete message, in order."""
    start = dict(message, content=[], stop_reason=None)
    start["usage"] = {"input_tokens": message["usage"]["input_tokens"], "output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": block["text"]}}
        elif block["type"] == "thinking":
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": ""}}
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": block["thinking"]}}
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": block["signature"]}}
        elif block["type"] == "redacted_thinking":
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
        else:
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": dict(block, input={})}
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None}, "usage": {"output_tokens": message["usage"]["output_tokens"]}}
    yield "message_stop", {"type": "message_stop"}


if __name__ == "__main__":
    loaded = json.load(open(sys.argv[1]))
    with ScriptedAPI([Script(**s) for s in loaded], port=int(sys.argv[2]) if len(sys.argv) > 2 else 0) as server:
        print(server.base_url, flush=True)
        threading.Event().wait()
