"""Reading Claude Code session transcripts (`transcript_path`, `agent_transcript_path`).

The hooks say *what* was called; the transcript says what the model *said* around the calls:
narration, thinking, the final answer, the model id, token usage, and the tool schemas it
was offered (`api-request-shape` rows). Facts about the format that shape this code:

* one content block per row: an assistant message arrives as several rows sharing
  `message.id`, so blocks are merged by that id (which also tells which calls were issued
  together, i.e. in parallel);
* `promptId` sits on user rows (Claude Code 2.1.x from some version on); assistant rows
  belong to the latest prompt before them. Older transcripts (2.0.x, early 2.1.x) have no
  `promptId`: a prompt then starts at each real user text row, and its id is that row's
  `uuid` (see `prompt_kind` for what is not a prompt). The live daemon resolves a hook
  prompt without `prompt_id` to the same row (ingest.py), so both ways give one trace id;
* a forked session (`--fork-session`) starts with a copy of the history: 2.1.328 puts the
  copied rows under the new prompt's promptId (the last typed row owns it), 2.0.0 and 2.1.42
  keep the rows' uuids; the importer keeps each prompt row's uuid once (`row_uuid`), and a
  prompt id already stored under another session once its file is gone;
* Claude Code 2.0.0 wrote a (foreground) subagent's rows inline, `isSidechain: true`, in
  the main file: they are kept apart as `sidechains` (one per parentUuid chain, named
  `sidechain-<first row uuid>`), never as prompts; `inline_agents` gives those a prompt spawned;
* slash commands and `!` bash-mode turns (`<command-name>`, `<bash-input>`, their outputs)
  are not prompts: they are kept as `is_command` turns, which the importer leaves out;
* the file may be mid-write (a partial last line), may hold corrupt lines, lone
  surrogates or rows of another shape; none of that may stop the rest from being read:
  a bad row is skipped and counted (`corrupt_lines`), never the whole file;
* the path comes from a hook payload, so it is untrusted: only a regular file is read
  (a FIFO would block forever), streamed row by row with a bound on each row, so a
  multi-GB (or sparse) file costs time, not memory;
* a large tool output is saved to a `tool-results/` file; the model sees a preview;
* a message the user types while Claude works is queued and, in 2.1.328, delivered within the
  running turn with the next tool result: an `attachment` row of type `queued_command` (its
  text in `prompt`) after that result's row, no promptId, no user row (`queue-operation` rows
  say when it was typed and absorbed). It is kept as a `mid_turn` block among the prompt's
  blocks, where it arrived. 2.0.0 and 2.1.42 show such a message to the model inside the tool
  result but write it nowhere in the transcript (nor send a hook for it): it cannot be recovered;
* what the user's own hooks show the model is a `mid_turn` block too, with its `origin`: 2.1.328
  writes an `attachment` row after the row it came with, `hook_blocking_error` (a Stop hook that
  blocks the stop, a PostToolUse hook that blocks: `blockingError.blockingError`) or
  `hook_additional_context` (`content`, a list of strings: UserPromptSubmit's after the prompt,
  PostToolUse's after the result) or, for a UserPromptSubmit hook's plain stdout, `hook_success`
  (`content`), named by `hookName`. A Stop (or SubagentStop) hook's reason is
  also a user row, `isMeta`, "Stop hook feedback:\n<reason>", which is all 2.1.42 and 2.0.0 write
  of any hook's text (their additional context reaches the model but not the transcript; 2.0.0's
  row has no `isMeta` and lists the reasons as "- <reason>"); one block per delivery either way.
  SessionStart's context comes before the first prompt (none holds it).
"""

from __future__ import annotations

import codecs
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import orjson

from capture_daemon.content_blocks import READABLE_BLOCKS, block_text
from capture_daemon.spool import CorruptSpoolFile, nesting_depth_exceeds, open_regular_file, parse_json

