"""Turning one prompt's hook events and transcript rows into a `Trace`.

Two sources, each authoritative for something:

* hook events: which calls happened, success or failure, durations, which agent made
  them, when the prompt stopped and whether background agents still run;
* the transcript: the calls' inputs as the model sent them, the order calls were issued in
  and which were issued together (one assistant message = one parallel group), the
  narration and thinking between calls, the tool results exactly as the model saw them,
  model id, usage, tools offered.

Either may be missing (a transcript deleted, hooks not installed yet for an import) and
the trace is still built from what is there. Building is pure: the same inputs always
give the same trace, which is what makes replaying the spool safe.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

import orjson

from capture_daemon.content_blocks import READABLE_BLOCKS, block_text, read_file_marker
from capture_daemon.schema import CaptureLoss, MidTurnMessage, SubagentRun, TextStep, ToolCall, Trace, make_trace_id
from capture_daemon.spool import SpoolEvent
from capture_daemon.transcript import TASK_NOTIFICATION, Block, PromptTurns

MAX_OUTPUT_CHARS = 50_000
# How `ToolCall.error` begins for a call that never returned: no PostToolUse or
# PostToolUseFailure came for it and no transcript holds its result.
NO_RESULT = "no result: "


def is_notification_prompt(prompt: Any) -> bool:
    return isinstance(prompt, str) and prompt.lstrip().startswith(TASK_NOTIFICATION)


def ns_to_datetime(ns: int | None) -> datetime | None:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc) if ns else None


def iso_to_ns(stamp: str | None) -> int | None:
    if not stamp:
        return None
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return None


def render_tool_response(response: Any) -> str:
    """The hook's structured tool_response as text, for when no transcript has the result."""
    if isinstance(response, str):
        return response
    marker = read_file_marker(response)
    if marker is not None:  # an image or a PDF that Read sent the model as a block
        return marker
    if isinstance(response, list) and response and all(isinstance(b, dict) and b.get("type") in READABLE_BLOCKS
                                                       for b in response):
        return "\n".join(block_text(b) for b in response)  # an MCP tool's content blocks, as a transcript reads them
    if isinstance(response, dict):
        if "stdout" in response or "stderr" in response:
            out, err = str(response.get("stdout") or ""), str(response.get("stderr") or "")
            return out + ("\n" + err if err else "")
        file = response.get("file")
        if isinstance(file, dict) and "content" in file:
            return str(file["content"])
        if isinstance(response.get("filenames"), list):
            return "\n".join(map(str, response["filenames"]))
    return orjson.dumps(response, default=str).decode()


def _cut(text: str | None) -> tuple[str | None, int | None]:
    if text is None or len(text) <= MAX_OUTPUT_CHARS:
        return text, None
    marker = f"\n[understudy: output truncated, original {len(text)} chars]"
    return text[:MAX_OUTPUT_CHARS] + marker, len(text)


@dataclass
class PromptState:
    """What the daemon needs to decide whether a trace is finished."""

    stopped: bool
    pending_agents: set[str]
    session_ended: bool = False


def prompt_state(events: Iterable[SpoolEvent]) -> PromptState:
    """A trace is finished when its latest Stop reports no running background agent that
    has not stopped since."""
    last_stop: SpoolEvent | None = None
    last_notice_ns = 0
    stopped_agents: dict[str, int] = {}
    for ev in sorted(events, key=lambda e: (e.received_ns, e.name)):
        if ev.event == "Stop" and not ev.agent_id:
            last_stop = ev
        elif ev.event == "SubagentStop" and ev.agent_id:
            stopped_agents[ev.agent_id] = ev.received_ns
        elif ev.event == "UserPromptSubmit" and not ev.agent_id and is_notification_prompt(ev.payload.get("prompt")):
            last_notice_ns = ev.received_ns
    if last_stop is None or last_notice_ns > last_stop.received_ns:
        # Not stopped yet, or a `<task-notification>` turn of it runs now: its own Stop ends it.
        return PromptState(stopped=False, pending_agents=set())
    pending = set()
    for task in last_stop.payload.get("background_tasks") or []:
        if isinstance(task, dict) and task.get("status") == "running" and task.get("type", "subagent") == "subagent":
            pending.add(str(task.get("id")))
    return PromptState(stopped=True, pending_agents=pending)


