"""A/B rollout for `trainer serve`: which sessions go to the student, recorded so none switches.

`--ab upstream=URL,student=SHARE` (ABSpec) sends a share of Claude Code *sessions* to the student;
the session id comes from the request (session_id_of), a hash of it decides the arm (arm_for),
and the first decision per session is kept in `{UNDERSTUDY_HOME}/serve/arms.db` (ArmLog).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from trainer.config import ConfigError

_SESSION_IN_USER_ID_RE = re.compile(r"session_([0-9a-fA-F-]{8,})")


@dataclass
class ABSpec:
    upstream: str
    student_share: float

    @classmethod
    def parse(cls, spec: str) -> "ABSpec":
        """`upstream=URL,student=SHARE` (SHARE in [0, 1])."""
        parts = {}
        for item in spec.split(","):
            if "=" not in item:
                raise ConfigError(f"serve.ab: '{item}' is not KEY=VALUE; expected upstream=URL,student=0.1")
            key, value = item.split("=", 1)
            parts[key.strip()] = value.strip()
        unknown = set(parts) - {"upstream", "student"}
        if unknown:
            raise ConfigError(f"serve.ab: unknown key(s) {', '.join(sorted(unknown))}; expected upstream=URL,student=0.1")
        if not parts.get("upstream", "").startswith(("http://", "https://")):
            raise ConfigError("serve.ab: upstream must be an http(s) URL, e.g. upstream=https://api.anthropic.com")
        try:
            share = float(parts.get("student", ""))
        except ValueError:
            raise ConfigError(f"serve.ab: student must be a number in [0, 1], got {parts.get('student')!r}") from None
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"serve.ab: student must be in [0, 1], got {share}")
        return cls(upstream=parts["upstream"].rstrip("/"), student_share=share)


def session_id_of(headers: Any, body: Any) -> Optional[str]:
    """Claude Code's session id: the X-Claude-Code-Session-Id header, else metadata.user_id.

    Claude Code 2.x sends `metadata.user_id` as a JSON string with a `session_id` field; older
    versions sent `user_<hash>_account_<uuid>_session_<uuid>`. Both are understood.
    """
    sid = headers.get("x-claude-code-session-id")
    if sid:
        return sid.strip()
    meta = body.get("metadata") if isinstance(body, dict) else None
    user_id = meta.get("user_id") if isinstance(meta, dict) else None
    if not isinstance(user_id, str):
        return None
    try:
        parsed = json.loads(user_id)
        if isinstance(parsed, dict) and isinstance(parsed.get("session_id"), str) and parsed["session_id"]:
            return parsed["session_id"]
    except ValueError:
        pass
    m = _SESSION_IN_USER_ID_RE.search(user_id)
    return m.group(1) if m else None


def arm_for(session_id: str, share: float, salt: str = "") -> str:
    """Deterministic: the session's hash in [0, 1) against the student's share."""
    digest = hashlib.sha256(f"understudy-ab\x00{salt}\x00{session_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "student" if u < share else "upstream"


def arms_db_path() -> Path:
    from capture_daemon.paths import data_dir

    return data_dir() / "serve" / "arms.db"


class ArmLog:
    """session_id → arm, first decision wins; SQLite in the data dir."""

    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path or arms_db_path())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS arms (session_id TEXT PRIMARY KEY, arm TEXT NOT NULL, "
            "first_seen TEXT NOT NULL, share REAL NOT NULL, requests INTEGER NOT NULL DEFAULT 0)"
        )

    def assign(self, session_id: str, share: float, salt: str = "") -> str:
        with self._lock:
            row = self.db.execute("SELECT arm FROM arms WHERE session_id = ?", (session_id,)).fetchone()
            if row:
                self.db.execute("UPDATE arms SET requests = requests + 1 WHERE session_id = ?", (session_id,))
                return row[0]
            arm = arm_for(session_id, share, salt)
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self.db.execute(
                "INSERT INTO arms (session_id, arm, first_seen, share, requests) VALUES (?, ?, ?, ?, 1)",
                (session_id, arm, now, share),
            )
            return arm

    def rows(self) -> list[tuple]:
        with self._lock:
            return self.db.execute("SELECT session_id, arm, first_seen, share, requests FROM arms ORDER BY first_seen, session_id").fetchall()

    def close(self) -> None:
        self.db.close()
