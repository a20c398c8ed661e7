"""Reading the spool the hook writes: one file per hook event, named to sort in arrival order.

A file is `<header JSON>\\n<payload JSON>` (see hooks/capture_hook.py). Spool files are
untrusted input: anyone who can write to the spool, or a Claude Code version with another
payload shape, can put anything there. So a file is read only if it is a regular file
(opened non-blocking: a FIFO named `*.event` must not hang the daemon), only up to a bound,
and every field the daemon uses is type-checked here, at the door (`check_payload`). A file
that fails is moved to `spool/quarantine/` with a `.reason` file beside it, its text
redacted on the way, so one bad file never blocks the rest, nothing is silently thrown
away, and no raw secret waits in quarantine.

A payload the hook could not reduce in time (header `unparsed`) is not thrown away either:
the ids it still holds (session, prompt, tool use) are salvaged from its head and tail, and
the event enters its trace marked as lost (`LOST_KEY`), so the trace records the loss.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

SPOOL_SUFFIX = ".event"
LOST_SUFFIX = "-lost.event"  # a quarantined event's stand-in (see write_stand_in)
REASON_SUFFIX = ".reason"
# The hook keeps at most 64 MiB of a payload (PARSE_LIMIT_BYTES) plus a header: anything
# bigger was not written by it.
MAX_SPOOL_FILE_BYTES = (64 << 20) + (1 << 20)
# Claude Code's payloads nest a few levels; a tool input nested deeper than this is hostile
# or broken, and would fail later (pydantic refuses to serialize ~254 levels, recursion
# limits) where it could take a whole commit down with it.
MAX_DEPTH = 100
MAX_ID_CHARS = 512
# How much of a bad file's start and end is searched for the ids it belonged to.
KEEP_HEAD_BYTES = 1 << 20
KEEP_TAIL_BYTES = 64 << 10
# Put in the payload of an event whose body was lost: {"original_bytes": N, "reason": "..."}.
LOST_KEY = "understudy_lost"


class CorruptSpoolFile(ValueError):
    """The file is not a hook event this daemon can use; the message says why (and never
    quotes the payload). `lost_event`, set by read_event, stands in for it in its trace."""

    lost_event: "SpoolEvent | None" = None


@dataclass
class SpoolEvent:
    name: str  # file name: unique, sorts in arrival order; the idempotency key
    event: str  # hook event name as registered (SessionStart, PreToolUse, ...)
    received_ns: int
    payload: dict[str, Any]
    header: dict[str, Any]

    @property
    def session_id(self) -> str:
        return self.payload["session_id"]

    @property
    def prompt_id(self) -> str | None:
        return self.payload.get("prompt_id")

    @property
    def agent_id(self) -> str | None:
        return self.payload.get("agent_id")

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "event": self.event, "received_ns": self.received_ns,
                "payload": self.payload, "header": self.header}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "SpoolEvent":
        return cls(record["name"], record["event"], record["received_ns"], record["payload"], record.get("header", {}))


def pending_names(spool: Path | str) -> list[str]:
    """Names of the event files waiting in the spool, oldest first."""
    try:
        names = [n for n in os.listdir(spool) if n.endswith(SPOOL_SUFFIX)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    names.sort()
    return names


# --- reading untrusted files ------------------------------------------------------------

def open_regular_file(path: Path | str) -> BinaryIO:
    """Open a file for reading only if it is a regular file (CorruptSpoolFile otherwise).

    Opened with O_NONBLOCK and checked with fstat before any read: opening a FIFO for
    reading would otherwise wait for a writer forever, and a device could stream forever.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise CorruptSpoolFile(f"not a regular file ({_file_kind(mode)})")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: Path | str, limit: int) -> bytes:
    """The bytes of a regular file, at most `limit` of them (CorruptSpoolFile past that).

    Plain os calls on the hot path (every spool file goes through here): open non-blocking,
    fstat, then read the size it has plus one byte to see growth."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CorruptSpoolFile(f"not a regular file ({_file_kind(info.st_mode)})")
        if info.st_size > limit:
            raise CorruptSpoolFile(f"{info.st_size} bytes, over the {limit}-byte limit")
        chunks = [os.read(fd, info.st_size + 1)]
        total = len(chunks[0])
        while total > info.st_size and total <= limit:  # it grew while we read: keep going
            more = os.read(fd, 1 << 20)
            if not more:
                break
            chunks.append(more)
            total += len(more)
    finally:
        os.close(fd)
    if total > limit:
        raise CorruptSpoolFile(f"grew past the {limit}-byte limit while being read")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "fifo"), (stat.S_ISDIR, "directory"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "symlink")):
        if test(mode):
            return kind
    return "special file"


def _strip_lone_surrogates(value: Any) -> Any:
    """json.loads accepts lone surrogates (\\ud800) that SQLite and orjson cannot store."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_strip_lone_surrogates(k): _strip_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_lone_surrogates(v) for v in value]
    return value


