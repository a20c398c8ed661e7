"""A damaged traces.db: every command says so in one line naming the fix, `status` still
reports everything else, and `capture-daemon db recover` rebuilds it from what can be read."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from capture_daemon import paths
from capture_daemon.cli import main
from capture_daemon.ingest import IngestSettings, Ingestor
from capture_daemon.store import TraceStore
from tests.spool_factory import write_session

SESSIONS = 40
ANSWER = ("The mailer retries at a fixed interval while the billing worker backs off with jitter, so the mailer "
          "floods the queue whenever the relay is down; switching it to the shared backoff helper fixes that.")


def _make_store() -> dict[str, str]:
    """A real store, filled by the ingest from spool files: {trace_id: prompt}."""
    spool = paths.spool_dir()
    for i in range(SESSIONS):
        write_session(spool, f"s-{i:03d}", f"p-{i:03d}", f"question {i}: " + "why does the mailer flood the queue? " * 12,
                      [("Read", {"file_path": f"/srv/mailer{i}.py"}, "retry = 5"), ("Bash", {"command": "pytest"}, "ok")],
                      ANSWER, cwd=f"/home/dev/project{i % 3}")
    with TraceStore.open() as store:
        ingestor = Ingestor(store, spool, paths.quarantine_dir(), IngestSettings(settle_seconds=0))
        ingestor.scan()
        ingestor.finalize_ready()
        traces = {t.trace_id: t.prompt for t in store.iter_traces()}
    assert len(traces) == SESSIONS
    assert not (paths.data_dir() / "traces.db-wal").exists()  # checkpointed: the damage below is all there is
    return traces


def _page_size(data: bytes) -> int:
    size = int.from_bytes(data[16:18], "big")
    return 65536 if size == 1 else size


def _smash_trace_pages(count: int = 2) -> None:
    """Overwrite `count` leaf pages of the traces table (in the middle of the file) with garbage."""
    path = paths.store_path()
    data = bytearray(path.read_bytes())
    size = _page_size(data)
    leaves = [n for n in range(1, len(data) // size)
              if data[n * size] == 0x0D and b'"schema_version"' in data[n * size:(n + 1) * size]]
    assert len(leaves) > 2 * count
    middle = len(leaves) // 2
    for n in leaves[middle:middle + count]:
        data[n * size:(n + 1) * size] = os.urandom(size)
    path.write_bytes(bytes(data))


def _garbage_header() -> None:
    path = paths.store_path()
    data = bytearray(path.read_bytes())
    data[:4096] = os.urandom(4096)
    path.write_bytes(bytes(data))


def _truncate() -> None:
    path = paths.store_path()
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


DAMAGE = {"garbage header": _garbage_header, "truncated": _truncate, "smashed pages": _smash_trace_pages}


def _one_line_error(result) -> str:
    """Exit 1 and one line on stderr (`export` to stdout may have streamed traces before it)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught error
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "is corrupt (" in lines[0] and "capture-daemon db recover" in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("damage", DAMAGE)
def test_commands_on_a_damaged_store_print_one_line_naming_the_fix(understudy_home, tmp_path, damage):
    traces = _make_store()
    DAMAGE[damage]()
    runner = CliRunner()
    for args in (["list"], ["export"], ["export", "-o", str(tmp_path / "out.jsonl")], ["rescore"]):
        _one_line_error(runner.invoke(main, args))
    assert not (tmp_path / "out.jsonl").exists()  # nothing written (or truncated) for a store that cannot be read
    if damage != "smashed pages":  # (with a few pages gone, most single traces still read fine)
        some_id = next(iter(traces))
        _one_line_error(runner.invoke(main, ["show", some_id]))
        _one_line_error(runner.invoke(main, ["forget", some_id, "--yes"]))

    status = runner.invoke(main, ["status"], env={"COLUMNS": "300"})
    assert status.exit_code == 0, status.output
    assert "traces.db is corrupt (" in status.output and "run `capture-daemon db recover`" in status.output
    assert "daemon:" in status.output and "hooks:" in status.output and "spool pending" in status.output
    report = json.loads(runner.invoke(main, ["status", "--json"]).output)
    problem = report["traces"]["problem"]
    assert problem["corrupt"] is True and problem["fix"] == "capture-daemon db recover" and problem["error"]
    assert "daemon" in report and "spool" in report


