"""The capture daemon process: watch the spool, ingest, commit; plus start/stop plumbing.

A watchdog observer wakes the loop as soon as the hook renames a file into the spool; a
periodic rescan runs anyway, because file-system notifications can be missed (overflowed
inotify queues, network file systems). One daemon per data dir, enforced with a lock.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
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


def daemon_argv() -> list[str]:
    """How the daemon is run: by `start`, and by the SessionStart hook through daemon.cmd."""
    return [sys.executable, "-m", "capture_daemon.cli", "run"]


def start(timeout: float = 15.0) -> int:
    """Start the daemon in the background; return its pid once it is up.

    It also arms the auto-start: the argv is written to daemon.cmd and the `stopped` flag is
    removed, so from now on every Claude Code session start brings the daemon back when it
    is not running (after a reboot, a crash, a kill): see hooks/capture_core.ensure_daemon.
    The daemon runs in /, as the hook starts it (so what works here works there), keeping
    no directory busy and importing nothing from the caller's cwd.
    """
    paths.ensure(paths.data_dir())
    paths.ensure(paths.logs_dir())
    argv = daemon_argv()
    paths.write_private(paths.daemon_cmd_file(), json.dumps(argv) + "\n")
    paths.stopped_flag().unlink(missing_ok=True)
    pid = running_pid()
    if pid:
        return pid
    with paths.open_private(paths.daemon_log(), "ab") as log_handle:
        process = subprocess.Popen(argv, cwd="/", stdin=subprocess.DEVNULL, stdout=log_handle, stderr=log_handle,
                                   start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = running_pid()
        if pid == process.pid:
            return pid
        if process.poll() is not None:
            pid = running_pid()
            if pid:  # a session's hook started one at the same moment, and it won the lock
                return pid
            raise DaemonError(f"the daemon exited at start (code {process.returncode}); see {paths.daemon_log()}")
        time.sleep(0.05)
    raise DaemonError(f"the daemon did not come up within {timeout:.0f}s; see {paths.daemon_log()}")


# How long `stop` lets the daemon finish its pass after SIGTERM before it sends SIGKILL.
STOP_GRACE_SECONDS = 5.0


@dataclass
class Stopped:
    pid: int | None  # the daemon that was stopped; None when none was running
    killed: bool = False  # it outlived SIGTERM by STOP_GRACE_SECONDS and was killed (SIGKILL)


def stop(grace: float = STOP_GRACE_SECONDS) -> Stopped:
    """Stop the daemon, and keep it stopped until the next `start`.

    The `stopped` flag keeps the SessionStart hook from bringing it back; hooks keep
    spooling meanwhile. SIGTERM first; a daemon still running `grace` seconds later is
    sent SIGKILL, which loses nothing: every commit is a transaction and the spool is
    replayed at the next start.
    """
    if paths.data_dir().is_dir():
        paths.write_private(paths.stopped_flag(), time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
    pid = running_pid()
    if not pid:
        return Stopped(None)
    try:
        os.kill(pid, signal.SIGTERM)
        if _gone(pid, grace):
            return Stopped(pid)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return Stopped(pid)
    if not _gone(pid, 5.0):
        raise DaemonError(f"daemon {pid} survived SIGKILL (a hung disk?); see `ps -p {pid}`")
    try:  # a killed daemon leaves its pid file behind
        if paths.pid_file().read_text().strip() == str(pid):
            paths.pid_file().unlink()
    except (OSError, ValueError):
        pass
    return Stopped(pid, killed=True)


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while running_pid() == pid:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
