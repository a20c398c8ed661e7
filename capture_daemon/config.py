"""config.toml: the user's settings, in one file, read by one loader.

    from capture_daemon.config import load_config
    cfg = load_config()            # $UNDERSTUDY_HOME/config.toml, defaults if it is missing
    cfg.quality.min_score, cfg.signals.exploration_thorough, cfg.capture.idle_timeout_seconds

Sections: [capture], [quality] (with [quality.weights]) and [signals]. Every key is
optional; `DEFAULT_CONFIG_TOML` lists them all with their defaults. Unknown sections and
keys are errors, as are values of the wrong type: a typo must not silently fall back to
a default. Errors are `ConfigError` (a `click.ClickException`, so the CLI shows one clear
line, never a traceback) naming the file, and the key or the line.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any, Optional, Union

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from capture_daemon import paths
from capture_daemon.quality import QualityRules, QualityWeights
from capture_daemon.signals import SignalRules

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


class ConfigError(click.ClickException):
    """config.toml is broken; the message names the file and what to fix."""


class CaptureSettings(BaseModel):
    """`[capture]` in config.toml."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # A session with no event for this long is finalized and marked incomplete.
    idle_timeout_seconds: int = Field(1800, gt=0)
    # Projects (cwd) matching one of these globs are never captured. "~" is expanded; a
    # pattern matching a directory excludes everything under it. Decided per prompt: a prompt
    # any of whose events (or transcript rows) worked in one is dropped whole, and so is every
    # prompt of a session that started in one (ingest.py, importer.py).
    exclude_projects: tuple[str, ...] = Field((), strict=False)  # a TOML array is a list
    # `capture-daemon status` shows progress toward this many accepted traces.
    target_accepted: int = Field(500, ge=1)
    # Quarantined spool files (redacted when set aside) are deleted after this many days.
    quarantine_retention_days: float = Field(7.0, gt=0, strict=False)

    def is_excluded(self, project: Union[str, Path, None]) -> bool:
        """True when `project` (a cwd) or one of its parent directories matches a glob, each
        compared as written and with symlinks resolved: Claude Code reports a session started in
        a symlinked folder by its real path, and a user may exclude either spelling."""
        if not project or not self.exclude_projects:
            return False
        candidates = {str(p) for path in _spellings(os.path.expanduser(str(project))) for p in (path, *path.parents)}
        for pattern in self.exclude_projects:
            for spelled in _spellings(os.path.expanduser(pattern).rstrip("/") or "/"):
                if any(fnmatch.fnmatchcase(c, str(spelled)) for c in candidates):
                    return True
        return False


def _spellings(path: str) -> list[Path]:
    """`path` as written and with its symlinks resolved (a glob's wildcards, which name no
    file, are kept as they are)."""
    spellings = [Path(path)]
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError):  # a NUL byte, a loop: the path as written is all there is
        return spellings
    return spellings if real == spellings[0] else [*spellings, real]


class Config(BaseModel):
    model_config = ConfigDict(frozen=True)

    quality: QualityRules = Field(default_factory=QualityRules)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    # The file it came from (which may not exist: then everything is a default).
    path: Optional[Path] = None

    @property
    def signals(self) -> SignalRules:
        return self.quality.signals


_SECTIONS: dict[str, type[BaseModel]] = {
    "capture": CaptureSettings,
    "quality": QualityRules,
    "signals": SignalRules,
}
_SUBTABLES = {("quality", "weights"): QualityWeights}


def _keys(model: type[BaseModel], section: str) -> list[str]:
    return [k for k in model.model_fields if not (section == "quality" and k in ("signals", "weights"))]


def _where(section: str, loc: tuple) -> tuple[str, Optional[str]]:
    """Map a pydantic error location to ("[quality.weights]", "multi_step")."""
    parts = [str(p) for p in loc]
    if section == "quality" and parts[:1] == ["weights"]:
        return "[quality.weights]", parts[1] if len(parts) > 1 else None
    return f"[{section}]", parts[0] if parts else None


