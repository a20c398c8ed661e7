"""Describing what went wrong without repeating what was captured.

Exception messages often quote their input: pydantic's validation errors carry
`input_value=...`, a KeyError names the key, a UnicodeError shows the bytes. In the daemon
that input is a user's prompt, a tool output or a secret, and log files are not redacted
stores. So a failure is reported by its type, and by its message only for exceptions whose
messages this project controls or that describe the environment (a full disk, a locked
database), never the data.

Which failures are the environment's (retry everything later) and which are one trace's
(set that trace aside, let the rest flow) is decided here too.
"""

from __future__ import annotations

import sqlite3
import traceback

from capture_daemon.spool import CorruptSpoolFile


def describe(exc: BaseException) -> str:
    """One line naming the failure, safe to log: no captured text in it."""
    name = type(exc).__name__
    if isinstance(exc, CorruptSpoolFile):
        return str(exc)
    if isinstance(exc, OSError):
        # strerror only: str(exc) would add the file name, which can come from a payload.
        return f"{name}: {exc.strerror or 'I/O error'}" + (f" (errno {exc.errno})" if exc.errno else "")
    if isinstance(exc, sqlite3.Error):
        return f"{name}: {str(exc)[:200]}"  # SQLite's messages name the problem, not the row
    if hasattr(exc, "errors") and callable(exc.errors):  # pydantic.ValidationError
        try:
            where = sorted({".".join(str(p) for p in e.get("loc", ()))[:60] + f" ({e.get('type')})" for e in exc.errors()})
        except Exception:  # noqa: BLE001 - describing must never fail
            where = []
        return f"{name} at " + ", ".join(where[:5]) if where else name
    return name


def frames(exc: BaseException) -> str:
    """Where it happened (file, line, function, source line), without the message."""
    return "".join(traceback.format_tb(exc.__traceback__)).rstrip()


def is_environmental(exc: BaseException) -> bool:
    """True when the failure is the machine's, not one trace's: the disk is full or
    read-only, the database is locked or corrupt. Everything waits and is retried; no trace
    is blamed (or set aside) for it."""
    if isinstance(exc, (sqlite3.OperationalError, sqlite3.InternalError)):
        return True
    if type(exc) is sqlite3.DatabaseError:  # "database disk image is malformed", "file is not a database"
        return True
    if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, CorruptSpoolFile)):
        return True
    return False