def parse_json(data: bytes) -> Any:
    """orjson for speed; the stdlib as fallback for what orjson refuses (lone surrogates).

    Raises ValueError for anything that is not JSON, including JSON nested too deep for
    either parser (orjson stops at 1024 levels; the stdlib would raise RecursionError).
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower():
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
        try:
            return _strip_lone_surrogates(json.loads(data.decode("utf-8", "surrogateescape")))
        except RecursionError:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None


def nesting_depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when dicts/lists nest deeper than `limit` (iterative: no recursion to blow)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return False


# --- the door: what a hook event must look like ----------------------------------------

# Every payload field the daemon reads, with the JSON types it can handle (null is always
# fine). Exact types, not isinstance: JSON parsing makes exact dicts, lists and strings, and
# a boolean must not pass for a number. Claude Code adds fields over time; unknown ones pass
# (they are kept and redacted like the rest).
_STR = frozenset({str})
PAYLOAD_FIELD_TYPES: dict[str, frozenset[type]] = {
    "prompt_id": _STR, "agent_id": _STR, "agent_type": _STR, "tool_use_id": _STR, "tool_name": _STR,
    "hook_event_name": _STR, "transcript_path": _STR, "agent_transcript_path": _STR, "cwd": _STR,
    "prompt": _STR, "source": _STR, "reason": _STR, "last_assistant_message": _STR, "error": _STR,
    "tool_input": frozenset({dict}), "background_tasks": frozenset({list}),
    "duration_ms": frozenset({int, float}), "is_interrupt": frozenset({bool}),
    "stop_hook_active": frozenset({bool}),
}
_ID_FIELDS = frozenset({"session_id", "prompt_id", "agent_id", "tool_use_id", "tool_name", "hook_event_name"})


def check_payload(payload: Any, may_nest_deep: bool = True) -> None:
    """Raise CorruptSpoolFile unless every field the daemon uses has a type it can handle.

    Messages name the field and the type found, never the value: they end up in logs.
    `may_nest_deep` False skips the nesting walk when the caller knows the JSON text has
    too few brackets to nest past MAX_DEPTH (the common case, checked at C speed).
    """
    if type(payload) is not dict:
        raise CorruptSpoolFile(f"payload is a JSON {_json_type(payload)}, not an object")
    session_id = payload.get("session_id")
    if type(session_id) is not str or not session_id:
        raise CorruptSpoolFile("payload has no session_id" if session_id in (None, "")
                               else f"session_id is a JSON {_json_type(session_id)}, not a string")
    for key in PAYLOAD_FIELD_TYPES.keys() & payload.keys():
        value = payload[key]
        if value is None:
            continue
        if type(value) not in PAYLOAD_FIELD_TYPES[key]:
            raise CorruptSpoolFile(f"field {key} is a JSON {_json_type(value)}, which this daemon cannot use")
        if key in _ID_FIELDS and len(value) > MAX_ID_CHARS:
            raise CorruptSpoolFile(f"field {key} is {len(value)} characters long, not an id")
    if len(session_id) > MAX_ID_CHARS:
        raise CorruptSpoolFile(f"field session_id is {len(session_id)} characters long, not an id")
    tasks = payload.get("background_tasks")
    if tasks and not all(type(task) is dict for task in tasks):
        raise CorruptSpoolFile("field background_tasks holds something other than objects")
    if may_nest_deep and nesting_depth_exceeds(payload):
        raise CorruptSpoolFile(f"payload is nested deeper than {MAX_DEPTH} levels")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _check_header(header: Any) -> dict[str, Any]:
    if not isinstance(header, dict) or not isinstance(header.get("event"), str):
        raise CorruptSpoolFile("header lacks the event name")
    received = header.get("received_ns", 0)
    if isinstance(received, bool) or not isinstance(received, int) or received < 0:
        raise CorruptSpoolFile(f"header received_ns is a JSON {_json_type(received)}, not a time in ns")
    return header


def read_event(path: Path | str) -> SpoolEvent:
    """The hook event in a spool file; CorruptSpoolFile (with `lost_event`, see below) if
    it is not a well-typed one."""
    data = read_regular_file(path, MAX_SPOOL_FILE_BYTES)
    head, sep, body = data.partition(b"\n")
    header: dict[str, Any] = {}
    payload: Any = None
    try:
        if not sep:
            raise CorruptSpoolFile("no header line")
        try:
            header = _check_header(parse_json(head))
        except CorruptSpoolFile:
            raise
        except ValueError:
            raise CorruptSpoolFile("header is not JSON") from None
        if header.get("unparsed"):
            payload = salvage_lost_payload(body, header)
        else:
            try:
                payload = parse_json(body)
            except (ValueError, UnicodeDecodeError) as exc:
                reason = str(exc) if str(exc).startswith("nested deeper") else "payload is not JSON"
                raise CorruptSpoolFile(reason) from None
        check_payload(payload, may_nest_deep=body.count(b"[") + body.count(b"{") > MAX_DEPTH)
    except CorruptSpoolFile as exc:
        exc.lost_event = _lost_placeholder(os.path.basename(path), header, body if sep else head, payload, str(exc))
        raise
    event = payload.get("hook_event_name") or header["event"]
    return SpoolEvent(os.path.basename(path), str(event), int(header.get("received_ns") or 0), payload, header)


def _lost_placeholder(name: str, header: dict[str, Any], body: bytes, payload: Any, reason: str) -> SpoolEvent | None:
    """What a quarantined event still says about where it belonged (its ids, when they are
    strings), so its trace can record that an event is missing instead of silently lacking
    a call or a stop. None when it names no session, or is itself a stand-in."""
    if name.endswith(LOST_SUFFIX):
        return None
    if isinstance(payload, dict) and isinstance(payload.get("session_id"), str):
        ids = {key: payload[key] for key in _SALVAGE_KEYS
               if isinstance(payload.get(key), str) and len(payload[key]) <= MAX_ID_CHARS}
    else:
        ids = _salvage_ids(body[:KEEP_HEAD_BYTES] + b"\n" + body[-KEEP_TAIL_BYTES:])
    if not ids.get("session_id"):
        return None
    event = ids.get("hook_event_name") or header.get("event")
    if not isinstance(event, str) or not event.isalnum():
        event = "Unknown"
    received = header.get("received_ns")
    received = received if isinstance(received, int) and not isinstance(received, bool) and received >= 0 else 0
    ids["hook_event_name"] = event
    ids[LOST_KEY] = {"original_bytes": len(body), "reason": f"quarantined: {reason}"[:200]}
    return SpoolEvent(name[:-len(SPOOL_SUFFIX)] + LOST_SUFFIX, event, received, ids, {"v": 1, "event": event,
                                                                                       "received_ns": received, "lost": True})


def write_stand_in(spool: Path | str, event: SpoolEvent) -> None:
    """Spool the stand-in for a quarantined event, as the hook would (atomically, 0600).

    A spool file, not a note in memory: it reaches its trace through the same crash-safe
    path as every event, so a restart cannot forget that the trace lost something. Its
    name is its own (`...-lost.event`), so `quarantine retry` of the original is not
    mistaken for an event already consumed."""
    header = orjson.dumps(event.header)
    _write_private(Path(spool) / event.name, header + b"\n" + orjson.dumps(event.payload))


# --- payloads the hook could not keep whole ----------------------------------------------

_SALVAGE_KEYS = ("session_id", "prompt_id", "hook_event_name", "tool_use_id", "tool_name", "agent_id",
                 "agent_type", "cwd", "transcript_path")
_SALVAGE = {key: re.compile(rb'"' + key.encode() + rb'"\s*:\s*"((?:[^"\\]|\\.){1,512})"') for key in _SALVAGE_KEYS}


def _salvage_ids(data: bytes) -> dict[str, Any]:
    ids: dict[str, Any] = {}
    for key, pattern in _SALVAGE.items():
        match = pattern.search(data)
        if match:
            try:
                ids[key] = json.loads(b'"' + match.group(1) + b'"')
            except ValueError:
                continue
    return ids


def salvage_lost_payload(body: bytes, header: dict[str, Any]) -> dict[str, Any]:
    """The ids a cut payload still holds, plus the loss marker; CorruptSpoolFile if it names no session.

    Only top-level string fields that Claude Code writes before (or, for tool_use_id, after)
    the bulky tool_input/tool_response are looked for; the first occurrence wins, which is
    the top-level one because Claude Code writes those fields first.
    """
    payload = _salvage_ids(body)
    if not payload.get("session_id"):
        raise CorruptSpoolFile(f"payload of {header.get('original_bytes')} bytes was cut by the hook "
                               f"({header.get('lost_reason') or 'not JSON'}) and names no session")
    size = header.get("original_bytes")
    payload[LOST_KEY] = {"original_bytes": size if isinstance(size, int) and not isinstance(size, bool) else None,
                         "reason": str(header.get("lost_reason") or "not_json")[:64]}
    return payload


# --- quarantine --------------------------------------------------------------------------

def quarantine(path: Path, reason: str, quarantine_dir: Path, name: str | None = None) -> Path | None:
    """Move a bad file aside with its reason; returns the new path (None if it vanished).

    A regular file is rewritten redacted (`quarantine_copy.redacted_copy`), so what waits in quarantine
    holds no secret; anything else (a FIFO) is moved as it is, unread.
    """
    quarantine_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = name or path.name
    target = quarantine_dir / name
    try:
        data = read_regular_file(path, MAX_SPOOL_FILE_BYTES)
    except FileNotFoundError:
        return None
    except (OSError, CorruptSpoolFile):
        data = None  # not readable as a file: move it unread
    if data is None:
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return None
    else:
        from capture_daemon.quarantine_copy import redacted_copy  # the hook-facing reader stays light

        _write_private(target, redacted_copy(data))
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    _write_private(quarantine_dir / (name + REASON_SUFFIX), (reason + "\n").encode())
    return target


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def quarantined(quarantine_dir: Path) -> list[dict[str, Any]]:
    """What sits in quarantine and why, oldest first (for status and `quarantine list`)."""
    out = []
    try:
        names = sorted(n for n in os.listdir(quarantine_dir) if n.endswith(SPOOL_SUFFIX))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for name in names:
        path = quarantine_dir / name
        try:
            reason = (quarantine_dir / (name + REASON_SUFFIX)).read_text(errors="replace").strip()
        except OSError:
            reason = "unknown"
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        out.append({"name": name, "file": str(path), "reason": reason, "bytes": info.st_size,
                    "quarantined_at": info.st_mtime})
    return out