def _validation_error(path: Path, section: str, exc: ValidationError) -> ConfigError:
    lines = []
    for err in exc.errors():
        table, key = _where(section, err["loc"])
        if err["type"] == "extra_forbidden":
            model = QualityWeights if table == "[quality.weights]" else _SECTIONS[section]
            known = _keys(model, section)
            lines.append(f"{path}: unknown key '{key}' in {table}; known keys: {', '.join(known)}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if key is None:
            lines.append(f"{path}: {table}: {msg}")
        else:
            lines.append(f"{path}: {table} {key}: {msg} (got {err.get('input')!r})")
    more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
    return ConfigError(lines[0] + more)


# A settings file is a few kilobytes; anything near this is not one.
MAX_CONFIG_BYTES = 1 << 20


def _read_toml(path: Path) -> dict[str, Any]:
    from capture_daemon.spool import CorruptSpoolFile, read_regular_file

    try:
        # Not path.read_bytes(): a FIFO put there would block every command and the daemon.
        raw = read_regular_file(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except CorruptSpoolFile as exc:  # a FIFO, a device, a huge file
        raise ConfigError(f"{path}: cannot read: {exc}; make it a regular TOML file") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        # The message ends in "(at line L, column C)".
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def load_config(path: Union[str, Path, None] = None) -> Config:
    """Read config.toml (default: `paths.config_path()`); a missing file means all defaults."""
    path = Path(path) if path is not None else paths.config_path()
    data = _read_toml(path)

    owner = {k: s for s, model in _SECTIONS.items() for k in _keys(model, s)}
    for name, value in data.items():
        if name in _SECTIONS and isinstance(value, dict):
            continue
        if name in _SECTIONS:
            raise ConfigError(f"{path}: '{name}' must be a table: write [{name}] on a line of its own")
        if name in owner:
            raise ConfigError(f"{path}: key '{name}' must go under [{owner[name]}]")
        raise ConfigError(
            f"{path}: unknown section [{name}]; known sections: {', '.join(f'[{s}]' for s in _SECTIONS)}"
        )

    sections = {name: dict(data.get(name, {})) for name in _SECTIONS}
    if "signals" in sections["quality"]:
        raise ConfigError(f"{path}: unknown key 'signals' in [quality]; the signal thresholds go in [signals]")
    built: dict[str, BaseModel] = {}
    for name in ("signals", "capture", "quality"):
        values = sections[name]
        if name == "quality":
            if "weights" in values and not isinstance(values["weights"], dict):
                raise ConfigError(f"{path}: [quality] weights must be a table: write [quality.weights]")
            values["signals"] = built["signals"]
        try:
            built[name] = _SECTIONS[name].model_validate(values)
        except ValidationError as exc:
            raise _validation_error(path, name, exc) from None
    return Config(quality=built["quality"], capture=built["capture"], path=path)


DEFAULT_CONFIG_TOML = """\
# understudy settings: $UNDERSTUDY_HOME/config.toml
#
# Every key is listed with its default, commented out: uncomment a line to change it.
# Unknown sections and keys are errors (a typo never silently falls back to a default).
# After changing [quality] or [signals], `capture-daemon rescore` re-applies the rules
# to the traces already stored.

[capture]
# A session with no event for this long (seconds) is finalized and marked incomplete.
# idle_timeout_seconds = 1800
# Projects whose directory matches one of these globs are never captured; "~" is
# expanded and a matching directory excludes everything under it. A prompt that `cd`s into
# one is left out whole, and so is every prompt of a session started in one (live and import).
# Example: exclude_projects = ["~/clients/*", "/srv/secret"]
# exclude_projects = []
# `capture-daemon status` shows progress toward this many accepted traces.
# target_accepted = 500
# Events set aside in spool/quarantine (already redacted) are deleted after this many days.
# quarantine_retention_days = 7

[quality]
# A trace is accepted when no hard-rejecting rule fires and its score reaches min_score.
# The score is base_score, plus the weights of the good signs, minus those of the bad, in [0, 1].
# min_score = 0.5
# base_score = 0.4
# Final answers with fewer words are "short".
# min_answer_words = 50
# Main-agent tool calls that make a "multi-step workflow".
# min_tools = 3
# More than this fraction of failed main-agent calls is "unclear tool usage".
# max_failed_fraction = 0.5
# Bad signs that reject a trace whatever its score. Choose from: incomplete, no_answer,
# one_word_answer, short_answer, no_tools, failed_calls, unrecovered_error, lost_events.
# hard_rejects = ["incomplete", "no_answer", "one_word_answer", "short_answer", "lost_events"]

[quality.weights]
# Good signs (added to the score).
# multi_step = 0.2          # >= min_tools main-agent calls
# clear_reasoning = 0.1     # narrates its steps
# explicit_plan = 0.1       # states a plan
# database = 0.15           # queries a database
# retrieval = 0.1           # WebSearch or a search/vector/RAG MCP tool
# tool_chaining = 0.1       # >= 2 distinct tools
# problem_solving = 0.15    # iterates, or changes then verifies with a run
# error_recovery = 0.15     # a failed call, then a different approach that worked
# Bad signs (subtracted).
# incomplete = 0.5          # crashed, killed or timed out
# no_answer = 0.5           # no final answer
# one_word_answer = 0.5
# short_answer = 0.2        # under min_answer_words
# no_tools = 0.3            # no tool calls at all
# failed_calls = 0.3        # more than max_failed_fraction of calls failed
# unrecovered_error = 0.2   # a call failed and nothing different worked afterwards
# lost_events = 0.5         # an event of the prompt was lost or quarantined in capture

[signals]
# E = reads and searches before the first change (or before the answer).
# exploration_depth: E below exploration_moderate is "minimal", below
# exploration_thorough "moderate", otherwise "thorough".
# exploration_moderate = 2
# exploration_thorough = 5
# E at or above this makes the pattern "exploratory".
# exploratory_min_reads = 3
# Main-agent calls that make reasoning "multi-step" on their own.
# multi_step_min_calls = 3
# Two calls of one tool with inputs at least this similar (0-1) are a retry of the
# same attempt; less similar is a different approach.
# similar_input_ratio = 0.9
"""
