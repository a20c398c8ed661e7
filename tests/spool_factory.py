"""Write spool files exactly as hooks/capture_hook.py does, for tests and benchmarks that need
many events quickly (the real CLI makes the realistic ones: see test_capture_e2e.py)."""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

_counter = itertools.count()


def write_event(spool: Path, event: str, payload: dict, received_ns: int | None = None) -> Path:
    spool.mkdir(parents=True, exist_ok=True, mode=0o700)
    received_ns = received_ns or time.time_ns()
    payload = dict(payload, hook_event_name=event)
    body = json.dumps(payload).encode()
    header = {"v": 1, "event": event, "received_ns": received_ns, "bytes": len(body)}
    name = "%020d-%07d-%s.event" % (received_ns, next(_counter) % 10_000_000, event)
    tmp = spool / (name + ".tmp")
    tmp.write_bytes(json.dumps(header).encode() + b"\n" + body)
    os.replace(tmp, spool / name)
    return spool / name


def write_session(spool: Path, session_id: str, prompt_id: str, prompt: str, calls: list[tuple[str, dict, str]],
                  answer: str, *, cwd: str = "/home/dev/project", transcript_path: str | None = None,
                  stop: bool = True, start_ns: int | None = None) -> list[Path]:
    """One prompt's events: UserPromptSubmit, Pre/Post per call, Stop (optional)."""
    ns = start_ns or time.time_ns()
    common = {"session_id": session_id, "cwd": cwd, "transcript_path": transcript_path or f"/nonexistent/{session_id}.jsonl"}
    paths = [write_event(spool, "UserPromptSubmit", dict(common, prompt_id=prompt_id, prompt=prompt), ns)]
    for index, (name, tool_input, output) in enumerate(calls):
        tool_use_id = f"toolu_{session_id[:8]}_{prompt_id[:6]}_{index}"
        ns += 1000
        paths.append(write_event(spool, "PreToolUse", dict(common, prompt_id=prompt_id, tool_name=name,
                                                             tool_input=tool_input, tool_use_id=tool_use_id), ns))
        ns += 1000
        paths.append(write_event(spool, "PostToolUse", dict(common, prompt_id=prompt_id, tool_name=name,
                                                              tool_input=tool_input, tool_use_id=tool_use_id,
                                                              tool_response={"stdout": output, "stderr": ""},
                                                              duration_ms=5), ns))
    if stop:
        ns += 1000
        paths.append(write_event(spool, "Stop", dict(common, prompt_id=prompt_id, last_assistant_message=answer,
                                                       background_tasks=[]), ns))
    return paths
