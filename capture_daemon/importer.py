"""Backfill: build traces from the transcripts Claude Code already keeps.

Claude Code writes every session to `${CLAUDE_CONFIG_DIR:-~/.claude}/projects/<project>/
<session>.jsonl`, with background agents in `<session>/subagents/agent-<id>.jsonl` (and a
`.meta.json` beside each). It deletes them after 30 days by default, so importing on day one
turns weeks of past work into training data.

Imported traces are built by the same `build_trace` as live capture, from the transcript
alone (no hook events): same trace ids, same tool calls, same final answer, same signals.
A prompt already in the store (captured live, or imported before) is skipped, so importing
twice adds nothing and never overwrites the richer live trace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import orjson

from capture_daemon.assemble import build_trace
from capture_daemon.schema import Trace, make_trace_id
from capture_daemon.store import TraceStore
from capture_daemon.transcript import PromptTurns, Transcript, notification_target, parse_transcript


def default_roots() -> list[Path]:
    base = os.environ.get("CLAUDE_CONFIG_DIR") or str(Path.home() / ".claude")
    return [Path(base) / "projects"]


def session_files(roots: Iterable[Path]) -> list[Path]:
    """Main-session transcripts under the given files or folders (subagent files excluded)."""
    found: list[Path] = []
    for root in roots:
        root = Path(root).expanduser()
        if root.is_file():
            found.append(root)
            continue
        for path in sorted(root.rglob("*.jsonl")):
            if "subagents" not in path.parts:
                found.append(path)
    return found


@dataclass
class ImportReport:
    files: int = 0
    bytes: int = 0
    imported: int = 0
    skipped_existing: int = 0
    incomplete: int = 0
    corrupt_lines: int = 0
    failed_files: list[str] = field(default_factory=list)


def _agent_transcripts(session_file: Path) -> dict[str, tuple[Transcript, dict]]:
    """agent id → (its transcript, its .meta.json) for one session."""
    folder = session_file.with_suffix("") / "subagents"
    agents: dict[str, tuple[Transcript, dict]] = {}
    if not folder.is_dir():
        return agents
    for path in sorted(folder.glob("agent-*.jsonl")):
        try:
            transcript = parse_transcript(path)
        except OSError:
            continue
        agent_id = transcript.agent_id or path.stem.removeprefix("agent-")
        meta_path = path.with_suffix(".meta.json")
        try:
            meta = orjson.loads(meta_path.read_bytes()) if meta_path.exists() else {}
        except (OSError, orjson.JSONDecodeError):
            meta = {}
        agents[agent_id] = (transcript, meta if isinstance(meta, dict) else {})
    return agents


def traces_from_session(session_file: Path, transcript: Transcript | None = None) -> Iterator[Trace]:
    """Every user prompt of one session file as a trace (notifications join their parent)."""
    transcript = transcript or parse_transcript(session_file)
    session_id = transcript.session_id or session_file.stem
    agents = _agent_transcripts(session_file)
    prompts = list(transcript.prompts.values())
    owner: dict[str, str] = {}  # agent id / Agent tool_use_id → the prompt that spawned it
    groups: dict[str, list[PromptTurns]] = {}
    for turns in prompts:
        if turns.is_notification:
            task_id, tool_use_id = notification_target(turns.prompt)
            parent = owner.get(tool_use_id or "") or owner.get(task_id or "")
            if parent is None and groups:
                parent = list(groups)[-1]
            if parent is not None:
                groups[parent].append(turns)
            continue
        groups[turns.prompt_id] = [turns]
        for block in turns.blocks:
            if block.kind == "tool_use":
                owner[block.tool_use_id] = turns.prompt_id
    for agent_id, (agent_transcript, meta) in agents.items():
        if meta.get("toolUseId") in owner:
            owner[agent_id] = owner[meta["toolUseId"]]

    for prompt_id, main_turns in groups.items():
        agent_turns: dict[str, PromptTurns] = {}
        agent_types: dict[str, str] = {}
        for agent_id, (agent_transcript, meta) in agents.items():
            belongs = owner.get(agent_id) == prompt_id or prompt_id in agent_transcript.prompts
            if belongs and agent_transcript.prompts:
                merged = list(agent_transcript.prompts.values())
                turns = merged[0]
                for extra in merged[1:]:
                    turns.blocks.extend(extra.blocks)
                    turns.results.update(extra.results)
                agent_turns[agent_id] = turns
                if meta.get("agentType"):
                    agent_types[agent_id] = meta["agentType"]
        complete = _finished(main_turns)
        trace = build_trace(session_id, prompt_id, [], main_turns, agent_turns, source="import", complete=complete,
                            incomplete_reason="transcript_ends_mid_prompt", transcript_path=str(session_file))
        for call in trace.tool_calls:
            if call.agent_id and not call.agent_type:
                call.agent_type = agent_types.get(call.agent_id)
        for run in trace.subagents:
            run.agent_type = run.agent_type or agent_types.get(run.agent_id)
            run.complete = run.complete or bool(agents.get(run.agent_id, (None, {}))[1].get("finished"))
        yield trace


def _finished(main_turns: list[PromptTurns]) -> bool:
    """The prompt ended with the assistant's text and every call got its result."""
    blocks = [b for t in main_turns for b in t.blocks]
    if not blocks or blocks[-1].kind != "text":
        return False
    results = {k for t in main_turns for k in t.results}
    return all(b.tool_use_id in results for b in blocks if b.kind == "tool_use")


def import_paths(roots: Iterable[Path], store: TraceStore, prepare: Callable[[Trace], Trace],
                 on_file: Callable[[Path, int], None] | None = None) -> ImportReport:
    """Import every session under `roots`; `prepare` redacts and analyses each trace."""
    report = ImportReport()
    for path in session_files(roots):
        size = path.stat().st_size if path.exists() else 0
        report.files += 1
        report.bytes += size
        try:
            transcript = parse_transcript(path)
            report.corrupt_lines += transcript.corrupt_lines
            fresh = []
            for trace in traces_from_session(path, transcript):
                if store.has_trace(trace.trace_id):
                    report.skipped_existing += 1
                    continue
                fresh.append(prepare(trace))
            with store.transaction() as db:
                for trace in fresh:
                    store.put(trace, db=db)
            report.imported += len(fresh)
            report.incomplete += sum(not t.complete for t in fresh)
        except Exception as exc:  # one bad file must not stop the import
            report.failed_files.append(f"{path}: {type(exc).__name__}: {exc}")
        if on_file:
            on_file(path, size)
    return report


def prepare_for_store(trace: Trace) -> Trace:
    """The same redaction and analysis the daemon applies to live traces."""
    from capture_daemon.ingest import _default_analyze
    from capture_daemon.scrub import scrub_trace

    return _default_analyze()(scrub_trace(trace))


__all__ = ["import_paths", "traces_from_session", "session_files", "default_roots", "prepare_for_store",
           "ImportReport", "make_trace_id"]
