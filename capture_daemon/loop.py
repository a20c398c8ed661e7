"""One pass of the capture daemon at a time, surviving the machine it runs on.

The daemon is the only thing that turns spooled events into traces, so it must not die of
anything a laptop does to it: a full disk, a read-only remount, a data dir deleted under
it, a database another process holds locked, a database file that went bad. `CaptureLoop`
runs one pass (scan the spool, commit what is finished, housekeeping) and catches
everything: a failure of the environment (failures.is_environmental) and an unexpected bug
alike make the loop back off (1 s, doubling to a minute) and try again, while the hooks
keep spooling, so when the fault clears it catches up and nothing is lost.

What the loop is doing, and what is wrong, is written to `daemon-state.json` after every
pass for `capture-daemon status` (if even that write fails, the state file goes stale and
status says how stale).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from capture_daemon import paths
from capture_daemon.failures import describe, frames, is_environmental
from capture_daemon.ingest import IngestSettings, Ingestor
from capture_daemon.quality import LiveRules
from capture_daemon.spool import quarantine, quarantined
from capture_daemon.store import TraceStore

log = logging.getLogger("understudy.daemon")

BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
# Housekeeping (quarantine retention, leftovers of interrupted hooks) runs this often.
HOUSEKEEPING_SECONDS = 600.0
# A file in spool/tmp older than this was left by a hook that was killed mid-write.
STALE_TMP_SECONDS = 3600.0
# A daemon whose data dir has been deleted this long gives up and exits.
DATA_DIR_GONE_EXIT_SECONDS = 3600.0
# Waiting on a database another process has locked: short, so `stop` stays prompt.
BUSY_TIMEOUT_MS = 2000


class DataDirGone(OSError):
    """The data dir itself was deleted while the daemon ran."""

    def __init__(self, message: str):
        super().__init__(errno.ENOENT, message)


def state_path() -> Path:
    return paths.data_dir() / "daemon-state.json"


@dataclass
class Health:
    """The environment's trouble, if any: what failed, since when, when the next try is."""

    problem: str | None = None
    since: float | None = None
    failures: int = 0
    retry_at: float | None = None

    def ok(self) -> None:
        if self.problem:
            log.warning("recovered after %d failed passes: %s", self.failures, self.problem)
        self.problem, self.since, self.failures, self.retry_at = None, None, 0, None

    def failed(self, problem: str, now: float) -> float:
        """Record a failed pass; returns how long to wait before the next one."""
        if self.problem != problem:
            log.warning("capture pass failed: %s", problem)
        self.since = self.since or now
        self.problem = problem
        self.failures += 1
        delay = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (self.failures - 1))
        self.retry_at = now + delay
        return delay


