"""A trace rendered for people: the workflow in the order it happened."""

from __future__ import annotations

import orjson
from rich.console import Console
from rich.markup import escape

from capture_daemon.schema import Trace

SHORT = 160


def _short(text: str | None, full: bool) -> str:
    text = text or ""
    if full or len(text) <= SHORT:
        return text
    return text[:SHORT].rstrip() + f" … [{len(text)} chars]"


def render_trace(trace: Trace, console: Console, full: bool = False) -> None:
    status = "complete" if trace.complete else f"incomplete ({trace.incomplete_reason})"
    console.print(f"[bold]trace {trace.trace_id}[/bold]  {status}  source={trace.source}  model={trace.model or '?'}")
    console.print(f"session {trace.session_id}  cwd {trace.cwd or '?'}  started {trace.started_at or '?'}")
    console.print(f"\n[bold cyan]prompt[/bold cyan]\n{escape(trace.prompt)}\n")
    texts = {}
    for step in trace.assistant_text:
        texts.setdefault(step.position, []).append(("says", step))
    for step in trace.thinking:
        texts.setdefault(step.position, []).append(("thinks", step))
    for index in range(len(trace.tool_calls) + 1):
        for kind, step in texts.get(index, []):
            who = f"agent {step.agent_id[:8]}" if step.agent_id else "assistant"
            console.print(f"  [italic]{who} {kind}:[/italic] {escape(_short(step.text, full))}")
        if index == len(trace.tool_calls):
            break
        call = trace.tool_calls[index]
        mark = "[green]✓[/green]" if call.success else "[red]✗[/red]"
        agent = f" [dim](agent {call.agent_type or call.agent_id[:8]})[/dim]" if call.agent_id else ""
        args = orjson.dumps(call.input).decode()
        timing = f" {call.duration_ms} ms" if call.duration_ms is not None else ""
        console.print(f"{index + 1:>3}. {mark} [bold]{escape(call.name)}[/bold]{agent} [dim]g{call.parallel_group}{timing}[/dim] {escape(_short(args, full))}")
        result = call.error if not call.success else call.output
        if result:
            console.print(f"       → {escape(_short(result, full))}", highlight=False)
    console.print(f"\n[bold cyan]answer[/bold cyan]\n{escape(trace.final_response or '(none)')}\n")
    s = trace.reasoning_signals
    console.print(f"[bold]signals[/bold] workflow: {escape(s.workflow or ' → '.join(s.tool_sequence))}")
    console.print(f"  pattern {s.pattern} {s.patterns}  exploration {s.exploration_depth}  steps {s.reasoning_steps}"
                  f"  error recovery {s.error_recovery}  database {s.used_database}  subagents {s.used_subagents}")
    if s.explicit_plan:
        console.print(f"  plan: {escape(s.explicit_plan)}")
    if trace.quality:
        q = trace.quality
        console.print(f"[bold]quality[/bold] {'accepted' if q.accepted else 'rejected'} (score {q.score:.2f})")
        for reason in q.reasons:
            console.print(f"  {escape(reason)}")