TASK_NOTIFICATION = "<task-notification>"
# User rows Claude Code writes for slash commands and `!` bash mode: not typed prompts.
COMMAND_PREFIXES = ("<command-name>", "<command-message>", "<command-args>", "<local-command-stdout>",
                    "<local-command-stderr>", "<local-command-caveat>", "<bash-input>", "<bash-stdout>",
                    "<bash-stderr>", "<user-memory-input>")
# Of those, the ones that start a typed command (the rest are its output).
TYPED_COMMAND_HEADS = ("<command-name>", "<command-message>", "<bash-input>", "<user-memory-input>")
INTERRUPT_PREFIX = "[Request interrupted by user"
# How a prompt id made up here begins (a user row with neither promptId nor uuid): unlike the
# file's own ids it is not unique across sessions.
MADE_UP_PROMPT_ID = "row-"
MAX_TOOL_RESULT_FILE_CHARS = 200_000
# The model name Claude Code writes on assistant rows it made up itself (placeholders, API errors).
SYNTHETIC_MODEL = "<synthetic>"
# Only these rows matter here; skipping the rest unparsed (attachments and prompt snapshots
# are most of a transcript's bytes) is what makes importing months of history fast.
_WANTED_ROW = re.compile(
    rb'"type":\s?"(?:user|assistant|api-request-shape|queued_command|hook_blocking_error|hook_additional_context|hook_success)"')
# The stop_reason of a reply a safety classifier stopped.
REFUSAL = "refusal"
# A row longer than this is skipped (counted as corrupt) without being held in memory.
MAX_ROW_BYTES = 64 << 20
_TOOL_RESULTS_FILE = re.compile(r"(/[^\s'\"<>]*/tool-results/[^\s'\"<>]+)")
# The user row Claude Code writes (isMeta) when a Stop or SubagentStop hook blocks the stop.
_STOP_FEEDBACK = re.compile(r"((?:Subagent)?Stop) hook feedback:\n(.*)", re.DOTALL)


@dataclass
class Block:
    kind: str  # "text" | "thinking" | "tool_use" | "mid_turn" (text from outside that reached the model mid-turn)
    message_id: str  # for "mid_turn": the queued command's own uuid (a hook's: its row's)
    text: str = ""
    tool_use_id: str = ""
    name: str = ""
    input: dict[str, Any] = field(default_factory=dict)
    timestamp: str | None = None
    origin: str = "user"  # for "mid_turn": who sent it (schema.MidTurnKind)
    hook: str | None = None  # for a hook's "mid_turn": the hook as Claude Code names it ("Stop", "PostToolUse:Bash")


@dataclass
class ToolResult:
    text: str
    is_error: bool
    structured: Any = None  # `toolUseResult`: the tool's own structured result
    # For an output Claude Code persisted to tool-results/ (the model saw only a preview):
    # the full output's length in characters.
    full_chars: int | None = None


@dataclass
class PromptTurns:
    prompt_id: str
    prompt: str = ""
    is_notification: bool = False
    blocks: list[Block] = field(default_factory=list)
    results: dict[str, ToolResult] = field(default_factory=dict)
    model: str | None = None
    usage_by_message: dict[str, dict[str, int]] = field(default_factory=dict)
    tools_offered: list[dict[str, Any]] = field(default_factory=list)
    started_at: str | None = None
    ended_at: str | None = None
    cwd: str | None = None
    session_id: str | None = None  # the prompt row's own sessionId (a resumed copy keeps the original's)
    is_command: bool = False  # a slash command or `!` bash-mode turn: not a training prompt
    interrupted: bool = False  # the user pressed Esc during it
    api_error: bool = False  # its last reply is Claude Code's note that the API request failed
    cwds: set[str] = field(default_factory=set)  # every working directory its rows name (a `cd` moves it)
    row_uuid: str | None = None  # the uuid of the row that holds the prompt text
    # Ids of the replies a safety classifier stopped (stop_reason "refusal"): their blocks are
    # left out (see _assistant_row); the trace records each as a capture loss.
    refused: list[str] = field(default_factory=list)

    def usage(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for usage in self.usage_by_message.values():
            for key, value in usage.items():
                total[key] = total.get(key, 0) + value
        return total


@dataclass
class Transcript:
    path: str
    session_id: str | None = None
    start_cwd: str | None = None  # the first row's working directory: where the session started
    agent_id: str | None = None
    prompts: dict[str, PromptTurns] = field(default_factory=dict)
    corrupt_lines: int = 0
    partial_tail: bool = False
    # Rows skipped, by reason ("not JSON", "over-long", "not an object", "unexpected shape").
    skipped: dict[str, int] = field(default_factory=dict)
    # Inline subagent runs of a main file (2.0.0): agent id → its turns.
    sidechains: dict[str, PromptTurns] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.corrupt_lines += 1
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(block_text(block) for block in content if isinstance(block, dict)
                         and block.get("type") in READABLE_BLOCKS)
    return ""


def _numeric_usage(usage: Any) -> dict[str, int]:
    if not isinstance(usage, dict):
        return {}
    return {k: v for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool)}


