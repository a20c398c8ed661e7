"""`trainer serve`: the student behind an Anthropic Messages API, so Claude Code runs on it.

    trainer serve --model runs/x/sft/final                       # transformers backend, 127.0.0.1:8765
    trainer serve --model runs/x/export/student-q8_0.gguf        # llama.cpp backend (xllamacpp)
    trainer serve --model runs/x/sft/final --token s3cret --port 9000
    trainer serve --model runs/x/sft/final --ab upstream=https://api.anthropic.com,student=0.1
    trainer serve arms                                           # which session went to which arm

    ANTHROPIC_BASE_URL=http://127.0.0.1:8765 ANTHROPIC_API_KEY=s3cret claude

Endpoints: `POST /v1/messages` (JSON or SSE with `"stream": true`), `POST
/v1/messages/count_tokens`, `GET /v1/models`, `GET /v1/models/{id}`, and `GET`/`HEAD` on `/`
and `/health`. Every response carries a `request-id` header.

As the Messages API does it. Requests are checked up front (trainer/serve_validate.py): a client
mistake is a 400 `invalid_request_error` naming the field, never a 500 or an SSE error after a
200. `tool_choice` is honoured by constrained decoding (trainer/serve_constrain.py). A prompt
longer than the context (`serve.n_ctx`) is a 400 "prompt is too long: N tokens > M maximum",
decided while tokenizing it a piece at a time; `max_tokens` runs up to what the context leaves,
or `serve.max_new_tokens` when set, and the `x-understudy-max-tokens` header says which. One
request generates at a time; up to `serve.max_queue` wait, one more gets 529 `overloaded_error`
(trainer/serve_queue.py). A client that leaves, while waiting, while its prompt is processed or
while tokens stream, stops costing anything (trainer/serve_backends.py).

What the student sees. Claude Code sends a long system prompt, every tool's full schema and
`<system-reminder>` blocks on each request; the student was trained on a compact context
(trainer/dataset.py). With `serve.context = "compact"` (the default) the request is mapped to
that same context: the system prompt becomes `dataset.system_prompt` plus the working directory
the request names (as the dataset names the trace's cwd), the tool schemas are
compacted by trainer/tool_context.py (`dataset.tool_schema`, `dataset.tools`), system reminders and
mid-conversation system messages are dropped (except what a user's hook told the model there, its
additional context or blocking reason, kept as the user turn the dataset gives it; SessionStart's
context is dropped, as no trace holds it), and tool results become `tool` messages exactly
as the dataset builder writes them (errors prefixed "Error: ", long results trimmed to
`dataset.max_tool_result_tokens` around a visible marker). The prompt is rendered with the one
chat template (trainer/chat_template.py).

What Claude Code gets back. The student's `<tool_call>{...}</tool_call>` lines become `tool_use`
blocks (stop_reason "tool_use"); its other text becomes a text block. Output whose calls do not
parse, or name a tool the request did not offer, is returned as plain text: a confused student
never crashes the server or hangs a stream. A client that disconnects mid-stream stops the
generation.

A/B rollout. `--ab upstream=URL,student=SHARE` sends a share of *sessions* to the student and the
rest to an upstream Anthropic-compatible API (proxied, streaming passed through). The session
is Claude Code's session id (the `X-Claude-Code-Session-Id` header, else the `session_id` in
`metadata.user_id`); a hash of it decides the arm, and the first decision is recorded in
`{UNDERSTUDY_HOME}/serve/arms.db`, so a session never switches models mid-way, even if the
share changes. Requests without a session id go upstream. Captured traces carry the session
id, so `trainer serve arms` joins them to an arm.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' `Request` annotations
# at definition time, and fastapi is imported inside create_app (it is the [serve] extra).

import asyncio
import hmac
import importlib
import ipaddress
import json
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import click
import orjson

from capture_daemon.content_blocks import READABLE_BLOCKS, block_text
from trainer.chat_template import (
    BEGIN_OF_TEXT,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    ParsedCall,
    dump_arguments,
    is_mid_turn_text,
    parse_assistant_output,
    render,
    told_text,
)
from trainer.config import (
    ConfigError,
    UnderstudyConfig,
    default_config_path,
    load_config,
    parse_overrides,
    trained_config_path,
)
from trainer.dataset import DatasetConfig, system_turn, user_turn
from trainer.tool_context import tools_for
from trainer import serve_backends
from trainer.serve_backends import GenParams, GenResult, load_backend
from trainer import serve_ab
from trainer.serve_ab import ABSpec, ArmLog, arms_db_path, session_id_of
from trainer.serve_constrain import Constraint
from trainer.serve_queue import GenerationQueue
from trainer.serve_validate import MAX_TOKENS_LIMIT, APIError, tool_choice_of, validate_request

STUDENT_MODEL_ID = "understudy-student"
_REMINDER_RE = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)
# The backends live in trainer/serve_backends.py, the A/B pieces in trainer/serve_ab.py; these
# names stay importable from here.
arm_for = serve_ab.arm_for
TransformersBackend = serve_backends.TransformersBackend
LlamaCppBackend = serve_backends.LlamaCppBackend


_SURROGATE_ESCAPE_RE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def lone_surrogate(raw: bytes, body: Any) -> Optional[str]:
    """The first lone UTF-16 surrogate in a parsed request, as `\\udXXX`, or None.

    `json.loads` accepts `"\\ud83d"` (half an emoji, as JavaScript's JSON.stringify writes a
    string cut inside one) and hands back a str no tokenizer or encoder takes: the API answers it
    with a 400, and so does this server. Only a body holding such an escape is checked whole."""
    if not _SURROGATE_ESCAPE_RE.search(raw):
        return None
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        return "\\u%04x" % ord(err.object[err.start])
    return None


# Below this a sampled token is the greedy one (barring exact ties), and logits divided by it can
# overflow: such a temperature is served as 0.
GREEDY_BELOW_TEMPERATURE = 1e-5

_FORCED_HEAD_RE = re.compile(re.escape(TOOL_CALL_OPEN) + r'\{"name": "((?:[^"\\]|\\.)*)"')


# ---------------------------------------------------------------------------------------------
# Request validation and mapping to the training context


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n\n".join(text for text in map(block_text, content or []) if text)


def strip_reminders(text: str) -> str:
    return _REMINDER_RE.sub("", text).strip()


# How Claude Code shows the model what a user's hook said, in a system message (2.1.328) or a
# reminder (2.1.42); several may share one, a blank line apart. A Stop hook's reason comes again as
# a user turn of its own ("Stop hook feedback:"), which is what the dataset keeps of it.
_HOOK_TEXT_RE = re.compile(
    r'^(?P<hook>[A-Za-z]+(?::\S+)?) hook (?:(?P<context>additional context)|(?P<success>success)|'
    r'blocking error from command: "(?:[^"\\]|\\.)*"): '
    # A hook's own text may hold blank lines: it runs to the next hook's head, to the date that
    # closes 2.1.328's environment message after the hooks' texts, or to the end.
    r'(?P<text>.*?)(?=\n\n(?:[A-Za-z]+(?::\S+)? hook (?:additional context|success|blocking error from command: ")'
    r"|Today's date is )|\n?\Z)",
    re.MULTILINE | re.DOTALL)


def hook_texts(text: str) -> list[str]:
    """What the user's hooks told the model in a system message or reminder, worded as the dataset
    words a trace's hook messages (chat_template.told_text)."""
    told = []
    for found in _HOOK_TEXT_RE.finditer(text):
        if found.group("hook") in ("Stop", "SubagentStop"):
            continue  # its user turn says it
        if found.group("hook").startswith("SessionStart"):
            continue  # the session's, before any prompt: no trace holds it (README), so no example does
        if found.group("success") and (found.group("hook") != "UserPromptSubmit" or found.group("text") == "Success"):
            continue  # Claude Code's note that a hook ran (2.1.42), not what it printed for the model
        kind = "hook_context" if found.group("context") else "hook_output" if found.group("success") else "hook_feedback"
        told.append(told_text(kind, found.group("text"), found.group("hook")))
    return told


