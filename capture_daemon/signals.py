"""Reasoning signals: how the work in a trace was done.

`compute_signals(trace, rules)` is pure and deterministic: the same trace and rules
always give the same `ReasoningSignals`. The definitions below are the contract; the
tests in tests/test_signals.py check each one at its edges.

Terms
-----
- *Main calls*: the trace's tool calls with `agent_id is None`, in `tool_calls` order.
  Subagent calls are only looked at where a rule says "all agents".
- *Narration*: the main agent's `assistant_text` steps with non-blank text, minus the
  final answer. A step is the final answer when its text equals `final_response`
  (whitespace-trimmed), or when it comes after the last main call and its text is
  part of `final_response` (an answer written as several text blocks).
  Thinking blocks are not narration.
- *Gap*: where a narration step sits among the main calls: gap k = after k main calls
  (a step's `position` counts calls of every agent; the gap counts main calls only).
- *Change*: a main call to Edit, MultiEdit, Write or NotebookEdit, or a mutating Bash.
- *Read/search*: a main call to Read, NotebookRead, Grep, Glob, LS, WebFetch,
  WebSearch; a read-only Bash; an Agent (or legacy Task) call whose subagent_type is
  "Explore"; an MCP tool (`mcp__server__tool`) whose tool name starts with read, get,
  list, search, find, fetch, query, describe, show, lookup, retrieve or view. Failed
  calls count too: an attempt to look is still looking.
- *Read-only Bash*: every simple command of the line (split on `&&`, `||`, `;`, `|`,
  `&` and newlines, quotes respected; wrappers such as `sudo`, `env`, `time`,
  `timeout N`, `xargs` and `VAR=value` prefixes skipped) is a reading command (cat, ls,
  head, tail, grep, rg, find without -exec/-delete, tree, wc, stat, diff, jq, sed
  without -i, awk, …) or a neutral one (cd, echo, sort, uniq, cut, tr, …), at least one
  is a reading command, `git` appears only with read subcommands (log, show, diff,
  status, blame, grep, ls-files, rev-parse, plain branch/tag/remote/stash list), and
  nothing is redirected to a file (`> /dev/null` and `2>&1` are fine).
- *Mutating Bash*: any simple command that writes: rm, mv, cp, mkdir, touch, tee, chmod,
  ln, patch, `sed -i`, `perl -i`, `sort -o`, wget, `curl -o/-O`, git add, commit,
  checkout, reset, merge, rebase, push, pull, stash, …; package installs (pip, npm, uv,
  cargo, apt, brew, … with install/add/remove/uninstall/update/upgrade/sync/get); or an
  output redirection to a file.
- *Steered*: a gap where a mid-turn message (`mid_turn_messages`) arrived: one the user
  sent, or what a user's own hook showed the model (a Stop hook's reason to go on, a
  PostToolUse hook's objection or context). The narration in that gap and the change of
  course after it answer the user or the hook, so they are not counted as the model's own
  correction or recovery (below).
- *Run*: a main Bash call that is not read-only (tests, scripts, builds, installs, …).
- *Similar inputs*: two calls of the same tool whose inputs, rendered as sorted compact
  JSON, have a difflib ratio (2 × matching characters / total characters) ≥
  `rules.similar_input_ratio` (default 0.9). Renderings longer than 600 characters (a
  whole file for Write) are compared by their first and last 300 characters.

Signals
-------
- `tool_sequence`: the main calls' tool names in order. `workflow`: the same joined
  with " → " ("Read → Grep → Bash").
- `reasoning_steps` = number of main calls + number of gaps holding narration. Several
  text blocks in one gap count once (one pause to think between two actions), so the
  number does not depend on how a transcript split its text blocks.
- `exploration_depth`: from E, the number of reads/searches before the first change
  (all main calls when there is none): E < `exploration_moderate` (2) → "minimal",
  E < `exploration_thorough` (5) → "moderate", otherwise "thorough". With the defaults:
  0-1 minimal, 2-4 moderate, 5+ thorough. None when the trace has no main calls.
- `multi_step_reasoning`: at least `multi_step_min_calls` (3) main calls, or at least 2
  distinct main tools with narration in a gap strictly between the first and last call.
- `used_database` (all agents): a Bash command running a database client (psql, pg_dump,
  pgcli, sqlite3, litecli, mysql, mariadb, mycli, mongosh, mongo, redis-cli, duckdb,
  clickhouse-client, cqlsh, bq, snowsql, usql) as a command word (also after `docker
  exec …`, `kubectl exec …`, `ssh host …`); a SQL statement in a Bash command
  (SELECT <columns> FROM <name>, INSERT INTO, UPDATE <t> SET, DELETE FROM, CREATE/DROP
  TABLE|INDEX|VIEW|SCHEMA|DATABASE, ALTER TABLE, SHOW TABLES, PRAGMA); Python driving a
  database (`import sqlite3|psycopg|pymysql|duckdb|pymongo|sqlalchemy|redis`,
  `sqlite3.connect(`, `create_engine(`); or an MCP tool whose name
  has a word such as postgres, sqlite, mysql, sql, db, database, supabase, bigquery,
  snowflake, mongodb, redis, duckdb (words are split on "_" and "-"; a word ending in
  "sql" or "db" also counts), or whose string inputs hold a SQL statement.
  Prose like "a selection from the menu" is not SQL.
- `used_subagents`: any main Agent/Task call, or any call or subagent run with an agent_id.
- `files_read` (all agents): file_path (or notebook_path) of successful Read and
  NotebookRead calls. `files_changed` (all agents): the same for successful Edit,
  MultiEdit, Write and NotebookEdit calls, plus the targets of output redirections of
  successful Bash calls (`> out.txt`, `>> log`). Both deduplicated, first-seen order.
- `explicit_plan`: the first plan stated in the narration, searched step by step in
  order. A plan names at least two ordered steps, or is introduced as one:
    1. a numbered list of 2+ items starting at 1 ("1. …", "2) …", "Step 1: …"), with
       the line before it when that line ends in ":";
    2. a "My plan: …" / "Here's the plan …" / "The approach is …" / "Plan:" sentence,
       with the list that follows when it ends in ":";
    3. a line ending in ":" that states an intention (I'll, let me, the steps, …)
       followed by 2+ bullet items;
    4. "1. … 2. …" inline in one line;
    5. a sentence stating an intention (I'll, I will, I'm going to, let me, let's,
       I need to, we'll, …) that has a second step in it (", then …", "and then …",
       "…, next …", "…, finally …", "followed by …"; a "then" after an "if" is a
       condition, not a step) or that is followed by sentences starting with Then,
       Next, After that, Afterwards, Finally, Lastly, Second(ly), Once that's done.
  The value is the text of the plan (the sentences or lines that form it), not the
  whole narration. Failing all of these, the first main TodoWrite call listing 2+ todos
  is the plan, rendered "1. …\\n2. …". None otherwise.
- `pattern`/`patterns`: `patterns` lists every one that applies, in precedence order;
  `pattern` is the first of them.
    - iterative: a change by Edit/MultiEdit/Write/NotebookEdit, a later run, and a
      later edit again (any file); or a failed main call later repeated with a similar
      input.
    - parallel: some `parallel_group` holds 2+ main calls.
    - exploratory: E ≥ `exploratory_min_reads` (3).
    - linear: none of the above (and the trace has at least one main call).
  Precedence iterative > parallel > exploratory > linear: the rarer and more telling
  behaviour names the trace. Iterating on a failure is what a model most needs to learn
  and is the least common; parallel calls are a deliberate choice the model made;
  reading before acting is the common case. With no main calls: None and [].
- `error_recovery`: a failed main call followed later by a successful main call that
  takes a different approach: another tool, or the same tool with an input that is not
  similar. A retry of the same command that then succeeds is not a recovery, nor is a
  successful call made after the user steered (a gap after the failure, at or before it).
- `self_corrections`: each narration sentence with a correction marker: starting with
  "Actually," / "Actually I|let me|that|…", "Wait," / "Wait —", "Oops", "Hmm, wait";
  or containing "on second thought", "that didn't/doesn't work", "that (approach)
  failed", "I made a mistake|typo|error", "my mistake", "my bad", "I was wrong",
  "I misread|misunderstood|overlooked|missed", "that's not right|wrong|incorrect",
  "scratch that", "correction:", "I should have", "let me try a different|another
  approach|way", "instead, let me" / "let me … instead", "let me fix|correct|redo|undo
  that|this|my". `position` is the narration step's own `position`. Narration in a
  steered gap is not read for these ("Actually, let me do it your way" answers the user).

A trace with no tool calls at all and `source == "manual"` (a quick capture with only a
response) has no narration separate from its answer: there the answer text is read for
`explicit_plan`, `self_corrections` (position 0) and `used_database` (database client
names and SQL statements in the text).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from capture_daemon.schema import ReasoningSignals, SelfCorrection, TextStep, ToolCall, Trace


class SignalRules(BaseModel):
    """Thresholds for the signals; `[signals]` in config.toml."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # E (reads/searches before the first change) at or above this is "moderate".
    exploration_moderate: int = Field(2, ge=1)
    # ... and at or above this is "thorough".
    exploration_thorough: int = Field(5, ge=1)
    # E at or above this makes the trace "exploratory".
    exploratory_min_reads: int = Field(3, ge=1)
    # Main calls at or above this make the reasoning multi-step.
    multi_step_min_calls: int = Field(3, ge=1)
    # Two calls of one tool whose inputs are at least this similar (difflib ratio) are
    # "the same attempt" (a retry), below it "a different approach".
    similar_input_ratio: float = Field(0.9, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> "SignalRules":
        if self.exploration_thorough <= self.exploration_moderate:
            raise ValueError(
                f"exploration_thorough ({self.exploration_thorough}) must be greater than "
                f"exploration_moderate ({self.exploration_moderate})"
            )
        return self


# --------------------------------------------------------------------------- tools

EDIT_TOOLS = frozenset({"Edit", "MultiEdit", "Write", "NotebookEdit"})
READ_TOOLS = frozenset({"Read", "NotebookRead", "Grep", "Glob", "LS", "WebFetch", "WebSearch"})
AGENT_TOOLS = frozenset({"Agent", "Task"})
_MCP_READ_PREFIXES = (
    "read", "get", "list", "search", "find", "fetch", "query", "describe", "show",
    "lookup", "retrieve", "view",
)


def mcp_parts(name: str) -> Optional[tuple[str, str]]:
    if not name.startswith("mcp__"):
        return None
    rest = name[len("mcp__"):]
    server, _, tool = rest.partition("__")
    return server, tool


# --------------------------------------------------------------------------- Bash

_READ_CMDS = frozenset({
    "cat", "bat", "less", "more", "head", "tail", "ls", "ll", "la", "tree", "find", "fd",
    "fdfind", "grep", "egrep", "fgrep", "rg", "ag", "ack", "wc", "file", "stat", "du", "df",
    "pwd", "which", "whereis", "type", "readlink", "realpath", "diff", "cmp", "jq", "yq",
    "awk", "sed", "nl", "od", "xxd", "hexdump", "strings", "tac", "locate", "git",
})
_NEUTRAL_CMDS = frozenset({
    "cd", "pushd", "popd", "echo", "printf", "true", "sort", "uniq", "cut", "tr", "column",
    "basename", "dirname", "export", "set", "test", "[", "rev", "paste", "fold", "fmt",
})
_MUTATING_CMDS = frozenset({
    "rm", "rmdir", "mv", "cp", "mkdir", "touch", "tee", "chmod", "chown", "chgrp", "ln",
    "truncate", "dd", "install", "patch", "unzip", "tar", "rsync", "scp", "wget", "shred",
})
_PKG_MANAGERS = frozenset({
    "pip", "pip3", "uv", "poetry", "npm", "yarn", "pnpm", "bun", "cargo", "go", "gem",
    "apt", "apt-get", "brew", "conda", "mamba", "composer", "bundle",
})
_PKG_VERBS = frozenset({
    "install", "i", "add", "remove", "rm", "uninstall", "update", "upgrade", "sync", "get",
})
_GIT_READ = frozenset({
    "log", "show", "diff", "status", "blame", "grep", "ls-files", "ls-tree", "rev-parse",
    "describe", "shortlog", "reflog", "cat-file", "rev-list", "whatchanged",
})
_GIT_LISTING = frozenset({"branch", "tag", "remote", "stash", "config"})
_GIT_MUTATING = frozenset({
    "add", "commit", "apply", "am", "checkout", "switch", "restore", "reset", "merge",
    "rebase", "cherry-pick", "revert", "rm", "mv", "push", "pull", "clone", "init", "clean",
})
_WRAPPERS = frozenset({"sudo", "time", "command", "nohup", "env", "exec", "builtin", "nice", "xargs"})
_DB_CLIENTS = frozenset({
    "psql", "pg_dump", "pg_restore", "pgcli", "sqlite3", "litecli", "mysql", "mariadb",
    "mycli", "mysqldump", "mongosh", "mongo", "redis-cli", "duckdb", "clickhouse-client",
    "cqlsh", "bq", "snowsql", "usql",
})

_SQL_COL = r"(?:\*|[\w.`\"\[\]]+(?:\s*\([^()]*\))?(?:\s+AS\s+[\w\"`]+)?)"
_SQL_RE = re.compile(
    rf"""
      \bSELECT\s+(?:DISTINCT\s+|TOP\s+\d+\s+)?{_SQL_COL}(?:\s*,\s*{_SQL_COL})*\s+FROM\s+[\w.`"\[(]
    | \bINSERT\s+(?:OR\s+\w+\s+)?INTO\s+[\w.`"\[]
    | \bUPDATE\s+[\w.`"\[\]]+\s+SET\s+\w
    | \bDELETE\s+FROM\s+[\w.`"\[]
    | \b(?:CREATE|DROP)\s+(?:(?:OR\s+REPLACE|TEMP|TEMPORARY|UNIQUE|MATERIALIZED|IF\s+EXISTS)\s+)*
        (?:TABLE|INDEX|VIEW|SCHEMA|DATABASE)\b
    | \bALTER\s+TABLE\s+[\w.`"\[]
    | \bSHOW\s+(?:TABLES|DATABASES|COLUMNS)\b
    | \bPRAGMA\s+\w
    """,
    re.IGNORECASE | re.VERBOSE,
)
_PY_DB_RE = re.compile(
    r"\bimport\s+(?:sqlite3|psycopg2?|pymysql|mysql\.connector|duckdb|pymongo|sqlalchemy|redis|asyncpg)\b"
    r"|\bfrom\s+(?:sqlite3|psycopg2?|pymysql|duckdb|pymongo|sqlalchemy|asyncpg)\b\S*\s+import\b"
    r"|\b(?:sqlite3|duckdb|pymysql|psycopg2?)\.connect\s*\("
    r"|\bcreate_engine\s*\("
)
_DB_WORDS = frozenset({
    "db", "database", "databases", "postgres", "postgresql", "pg", "sqlite", "mysql",
    "mariadb", "sql", "mssql", "supabase", "bigquery", "snowflake", "mongodb", "mongo",
    "redis", "duckdb", "clickhouse", "neon", "dynamodb", "cockroachdb", "planetscale",
    "turso", "sqlserver", "oracle", "cassandra",
})
# `docker exec db psql …` runs the client inside a container.
_CONTAINER_CMDS = frozenset({"docker", "podman", "kubectl", "docker-compose", "ssh"})
_REDIRECT_RE = re.compile(r"^(\d*|&)>>?(.*)$")
_HARMLESS_TARGETS = frozenset({"/dev/null", "/dev/stderr", "/dev/stdout", "/dev/tty"})


@dataclass
class BashInfo:
    """What a Bash command line does, as far as the signals care."""

    read_only: bool = False
    mutating: bool = False
    database: bool = False
    redirect_targets: list[str] = field(default_factory=list)


def _split_simple_commands(command: str) -> list[str]:
    """Split a command line on unquoted &&, ||, ;, |, &, newlines and parentheses."""
    parts: list[str] = []
    buf: list[str] = []
    quote: Optional[str] = None
    i, n = 0, len(command)
    while i < n:
        ch = command[i]
        if quote:
            buf.append(ch)
            if ch == "\\" and quote == '"' and i + 1 < n:
                buf.append(command[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
            i += 1
            continue
        if ch == "\\" and i + 1 < n:
            buf.append(command[i:i + 2])
            i += 2
            continue
        if ch in "'\"":
            quote = ch
            buf.append(ch)
        elif ch in ";|\n()`":
            parts.append("".join(buf))
            buf = []
        elif ch == "&":
            # `2>&1`, `&>file` and `>&2` are redirections, not separators.
            prev = command[i - 1] if i else ""
            nxt = command[i + 1] if i + 1 < n else ""
            if prev == ">" or nxt == ">":
                buf.append(ch)
            else:
                parts.append("".join(buf))
                buf = []
        else:
            buf.append(ch)
        i += 1
    parts.append("".join(buf))
    return [p.strip() for p in parts if p.strip()]


_HEREDOC_RE = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][\w-]*)\1")


def _strip_heredoc_bodies(command: str) -> str:
    """Drop here-document bodies: they are data, not commands (a `>` in them is no redirect)."""
    if "<<" not in command:
        return command
    out, delim = [], None
    for line in command.split("\n"):
        if delim is not None:
            if line.strip() == delim:
                delim = None
            continue
        out.append(line)
        m = _HEREDOC_RE.search(line.replace("<<<", ""))
        if m:
            delim = m.group(2)
    return "\n".join(out)


def _words(simple: str) -> list[str]:
    try:
        return shlex.split(simple, comments=False, posix=True)
    except ValueError:
        return simple.split()


def _strip_wrappers(words: list[str]) -> list[str]:
    """Drop `VAR=value` prefixes and wrappers (sudo, env, time, timeout N, xargs -0, …)."""
    i = 0
    while i < len(words):
        w = words[i]
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w):
            i += 1
        elif w in _WRAPPERS:
            i += 1
            while i < len(words) and words[i].startswith("-"):
                # `nice -n 10`, `xargs -I {}`, `sudo -u user`: skip the flag's argument too.
                if words[i] in ("-n", "-I", "-u", "-g", "-P", "-L", "-d") and i + 1 < len(words):
                    i += 1
                i += 1
        elif w == "timeout":
            i += 1
            while i < len(words) and words[i].startswith("-"):
                i += 1
            i += 1  # the duration
        else:
            break
    return words[i:]


