"""Reading Claude Code session transcripts (`transcript_path`, `agent_transcript_path`).

The hooks say *what* was called; the transcript says what the model *said* around the calls:
narration, thinking, the final answer, the model id, token usage, and the tool schemas it
was offered (`api-request-shape` rows). Facts about the format that shape this code:

* one content block per row: an assistant message arrives as several rows sharing
  `message.id`, so blocks are merged by that id (which also tells which calls were issued
  together, i.e. in parallel);
* `promptId` sits on user rows; assistant rows belong to the latest prompt before them;
* the file may be mid-write (a partial last line), may hold corrupt lines or lone
  surrogates; none of that may stop the rest from being read;
* a large tool output is saved to a `tool-results/` file; the model sees a preview.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capture_daemon.spool import parse_json

TASK_NOTIFICATION = "<task-notification>"
MAX_TOOL_RESULT_FILE_CHARS = 200_000
# Only these rows matter here; skipping the rest unparsed (attachments and prompt snapshots
# are most of a transcript's bytes) is what makes importing months of history fast.
_WANTED_ROW = re.compile(rb'"type":\s?"(?:user|assistant|api-request-shape)"')
_TOOL_RESULTS_FILE = re.compile(r"(/[^\s'\"<>]*/tool-results/[^\s'\"<>]+)")


@dataclass
class Block:
    kind: str  # "text" | "thinking" | "tool_use"
    message_id: str
    text: str = ""
    tool_use_id: str = ""
    name: str = ""
    input: dict[str, Any] = field(default_factory=dict)
    timestamp: str | None = None


@dataclass
class ToolResult:
    text: str
    is_error: bool
    structured: Any = None  # `toolUseResult`: the tool's own structured result
    # For an output Claude Code persisted to tool-results/ (the model saw only a preview):
    # the full output's length in characters.
    full_chars: int | None = None


@dataclass
class PromptTurns:
    prompt_id: str
    prompt: str = ""
    is_notification: bool = False
    blocks: list[Block] = field(default_factory=list)
    results: dict[str, ToolResult] = field(default_factory=dict)
    model: str | None = None
    usage_by_message: dict[str, dict[str, int]] = field(default_factory=dict)
    tools_offered: list[dict[str, Any]] = field(default_factory=list)
    started_at: str | None = None
    ended_at: str | None = None
    cwd: str | None = None

    def usage(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for usage in self.usage_by_message.values():
            for key, value in usage.items():
                total[key] = total.get(key, 0) + value
        return total


@dataclass
class Transcript:
    path: str
    session_id: str | None = None
    agent_id: str | None = None
    prompts: dict[str, PromptTurns] = field(default_factory=dict)
    corrupt_lines: int = 0
    partial_tail: bool = False


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif isinstance(block, dict) and block.get("type") == "image":
                parts.append("[image]")
        return "\n".join(parts)
    return ""


def _numeric_usage(usage: Any) -> dict[str, int]:
    if not isinstance(usage, dict):
        return {}
    return {k: v for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool)}


def _persisted_output_chars(text: str) -> int | None:
    """A huge output is saved to tool-results/ and the model sees a preview naming the file.
    The preview is what the model saw, so it stays the observation; the file tells how big
    the output really was."""
    if "tool-results/" not in text:
        return None
    match = _TOOL_RESULTS_FILE.search(text)
    if not match:
        return None
    try:
        with open(match.group(1), "r", encoding="utf-8", errors="replace") as handle:
            return len(handle.read(MAX_TOOL_RESULT_FILE_CHARS * 50))
    except OSError:
        return None


def parse_transcript(path: str | Path, data: bytes | None = None) -> Transcript:
    """Parse a transcript file; never raises for bad content (missing file → OSError)."""
    if data is None:
        data = Path(path).read_bytes()
    transcript = Transcript(path=str(path))
    lines = data.split(b"\n")
    if lines and lines[-1].strip():
        # No trailing newline: the writer may be mid-line. Parse it if it is whole.
        transcript.partial_tail = True
    current: PromptTurns | None = None
    tools_offered: list[dict[str, Any]] = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        if not _WANTED_ROW.search(line):
            if index == len(lines) - 1:
                transcript.partial_tail = transcript.partial_tail and not line.rstrip().endswith(b"}")
            continue
        try:
            row = parse_json(line)
        except (ValueError, UnicodeDecodeError):
            if index == len(lines) - 1:
                continue  # the partial tail; it will be whole on a later read
            transcript.corrupt_lines += 1
            continue
        if index == len(lines) - 1:
            transcript.partial_tail = False
        if not isinstance(row, dict):
            transcript.corrupt_lines += 1
            continue
        kind = row.get("type")
        transcript.session_id = transcript.session_id or row.get("sessionId")
        transcript.agent_id = transcript.agent_id or row.get("agentId")
        if kind == "api-request-shape":
            tools = (row.get("shape") or {}).get("tools")
            if isinstance(tools, list):
                tools_offered = [t for t in tools if isinstance(t, dict) and t.get("name")]
                if current is not None and not current.tools_offered:
                    current.tools_offered = tools_offered
        elif kind == "user":
            current = _user_row(transcript, row, current, tools_offered)
        elif kind == "assistant" and current is not None:
            _assistant_row(current, row)
    return transcript


def _user_row(transcript: Transcript, row: dict, current: PromptTurns | None, tools_offered: list) -> PromptTurns | None:
    message = row.get("message") or {}
    content = message.get("content")
    prompt_id = row.get("promptId")
    if prompt_id and (current is None or current.prompt_id != prompt_id):
        current = transcript.prompts.get(prompt_id)
        if current is None:
            current = PromptTurns(prompt_id=prompt_id, tools_offered=tools_offered, started_at=row.get("timestamp"), cwd=row.get("cwd"))
            transcript.prompts[prompt_id] = current
    if current is None:
        return None
    current.ended_at = row.get("timestamp") or current.ended_at
    if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                text = _text_of(block.get("content"))
                current.results[str(block.get("tool_use_id"))] = ToolResult(
                    text=text, is_error=bool(block.get("is_error")), structured=row.get("toolUseResult"),
                    full_chars=_persisted_output_chars(text))
    elif not row.get("isMeta") and not current.prompt:
        text = _text_of(content)
        current.prompt = text
        current.is_notification = text.lstrip().startswith(TASK_NOTIFICATION)
    return current


def _assistant_row(current: PromptTurns, row: dict) -> None:
    message = row.get("message") or {}
    message_id = str(message.get("id") or row.get("uuid") or "")
    current.model = message.get("model") or current.model
    current.ended_at = row.get("timestamp") or current.ended_at
    usage = _numeric_usage(message.get("usage"))
    if usage:
        current.usage_by_message[message_id] = usage  # repeated per block: keep one per message
    content = message.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    for block in content or []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and str(block.get("text", "")).strip():
            current.blocks.append(Block("text", message_id, text=str(block["text"]), timestamp=row.get("timestamp")))
        elif kind == "thinking" and str(block.get("thinking", "")).strip():
            current.blocks.append(Block("thinking", message_id, text=str(block["thinking"]), timestamp=row.get("timestamp")))
        elif kind == "tool_use":
            current.blocks.append(Block(
                "tool_use", message_id, tool_use_id=str(block.get("id")), name=str(block.get("name")),
                input=block.get("input") if isinstance(block.get("input"), dict) else {}, timestamp=row.get("timestamp")))


def notification_target(prompt: str) -> tuple[str | None, str | None]:
    """(task_id, tool_use_id) named by a `<task-notification>` prompt."""
    task = re.search(r"<task-id>\s*([^<\s]+)\s*</task-id>", prompt)
    tool = re.search(r"<tool-use-id>\s*([^<\s]+)\s*</tool-use-id>", prompt)
    return (task.group(1) if task else None, tool.group(1) if tool else None)