# Where Claude Code says the session works: "Working directory: /x" in the system prompt's <env>
# (older versions), " - Primary working directory: /x" in a system message after the first user
# turn (2.1.328), or the same in a user turn's reminder.
_WORKING_DIRECTORY_RE = re.compile(r"^[ \t]*(?:-[ \t]*)?(?:Primary working directory|Working directory):[ \t]*(\S[^\n]*?)[ \t]*$",
                                   re.MULTILINE)


def working_directory_of(body: dict) -> Optional[str]:
    """The session's working directory as the request states it (the dataset's system turn names it)."""
    texts = [_text_of(body.get("system") or "")]
    for m in body.get("messages") or []:
        if m.get("role") in ("user", "system"):
            content = m.get("content")
            texts.append(_text_of([b for b in content if isinstance(b, dict) and b.get("type") == "text"])
                         if isinstance(content, list) else _text_of(content))
    for text in texts:
        # Every match holds this; looking for it first is ~10x faster than the regex over a
        # long system prompt, which tries each position for a line start.
        if "orking directory:" not in text:
            continue
        found = _WORKING_DIRECTORY_RE.search(text)
        if found:
            return found.group(1)
    return None


@dataclass
class ContextSettings:
    """How a request becomes the student's prompt; built from [serve] and [dataset]."""

    context: str = "compact"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    tools: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: UnderstudyConfig) -> "ContextSettings":
        return cls(context=cfg.serve.context, dataset=cfg.dataset, tools=list(cfg.serve.tools))


# No token of a LLaMA-family vocabulary spans more characters than this (long whitespace runs aside).
_MAX_CHARS_PER_TOKEN = 64


def _tool_message(block: dict, name: str, settings: ContextSettings, tokenizer) -> dict:
    """A tool_result block as the dataset builder writes a tool result (reusing its code)."""
    from capture_daemon.schema import ToolCall
    from trainer.dataset import _tool_message as dataset_tool_message

    text = _text_of(block.get("content", ""))
    keep = settings.dataset.max_tool_result_tokens * _MAX_CHARS_PER_TOKEN
    if keep > 0 and len(text) > 2 * keep:
        # The dataset's trimming keeps about max_tool_result_tokens tokens of head and tail;
        # tokenizing a 10 MiB result whole to find that out took a minute and 2.5 GB. Cut first
        # to `keep` characters at each end (more than that many tokens can hold), so the student
        # sees the same head and tail; only the marker's trimmed count covers what was kept.
        text = text[:keep] + text[-keep:]
    is_error = bool(block.get("is_error"))
    call = ToolCall(
        tool_use_id=block["tool_use_id"],
        name=name,
        output=None if is_error else text,
        success=not is_error,
        error=text if is_error else None,
    )
    message, _ = dataset_tool_message(call, settings.dataset, tokenizer)
    return message


