"""Request validation for `trainer serve`: the Messages API's documented rules, checked up front.

Every client mistake is a 400 `invalid_request_error` whose message starts with the field, spelled
as the API spells it (`messages.1.content.0.tool_use_id: ...`), and it is decided before the
student sees the request: never a 500 for a client's mistake, never an SSE `error` event after a
200 for something that could be checked first. What is checked, as the API documents it:

- `model` (non-empty string), `max_tokens` (integer, 1 to `max_tokens_limit`), `stream` (bool);
- `messages`: a non-empty list of `user`/`assistant` turns and `system` messages (text only, as
  the SDK's SystemMessageParam; Claude Code 2.1.x sends one), non-empty content, known block types
  per role, every `tool_result` answering a `tool_use` of the turn just before it and every
  `tool_use` (but in the last turn) answered in the turn after it;
- `system`, `tools` (unique names, a custom tool has an `input_schema` object whose `properties`
  and `required` are well-formed), `tool_choice`
  (`auto`, `any`, `tool` with a name among `tools`, `none`; `disable_parallel_tool_use`);
- sampling ranges: `temperature` and `top_p` in [0, 1], `top_k` in [0, 2^31 - 1], `stop_sequences`.

Fields the server does not use (`metadata`, `thinking`, `context_management`, ...) are accepted,
as Claude Code sends them.
"""

from __future__ import annotations

import re
from typing import Any

# The API's largest output limit for any model; a request above it is refused, as the API does.
# What the student actually generates is further bounded by its context (see trainer/serve.py).
MAX_TOKENS_LIMIT = 128_000
MAX_TOP_K = 2**31 - 1

USER_BLOCKS = {"text", "image", "document", "tool_result", "search_result"}
ASSISTANT_BLOCKS = {"text", "tool_use", "thinking", "redacted_thinking", "server_tool_use", "web_search_tool_result"}
# tool_reference: ToolSearch's result in Claude Code 2.1.x (the tool whose definition it loads).
TOOL_RESULT_BLOCKS = {"text", "image", "document", "search_result", "tool_reference"}
SYSTEM_BLOCKS = {"text"}
TOOL_CHOICES = ("auto", "any", "tool", "none")
_TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


