"""Manual captures: a trace built by hand (the quick-start API) rather than by the hooks.

claude_capture_hook.py and claude_trace_schema.py are thin names over this module and
the store; a manual trace goes through the same redaction, analysis and store as a
captured one, with `source = "manual"`.

A manual trace's id is derived from its content (prompt, calls, response), so capturing
the same interaction twice stores it once.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from capture_daemon.schema import TextStep, ToolCall, Trace, make_trace_id

MANUAL_SESSION = "manual"

# When a tool's input is given as plain text, the key it goes under.
_TEXT_INPUT_KEY = {
    "Bash": "command",
    "Read": "file_path",
    "Edit": "file_path",
    "MultiEdit": "file_path",
    "Write": "file_path",
    "NotebookEdit": "notebook_path",
    "NotebookRead": "notebook_path",
    "Grep": "pattern",
    "Glob": "pattern",
    "LS": "path",
    "WebFetch": "url",
    "WebSearch": "query",
    "Agent": "prompt",
    "Task": "prompt",
}

ToolCallSpec = Union[ToolCall, Mapping[str, Any], Sequence[Any]]


def tool_input(name: str, value: Any) -> dict[str, Any]:
    """A tool input from a dict, a JSON object string, or plain text (see _TEXT_INPUT_KEY)."""
    if isinstance(value, Mapping):
        return dict(value)
    if value is None:
        return {}
    text = str(value).strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    return {_TEXT_INPUT_KEY.get(name, "input"): text}


def to_tool_call(spec: ToolCallSpec, index: int) -> ToolCall:
    """(name, input), (name, input, output), (name, input, output, success), a dict or a ToolCall."""
    if isinstance(spec, ToolCall):
        call = spec.model_copy(deep=True)
    elif isinstance(spec, Mapping):
        data = dict(spec)
        if "tool" in data and "name" not in data:
            data["name"] = data.pop("tool")
        data["input"] = tool_input(str(data.get("name", "")), data.get("input"))
        data.setdefault("tool_use_id", "")
        call = ToolCall.model_validate(data)
    else:
        items = list(spec)
        if not 1 <= len(items) <= 4:
            raise ValueError(f"tool call {index + 1}: expected (name, input[, output[, success]]), got {len(items)} items")
        name = str(items[0])
        output = items[2] if len(items) > 2 else None
        success = bool(items[3]) if len(items) > 3 else True
        call = ToolCall(tool_use_id="", name=name, input=tool_input(name, items[1] if len(items) > 1 else None),
                        output=None if output is None else str(output), success=success,
                        error=None if success else (None if output is None else str(output)))
    if not call.tool_use_id:
        call.tool_use_id = f"manual_{index + 1:03d}"
    # One call per assistant turn unless the caller said otherwise: a manual capture does not
    # know which calls were issued together, and the schema's default (0) would make them all
    # "parallel".
    if not (isinstance(spec, ToolCall) or (isinstance(spec, Mapping) and "parallel_group" in spec)):
        call.parallel_group = index
    return call


def build_trace(
    prompt: str,
    response: Optional[str],
    tool_calls: Iterable[ToolCallSpec] = (),
    *,
    narration: Iterable[tuple[int, str]] = (),
    session_id: Optional[str] = None,
    cwd: Optional[str] = None,
    model: Optional[str] = None,
    tool_sequence: Sequence[str] = (),
    now: Optional[datetime] = None,
) -> Trace:
    """A complete `source="manual"` trace. `narration` is (position, text) pairs.

    `tool_sequence` names the tools used when their calls were not logged.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("a capture needs a prompt")
    calls = [to_tool_call(spec, i) for i, spec in enumerate(tool_calls or ())]
    texts = [TextStep(text=t, position=int(p)) for p, t in narration]
    digest = hashlib.sha256(
        json.dumps(
            [prompt, response, [c.model_dump(mode="json") for c in calls], [t.model_dump() for t in texts],
             list(tool_sequence)],
            sort_keys=True, default=str,
        ).encode("utf-8", "surrogatepass")
    ).hexdigest()
    session_id = session_id or MANUAL_SESSION
    prompt_id = f"manual-{digest[:24]}"
    now = now or datetime.now(timezone.utc)
    trace = Trace(
        trace_id=make_trace_id(session_id, prompt_id),
        session_id=session_id,
        prompt_id=prompt_id,
        prompt=prompt,
        final_response=response,
        model=model,
        cwd=cwd if cwd is not None else os.getcwd(),
        started_at=now,
        ended_at=now,
        complete=True,
        source="manual",
        tool_calls=calls,
        assistant_text=texts,
    )
    if tool_sequence and not calls:
        trace.reasoning_signals.tool_sequence = list(tool_sequence)
    else:
        trace.reasoning_signals.tool_sequence = [c.name for c in trace.main_calls()]
    return trace


def save(trace: Trace, store_path: Optional[Path] = None) -> Trace:
    """Redact, analyze (with config.toml's rules) and store `trace`; return what was stored."""
    from capture_daemon.quality import analyze
    from capture_daemon.scrub import scrub_trace
    from capture_daemon.store import TraceStore

    trace = analyze(scrub_trace(trace))  # redacted and analysed as captured traces are
    with TraceStore.open(store_path) as store:
        store.put(trace)  # sets quality.duplicate_of when the same prompt and workflow is stored
    return trace
