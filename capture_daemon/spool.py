"""Reading the spool the hook writes: one file per hook event, named to sort in arrival order.

A file is `<header JSON>\\n<payload JSON>` (see hooks/capture_hook.py). Anything that does
not parse into a hook event is moved to `spool/quarantine/` with a `.reason` file beside
it, so one bad file never blocks the rest and nothing is silently thrown away.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

SPOOL_SUFFIX = ".event"


class CorruptSpoolFile(ValueError):
    """The file is not a hook event this daemon can use; the message says why."""


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
    except FileNotFoundError:
        return []
    names.sort()
    return names


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
    """orjson for speed; the stdlib as fallback for what orjson refuses (lone surrogates)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _strip_lone_surrogates(json.loads(data.decode("utf-8", "surrogateescape")))


def read_event(path: Path | str) -> SpoolEvent:
    with open(path, "rb") as f:  # (a plain open: the ingest reads every file once, Path adds up)
        data = f.read()
    head, sep, body = data.partition(b"\n")
    if not sep:
        raise CorruptSpoolFile("no header line")
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise CorruptSpoolFile(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict) or "event" not in header:
        raise CorruptSpoolFile("header lacks the event name")
    if header.get("unparsed"):
        raise CorruptSpoolFile(f"payload was {header.get('original_bytes')} bytes and not valid JSON")
    try:
        payload = parse_json(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptSpoolFile(f"payload is not JSON ({str(exc)[:120]})") from None
    if not isinstance(payload, dict):
        raise CorruptSpoolFile("payload is not a JSON object")
    session_id = payload.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise CorruptSpoolFile("payload has no session_id")
    event = payload.get("hook_event_name") or header["event"]
    return SpoolEvent(os.path.basename(path), str(event), int(header.get("received_ns") or 0), payload, header)


def quarantine(path: Path, reason: str, quarantine_dir: Path) -> Path | None:
    """Move a bad file aside with its reason; returns the new path (None if it vanished)."""
    quarantine_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = quarantine_dir / path.name
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    (quarantine_dir / (path.name + ".reason")).write_text(reason + "\n")
    return target


def quarantined(quarantine_dir: Path) -> list[dict[str, str]]:
    """What sits in quarantine and why, for `capture-daemon status`."""
    out = []
    for path in sorted(quarantine_dir.glob("*" + SPOOL_SUFFIX)) if quarantine_dir.exists() else []:
        reason_file = path.with_name(path.name + ".reason")
        reason = reason_file.read_text().strip() if reason_file.exists() else "unknown"
        out.append({"file": str(path), "reason": reason})
    return out