@dataclass
class _Call:
    tool_use_id: str
    agent_id: str | None
    name: str = ""
    input: dict = field(default_factory=dict)
    message_id: str | None = None
    start_ns: int | None = None
    pre_ns: int | None = None
    post_ns: int | None = None
    response: Any = None
    failure: dict | None = None
    duration_ms: int | None = None
    agent_type: str | None = None
    seq: int = 0  # order of issue within its agent


def build_trace(
    session_id: str,
    prompt_id: str,
    events: list[SpoolEvent],
    main_turns: list[PromptTurns],
    agent_turns: dict[str, PromptTurns],
    *,
    source: str = "hook",
    complete: bool,
    incomplete_reason: str | None = None,
    transcript_path: str | None = None,
) -> Trace:
    events = sorted(events, key=lambda e: (e.received_ns, e.name))
    root = next((e for e in events if e.event == "UserPromptSubmit" and not is_notification_prompt(e.payload.get("prompt"))), None)
    row_prompt = next((t.prompt for t in main_turns if not t.is_notification), "")
    prompt_text = _prompt_as_sent(str(root.payload.get("prompt", "")), row_prompt) if root else row_prompt

    calls = _collect_calls(events, main_turns, agent_turns)
    ordered = _merge_by_start(calls)
    tool_calls = [_to_tool_call(c, main_turns, agent_turns, None if complete else incomplete_reason) for c in ordered]
    # The answer is the prompt's own: a later `<task-notification>` turn (a background agent
    # reporting back) is a later step of the trace, never its final answer.
    own_turns = [t for t in main_turns if not t.is_notification]
    first_notice = next((e.received_ns for e in events
                         if e.event == "UserPromptSubmit" and is_notification_prompt(e.payload.get("prompt"))), None)
    stops = [e for e in events if e.event == "Stop" and not e.agent_id
             and (first_notice is None or e.received_ns < first_notice)]
    final = stops[-1].payload.get("last_assistant_message") if stops else None
    if not final:
        final = closing_text(own_turns)
    own_blocks = [b for t in own_turns for b in t.blocks]
    final_block = own_blocks[-1] if final and own_blocks and own_blocks[-1].kind == "text" \
        and own_blocks[-1].text.strip() == final.strip() else None
    narration, thinking, mid_turn = _place_text(ordered, main_turns, agent_turns, final_block)
    if not main_turns:
        mid_turn = _mid_turn_from_hooks(events, root, ordered)
    usage: dict[str, int] = {}
    for turns in [*main_turns, *agent_turns.values()]:
        for key, value in turns.usage().items():
            usage[key] = usage.get(key, 0) + value

    start_ns = root.received_ns if root else (events[0].received_ns if events else iso_to_ns(main_turns[0].started_at) if main_turns else None)
    end_ns = events[-1].received_ns if events else (iso_to_ns(main_turns[-1].ended_at) if main_turns else None)
    cwd = (root.payload.get("cwd") if root else None) or next((e.payload.get("cwd") for e in events if e.payload.get("cwd")), None) \
        or next((t.cwd for t in main_turns if t.cwd), None)
    trace = Trace(
        trace_id=make_trace_id(session_id, prompt_id),
        session_id=session_id,
        prompt_id=prompt_id,
        prompt=prompt_text,
        final_response=final,
        model=next((t.model for t in main_turns if t.model), None),
        cwd=cwd,
        started_at=ns_to_datetime(start_ns),
        ended_at=ns_to_datetime(end_ns),
        complete=complete,
        incomplete_reason=None if complete else incomplete_reason,
        source=source,
        tool_calls=tool_calls,
        assistant_text=narration,
        thinking=thinking,
        mid_turn_messages=mid_turn,
        subagents=_subagents(events, ordered, main_turns, agent_turns),
        tools_offered=next((t.tools_offered for t in main_turns if t.tools_offered), []),
        usage=usage,
        transcript_path=transcript_path or next((e.payload.get("transcript_path") for e in events if e.payload.get("transcript_path")), None),
        capture_losses=_refusals(main_turns, agent_turns),
    )
    trace.reasoning_signals.tool_sequence = [c.name for c in trace.tool_calls if c.agent_id is None]
    return trace


