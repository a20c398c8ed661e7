"""A new trace store opened by several connections at once: the dashboard's first page asks for
status, traces and runs in parallel, each on a connection of its own, while the daemon may be
making the store. None of them may fail with "database is locked"."""

from __future__ import annotations

import sqlite3
import threading
import time

from capture_daemon.store import TraceStore


def test_a_new_store_opens_while_another_connection_holds_its_write_lock(tmp_path):
    """SQLite refuses the switch to WAL at once while another connection writes (no busy wait):
    the open waits for it as every other statement does."""
    path = tmp_path / "traces.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    store = TraceStore.connect(path)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("SELECT count(*) FROM traces").fetchone() == (0,)
    store.close()
    assert time.monotonic() - started >= 0.4  # it waited for the writer, and did not fail
    release.join()
    holder.close()


def test_many_connections_open_one_new_store_at_once(tmp_path):
    path = tmp_path / "traces.db"
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            store = TraceStore.connect(path)
            store.db.execute("SELECT count(*) FROM traces").fetchone()
            store.close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