class APIError(Exception):
    """An error the client sees as Anthropic-style JSON."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message

    def body(self) -> dict:
        return {"type": "error", "error": {"type": self.type, "message": self.message}}


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise APIError(400, message)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_block(block: Any, where: str, allowed: set[str], role: str) -> None:
    _expect(isinstance(block, dict) and isinstance(block.get("type"), str), f"{where}: must be a content block with a type")
    kind = block["type"]
    if kind not in allowed:
        known = USER_BLOCKS | ASSISTANT_BLOCKS
        if kind in known:
            raise APIError(400, f"{where}.type: '{kind}' blocks are not allowed in {role} messages")
        raise APIError(400, f"{where}.type: unknown content block type '{kind}'; expected one of {', '.join(sorted(allowed))}")
    if kind == "text":
        _expect(isinstance(block.get("text"), str), f"{where}.text: Field required (a string)")
        _expect(block["text"] != "", f"{where}.text: text content blocks must be non-empty")
    elif kind == "image":
        _expect(isinstance(block.get("source"), dict), f"{where}.source: Field required (an object)")
    elif kind == "tool_use":
        _expect(isinstance(block.get("id"), str) and block["id"], f"{where}.id: Field required (a non-empty string)")
        _expect(isinstance(block.get("name"), str) and block["name"], f"{where}.name: Field required (a non-empty string)")
        _expect(isinstance(block.get("input"), dict), f"{where}.input: must be an object")
    elif kind == "tool_result":
        _expect(isinstance(block.get("tool_use_id"), str) and block["tool_use_id"], f"{where}.tool_use_id: Field required (a string)")
        content = block.get("content", "")
        _expect(isinstance(content, (str, list)), f"{where}.content: must be a string or a list of content blocks")
        if isinstance(content, list):
            for k, inner in enumerate(content):
                _check_block(inner, f"{where}.content.{k}", TOOL_RESULT_BLOCKS, "tool_result")
        _expect(isinstance(block.get("is_error", False), bool), f"{where}.is_error: must be a boolean")
    elif kind == "thinking":
        _expect(isinstance(block.get("thinking"), str), f"{where}.thinking: Field required (a string)")
    elif kind == "tool_reference":
        _expect(isinstance(block.get("tool_name"), str) and block["tool_name"], f"{where}.tool_name: Field required (a string)")


def _check_system_message(content: Any, where: str) -> None:
    """A mid-conversation system message (the SDK's SystemMessageParam; Claude Code 2.1.x sends
    its environment in one): text only."""
    _expect(isinstance(content, (str, list)), f"{where}.content: must be a string or a list of text blocks")
    _expect(content != "" and content != [], f"{where}: all messages must have non-empty content except for the "
                                              "optional final assistant message")
    if isinstance(content, list):
        for j, block in enumerate(content):
            _check_block(block, f"{where}.content.{j}", SYSTEM_BLOCKS, "system")


def _check_messages(messages: Any) -> None:
    _expect(isinstance(messages, list) and messages, "messages: Field required (a non-empty list)")
    last = len(messages) - 1
    pending: set[str] = set()  # tool_use ids of the previous assistant turn, waiting for results
    for i, m in enumerate(messages):
        _expect(isinstance(m, dict), f"messages.{i}: must be an object")
        role = m.get("role")
        _expect(role in ("user", "assistant", "system"), f"messages.{i}.role: must be 'user', 'assistant' or 'system'")
        if role == "system":
            _check_system_message(m.get("content"), f"messages.{i}")
            continue  # between a call and its result too: it pairs nothing
        content = m.get("content")
        _expect(isinstance(content, (str, list)), f"messages.{i}.content: must be a string or a list of content blocks")
        final_assistant = role == "assistant" and i == last  # a prefill may be empty
        _expect(
            final_assistant or (content != "" and content != []),
            f"messages.{i}: all messages must have non-empty content except for the optional final assistant message",
        )
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        allowed = USER_BLOCKS if role == "user" else ASSISTANT_BLOCKS
        results: set[str] = set()
        uses: list[str] = []
        for j, block in enumerate(blocks):
            if isinstance(content, str):
                break
            where = f"messages.{i}.content.{j}"
            _check_block(block, where, allowed, role)
            if block["type"] == "tool_result":
                tid = block["tool_use_id"]
                _expect(
                    tid in pending,
                    f"{where}.tool_use_id: unexpected `tool_use_id` found in `tool_result` blocks: {tid}. Each "
                    "`tool_result` block must have a corresponding `tool_use` block in the previous message.",
                )
                results.add(tid)
            elif block["type"] == "tool_use":
                _expect(block["id"] not in uses, f"{where}.id: `tool_use` ids must be unique: {block['id']}")
                uses.append(block["id"])
        missing = sorted(pending - results)
        _expect(
            not missing,
            f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
            f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
        )
        pending = set(uses) if role == "assistant" else set()


def _check_tools(tools: Any) -> list[str]:
    _expect(tools is None or isinstance(tools, list), "tools: must be a list")
    names: list[str] = []
    for j, tool in enumerate(tools or []):
        _expect(isinstance(tool, dict), f"tools.{j}: must be an object")
        _expect(isinstance(tool.get("name"), str) and tool["name"], f"tools.{j}.name: Field required (a string)")
        _expect(bool(_TOOL_NAME_RE.match(tool["name"])), f"tools.{j}.name: must match ^[a-zA-Z0-9_-]{{1,128}}$")
        _expect(tool["name"] not in names, f"tools.{j}.name: Tool names must be unique: '{tool['name']}'")
        names.append(tool["name"])
        kind = tool.get("type")
        if kind in (None, "custom"):  # server tools (web_search_..., bash_...) carry no schema
            schema = tool.get("input_schema")
            _expect(isinstance(schema, dict), f"tools.{j}.input_schema: Field required (a JSON schema object)")
            _expect(schema.get("type") == "object", f"tools.{j}.input_schema.type: must be 'object'")
            props = schema.get("properties")
            _expect(props is None or (isinstance(props, dict) and all(isinstance(v, (dict, bool)) for v in props.values())),
                    f"tools.{j}.input_schema.properties: must be an object mapping each parameter to its JSON schema")
            required = schema.get("required")
            _expect(required is None or (isinstance(required, list) and all(isinstance(n, str) for n in required)),
                    f"tools.{j}.input_schema.required: must be a list of parameter names")
        _expect(isinstance(tool.get("description", ""), str), f"tools.{j}.description: must be a string")
    return names


def _check_tool_choice(choice: Any, tool_names: list[str]) -> None:
    if choice is None:
        return
    _expect(isinstance(choice, dict), "tool_choice: must be an object such as {\"type\": \"auto\"}")
    kind = choice.get("type")
    _expect(kind in TOOL_CHOICES, f"tool_choice.type: must be one of {', '.join(repr(c) for c in TOOL_CHOICES)}, got {kind!r}")
    if kind in ("any", "tool"):
        _expect(bool(tool_names), f"tool_choice: `tool_choice` of type '{kind}' may only be specified while providing tools")
    if kind == "tool":
        name = choice.get("name")
        _expect(isinstance(name, str) and name, "tool_choice.name: Field required (a string)")
        _expect(name in tool_names, f"tool_choice.name: tool '{name}' not found in `tools`")
    if "disable_parallel_tool_use" in choice:
        _expect(kind != "none", "tool_choice.disable_parallel_tool_use: not allowed with type 'none'")
        _expect(isinstance(choice["disable_parallel_tool_use"], bool), "tool_choice.disable_parallel_tool_use: must be a boolean")


def validate_request(body: Any, count_only: bool = False, max_tokens_limit: int = MAX_TOKENS_LIMIT) -> dict:
    """Check a Messages API request; raise APIError(400) naming the first bad field."""
    _expect(isinstance(body, dict), "request body must be a JSON object")
    _expect(isinstance(body.get("model"), str) and body["model"], "model: Field required (a non-empty string)")
    if not count_only:
        mt = body.get("max_tokens")
        _expect(_is_int(mt), "max_tokens: Field required (an integer)")
        _expect(mt >= 1, f"max_tokens: must be at least 1, got {mt}")
        _expect(
            mt <= max_tokens_limit,
            f"max_tokens: {mt} > {max_tokens_limit}, which is the maximum allowed number of output tokens for {body['model']}",
        )
        _expect(isinstance(body.get("stream", False), bool), "stream: must be a boolean")
    _check_messages(body.get("messages"))
    system = body.get("system")
    _expect(system is None or isinstance(system, (str, list)), "system: must be a string or a list of text blocks")
    if isinstance(system, list):
        for j, block in enumerate(system):
            _expect(
                isinstance(block, dict) and block.get("type", "text") == "text" and isinstance(block.get("text"), str),
                f"system.{j}: must be a text block",
            )
    names = _check_tools(body.get("tools"))
    _check_tool_choice(body.get("tool_choice"), names)
    for key in ("temperature", "top_p"):
        v = body.get(key)
        if v is not None:
            _expect(_is_number(v), f"{key}: must be a number")
            _expect(0.0 <= v <= 1.0, f"{key}: must be between 0 and 1, got {v}")
    top_k = body.get("top_k")
    if top_k is not None:
        _expect(_is_int(top_k), "top_k: must be an integer")
        _expect(top_k >= 0, f"top_k: must be greater than or equal to 0, got {top_k}")
        # Any k past the vocabulary means "every token"; the bound keeps it a 64-bit integer for
        # the backends (llama.cpp refuses larger ones mid-generation).
        _expect(top_k <= MAX_TOP_K, f"top_k: must be at most {MAX_TOP_K}, got {top_k}")
    stops = body.get("stop_sequences")
    _expect(
        stops is None or (isinstance(stops, list) and all(isinstance(s, str) and s.strip() for s in stops)),
        "stop_sequences: must be a list of strings, each with non-whitespace text",
    )
    meta = body.get("metadata")
    _expect(meta is None or isinstance(meta, dict), "metadata: must be an object")
    return body


def tool_choice_of(body: dict) -> tuple[str, str, bool]:
    """(type, forced tool name or "", parallel calls allowed) of a validated request."""
    choice = body.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type", "auto")
    if not body.get("tools"):
        kind = "none" if kind == "none" else "auto"
    return kind, choice.get("name", "") if kind == "tool" else "", not choice.get("disable_parallel_tool_use", False)