def _prompt_as_sent(hook_prompt: str, row_prompt: str) -> str:
    """The prompt as the model read it. The hook's holds only the typed words; the transcript's
    row also holds a marker for each block without text sent with them (an image: "[image]"), as
    an import reads it. That row, when it holds the hook's words, is the fuller account."""
    if row_prompt and hook_prompt.strip() and hook_prompt.strip() in row_prompt:
        return row_prompt
    return hook_prompt


REFUSAL_LOSS = "Refusal"


def _refusals(main_turns: list[PromptTurns], agent_turns: dict[str, PromptTurns]) -> list[CaptureLoss]:
    """The replies a safety classifier stopped, whose content the transcript parser left out: the
    trace says so (and quality's lost_events rule rejects it: what follows them answers a note
    from Claude Code the trace does not hold)."""
    sources = [(None, t) for t in main_turns] + list(agent_turns.items())
    return [CaptureLoss(event=REFUSAL_LOSS, agent_id=agent, reason=f"reply {message_id} stopped by a safety classifier: left out")
            for agent, turns in sources for message_id in dict.fromkeys(turns.refused)]


def _collect_calls(events: list[SpoolEvent], main_turns: list[PromptTurns], agent_turns: dict[str, PromptTurns]) -> list[_Call]:
    calls: dict[str, _Call] = {}
    # Transcript first: it knows the order of issue and the parallel grouping.
    sources: list[tuple[str | None, list[Block]]] = [(None, [b for t in main_turns for b in t.blocks])]
    sources += [(agent, turns.blocks) for agent, turns in agent_turns.items()]
    for agent, blocks in sources:
        seq = 0
        for block in blocks:
            if block.kind != "tool_use" or block.tool_use_id in calls:
                continue
            calls[block.tool_use_id] = _Call(block.tool_use_id, agent, block.name, block.input, block.message_id,
                                             start_ns=iso_to_ns(block.timestamp), seq=seq)
            seq += 1
    # The input is what the model sent, as the transcript has it. The hook's `tool_input` is what
    # ran: a user's PreToolUse hook may have rewritten it (`updatedInput`), the CLI makes paths
    # absolute, drops ExitPlanMode's plan and the hook script cuts long strings; it stands in
    # only for a call no transcript has (deleted, not written yet), and an import never has it.
    model_sent = set(calls)
    # Then the hooks: authoritative for outcome and timing.
    next_seq: dict[str | None, int] = {}
    for c in calls.values():
        next_seq[c.agent_id] = max(next_seq.get(c.agent_id, 0), c.seq + 1)
    # Claude Code 2.0.0's hooks carry no tool_use_id: where the transcript has no calls for
    # that agent (deleted, unreadable), a Post is paired with the earliest open Pre of the
    # same tool and input, under an id made from the Pre's spool file name.
    from_transcript = {agent for agent, blocks in sources if any(b.kind == "tool_use" for b in blocks)}
    open_pre: dict[tuple, list[str]] = {}
    for ev in events:
        if ev.event not in ("PreToolUse", "PostToolUse", "PostToolUseFailure"):
            continue
        tool_use_id = ev.payload.get("tool_use_id")
        if not tool_use_id:
            if ev.agent_id in from_transcript:
                continue
            key = (ev.agent_id, str(ev.payload.get("tool_name")), orjson.dumps(ev.payload.get("tool_input"),
                                                                               option=orjson.OPT_SORT_KEYS, default=str))
            waiting = open_pre.setdefault(key, [])
            if ev.event == "PreToolUse":
                tool_use_id = f"hook-{ev.name}"
                waiting.append(tool_use_id)
            else:
                tool_use_id = waiting.pop(0) if waiting else f"hook-{ev.name}"
        call = calls.get(tool_use_id)
        if call is None:
            agent = ev.agent_id
            call = _Call(str(tool_use_id), agent, seq=next_seq.get(agent, 0))
            next_seq[agent] = call.seq + 1
            calls[call.tool_use_id] = call
        call.name = str(ev.payload.get("tool_name") or call.name)
        if call.tool_use_id not in model_sent and isinstance(ev.payload.get("tool_input"), dict):
            call.input = ev.payload["tool_input"]
        call.agent_type = ev.payload.get("agent_type") or call.agent_type
        if ev.event == "PreToolUse":
            call.pre_ns = ev.received_ns
            call.start_ns = ev.received_ns
        else:
            call.post_ns = ev.received_ns
            call.duration_ms = ev.payload.get("duration_ms") if isinstance(ev.payload.get("duration_ms"), int) else call.duration_ms
            if ev.event == "PostToolUse":
                call.response = ev.payload.get("tool_response")
            else:
                call.failure = ev.payload
    return list(calls.values())


