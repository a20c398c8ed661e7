"""The trace store: one SQLite file (WAL mode) in the data dir.

Schema changes are the ordered MIGRATIONS below, recorded in `schema_migrations` and
applied whenever the store opens. Each logical write is one transaction: a trace, the
(redacted) events it was built from, and the names of the spool files it consumed are
committed together, so a crash at any point either keeps all of it or none of it. Keeping
the events lets a late event (a subagent finishing after its trace was stored) rebuild
the trace, and lets `rescore` re-run analysis without the spool.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import orjson

from capture_daemon import paths
from capture_daemon.schema import Trace
from capture_daemon.spool import SpoolEvent


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the migration's transaction half way: run statements one by one.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _m001_initial(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE traces (
            trace_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            prompt_id TEXT NOT NULL,
            source TEXT NOT NULL,
            cwd TEXT,
            started_at TEXT,
            ended_at TEXT,
            complete INTEGER NOT NULL,
            accepted INTEGER,
            score REAL,
            pattern TEXT,
            dup_key TEXT,
            duplicate_of TEXT,
            json TEXT NOT NULL,
            stored_at REAL NOT NULL
        );
        CREATE INDEX traces_session ON traces(session_id);
        CREATE INDEX traces_started ON traces(started_at);
        CREATE INDEX traces_dup ON traces(dup_key);
        CREATE TABLE trace_events (
            trace_id TEXT NOT NULL,
            name TEXT NOT NULL,
            record TEXT NOT NULL,
            PRIMARY KEY (trace_id, name)
        );
        -- Spool files already committed into a trace: replaying one is a no-op.
        CREATE TABLE consumed (
            name TEXT PRIMARY KEY,
            trace_id TEXT,
            consumed_at REAL NOT NULL
        );
        -- Ways to find a stored trace from a later event: agent ids, Agent tool_use ids,
        -- and the prompt ids of <task-notification> turns merged into it.
        CREATE TABLE links (
            key TEXT PRIMARY KEY,
            trace_id TEXT NOT NULL
        );
        CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY,
            transcript_path TEXT,
            cwd TEXT,
            started_at REAL,
            start_source TEXT,
            ended_at REAL,
            end_reason TEXT
        );
        """
    )


def _m002_human_verdicts(db: sqlite3.Connection) -> None:
    # A person's accept/reject from `capture-daemon ui`. Kept apart from the trace: put() lays it
    # over the rules' verdict on every write, so it wins over them and survives `rescore`.
    _run_script(
        db,
        """
        CREATE TABLE human_verdicts (
            trace_id TEXT PRIMARY KEY,
            accepted INTEGER NOT NULL,
            note TEXT,
            decided_at REAL NOT NULL
        )
        """
    )


def _m003_excluded(db: sqlite3.Connection) -> None:
    # Sessions and prompts of a project in exclude_projects, by id alone (`session:ID`,
    # `trace:ID`), nothing of their content: an event of one that comes later (after a restart,
    # after the prompt was dropped, from a folder that is not excluded) is dropped as well.
    _run_script(db, "CREATE TABLE excluded (key TEXT PRIMARY KEY)")


def _m004_prompt_index(db: sqlite3.Connection) -> None:
    # Import asks whether a prompt id is stored under another session (a copied prompt).
    _run_script(db, "CREATE INDEX IF NOT EXISTS traces_prompt ON traces(prompt_id)")


MIGRATIONS = [("m001_initial", _m001_initial), ("m002_human_verdicts", _m002_human_verdicts),
              ("m003_excluded", _m003_excluded), ("m004_prompt_index", _m004_prompt_index)]

HUMAN_ACCEPTED = "+ accepted by hand (human verdict)"
HUMAN_REJECTED = "- rejected by hand (human verdict)"


