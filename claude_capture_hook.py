"""The capture API from understudy's quick-start guide, over capture_daemon.

    from claude_capture_hook import quick_capture, ClaudeCapturer
    quick_capture(prompt="How many equipment tables are in the database?",
                  claude_response="There are 357 equipment tables...",
                  tool_calls=[("Bash", {"command": "psql -c '\\\\dt'"}, "357 tables")])
    print(ClaudeCapturer().get_trace_count())

    python -m claude_capture_hook        # guided capture: prompt, tool calls, response

Captures are `source="manual"` traces in the same store as the hooks' traces
($UNDERSTUDY_HOME/traces.db), redacted, analyzed and quality-scored the same way
(capture_daemon.manual). A tool call is (name, input[, output[, success]]), a dict with
those keys, or a capture_daemon.schema.ToolCall; an input may be a dict, a JSON object, or
plain text (a Bash command, a file path for Read/Edit/Write, a pattern for Grep/Glob, …).
Capturing the same interaction twice stores it once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable, Optional, TextIO

from capture_daemon import manual
from capture_daemon.schema import Trace

__all__ = ["quick_capture", "ClaudeCapturer", "main"]


def quick_capture(
    prompt: str,
    claude_response: Optional[str],
    tool_calls: Iterable[Any] = (),
    *,
    narration: Iterable[tuple[int, str]] = (),
    session_id: Optional[str] = None,
    cwd: Optional[str] = None,
    model: Optional[str] = None,
    store_path: Optional[Path] = None,
) -> Trace:
    """Store one interaction as a trace and return it, with its signals and quality verdict."""
    trace = manual.build_trace(prompt, claude_response, tool_calls, narration=narration,
                               session_id=session_id, cwd=cwd, model=model)
    return manual.save(trace, store_path)


class ClaudeCapturer:
    """Capture interactions step by step, or in one call; count what is stored.

        capturer = ClaudeCapturer()
        capturer.start("Why does the build fail?")
        capturer.log_text("I'll read the build log, then fix the import.")
        capturer.log_tool_call("Read", "build.log", "ImportError: no module named foo")
        capturer.log_tool_call("Edit", {"file_path": "setup.py", "old_string": "foo", "new_string": "bar"})
        trace = capturer.finish("The build failed because ...")
    """

    def __init__(self, store_path: Optional[Path] = None, session_id: Optional[str] = None,
                 cwd: Optional[str] = None, model: Optional[str] = None):
        self.store_path = store_path
        self.session_id = session_id
        self.cwd = cwd
        self.model = model
        self._prompt: Optional[str] = None
        self._calls: list[Any] = []
        self._texts: list[tuple[int, str]] = []

    def capture(self, prompt: str, claude_response: Optional[str], tool_calls: Iterable[Any] = (),
                narration: Iterable[tuple[int, str]] = ()) -> Trace:
        return quick_capture(prompt, claude_response, tool_calls, narration=narration, session_id=self.session_id,
                             cwd=self.cwd, model=self.model, store_path=self.store_path)

    def start(self, prompt: str) -> "ClaudeCapturer":
        self._prompt, self._calls, self._texts = prompt, [], []
        return self

    def log_text(self, text: str) -> "ClaudeCapturer":
        """Narration: what Claude said before the next tool call."""
        self._texts.append((len(self._calls), text))
        return self

    def log_tool_call(self, name: str, input: Any = None, output: Optional[str] = None,
                      success: bool = True) -> "ClaudeCapturer":
        self._calls.append((name, input, output, success))
        return self

    def finish(self, claude_response: Optional[str]) -> Trace:
        if self._prompt is None:
            raise RuntimeError("call start(prompt) before finish()")
        trace = self.capture(self._prompt, claude_response, self._calls, self._texts)
        self._prompt, self._calls, self._texts = None, [], []
        return trace

    def get_trace_count(self, accepted: Optional[bool] = None) -> int:
        """Traces in the store (all sources); `accepted=True` counts those the filter kept."""
        from capture_daemon.store import TraceStore

        with TraceStore.open(self.store_path) as store:
            return store.count(accepted=accepted)


# --------------------------------------------------------------------------- guided capture

GUIDE = """\
Guided capture: one Claude Code interaction becomes a training trace.
  1. The prompt you gave Claude. End it with an empty line.
  2. Each tool call Claude made, as `Tool: input` (a JSON object, or plain text: the command
     for Bash, the file path for Read/Edit/Write, the pattern for Grep/Glob), then its output
     on the next lines, then an empty line. Start the output with `ERROR:` if the call failed.
     A line starting with `>` before a call is Claude's narration. An empty entry ends the list.
  3. Claude's final response. End it with a line holding only `.` (or end of input).