@dataclass
class CaptureLoop:
    settings: IngestSettings
    rescan_seconds: float
    retention_days: float = 7.0
    on_pass: Callable[[], None] = lambda: None  # the daemon's lock and watch upkeep
    health: Health = field(default_factory=Health)
    store: TraceStore | None = None
    ingestor: Ingestor | None = None
    last_housekeeping: float = 0.0
    store_inode: int | None = None
    data_dir_gone_since: float | None = None

    def pass_once(self) -> float:
        """One pass; returns the seconds to wait before the next. Never raises an Exception."""
        try:
            if not paths.data_dir().is_dir():
                # Deleted under us: wait for the hooks to make it again with the next event
                # (making it ourselves would resurrect a folder the user removed on purpose).
                self.data_dir_gone_since = self.data_dir_gone_since or time.time()
                raise DataDirGone(f"{paths.data_dir()} is gone; capture resumes when the next hook event makes it again")
            self.data_dir_gone_since = None
            for directory in (paths.spool_dir(), paths.logs_dir()):
                paths.ensure(directory)
            self.on_pass()
            ingestor = self._ingestor()
            ingestor.scan()
            ingestor.finalize_ready()
            self._housekeeping()
            self.health.ok()
            wait = self._next_wait(ingestor)
        except Exception as exc:  # noqa: BLE001 - the daemon must outlive any one failure
            if not is_environmental(exc) and not isinstance(exc, FileNotFoundError):
                log.error("capture pass failed: %s\n%s", describe(exc), frames(exc))
            self._drop_store_if_broken(exc)
            wait = self.health.failed(_problem(exc), time.time())
        self._write_state()
        return wait

    def abandoned(self, now: float | None = None) -> bool:
        """True when the data dir has been gone for DATA_DIR_GONE_EXIT_SECONDS: the user
        removed it; the daemon exits, and the next Claude Code session starts a new one."""
        since = self.data_dir_gone_since
        return since is not None and (now or time.time()) - since > DATA_DIR_GONE_EXIT_SECONDS

    def final(self) -> None:
        """At shutdown: commit what is finished (unfinished prompts stay in the spool)."""
        if self.ingestor is not None and self.store is not None and not self.health.problem:
            try:
                self.ingestor.finalize_ready()
            except Exception as exc:  # noqa: BLE001
                log.warning("final commit skipped: %s", describe(exc))
        self.close()

    def close(self) -> None:
        if self.store is not None:
            try:
                self.store.close()
            except Exception:  # noqa: BLE001
                pass
            self.store = None

    # --- parts of a pass ------------------------------------------------------------

    def _ingestor(self) -> Ingestor:
        if self.store is not None and not self._store_file_is_ours():
            log.warning("traces.db was moved, replaced or deleted under the daemon; opening it afresh")
            self.close()
        if self.store is None:
            self.store = TraceStore.connect(make_dirs=False)
            self.store.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self.store_inode = os.stat(self.store.path).st_ino
            if self.ingestor is not None:
                self.ingestor.store = self.store  # open traces in memory carry over
        if self.ingestor is None:
            # The quality rules as config.toml says now, the last good ones while it is broken.
            self.ingestor = Ingestor(self.store, paths.spool_dir(), paths.quarantine_dir(), self.settings,
                                     analyze=LiveRules().analyze)
        return self.ingestor

    def _store_file_is_ours(self) -> bool:
        """False when traces.db is no longer the file our connection has open (the data dir
        was deleted, or `db recover` put a new file in place): commits would go nowhere."""
        try:
            return os.stat(paths.store_path()).st_ino == self.store_inode
        except FileNotFoundError:
            return False

    def _drop_store_if_broken(self, exc: BaseException) -> None:
        """Reopen the database next pass after anything but a plain lock wait: a vanished
        or replaced file, a read-only remount and corruption all need a fresh connection."""
        if "locked" in str(exc).lower() or "busy" in str(exc).lower():
            return
        if self.store is not None:
            if self.store.db.in_transaction:
                try:
                    self.store.db.rollback()
                except Exception:  # noqa: BLE001
                    pass
            self.close()

    def _next_wait(self, ingestor: Ingestor) -> float:
        wait = self.rescan_seconds
        if ingestor.open:  # wake in time to commit a trace whose settle time is running
            wait = min(wait, ingestor.settings.settle_seconds)
            retries = [t.retry_after_ns / 1e9 - time.time() for t in ingestor.open.values() if t.failures]
            if retries and len(retries) == len(ingestor.open):
                wait = max(0.05, min(self.rescan_seconds, *retries))
        return wait

    def _housekeeping(self) -> None:
        now = time.time()
        if now - self.last_housekeeping < HOUSEKEEPING_SECONDS:
            return
        self.last_housekeeping = now
        purged = purge_quarantine(self.retention_days, now)
        stale = set_aside_stale_tmp(now)
        if purged or stale:
            log.warning("housekeeping: %d quarantined files past retention deleted, %d interrupted hook writes set aside",
                        purged, stale)

    def _write_state(self) -> None:
        ingestor = self.ingestor
        state: dict[str, Any] = {
            "pid": os.getpid(),
            "updated_at": time.time(),
            "problem": self.health.problem,
            "problem_since": self.health.since,
            "failed_passes": self.health.failures,
            "retry_at": self.health.retry_at,
            "open_traces": len(ingestor.open) if ingestor else 0,
            "stuck": ingestor.stuck() if ingestor else [],
            "errors": ingestor.errors[-10:] if ingestor else [],
        }
        try:
            paths.write_private(state_path(), orjson.dumps(state).decode())
        except OSError:
            pass  # a full or read-only disk: status sees the state file go stale
        if ingestor and ingestor.errors:
            try:
                paths.write_private(paths.logs_dir() / "daemon-errors.log", "\n".join(ingestor.errors) + "\n")
            except OSError:
                pass


def _problem(exc: BaseException) -> str:
    """The one line status shows for a failed pass, with what to do where we know it."""
    text = describe(exc)
    lowered = text.lower()
    if getattr(exc, "errno", None) == 28 or "disk is full" in lowered or "no space" in lowered:
        return f"disk full ({text}): free some space; capture catches up by itself"
    if "readonly" in lowered or "read-only" in lowered or getattr(exc, "errno", None) == 30:
        return f"data dir is read-only ({text}): make {paths.data_dir()} writable; capture catches up by itself"
    if "locked" in lowered or "busy" in lowered:
        return f"traces.db is locked by another process ({text}); retrying"
    if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
        return (f"traces.db is corrupt ({text}): run `capture-daemon stop` then `capture-daemon db recover`; "
                "the spool keeps every new event meanwhile")
    return text


def read_state() -> dict[str, Any] | None:
    """The daemon's last written state, or None when there is none (or it is unreadable)."""
    try:
        state = orjson.loads(state_path().read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None


def purge_quarantine(retention_days: float, now: float | None = None) -> int:
    """Delete quarantined files (and their reasons) older than the retention; returns how many."""
    now = now or time.time()
    removed = 0
    directory = paths.quarantine_dir()
    for item in quarantined(directory):
        if now - item["quarantined_at"] < retention_days * 86400:
            continue
        for path in (directory / item["name"], directory / (item["name"] + ".reason")):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        removed += 1
    return removed


def set_aside_stale_tmp(now: float | None = None) -> int:
    """A hook killed between writing and renaming leaves a file in spool/tmp: after an hour
    it is not coming; quarantine it (redacted) so it falls under the retention too."""
    now = now or time.time()
    tmp = paths.spool_dir() / "tmp"
    moved = 0
    try:
        names = os.listdir(tmp)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for name in names:
        path = tmp / name
        try:
            if now - os.lstat(path).st_mtime < STALE_TMP_SECONDS:
                continue
        except FileNotFoundError:
            continue
        target_name = name if name.endswith(".event") else name + ".event"
        quarantine(path, "left in spool/tmp by a hook stopped mid-write (an incomplete event)",
                   paths.quarantine_dir(), name=target_name)
        moved += 1
    return moved