def test_a_locked_store_is_one_line_too_not_called_corrupt(understudy_home):
    _make_store()
    holder = sqlite3.connect(paths.store_path(), isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.MonkeyPatch.context() as mp:  # don't wait 30 s for the lock
            mp.setattr(sqlite3, "connect", lambda *a, **kw: sqlite3.Connection(*a, **dict(kw, timeout=0.1)))
            result = CliRunner().invoke(main, ["export"])
    finally:
        holder.close()
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "locked" in result.output and "corrupt" not in result.output


def test_another_programs_sqlite_file_is_named_as_such(understudy_home):
    """Every command said "table traces already exists" (the first migration run on it)."""
    understudy_home.mkdir(parents=True, mode=0o700, exist_ok=True)
    with sqlite3.connect(paths.store_path()) as db:
        db.execute("CREATE TABLE traces (a)")
        db.execute("CREATE TABLE orders (b)")
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "not understudy's trace store" in result.output and "move it aside" in result.output
    assert "already exists" not in result.output


def test_recover_salvages_what_can_be_read_and_the_daemon_carries_on(understudy_home):
    traces = _make_store()
    _smash_trace_pages(2)
    damaged = paths.store_path().read_bytes()
    runner = CliRunner()
    _one_line_error(runner.invoke(main, ["list"]))

    result = runner.invoke(main, ["db", "recover"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "was damaged (database disk image is malformed)" in out
    assert f"of {SESSIONS} traces" in out and "unreadable stretch" in out and "capture-daemon import" in out
    assert "events survived" in out and "back in the spool" in out

    kept = list(understudy_home.glob("traces.db.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged  # kept aside as it was
    with sqlite3.connect(paths.store_path()) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        salvaged_events = db.execute("SELECT COUNT(*) FROM trace_events").fetchone()[0]
        salvaged_consumed = db.execute("SELECT COUNT(*) FROM consumed").fetchone()[0]
        migrations = [r[0] for r in db.execute("SELECT name FROM schema_migrations")]
    with TraceStore.open() as store:
        salvaged = {t.trace_id: t.prompt for t in store.iter_traces()}
    assert SESSIONS - 8 <= len(salvaged) < SESSIONS  # two pages of traces lost, every other one kept
    assert all(traces[trace_id] == prompt for trace_id, prompt in salvaged.items())
    # The lost traces' events (6 each) went back to the spool; the others' stayed in the store.
    lost = len(traces) - len(salvaged)
    assert salvaged_events == salvaged_consumed == 6 * len(salvaged) and "m001_initial" in migrations
    assert len(list(paths.spool_dir().glob("*.event"))) == 6 * lost
    listed = runner.invoke(main, ["list", "-n", "0"])
    assert listed.exit_code == 0 and f"{len(salvaged)} of {len(salvaged)} matching traces" in listed.output

    # The daemon starts on the fresh store, rebuilds the lost traces and ingests what the hooks spool next.
    env = dict(os.environ)
    cli = [sys.executable, "-m", "capture_daemon.cli"]
    start = subprocess.run([*cli, "start"], env=env, capture_output=True, text=True, timeout=60)
    assert start.returncode == 0, start.stderr
    try:
        write_session(paths.spool_dir(), "s-after", "p-after", "a question after the recovery",
                      [("Read", {"file_path": "/srv/a.py"}, "x")], ANSWER)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with TraceStore.open() as store:
                if store.count() == SESSIONS + 1:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("the daemon did not rebuild the lost traces and ingest the new session")
    finally:
        stop = subprocess.run([*cli, "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert "a question after the recovery" in runner.invoke(main, ["list"], env={"COLUMNS": "300"}).output
    with TraceStore.open() as store:
        rebuilt = {t.trace_id: t for t in store.iter_traces()}
    assert all(rebuilt[trace_id].prompt == prompt and rebuilt[trace_id].complete for trace_id, prompt in traces.items())


def test_recover_of_a_file_nothing_can_be_read_from_gives_an_empty_working_store(understudy_home):
    _make_store()
    _garbage_header()
    result = CliRunner().invoke(main, ["db", "recover"])
    assert result.exit_code == 0, result.output
    assert "nothing could be read from it (file is not a database)" in result.output
    listed = CliRunner().invoke(main, ["list"])
    assert listed.exit_code == 0 and "0 of 0 matching traces" in listed.output


def test_recover_refuses_when_there_is_nothing_to_do_or_the_daemon_runs(understudy_home):
    runner = CliRunner()
    missing = runner.invoke(main, ["db", "recover"])
    assert missing.exit_code == 1 and "nothing to recover" in missing.output
    _make_store()
    healthy = runner.invoke(main, ["db", "recover"])
    assert healthy.exit_code == 1 and "passes SQLite's integrity check" in healthy.output and "--force" in healthy.output
    assert not list(understudy_home.glob("traces.db.corrupt-*"))

    _truncate()
    with open(understudy_home / "daemon.lock", "a") as lock:  # what a running daemon holds
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        running = runner.invoke(main, ["db", "recover"])
    assert running.exit_code == 1 and "capture-daemon stop" in running.output
    assert len(running.output.strip().splitlines()) == 1
    assert not list(understudy_home.glob("traces.db.corrupt-*"))  # touched nothing

    forced = runner.invoke(main, ["db", "recover", "--force"])
    assert forced.exit_code == 0, forced.output
