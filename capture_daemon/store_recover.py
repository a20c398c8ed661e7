"""Rebuild a damaged traces.db from what SQLite can still read.

    from capture_daemon.store_recover import recover
    result = recover()     # refuses while the daemon runs; see RecoverError

The damaged file (with its -wal and -shm) is moved aside to `traces.db.corrupt-<time>`,
untouched: the salvage reads a copy. Each table is read in rowid order; where a page
cannot be read, the walk seeks past it (exponential probe, then a binary search for the
first readable row), so one bad page costs the rows on that page, not the rest of the
table. Rows that are read but no longer make sense (a trace whose JSON does not parse)
are left out and counted. The salvaged rows go into a fresh store built by the normal
migrations, which replaces traces.db only once it is complete: a crash half way leaves
the damaged file where it was. The sqlite3 shell's `.recover` can dig deeper (rows on
pages no longer linked to any table), but it is not always installed, so nothing here
depends on it; the file kept aside is there for it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import click
import orjson

from capture_daemon import paths
from capture_daemon.schema import Trace
from capture_daemon.store import TraceStore

MAX_ROWID = 2**63 - 1


class RecoverError(click.ClickException):
    """Recovery cannot start; the message says what to do instead."""


@dataclass
class TableSalvage:
    rows: int = 0  # copied into the fresh store
    unreadable: int = 0  # stretches of rows SQLite could not read (each one or more rows)
    invalid: int = 0  # read, but unusable (a trace or event whose JSON does not parse)
    error: str | None = None  # the whole table could not be read
    expected: int | None = None  # rows the damaged file claimed (its count, when that still works)


@dataclass
class Recovery:
    path: Path  # the fresh traces.db
    corrupt_copy: Path  # where the damaged file now lies
    problem: str | None  # what SQLite said was wrong (None: rebuilt with force)
    tables: dict[str, TableSalvage] = field(default_factory=dict)
    # Traces whose row was lost but whose events were read: put back in the spool, so the
    # daemon builds them again (transcripts, analysis and all) when it next starts.
    respooled_traces: int = 0
    respooled_events: int = 0

    @property
    def traces(self) -> int:
        return self.tables["traces"].rows if "traces" in self.tables else 0


def check(path: Path) -> str | None:
    """What is wrong with the database at `path` (None when integrity_check passes)."""
    try:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            problems = [row[0] for row in db.execute("PRAGMA integrity_check(5)")]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    if problems == ["ok"]:
        return None
    return "; ".join(problems)[:300]


@contextmanager
def _daemon_lock(lock_path: Path) -> Iterator[None]:
    """Hold the daemon's lock: refuse while it runs, and keep it from starting meanwhile."""
    with paths.open_private(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RecoverError("the capture daemon is running: stop it with `capture-daemon stop`, "
                               "then run `capture-daemon db recover` again") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def recover(path: Path | None = None, force: bool = False) -> Recovery:
    """Move a damaged store aside and replace it with a fresh one holding what could be read.

    Refuses while the daemon runs, when there is no store, and when the store is healthy
    (unless `force`).
    """
    path = Path(path) if path else paths.store_path()
    if not path.exists():
        raise RecoverError(f"there is no {path}: nothing to recover (the daemon creates a fresh one when it starts)")
    with _daemon_lock(path.with_name("daemon.lock")):
        work = Path(tempfile.mkdtemp(prefix=".recover-", dir=path.parent))
        try:
            source = work / "damaged.db"
            shutil.copyfile(path, source)
            if Path(f"{path}-wal").exists():  # committed transactions not yet checkpointed
                shutil.copyfile(f"{path}-wal", f"{source}-wal")
            problem = check(source)
            if problem is None and not force:
                raise RecoverError(f"{path} passes SQLite's integrity check: nothing to recover "
                                   "(--force rebuilds it anyway)")
            fresh = work / "traces.db"
            tables = _salvage(source, fresh)
            respool = path == paths.store_path()  # (a store elsewhere has no spool of its own)
            orphans = _take_orphan_events(fresh) if respool else {}
            aside = _move_aside(path)
            os.replace(fresh, path)
            # After the swap: should this fail half way, the events are still in the kept copy.
            events = _respool(orphans, paths.spool_dir())
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return Recovery(path=path, corrupt_copy=aside, problem=problem, tables=tables,
                    respooled_traces=len(orphans) if events else 0, respooled_events=events)


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


def _salvage(source: Path, fresh: Path) -> dict[str, TableSalvage]:
    store = TraceStore.connect(fresh)
    try:
        tables = [r[0] for r in store.db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
            "AND name <> 'schema_migrations' ORDER BY rowid")]
        result = {name: TableSalvage() for name in tables}
        try:
            src = sqlite3.connect(source, isolation_level=None)
            # Lets SQLite read a file shorter than its header says (a truncated copy) instead of
            # refusing it whole; harmless here, this is a scratch copy that is only read.
            src.execute("PRAGMA writable_schema=ON")
        except sqlite3.DatabaseError as exc:
            for salvage in result.values():
                salvage.error = str(exc)
            return result
        try:
            for name in tables:
                _copy_table(src, store, name, result[name])
        finally:
            src.close()
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    return result


