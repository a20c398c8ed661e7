"""Tiny builders for Trace objects in unit tests (no store, no daemon)."""

from __future__ import annotations

import itertools
from typing import Any, Optional

from capture_daemon.schema import TextStep, ToolCall, Trace

LONG_ANSWER = " ".join(["word"] * 60)


def call(
    name: str,
    success: bool = True,
    group: Optional[int] = None,
    agent: Optional[str] = None,
    error: Optional[str] = None,
    **inp: Any,
) -> ToolCall:
    """A tool call; `group` None gives it a parallel group of its own (assigned by `trace`)."""
    c = ToolCall(
        tool_use_id="",
        name=name,
        input=inp,
        success=success,
        error=error if error is not None else (None if success else "failed"),
        agent_id=agent,
        parallel_group=-1 if group is None else group,
    )
    return c


def bash(command: str, **kw: Any) -> ToolCall:
    return call("Bash", command=command, **kw)


def read(path: str, **kw: Any) -> ToolCall:
    return call("Read", file_path=path, **kw)


def edit(path: str, **kw: Any) -> ToolCall:
    return call("Edit", file_path=path, old_string="a", new_string="b", **kw)


def trace(
    calls: list[ToolCall] = (),
    texts: list[tuple[int, str]] = (),
    answer: Optional[str] = LONG_ANSWER,
    prompt: str = "Fix the failing test",
    complete: bool = True,
    source: str = "hook",
    **extra: Any,
) -> Trace:
    """`texts` are (position, text) for the main agent's narration."""
    counter = itertools.count(1000)
    calls = [c.model_copy() for c in calls]
    for i, c in enumerate(calls):
        c.tool_use_id = f"toolu_{i:03d}"
        if c.parallel_group == -1:
            c.parallel_group = next(counter)
    return Trace(
        trace_id="t" * 32,
        session_id="s1",
        prompt_id="p1",
        prompt=prompt,
        final_response=answer,
        complete=complete,
        source=source,
        tool_calls=calls,
        assistant_text=[TextStep(text=t, position=p) for p, t in texts],
        **extra,
    )