def _merge_by_start(calls: list[_Call]) -> list[_Call]:
    """Each agent's calls in their order of issue, agents interleaved by start time."""
    by_agent: dict[str | None, list[_Call]] = {}
    for call in calls:
        by_agent.setdefault(call.agent_id, []).append(call)
    lanes = []
    for agent_calls in by_agent.values():
        agent_calls.sort(key=lambda c: c.seq)
        _assign_groups(agent_calls)
        lanes.append(agent_calls)

    def keyed(lane: list[_Call]):
        last = 0
        for index, call in enumerate(lane):
            # A call's place is its start; a call without one follows its predecessor.
            last = call.start_ns if call.start_ns is not None else last
            yield (last, 0 if call.agent_id is None else 1, index, id(lane)), call

    return [call for _, call in heapq.merge(*(keyed(lane) for lane in lanes), key=lambda pair: pair[0])]


def _assign_groups(agent_calls: list[_Call]) -> None:
    """Calls from one assistant message are one group. Without a transcript, a call whose
    PreToolUse came before the previous call finished was issued alongside it."""
    group = -1
    previous: _Call | None = None
    for call in agent_calls:
        if previous is None:
            group = 0
        elif call.message_id and previous.message_id:
            group += call.message_id != previous.message_id
        elif not (call.pre_ns and previous.post_ns and call.pre_ns < previous.post_ns):
            group += 1
        call.parallel_group = group  # type: ignore[attr-defined]
        previous = call


def no_result_error(incomplete_reason: str | None) -> str:
    """Why a call has no outcome, from why its trace is unfinished. The model saw no output of
    it: its session was killed, ended or interrupted while the call ran or waited for
    permission, or it still runs."""
    why = {"interrupted": "the prompt was interrupted before the call returned",
           "session_ended": "the session ended before the call returned"}.get(
        incomplete_reason or "", "the call had not returned when the trace was recorded (still running, "
                                 "or its session was killed or ended)")
    return NO_RESULT + why


def _to_tool_call(call: _Call, main_turns: list[PromptTurns], agent_turns: dict[str, PromptTurns],
                  incomplete_reason: str | None) -> ToolCall:
    turns = [agent_turns[call.agent_id]] if call.agent_id in agent_turns else main_turns
    result = next((t.results[call.tool_use_id] for t in turns if call.tool_use_id in t.results), None)
    if result is None and call.agent_id is not None:
        result = next((t.results[call.tool_use_id] for t in main_turns if call.tool_use_id in t.results), None)
    error = None
    success = True
    if result is not None and result.is_error:
        # What the model read, as an import has it: Claude Code may add to the error its hook
        # reports (an MCP tool's error gets a note on the tool's input schema).
        success = False
        error = result.text[:2000]
    elif call.failure is not None:
        success = False
        error = str(call.failure.get("error") or "failed")
    elif result is None and call.post_ns is None:
        # Neither hook nor transcript says it returned: recorded as the failure it was for the
        # model (no output), never as a success with an empty output.
        success = False
        error = no_result_error(incomplete_reason)
    if result is not None:
        output = result.text
    elif call.response is not None:
        output = render_tool_response(call.response)
    elif call.post_ns is None:
        output = None  # the model saw none
    else:
        output = error
    output, original = _cut(output)
    if result is not None and result.full_chars:
        original = max(original or 0, result.full_chars)
    return ToolCall(
        tool_use_id=call.tool_use_id, name=call.name or "unknown", input=call.input, output=output,
        output_original_chars=original, success=success, error=error,
        is_interrupt=bool(call.failure.get("is_interrupt")) if call.failure
        else result is None and call.post_ns is None and incomplete_reason == "interrupted",
        duration_ms=call.duration_ms, started_at=ns_to_datetime(call.start_ns),
        agent_id=call.agent_id, agent_type=call.agent_type, parallel_group=getattr(call, "parallel_group", 0),
    )