"""


def _read_block(stream: TextIO, stop: str = "") -> Optional[list[str]]:
    """Lines up to a line equal to `stop` (stripped); None at end of input before any line."""
    lines: list[str] = []
    while True:
        line = stream.readline()
        if not line:
            return lines if lines else None
        line = line.rstrip("\n").rstrip("\r")
        if line.strip() == stop:
            return lines
        lines.append(line)


def guided_capture(stdin: TextIO, out: TextIO, store_path: Optional[Path] = None) -> Trace:
    out.write(GUIDE + "\nPrompt:\n")
    out.flush()
    prompt_lines = _read_block(stdin)
    prompt = "\n".join(prompt_lines or []).strip()
    if not prompt:
        raise ValueError("no prompt given")

    capturer = ClaudeCapturer(store_path=store_path).start(prompt)
    n = 0
    while True:
        out.write(f"Tool call {n + 1} (`Tool: input`, empty line when done):\n")
        out.flush()
        entry = _read_block(stdin)
        if not entry:
            break
        while entry and entry[0].startswith(">"):
            capturer.log_text(entry.pop(0)[1:].strip())
        if not entry:
            continue
        head, *output = entry
        name, sep, raw_input = head.partition(":")
        name = name.strip()
        if not sep or not name or " " in name:
            raise ValueError(f"tool call {n + 1}: expected `Tool: input`, got {head!r}")
        text = "\n".join(output)
        failed = text.lstrip().startswith("ERROR:")
        if failed:
            text = text.lstrip()[len("ERROR:"):].strip()
        capturer.log_tool_call(name, raw_input.strip(), text or None, success=not failed)
        n += 1

    out.write("Response (end with a line holding only `.`):\n")
    out.flush()
    response = "\n".join(_read_block(stdin, stop=".") or []).strip()
    return capturer.finish(response or None)


def describe(trace: Trace) -> str:
    """A short, readable summary of a trace's signals and verdict."""
    s = trace.reasoning_signals
    q = trace.quality
    lines = [
        f"trace      {trace.trace_id}",
        f"workflow   {s.workflow or '(no tool calls)'}",
        f"pattern    {s.pattern or '-'}  (all: {', '.join(s.patterns) or '-'})",
        f"steps      {s.reasoning_steps} reasoning steps, exploration {s.exploration_depth or '-'}, "
        f"multi-step {'yes' if s.multi_step_reasoning else 'no'}",
        f"database   {'yes' if s.used_database else 'no'}   subagents {'yes' if s.used_subagents else 'no'}   "
        f"error recovery {'yes' if s.error_recovery else 'no'}",
    ]
    if s.files_read or s.files_changed:
        lines.append(f"files      read {', '.join(s.files_read) or '-'}; changed {', '.join(s.files_changed) or '-'}")
    if s.explicit_plan:
        lines.append("plan       " + s.explicit_plan.replace("\n", "\n           "))
    for c in s.self_corrections:
        lines.append(f"corrects   after call {c.position}: {c.text}")
    if q is not None:
        verdict = "accepted" if q.accepted else "rejected"
        lines.append(f"quality    {verdict}, score {q.score:.2f}")
        lines.extend(f"           {r}" for r in q.reasons)
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m claude_capture_hook`: guided capture from stdin."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print("usage: python -m claude_capture_hook   (then answer the prompts on stdin)\n")
        print(GUIDE)
        return 0
    if argv:
        print(f"error: unexpected arguments: {' '.join(argv)} (try --help)", file=sys.stderr)
        return 2
    try:
        trace = guided_capture(sys.stdin, sys.stdout)
    except (ValueError, KeyboardInterrupt) as exc:
        print(f"\nnothing captured: {exc or 'interrupted'}", file=sys.stderr)
        return 1
    print("\nCaptured.")
    print(describe(trace))
    total, accepted = ClaudeCapturer().get_trace_count(), ClaudeCapturer().get_trace_count(accepted=True)
    print(f"\n{total} trace{'' if total == 1 else 's'} stored, {accepted} accepted.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
