"""From spool files to committed traces.

`Ingestor.scan()` reads new spool files in arrival order and routes each event to the
trace it belongs to; `Ingestor.finalize_ready()` builds and commits the traces that are
finished. The rules that make this safe to crash and replay at any point:

* a spool file is deleted only after the transaction holding its trace has committed;
* that transaction also records the file's name in `consumed`, so a file that survived a
  crash between commit and delete is recognised and dropped, never applied twice;
* trace ids are derived from (session_id, prompt_id), so rebuilding gives the same id and
  the stored trace is replaced, never doubled.

Isolation: one bad input never blocks the rest. A spool file that does not read as a
well-typed hook event is quarantined at the door (spool.py). A trace that cannot be built or
stored is retried with backoff, each trace in its own savepoint so the others in the batch
commit; after `max_attempts` its files are set aside in quarantine with the reason
(`capture-daemon quarantine retry` brings them back). A failure of the environment (disk
full or read-only, database locked or corrupt: failures.is_environmental) blames no trace:
it propagates, and the daemon backs off and retries everything.

Routing (Claude Code 2.1.328 facts): subagent events carry the parent's prompt_id and an
`agent_id`; a background agent's result re-enters as a UserPromptSubmit whose prompt is a
`<task-notification>` naming the Agent call's tool_use_id: its events join the trace that
spawned the agent, reopened if already stored. A background Bash job (`run_in_background`)
reports back the same way, its call's result naming the job's `backgroundTaskId`. A background
agent's own events go to the prompt whose call launched it (`_agent_parent`), whatever prompt_id
they carry. A trace is final when its latest Stop reports no running background agent (a Bash
job is not waited for: it may run for hours) and no `<task-notification>` turn came after it,
after a short settle time; a prompt that never stops is finalised as incomplete after an idle
timeout, or when its session ends. A message typed in the TUI while the model writes its final
answer gets its UserPromptSubmit at once, under the running prompt's id, yet is run as the next
prompt, which sends none of its own: that prompt takes the event when it is finalised
(`_adopt_typed_ahead_prompt`).

Older Claude Code (2.0.x, 2.1.x before prompt ids, e.g. 2.1.42) sends no prompt_id (2.0.0 no
tool_use_id either): its UserPromptSubmit opens a trace, the session's later events join the
latest open one, and at build time the prompt is named by its transcript row's uuid, the id
an import gives it; a `<task-notification>` turn joins the prompt whose call started the task
it names (2.1.42 names no tool_use_id, only the task id) and its row is found likewise. A slash
command's own events (e.g. `/compact`) make no trace, nor does a prompt another
UserPromptSubmit hook blocked (it never ran: `_never_ran`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from capture_daemon.assemble import (build_trace, closing_text, is_notification_prompt, iso_to_ns,
                                     messages_typed_while_running, prompt_state)
from capture_daemon.failures import describe, frames, is_environmental
from capture_daemon.schema import CaptureLoss, Trace, make_trace_id
from capture_daemon.scrub import scrub_payload, scrub_turns
from capture_daemon.spool import (LOST_KEY, CorruptSpoolFile, SpoolEvent, pending_names, quarantine, read_event,
                                  write_stand_in)
from capture_daemon.store import TraceStore
from capture_daemon.transcript import PromptTurns, Transcript, inline_agents, notification_target, parse_transcript

log = logging.getLogger("understudy.ingest")

SESSION_EVENTS = {"SessionStart", "SessionEnd", "PreCompact", "Notification"}


@dataclass
class IngestSettings:
    # After a finishing Stop, wait this long for stragglers before committing.
    settle_seconds: float = 0.3
    # Claude Code before 2.1.x's last_assistant_message (2.0.0, 2.1.42) says the answer only in
    # the transcript, which it may write after the Stop hook ran: a stopped prompt whose answer
    # is not there yet is looked at again for up to this long before it commits without one.
    answer_wait_seconds: float = 10.0
    # A prompt with no new event for this long is finalised (incomplete if it never stopped).
    idle_timeout_seconds: float = 1800.0
    # cwd -> True when the project must not be captured (config.toml [capture] exclude_projects).
    is_excluded: Callable[[str], bool] = lambda cwd: False
    # Traces committed per transaction.
    commit_batch: int = 64
    # A trace that fails to build or store this many times is set aside in quarantine.
    max_attempts: int = 4
    # Backoff between those attempts: first, then doubling up to the cap (seconds).
    retry_first_seconds: float = 5.0
    retry_max_seconds: float = 300.0


@dataclass
class OpenTrace:
    trace_id: str
    session_id: str
    prompt_id: str
    events: dict[str, SpoolEvent] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # spool files to delete once committed
    links: set[str] = field(default_factory=set)
    notification_prompts: list[str] = field(default_factory=list)
    last_event_ns: int = 0
    session_ended: bool = False
    failures: int = 0
    retry_after_ns: int = 0
    last_failure: str | None = None
    # An event of it came from a project in exclude_projects (or its session started in one):
    # the whole prompt is dropped, transcript content included, never built or stored.
    excluded: bool = False
    # Set by the last build: a `<task-notification>` turn of it is not in the transcript, or
    # ends without text there (Claude Code 2.1.42 writes it after the Stop hook ran).
    notification_text_missing: bool = False


class Ingestor:
    def __init__(self, store: TraceStore, spool: Path, quarantine_dir: Path, settings: IngestSettings | None = None,
                 analyze: Callable[[Trace], Trace] | None = None,
                 clock: Callable[[], int] = time.time_ns):
        self.store = store
        self.spool = spool
        self.quarantine_dir = quarantine_dir
        self.settings = settings or IngestSettings()
        self.analyze = analyze or _default_analyze()
        self.scrub = scrub_payload
        self.clock = clock
        self.open: dict[str, OpenTrace] = {}
        self.aliases: dict[tuple[str, str], str] = {}  # notification prompt → parent trace
        # Older clients (no prompt_id): each session's latest prompt, by the id its trace has (or
        # will have once stored), so an event that comes after it was stored still finds it.
        self.latest_prompt: dict[str, str] = {}
        # Each session's agents started and not yet stopped (SubagentStart / SubagentStop): while
        # one runs, an older client's unlabelled call may be that agent's (2.1.42 names neither
        # prompt nor agent on a background agent's calls), so it reopens no stored prompt.
        self.agents_running: dict[str, set[str]] = {}
        self.loaded: set[str] = set()  # spool file names already routed in memory
        self.quarantined_count = 0
        self.excluded_count = 0
        self.excluded_sessions: dict[str, bool] = {}  # session id → started in an excluded project
        self.errors: list[str] = []

    # --- reading the spool -----------------------------------------------------------

    def scan(self) -> int:
        """Route every new spool file; returns how many were read.

        Raises only for failures of the environment (failures.is_environmental): the files
        not yet routed are then read again by the next scan.
        """
        count = 0
        session_batch: list[tuple[str, SpoolEvent]] = []
        names = pending_names(self.spool)
        self.loaded &= set(names)  # forget files that are gone
        names = [n for n in names if n not in self.loaded]
        consumed = self.store.consumed_among(names)
        spool = os.fspath(self.spool)
        for name in names:
            # Plain strings, not Paths: a backlog is tens of thousands of files.
            path = os.path.join(spool, name)
            count += 1
            if name in consumed:
                self.loaded.add(name)
                _unlink(path)  # committed before a crash; the delete never happened
                continue
            try:
                event = read_event(path)
            except FileNotFoundError:
                continue
            except CorruptSpoolFile as exc:
                lost = exc.lost_event
                if lost is not None and self._excluded(lost):
                    self.excluded_count += 1  # an excluded project's event is not kept, even set aside
                    _unlink(path)
                    continue
                if lost is not None and isinstance(lost.prompt_id, str) and lost.event not in SESSION_EVENTS:
                    # Its trace records the loss. Written before the original is set aside: a
                    # crash between the two then redoes both (the stand-in's name is fixed), where
                    # the other order lost the record with the crash.
                    write_stand_in(self.spool, lost)
                self._quarantine(path, str(exc))
                continue
            except OSError as exc:
                if is_environmental(exc) and not isinstance(exc, (IsADirectoryError, PermissionError)):
                    self._flush_or_forget(session_batch)
                    raise
                self._quarantine(path, describe(exc))
                continue
            self.loaded.add(name)
            try:
                self._take(path, event, session_batch)
            except Exception as exc:
                if is_environmental(exc):
                    self.loaded.discard(name)
                    self._flush_or_forget(session_batch)
                    raise
                # A bug, or an event shape the door let through: this file alone is set aside.
                log.warning("routing %s failed: %s\n%s", name, describe(exc), frames(exc))
                self._forget_routed(path)
                self._quarantine(path, f"could not be routed to a trace ({describe(exc)})")
        self._flush_session_events(session_batch)
        return count

    def _take(self, path: str, event: SpoolEvent, session_batch: list[tuple[str, SpoolEvent]]) -> None:
        event.payload = self.scrub(event.payload)
        excluded = self._excluded(event)
        if excluded and event.event in SESSION_EVENTS:
            if event.event == "SessionStart":  # remembered before the file goes: a crash forgets nothing
                with self.store.transaction() as db:
                    self.store.mark_excluded([f"session:{event.session_id}"], db)
                self.excluded_sessions[event.session_id] = True
            self.excluded_count += 1
            _unlink(path)
            return
        if event.event in SESSION_EVENTS:
            session_batch.append((path, event))
            if event.event == "SessionEnd":
                self._flush_session_events(list(session_batch))
                session_batch.clear()
                self._end_session(event)
            return
        trace = self._route(path, event)
        # The decision is the prompt's, not the event's: a session that started in an excluded
        # project and `cd`s out, or one that `cd`s into an excluded folder, sends events of one
        # prompt from both, and the prompt's transcript holds what either side saw.
        if trace is not None and (excluded or self._session_excluded(event.session_id)):
            trace.excluded = True

    def _session_excluded(self, session_id: str) -> bool:
        if session_id not in self.excluded_sessions:
            if len(self.excluded_sessions) > 10_000:
                self.excluded_sessions.clear()
            self.excluded_sessions[session_id] = self.store.is_excluded(f"session:{session_id}")
        return self.excluded_sessions[session_id]

    def _flush_or_forget(self, batch: list[tuple[str, SpoolEvent]]) -> None:
        """Before giving up a pass: session events read so far are read again next time."""
        for path, _ in batch:
            self.loaded.discard(os.path.basename(path))
        batch.clear()

    def _forget_routed(self, path: str) -> None:
        """Undo a half-done _route: the file must not stay listed in an open trace."""
        name = os.path.basename(path)
        for trace in self.open.values():
            if path in trace.files:
                trace.files.remove(path)
            trace.events.pop(name, None)

    def _quarantine(self, path: str, reason: str) -> None:
        self.quarantined_count += 1
        self.loaded.discard(os.path.basename(path))
        self._error(f"quarantined {os.path.basename(path)}: {reason}")
        quarantine(Path(path), reason, self.quarantine_dir)

    def _excluded(self, event: SpoolEvent) -> bool:
        cwd = event.payload.get("cwd")
        return bool(cwd) and self.settings.is_excluded(cwd)

    def _flush_session_events(self, batch: list[tuple[str, SpoolEvent]]) -> None:
        if not batch:
            return
        try:
            with self.store.transaction() as db:
                for _, ev in batch:
                    p = ev.payload
                    if ev.event == "SessionStart":
                        self.store.record_session(ev.session_id, db, transcript_path=p.get("transcript_path"), cwd=p.get("cwd"),
                                                  started_at=ev.received_ns / 1e9, start_source=p.get("source"))
                    elif ev.event == "SessionEnd":
                        self.store.record_session(ev.session_id, db, ended_at=ev.received_ns / 1e9, end_reason=p.get("reason"))
                self.store.mark_consumed([ev.name for _, ev in batch], db)
        except Exception:
            self._flush_or_forget(batch)  # read again next pass (the daemon backs off first)
            raise
        for path, _ in batch:
            _unlink(path)

    def _end_session(self, event: SpoolEvent) -> None:
        for trace in self.open.values():
            if trace.session_id == event.session_id:
                trace.session_ended = True

    def _route(self, path: str, event: SpoolEvent) -> OpenTrace | None:
        session_id, prompt_id = event.session_id, event.prompt_id
        self._note_agent(event)
        if not prompt_id and event.event == "UserPromptSubmit" and not is_notification_prompt(event.payload.get("prompt")):
            # Older Claude Code (2.0.x, 2.1.x before prompt ids) sends no prompt_id: the prompt
            # opens its own trace, named for now by its spool file; _build renames it to the
            # transcript row's uuid, the id an import of the same prompt gives (transcript.py).
            prompt_id = PENDING_PROMPT + event.name
            trace_id = make_trace_id(session_id, prompt_id)
            trace = self.open.get(trace_id) or self._open(trace_id, session_id, prompt_id)
            if len(self.latest_prompt) > 10_000:
                self.latest_prompt.clear()
            self.latest_prompt[session_id] = trace_id
        elif not prompt_id and event.event == "UserPromptSubmit":
            # A `<task-notification>` without prompt_id (2.1.42): the prompt that started the
            # task owns its turn, reopened if already stored; the session's later events then
            # join it as its latest open prompt. _build finds the turn's transcript row.
            parent = self._notification_parent(event)
            if parent is None:
                self._quarantine(path, "event has no prompt_id and its session has no open prompt")
                return None
            trace = self.open.get(parent) or self._open(parent, session_id, PENDING_PROMPT + event.name)
            trace.notification_prompts.append(PENDING_PROMPT + event.name)
        elif event.agent_id and event.event != "UserPromptSubmit" and (owner := self._agent_parent(event.agent_id)):
            # A background agent's event: the prompt whose call started it owns it, reopened if
            # already stored, not the prompt running when it came. 2.1.328 sends it under the
            # prompt_id of whatever prompt runs then; 2.1.42 sends no prompt_id, and its Stop
            # names no running agent, so the prompt may be committed before its agent stops.
            trace = self.open.get(owner) or self._open(owner, session_id, PENDING_PROMPT + event.name)
        elif not prompt_id:
            # Older clients send no prompt_id: the session's latest open prompt owns it.
            candidates = [t for t in self.open.values() if t.session_id == session_id]
            if not candidates and self._excluded(event):
                self.excluded_count += 1  # an excluded project's event is not kept, even set aside
                _unlink(path)
                return None
            stored = self.latest_prompt.get(session_id)
            if not candidates and stored is not None and _goes_on_after_a_stop(event) \
                    and not self.agents_running.get(session_id) and self.store.has_trace(stored):
                # The session's latest prompt was stored, yet it goes on: a Stop hook of the user's
                # blocked the stop and Claude Code sent the model on within the same prompt (slower
                # than the settle time). No new prompt came (it would have opened a trace): reopen it.
                # Not while an agent of the session runs: the call may be its (set aside as before;
                # the agent's transcript still gives it to the prompt that started it).
                candidates = [self._open(stored, session_id, "")]
            if not candidates:
                self._quarantine(path, "event has no prompt_id and its session has no open prompt")
                return None
            trace = max(candidates, key=lambda t: t.last_event_ns)
        else:
            trace_id = self._trace_for(event)
            trace = self.open.get(trace_id) or self._open(trace_id, session_id, prompt_id)
            if (session_id, prompt_id) in self.aliases and prompt_id not in trace.notification_prompts:
                trace.notification_prompts.append(prompt_id)
                trace.links.add(f"prompt:{session_id}:{prompt_id}")
        trace.events[event.name] = event
        trace.files.append(path)
        trace.last_event_ns = max(trace.last_event_ns, self.clock())
        if event.agent_id:
            trace.links.add(f"agent:{event.agent_id}")
        response = event.payload.get("tool_response")
        if isinstance(response, dict):
            # What a later `<task-notification>` names: the call's tool_use_id (2.1.328) and its
            # task id, a background agent's agentId or a background Bash job's backgroundTaskId
            # (2.1.42 names only that).
            tool_use_id = event.payload.get("tool_use_id")
            for kind, key in (("agent", "agentId"), ("task", "backgroundTaskId")):
                if isinstance(response.get(key), str) and response[key]:
                    trace.links.add(f"{kind}:{response[key]}")
                    if isinstance(tool_use_id, str) and tool_use_id:
                        trace.links.add(f"tool:{tool_use_id}")
        return trace

    def _trace_for(self, event: SpoolEvent) -> str:
        key = (event.session_id, event.prompt_id)
        if key in self.aliases:
            return self.aliases[key]
        own = make_trace_id(event.session_id, event.prompt_id)
        if own in self.open:
            return own
        if event.event == "UserPromptSubmit" and is_notification_prompt(event.payload.get("prompt")):
            parent = self._notification_parent(event)
            if parent:
                self.aliases[key] = parent
                return parent
        # A late event of a notification turn whose trace was already committed.
        stored = self.store.linked_trace(f"prompt:{event.session_id}:{event.prompt_id}")
        if stored:
            self.aliases[key] = stored
            return stored
        return own

    def _note_agent(self, event: SpoolEvent) -> None:
        if not event.agent_id or event.event not in ("SubagentStart", "SubagentStop"):
            return
        if len(self.agents_running) > 10_000:
            self.agents_running.clear()
        running = self.agents_running.setdefault(event.session_id, set())
        if event.event == "SubagentStart":
            running.add(event.agent_id)
        else:
            running.discard(event.agent_id)

    def _agent_parent(self, agent_id: str) -> str | None:
        """The trace whose Agent/Task call launched this agent in the background (its
        PostToolUse, which names the agent, came at once), open or stored; None for a
        foreground agent, whose call returns only after it."""
        key = f"agent:{agent_id}"
        return next((t.trace_id for t in self.open.values() if key in t.links), None) or self.store.linked_trace(key)

    def _notification_parent(self, event: SpoolEvent) -> str | None:
        task_id, tool_use_id = notification_target(event.payload.get("prompt", ""))
        keys = ([f"tool:{tool_use_id}"] if tool_use_id else []) + ([f"agent:{task_id}", f"task:{task_id}"] if task_id else [])
        for trace in self.open.values():
            if any(key in trace.links for key in keys):
                return trace.trace_id
        for key in keys:
            found = self.store.linked_trace(key)
            if found:
                return found
        # Unknown agent (its parent was never captured): still not a prompt of its own.
        same_session = [t for t in self.open.values() if t.session_id == event.session_id]
        return max(same_session, key=lambda t: t.last_event_ns).trace_id if same_session else None

    def _open(self, trace_id: str, session_id: str, prompt_id: str) -> OpenTrace:
        stored = self.store.get(trace_id)
        if stored is not None:
            # A late event for a stored trace: reopen it with the events it was built from.
            trace = OpenTrace(trace_id, stored.session_id, stored.prompt_id)
            for ev in self.store.events_of(trace_id):
                trace.events[ev.name] = ev
                if ev.event == "UserPromptSubmit" and is_notification_prompt(ev.payload.get("prompt")):
                    trace.notification_prompts.append(ev.prompt_id or PENDING_PROMPT + ev.name)
        else:
            trace = OpenTrace(trace_id, session_id, prompt_id)
        trace.excluded = self.store.is_excluded(f"trace:{trace_id}")  # dropped before: so is a late event
        self.open[trace_id] = trace
        return trace

    # --- committing ------------------------------------------------------------------

    def finalize_ready(self, force: bool = False) -> int:
        """Commit every finished trace (all open ones with force=True); returns how many."""
        now = self.clock()
        ready: list[tuple[OpenTrace, bool, str | None]] = []
        transcripts: dict[str, Transcript | None] = {}
        for trace in self.open.values():
            if trace.retry_after_ns > now and not force:
                continue
            verdict = self._verdict(trace, now, force)
            if verdict is not None and self._try_adopting_typed_ahead_prompt(trace, transcripts):
                verdict = self._verdict(trace, now, force)
            if verdict is not None:
                ready.append((trace, *verdict))
        if not ready:
            return 0
        committed = 0
        # Bounded transactions: a big backlog (daemon down for a day) commits steadily
        # instead of holding everything until the last trace is built.
        for start in range(0, len(ready), self.settings.commit_batch):
            committed += self._commit(ready[start:start + self.settings.commit_batch], transcripts, now, force)
        return committed

    def _commit(self, ready: list[tuple[OpenTrace, bool, str | None]], transcripts: dict, now: int,
                force: bool = False) -> int:
        built: list[tuple[OpenTrace, Trace | None]] = []
        for trace, complete, reason in ready:
            try:
                result = self._build(trace, complete, reason, transcripts)
                if result is not None and not force and self._answer_still_to_come(trace, result, transcripts, now):
                    trace.retry_after_ns = now + int(self.settings.settle_seconds * 1e9)
                    continue
                built.append((trace, result))
            except Exception as exc:
                if is_environmental(exc):
                    raise
                self._failed(trace, "building", exc, now)
        stored: list[OpenTrace] = []
        with self.store.transaction() as db:
            for trace, result in built:
                try:
                    with _savepoint(db):
                        if trace.excluded:  # consumed, no trace (a stored one a late event excludes goes)
                            self.store.mark_consumed([e.name for e in trace.events.values()], db)
                            self.store.mark_excluded([f"trace:{trace.trace_id}"], db)
                            self.store.drop_trace(trace.trace_id, db)
                            self.excluded_count += len(trace.events)
                        elif result is None:  # a slash command's own events: consumed, no trace
                            self.store.mark_consumed([e.name for e in trace.events.values()], db)
                        else:
                            self.store.put(result, list(trace.events.values()), sorted(trace.links), db=db)
                            if self.latest_prompt.get(trace.session_id) == trace.trace_id:
                                self.latest_prompt[trace.session_id] = result.trace_id  # the id _build named it by
                except Exception as exc:
                    if is_environmental(exc):
                        raise  # the whole batch rolls back and waits; no trace is to blame
                    self._failed(trace, "storing", exc, now)
                    continue
                stored.append(trace)
        for trace in stored:
            for path in trace.files:
                _unlink(path)
            del self.open[trace.trace_id]
        return len(stored)

    def _answer_still_to_come(self, trace: OpenTrace, result: Trace, transcripts: dict, now: int) -> bool:
        """The prompt stopped, its Stop events carry no answer (older Claude Code: 2.0.0, 2.1.42
        write the transcript after the Stop hook ran) and its transcript, which exists, does not
        hold yet the closing text of each turn: the prompt's own answer, that of a
        `<task-notification>` turn of it (a background job reporting back), and that of a
        subagent that stopped (2.1.42's SubagentStop carries none either, and a background
        agent's transcript may lack it then). Claude Code may still be writing it. A prompt
        whose turns all have theirs never waits. (A call's result row comes before its turn's
        closing text, so waiting for that text waits for it too.)"""
        stops = [e for e in trace.events.values() if e.event == "Stop" and not e.agent_id]
        path = next((e.payload.get("transcript_path") for e in stops if e.payload.get("transcript_path")), None)
        if not (result.complete and stops and transcripts.get(path) is not None
                and not any("last_assistant_message" in e.payload for e in stops)
                and now - trace.last_event_ns < self.settings.answer_wait_seconds * 1e9):
            return False
        return (not result.final_response or trace.notification_text_missing
                or any(run.complete and not run.final_response for run in result.subagents))

    def _failed(self, trace: OpenTrace, stage: str, exc: Exception, now: int) -> None:
        """One trace failed: retry it later with backoff, and after max_attempts set it aside.

        Its spool files are kept (in the spool, then in quarantine), so nothing is lost, and
        the reason names the failure's type and place only (failures.describe).
        """
        trace.failures += 1
        trace.last_failure = f"{stage} failed: {describe(exc)}"
        log.warning("%s trace %s failed (attempt %d): %s\n%s", stage, trace.trace_id, trace.failures,
                    describe(exc), frames(exc))
        if trace.failures >= self.settings.max_attempts:
            self.set_aside(trace, f"trace {trace.trace_id} set aside after {trace.failures} attempts: {trace.last_failure}")
            return
        delay = min(self.settings.retry_max_seconds, self.settings.retry_first_seconds * 2 ** (trace.failures - 1))
        trace.retry_after_ns = now + int(delay * 1e9)
        self._error(f"trace {trace.trace_id}: {trace.last_failure}; retry {trace.failures + 1} of "
                    f"{self.settings.max_attempts} in {delay:.0f}s")

    def set_aside(self, trace: OpenTrace, reason: str) -> None:
        """Move a trace's spool files to quarantine and stop tracking it."""
        for path in trace.files:
            self._quarantine(path, reason)
        self.open.pop(trace.trace_id, None)

    def stuck(self) -> list[dict]:
        """Open traces waiting to retry after a failure, for `capture-daemon status`."""
        return [{"trace_id": t.trace_id, "session_id": t.session_id, "attempts": t.failures,
                 "max_attempts": self.settings.max_attempts, "reason": t.last_failure,
                 "retry_at": t.retry_after_ns / 1e9, "events": len(t.files)}
                for t in self.open.values() if t.failures]

    def _try_adopting_typed_ahead_prompt(self, trace: OpenTrace, cache: dict[str, Transcript | None]) -> bool:
        """_adopt_typed_ahead_prompt, where a failure of it (a bug, an odd stored event) leaves
        the trace as it was, incomplete, instead of stopping every trace from committing."""
        try:
            return self._adopt_typed_ahead_prompt(trace, cache)
        except Exception as exc:
            if is_environmental(exc):
                raise
            log.warning("looking for the prompt of trace %s failed: %s\n%s", trace.trace_id, describe(exc), frames(exc))
            return False

    def _adopt_typed_ahead_prompt(self, trace: OpenTrace, cache: dict[str, Transcript | None]) -> bool:
        """Give a prompt that has no UserPromptSubmit of its own the one it was typed with.

        Claude Code 2.1.328's TUI sends a message typed while the model writes its final answer
        a UserPromptSubmit at once, under the running prompt's id, then runs it as the next
        prompt, whose own events come without one. That event is this prompt's: the latest such
        message of the session typed before this prompt's first event, whose words are this
        prompt's transcript row (without a transcript: one the prompt it came under never took
        in, as its hooks tell) and that no prompt has as its own yet. It is added to this
        trace's events (the file stays the other trace's to delete; that prompt's trace keeps it,
        unused: no call took it in). Returns whether one was found."""
        events = list(trace.events.values())
        if not events or trace.prompt_id.startswith(PENDING_PROMPT) or any(e.event == "UserPromptSubmit" for e in events):
            return False
        first_ns = min(e.received_ns for e in events)
        transcript_path = next((e.payload.get("transcript_path") for e in events if e.payload.get("transcript_path")), None)
        main = _load_transcript(transcript_path, cache)
        row = main.prompts.get(trace.prompt_id) if main is not None else None
        if row is not None and (row.is_command or row.is_notification):
            return False
        others = self._session_prompt_events(trace)
        owned = {root.name for root in map(_root_prompt, others.values()) if root is not None}
        found: SpoolEvent | None = None
        for trace_id, submits in others.items():
            typed = [e for e in messages_typed_while_running(submits, undelivered_only=False)
                     if e.received_ns < first_ns and e.name not in owned and (row is None or _same_words(row, e))]
            if typed and row is None:  # the hooks alone decide, from the calls of the prompt it came under
                full = self.open[trace_id].events.values() if trace_id in self.open else self.store.events_of(trace_id)
                undelivered = {e.name for e in messages_typed_while_running(full, undelivered_only=True)}
                typed = [e for e in typed if e.name in undelivered]
            for ev in typed:
                if found is None or ev.received_ns > found.received_ns:
                    found = ev
        if found is None:
            return False
        log.info("trace %s: its prompt is the message typed ahead in %s", trace.trace_id, found.name)
        trace.events[found.name] = found
        return True

    def _session_prompt_events(self, trace: OpenTrace) -> dict[str, list[SpoolEvent]]:
        """trace id → UserPromptSubmit events, for the session's other traces, open or stored."""
        found = {t.trace_id: [e for e in t.events.values() if e.event == "UserPromptSubmit"]
                 for t in self.open.values() if t.session_id == trace.session_id and t is not trace}
        for trace_id, submits in self.store.prompt_events_of_session(trace.session_id).items():
            if trace_id != trace.trace_id:
                found.setdefault(trace_id, submits)
        return found

    def _verdict(self, trace: OpenTrace, now: int, force: bool) -> tuple[bool, str | None] | None:
        """None while the trace should stay open; else (complete, incomplete_reason)."""
        state = prompt_state(trace.events.values())
        quiet_ns = now - trace.last_event_ns
        has_prompt = any(e.event == "UserPromptSubmit" for e in trace.events.values())
        if state.stopped and not state.pending_agents:
            if quiet_ns >= self.settings.settle_seconds * 1e9 or force or trace.session_ended:
                return (has_prompt, None if has_prompt else "prompt_event_missing")
            return None
        agents_done = state.stopped and all(
            any(e.event == "SubagentStop" and e.agent_id == a for e in trace.events.values()) for a in state.pending_agents)
        if trace.session_ended or force:
            return (agents_done and has_prompt, "session_ended" if trace.session_ended else "daemon_stopped")
        if quiet_ns >= self.settings.idle_timeout_seconds * 1e9:
            return (agents_done and has_prompt, "idle_timeout")
        return None

    def _build(self, trace: OpenTrace, complete: bool, reason: str | None, cache: dict[str, Transcript | None]) -> Trace | None:
        """The trace, or None for a slash command or `!` bash-mode turn (e.g. `/compact`, whose
        compaction agent sends SubagentStop events): not a training prompt, as import decides;
        None too for a prompt of an excluded project."""
        if trace.excluded:
            return None  # its transcript is not even read
        events = list(trace.events.values())
        transcript_path = next((e.payload.get("transcript_path") for e in events if e.payload.get("transcript_path")), None)
        main_turns: list[PromptTurns] = []
        main = _load_transcript(transcript_path, cache)
        prompt_id, notifications = trace.prompt_id, trace.notification_prompts
        if main is not None:
            if prompt_id.startswith(PENDING_PROMPT):
                prompt_id = _resolve_pending(main, _root_prompt(events), trace.session_id, notification=False) or prompt_id
            notifications = [_resolve_pending(main, trace.events.get(one[len(PENDING_PROMPT):]), trace.session_id,
                                              notification=True) if one.startswith(PENDING_PROMPT) else one
                             for one in notifications]
        if main is not None and prompt_id in main.prompts and main.prompts[prompt_id].is_command:
            return None
        if main is not None and _never_ran(events, prompt_id, main, reason):
            return None
        if main is not None:
            for one in dict.fromkeys([prompt_id, *notifications]):
                if one in main.prompts:
                    main_turns.append(scrub_turns(main.prompts[one]))
            trace.notification_text_missing = any(one not in main.prompts or closing_text([main.prompts[one]]) is None
                                                  for one in notifications)
        agent_turns: dict[str, PromptTurns] = {}
        for ev in events:
            if ev.event == "SubagentStop" and ev.agent_id and ev.payload.get("agent_transcript_path"):
                agent = _load_transcript(ev.payload["agent_transcript_path"], cache)
                if agent is not None and agent.prompts:
                    agent_turns[ev.agent_id] = scrub_turns(_merge_turns(list(agent.prompts.values())))
        if main is not None:  # Claude Code 2.0.0: a subagent's rows are inline in the main file
            for agent_id, turns in inline_agents(main, main_turns).items():
                agent_turns.setdefault(agent_id, scrub_turns(turns))
        if any(t.interrupted for t in main_turns):
            # Esc: the TUI runs no Stop hook, so the trace stays open until the session ends or
            # goes quiet, which is not why it is unfinished (an import says "interrupted").
            complete, reason = False, "interrupted"
        elif _ended_by_api_error(main_turns):  # unfinished, as an import says, whatever hook closed it
            complete, reason = False, "api_error"
        result = build_trace(trace.session_id, prompt_id, events, main_turns, agent_turns,
                             complete=complete, incomplete_reason=reason, transcript_path=transcript_path)
        result.capture_losses += [
            CaptureLoss(event=e.event, tool_use_id=e.payload.get("tool_use_id"), agent_id=e.agent_id,
                        original_bytes=e.payload[LOST_KEY].get("original_bytes"), reason=e.payload[LOST_KEY].get("reason"))
            for e in sorted(events, key=lambda e: e.name) if isinstance(e.payload.get(LOST_KEY), dict)]
        return self.analyze(result)

    def pending_count(self) -> int:
        return len(pending_names(self.spool))

    def _error(self, message: str) -> None:
        log.warning(message)
        self.errors = (self.errors + [message])[-50:]


@contextmanager
def _savepoint(db: sqlite3.Connection):
    """A nested transaction: one trace's failure undoes its own writes, not the batch's."""
    db.execute("SAVEPOINT one_trace")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK TO one_trace")
        db.execute("RELEASE one_trace")
        raise
    db.execute("RELEASE one_trace")


PENDING_PROMPT = "pending:"


def _root_prompt(events: list[SpoolEvent]) -> SpoolEvent | None:
    """The prompt's own UserPromptSubmit (not a notification's)."""
    return next((e for e in sorted(events, key=lambda e: e.received_ns)
                 if e.event == "UserPromptSubmit" and not is_notification_prompt(e.payload.get("prompt"))), None)


def _resolve_pending(main: Transcript, submit: SpoolEvent | None, session_id: str, *, notification: bool) -> str | None:
    """For a UserPromptSubmit that sent no prompt_id (a prompt, or a `<task-notification>`
    turn): the id of the transcript row it is (same kind, same session, same text, nearest in
    time), the id an import gives that turn."""
    if submit is None:
        return None
    rows = [t for t in main.prompts.values() if t.is_notification == notification and not t.is_command
            and t.session_id in (None, session_id)]
    matches = [t for t in rows if _same_words(t, submit)]
    if not matches and not notification:
        # The row's text may differ from the hook's (an image pasted with it): the prompt row
        # written within 30 s of the hook.
        matches = [t for t in rows if abs((iso_to_ns(t.started_at) or 0) - submit.received_ns) < 30e9]
    if not matches:
        return None
    return min(matches, key=lambda t: abs((iso_to_ns(t.started_at) or 0) - submit.received_ns)).prompt_id


def _same_words(row: PromptTurns, submit: SpoolEvent) -> bool:
    """Whether a transcript's prompt row says what a UserPromptSubmit (redacted on reading) says."""
    from capture_daemon.redact import redact_value

    return redact_value(row.prompt).strip() == str(submit.payload.get("prompt", "")).strip()


def _ended_by_api_error(main_turns: list[PromptTurns]) -> bool:
    """Whether the prompt's last reply is Claude Code's note that an API request failed (retries
    spent, a refusal it would not retry). 2.1.328 runs no Stop hook then, so the trace stays open
    until the session ends or goes quiet, which is not why it is unfinished; 2.1.42 runs Stop,
    which does not make it finished either."""
    return bool(main_turns) and main_turns[-1].api_error and not any(t.interrupted for t in main_turns)


def _merge_turns(turns: list[PromptTurns]) -> PromptTurns:
    merged = turns[0]
    for extra in turns[1:]:
        merged.blocks.extend(extra.blocks)
        merged.results.update(extra.results)
        merged.usage_by_message.update(extra.usage_by_message)
        merged.refused.extend(extra.refused)
    return merged


def _never_ran(events: list[SpoolEvent], prompt_id: str, main: Transcript, reason: str | None) -> bool:
    """A prompt another UserPromptSubmit hook blocked (a user's policy hook, say, keeping a
    secret off the wire): Claude Code never ran it, so its session ended or went quiet with
    nothing but the submission, and its transcript holds no row of it (only a note that a hook
    blocked it). No trace: it is no workflow, and its text is what that hook meant to stop."""
    return (reason in ("session_ended", "idle_timeout") and prompt_id not in main.prompts
            and all(e.event == "UserPromptSubmit" for e in events))


def _load_transcript(path: str | None, cache: dict[str, Transcript | None]) -> Transcript | None:
    if not path:
        return None
    if path not in cache:
        try:
            cache[path] = parse_transcript(path)
        except (OSError, ValueError):
            # Deleted, unreadable, or a path no file can have (a NUL in it, ValueError): build
            # from the hook events alone.
            cache[path] = None
    return cache[path]


def _goes_on_after_a_stop(event: SpoolEvent) -> bool:
    """An event of the model's work after a Stop hook sent it on: a call, or the next Stop, which
    says it stops again (`stop_hook_active`). Not, say, a compaction agent's SubagentStop."""
    return event.event in ("PreToolUse", "PostToolUse", "PostToolUseFailure") or (
        event.event == "Stop" and event.payload.get("stop_hook_active") is True)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _default_analyze() -> Callable[[Trace], Trace]:
    try:
        from capture_daemon.quality import analyze
    except ImportError:
        return lambda trace: trace
    return analyze


