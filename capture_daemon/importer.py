"""Backfill: build traces from the transcripts Claude Code already keeps.

Claude Code writes every session to `${CLAUDE_CONFIG_DIR:-~/.claude}/projects/<project>/
<session>.jsonl`, with background agents in `<session>/subagents/agent-<id>.jsonl` (and a
`.meta.json` beside each). It deletes them after 30 days by default, so importing on day one
turns weeks of past work into training data.

Older Claude Code (2.0.x) wrote background agents flat, as `<project>/agent-<id>.jsonl`
beside the sessions, their rows naming the parent's `sessionId`; both layouts are read.

Imported traces are built by the same `build_trace` as live capture, from the transcript
alone (no hook events): same trace ids, same tool calls, same final answer, same signals.
Transcripts without `promptId` (before some 2.1.x) name each prompt by its user row's
`uuid` (transcript.py), which the live daemon resolves to as well. A prompt already in the
store (captured live, or imported before) is skipped, so importing twice adds nothing and
never overwrites the richer live trace, unless the stored one is incomplete (imported
while its session was still running, or cut off) and this one has more: then it is
replaced. Slash commands and `!` bash-mode turns are not imported (not training prompts).
A prompt found in two files (a resumed or forked session copies its history) is one trace,
also when the first file has since been deleted (its prompt id is stored under its session).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import orjson

from capture_daemon.assemble import build_trace
from capture_daemon.schema import Trace, make_trace_id
from capture_daemon.scrub import scrub_turns
from capture_daemon.spool import CorruptSpoolFile, open_regular_file
from capture_daemon.store import TraceStore
from capture_daemon.transcript import (MADE_UP_PROMPT_ID, PromptTurns, Transcript, inline_agents, notification_target,
                                       parse_transcript)


def default_roots() -> list[Path]:
    base = os.environ.get("CLAUDE_CONFIG_DIR") or str(Path.home() / ".claude")
    return [Path(base) / "projects"]


def is_agent_file(path: Path) -> bool:
    """A subagent's transcript: `subagents/agent-*.jsonl` or the older flat `agent-*.jsonl`."""
    return "subagents" in path.parts or path.name.startswith("agent-")


def session_files(roots: Iterable[Path]) -> list[Path]:
    """Main-session transcripts under the given files or folders. A subagent file named
    directly stands for its parent session (its work is imported with the parent prompt)."""
    found: dict[Path, None] = {}
    for root in roots:
        root = Path(root).expanduser()
        if root.is_file():
            parent = _parent_session(root) if is_agent_file(root) else root
            if parent is not None:
                found[parent] = None
            continue
        for path in sorted(root.rglob("*.jsonl")):
            if not is_agent_file(path) and not path.is_dir():
                found[path] = None  # a FIFO or device is reported as not importable, never read
    return list(found)


def _parent_session(agent_file: Path) -> Path | None:
    if "subagents" in agent_file.parts and agent_file.parent.name == "subagents":
        candidate = agent_file.parent.parent.with_suffix(".jsonl")
        return candidate if candidate.is_file() else None
    try:
        session_id = parse_transcript(agent_file).session_id
    except OSError:
        return None
    candidate = agent_file.parent / f"{session_id}.jsonl"
    return candidate if session_id and candidate.is_file() else None


@dataclass
class ImportReport:
    files: int = 0
    bytes: int = 0
    prompts: int = 0  # real prompts found (commands and notifications not counted)
    imported: int = 0
    replaced: int = 0  # stored incomplete, now imported with more
    skipped_existing: int = 0
    incomplete: int = 0
    commands: int = 0  # slash-command and bash-mode turns left out
    copies: int = 0  # prompts seen again in a later file (resumed or forked sessions)
    excluded: int = 0  # prompts of a project in exclude_projects, left out
    corrupt_lines: int = 0
    skipped_rows: dict[str, int] = field(default_factory=dict)  # reason → rows
    failed_files: list[str] = field(default_factory=list)
    failed_prompts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed_files and not self.failed_prompts


AgentMap = dict[str, tuple[Transcript, dict]]


def _agent_transcripts(session_file: Path, session_id: str, flat_cache: dict[Path, list[Transcript]]) -> AgentMap:
    """agent id → (its transcript, its .meta.json) for one session, from both layouts."""
    agents: AgentMap = {}
    folder = session_file.with_suffix("") / "subagents"
    if folder.is_dir():
        for path in sorted(folder.glob("agent-*.jsonl")):
            try:
                transcript = parse_transcript(path)
            except OSError:
                continue
            agent_id = transcript.agent_id or path.stem.removeprefix("agent-")
            meta_path = path.with_suffix(".meta.json")
            try:
                meta = orjson.loads(meta_path.read_bytes()) if meta_path.is_file() else {}
            except (OSError, orjson.JSONDecodeError):
                meta = {}
            agents[agent_id] = (transcript, meta if isinstance(meta, dict) else {})
    project = session_file.parent
    if project not in flat_cache:
        flat: list[Transcript] = []
        for path in sorted(project.glob("agent-*.jsonl")):
            try:
                flat.append(parse_transcript(path))
            except OSError:
                continue
        flat_cache[project] = flat
    for transcript in flat_cache[project]:
        if transcript.session_id == session_id:
            agent_id = transcript.agent_id or Path(transcript.path).stem.removeprefix("agent-")
            agents.setdefault(agent_id, (transcript, {}))
    return agents


