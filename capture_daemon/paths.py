"""The one place that decides where understudy keeps its data.

`UNDERSTUDY_HOME` wins; otherwise `${XDG_DATA_HOME:-~/.local/share}/understudy`.
hooks/capture_hook.py mirrors `data_dir()` (it may import nothing outside the stdlib).
"""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import click


def data_dir() -> Path:
    home = os.environ.get("UNDERSTUDY_HOME")
    if home:
        return Path(home)
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "understudy"


class NotPrivate(click.ClickException):
    """A data directory that exists, is readable by others and cannot be made private."""


def ensure(path: Path) -> Path:
    """Create a private directory (0700), or make an existing one private, and return it.

    Traces hold prompts, file contents and command output: a data dir someone made 0755
    (or 0777) before understudy ran is tightened, not trusted. One we do not own and so
    cannot chmod is refused rather than written into.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _make_private(path)
    if path == data_dir():  # and the folders kept in it, made by an older version or by hand
        for sub in (spool_dir(), spool_dir() / "tmp", quarantine_dir(), logs_dir()):
            if sub.is_dir() and not sub.is_symlink():
                _make_private(sub)
    return path


def _make_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        try:
            path.chmod(0o700)
        except OSError:
            raise NotPrivate(f"{path} is mode {mode:04o} and cannot be made private (owner uid "
                             f"{path.stat().st_uid}, you are {os.getuid()}): chown it to yourself, "
                             "or point UNDERSTUDY_HOME at a directory of your own") from None


def open_private(path: Path, mode: str = "w") -> IO:
    """`open(path, mode)`, but a file it creates is 0600 whatever the umask, and an
    existing regular file is brought to 0600 (never a tty or a pipe: `-o /dev/stdout`)."""
    flags = {"w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND}[mode.rstrip("bt")]
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, 0o600)
    except OSError:
        pass  # not ours to chmod; the file is still written where the user asked
    return os.fdopen(fd, mode)


@contextmanager
def private_output(path: Path, mode: str = "wb") -> Iterator[IO]:
    """A 0600 file written whole or not at all: into a temp file beside it, renamed over
    `path` when the block ends without an error. Not a regular file (a FIFO, /dev/stdout):
    written in place."""
    path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        with open_private(path, mode) as handle:
            yield handle
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open_private(tmp, mode) as handle:
            yield handle
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, atomically, as a 0600 file."""
    with private_output(path, "w") as handle:
        handle.write(text)


def spool_dir() -> Path:
    return data_dir() / "spool"


def quarantine_dir() -> Path:
    return data_dir() / "spool" / "quarantine"


def store_path() -> Path:
    return data_dir() / "traces.db"


def logs_dir() -> Path:
    return data_dir() / "logs"


def hook_error_log() -> Path:
    return logs_dir() / "hook-errors.log"


def daemon_log() -> Path:
    return logs_dir() / "daemon.log"


def pid_file() -> Path:
    return data_dir() / "daemon.pid"


def config_path() -> Path:
    """User-editable settings (quality thresholds, excluded projects): TOML."""
    return data_dir() / "config.toml"


def paused_flag() -> Path:
    """While this file exists the hook drains its input and keeps nothing."""
    return data_dir() / "paused"


def daemon_cmd_file() -> Path:
    """The daemon's argv as JSON, written by `capture-daemon start`: the SessionStart hook
    (stdlib only, it cannot know the venv) runs it when the daemon is not running."""
    return data_dir() / "daemon.cmd"


def stopped_flag() -> Path:
    """Written by `capture-daemon stop`, removed by `start`: while it exists the SessionStart
    hook does not bring the daemon back."""
    return data_dir() / "stopped"