def _take_orphan_events(fresh: Path) -> dict[str, list[dict]]:
    """Remove, and return, the salvaged events of traces whose own row was lost (with their
    `consumed` marks and links, so that replaying them is not a no-op)."""
    orphans: dict[str, list[dict]] = {}
    db = sqlite3.connect(fresh, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        rows = db.execute("SELECT trace_id, record FROM trace_events WHERE trace_id NOT IN "
                          "(SELECT trace_id FROM traces) ORDER BY trace_id, name").fetchall()
        for trace_id, record in rows:
            orphans.setdefault(trace_id, []).append(orjson.loads(record))
        for trace_id, records in orphans.items():
            db.execute("DELETE FROM trace_events WHERE trace_id=?", (trace_id,))
            db.execute("DELETE FROM links WHERE trace_id=?", (trace_id,))
            db.executemany("DELETE FROM consumed WHERE name=?", [(r["name"],) for r in records])
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return orphans


def _respool(orphans: dict[str, list[dict]], spool: Path) -> int:
    """Write events back as spool files, in the hook's format and under their own names."""
    written = 0
    if not orphans:
        return 0
    tmp_dir = paths.ensure(spool / "tmp")
    for records in orphans.values():
        for record in records:
            name = os.path.basename(str(record.get("name") or ""))
            if not name.endswith(".event"):
                continue
            header = {k: v for k, v in (record.get("header") or {}).items() if k not in ("unparsed", "truncated")}
            header.update(event=record["event"], received_ns=int(record.get("received_ns") or 0), respooled=True)
            data = orjson.dumps(header) + b"\n" + orjson.dumps(record["payload"])
            with paths.open_private(tmp_dir / name, "wb") as handle:
                handle.write(data)
            os.replace(tmp_dir / name, spool / name)
            written += 1
    return written


def _copy_table(src: sqlite3.Connection, store: TraceStore, table: str, salvage: TableSalvage) -> None:
    wanted = [r[1] for r in store.db.execute(f"PRAGMA table_info({table})")]
    try:
        have = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
    except sqlite3.DatabaseError as exc:
        salvage.error = str(exc)
        return
    if not have:
        salvage.error = "not found"
        return
    columns = [c for c in wanted if c in have]
    try:  # often still answered from an intact index: a measure of what was lost
        salvage.expected = src.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    except sqlite3.DatabaseError:
        pass
    select = f"SELECT rowid, {', '.join(columns)} FROM {table}"
    insert = f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    check_row = _row_check(table, columns)
    with store.transaction() as db:
        for row in _readable_rows(src, select, salvage):
            values = row[1:]
            if check_row and not check_row(values):
                salvage.invalid += 1
                continue
            db.execute(insert, values)
            salvage.rows += 1


def _row_check(table: str, columns: list[str]):
    """A check that a row read back is still whole (JSON columns that parse)."""
    if table == "traces" and "json" in columns:
        at = columns.index("json")

        def ok(values: tuple) -> bool:
            try:
                Trace.model_validate_json(values[at])
                return True
            except Exception:
                return False
        return ok
    if table == "trace_events" and "record" in columns:
        at = columns.index("record")

        def ok(values: tuple) -> bool:
            try:
                return isinstance(orjson.loads(values[at]), dict)
            except Exception:
                return False
        return ok
    return None


def _readable_rows(src: sqlite3.Connection, select: str, salvage: TableSalvage) -> Iterator[tuple]:
    """Every row of the table SQLite can read, in rowid order, seeking past unreadable pages."""
    start = -MAX_ROWID - 1
    while True:
        try:
            for row in src.execute(f"{select} WHERE rowid >= ? ORDER BY rowid", (start,)):
                start = row[0] + 1
                yield row
            return
        except sqlite3.DatabaseError:
            salvage.unreadable += 1
            following = _next_readable(src, select, start)
            if following is None:
                return
            start = following


def _reads(src: sqlite3.Connection, select: str, at: int) -> tuple[bool, int | None]:
    """Can the first row at or after rowid `at` be read whole? (ok, its rowid or None at the end)."""
    try:
        row = src.execute(f"{select} WHERE rowid >= ? ORDER BY rowid LIMIT 1", (at,)).fetchone()
    except sqlite3.DatabaseError:
        return False, None
    return True, None if row is None else row[0]


def _next_readable(src: sqlite3.Connection, select: str, failed_at: int) -> int | None:
    """The smallest rowid > failed_at from which reading works again (None: nothing further)."""
    bad, step = failed_at, 1
    while True:  # probe failed_at+1, +2, +4, ... until a read works
        probe = min(failed_at + step, MAX_ROWID)
        ok, _ = _reads(src, select, probe)
        if ok:
            break
        bad = probe
        if probe == MAX_ROWID:
            return None
        step *= 2
    good = probe
    while good - bad > 1:  # the first readable point in (bad, good]
        middle = (bad + good) // 2
        if _reads(src, select, middle)[0]:
            good = middle
        else:
            bad = middle
    ok, rowid = _reads(src, select, good)
    return rowid if ok and rowid is not None else None