def to_chat(body: dict, settings: ContextSettings, tokenizer=None,
            cache: Optional["PromptCache"] = None) -> tuple[list[dict], list[dict], str]:
    """(chat messages, compact tools, assistant prefill) for a validated request."""
    compact = settings.context == "compact"
    cwd = working_directory_of(body) if compact else None
    if compact:
        system = system_turn(settings.dataset, cwd)
    else:
        system = _text_of(body.get("system") or "")
    offered = [t for t in body.get("tools") or [] if isinstance(t.get("name"), str)]
    if settings.tools:
        offered = [t for t in offered if t["name"] in settings.tools]
    if not offered:
        tools = []
    elif cache is not None:
        tools = cache.tools(offered, settings)
    else:
        tools = tools_for(offered, settings.dataset)  # the dataset's mapping

    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    names: dict[str, str] = {}
    extra_system: list[str] = []
    for m in body["messages"]:
        content = m["content"]
        if m["role"] == "system":
            text = _text_of(content)
            if is_mid_turn_text(text.strip()):
                # A message the user typed mid-turn, as `-p` delivers it: no system context but
                # the user's words where they arrived, a user turn as training shows it.
                _tell_mid_turn(messages, text.strip())
            elif not compact:
                extra_system.append(text)
            elif hook_texts(text):
                messages.append({"role": "user", "content": "\n\n".join(hook_texts(text))})
            continue
        if m["role"] == "assistant":
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            texts = [b["text"].strip() for b in blocks if b.get("type") == "text" and b["text"].strip()]
            calls = []
            for b in blocks:
                if b.get("type") == "tool_use":
                    names[b["id"]] = b["name"]
                    calls.append(
                        {"id": b["id"], "type": "function", "function": {"name": b["name"], "arguments": dump_arguments(b["input"])}}
                    )
            message = {"role": "assistant", "content": "\n\n".join(texts)}
            if calls:
                message["tool_calls"] = calls
            messages.append(message)
            continue
        # user
        if isinstance(content, str):
            text = strip_reminders(content)
            if text:
                messages.append({"role": "user", "content": text})
            continue
        texts = []
        for b in content:
            if b.get("type") == "tool_result":
                messages.append(_tool_message(b, names.get(b["tool_use_id"], "tool"), settings, tokenizer))
            elif b.get("type") in READABLE_BLOCKS:
                for reminder in _REMINDER_RE.findall(_text_of([b])) if compact else []:
                    texts.extend(hook_texts(reminder.removeprefix("<system-reminder>").removesuffix("</system-reminder>").strip()))
                text = strip_reminders(_text_of([b]))
                if text:
                    texts.append(text)
        if texts:
            messages.append({"role": "user", "content": "\n\n".join(texts)})
    if extra_system and messages and messages[0]["role"] == "system":
        messages[0]["content"] = "\n\n".join([messages[0]["content"], *extra_system])
    first_user = next((m for m in messages if m["role"] == "user"), None)
    if compact and first_user is not None:
        # The conversation's first prompt, as a training example's only one (dataset.user_turn).
        first_user["content"] = user_turn(settings.dataset, cwd, first_user["content"])

    prefill = ""
    if messages and messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls"):
        prefill = messages.pop()["content"]
    return messages, tools, prefill


def _tell_mid_turn(messages: list[dict], text: str) -> None:
    """A mid-turn message as the dataset builder writes one (dataset.py): a user turn after the
    tool results it came with, several arriving together joined in one turn."""
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "user" and is_mid_turn_text(last["content"]):
        last["content"] = f"{last['content']}\n\n{text}"
    else:
        messages.append({"role": "user", "content": text})


def build_prompt(body: dict, settings: ContextSettings, tokenizer=None,
                 cache: Optional["PromptCache"] = None) -> tuple[str, list[str]]:
    """(prompt text, names of the tools the student was shown); `cache` only saves time."""
    messages, tools, prefill = to_chat(body, settings, tokenizer, cache)
    if cache is not None:
        prompt = cache.render(messages, tools) + prefill
    else:
        prompt = render(messages, tools or None, add_generation_prompt=True) + prefill
    return prompt, [t["function"]["name"] for t in tools]