def _place_text(ordered: list[_Call], main_turns: list[PromptTurns], agent_turns: dict[str, PromptTurns], final_block: Block | None):
    """Narration, thinking and mid-turn messages (the user's, and what the user's hooks showed
    the model), each with `position` = calls (global order) issued before the assistant step
    that follows it.

    The main agent's closing text is the final answer, kept in `final_response` only. A mid-turn
    message is placed like narration, before the next call of the main agent: it arrived with
    the results of the calls before it, and what comes next was written after reading it. Text
    the model wrote before it at that place (it stopped, and a Stop hook sent it on) is counted
    in its `after_text`.
    """
    index_of = {c.tool_use_id: i for i, c in enumerate(ordered)}
    narration: list[TextStep] = []
    thinking: list[TextStep] = []
    mid_turn: list[MidTurnMessage] = []

    def place_all(pending: list[Block], position: int, agent: str | None) -> None:
        written = 0
        for text_block in pending:
            place(text_block, position, agent, written)
            written += text_block.kind == "text"

    def place(block: Block, position: int, agent: str | None, written_before: int) -> None:
        if block.kind == "mid_turn":
            if agent is None or block.origin != "user":  # only the main conversation takes the user's messages
                mid_turn.append(MidTurnMessage(text=block.text, position=position, kind=block.origin, hook=block.hook,
                                               after_text=written_before, agent_id=agent))
        else:
            (narration if block.kind == "text" else thinking).append(TextStep(text=block.text, position=position, agent_id=agent))

    lanes = [(None, [b for t in main_turns for b in t.blocks])] + list((a, t.blocks) for a, t in agent_turns.items())
    for agent, blocks in lanes:
        pending: list[Block] = []
        for block in blocks:
            if block.kind == "tool_use":
                place_all(pending, index_of.get(block.tool_use_id, len(ordered)), agent)
                pending = []
            elif block is not final_block:
                pending.append(block)
        # Text after the agent's last call: placed after its last call.
        own = [index_of[b.tool_use_id] for b in blocks if b.kind == "tool_use" and b.tool_use_id in index_of]
        end = len(ordered) if agent is None else (max(own) + 1 if own else 0)
        place_all(pending, end, agent)
    narration.sort(key=lambda s: (s.position, s.agent_id is not None))
    thinking.sort(key=lambda s: (s.position, s.agent_id is not None))
    return narration, thinking, mid_turn


def _mid_turn_from_hooks(events: list[SpoolEvent], root: SpoolEvent | None, ordered: list[_Call]) -> list[MidTurnMessage]:
    """Mid-turn messages when no transcript tells where they arrived (deleted, unreadable).

    Claude Code 2.1.328 sends a UserPromptSubmit under the running prompt's prompt_id for a
    message typed mid-turn: interactively when it is typed, with `-p` when it is delivered.
    One typed interactively after the last call ended (while the model writes its answer)
    gets that same event, yet is run as the next prompt, whose own events then come without
    one (the daemon gives it to that prompt: ingest._adopt_typed_ahead_prompt). So a message
    counts only where it was surely delivered within this turn: a call was
    running when it came (it arrives with that call's result) or the main agent called a
    tool after it. Its place is the calls started before it (one typed while the model was
    still writing calls reached it after them, later than this says). With a transcript, the
    transcript decides alone, and this is not asked."""
    if root is None:
        return []
    messages = []
    for ev in _typed_while_running(events, root):
        at = ev.received_ns
        if _delivered_within(at, ordered):
            position = sum(1 for c in ordered if c.start_ns is not None and c.start_ns < at)
            messages.append(MidTurnMessage(text=ev.payload["prompt"], position=position))
    return messages


def _typed_while_running(events: list[SpoolEvent], root: SpoolEvent | None) -> list[SpoolEvent]:
    """A prompt's UserPromptSubmit events other than its own (and not `<task-notification>`s):
    messages the user typed while it ran, which 2.1.328 sends under the running prompt's id."""
    found = []
    for ev in events:
        prompt = ev.payload.get("prompt")
        if ev.event == "UserPromptSubmit" and ev is not root and not ev.agent_id and isinstance(prompt, str) \
                and prompt.strip() and not is_notification_prompt(prompt):
            found.append(ev)
    return found