def apply_human_verdict(trace: Trace, accepted: bool | None) -> Trace:
    """Lay a person's verdict over the rules' (None: leave the rules' verdict as it is)."""
    if accepted is None:
        return trace
    from capture_daemon.schema import Quality

    quality = trace.quality if trace.quality is not None else Quality()
    quality.reasons = [r for r in quality.reasons if r not in (HUMAN_ACCEPTED, HUMAN_REJECTED)]
    quality.reasons.append(HUMAN_ACCEPTED if accepted else HUMAN_REJECTED)
    quality.accepted = bool(accepted)
    trace.quality = quality
    return trace


RECOVER_COMMAND = "capture-daemon db recover"


def is_corruption(exc: BaseException) -> bool:
    """A damaged database file (SQLITE_CORRUPT, SQLITE_NOTADB), as opposed to a locked,
    read-only or full one, which a retry or the user's own fix mends."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def store_problem(exc: BaseException) -> dict[str, Any]:
    """What went wrong opening or reading the store, as data (for `status --json`)."""
    corrupt = is_corruption(exc)
    return {"corrupt": corrupt, "error": str(exc), "fix": RECOVER_COMMAND if corrupt else None}


# How long a new connection waits for another to finish turning a new store to WAL.
_WAL_WAIT_SECONDS = 30


def _use_wal(db: sqlite3.Connection) -> None:
    """Put the store in WAL mode, which stays with the file: only its first connections switch.
    SQLite refuses a switch at once ("database is locked", no busy wait) while another
    connection is making its own; the dashboard's first page opens several at the same moment.
    So the mode is read first (a read waits as usual), and a refused switch is tried again."""
    deadline = time.monotonic() + _WAL_WAIT_SECONDS
    while True:
        try:
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class TraceStore:
    """`with TraceStore.open() as store: ...`"""

    def __init__(self, db: sqlite3.Connection, path: Path):
        self.db = db
        self.path = path

    @classmethod
    @contextmanager
    def open(cls, path: Path | None = None) -> Iterator["TraceStore"]:
        store = cls.connect(path)
        try:
            yield store
        finally:
            store.close()

    @classmethod
    def connect(cls, path: Path | None = None, *, make_dirs: bool = True) -> "TraceStore":
        """Open (creating and migrating as needed). A damaged file raises sqlite3.DatabaseError
        (`is_corruption()` tells it apart); commands turn it into StoreCorrupt (cli_db.open_store).

        `make_dirs=False` (the daemon) never makes the folder: a data dir the user deleted
        must not come back just because the daemon reconnected at that moment."""
        path = Path(path) if path else paths.store_path()
        if not make_dirs:
            if not path.parent.is_dir():
                raise FileNotFoundError(errno.ENOENT, f"{path.parent} does not exist")
        elif path.parent == paths.data_dir():
            paths.ensure(path.parent)
        else:  # a store the caller placed: make its folder, leave an existing one as it is
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Create the file 0600 before SQLite does (it would use 0644): the -wal and -shm files
        # SQLite makes next copy the database's mode, so they come out private too.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        path.chmod(0o600)
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            _use_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            # Checkpoint every 8192 pages (32 MiB of WAL) instead of SQLite's 1000: each checkpoint
            # syncs the WAL and the database file, and a backlog of traces (the daemon was down for
            # a day) paid for one every couple of hundred traces. Commits are unchanged: the same
            # transactions, in the WAL, synced as before (synchronous=NORMAL).
            db.execute("PRAGMA wal_autocheckpoint=8192")
            db.execute("PRAGMA busy_timeout=30000")
            store = cls(db, path)
            store._migrate()
        except BaseException:
            db.close()
            raise
        return store

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _migrate(self) -> None:
        tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "schema_migrations" not in tables:
            # Every store understudy made records its migrations: this is another program's
            # SQLite file, and the first migration would fail on it with "table ... exists".
            raise sqlite3.DatabaseError(
                f"not understudy's trace store (it holds the tables {', '.join(sorted(tables)[:5])}): "
                f"move it aside, and the daemon starts a fresh store there")
        self.db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL)")
        done = {row[0] for row in self.db.execute("SELECT name FROM schema_migrations")}
        for name, migration in MIGRATIONS:
            if name in done:
                continue
            with self.transaction() as db:
                # Re-check inside the lock: another process may have just applied it.
                if db.execute("SELECT 1 FROM schema_migrations WHERE name=?", (name,)).fetchone():
                    continue
                migration(db)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, time.time()))

    # --- writing -----------------------------------------------------------------

    def put(self, trace: Trace, events: list[SpoolEvent] = (), links: list[str] = (), *, db: sqlite3.Connection | None = None) -> None:
        """Insert or replace a trace (same trace_id = same trace), inside a transaction.

        Pass `db` to join a transaction the caller holds (to commit many traces at once).
        """
        if db is None:
            with self.transaction() as db:
                return self.put(trace, events, links, db=db)
        quality = trace.quality
        dup_key = _duplicate_key(trace)
        duplicate_of = None
        if dup_key:
            row = db.execute("SELECT trace_id FROM traces WHERE dup_key=? AND trace_id<>? AND duplicate_of IS NULL LIMIT 1",
                             (dup_key, trace.trace_id)).fetchone()
            duplicate_of = row[0] if row else None
        if quality is not None and duplicate_of:
            quality.duplicate_of = duplicate_of
            quality.accepted = False
            if not any(r.startswith("- duplicate") for r in quality.reasons):
                quality.reasons.append(f"- duplicate of {duplicate_of} (same prompt and workflow)")
        human = db.execute("SELECT accepted FROM human_verdicts WHERE trace_id=?", (trace.trace_id,)).fetchone()
        if human is not None:  # a person's verdict wins over the rules (and the duplicate check)
            quality = apply_human_verdict(trace, bool(human[0])).quality
        db.execute(
            "INSERT OR REPLACE INTO traces VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (trace.trace_id, trace.session_id, trace.prompt_id, trace.source, trace.cwd, _iso(trace.started_at),
             _iso(trace.ended_at), int(trace.complete), None if quality is None else int(quality.accepted),
             None if quality is None else quality.score, trace.reasoning_signals.pattern, dup_key, duplicate_of,
             trace.model_dump_json(), time.time()),
        )
        now = time.time()
        db.executemany("INSERT OR REPLACE INTO trace_events VALUES (?,?,?)",
                       [(trace.trace_id, e.name, orjson.dumps(e.to_record())) for e in events])
        db.executemany("INSERT OR REPLACE INTO consumed VALUES (?,?,?)", [(e.name, trace.trace_id, now) for e in events])
        db.executemany("INSERT OR REPLACE INTO links VALUES (?,?)", [(key, trace.trace_id) for key in links])

    def mark_consumed(self, names: list[str], db: sqlite3.Connection, trace_id: str | None = None) -> None:
        now = time.time()
        db.executemany("INSERT OR REPLACE INTO consumed VALUES (?,?,?)", [(n, trace_id, now) for n in names])

    def record_session(self, session_id: str, db: sqlite3.Connection, **fields: Any) -> None:
        db.execute("INSERT OR IGNORE INTO sessions (session_id) VALUES (?)", (session_id,))
        for column, value in fields.items():
            if value is not None:
                db.execute(f"UPDATE sessions SET {column}=? WHERE session_id=?", (value, session_id))

    def mark_excluded(self, keys: list[str], db: sqlite3.Connection) -> None:
        db.executemany("INSERT OR IGNORE INTO excluded VALUES (?)", [(k,) for k in keys])

    def is_excluded(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM excluded WHERE key=?", (key,)).fetchone() is not None

    def delete_trace(self, trace_id: str) -> bool:
        with self.transaction() as db:
            return self.drop_trace(trace_id, db)

    def drop_trace(self, trace_id: str, db: sqlite3.Connection) -> bool:
        """delete_trace inside the caller's transaction."""
        gone = db.execute("DELETE FROM traces WHERE trace_id=?", (trace_id,)).rowcount
        db.execute("DELETE FROM trace_events WHERE trace_id=?", (trace_id,))
        db.execute("DELETE FROM links WHERE trace_id=?", (trace_id,))
        db.execute("DELETE FROM human_verdicts WHERE trace_id=?", (trace_id,))
        db.execute("UPDATE traces SET duplicate_of=NULL WHERE duplicate_of=?", (trace_id,))
        return bool(gone)

    def delete_session(self, session_id: str) -> int:
        ids = [r[0] for r in self.db.execute("SELECT trace_id FROM traces WHERE session_id=?", (session_id,))]
        for trace_id in ids:
            self.delete_trace(trace_id)
        with self.transaction() as db:
            db.execute("DELETE FROM sessions WHERE session_id=?", (session_id,))
        return len(ids)

    def set_human_verdict(self, trace_ids: list[str], accepted: bool | None, note: str | None = None) -> int:
        """Record a person's accept (True) or reject (False) of these traces, or drop it (None:
        the rules decide again, as `rescore` would). One transaction; returns how many exist."""
        changed = 0
        with self.transaction() as db:
            for trace_id in trace_ids:
                row = db.execute("SELECT json FROM traces WHERE trace_id=?", (trace_id,)).fetchone()
                if row is None:
                    continue
                trace = Trace.model_validate_json(row[0])
                if accepted is None:
                    db.execute("DELETE FROM human_verdicts WHERE trace_id=?", (trace_id,))
                    if trace.quality is not None:
                        trace.quality.duplicate_of = None  # recomputed by put()
                    from capture_daemon.quality import analyze  # the rules decide again

                    trace = analyze(trace)
                else:
                    db.execute("INSERT OR REPLACE INTO human_verdicts VALUES (?,?,?,?)",
                               (trace_id, int(accepted), note, time.time()))
                self.put(trace, db=db)
                changed += 1
        return changed

    def human_verdicts(self) -> dict[str, bool]:
        return {r[0]: bool(r[1]) for r in self.db.execute("SELECT trace_id, accepted FROM human_verdicts")}

    # --- reading -----------------------------------------------------------------

    def consumed_among(self, names: list[str]) -> set[str]:
        """Which of these spool file names were already committed (one query per 500)."""
        found: set[str] = set()
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.db.execute(f"SELECT name FROM consumed WHERE name IN ({marks})", chunk))
        return found

    def linked_trace(self, key: str) -> str | None:
        row = self.db.execute("SELECT trace_id FROM links WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def has_trace(self, trace_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM traces WHERE trace_id=?", (trace_id,)).fetchone() is not None

    def prompt_stored_elsewhere(self, prompt_id: str, trace_id: str) -> str | None:
        """The id of another stored trace of this prompt id (another session's), if any."""
        row = self.db.execute("SELECT trace_id FROM traces WHERE prompt_id=? AND trace_id<>? LIMIT 1",
                              (prompt_id, trace_id)).fetchone()
        return row[0] if row else None

    def events_of(self, trace_id: str) -> list[SpoolEvent]:
        rows = self.db.execute("SELECT record FROM trace_events WHERE trace_id=? ORDER BY name", (trace_id,))
        return [SpoolEvent.from_record(orjson.loads(r[0])) for r in rows]

    def prompt_events_of_session(self, session_id: str) -> dict[str, list[SpoolEvent]]:
        """trace id → its UserPromptSubmit events, for each stored trace of a session (a spool
        file's name ends with its event's name: only those records are read)."""
        rows = self.db.execute("SELECT e.trace_id, e.record FROM trace_events e JOIN traces t ON t.trace_id = e.trace_id "
                               "WHERE t.session_id=? AND e.name LIKE '%-UserPromptSubmit.event' ORDER BY e.name", (session_id,))
        found: dict[str, list[SpoolEvent]] = {}
        for trace_id, record in rows:
            event = SpoolEvent.from_record(orjson.loads(record))
            if event.event == "UserPromptSubmit":
                found.setdefault(trace_id, []).append(event)
        return found

    def session(self, session_id: str) -> dict[str, Any] | None:
        cursor = self.db.execute("SELECT * FROM sessions WHERE session_id=?", (session_id,))
        row = cursor.fetchone()
        return dict(zip([c[0] for c in cursor.description], row)) if row else None

    def get(self, trace_id: str) -> Trace | None:
        row = self.db.execute("SELECT json FROM traces WHERE trace_id=?", (trace_id,)).fetchone()
        return Trace.model_validate_json(row[0]) if row else None

    def find(self, id_prefix: str) -> Trace | None:
        """The trace whose id is or starts with `id_prefix` (None when none or several)."""
        exact = self.get(id_prefix)
        if exact is not None or not id_prefix.isalnum():
            return exact
        rows = self.db.execute("SELECT json FROM traces WHERE trace_id >= ? AND trace_id < ? LIMIT 2",
                               (id_prefix, id_prefix + "\uffff")).fetchall()
        return Trace.model_validate_json(rows[0][0]) if len(rows) == 1 else None

    def iter_traces(self, accepted: bool | None = None, pattern: str | None = None, tool: str | None = None,
                    since: datetime | str | None = None, project: str | None = None,
                    include_duplicates: bool = True) -> Iterator[Trace]:
        where, args = [], []
        if accepted is not None:
            where.append("accepted = ?")
            args.append(int(accepted))
        if pattern:
            # Qualify the column: a bare `json` inside json_each() is not the column.
            where.append("(pattern = ? OR EXISTS (SELECT 1 FROM json_each(traces.json, '$.reasoning_signals.patterns') AS p WHERE p.value = ?))")
            args += [pattern, pattern]
        if tool:
            where.append("EXISTS (SELECT 1 FROM json_each(traces.json, '$.tool_calls') AS c WHERE json_extract(c.value, '$.name') = ?)")
            args.append(tool)
        if since:
            where.append("started_at >= ?")
            args.append(since.isoformat() if isinstance(since, datetime) else since)
        if project:
            where.append("cwd GLOB ?")
            args.append(project if any(ch in project for ch in "*?[") else project.rstrip("/") + "*")
        if not include_duplicates:
            where.append("duplicate_of IS NULL")
        sql = "SELECT json FROM traces" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY started_at, trace_id"
        for (data,) in self.db.execute(sql, args):
            yield Trace.model_validate_json(data)

    def count(self, accepted: bool | None = None) -> int:
        if accepted is None:
            return self.db.execute("SELECT COUNT(*) FROM traces").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM traces WHERE accepted=?", (int(accepted),)).fetchone()[0]

    def stats(self) -> dict[str, Any]:
        q = lambda sql: self.db.execute(sql).fetchone()[0]  # noqa: E731
        by_pattern = dict(self.db.execute("SELECT COALESCE(pattern, 'unanalysed'), COUNT(*) FROM traces GROUP BY 1"))
        by_source = dict(self.db.execute("SELECT source, COUNT(*) FROM traces GROUP BY 1"))
        return {
            "total": q("SELECT COUNT(*) FROM traces"),
            "complete": q("SELECT COUNT(*) FROM traces WHERE complete=1"),
            "incomplete": q("SELECT COUNT(*) FROM traces WHERE complete=0"),
            "accepted": q("SELECT COUNT(*) FROM traces WHERE accepted=1"),
            "rejected": q("SELECT COUNT(*) FROM traces WHERE accepted=0"),
            "duplicates": q("SELECT COUNT(*) FROM traces WHERE duplicate_of IS NOT NULL"),
            "human_verdicts": q("SELECT COUNT(*) FROM human_verdicts"),
            "sessions": q("SELECT COUNT(DISTINCT session_id) FROM traces"),
            "by_pattern": by_pattern,
            "by_source": by_source,
            "last_stored_at": q("SELECT MAX(stored_at) FROM traces"),
            "size_bytes": self.path.stat().st_size if self.path.exists() else 0,
        }


def _duplicate_key(trace: Trace) -> str | None:
    try:
        from capture_daemon.quality import duplicate_key
    except ImportError:  # analysis not installed yet: no near-duplicate detection
        return None
    return duplicate_key(trace)
