"""What a quarantined spool file keeps: its bytes with every secret replaced, as ingest would.

`spool.quarantine` sets aside events the daemon cannot take (bad JSON, a wrong field type, a
payload cut short) so that nothing is lost; what waits there must hold no more than the trace it
would have become. Apart from spool.py because the hook-facing reader there stays light: this
imports the redactor.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator, Optional

import orjson

from capture_daemon.redact import redact_text, redact_value
from capture_daemon.secret_output import MARKER_PATTERN, mark_secret_output
from capture_daemon.spool import parse_json


def redacted_copy(data: bytes) -> bytes:
    """A spool file's bytes with its secrets replaced, as ingest would replace them.

    A payload that parses is redacted field by field (`redact_value`), as `_take` redacts it:
    read as one text, JSON's escaped quotes and newlines (`echo \\"pw\\" | sudo -S`, `\\nENV
    API_TOKEN x`) and Claude Code's compact layout (`"command":"sshpass -p pw`) hide what the
    rules key on. A payload cut short is closed, parsed and redacted the same way, each changed
    string replaced where it stands and the cut kept (`_redact_cut_json`). Anything else (not
    JSON, nested too deep to walk or write back) is redacted as text, the best that can be done.
    """
    text = data.decode("utf-8", "replace")
    head, sep, body = text.partition("\n")
    if sep:
        try:
            payload = redact_value(mark_secret_output(parse_json(body.encode("utf-8"))))  # as scrub_payload does
            return redact_text(head).encode("utf-8", "replace") + b"\n" + orjson.dumps(payload)
        except Exception:  # noqa: BLE001 - whatever fails here, the passes below still apply
            pass
        try:
            body = _redact_cut_json(body)
        except Exception:  # noqa: BLE001 - the text pass below still applies
            pass
    return redact_text(head + sep + body).encode("utf-8", "replace")


def _redact_cut_json(body: str) -> str:
    """A JSON payload cut short (a hook killed mid-write, a full disk), with the secrets that
    its structure shows replaced where they stand, the cut left as it was.

    Read as text alone, a cut payload kept what only its structure shows: a Kubernetes env
    entry's name and value in two strings, `password=` as a Python keyword in an escaped
    command. So it is closed (`_closed_json`), parsed and redacted field by field; each string
    that redaction changed is replaced in the cut text by its redacted form, JSON-encoded as
    there. The file stays what it was, a payload cut short, and the text pass still runs after.
    """
    closed = _closed_json(body)
    if closed is None:
        return body
    payload = orjson.loads(closed)
    redacted = redact_value(mark_secret_output(payload))
    changed = list(_changed_strings(payload, redacted))
    for before, after in changed:
        for encode in (lambda v: json.dumps(v, ensure_ascii=False), lambda v: json.dumps(v)):
            old, new = encode(before)[1:-1], encode(after)[1:-1]
            if old and old in body:
                body = body.replace(old, new)
                break
    # The string the cut ran through may hold a secret whose context was cut off (`echo "pw" |
    # su`); the same secret found whole in another field (the command that printed it) goes there too.
    found = {s for before, after in changed for s in _secrets_in(before, after)}
    found |= {line for secret in found for line in secret.splitlines() if len(line.strip()) >= 6}  # a key block's lines
    for secret in sorted(found, key=len, reverse=True):
        for encoded in {json.dumps(secret, ensure_ascii=False)[1:-1], json.dumps(secret)[1:-1]}:
            body = body.replace(encoded, _CUT_SECRET_MARK)
    return body


_CUT_SECRET_MARK = "[REDACTED:secret]"


def _secrets_in(before: str, after: str) -> Iterator[str]:
    """The spans of `before` that redaction replaced with markers in `after` (6+ characters):
    the text between markers is kept as it was, so each secret lies between two kept pieces."""
    pieces = MARKER_PATTERN.split(after)
    if len(pieces) < 2 or not before.startswith(pieces[0]) or not before.endswith(pieces[-1]):
        return
    pos, last = len(pieces[0]), len(before) - len(pieces[-1])
    for piece in pieces[1:-1]:
        end = before.find(piece, pos) if piece else -1  # (two markers side by side: no boundary known)
        if end < 0 or end > last:
            return
        if end - pos >= 6:
            yield before[pos:end]
        pos = end + len(piece)
    if last - pos >= 6:
        yield before[pos:last]


def _closed_json(body: str) -> Optional[str]:
    """`body`, a JSON document cut short, with what it needs to parse: the open string closed,
    a dangling key given `null`, the open objects and arrays closed. None when nothing does."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in body:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    if not stack:
        return None
    head = body[:-1] if escaped else body  # a lone backslash at the cut starts no escape
    if in_string:
        head += '"'
    else:
        head = _PARTIAL_LITERAL.sub("", head)  # `"interrupted":fa`: the cut word goes
    head = head.rstrip().rstrip(",")
    closers = "".join(reversed(stack))
    for filler in ("", "null", ":null"):
        candidate = head + filler + closers
        try:
            orjson.loads(candidate)
            return candidate
        except orjson.JSONDecodeError:
            continue
    return None


# A number or literal cut short at the end of a document (`fa` of false, `12.` of 12.5).
_PARTIAL_LITERAL = re.compile(r"[A-Za-z0-9.+-]+\s*\Z")


def _changed_strings(before: Any, after: Any) -> Iterator[tuple[str, str]]:
    """(original, redacted) for each string that differs between two copies of one structure."""
    if isinstance(before, str):
        if isinstance(after, str) and after != before:
            yield before, after
    elif isinstance(before, dict) and isinstance(after, dict):
        # (redact_value keeps the order of a dict's items, renamed keys and all.)
        for value, new_value in zip(before.values(), after.values()):
            yield from _changed_strings(value, new_value)
    elif isinstance(before, list) and isinstance(after, list):
        for value, new_value in zip(before, after):
            yield from _changed_strings(value, new_value)