def _git_kind(args: list[str]) -> str:
    """'read', 'mutating' or 'other' for `git ARGS`."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in ("-C", "-c") and i + 1 < len(args):
            i += 1
        i += 1
    if i >= len(args):
        return "other"
    sub, rest = args[i], args[i + 1:]
    if sub in _GIT_READ:
        return "read"
    if sub in _GIT_LISTING:
        positional = [a for a in rest if not a.startswith("-")]
        if sub == "stash":
            return "read" if positional[:1] in (["list"], ["show"]) else "mutating"
        if sub == "config":
            return "read" if any(a in ("--get", "--list", "-l", "--get-all") for a in rest) else "mutating"
        if sub == "remote":
            return "read" if not positional or positional[0] in ("show", "get-url") else "mutating"
        flags = [a for a in rest if a.startswith("-")]
        if not positional and not any(f in ("-d", "-D", "-m", "-M", "--delete") for f in flags):
            return "read"
        if sub == "tag" and "-l" in flags:
            return "read"
        return "mutating"
    if sub in _GIT_MUTATING:
        return "mutating"
    return "other"


def classify_bash(command: str) -> BashInfo:
    """Classify a Bash command line; see the module docstring for the rules."""
    info = _classify_cached(command or "")
    return replace(info, redirect_targets=list(info.redirect_targets))


@functools.lru_cache(maxsize=4096)
def _classify_cached(command: str) -> BashInfo:
    # Each rule asks about the same commands several times; callers must not mutate the result.
    info = BashInfo()
    command = command or ""
    info.database = bool(_PY_DB_RE.search(command) or _SQL_RE.search(command))
    segments = _split_simple_commands(_strip_heredoc_bodies(command))
    any_read = False
    all_ok = bool(segments)
    for seg in segments:
        words = _words(seg)
        # Redirections first: they make any command a writer.
        plain: list[str] = []
        j = 0
        while j < len(words):
            m = _REDIRECT_RE.match(words[j])
            if m:
                target = m.group(2)
                if not target and j + 1 < len(words):
                    j += 1
                    target = words[j]
                if target and not target.startswith("&") and target not in _HARMLESS_TARGETS:
                    info.redirect_targets.append(target)
                    info.mutating = True
                j += 1
                continue
            if words[j] in ("<", "<<", "<<<", "<<-") and j + 1 < len(words):
                j += 2
                continue
            plain.append(words[j])
            j += 1
        words = _strip_wrappers(plain)
        if not words:
            continue
        cmd = words[0].rsplit("/", 1)[-1]
        args = words[1:]
        if cmd in _DB_CLIENTS or (
            cmd in _CONTAINER_CMDS and any(w.rsplit("/", 1)[-1] in _DB_CLIENTS for w in args)
        ):
            info.database = True
        if cmd == "git":
            kind = _git_kind(args)
            if kind == "read":
                any_read = True
            else:
                all_ok = False
                info.mutating |= kind == "mutating"
            continue
        if cmd == "sed" and any(a == "-i" or a.startswith("-i") or a.startswith("--in-place") for a in args):
            info.mutating, all_ok = True, False
            continue
        if cmd == "perl" and any(re.match(r"^-\w*i", a) for a in args):
            info.mutating, all_ok = True, False
            continue
        if cmd == "sort" and any(a == "-o" or a.startswith("--output") for a in args):
            info.mutating, all_ok = True, False
            continue
        if cmd == "curl" and any(a in ("-o", "-O", "--output", "--remote-name") for a in args):
            info.mutating, all_ok = True, False
            continue
        if cmd == "find" and any(a in ("-delete", "-exec", "-execdir", "-ok", "-fprint") for a in args):
            info.mutating |= "-delete" in args
            all_ok = False
            continue
        if cmd in _MUTATING_CMDS:
            info.mutating, all_ok = True, False
            continue
        if cmd in _PKG_MANAGERS or cmd.startswith("python") and "pip" in args[:3]:
            verbs = [a for a in args if not a.startswith("-")]
            if cmd.startswith("python"):
                verbs = verbs[verbs.index("pip") + 1:] if "pip" in verbs else []
            if cmd == "uv" and verbs[:1] == ["pip"]:
                verbs = verbs[1:]
            if verbs and verbs[0] in _PKG_VERBS:
                info.mutating = True
            all_ok = False
            continue
        if cmd in _READ_CMDS:
            any_read = True
            continue
        if cmd in _NEUTRAL_CMDS:
            continue
        all_ok = False
    info.read_only = all_ok and any_read and not info.mutating
    return info


def _bash_command(call: ToolCall) -> str:
    cmd = call.input.get("command")
    return cmd if isinstance(cmd, str) else ""


def _bash(call: ToolCall) -> BashInfo:
    return _classify_cached(_bash_command(call))


def is_read(call: ToolCall) -> bool:
    """A read or search (see the module docstring)."""
    if call.name in READ_TOOLS:
        return True
    if call.name == "Bash":
        return _bash(call).read_only
    if call.name in AGENT_TOOLS:
        return str(call.input.get("subagent_type") or "").lower() == "explore"
    mcp = mcp_parts(call.name)
    if mcp:
        return mcp[1].lower().startswith(_MCP_READ_PREFIXES)
    return False


def is_change(call: ToolCall) -> bool:
    if call.name in EDIT_TOOLS:
        return True
    return call.name == "Bash" and _bash(call).mutating


def is_run(call: ToolCall) -> bool:
    return call.name == "Bash" and not _bash(call).read_only


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def uses_database(call: ToolCall) -> bool:
    if call.name == "Bash":
        return _bash(call).database
    mcp = mcp_parts(call.name)
    if mcp:
        words = [w for w in re.split(r"[_\-.]+", f"{mcp[0]}_{mcp[1]}".lower()) if w]
        if any(w in _DB_WORDS or w.endswith("sql") or (w.endswith("db") and len(w) > 2) for w in words):
            return True
        return any(_SQL_RE.search(s) for s in _strings(call.input))
    return False


def text_mentions_database(text: str) -> bool:
    """Database use read from prose (manual captures without tool calls)."""
    if _SQL_RE.search(text) or _PY_DB_RE.search(text):
        return True
    return any(re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", text) for c in _DB_CLIENTS if c not in ("bq", "mongo"))


# Long inputs (a whole file for Write) are compared by their ends only: a retry differs in
# a flag or a path, which shows near an end, and difflib is quadratic.
_END_CHARS = 300


def _input_key(call: ToolCall) -> str:
    try:
        key = json.dumps(call.input, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        key = repr(call.input)
    return key if len(key) <= 2 * _END_CHARS else key[:_END_CHARS] + key[-_END_CHARS:]


def similar_calls(a: ToolCall, b: ToolCall, ratio: float, _cache: Optional[dict] = None) -> bool:
    """Same tool and near-identical input: difflib ratio ≥ `ratio` over the inputs rendered
    as sorted compact JSON (for renderings over 600 characters, the first and last 300)."""
    if a.name != b.name:
        return False
    cache = _cache if _cache is not None else {}
    for call in (a, b):
        if id(call) not in cache:
            cache[id(call)] = _input_key(call)
    ta, tb = cache[id(a)], cache[id(b)]
    if ta == tb:
        return True
    total = len(ta) + len(tb)
    if not total:
        return True
    # difflib's ratio, 2·matches / total, with the common head and tail counted first: a
    # retry usually changes one spot, and repetitive inputs make difflib slow.
    n = min(len(ta), len(tb))
    head = 0
    while head < n and ta[head] == tb[head]:
        head += 1
    tail = 0
    while tail < n - head and ta[-1 - tail] == tb[-1 - tail]:
        tail += 1
    mid_a, mid_b = ta[head:len(ta) - tail], tb[head:len(tb) - tail]
    if 2 * (head + tail) >= ratio * total:
        return True
    if 2 * (head + tail + min(len(mid_a), len(mid_b))) < ratio * total:
        return False
    matcher = difflib.SequenceMatcher(None, mid_a, mid_b, autojunk=False)
    matched = sum(block.size for block in matcher.get_matching_blocks())
    return 2 * (head + tail + matched) >= ratio * total


# --------------------------------------------------------------------------- text

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})


def _normalize_text(text: str) -> str:
    text = text.translate(_APOSTROPHES).replace("**", "").replace("__", "")
    return re.sub(r"(?m)^[ \t]*#{1,6}[ \t]+", "", text)


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])[ \t]+(?=[\"'(\[`*A-Z0-9])|\n+")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(text) if s and s.strip()]


_INTENT = re.compile(
    r"\b(?:I'll|I will|I'm going to|I am going to|I'm gonna|I'd like to|I need to|I want to|"
    r"I should|I plan to|let me|let's|we'll|we will|we need to|we should)\b",
    re.IGNORECASE,
)
_LATER_INLINE = re.compile(
    r"(?:[,;:]\s*|\band\s+|\s+—\s*|\s+-\s+)(?:then|next|after that|afterwards?|finally|lastly)\b(?=[\s,]+\w)"
    r"|\bfollowed by\s+\w",
    re.IGNORECASE,
)
_BARE_THEN = re.compile(r"\bthen\b(?=\s+\w)", re.IGNORECASE)
_LATER_START = re.compile(
    r"^(?:and\s+)?(?:then|next|after that|afterwards?|finally|lastly|second(?:ly)?|third(?:ly)?|"
    r"once (?:that|this|it)(?:'s| is)? ?(?:done|finished|complete|in place)|after (?:this|that|which))\b",
    re.IGNORECASE,
)
_PLAN_HEADER = re.compile(
    r"^(?:here(?:'s| is)\s+(?:my|the|our)\s+(?:plan|approach|strategy)\b"
    r"|(?:my|our)\s+(?:plan|approach|strategy)\b"
    r"|the\s+(?:plan|approach|strategy)(?:\s+here)?\s+(?:is|will\s+be)\b"
    r"|plan\s*:)",
    re.IGNORECASE,
)
_NUMBERED = re.compile(r"^\s*(?:step\s*)?(\d{1,2})\s*[.):]\s+\S", re.IGNORECASE)
_BULLET = re.compile(r"^\s*[-*•]\s+\S")
_INLINE_NUMBERED = re.compile(r"(?:^|[\s:])\(?1[.)]\s+\S.*?\s\(?2[.)]\s+\S")
_INTRO_INTENT = re.compile(
    r"\b(?:plan|steps|approach|I'll|I will|I'm going to|let me|let's|we'll|I need to|going to)\b",
    re.IGNORECASE,
)


def _has_inline_second_step(sentence: str) -> bool:
    if _LATER_INLINE.search(sentence):
        return True
    for m in _BARE_THEN.finditer(sentence):
        before = sentence[: m.start()]
        if re.search(r"\b(?:if|when|unless)\b", before, re.IGNORECASE):
            continue  # "if it fails then …" is a condition
        if re.search(r"\b(?:by|since|until|till|back|just|even|only)\s*$", before, re.IGNORECASE):
            continue  # "by then", "since then", …
        return True
    return False


def _list_after(lines: list[str], start: int) -> list[str]:
    """Numbered or bulleted items from lines[start:], with indented continuations."""
    items: list[str] = []
    i = start
    while i < len(lines):
        line = lines[i]
        if _NUMBERED.match(line) or _BULLET.match(line):
            items.append(line.strip())
        elif items and line.strip() and line[:1] in (" ", "\t"):
            items.append(line.strip())
        elif not line.strip() and items:
            pass
        else:
            break
        i += 1
    return items


def _numbered_plan(lines: list[str]) -> Optional[str]:
    for i, line in enumerate(lines):
        m = _NUMBERED.match(line)
        if not m or m.group(1) != "1":
            continue
        items, expected, j = [line.strip()], 2, i + 1
        while j < len(lines):
            nxt = lines[j]
            mm = _NUMBERED.match(nxt)
            if mm and int(mm.group(1)) == expected:
                items.append(nxt.strip())
                expected += 1
            elif mm:
                break
            elif nxt.strip() and (nxt[:1] in (" ", "\t") or _BULLET.match(nxt)):
                items.append(nxt.strip())  # a continuation or sub-item
            elif nxt.strip():
                break
            j += 1
        if expected >= 3:
            intro = next((l.strip() for l in reversed(lines[:i]) if l.strip()), "")
            if intro.endswith(":"):
                items.insert(0, intro)
            return "\n".join(items)
    return None


def _find_plan(text: str) -> Optional[str]:
    text = _normalize_text(text)
    lines = text.splitlines()
    # 1. numbered list
    plan = _numbered_plan(lines)
    if plan:
        return plan
    # 2. "My plan: ..." (with the list it introduces)
    for i, line in enumerate(lines):
        stripped = line.strip()
        for s in _sentences(stripped):
            if _PLAN_HEADER.match(s):
                if s.endswith(":"):
                    items = _list_after(lines, i + 1)
                    if items:
                        return "\n".join([s, *items])
                    rest = stripped[stripped.index(s) + len(s):].strip()
                    return f"{s} {rest}".strip() if rest else s
                return s
    # 3. an intention ending in ":" followed by bullets
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.endswith(":") and _INTRO_INTENT.search(stripped):
            items = [it for it in _list_after(lines, i + 1)]
            if len(items) >= 2:
                last = _sentences(stripped)[-1]
                return "\n".join([last, *items])
    # 4. "1. ... 2. ..." on one line
    for line in lines:
        if _INLINE_NUMBERED.search(line):
            return line.strip()
    # 5. intention with a second step, in the sentence or the ones after it
    sentences = _sentences(text)
    for i, s in enumerate(sentences):
        if not _INTENT.search(s) or _LATER_START.match(s) and i > 0:
            continue
        chain = [s]
        for nxt in sentences[i + 1:]:
            if _LATER_START.match(nxt):
                chain.append(nxt)
            else:
                break
        if len(chain) >= 2 or _has_inline_second_step(s):
            return " ".join(chain)
    return None


_CORRECTION_START = re.compile(
    r"^(?:actually\b(?:,|\s+(?:I\b|I'll|I'm|let\b|let's|that|this|it|the|we|there|no))"
    r"|wait\b\s*[,.!:;\u2014\u2013-]|oops\b|hmm,?\s+wait\b|oh,?\s+wait\b)",
    re.IGNORECASE,
)
_CORRECTION_ANY = re.compile(
    r"\bon second thought\b"
    r"|\b(?:that|this|it)\s+(?:didn't|did not|doesn't|does not|won't|isn't going to)\s+work\b"
    r"|\bthat\s+(?:approach\s+|command\s+|attempt\s+)?failed\b"
    r"|\bI\s+made\s+an?\s+(?:mistake|typo|error)\b"
    r"|\bmy\s+(?:mistake|bad)\b"
    r"|\bI\s+was\s+wrong\b"
    r"|\bI\s+(?:misread|misunderstood|overlooked|missed)\b"
    r"|\bthat's\s+(?:not\s+right|wrong|incorrect)\b"
    r"|\bscratch\s+that\b"
    r"|\bcorrection\s*:"
    r"|\bI\s+should\s+have\b"
    r"|\blet\s+me\s+(?:try|take|use)\s+(?:a\s+|an\s+)?(?:different|another|alternative)\s+(?:approach|way|method|tack)\b"
    r"|\binstead,?\s+let\s+me\b"
    r"|\blet\s+me\b[^.!?]{0,60}\binstead\b"
    r"|\blet\s+me\s+(?:fix|correct|redo|undo|revert)\s+(?:that|this|my)\b",
    re.IGNORECASE,
)


def find_self_corrections(text: str) -> list[str]:
    """The sentences of `text` that correct course (see the module docstring)."""
    out = []
    for s in _sentences(_normalize_text(text)):
        if _CORRECTION_START.match(s) or _CORRECTION_ANY.search(s):
            out.append(s)
    return out


# --------------------------------------------------------------------------- trace


def _main_gap(trace: Trace, position: int) -> int:
    """How many main calls precede a text step at `position` (which counts all agents)."""
    return sum(1 for c in trace.tool_calls[: max(position, 0)] if c.agent_id is None)


def narration_steps(trace: Trace) -> list[TextStep]:
    """The main agent's narration: non-blank text steps that are not the final answer."""
    n_main = len(trace.main_calls())
    answer = (trace.final_response or "").strip()
    steps = []
    for step in trace.assistant_text:
        if step.agent_id is not None:
            continue
        text = step.text.strip()
        if not text:
            continue
        if answer and (text == answer or (_main_gap(trace, step.position) >= n_main and text in answer)):
            continue
        steps.append(step)
    return steps