def _delivered_within(at: int, ordered: list[_Call]) -> bool:
    """Whether a message typed at `at` reached the running prompt, as the hooks tell: a call was
    running (it came with that call's result) or the main agent called a tool after it."""
    running = any(c.pre_ns is not None and c.pre_ns < at and (c.post_ns is None or c.post_ns > at) for c in ordered)
    called_after = any(c.agent_id is None and c.pre_ns is not None and c.pre_ns > at for c in ordered)
    return running or called_after


def messages_typed_while_running(events: Iterable[SpoolEvent], *, undelivered_only: bool) -> list[SpoolEvent]:
    """The UserPromptSubmit events of messages typed while this prompt ran (see
    `_typed_while_running`); with `undelivered_only`, only those the hooks say it never took in
    (typed while the model wrote its answer: the TUI runs such a message as the next prompt)."""
    events = sorted(events, key=lambda e: (e.received_ns, e.name))
    root = next((e for e in events if e.event == "UserPromptSubmit" and not is_notification_prompt(e.payload.get("prompt"))), None)
    typed = _typed_while_running(events, root)
    if not undelivered_only or not typed:
        return typed
    ordered = _merge_by_start(_collect_calls(events, [], {}))
    return [ev for ev in typed if not _delivered_within(ev.received_ns, ordered)]


def closing_text(main_turns: list[PromptTurns]) -> str | None:
    for turns in reversed(main_turns):
        for block in reversed(turns.blocks):
            if block.kind == "tool_use":
                return None
            if block.kind == "text":
                return block.text
    return None


def _as_text(value: Any) -> str | None:
    """A payload value the schema keeps as text: a number as its digits (an id that came as one),
    anything else that is not a string as absent. One oddly typed field of an Agent call made the
    whole prompt's trace fail validation, and every event of it went to quarantine."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _subagents(events: list[SpoolEvent], ordered: list[_Call], main_turns: list[PromptTurns],
               agent_turns: dict[str, PromptTurns]) -> list[SubagentRun]:
    runs: dict[str, SubagentRun] = {}
    results = {k: r for t in main_turns for k, r in t.results.items()}
    for call in ordered:
        response = call.response if isinstance(call.response, dict) else {}
        if not response.get("agentId") and call.tool_use_id in results:
            # No PostToolUse (an import, or a lost hook): the transcript's structured result
            # (`toolUseResult`) names the agent the call started.
            structured = results[call.tool_use_id].structured
            response = structured if isinstance(structured, dict) else {}
        agent_id = _as_text(response.get("agentId"))
        if call.name in ("Agent", "Task") and agent_id:
            given = call.input if isinstance(call.input, dict) else {}
            runs[agent_id] = SubagentRun(agent_id=agent_id, agent_type=_as_text(given.get("subagent_type")),
                                         description=_as_text(given.get("description")),
                                         prompt=_as_text(given.get("prompt")), spawned_by=call.tool_use_id)
    acting = {c.agent_id for c in ordered} | set(agent_turns)
    for ev in events:
        agent_id = ev.agent_id
        if ev.event not in ("SubagentStart", "SubagentStop") or not agent_id:
            continue
        if agent_id not in runs and agent_id not in acting and ev.payload.get("agent_type") == "":
            # Claude Code 2.1.42's TUI stops an agent of its own each prompt (no type, no
            # SubagentStart, a transcript never written): no call started it, it did nothing.
            continue
        run = runs.setdefault(agent_id, SubagentRun(agent_id=agent_id))
        run.agent_type = run.agent_type or _as_text(ev.payload.get("agent_type"))
        if ev.event == "SubagentStop":
            run.complete = True
            run.final_response = _as_text(ev.payload.get("last_assistant_message")) or run.final_response
    for agent_id, turns in agent_turns.items():
        run = runs.setdefault(agent_id, SubagentRun(agent_id=agent_id))
        run.prompt = run.prompt or turns.prompt
        if run.final_response is None:
            run.final_response = closing_text([turns])
    return list(runs.values())