def traces_from_session(session_file: Path, transcript: Transcript | None = None,
                        flat_cache: dict[Path, list[Transcript]] | None = None,
                        report: ImportReport | None = None, seen_rows: set[str] | None = None,
                        is_excluded: Callable[[str], bool] = lambda cwd: False) -> Iterator[Trace]:
    """Every user prompt of one session file as a trace (notifications join their parent).

    As live capture decides: a session that started in an excluded project yields nothing, and
    a prompt any of whose rows worked in one is left out whole."""
    transcript = transcript or parse_transcript(session_file)
    if transcript.start_cwd and is_excluded(transcript.start_cwd):
        if report is not None:
            report.excluded += sum(not t.is_command and not t.is_notification for t in transcript.prompts.values())
        return
    file_session = transcript.session_id or session_file.stem
    agents = _agent_transcripts(session_file, file_session, {} if flat_cache is None else flat_cache)
    owner: dict[str, str] = {}  # agent id / Agent tool_use_id → the prompt that spawned it
    groups: dict[str, list[PromptTurns]] = {}
    task_prompts: dict[str, str] = {}  # an Agent/Task call's prompt text → the prompt that made it
    agent_results: dict[str, str] = {}  # agentId in a call's structured result → that call's id
    for turns in transcript.prompts.values():
        if seen_rows is not None and turns.row_uuid:
            if turns.row_uuid in seen_rows:  # copied history of a resumed or forked session
                if report is not None:
                    report.copies += 1
                continue
            seen_rows.add(turns.row_uuid)
        if turns.is_command:
            if report is not None:
                report.commands += 1
            continue
        if turns.is_notification:
            task_id, tool_use_id = notification_target(turns.prompt)
            parent = owner.get(tool_use_id or "") or owner.get(task_id or "")
            if parent is None and groups:
                parent = list(groups)[-1]
            if parent is None:
                continue
            groups[parent].append(turns)
        else:
            parent = turns.prompt_id
            groups[parent] = [turns]
        for block in turns.blocks:
            if block.kind == "tool_use":
                owner[block.tool_use_id] = parent
                if block.name in ("Agent", "Task") and isinstance(block.input.get("prompt"), str):
                    task_prompts.setdefault(block.input["prompt"].strip(), parent)
        for tool_use_id, result in turns.results.items():
            structured = result.structured if isinstance(result.structured, dict) else {}
            if isinstance(structured.get("agentId"), str):
                agent_results[structured["agentId"]] = tool_use_id
                # A background agent: 2.1.42's notification names only its id, and may come
                # after another prompt (which must not take it).
                owner.setdefault(structured["agentId"], parent)
            if isinstance(structured.get("backgroundTaskId"), str):
                # A background Bash job: 2.1.42's notification names only this id.
                owner[structured["backgroundTaskId"]] = parent
    for agent_id, (agent_transcript, meta) in agents.items():
        if meta.get("toolUseId") in owner:
            owner[agent_id] = owner[meta["toolUseId"]]
        elif agent_results.get(agent_id) in owner:
            owner[agent_id] = owner[agent_results[agent_id]]
        elif agent_transcript.prompts:
            first = next(iter(agent_transcript.prompts.values())).prompt.strip()
            if first in task_prompts:
                owner[agent_id] = task_prompts[first]

    for prompt_id, main_turns in groups.items():
        if any(is_excluded(cwd) for turns in main_turns for cwd in turns.cwds):
            if report is not None:
                report.excluded += 1
            continue
        agent_turns: dict[str, PromptTurns] = {}
        agent_types: dict[str, str] = {}
        for agent_id, (agent_transcript, meta) in agents.items():
            known = owner.get(agent_id)
            belongs = known == prompt_id or (known is None and prompt_id in agent_transcript.prompts)
            if belongs and agent_transcript.prompts:
                merged = [scrub_turns(turns) for turns in agent_transcript.prompts.values()]
                turns = merged[0]
                for extra in merged[1:]:
                    turns.blocks.extend(extra.blocks)
                    turns.results.update(extra.results)
                    turns.refused.extend(extra.refused)
                agent_turns[agent_id] = turns
                if meta.get("agentType"):
                    agent_types[agent_id] = meta["agentType"]
        for agent_id, turns in inline_agents(transcript, main_turns).items():
            agent_turns.setdefault(agent_id, scrub_turns(turns))
        # Redacted before the trace is built, as live capture does: building cuts a long output
        # (assemble.MAX_OUTPUT_CHARS), and a token cut in half there no longer looks like one.
        main_turns = [scrub_turns(turns) for turns in main_turns]
        complete = _finished(main_turns)
        interrupted = any(t.interrupted for t in main_turns)
        failed = main_turns[-1].api_error
        trace = build_trace(main_turns[0].session_id or file_session, prompt_id, [], main_turns, agent_turns,
                            source="import", complete=complete and not interrupted and not failed,
                            incomplete_reason="interrupted" if interrupted else "api_error" if failed else "transcript_ends_mid_prompt",
                            transcript_path=str(session_file))
        for call in trace.tool_calls:
            if call.agent_id and not call.agent_type:
                call.agent_type = agent_types.get(call.agent_id)
        calls = {c.tool_use_id: c for c in trace.tool_calls}
        for run in trace.subagents:
            run.agent_type = run.agent_type or agent_types.get(run.agent_id)
            spawner = calls.get(_str(agents.get(run.agent_id, (None, {}))[1].get("toolUseId")) or "")
            if run.spawned_by is None and spawner is not None and spawner.name in ("Agent", "Task"):
                # The agent's .meta.json names the call that started it (its result may not).
                run.spawned_by = spawner.tool_use_id
                run.description = run.description or _str(spawner.input.get("description"))
                run.prompt = run.prompt or _str(spawner.input.get("prompt"))
            run.complete = run.complete or bool(agents.get(run.agent_id, (None, {}))[1].get("finished"))
        yield trace


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


