"""Where redaction is applied: every piece of text is scrubbed once, where it enters.

`redact.py` knows what a secret looks like; this module knows understudy's data. Text
enters a trace from two places only, hook payloads and transcripts, so scrubbing those
at the door keeps the store, the exports and every trace built from them clean, without
scrubbing each assembled trace again (which was half of the ingest time). Imports, which
have no hook events, scrub the finished trace with `scrub_trace`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from capture_daemon.content_blocks import leave_out_base64
from capture_daemon.redact import redact_value
from capture_daemon.schema import Trace
from capture_daemon.secret_output import (
    MARK as SECRET_OUTPUT_MARK,
    credential_read,
    mark_bash_mode_credentials,
    mark_credential_lines,
    mark_secret_output,
    named_credential_files,
    output_is_secret,
    remember_names,
    strings_in,
)
from capture_daemon.transcript import PromptTurns

# Identifiers and flags Claude Code generates, never user text.
_ID_FIELDS = frozenset({"session_id", "prompt_id", "tool_use_id", "hook_event_name", "agent_id", "agent_type",
                        "permission_mode", "effort", "duration_ms", "stop_hook_active", "is_interrupt", "source"})
_tools_cache: dict[bytes, list] = {}
# Edit, MultiEdit and Write report the whole file as it was before the change (`originalFile`).
# The model never reads it (its result is one line), so it is no part of the workflow; kept, a
# 1 MB file edited twenty times would be redacted and stored twenty times.
FILE_COPY_LEFT_OUT = "[original file left out]"


def scrub_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A hook payload with every field that can hold user text redacted."""
    if "tool_response" in payload:  # before redaction, which would scan megabytes of an image or a file
        payload = {**payload, "tool_response": _leave_out_file_copy(leave_out_base64(payload["tool_response"]))}
    payload = mark_secret_output(payload)  # `pass show x` printed a password
    kept, text = {}, {}
    for key, value in payload.items():
        if key in _ID_FIELDS and (not isinstance(value, str) or len(value) <= 64):
            kept[key] = value
        else:
            text[key] = value
    return {**kept, **redact_value(text)}  # a dict, so secret-named keys are seen too


def _leave_out_file_copy(response: Any) -> Any:
    if isinstance(response, dict) and isinstance(response.get("originalFile"), str) and response["originalFile"]:
        return {**response, "originalFile": FILE_COPY_LEFT_OUT}
    return response


def scrub_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Offered tool schemas are the bulk of a transcript and the same for every prompt of a
    Claude Code version: redacted once, then reused."""
    key = hashlib.sha1(orjson.dumps(tools)).digest()
    if key not in _tools_cache:
        if len(_tools_cache) > 64:
            _tools_cache.clear()
        _tools_cache[key] = redact_value(tools)
    return _tools_cache[key]


def scrub_turns(turns: PromptTurns) -> PromptTurns:
    """Redact one prompt's transcript content in place (once: later calls are no-ops)."""
    if getattr(turns, "scrubbed", False):
        return turns
    # (Files a config or command names as holding a login: `auth-user-pass creds.txt`.)
    said = [turns.prompt, [b.text for b in turns.blocks if b.kind == "mid_turn"]]  # the user's own words
    named = remember_names(turns.session_id, named_credential_files(
        strings_in([said, [b.input for b in turns.blocks], [r.text for r in turns.results.values()]])))
    turns.prompt = redact_value(mark_bash_mode_credentials(turns.prompt, named))  # `!cat up.dat`
    for block in turns.blocks:
        if block.kind == "mid_turn":  # typed by the user, as the prompt was: redacted the same way
            block.text = redact_value(mark_bash_mode_credentials(block.text, named))
            continue
        if block.kind == "tool_use" and block.tool_use_id in turns.results and output_is_secret(block.name, block.input):
            turns.results[block.tool_use_id].text = SECRET_OUTPUT_MARK  # `pass show x` printed a password
        elif block.kind == "tool_use" and block.tool_use_id in turns.results:
            password_file = credential_read(block.name, block.input, named)
            if password_file is not None:  # `cat creds.txt`: a user, then its password
                result = turns.results[block.tool_use_id]
                result.text = mark_credential_lines(result.text, password_file)
        block.text = redact_value(block.text)
        block.input = redact_value(block.input)
    for result in turns.results.values():
        result.text = redact_value(result.text)
        # Of the structured result only the agent id a call started is read (it links a subagent
        # to its call when no PostToolUse names it: an import); the rest is not kept.
        agent = result.structured.get("agentId") if isinstance(result.structured, dict) else None
        result.structured = {"agentId": agent} if isinstance(agent, str) else None
    turns.tools_offered = scrub_tools(turns.tools_offered)
    turns.scrubbed = True  # type: ignore[attr-defined]
    return turns


def scrub_trace(trace: Trace) -> Trace:
    """Every string of a finished trace redacted (for traces not built from scrubbed parts)."""
    data = trace.model_dump(mode="json", exclude={"tools_offered"})
    said = [data.get("prompt"), [m.get("text") for m in data.get("mid_turn_messages", [])]]
    named = named_credential_files(strings_in([said, [[c.get("input"), c.get("output")] for c in data.get("tool_calls", [])]]))
    for call in data.get("tool_calls", []):
        if call.get("output") and output_is_secret(call.get("name"), call.get("input")):
            call["output"] = SECRET_OUTPUT_MARK  # `pass show x` printed a password
        elif call.get("output"):
            password_file = credential_read(call.get("name"), call.get("input"), named)
            if password_file is not None:  # `cat creds.txt`: a user, then its password
                call["output"] = mark_credential_lines(call["output"], password_file)
    if "prompt" in data:
        data["prompt"] = mark_bash_mode_credentials(data["prompt"], named)  # `!cat up.dat`
    for message in data.get("mid_turn_messages", []):
        message["text"] = mark_bash_mode_credentials(message["text"], named)
    data = redact_value(data)
    data["tools_offered"] = scrub_tools(trace.tools_offered)
    return Trace.model_validate(data)
