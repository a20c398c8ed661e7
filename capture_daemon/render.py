"""A trace rendered for people: the workflow in the order it happened.

Everything in a trace came from somewhere else (a prompt, a file read, a command's
output, a directory name), so none of it reaches the terminal as-is: `printable()` shows
control characters and bidi overrides as visible escapes (an ESC ] 0 ; that would retitle
the terminal prints as `\\x1b]0;`), and trace text is only ever placed in rich `Text`
objects, never parsed as markup (a cwd of `/srv/[old]` prints as `/srv/[old]`).
"""

from __future__ import annotations

import unicodedata

import orjson
from rich.console import Console
from rich.text import Text

from capture_daemon.schema import Trace

SHORT = 160

# Characters that reorder or hide text without being "control characters": the bidi
# embeddings, overrides and isolates (Trojan Source), the implicit marks, and the line and
# paragraph separators some terminals treat as newlines.
_INVISIBLE = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029}


def _visible(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(text: object, keep: str = "") -> str:
    """`text` with every control character (C0, DEL, C1) and bidi control shown as a
    visible escape (`\\x1b`, `\\u202e`), except those in `keep` (e.g. "\\n\\t" where the
    layout wants line breaks). A backslash stays a backslash: this is for eyes, not parsers."""
    text = "" if text is None else str(text)
    if text.isprintable() and not any(ord(c) in _INVISIBLE for c in text):
        return text  # the common case, checked at C speed
    out = []
    for char in text:
        if char in keep:
            out.append(char)
        elif ord(char) in _INVISIBLE or unicodedata.category(char) == "Cc":
            out.append(_visible(char))
        else:
            out.append(char)
    return "".join(out)


def _short(text: str | None, full: bool) -> str:
    text = text or ""
    if full or len(text) <= SHORT:
        return text
    return text[:SHORT].rstrip() + f" … [{len(text)} chars]"


def _text(*parts: str | tuple[str, str]) -> Text:
    """Text.assemble of (already printable) pieces, with no markup and no highlighting."""
    return Text.assemble(*parts)


def _after_main_narration(texts: list, count: int) -> int:
    """The index in `texts` (one position's steps, in order) after its first `count` main-agent narration steps."""
    seen = 0
    for index, (kind, step) in enumerate(texts):
        if seen == count:
            return index
        seen += kind == "says" and step.agent_id is None
    return len(texts)


def _told_by(message) -> str:
    if message.agent_id:
        return f"agent {printable(message.agent_id[:8])} {_told_by(message.model_copy(update={'agent_id': None}))}"
    if message.kind == "hook_feedback":
        return f"{printable(message.hook or 'hook')} hook feedback (mid-turn)"
    if message.kind == "hook_output":
        return f"{printable(message.hook or 'hook')} hook output (mid-turn)"
    if message.kind == "hook_context":
        return f"{printable(message.hook or 'hook')} hook context (mid-turn)"
    return "user says (mid-turn)"


def render_trace(trace: Trace, console: Console, full: bool = False) -> None:
    p = printable
    status = "complete" if trace.complete else f"incomplete ({p(trace.incomplete_reason)})"
    console.print(_text(("trace " + p(trace.trace_id), "bold"),
                        f"  {status}  source={p(trace.source)}  model={p(trace.model or '?')}"))
    console.print(_text(f"session {p(trace.session_id)}  cwd {p(trace.cwd or '?')}  started {trace.started_at or '?'}"))
    console.print(_text("\n", ("prompt", "bold cyan"), "\n", p(trace.prompt, keep="\n\t"), "\n"))
    texts: dict[int, list] = {}
    for step in trace.assistant_text:
        texts.setdefault(step.position, []).append(("says", step))
    for step in trace.thinking:
        texts.setdefault(step.position, []).append(("thinks", step))
    for message in reversed(trace.mid_turn_messages):  # before the rest at its place: the model read it first
        here = texts.setdefault(message.position, [])
        here.insert(_after_main_narration(here, message.after_text), ("told", message))
    for index in range(len(trace.tool_calls) + 1):
        for kind, step in texts.get(index, []):
            if kind == "told":
                console.print(_text("  ", (f"{_told_by(step)}:", "bold cyan"), " ", p(_short(step.text, full), keep="\n\t")))
                continue
            who = f"agent {p(step.agent_id[:8])}" if step.agent_id else "assistant"
            console.print(_text("  ", (f"{who} {kind}:", "italic"), " ", p(_short(step.text, full), keep="\n\t")))
        if index == len(trace.tool_calls):
            break
        call = trace.tool_calls[index]
        mark = ("✓", "green") if call.success else ("✗", "red")
        agent = ("", "")
        if call.agent_id:
            agent = (f" (agent {p(call.agent_type or call.agent_id[:8])})", "dim")
        args = orjson.dumps(call.input).decode()
        timing = f" {call.duration_ms} ms" if call.duration_ms is not None else ""
        console.print(_text(f"{index + 1:>3}. ", mark, " ", (p(call.name), "bold"), agent,
                            (f" g{call.parallel_group}{timing}", "dim"), " ", p(_short(args, full))))
        result = call.error if not call.success else call.output
        if result:
            console.print(_text("       → ", p(_short(result, full), keep="\n\t")))
    console.print(_text("\n", ("answer", "bold cyan"), "\n", p(trace.final_response or "(none)", keep="\n\t"), "\n"))
    s = trace.reasoning_signals
    console.print(_text(("signals", "bold"), " workflow: " + p(s.workflow or " → ".join(s.tool_sequence))))
    console.print(_text(f"  pattern {p(s.pattern)} {p(s.patterns)}  exploration {p(s.exploration_depth)}"
                        f"  steps {s.reasoning_steps}  error recovery {s.error_recovery}"
                        f"  database {s.used_database}  subagents {s.used_subagents}"))
    if s.explicit_plan:
        console.print(_text("  plan: " + p(s.explicit_plan, keep="\n\t")))
    if trace.quality:
        q = trace.quality
        console.print(_text(("quality", "bold"), f" {'accepted' if q.accepted else 'rejected'} (score {q.score:.2f})"))
        for reason in q.reasons:
            console.print(_text("  " + p(reason)))