_TIMESTAMP = re.compile(rb'"timestamp":\s?"([^"]{10,40})"')


def _first_timestamp(path: Path) -> tuple[str, str]:
    """(the first row timestamp in the file's first 256 kB, path): the order sessions began."""
    try:
        with open_regular_file(path) as handle:
            match = _TIMESTAMP.search(handle.read(256 << 10))
    except (OSError, CorruptSpoolFile):
        match = None
    return (match.group(1).decode("ascii", "replace") if match else "", str(path))


def _copied_from_stored(trace: Trace, store: TraceStore) -> bool:
    """A prompt id Claude Code gave is unique to what was typed; stored under another session, it
    is a copy that session's file holds (a resumed or forked session's history) whose original
    was imported before and may since have been deleted (Claude Code's 30-day cleanup)."""
    if trace.prompt_id.startswith(MADE_UP_PROMPT_ID):
        return False
    return store.prompt_stored_elsewhere(trace.prompt_id, trace.trace_id) is not None


def _finished(main_turns: list[PromptTurns]) -> bool:
    """The prompt ended with the assistant's text and every call got its result."""
    blocks = [b for t in main_turns for b in t.blocks]
    if not blocks or blocks[-1].kind != "text":
        return False
    results = {k for t in main_turns for k in t.results}
    return all(b.tool_use_id in results for b in blocks if b.kind == "tool_use")


def _improves(new: Trace, old: Trace) -> bool:
    """A stored incomplete trace is replaced by a later, fuller reading of the same prompt."""
    if old.complete:
        return False
    return new.complete or len(new.tool_calls) > len(old.tool_calls)


def import_paths(roots: Iterable[Path], store: TraceStore, prepare: Callable[[Trace], Trace],
                 on_file: Callable[[Path, int], None] | None = None,
                 is_excluded: Callable[[str], bool] = lambda cwd: False) -> ImportReport:
    """Import every session under `roots`; `prepare` redacts and analyses each trace, and
    `is_excluded` (config.toml's exclude_projects) leaves projects out as live capture does."""
    report = ImportReport()
    flat_cache: dict[Path, list[Transcript]] = {}
    seen_rows: set[str] = set()
    # Oldest session first: a prompt copied into a later (forked) file stays its original's.
    for path in sorted(session_files(roots), key=_first_timestamp):
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        report.files += 1
        report.bytes += size
        try:
            transcript = parse_transcript(path)
            report.corrupt_lines += transcript.corrupt_lines
            for reason, count in transcript.skipped.items():
                report.skipped_rows[reason] = report.skipped_rows.get(reason, 0) + count
            fresh: dict[str, Trace] = {}
            replacing = 0
            for trace in traces_from_session(path, transcript, flat_cache, report, seen_rows, is_excluded):
                report.prompts += 1
                if trace.trace_id in fresh:
                    continue
                stored = store.db.execute("SELECT complete FROM traces WHERE trace_id=?", (trace.trace_id,)).fetchone()
                if stored is None and _copied_from_stored(trace, store):
                    report.copies += 1
                    continue
                if stored is not None:
                    old = None if stored[0] else store.get(trace.trace_id)  # complete ones: never replaced
                    if old is None or not _improves(trace, old):
                        report.skipped_existing += 1
                        continue
                    replacing += 1
                try:
                    fresh[trace.trace_id] = prepare(trace)
                except Exception as exc:  # one bad prompt must not stop its file
                    report.failed_prompts.append(f"{path} prompt {trace.prompt_id}: {type(exc).__name__}: {exc}")
            with store.transaction() as db:
                for trace in fresh.values():
                    store.put(trace, db=db)
            report.imported += len(fresh) - replacing
            report.replaced += replacing
            report.incomplete += sum(not t.complete for t in fresh.values())
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
           "ImportReport", "make_trace_id", "is_agent_file"]