def _persisted_output_chars(text: str) -> int | None:
    """A huge output is saved to tool-results/ and the model sees a preview naming the file.
    The preview is what the model saw, so it stays the observation; the file tells how big
    the output really was."""
    if "tool-results/" not in text:
        return None
    match = _TOOL_RESULTS_FILE.search(text)
    if not match:
        return None
    try:
        with open_regular_file(match.group(1)) as handle:
            data = handle.read(MAX_TOOL_RESULT_FILE_CHARS * 50)
    except (OSError, CorruptSpoolFile):
        return None
    return len(data.decode("utf-8", "replace"))


class TranscriptUnreadable(OSError):
    """The transcript path names something that is not a regular file."""


def _rows(handle: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    """(line, is_last) for each line, bounded: an over-long line is skipped unread.

    `is_last` is true only for a final line with no newline (the writer may be mid-line).
    """
    while True:
        line = handle.readline(MAX_ROW_BYTES)
        if not line:
            return
        if line.endswith(b"\n"):
            yield line, False
            continue
        if len(line) < MAX_ROW_BYTES:
            yield line, True  # end of file without a newline
            return
        # Over-long: drop the rest of it in bounded reads, keep a marker row.
        while True:
            chunk = handle.readline(1 << 20)
            if not chunk or chunk.endswith(b"\n"):
                break
        yield b"\x00overlong", False


def parse_transcript(path: str | Path, data: bytes | None = None) -> Transcript:
    """Parse a transcript file; never raises for bad content (an unreadable file → OSError)."""
    if data is not None:
        return _parse_rows(str(path), _rows(io.BytesIO(data)))
    inline = not Path(path).name.startswith("agent-")  # an agent's own file is all sidechain
    try:
        handle = open_regular_file(path)
    except CorruptSpoolFile as exc:
        raise TranscriptUnreadable(f"transcript {path} is {str(exc).removeprefix('not a regular file ')}") from None
    with handle:
        return _parse_rows(str(path), _rows(handle), inline)


def _parse_rows(path: str, rows: Iterable[tuple[bytes, bool]], inline_sidechains: bool = True) -> Transcript:
    transcript = Transcript(path=path)
    state = _ParseState(inline_sidechains=inline_sidechains)
    first = True
    for line, is_last in rows:
        if first:  # a file saved by an editor may open with a byte order mark
            line, first = line.removeprefix(codecs.BOM_UTF8), False
        if not line.strip():
            continue
        if is_last:
            transcript.partial_tail = True
        if not _WANTED_ROW.search(line):
            if line.startswith(b"\x00overlong"):
                transcript.skip("over-long")
            elif is_last:
                transcript.partial_tail = not line.rstrip().endswith(b"}")
            elif not line.lstrip().startswith(b"{"):
                transcript.skip("not JSON")  # torn line or binary garbage
            continue
        try:
            rows = [_parse_line(line)]
        except (ValueError, UnicodeDecodeError):
            rows = _glued_objects(line)  # two rows on one line (a lost newline)
            if not rows:
                if not is_last:  # a partial tail is whole on a later read
                    transcript.skip("not JSON")
                continue
        if is_last:
            transcript.partial_tail = False
        for row in rows:
            if not isinstance(row, dict):
                transcript.skip("not an object")
                continue
            try:
                _apply_row(transcript, row, state)
            except (TypeError, AttributeError, ValueError, KeyError):
                transcript.skip("unexpected shape")  # a row of another shape: skip it, keep the rest
    return transcript


def _parse_line(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        # Invalid UTF-8 becomes U+FFFD (as any reader shows it), then the lenient parser.
        return parse_json(line.decode("utf-8", "replace").encode("utf-8", "surrogatepass"))


def _glued_objects(line: bytes) -> list[Any]:
    """The JSON objects of a line that holds several back to back; [] when it is not that."""
    import json

    text = line.decode("utf-8", "replace").strip()
    decoder = json.JSONDecoder()
    found, index = [], 0
    try:
        while index < len(text):
            value, index = decoder.raw_decode(text, index)
            found.append(value)
            while index < len(text) and text[index].isspace():
                index += 1
    except ValueError:
        return []
    return found if len(found) > 1 else []


@dataclass
class _ParseState:
    current: PromptTurns | None = None
    tools_offered: list[dict[str, Any]] = field(default_factory=list)
    inline_sidechains: bool = True
    chain_of: dict[str, str] = field(default_factory=dict)  # sidechain row uuid → its run's agent id
    early: list[dict] = field(default_factory=list)  # an agent file's assistant rows written before its task row


def _apply_row(transcript: Transcript, row: dict, state: _ParseState) -> None:
    _apply_row_content(transcript, row, state)
    cwd = row.get("cwd")
    if isinstance(cwd, str):
        transcript.start_cwd = transcript.start_cwd or cwd
        if state.current is not None and row.get("isSidechain") is not True:
            state.current.cwds.add(cwd)


def _apply_row_content(transcript: Transcript, row: dict, state: _ParseState) -> None:
    kind = row.get("type")
    if isinstance(row.get("sessionId"), str):
        transcript.session_id = transcript.session_id or row["sessionId"]
    if isinstance(row.get("agentId"), str):
        transcript.agent_id = transcript.agent_id or row["agentId"]
    if kind == "api-request-shape":
        shape = row.get("shape")
        tools = shape.get("tools") if isinstance(shape, dict) else None
        if isinstance(tools, list):
            state.tools_offered = [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)]
            if state.current is not None and not state.current.tools_offered:
                state.current.tools_offered = state.tools_offered
    elif kind == "assistant" and _is_synthetic(row):
        # Claude Code's own placeholder, not the model's words: "No response requested." after a
        # resume, "API Error: 400 ..." when a request failed. Never narration or an answer; an
        # error left as the prompt's last reply makes the prompt unfinished.
        if state.current is not None and row.get("isApiErrorMessage") is True and row.get("isSidechain") is not True:
            state.current.api_error = True
    elif state.inline_sidechains and row.get("isSidechain") is True and kind in ("user", "assistant"):
        _sidechain_row(transcript, row, state)
    elif kind == "user":
        state.current = _user_row(transcript, row, state.current, state.tools_offered)
        if state.early and state.current is not None:
            # 2.1.x may write a subagent's first reply before the task row it answers.
            for early in state.early:
                _assistant_row(state.current, early)
            state.early = []
    elif kind == "assistant" and state.current is not None:
        _assistant_row(state.current, row)
    elif kind == "attachment" and state.current is not None and (row.get("isSidechain") is not True or not state.inline_sidechains):
        _queued_message_row(state.current, row)
        _hook_text_row(state.current, row)
    elif kind == "assistant" and not state.inline_sidechains and len(state.early) < 64:
        state.early.append(row)


def _is_synthetic(row: dict) -> bool:
    message = row.get("message")
    model = message.get("model") if isinstance(message, dict) else None
    return model == SYNTHETIC_MODEL or row.get("isApiErrorMessage") is True


def _opens_a_turn(kind: str, content: Any) -> bool:
    """A row that is something typed: a prompt, or the head of a slash command or `!` bash-mode
    line (not the command's output rows, which follow their head under its id)."""
    return kind == "prompt" or (kind == "command" and _text_of(content).lstrip().startswith(TYPED_COMMAND_HEADS))


def _message(row: dict) -> dict:
    message = row.get("message")
    if message is None:
        return {}
    if not isinstance(message, dict):
        raise TypeError("message is not an object")
    return message


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def prompt_kind(row: dict, content: Any) -> str:
    """What a user row is: "tool_result", "meta" (Claude Code's own: caveats, skill bodies,
    compaction summaries, a Stop hook's feedback), "command" (slash command or `!` bash mode), "interrupt",
    "notification" (a background task reporting back) or "prompt" (typed by the user)."""
    if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
        return "tool_result"
    if row.get("isMeta") or row.get("isCompactSummary") or row.get("isVisibleInTranscriptOnly"):
        return "meta"
    if _STOP_FEEDBACK.match(_text_of(content)):
        return "meta"  # a Stop hook sent the model on (2.0.0 writes it without isMeta): no prompt of its own
    text = _text_of(content).lstrip()
    if text.startswith(COMMAND_PREFIXES):
        return "command"
    if text.startswith(INTERRUPT_PREFIX):
        return "interrupt"
    if text.startswith(TASK_NOTIFICATION):
        return "notification"
    return "prompt" if text.strip() else "meta"


def _user_row(transcript: Transcript, row: dict, current: PromptTurns | None, tools_offered: list) -> PromptTurns | None:
    message = _message(row)
    content = message.get("content")
    kind = prompt_kind(row, content)
    prompt_id = _str_or_none(row.get("promptId"))
    if not prompt_id and kind in ("prompt", "notification", "command"):
        # No promptId (older Claude Code): each real user row opens a prompt, named by its uuid.
        prompt_id = _str_or_none(row.get("uuid")) or f"{MADE_UP_PROMPT_ID}{_str_or_none(row.get('timestamp'))}-{len(transcript.prompts)}"
    if prompt_id and current is not None and current.prompt_id == prompt_id and current.prompt and _opens_a_turn(kind, content):
        # A second typed prompt (or slash command) under one promptId: a forked session
        # (--fork-session) copies the history under the id of what was typed first in it; the
        # last one is what was typed, the rest are copies (a fork that starts with `/compact` is
        # that command, not the copied prompt before it).
        del transcript.prompts[prompt_id]
        current = None
    if prompt_id and (current is None or current.prompt_id != prompt_id):
        current = transcript.prompts.get(prompt_id)
        if current is None:
            current = PromptTurns(prompt_id=prompt_id, tools_offered=tools_offered,
                                  started_at=_str_or_none(row.get("timestamp")), cwd=_str_or_none(row.get("cwd")),
                                  session_id=_str_or_none(row.get("sessionId")))
            transcript.prompts[prompt_id] = current
    if current is None:
        return None
    current.ended_at = _str_or_none(row.get("timestamp")) or current.ended_at
    if kind == "tool_result":
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                text = _text_of(block.get("content"))
                current.results[str(block.get("tool_use_id"))] = ToolResult(
                    text=text, is_error=bool(block.get("is_error")), structured=row.get("toolUseResult"),
                    full_chars=_persisted_output_chars(text))
    elif kind == "interrupt":
        current.interrupted = True
    elif kind == "meta":
        _tool_attachment(current, row, content)
        _stop_feedback_row(current, row, content)
    elif not current.prompt:
        current.prompt = _text_of(content)
        current.is_notification = kind == "notification"
        current.is_command = kind == "command"
        current.row_uuid = _str_or_none(row.get("uuid"))
    return current


def _tool_attachment(turns: PromptTurns, row: dict, content: Any) -> None:
    """A meta row that a tool sent the model beside its result (`sourceToolUseID`: the Skill
    tool's result says only "Launching skill: x", the skill's instructions follow in such a
    row): part of what that call gave the model, so part of its output."""
    result = turns.results.get(_str_or_none(row.get("sourceToolUseID")) or "")
    text = _text_of(content)
    if result is not None and text.strip():
        result.text = f"{result.text}\n\n{text}" if result.text else text


def _assistant_row(current: PromptTurns, row: dict) -> None:
    message = _message(row)
    current.api_error = False  # the model answered after all (a retry, a compaction)
    message_id = str(message.get("id") or row.get("uuid") or "")
    current.model = _str_or_none(message.get("model")) or current.model
    current.ended_at = _str_or_none(row.get("timestamp")) or current.ended_at
    usage = _numeric_usage(message.get("usage"))
    if usage:
        current.usage_by_message[message_id] = usage  # repeated per block: keep one per message
    content = message.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        content = []
    timestamp = _str_or_none(row.get("timestamp"))
    if message.get("stop_reason") == REFUSAL:
        _leave_out_refused(current, message_id)
        return
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and str(block.get("text", "")).strip():
            current.blocks.append(Block("text", message_id, text=str(block["text"]), timestamp=timestamp))
        elif kind == "thinking" and str(block.get("thinking", "")).strip():
            current.blocks.append(Block("thinking", message_id, text=str(block["thinking"]), timestamp=timestamp))
        elif kind == "tool_use":
            tool_input = block.get("input")
            if not isinstance(tool_input, dict) or nesting_depth_exceeds(tool_input):
                tool_input = {}  # unusable as a call's arguments (and would fail to store)
            current.blocks.append(Block("tool_use", message_id, tool_use_id=str(block.get("id")), name=str(block.get("name")),
                                        input=tool_input, timestamp=timestamp))


def _leave_out_refused(current: PromptTurns, message_id: str) -> None:
    """A reply a safety classifier stopped: Claude Code withholds the rest of it, runs none of
    its unfinished calls (each gets a "Not run" error result) and tells the model, in a meta
    row, not to produce that content again. Its words, thinking and calls are no behaviour to
    learn, so none is kept (2.1.328 writes a row per block, each with the stop reason, so the
    blocks of the message's earlier rows go too)."""
    current.blocks = [b for b in current.blocks if b.message_id != message_id]
    if message_id not in current.refused:
        current.refused.append(message_id)


def _queued_message_row(current: PromptTurns, row: dict) -> None:
    """A message the user typed that Claude Code delivered within the running turn.

    Only the user's own words count: a queued_command can also carry Claude Code's or a
    peer's text (task notifications, forwarded intents, a slash command or `!` line typed
    ahead, a copy carried over by a compaction), which no user typed to steer this turn."""
    attachment = row.get("attachment")
    if not isinstance(attachment, dict) or attachment.get("type") != "queued_command":
        return
    origin = attachment.get("origin")
    human = origin is None or (isinstance(origin, dict) and origin.get("kind") == "human")  # -p sends no origin
    if not human or row.get("isMeta") or attachment.get("carriedByCompaction") \
            or attachment.get("commandMode", "prompt") != "prompt":
        return
    text = _text_of(attachment.get("prompt"))
    if prompt_kind(attachment, text) != "prompt":  # as a user row would be judged (its isMeta too)
        return
    source = _str_or_none(attachment.get("source_uuid")) or _str_or_none(row.get("uuid")) or ""
    if any(b.kind == "mid_turn" and b.message_id == source for b in current.blocks):
        return  # the same delivery written twice
    current.blocks.append(Block("mid_turn", source, text=text, timestamp=_str_or_none(row.get("timestamp"))))


def _hook_text_row(current: PromptTurns, row: dict) -> None:
    """What a user's hook showed the model (2.1.328): a blocking hook's reason, or its context."""
    attachment = row.get("attachment")
    kind = attachment.get("type") if isinstance(attachment, dict) else None
    if kind == "hook_blocking_error":
        blocking = attachment.get("blockingError")
        text = _str_or_none(blocking.get("blockingError")) if isinstance(blocking, dict) else None
        origin = "hook_feedback"
    elif kind == "hook_additional_context":
        content = attachment.get("content")
        text = "\n".join(c for c in content if isinstance(c, str)) if isinstance(content, list) else _str_or_none(content)
        origin = "hook_context"
    elif kind == "hook_success" and attachment.get("hookEvent") == "UserPromptSubmit":
        # Plain text a UserPromptSubmit hook printed (exit 0) goes to the model; JSON output leaves `content` empty.
        text, origin = _str_or_none(attachment.get("content")), "hook_output"
    else:
        return
    hook = _str_or_none(attachment.get("hookName")) or _str_or_none(attachment.get("hookEvent"))
    _add_hook_text(current, row, text, origin, hook)


def _stop_feedback_row(current: PromptTurns, row: dict, content: Any) -> None:
    """The isMeta user row "Stop hook feedback:\n<reason>" (2.1.42 and 2.1.328)."""
    match = _STOP_FEEDBACK.match(_text_of(content))
    if match:
        _add_hook_text(current, row, match.group(2), "hook_feedback", match.group(1))


def _add_hook_text(current: PromptTurns, row: dict, text: str | None, origin: str, hook: str | None) -> None:
    if not text or not text.strip():
        return
    last = current.blocks[-1] if current.blocks else None
    if last is not None and last.kind == "mid_turn" and (last.origin, last.text.strip()) == (origin, text.strip()) \
            and (last.hook == hook or {last.hook, hook} <= {"Stop", "SubagentStop"}):
        # One delivery, written twice: 2.1.328's Stop feedback row and its attachment. A subagent's
        # row says "Stop hook feedback" for what its attachment names SubagentStop.
        last.hook = "SubagentStop" if "SubagentStop" in (last.hook, hook) else last.hook
        return
    current.blocks.append(Block("mid_turn", _str_or_none(row.get("uuid")) or "", text=text,
                                timestamp=_str_or_none(row.get("timestamp")), origin=origin, hook=hook))


def _sidechain_row(transcript: Transcript, row: dict, state: _ParseState) -> None:
    uuid, parent = _str_or_none(row.get("uuid")), _str_or_none(row.get("parentUuid"))
    agent_id = state.chain_of.get(parent or "")
    if agent_id is None:
        agent_id = _str_or_none(row.get("agentId")) or f"sidechain-{uuid}"
    if uuid:
        state.chain_of[uuid] = agent_id
    turns = transcript.sidechains.get(agent_id)
    if turns is None:
        turns = transcript.sidechains[agent_id] = PromptTurns(prompt_id=agent_id, started_at=_str_or_none(row.get("timestamp")),
                                                               session_id=_str_or_none(row.get("sessionId")))
    if row.get("type") == "assistant":
        _assistant_row(turns, row)
        return
    content = _message(row).get("content")
    kind = prompt_kind(row, content)
    if kind == "tool_result":
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                text = _text_of(block.get("content"))
                turns.results[str(block.get("tool_use_id"))] = ToolResult(text=text, is_error=bool(block.get("is_error")),
                                                                           full_chars=_persisted_output_chars(text))
    elif kind == "meta":
        _tool_attachment(turns, row, content)
        _stop_feedback_row(turns, row, content)  # a SubagentStop hook's (2.0.0 writes subagents inline)
    elif not turns.prompt:
        turns.prompt = _text_of(content)


def inline_agents(transcript: Transcript, main_turns: list[PromptTurns]) -> dict[str, PromptTurns]:
    """The inline sidechains (2.0.0) that an Agent/Task call of these turns started: the
    run's task is the call's `prompt`."""
    if not transcript.sidechains:
        return {}
    asked = {b.input["prompt"].strip() for t in main_turns for b in t.blocks
             if b.kind == "tool_use" and b.name in ("Agent", "Task") and isinstance(b.input.get("prompt"), str)}
    return {agent_id: turns for agent_id, turns in transcript.sidechains.items() if turns.prompt.strip() in asked}


def notification_target(prompt: str) -> tuple[str | None, str | None]:
    """(task_id, tool_use_id) named by a `<task-notification>` prompt."""
    task = re.search(r"<task-id>\s*([^<\s]+)\s*</task-id>", prompt)
    tool = re.search(r"<tool-use-id>\s*([^<\s]+)\s*</tool-use-id>", prompt)
    return (task.group(1) if task else None, tool.group(1) if tool else None)
