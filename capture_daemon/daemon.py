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
from capture_daemon.ingest import IngestSettings
from capture_daemon.loop import CaptureLoop

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
    try:
        # Read-only: flock needs no write access, and status must work on a read-only disk.
        handle = open(_lock_file(), "rb")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return pid  # someone holds the lock: the daemon is alive
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


class _StopNow(BaseException):
    """Raised by the SIGTERM handler to abandon a pass at once: every write is a
    transaction and the spool is replayed, so stopping mid-pass loses nothing."""


def run(stop: threading.Event | None = None, rescan_seconds: float = RESCAN_SECONDS) -> None:
    """Run in the foreground until SIGTERM/SIGINT (or `stop` is set)."""
    os.umask(0o077)
    base = paths.ensure(paths.data_dir())
    spool = paths.ensure(paths.spool_dir())
    paths.ensure(paths.logs_dir())
    # The settings before the lock: a broken config.toml ends this process before it counts as
    # the running daemon, so `start` sees it exit (and the next session's hook tries again).
    settings, retention_days = load_settings(), _retention_days()
    lock = _DaemonLock(base)
    stop = stop or threading.Event()
    wake = threading.Event()
    in_pass = threading.Event()

    def on_signal(*_: object) -> None:
        stop.set()
        wake.set()
        if in_pass.is_set():
            raise _StopNow()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
    watch = _SpoolWatch(wake)
    loop = CaptureLoop(settings, rescan_seconds, retention_days=retention_days,
                       on_pass=lambda: (lock.keep(), watch.keep(paths.spool_dir())))
    log.info("capture daemon %s watching %s", os.getpid(), spool)
    try:
        while not stop.is_set():
            in_pass.set()
            try:
                wait = loop.pass_once()
            finally:
                in_pass.clear()
            if lock.superseded:
                break
            if loop.abandoned():
                log.warning("the data dir has been gone for an hour: exiting")
                break
            wake.wait(timeout=wait)
            wake.clear()
        loop.final()
    except _StopNow:
        loop.close()
    finally:
        watch.close()
        lock.release()


class _DaemonLock:
    """The one-daemon-per-data-dir lock, and the pid file that names its holder.

    If the data dir is deleted and made again while we run, the lock file we hold is gone:
    the lock is taken again on the new file (or, when another daemon got there first, this
    one stops: two would both work, but one is the design)."""

    superseded = False  # another daemon holds the lock of a re-made data dir: this one exits

    def __init__(self, base: Path):
        self.handle = self._take()
        if self.handle is None:
            raise DaemonError(f"a capture daemon is already running for {base} (pid {running_pid()}); "
                              "use `capture-daemon stop` first")
        self._write_pid()

    @staticmethod
    def _take(attempts: int = 10):
        """The lock, or None when another daemon holds it. A few tries 50 ms apart: a
        liveness probe (running_pid, the SessionStart hook) holds it for microseconds, and
        a daemon starting at that instant must not take the probe for a rival."""
        handle = paths.open_private(_lock_file(), "a")
        for attempt in range(attempts):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return handle
            except BlockingIOError:
                if attempt + 1 < attempts:
                    time.sleep(0.05)
        handle.close()
        return None

    def _write_pid(self) -> None:
        try:
            paths.write_private(paths.pid_file(), f"{os.getpid()}\n")
        except OSError as exc:  # a full disk: keep running, status just cannot name us
            log.warning("could not write the pid file: %s", exc.strerror)

    def keep(self) -> None:
        try:
            same = os.stat(_lock_file()).st_ino == os.fstat(self.handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            handle = self._take()
            if handle is None:
                log.warning("another capture daemon took over this data dir: exiting")
                self.superseded = True
                return
            self.handle.close()
            self.handle = handle
        try:
            if paths.pid_file().read_text().strip() != str(os.getpid()):
                self._write_pid()
        except (OSError, ValueError):
            self._write_pid()

    def release(self) -> None:
        try:
            if paths.pid_file().read_text().strip() == str(os.getpid()):
                paths.pid_file().unlink()
        except (OSError, ValueError):
            pass
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


class _SpoolWatch:
    """The watchdog observer that wakes the loop; re-made when the spool dir is replaced
    (the rescan keeps capture going meanwhile, the watch only makes it prompt)."""

    def __init__(self, wake: threading.Event):
        self.wake = wake
        self.observer: Observer | None = None
        self.inode: int | None = None

    def keep(self, spool: Path) -> None:
        try:
            inode = os.stat(spool).st_ino
        except FileNotFoundError:
            return
        if self.observer is not None and inode == self.inode and self.observer.is_alive():
            return
        self.close()
        observer = Observer()
        observer.schedule(_Wake(self.wake), str(spool), recursive=False)
        observer.start()
        self.observer, self.inode = observer, inode

    def close(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None


def _retention_days() -> float:
    try:
        from capture_daemon.config import load_config

        return float(load_config().capture.quarantine_retention_days)
    except Exception:  # noqa: BLE001 - a broken config is reported by the commands that read it
        return 7.0


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
    # A daemon started on a broken config.toml would die right after taking its lock, and this
    # would have reported it running: say what is wrong instead (the spool keeps the events).
    from capture_daemon.config import ConfigError

    try:
        load_settings()
    except ConfigError as exc:
        raise DaemonError(f"{exc.message}: fix it, then run `capture-daemon start` again "
                          "(events wait in the spool meanwhile)") from None
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
    """True once the daemon has let go of the lock and its process has ended (the lock is
    released a moment before the interpreter finishes exiting)."""
    deadline = time.monotonic() + timeout
    while running_pid() == pid or _process_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an exited daemon waiting to be reaped (a zombie) is not running
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True
