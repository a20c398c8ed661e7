"""The capture daemon process: watch the spool, ingest, commit; plus start/stop plumbing.

A watchdog observer wakes the loop as soon as the hook renames a file into the spool; a
periodic rescan runs anyway, because file-system notifications can be missed (overflowed
inotify queues, network file systems). One daemon per data dir, enforced with a lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from capture_daemon import paths
from capture_daemon.ingest import IngestSettings, Ingestor
from capture_daemon.store import TraceStore

log = logging.getLogger("understudy.daemon")
RESCAN_SECONDS = 2.0


class DaemonError(RuntimeError):
    pass


class _Wake(FileSystemEventHandler):
    def __init__(self, wake: threading.Event):
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if str(getattr(event, "dest_path", "") or event.src_path).endswith(".event"):
            self.wake.set()


def load_settings() -> IngestSettings:
    try:
        from capture_daemon.config import load_config
    except ImportError:
        return IngestSettings()
    capture = load_config().capture
    return IngestSettings(idle_timeout_seconds=float(capture.idle_timeout_seconds), is_excluded=capture.is_excluded)


def _lock_file() -> Path:
    return paths.data_dir() / "daemon.lock"


def running_pid() -> int | None:
    """The pid of the live daemon for this data dir, or None."""
    try:
        pid = int(paths.pid_file().read_text().strip())
    except (OSError, ValueError):
        return None
    lock = _lock_file()
    if not lock.exists():
        return None
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return pid  # someone holds the lock: the daemon is alive
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def run(stop: threading.Event | None = None, rescan_seconds: float = RESCAN_SECONDS) -> None:
    """Run in the foreground until SIGTERM/SIGINT (or `stop` is set)."""
    base = paths.ensure(paths.data_dir())
    spool = paths.ensure(paths.spool_dir())
    paths.ensure(paths.logs_dir())
    lock_handle = open(_lock_file(), "a")
    try:
        fcntl.flock(lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DaemonError(f"a capture daemon is already running for {base} (pid {running_pid()}); "
                          "use `capture-daemon stop` first") from None
    stop = stop or threading.Event()
    wake = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: (stop.set(), wake.set()))
    observer = Observer()
    observer.schedule(_Wake(wake), str(spool), recursive=False)
    observer.start()
    paths.pid_file().write_text(f"{os.getpid()}\n")
    log.info("capture daemon %s watching %s", os.getpid(), spool)
    try:
        with TraceStore.open() as store:
            ingestor = Ingestor(store, spool, paths.quarantine_dir(), load_settings())
            while not stop.is_set():
                try:
                    ingestor.scan()
                    ingestor.finalize_ready()
                except Exception:  # keep capturing; the next pass retries what failed
                    log.exception("ingest pass failed")
                _write_errors(ingestor.errors)
                wake.wait(timeout=_next_wait(ingestor, rescan_seconds))
                wake.clear()
            # Commit what is finished; unfinished prompts stay in the spool for next time.
            ingestor.scan()
            ingestor.finalize_ready()
    finally:
        observer.stop()
        observer.join(timeout=5)
        try:
            paths.pid_file().unlink()
        except FileNotFoundError:
            pass
        fcntl.flock(lock_handle, fcntl.LOCK_UN)
        lock_handle.close()


def _next_wait(ingestor: Ingestor, rescan_seconds: float) -> float:
    # Wake in time to commit a trace whose settle time is running.
    return min(rescan_seconds, ingestor.settings.settle_seconds) if ingestor.open else rescan_seconds


def _write_errors(errors: list[str]) -> None:
    if errors:
        path = paths.logs_dir() / "daemon-errors.log"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(errors) + "\n")
        os.replace(tmp, path)


def start(timeout: float = 15.0) -> int:
    """Start the daemon in the background; return its pid once it is up."""
    pid = running_pid()
    if pid:
        return pid
    paths.ensure(paths.data_dir())
    paths.ensure(paths.logs_dir())
    log_handle = open(paths.daemon_log(), "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "capture_daemon.cli", "run"], stdin=subprocess.DEVNULL, stdout=log_handle,
        stderr=log_handle, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = running_pid()
        if pid == process.pid:
            return pid
        if process.poll() is not None:
            raise DaemonError(f"the daemon exited at start (code {process.returncode}); see {paths.daemon_log()}")
        time.sleep(0.05)
    raise DaemonError(f"the daemon did not come up within {timeout:.0f}s; see {paths.daemon_log()}")


def stop(timeout: float = 15.0) -> int | None:
    """Stop the running daemon; returns its pid, or None if none was running."""
    pid = running_pid()
    if not pid:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid() != pid:
            return pid
        time.sleep(0.05)
    raise DaemonError(f"daemon {pid} did not stop within {timeout:.0f}s; `kill {pid}` ends it (nothing is lost: the spool is replayed)")
