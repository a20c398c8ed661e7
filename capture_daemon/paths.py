"""The one place that decides where understudy keeps its data.

`UNDERSTUDY_HOME` wins; otherwise `${XDG_DATA_HOME:-~/.local/share}/understudy`.
hooks/capture_hook.py mirrors `data_dir()` (it may import nothing outside the stdlib).
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    home = os.environ.get("UNDERSTUDY_HOME")
    if home:
        return Path(home)
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "understudy"


def ensure(path: Path) -> Path:
    """Create a private directory (0700) if needed and return it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


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