class PromptCache:
    """What build_prompt makes the same way for every request of a session, kept by content:
    the compact tools for the offered schemas, and the prompt's head (the system turn with its
    tool block). Claude Code resends both unchanged each turn; compacting and rendering them was
    ~0.25 ms of every request's time to first token. The template renders a conversation as
    head + one piece per message; that is checked once on a probe, and a template that does not
    has every prompt rendered whole."""

    def __init__(self, max_entries: int = 32):
        self.max_entries = max_entries
        self._tools: OrderedDict = OrderedDict()
        self._heads: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.splits: Optional[bool] = None  # decided on first use

    @staticmethod
    def _key(value: Any) -> Optional[bytes]:
        try:
            return orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError):  # not plain JSON (an int past 64 bits): not kept
            return None

    def _get(self, store: OrderedDict, key) -> Any:
        with self._lock:
            hit = store.get(key)
            if hit is not None:
                store.move_to_end(key)
            return hit

    def _put(self, store: OrderedDict, key, value) -> None:
        with self._lock:
            store[key] = value
            while len(store) > self.max_entries:
                store.popitem(last=False)

    def tools(self, offered: list[dict], settings: ContextSettings) -> list[dict]:
        """tools_for(offered, settings.dataset); the list is shared: read it, never change it."""
        dataset = settings.dataset
        raw = self._key(offered)
        if raw is None:
            return tools_for(offered, dataset)
        key = (raw, getattr(dataset, "tool_schema", None), dataset.tool_description_chars,
               tuple(getattr(dataset, "tools", None) or ()))
        hit = self._get(self._tools, key)
        if hit is None:
            hit = tools_for(offered, dataset)
            self._put(self._tools, key, hit)
        return hit

    @staticmethod
    def _check() -> bool:
        tools = [{"type": "function", "function": {"name": "Read", "description": "Read a file.",
                                                   "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}]
        probe = [
            {"role": "system", "content": "You are a probe."},
            {"role": "user", "content": "read a.py"},
            {"role": "assistant", "content": "Reading.", "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "Read", "arguments": '{"path": "a.py"}'}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "print(1)"},
            {"role": "user", "content": "thanks"},
        ]
        whole = render(probe, tools, add_generation_prompt=True)
        head = render(probe[:1], tools)
        rest = render(probe[1:], None, add_generation_prompt=True)
        return rest.startswith(BEGIN_OF_TEXT) and head + rest[len(BEGIN_OF_TEXT):] == whole

    def render(self, messages: list[dict], tools: list[dict]) -> str:
        """render(messages, tools or None, add_generation_prompt=True), from the kept head."""
        if self.splits is None:
            self.splits = self._check()
        head_key = None
        if self.splits and messages and messages[0].get("role") == "system" \
                and all(m.get("role") != "system" for m in messages[1:]):
            system, tools_key = self._key(messages[0]), self._key(tools)
            if system is not None and tools_key is not None:
                head_key = (system, tools_key)
        if head_key is None:
            return render(messages, tools or None, add_generation_prompt=True)
        head = self._get(self._heads, head_key)
        if head is None:
            head = render(messages[:1], tools or None)
            self._put(self._heads, head_key, head)
        return head + render(messages[1:], None, add_generation_prompt=True)[len(BEGIN_OF_TEXT):]


# ---------------------------------------------------------------------------------------------
# Turning generated text into Messages API content, incrementally


def _normalize(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


class OutputAssembler:
    """Accumulates generated text; says what narration is safe to stream, and the final blocks."""

    def __init__(self, offered_tools: list[str], stop_sequences: list[str], constraint: Optional[Constraint] = None):
        self.offered = set(offered_tools)
        self.stops = stop_sequences
        self.constraint = constraint or Constraint()
        self.text = ""
        self.emitted = ""
        self.stop_sequence: Optional[str] = None

    def feed(self, piece: str) -> str:
        """Add generated text; return the new narration that can be streamed now."""
        if self.stop_sequence is not None:
            return ""
        self.text += piece
        for stop in self.stops:
            at = self.text.find(stop)
            if at >= 0:
                self.text = self.text[:at]
                self.stop_sequence = stop
        safe = self.text
        if self.constraint.forced:
            return ""  # a forced turn is calls only: nothing streams as text
        cut = safe.find(TOOL_CALL_OPEN) if self.constraint.kind != "none" else -1
        if cut >= 0:
            safe = safe[:cut]
        elif self.stop_sequence is None:
            markers = self.stops + ([TOOL_CALL_OPEN] if self.constraint.kind != "none" else [])
            hold = max([0] + [_partial_suffix(safe, m) for m in markers])
            safe = safe[: len(safe) - hold] if hold else safe
        candidate = _normalize(safe)
        if candidate.startswith(self.emitted) and len(candidate) > len(self.emitted):
            new = candidate[len(self.emitted):]
            self.emitted = candidate
            return new
        return ""

    def finish(self, cut_off: bool = False) -> tuple[str, list[dict]]:
        """(all narration text, tool_use blocks). Malformed or unknown calls → the raw text.

        With tool_choice none everything is text; with a forced choice only the well-formed
        calls count (the constraint makes them so); without parallel calls only the first.
        `cut_off`: generation stopped early (max_tokens, a stop sequence); a call it stopped
        inside is answered as the API answers it, a tool_use block with the input as far as it
        got (here, none), or left out when not even its name was written.
        """
        if self.constraint.kind == "none":
            return _normalize(re.sub(r"(?:<\|eot_id\|>|<\|end_of_text\|>)+\s*$", "", self.text)), []
        text = self.text
        if cut_off:  # stopped inside the tag that opens a call: the tag was never written
            text = text[: len(text) - _partial_suffix(text, TOOL_CALL_OPEN)]
        parsed = parse_assistant_output(text)
        calls = parsed.tool_calls
        names = set(self.constraint.names) if self.constraint.forced else self.offered | set(self.constraint.names)
        opened = text.rfind(TOOL_CALL_OPEN)
        if cut_off and calls and not calls[-1].valid_json and TOOL_CALL_CLOSE not in text[opened:]:
            head = _FORCED_HEAD_RE.match(text, opened)
            calls = calls[:-1]
            if head and head.group(1) in names:
                calls.append(ParsedCall(name=head.group(1), arguments={}, raw="", valid_json=True))
        if cut_off and not calls and self.constraint.forced and len(names) == 1:
            # tool_choice names the tool: a forced turn cut before its name is still that call.
            calls = [ParsedCall(name=next(iter(names)), arguments={}, raw="", valid_json=True)]
        if self.constraint.forced:
            calls = [c for c in calls if c.valid_json and c.name in names]
            parsed.narration = ""
        good = calls and all(c.valid_json and (not names or c.name in names) for c in calls)
        if calls and not self.constraint.parallel:
            calls = calls[:1]
        if calls and not good:
            return _normalize(re.sub(r"(?:<\|eot_id\|>|<\|end_of_text\|>)+\s*$", "", self.text)), []
        blocks = [
            {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": c.name, "input": c.arguments}
            for c in calls
        ]
        return parsed.narration, blocks

    def remainder(self, final_text: str) -> str:
        """What of the final text was not streamed yet (nothing when the stream already diverged)."""
        if final_text.startswith(self.emitted):
            rest = final_text[len(self.emitted):]
            self.emitted = final_text
            return rest
        return ""


# ---------------------------------------------------------------------------------------------
# The app


@dataclass
class ServerSettings:
    context: ContextSettings = field(default_factory=ContextSettings)
    token: str = ""
    # Output cap on top of the context: 0 means up to what the context leaves after the prompt.
    max_new_tokens: int = 0
    temperature: Optional[float] = None
    # When sampling, tool calls stay greedy (see GenParams.greedy_calls).
    greedy_tool_calls: bool = True
    max_body_bytes: int = 32 * 2**20
    # Requests that may wait while one generates; one more is a 529 overloaded_error.
    max_queue: int = 16
    # Context when the backend does not say (the scripted backends of the tests).
    n_ctx: int = 4096
    # The largest max_tokens accepted at all (the API's own limit); a larger one is a 400.
    max_tokens_limit: int = MAX_TOKENS_LIMIT
    ab: Optional[ABSpec] = None
    ab_salt: str = ""
    upstream_api_key: str = ""
    arm_log_path: Optional[Path] = None

    @classmethod
    def from_config(cls, cfg: UnderstudyConfig) -> "ServerSettings":
        s = cfg.serve
        if s.max_new_tokens < 0:
            raise ConfigError(f"serve.max_new_tokens must be >= 0 (0: what the context leaves), got {s.max_new_tokens}")
        if s.max_queue < 0:
            raise ConfigError(f"serve.max_queue must be >= 0 (0: no request waits), got {s.max_queue}")
        if s.n_ctx < 64:
            raise ConfigError(f"serve.n_ctx must be at least 64 tokens, got {s.n_ctx}")
        return cls(
            context=ContextSettings.from_config(cfg),
            token=s.token or os.environ.get("UNDERSTUDY_SERVE_TOKEN", ""),
            max_new_tokens=s.max_new_tokens,
            temperature=s.temperature,
            greedy_tool_calls=s.greedy_tool_calls,
            max_body_bytes=int(s.max_body_mb * 2**20),
            max_queue=s.max_queue,
            n_ctx=s.n_ctx,
            ab=ABSpec.parse(s.ab) if s.ab else None,
            ab_salt=s.ab_salt,
            upstream_api_key=os.environ.get(s.upstream_api_key_env, "") if s.upstream_api_key_env else "",
        )


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


# Requests up to this size are rendered and counted on the event loop (see prepare()).
INLINE_BODY_BYTES = 256 * 1024

_HOP_HEADERS = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "accept-encoding", "upgrade"}


def create_app(backend, settings: Optional[ServerSettings] = None):
    """The FastAPI app. `backend` has count(prompt) and generate(prompt, params, cancel, emit)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.background import BackgroundTask

    settings = settings or ServerSettings()
    from contextlib import asynccontextmanager

    _EventStream = _event_stream_class()

    # Generation's own threads: never queued behind other work sent to threads (count_tokens).
    generators = ThreadPoolExecutor(max_workers=4, thread_name_prefix="serve-generate")

    @asynccontextmanager
    async def lifespan(app):
        yield
        generators.shutdown(wait=False)
        if app.state.http is not None:
            await app.state.http.aclose()
        if app.state.arm_log is not None:
            app.state.arm_log.close()

    app = FastAPI(title="understudy student", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.backend = backend
    app.state.settings = settings
    app.state.arm_log = ArmLog(settings.arm_log_path) if settings.ab else None
    app.state.http = None
    tokenizer = getattr(backend, "tokenizer", None)

    def error_response(err: APIError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(404)
    async def _not_found(request, exc):
        return error_response(APIError(404, f"Not found: {request.method} {request.url.path}", "not_found_error"))

    @app.exception_handler(405)
    async def _not_allowed(request, exc):
        return error_response(APIError(405, f"Method not allowed: {request.method} {request.url.path}", "invalid_request_error"))

    # Handlers _Edge calls straight for POST to their path (filled in below): the same handler
    # as the route, without FastAPI's routing and dependency solving on the way to the first token.
    direct: dict[str, Callable] = {}
    app.add_middleware(_Edge, token=settings.token, direct=direct)

    async def read_json(request: Request) -> tuple[bytes, Any]:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise APIError(413, f"request body is {int(declared)} bytes; the limit is {settings.max_body_bytes}", "request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise APIError(413, f"request body exceeds the limit of {settings.max_body_bytes} bytes", "request_too_large")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise APIError(400, "request body is not valid JSON") from None
        lone = lone_surrogate(raw, body)
        if lone:
            raise APIError(400, f"request body is not valid JSON: a string holds a lone UTF-16 surrogate ({lone}), "
                                "as a string cut inside an emoji does; send whole characters")
        return raw, body

    # --- health

    @app.api_route("/", methods=["GET", "HEAD"])
    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health():
        return {"status": "ok", "model": STUDENT_MODEL_ID, "backend": getattr(backend, "name", "custom")}

    model_info = {"type": "model", "id": STUDENT_MODEL_ID, "display_name": "understudy student", "created_at": "2026-01-01T00:00:00Z"}

    @app.get("/v1/models")
    async def models():
        return {"data": [model_info], "has_more": False, "first_id": STUDENT_MODEL_ID, "last_id": STUDENT_MODEL_ID}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        # Any model name a client sends is served by the student, so any id resolves to it.
        return dict(model_info, id=model_id) if model_id != STUDENT_MODEL_ID else model_info

    # --- A/B

    def route(request: Request, body: Any) -> str:
        if settings.ab is None:
            return "student"
        sid = session_id_of(request.headers, body)
        if not sid:
            return "upstream"
        return app.state.arm_log.assign(sid, settings.ab.student_share, settings.ab_salt)

    async def proxy(request: Request, raw: bytes):
        import httpx

        if app.state.http is None:
            app.state.http = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=10.0))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        headers["accept-encoding"] = "identity"
        if settings.token:
            # The client authenticated to us; upstream needs its own key.
            headers.pop("x-api-key", None)
            headers.pop("authorization", None)
            if settings.upstream_api_key:
                headers["x-api-key"] = settings.upstream_api_key
        url = settings.ab.upstream + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            upstream_request = app.state.http.build_request(request.method, url, headers=headers, content=raw)
            resp = await app.state.http.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            raise APIError(502, f"upstream {settings.ab.upstream} unreachable: {exc}", "api_error") from None
        passed = {
            k: v for k, v in resp.headers.items()
            if k.lower() in ("content-type", "request-id", "retry-after", "anthropic-ratelimit-requests-remaining")
            or k.lower().startswith("anthropic-")
        }
        passed["x-understudy-arm"] = "upstream"
        # A response already read (a test's mock transport) has no raw stream left to pass on.
        body = resp.aiter_raw() if not resp.is_stream_consumed else _once(resp.content)
        return StreamingResponse(body, status_code=resp.status_code, headers=passed, background=BackgroundTask(resp.aclose))

    # --- the student

    n_ctx = getattr(backend, "n_ctx", None) or settings.n_ctx
    gen_queue = GenerationQueue(settings.max_queue)
    app.state.queue = gen_queue

    def constraint_of(body: dict, offered: list[str]) -> Constraint:
        kind, name, parallel = tool_choice_of(body)
        names = [name] if kind == "tool" else (offered or [t["name"] for t in body["tools"]]) if kind == "any" else []
        return Constraint(kind=kind, names=names, parallel=parallel)

    prompts = PromptCache()

    def render_and_count(body: dict) -> tuple[str, list[str], int]:
        prompt, offered = build_prompt(body, settings.context, tokenizer, prompts)
        return prompt, offered, backend.count(prompt, n_ctx)

    async def prepare(body: dict, size: int) -> tuple[str, list[str], int]:
        """(prompt, tools shown, prompt tokens); 400 when the prompt leaves no room in the context."""
        if size <= INLINE_BODY_BYTES:  # about a millisecond: a thread hop would cost more (TTFT)
            prompt, offered, input_tokens = render_and_count(body)
        else:  # off the event loop: rendering and counting a long request takes a while
            prompt, offered, input_tokens = await asyncio.to_thread(render_and_count, body)
        if input_tokens >= n_ctx:
            raise APIError(400, f"prompt is too long: {input_tokens} tokens > {n_ctx - 1} maximum")
        return prompt, offered, input_tokens

    def gen_params(body: dict, input_tokens: int, constraint: Constraint) -> GenParams:
        temperature = settings.temperature if settings.temperature is not None else float(body.get("temperature") or 0.0)
        if temperature < GREEDY_BELOW_TEMPERATURE:
            # Logits divided by a subnormal temperature overflow to inf and sampling fails; any
            # temperature this low picks the likeliest token anyway.
            temperature = 0.0
        room = n_ctx - input_tokens
        return GenParams(
            max_new_tokens=max(1, min(int(body["max_tokens"]), room, settings.max_new_tokens or room)),
            temperature=temperature,
            top_p=body.get("top_p"),
            top_k=body.get("top_k"),
            constraint=constraint,
            greedy_calls=settings.greedy_tool_calls,
            prompt_tokens=input_tokens,
        )

    def stop_watch(body: dict, constraint: Constraint) -> Callable[[str], bool]:
        """Runs in the generating thread on each token's text: True stops generation right there."""
        stops = list(body.get("stop_sequences") or [])
        if constraint.kind == "auto" and not constraint.parallel:
            stops.append(TOOL_CALL_CLOSE)  # one call, then the turn ends
        if not stops:
            return lambda piece: False
        longest = max(len(s) for s in stops)
        seen = {"text": ""}

        def watch(piece: str) -> bool:
            seen["text"] = (seen["text"] + piece)[-(longest + len(piece)):]
            return any(s in seen["text"] for s in stops)

        return watch

    class Generation:
        """backend.generate in a worker thread, started when this is made (before the response
        is: llama.cpp processes the prompt while the HTTP response and message_start go out);
        iterate it for ("text", piece) ... then ("done", GenResult) or ("error", message)."""

        def __init__(self, prompt: str, params: GenParams, cancel: threading.Event, watch: Callable[[str], bool]):
            loop = asyncio.get_running_loop()
            self.cancel = cancel
            self.queue: asyncio.Queue = asyncio.Queue()
            put = self.queue.put_nowait

            def emit(piece: str):
                if watch(piece):
                    cancel.set()  # before the backend chooses another token: usage stays exact
                loop.call_soon_threadsafe(put, ("text", piece))

            started = threading.Event()

            def work():
                started.set()
                try:
                    result = backend.generate(prompt, params, cancel, emit)
                    loop.call_soon_threadsafe(put, ("done", result))
                except Exception as exc:  # reported to the client, never a hung stream
                    loop.call_soon_threadsafe(put, ("error", f"{type(exc).__name__}: {exc}"))

            self.future = loop.run_in_executor(generators, work)
            # Hand the GIL to the worker now: it runs on to the backend, which releases the GIL
            # while llama.cpp works, before this thread sends the response head. Otherwise the
            # worker waited for the event loop to go idle: llama.cpp started ~0.7 ms later.
            started.wait(0.005)

        async def __aiter__(self):
            pending = None
            try:
                while True:
                    kind, value = pending or await self.queue.get()
                    pending = None
                    # Pieces that queued up while the loop was busy go out together (one write).
                    while kind == "text" and not self.queue.empty():
                        more = self.queue.get_nowait()
                        if more[0] != "text":
                            pending = more
                            break
                        value += more[1]
                    yield kind, value
                    if kind in ("done", "error"):
                        break
            finally:
                await self.close()

        async def close(self) -> None:
            # Finished, or the client is gone: either way the worker stops at its next token
            # (or its next prompt batch, when still processing the prompt).
            self.cancel.set()
            try:
                await asyncio.wait_for(asyncio.shield(self.future), timeout=30)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                pass

    def message_envelope(body: dict, input_tokens: int) -> dict:
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model") or STUDENT_MODEL_ID,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }

    def cut_off(result: Optional[GenResult], asm: OutputAssembler) -> bool:
        return asm.stop_sequence is not None or (result is not None and result.finish == "length")

    def stop_reason(result: Optional[GenResult], blocks: list[dict], asm: OutputAssembler) -> str:
        # Checked before the blocks: a reply that ran out of tokens says so even when it holds a
        # call (one the limit cut short, or a whole one with a second cut off after it), so the
        # client knows it was truncated instead of running a call with missing input.
        if asm.stop_sequence is not None:
            return "stop_sequence"
        if result is not None and result.finish == "length":
            return "max_tokens"
        if blocks:
            return "tool_use"
        return "end_turn"

    async def student_message(request: Request, body: dict, size: int):
        prompt, offered, input_tokens = await prepare(body, size)
        constraint = constraint_of(body, offered)
        params = gen_params(body, input_tokens, constraint)
        watch = stop_watch(body, constraint)
        asm = OutputAssembler(offered, body.get("stop_sequences") or [], constraint)
        envelope = message_envelope(body, input_tokens)
        # What max_tokens became, so a cap is never silent (the context, serve.max_new_tokens).
        headers = {"x-understudy-arm": "student", "x-understudy-max-tokens": str(params.max_new_tokens)}
        cancel = threading.Event()
        slot = await gen_queue.acquire(request.is_disconnected)
        if slot is None:  # the client left while waiting: nothing to answer
            return Response(status_code=499)

        generation = Generation(prompt, params, cancel, watch)

        if not body.get("stream"):
            watcher = asyncio.ensure_future(_watch_disconnect(request, cancel))
            result, error = None, None
            try:
                async for kind, value in generation:
                    if kind == "text":
                        asm.feed(value)
                    elif kind == "done":
                        result = value
                    else:
                        error = value
            finally:
                watcher.cancel()
                slot.release()
            if error:
                raise APIError(500, f"generation failed: {error}", "api_error")
            text, blocks = asm.finish(cut_off(result, asm))
            content = ([{"type": "text", "text": text}] if text else []) + blocks
            envelope.update(
                content=content,
                stop_reason=stop_reason(result, blocks, asm),
                stop_sequence=asm.stop_sequence,
            )
            envelope["usage"]["output_tokens"] = result.output_tokens if result else 0
            return JSONResponse(envelope, headers=headers)

        async def events():
            # Each step's events go out as one write: a separate write for content_block_start
            # before the first delta cost the first token a trip through the server's send path.
            yield _sse("message_start", {"type": "message_start", "message": envelope}) + _sse("ping", {"type": "ping"})
            index = 0
            text_open = False
            result = None
            try:
                async for kind, value in generation:
                    if kind == "text":
                        new = asm.feed(value)
                        if new:
                            out = b""
                            if not text_open:
                                out = _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
                                text_open = True
                            yield out + _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": new}})
                    elif kind == "done":
                        result = value
                    else:
                        yield _sse("error", {"type": "error", "error": {"type": "api_error", "message": f"generation failed: {value}"}})
                        return
                text, blocks = asm.finish(cut_off(result, asm))
                rest = asm.remainder(text)
                out = []
                if rest:
                    if not text_open:
                        out.append(_sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}))
                        text_open = True
                    out.append(_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": rest}}))
                if text_open:
                    out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
                    index += 1
                for block in blocks:
                    out.append(_sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": dict(block, input={})}))
                    out.append(_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"], ensure_ascii=False)}}))
                    out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
                    index += 1
                out.append(_sse(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop_reason(result, blocks, asm), "stop_sequence": asm.stop_sequence},
                        "usage": {"output_tokens": result.output_tokens if result else 0},
                    },
                ))
                out.append(_sse("message_stop", {"type": "message_stop"}))
                yield b"".join(out)
            finally:
                # Client gone (the generator is closed) or done: stop generating either way.
                await generation.close()
                slot.release()

        async def after_response():
            # Also when the stream never started (the client left first): the generation is
            # already running, so stop it before the slot passes on.
            await generation.close()
            slot.release()

        return _EventStream(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", **headers},
            background=BackgroundTask(after_response),
        )

    @app.post("/v1/messages")
    async def messages(request: Request):
        raw, body = await read_json(request)
        arm = route(request, body)
        if arm == "upstream":
            return await proxy(request, raw)
        validate_request(body, max_tokens_limit=settings.max_tokens_limit)
        return await student_message(request, body, len(raw))

    async def messages_direct(scope, receive, send):
        """POST /v1/messages as the route serves it (its exception handler for APIError
        included), called by _Edge without FastAPI's router and dependency solving."""
        try:
            response = await messages(Request(scope, receive))
        except APIError as exc:
            response = error_response(exc)
        await response(scope, receive, send)

    direct["/v1/messages"] = messages_direct

    @app.post("/v1/messages/count_tokens")
    async def count_tokens(request: Request):
        raw, body = await read_json(request)
        if route(request, body) == "upstream":
            return await proxy(request, raw)
        validate_request(body, count_only=True)
        prompt, _ = await asyncio.to_thread(build_prompt, body, settings.context, tokenizer)
        return {"input_tokens": await asyncio.to_thread(backend.count, prompt)}

    return app


class _Edge:
    """Pure ASGI middleware (no per-chunk cost on streams): a `request-id` header on every
    response, as the API sends, and the token check on /v1/ in constant time."""

    def __init__(self, app, token: str = "", direct: Optional[dict] = None):
        self.app = app
        self.token = token.encode()
        self.direct = direct if direct is not None else {}

    def _authorized(self, scope) -> bool:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        key = headers.get("x-api-key", "")
        bearer = headers.get("authorization", "")
        bearer = bearer[7:].strip() if bearer.lower().startswith("bearer ") else ""
        # Both compared, each with compare_digest: timing says nothing about the token.
        ok_key = hmac.compare_digest(key.encode(), self.token)
        ok_bearer = hmac.compare_digest(bearer.encode(), self.token)
        return ok_key | ok_bearer

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = f"req_{uuid.uuid4().hex[:24]}".encode()

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"request-id" for k, _ in headers):  # an upstream's own passes through
                    headers.append((b"request-id", request_id))
                message = dict(message, headers=headers)
            await send(message)

        if self.token and scope["path"].startswith("/v1/") and not self._authorized(scope):
            body = json.dumps(APIError(401, "invalid x-api-key", "authentication_error").body()).encode()
            await send_with_id({"type": "http.response.start", "status": 401,
                                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send_with_id({"type": "http.response.body", "body": body})
            return
        handler = self.direct.get(scope["path"]) if scope["method"] == "POST" and not scope.get("root_path") else None
        await (handler or self.app)(scope, receive, send_with_id)


def _event_stream_class():
    from starlette.responses import StreamingResponse

    class EventStream(StreamingResponse):
        """Starlette's StreamingResponse less its anyio task group, the costliest step between
        the handler and the first token: the body streams in the request's own task, and a
        client that disconnects cancels it, as the task group did."""

        async def __call__(self, scope, receive, send) -> None:
            task = asyncio.current_task()
            state = {"streaming": True, "disconnected": False}

            async def listen() -> None:
                await self.listen_for_disconnect(receive)
                if state["streaming"]:  # after the last body message, receive() reports a disconnect too
                    state["disconnected"] = True
                    task.cancel()

            listener = asyncio.ensure_future(listen())
            try:
                await self.stream_response(send)
            except asyncio.CancelledError:
                if not state["disconnected"]:
                    raise
                if hasattr(task, "uncancel"):  # Python 3.11+: the cancellation was ours, and is handled
                    task.uncancel()
            finally:
                state["streaming"] = False
                listener.cancel()
            if self.background is not None:
                await self.background()

    return EventStream


async def _once(data: bytes):
    yield data


async def _watch_disconnect(request, cancel: threading.Event) -> None:
    while not cancel.is_set():
        if await request.is_disconnected():
            cancel.set()
            return
        await asyncio.sleep(0.25)


# ---------------------------------------------------------------------------------------------
# CLI


def _resolve(config_path: Optional[str], overrides: list[str], flags: list[tuple[str, Any]]) -> UnderstudyConfig:
    path = config_path or default_config_path()
    try:
        pairs = parse_overrides([a for o in overrides for a in ("-o", o)]) + [(k, v) for k, v in flags if v is not None]
        return load_config(path, pairs)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


@click.group("serve", invoke_without_command=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="understudy.toml or YAML.")
@click.option("--model", help="HF model dir, or a .gguf file for the llama.cpp backend (serve.model).")
@click.option("--backend", type=click.Choice(["transformers", "llamacpp"]), help="serve.backend (default: from --model).")
@click.option("--host", help="serve.host (default 127.0.0.1).")
@click.option("--port", type=int, help="serve.port (default 8765).")
@click.option("--token", help="Require this as x-api-key or Bearer token (serve.token; or UNDERSTUDY_SERVE_TOKEN).")
@click.option("--ab", help="A/B rollout: upstream=URL,student=SHARE (serve.ab).")
@click.option("-o", "--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Any config value, e.g. -o serve.max_new_tokens=256.")
@click.pass_context
def command(ctx, config_path, model, backend, host, port, token, ab, overrides):
    """Serve the student behind an Anthropic Messages API that Claude Code can use.

    Point Claude Code at it with ANTHROPIC_BASE_URL=http://127.0.0.1:PORT. `trainer serve arms`
    lists which A/B arm served each session.
    """
    if ctx.invoked_subcommand is not None:
        return
    cfg = _resolve(
        config_path,
        list(overrides),
        [("serve.model", model), ("serve.backend", backend), ("serve.host", host), ("serve.port", port), ("serve.token", token), ("serve.ab", ab)],
    )
    serve_forever(cfg)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (and ::ffff:127.x) or localhost: reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


# The dataset settings that decide what the student sees: serve must map a request the way the
# student's training examples were built.
TRAINED_CONTEXT_KEYS = ("system_prompt", "working_directory", "working_directory_turn", "max_tool_result_tokens",
                        "tool_description_chars", "tool_schema", "tools")
# What a run recorded before a key existed: its students were trained that way.
TRAINED_BEFORE_THE_KEY = {"working_directory_turn": "system"}


def adopt_trained_context(cfg: UnderstudyConfig, model: str, log: Callable[[str], None]) -> list[str]:
    """Take the student's training-time dataset settings for those this command left at their
    defaults (a value set by a file or a flag wins); returns the keys taken."""
    path = trained_config_path(Path(model))
    if path is None:
        return []
    try:
        trained = json.loads(path.read_text())["config"]["dataset"]
        assert isinstance(trained, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        log(f"Note: {path} is unreadable; the request context uses this command's dataset settings.")
        return []
    trained = {**TRAINED_BEFORE_THE_KEY, **trained}
    taken = []
    for key in TRAINED_CONTEXT_KEYS:
        dotted = f"dataset.{key}"
        if key in trained and cfg.source(dotted) == "default" and trained[key] != getattr(cfg.dataset, key):
            setattr(cfg.dataset, key, trained[key])
            cfg.sources[dotted] = "trained"
            taken.append(key)
    if taken:
        log(f"Context as the student was trained ({path}): {', '.join(f'dataset.{k}' for k in taken)}.")
    return taken


def serve_forever(cfg: UnderstudyConfig, log: Callable[[str], None] = click.echo) -> None:
    try:
        importlib.import_module("fastapi")
        import uvicorn
    except ImportError as e:
        raise click.ClickException(
            f"trainer serve needs the [serve] extra ({e.name} is missing): ./install.sh --train "
            "(it includes serve), or pip install 'understudy[serve]'"
        ) from None

    s = cfg.serve
    model = s.model or str(Path(cfg.sft.output_dir or Path(cfg.run.out) / "sft") / "final")
    adopt_trained_context(cfg, model, log)
    try:
        settings = ServerSettings.from_config(cfg)
        backend_name = s.backend if cfg.source("serve.backend") != "default" else ""
        backend = load_backend(model, backend_name, n_ctx=s.n_ctx)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    if not is_loopback(s.host) and not settings.token:
        log(f"Warning: listening on {s.host} without a token; anyone who can reach it can use the model (set --token).")
    log(f"Serving {model} ({backend.name}) on http://{s.host}:{s.port} · context {s.context}")
    if settings.ab:
        log(
            f"A/B: {settings.ab.student_share:.0%} of sessions → student, the rest → {settings.ab.upstream}; "
            f"arms logged in {arms_db_path()}"
        )
    log(f"Use it: ANTHROPIC_BASE_URL=http://{s.host}:{s.port} claude")
    uvicorn.run(create_app(backend, settings), host=s.host, port=s.port, log_level="warning")


@command.command("arms")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per session.")
def arms_command(as_json):
    """List the A/B assignment of each session: session id, arm, first seen, share, requests."""
    path = arms_db_path()
    if not path.exists():
        raise click.ClickException(f"No A/B log at {path}: run `trainer serve --ab upstream=URL,student=SHARE` first")
    log = ArmLog(path)
    rows = log.rows()
    log.close()
    if as_json:
        for sid, arm, first, share, n in rows:
            click.echo(json.dumps({"session_id": sid, "arm": arm, "first_seen": first, "share": share, "requests": n}))
        return
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    click.echo(f"{path}: {len(rows)} sessions · " + ", ".join(f"{arm} {n}" for arm, n in sorted(counts.items())))
    for sid, arm, first, share, n in rows:
        click.echo(f"{sid}  {arm:<8}  {first}  share={share:g}  requests={n}")


class BackgroundServer:
    """uvicorn in a thread on a free port: for tests, benchmarks and notebooks.

        with BackgroundServer(create_app(backend)) as server:
            httpx.get(server.base_url + "/health")
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.base_url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