def _todo_plan(calls: list[ToolCall]) -> Optional[str]:
    for call in calls:
        if call.name != "TodoWrite":
            continue
        todos = call.input.get("todos")
        if not isinstance(todos, list):
            continue
        items = [
            str(t.get("content") or t.get("activeForm") or "").strip() if isinstance(t, dict) else str(t).strip()
            for t in todos
        ]
        items = [t for t in items if t]
        if len(items) >= 2:
            return "\n".join(f"{i}. {t}" for i, t in enumerate(items, 1))
    return None


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for it in items:
        if it and it not in seen:
            seen[it] = None
    return list(seen)


def _file_arg(call: ToolCall) -> Optional[str]:
    for key in ("file_path", "notebook_path", "path"):
        v = call.input.get(key)
        if isinstance(v, str) and v:
            return v
    return None


def compute_signals(trace: Trace, rules: Optional[SignalRules] = None) -> ReasoningSignals:
    """The reasoning signals of `trace` (definitions in the module docstring)."""
    rules = rules or SignalRules()
    calls = trace.tool_calls
    main = trace.main_calls()
    n_main = len(main)
    names = [c.name for c in main]

    narration = narration_steps(trace)
    gaps = {_main_gap(trace, s.position) for s in narration}
    steered = {_main_gap(trace, m.position) for m in trace.mid_turn_messages if m.agent_id is None}

    # Exploration: reads/searches before the first change.
    first_change = next((i for i, c in enumerate(main) if is_change(c)), n_main)
    explored = sum(1 for c in main[:first_change] if is_read(c))
    if n_main == 0:
        depth = None
    elif explored < rules.exploration_moderate:
        depth = "minimal"
    elif explored < rules.exploration_thorough:
        depth = "moderate"
    else:
        depth = "thorough"

    multi_step = n_main >= rules.multi_step_min_calls or (
        len(set(names)) >= 2 and any(0 < g < n_main for g in gaps)
    )

    # Patterns.
    iterative = False
    edit_seen = run_after_edit = False
    for c in main:
        if c.name in EDIT_TOOLS:
            if run_after_edit:
                iterative = True
                break
            edit_seen = True
        elif edit_seen and is_run(c):
            run_after_edit = True
    recovery = retried = False
    cache: dict = {}
    for i, c in enumerate(main):
        if c.success:
            continue
        for j, later in enumerate(main[i + 1:], i + 1):
            if retried and recovery:
                break
            told = any(i < g <= j for g in steered)  # the user redirected it: not the model's recovery
            if later.name != c.name:
                recovery = recovery or (later.success and not told)
                continue
            if retried and (recovery or not later.success):
                continue  # nothing left to learn from this pair
            if similar_calls(c, later, rules.similar_input_ratio, cache):
                retried = True
            elif later.success and not told:
                recovery = True
    iterative = iterative or retried
    groups: dict[int, int] = {}
    for c in main:
        groups[c.parallel_group] = groups.get(c.parallel_group, 0) + 1
    patterns: list[str] = []
    if iterative:
        patterns.append("iterative")
    if any(n >= 2 for n in groups.values()):
        patterns.append("parallel")
    if explored >= rules.exploratory_min_reads:
        patterns.append("exploratory")
    if not patterns and n_main:
        patterns.append("linear")

    # Narration: plan and self-corrections.
    text_only = not calls and trace.source == "manual" and bool(trace.final_response)
    texts = [(s.text, s.position) for s in narration]
    if text_only:
        texts.append((trace.final_response or "", 0))
    plan = None
    for text, _ in texts:
        plan = _find_plan(text)
        if plan:
            break
    if plan is None:
        plan = _todo_plan(main)
    corrections = [
        SelfCorrection(text=sentence, position=pos) for text, pos in texts if _main_gap(trace, pos) not in steered
        for sentence in find_self_corrections(text)
    ]

    used_db = any(uses_database(c) for c in calls)
    if text_only:
        used_db = used_db or text_mentions_database(trace.final_response or "")

    ok = [c for c in calls if c.success]
    files_read = _dedupe(_file_arg(c) or "" for c in ok if c.name in ("Read", "NotebookRead"))
    changed: list[str] = []
    for c in ok:
        if c.name in EDIT_TOOLS:
            changed.append(_file_arg(c) or "")
        elif c.name == "Bash":
            changed.extend(_bash(c).redirect_targets)

    return ReasoningSignals(
        tool_sequence=names,
        workflow=" → ".join(names),
        reasoning_steps=n_main + len(gaps),
        exploration_depth=depth,
        multi_step_reasoning=multi_step,
        used_database=used_db,
        used_subagents=any(c.name in AGENT_TOOLS for c in main)
        or any(c.agent_id is not None for c in calls)
        or bool(trace.subagents),
        files_read=files_read,
        files_changed=_dedupe(changed),
        explicit_plan=plan,
        pattern=patterns[0] if patterns else None,
        patterns=patterns,
        error_recovery=recovery,
        self_corrections=corrections,
    )
