"""A teacher corpus captured through the REAL Claude Code CLI (issue 11 item 3).

The scripted teacher of trainer/teacher_corpus.py decides each task: the prompt, the narration,
the tool calls with their arguments and the final answer. Here those turns are not written into
a trace directly: a scripted Messages API on loopback (tests/scripted_api.py) sends them, step by
step, to the real `claude -p` CLI, which executes the tools for real in a per-session sandbox
project. The sandbox is built from the teacher's own values (the buggy function, the schema, a
real SQLite database with the teacher's row counts, a package whose import really fails), so a
tool result is whatever the real tool returns and it agrees with the teacher's final answer.
understudy's real hooks (registered in a temp HOME) and the real capture daemon (a temp
UNDERSTUDY_HOME) capture it; `capture-daemon export` gets the traces out and each trace keeps
the teacher's `kind`.

A session is the teacher's session: 1-3 prompts, the later ones sent with `claude -p --resume`,
so they share the CLI's session id. The teacher's `db_question` on Postgres runs on a throwaway
Postgres server (one schema per session) when the server binaries are there; otherwise, and
always for `investigate` of `tox -e py311` (no tox here), the task is left out and counted.

    .venv/bin/python benchmarks/real_cli_corpus.py --sessions 300 --workers 3 \\
        --out /tmp/realcorpus/traces.jsonl
    .venv/bin/trainer run --traces /tmp/realcorpus/traces.jsonl ...

As a module: plan_sessions(), build_sandbox(), scripts_for(), run_corpus(), check_trace().

Measured (2 shared, busy CPU cores, 3 sessions at once, seed 0): 300 sessions, 526 prompts in
20 min (4.0 s a session of wall time; one session alone 5-30 s, median 9.2 s); every session ran,
no event lost, 450 traces accepted. The other 76 are exact repeats of an earlier teacher prompt
("Explain how the cache module works.") that the store rejects as duplicates (same prompt and
workflow); `--unique-prompts` leaves those out of the plan instead. With it, 1,000 sessions
(seed 0, 3 at a time, 2 cores shared with other work): 1,425 prompts in 1,760 s, every trace
accepted, no event lost, nothing quarantined (docs/learning.md §4 trains on that corpus).

What the real CLI makes of the teacher's calls (the traces differ from the synthetic corpus's
here): file paths are absolute under the session's cwd (DIR/dev/PROJECT), Edit gains
`replace_all: false`, Read numbers lines as `1\t` (not `     1\t`) with a last empty line, Edit
and Write answer with the absolute path and "(file state is current in your context ...)", a
failed Bash call keeps `Exit code N` and the real output in both `output` and `error`, and
`tools_offered` holds the CLI's 14 tools with full schemas.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from capture_daemon.schema import Trace  # noqa: E402
from tests.claude_harness import run_claude, write_settings_with_hooks  # noqa: E402
from tests.daemon_harness import RunningDaemon, wait_for  # noqa: E402
from tests.scripted_api import Script, ScriptedAPI, text, tool  # noqa: E402
from trainer.teacher_corpus import KINDS, PG_DBS, generate_corpus  # noqa: E402

ALLOWED_TOOLS = "Bash Read Edit Write Grep Glob"


# --------------------------------------------------------------------------- the plan

@dataclass
class SessionPlan:
    index: int
    teacher_session: str
    project: str
    prompts: list[Trace] = field(default_factory=list)  # the teacher's traces, in order


def runnable(trace: Trace, postgres: bool = False) -> bool:
    """False for the teacher tasks this machine cannot really execute: `tox` (not installed), and
    `psql` unless a Postgres server runs (`postgres`: see Postgres)."""
    first = trace.tool_calls[0].input.get("command", "") if trace.tool_calls else ""
    if trace.kind == "db_question" and first.startswith("psql") and not postgres:
        return False
    if trace.kind == "investigate" and first.startswith("tox"):
        return False
    return True


def plan_sessions(n_sessions: int, seed: int = 0, kinds: Optional[list[str]] = None,
                  postgres: bool = False, unique_prompts: bool = False) -> tuple[list[SessionPlan], int]:
    """The first `n_sessions` teacher sessions of generate_corpus(seed) that keep at least one
    runnable prompt; returns (plans, prompts left out). A prompt repeated within a session is
    left out; with `unique_prompts`, one any earlier session asked too (the store would reject
    it as a duplicate of that trace: same prompt and workflow)."""
    n = max(6, n_sessions * 3)
    while True:
        plans: list[SessionPlan] = []
        by_session: dict[str, SessionPlan] = {}
        dropped: dict[str, int] = {}
        seen: set[str] = set()
        for t in generate_corpus(n, seed, kinds=kinds):
            plan = by_session.get(t.session_id)
            if plan is None:
                plan = by_session[t.session_id] = SessionPlan(len(plans), t.session_id, t.cwd.rsplit("/", 1)[-1])
                plans.append(plan)
            if not runnable(t, postgres) or any(p.prompt == t.prompt for p in plan.prompts) or (
                    unique_prompts and t.prompt in seen):
                dropped[t.session_id] = dropped.get(t.session_id, 0) + 1
                continue
            plan.prompts.append(t)
            seen.add(t.prompt)
        plans = [p for p in plans[:-1] if p.prompts]  # the last session may be cut short by n
        if len(plans) >= n_sessions:
            break
        n *= 2
    plans = plans[:n_sessions]
    for i, p in enumerate(plans):
        p.index = i
    return plans, sum(dropped.get(p.teacher_session, 0) for p in plans)


# --------------------------------------------------------------------------- Postgres

class Postgres:
    """A throwaway Postgres server (unix socket only, trust auth) for the teacher's `psql` tasks.

    Each session gets its own schema; the CLI's environment points psql at the server
    (PGHOST/PGPORT/PGUSER) and at that schema (PGOPTIONS search_path), so the teacher's own
    `psql -d shop -At -c "SELECT COUNT(*) FROM orders;"` really runs and counts that session's
    rows. Needs the server binaries and, when run as root, a `postgres` user to run them as.
    """

    DATABASES = tuple(PG_DBS)

    def __init__(self, port: int = 54329):
        self.port = port
        self.dir: Optional[Path] = None

    @staticmethod
    def available() -> bool:
        if not (shutil.which("initdb") and shutil.which("pg_ctl") and shutil.which("psql")):
            return False
        if os.geteuid() != 0:
            return True
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
        return bool(shutil.which("runuser"))

    def _as_owner(self, *argv: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)

    def start(self) -> "Postgres":
        self.dir = Path(tempfile.mkdtemp(prefix="understudy-pg-"))  # in /tmp: the owner must reach it
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        data = self.dir / "data"
        subprocess.run(self._as_owner("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"),
                       check=True, capture_output=True, timeout=120)
        options = f"-k {self.dir} -p {self.port} -c listen_addresses='' -c fsync=off -c synchronous_commit=off"
        subprocess.run(self._as_owner("pg_ctl", "-D", str(data), "-o", options, "-l", str(self.dir / "log"),
                                      "-w", "start"), check=True, capture_output=True, timeout=120)
        for name in self.DATABASES:
            self.psql("postgres", f"CREATE DATABASE {name}")
        return self

    def stop(self) -> None:
        if self.dir is None:
            return
        subprocess.run(self._as_owner("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"),
                       capture_output=True, timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> "Postgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self, schema: Optional[str] = None) -> dict[str, str]:
        env = {"PGHOST": str(self.dir), "PGPORT": str(self.port), "PGUSER": "postgres"}
        if schema:
            env["PGOPTIONS"] = f"-c search_path={schema}"
        return env

    def psql(self, database: str, sql: str) -> str:
        proc = subprocess.run(["psql", "-d", database, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
                              env=dict(os.environ, **self.env()), capture_output=True, text=True, timeout=300)
        if proc.returncode:
            raise RuntimeError(f"psql failed: {proc.stderr[-500:]}")
        return proc.stdout

    def count_table(self, database: str, schema: str, table: str, rows: int) -> None:
        self.psql(database, f"CREATE SCHEMA IF NOT EXISTS {schema}; DROP TABLE IF EXISTS {schema}.{table}; "
                            f"CREATE TABLE {schema}.{table} (id bigint PRIMARY KEY, created_at timestamptz NOT NULL); "
                            f"INSERT INTO {schema}.{table} SELECT x, timestamptz '2026-01-01' + x * interval '1 minute' "
                            f"FROM generate_series(1, {int(rows)}) AS x;")


# --------------------------------------------------------------------------- the sandbox

def _unnumber(output: str) -> list[str]:
    return [line.split("\t", 1)[1] if "\t" in line else line for line in output.split("\n")]


def _write(root: Path, rel: str, content: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def _filler(count: int, start: int = 0) -> list[str]:
    """`count` lines of plain helper code that no teacher search pattern can match."""
    lines: list[str] = []
    k = start
    while count - len(lines) >= 3:
        lines += [f"def _helper_{k}(value):", "    return value", ""]
        k += 1
    return lines + [""] * (count - len(lines))


def _place(head: list[str], line_no: int, line: str, tail: list[str]) -> list[str]:
    """head, then filler, then `line` at 1-based line `line_no` (or right after head), then tail."""
    pad = max(0, line_no - 1 - len(head))
    return head + _filler(pad) + [line] + tail


def _sqlite_table(db: Path, create_sql: str, table: str, rows: int) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(create_sql)
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if rows:
            names, values = ["id"], ["x"]
            if "created_at" in columns:
                names.append("created_at")
                values.append("printf('2026-%02d-%02dT10:00:00Z', 1 + x % 12, 1 + x % 28)")
            if "status" in columns:
                names.append("status")
                values.append("CASE x % 3 WHEN 0 THEN 'open' WHEN 1 THEN 'paid' ELSE 'void' END")
            conn.execute(
                f"INSERT INTO {table} ({', '.join(names)}) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
                f"SELECT x + 1 FROM c WHERE x < {int(rows)}) SELECT {', '.join(values)} FROM c")
    conn.close()


_SQLITE = re.compile(r'^sqlite3 (\S+) "SELECT COUNT\(\*\) FROM (\w+);"$')
_PSQL = re.compile(r'^psql -d (\w+) -At -c "SELECT COUNT\(\*\) FROM (\w+);"$')


def build_sandbox(root: Path, teacher: Trace, postgres: Optional[Postgres] = None, schema: str = "public") -> None:
    """Make the files, databases and failures the teacher's task expects, in project dir `root`
    (a `psql` task: its table in `schema` of the running `postgres`)."""
    if teacher.kind == "db_question" and _PSQL.match(teacher.tool_calls[0].input["command"]):
        database, table = _PSQL.match(teacher.tool_calls[0].input["command"]).groups()
        if postgres is None:
            raise ValueError("a psql task needs a running Postgres")
        postgres.count_table(database, schema, table, int(teacher.tool_calls[0].output))
        return
    getattr(_Builders, teacher.kind)(Path(root), teacher.tool_calls)


class _Builders:
    @staticmethod
    def compare(root: Path, calls) -> None:
        schema_call, grep_call, count_a, count_b = calls
        schema_sql = "\n".join(_unnumber(schema_call.output)) + "\n"
        _write(root, schema_call.input["file_path"], schema_sql)
        db, a = _SQLITE.match(count_a.input["command"]).groups()
        _, b = _SQLITE.match(count_b.input["command"]).groups()
        creates = {m.group(1): m.group(0) for m in re.finditer(r"CREATE TABLE (\w+) \(.*?\);", schema_sql, re.S)}
        _sqlite_table(root / db, creates[a], a, int(count_a.output))
        _sqlite_table(root / db, creates[b], b, int(count_b.output))
        files: dict[str, dict[int, str]] = {}
        for hit in grep_call.output.split("\n"):
            path, line_no, content = hit.split(":", 2)
            files.setdefault(path, {})[int(line_no)] = content
        for path, hits in files.items():
            # Each hit at its line, inside a SQL string; a filler of helpers before it.
            lines = ['"""Database access."""', "import sqlite3", ""]
            for k, (line_no, content) in enumerate(sorted(hits.items())):
                target = max(line_no, len(lines) + 2)
                lines += _filler(target - 2 - len(lines), start=10 * k) + [f'SQL_{k} = """', content, '"""', ""]
            _write(root, path, "\n".join(lines) + "\n")

    @staticmethod
    def fix_bug(root: Path, calls) -> None:
        read, edit, run = calls
        path = read.input["file_path"]
        mod, stem = Path(path).parent.name, Path(path).stem
        code = _unnumber(read.output)
        _write(root, path, "\n".join(code) + "\n")
        _write(root, f"src/{mod}/__init__.py", f'"""The {mod} package."""\n')
        func = re.match(r"def (\w+)\(", code[2]).group(1)
        passed = int(re.search(r"(\d+) passed", run.output).group(1))
        test_path = run.input["command"].split()[3]
        check = _BUG_CHECKS[edit.input["old_string"].split()[0]]
        _write(root, test_path, "\n".join([
            "import pytest", "", f"from {mod}.{stem} import {func}", "", "",
            f"@pytest.mark.parametrize('n', range({passed}))",
            f"def test_{func}(n):",
            f"    {check.format(f=func)}", ""]))
        _write(root, "pytest.ini", "[pytest]\npythonpath = src\n")

    @staticmethod
    def investigate(root: Path, calls) -> None:
        run, grep, read = calls
        cmd = run.input["command"]
        traceback = run.error.split("\n")
        err = traceback[-1]
        mod, stem = Path(read.input["file_path"]).parent.name, Path(read.input["file_path"]).stem
        func = re.search(r"from \.\w+ import (\w+)", run.error).group(1)
        code = _unnumber(read.output)  # import logging, "", def {func}_v2(...), ...
        arg = re.match(r"def \w+\((\w+),", code[2]).group(1)
        line_no = int(grep.output.split(":", 2)[1])
        init = [f'"""The {mod} package."""', ""]
        legacy = None
        if err.startswith("ImportError"):
            init += [f"from .{stem} import {func}"]
            body = _place(code[:2], line_no, code[2], code[3:])
        elif err.startswith("AttributeError"):
            init += [f"from . import {stem}", f"{func} = {stem}.{func}"]
            body = _place(code[:2], line_no, f"# {func} now lives in {mod}/legacy.py (re-export removed)", [""] + code[2:])
            legacy = [f'"""Old entry points of {mod}."""', "", "", f"def {func}({arg}, rate=1.0, options=None):",
                      f"    return list({arg})", ""]
        elif err.startswith("KeyError"):
            key = re.match(r"KeyError: '(\w+)'", err).group(1)
            init += [f"from .{stem} import {func}_v2"]
            body = _place(["import logging", "import os", ""], line_no, f'SERVICE_URL = os.environ["{key}"]',
                          ["", ""] + code[2:])
        elif err.startswith("TypeError"):
            init += [f"from .{stem} import {func}", "", f"DEFAULTS = {func}()"]
            body = _place(code[:2], line_no, f"def {func}({arg}, rate=1.0, options=None):",
                          [f"    return {func}_v2({arg}, rate, options)", "", ""] + code[2:])
        else:
            raise ValueError(f"unknown failure {err!r}")
        _write(root, f"src/{mod}/__init__.py", "\n".join(init) + "\n")
        _write(root, f"src/{mod}/{stem}.py", "\n".join(body) + "\n")
        if legacy:
            _write(root, f"src/{mod}/legacy.py", "\n".join(legacy))
        # Every way the teacher runs it imports the package, so every one of them really fails.
        _write(root, f"tests/test_{stem}.py", f"import {mod}\n\n\ndef test_import():\n    assert {mod}\n")
        _write(root, "pytest.ini", "[pytest]\npythonpath = src\n")
        _write(root, "Makefile", "test:\n\tpython -m pytest tests -q\n")
        _write(root, f"src/{mod}/cli.py", "\n".join([
            f'"""Command line of {mod}."""', "import argparse", "", f"import {mod}", "", "",
            "def main() -> int:", "    parser = argparse.ArgumentParser()", "    parser.add_argument('command')",
            "    parser.parse_args()", "    return 0", "", "", "if __name__ == '__main__':", "    raise SystemExit(main())", ""]))
        _write(root, f"scripts/nightly_{mod}.py", f'"""Nightly job of {mod}."""\nimport {mod}\n\nprint("nightly done")\n')
        assert cmd  # the command itself is the teacher's; nothing to write for it

    @staticmethod
    def explore(root: Path, calls) -> None:
        glob, *reads = calls
        files = glob.output.split("\n")
        contents = {r.input["file_path"]: "\n".join(_unnumber(r.output)) + "\n" for r in reads}
        stamp = time.time() - 1000
        for i, rel in enumerate(files):
            name, mod = Path(rel).stem, Path(rel).parent.name
            default = f'"""The {mod} package."""\n' if name == "__init__" else f'"""{name} of {mod}."""\n'
            body = contents.get(rel, default)
            path = _write(root, rel, body)
            os.utime(path, (stamp + i, stamp + i))

    @staticmethod
    def db_question(root: Path, calls) -> None:
        (count,) = calls
        db, table = _SQLITE.match(count.input["command"]).groups()
        _sqlite_table(root / db, f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL)", table,
                      int(count.output))

    @staticmethod
    def write_file(root: Path, calls) -> None:
        write, _run = calls
        target = root / write.input["file_path"]
        if target.exists():  # a new file, as the teacher's "File created" says
            target.unlink()


# A check per teacher bug (keyed by the first word of the line the fix replaces); it fails before
# the fix and passes after, for every n.
_BUG_CHECKS = {
    "return": "assert {f}(list(range(n))[::-1]) == list(range(n))",
    "for": "assert {f}(list(range(n + 1))) == list(range(n + 1))",
    "if": "assert {f}(['x', ''.join(['k', str(n)])], options={{'name': 'k' + str(n)}}) == 'k' + str(n)",
    "total": "assert {f}([n, 1], rate=2.0) == round((n + 1) * 2.0, 2)",
    "value": "assert {f}(list(range(n))) == ['fast'] * n",
}


# --------------------------------------------------------------------------- the scripted API

_FILE_TOOLS = ("Read", "Edit", "Write")


def sent_input(call, cwd: Path) -> dict:
    """The teacher's arguments as the scripted API sends them: a file tool's `file_path` made
    absolute under the session's project, as Claude does (the CLI would make a relative one
    absolute anyway before the hooks see it)."""
    args = dict(call.input)
    if call.name in _FILE_TOOLS and not args["file_path"].startswith("/"):
        args["file_path"] = f"{cwd}/{args['file_path']}"
    return args


def expected_input(call, cwd: Path) -> dict:
    """What the hooks record for a teacher call: sent_input() plus the defaults the CLI fills in
    (Edit's `replace_all: false`)."""
    args = sent_input(call, cwd)
    if call.name == "Edit":
        args.setdefault("replace_all", False)
    return args


def scripts_for(teacher: Trace, cwd: Path) -> Script:
    """The teacher's turns for one prompt: per call group its narration and its tool_use blocks
    (with the teacher's ids; parallel calls in one message), then the final answer."""
    groups: dict[int, list] = {}
    for call in teacher.tool_calls:
        groups.setdefault(call.parallel_group, []).append(call)
    narration = {step.position: step.text for step in teacher.assistant_text}
    turns, position = [], 0
    for g in sorted(groups):
        blocks = [text(narration[position])] if position in narration else []
        blocks += [tool(c.name, sent_input(c, cwd), id=c.tool_use_id) for c in groups[g]]
        turns.append(blocks)
        position += len(groups[g])
    turns.append([text(teacher.final_response)])
    return Script(match=teacher.prompt, turns=turns)


# --------------------------------------------------------------------------- running

@dataclass
class SessionResult:
    plan: SessionPlan
    session_id: Optional[str] = None
    ok: bool = False
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


_project_locks: dict[str, threading.Lock] = {}
_project_locks_guard = threading.Lock()


def run_session(plan: SessionPlan, *, home: Path, uhome: Path, workdir: Path, keep: bool = False,
                timeout: float = 180, postgres: Optional[Postgres] = None) -> SessionResult:
    """One teacher session in project dir `workdir/PROJECT` (the same path for every session of
    that project, as on a developer's machine; sessions of one project take turns, each starting
    from an empty dir)."""
    with _project_locks_guard:
        lock = _project_locks.setdefault(str(workdir / plan.project), threading.Lock())
    with lock:
        return _run_session(plan, home=home, uhome=uhome, project=workdir / plan.project, keep=keep, timeout=timeout,
                            postgres=postgres)


def _run_session(plan: SessionPlan, *, home: Path, uhome: Path, project: Path, keep: bool, timeout: float,
                 postgres: Optional[Postgres]) -> SessionResult:
    result = SessionResult(plan)
    started = time.monotonic()
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    # Scripts longest prompt first: a prompt that contains an earlier one is still matched to itself.
    scripts = sorted((scripts_for(t, project) for t in plan.prompts), key=lambda s: -len(s.match))
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(project / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    schema = f"session_{plan.index:04d}"
    if postgres is not None:
        env.update(postgres.env(schema))
    try:
        with ScriptedAPI(scripts) as api:
            for teacher in plan.prompts:
                build_sandbox(project, teacher, postgres, schema)
                extra = ["--resume", result.session_id] if result.session_id else []
                proc = run_claude(teacher.prompt, home=home, understudy_home=uhome, cwd=project, base_url=api.base_url,
                                  allowed_tools=ALLOWED_TOOLS, extra_args=extra, timeout=timeout, env=env)
                if proc.returncode != 0:
                    result.errors.append(f"claude exit {proc.returncode}: {proc.stderr[-500:]}")
                    break
                answer = json.loads(proc.stdout)
                result.session_id = answer["session_id"]
                if answer.get("result") != teacher.final_response:
                    result.errors.append(f"answer differs: {str(answer.get('result'))[:200]}")
                    break
        result.ok = not result.errors
    except Exception as exc:  # noqa: BLE001 - one session's failure is reported, the corpus goes on
        result.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        if keep:
            shutil.rmtree(project.with_name(f"{project.name}.{plan.index:04d}"), ignore_errors=True)
            project.rename(project.with_name(f"{project.name}.{plan.index:04d}"))
        else:
            shutil.rmtree(project, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def check_trace(trace: dict, teacher: Trace, cwd: Optional[str] = None) -> list[str]:
    """What differs between a captured trace and the teacher's task it played (empty: none);
    inputs are compared with expected_input() under `cwd` (default: the trace's)."""
    cwd = Path(cwd or trace.get("cwd") or ".")
    problems = []
    if not trace.get("complete"):
        problems.append("incomplete")
    if not (trace.get("quality") or {}).get("accepted"):
        quality = trace.get("quality") or {}
        if quality.get("duplicate_of"):  # the store's rule: same prompt and workflow as an earlier trace
            problems.append(f"duplicate of {quality['duplicate_of']}")
        else:
            problems.append(f"not accepted: {quality.get('reasons')}")
    if trace.get("capture_losses"):
        problems.append(f"capture losses: {trace['capture_losses']}")
    got = [(c["name"], c["input"]) for c in trace.get("tool_calls", []) if not c.get("agent_id")]
    want = [(c.name, expected_input(c, cwd)) for c in teacher.tool_calls]
    if [g[0] for g in got] != [w[0] for w in want]:
        problems.append(f"tool sequence {[g[0] for g in got]} != {[w[0] for w in want]}")
    elif [g[1] for g in got] != [w[1] for w in want]:
        problems.append("tool inputs differ from the teacher's")
    if [c["tool_use_id"] for c in trace.get("tool_calls", [])] != [c.tool_use_id for c in teacher.tool_calls]:
        problems.append("tool ids differ")
    if trace.get("final_response") != teacher.final_response:
        problems.append("final answer differs")
    return problems


def run_corpus(n_sessions: int = 300, *, out: Path, seed: int = 0, workers: int = 3, workdir: Optional[Path] = None,
               keep: bool = False, kinds: Optional[list[str]] = None, progress=print,
               postgres: Optional[bool] = None, unique_prompts: bool = False) -> dict[str, Any]:
    """Play `n_sessions` teacher sessions through the real CLI, capture them, write the traces
    (each with its teacher `kind`) to `out` as JSONL; return the run's stats. `postgres`: run
    the teacher's psql tasks on a throwaway server (default: when Postgres.available())."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    use_pg = Postgres.available() if postgres is None else postgres
    plans, left_out = plan_sessions(n_sessions, seed, kinds, postgres=use_pg, unique_prompts=unique_prompts)
    use_pg = use_pg and any(_PSQL.match(t.tool_calls[0].input.get("command", "")) for p in plans for t in p.prompts)
    with Postgres() if use_pg else _nothing() as pg:
        return _run_corpus(plans, left_out, pg, out=out, workers=workers, workdir=workdir, keep=keep,
                           progress=progress)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def _run_corpus(plans: list[SessionPlan], left_out: int, pg: Optional[Postgres], *, out: Path, workers: int,
                workdir: Optional[Path], keep: bool, progress) -> dict[str, Any]:
    base = Path(workdir or tempfile.mkdtemp(prefix="realcorpus-"))
    home, uhome, projects = base / "home", base / "understudy", base / "dev"
    for d in (home, projects):
        d.mkdir(parents=True, exist_ok=True)
    uhome.mkdir(mode=0o700, parents=True, exist_ok=True)
    (uhome / "config.toml").write_text("[capture]\nidle_timeout_seconds = 3\n")
    write_settings_with_hooks(home)
    n_prompts = sum(len(p.prompts) for p in plans)
    progress(f"{len(plans)} sessions, {n_prompts} prompts ({left_out} teacher prompts left out: "
             f"{'tox' if pg else 'psql/tox'}, repeats), Postgres {'on' if pg else 'off'}, "
             f"{workers} at once; work dir {base}")

    t0 = time.monotonic()
    results: list[SessionResult] = []
    lock = threading.Lock()
    with RunningDaemon(uhome) as daemon:
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = [pool.submit(run_session, p, home=home, uhome=uhome, workdir=projects, keep=keep, postgres=pg)
                       for p in plans]
            for fut in as_completed(futures):
                r = fut.result()
                with lock:
                    results.append(r)
                    done = len(results)
                    elapsed = time.monotonic() - t0
                    eta = elapsed / done * (len(plans) - done)
                    failed = sum(1 for x in results if not x.ok)
                    progress(f"[{done}/{len(plans)}] session {r.plan.index} ({len(r.plan.prompts)} prompts, "
                             f"{r.seconds:.1f}s){' FAILED: ' + '; '.join(r.errors) if r.errors else ''} | "
                             f"{elapsed:.0f}s elapsed, ETA {eta:.0f}s, {failed} failed")
        finally:  # Ctrl-C / SIGTERM: the sessions not started yet are dropped, the running ones finish
            pool.shutdown(wait=True, cancel_futures=True)
        ran = sum(len(r.plan.prompts) for r in results if r.session_id)
        wait_for(lambda: len(daemon.traces()) >= ran and not list((uhome / "spool").glob("*.event")),
                 max(60, ran * 0.5), "the daemon to commit every prompt")
        status = daemon.status()
        raw = base / "export.jsonl"
        daemon.cli("export", "--format", "jsonl", "-o", str(raw), timeout=600)
    wall = time.monotonic() - t0

    # Give each trace its teacher's kind (and the teacher task's index), check it against the teacher.
    teacher_by_key = {(r.session_id, t.prompt): (r.plan, t) for r in results if r.session_id for t in r.plan.prompts}
    traces, problems, duplicates = [], {}, {}
    with open(raw, encoding="utf-8") as fh:
        for line in fh:
            trace = json.loads(line)
            plan, teacher = teacher_by_key.get((trace["session_id"], trace["prompt"]), (None, None))
            if teacher is not None:
                trace["kind"] = teacher.kind
                trace["teacher_session"] = plan.index
                issues = check_trace(trace, teacher)
                if len(issues) == 1 and issues[0].startswith("duplicate of "):
                    duplicates[trace["trace_id"]] = issues[0][len("duplicate of "):]
                elif issues:
                    problems[trace["trace_id"]] = issues
            traces.append(trace)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for trace in traces:
            fh.write(json.dumps(trace) + "\n")
    tmp.replace(out)

    per_session = [r.seconds for r in results]
    stats = {
        "out": str(out), "sessions_planned": len(plans), "sessions_ok": sum(r.ok for r in results),
        "sessions_failed": {r.plan.index: r.errors for r in results if not r.ok},
        "prompts_planned": n_prompts, "teacher_prompts_left_out": left_out,
        "traces": len(traces), "accepted": sum(1 for t in traces if (t.get("quality") or {}).get("accepted")),
        "sessions": len({t["session_id"] for t in traces}),
        "kinds": {k: sum(1 for t in traces if t.get("kind") == k) for k in KINDS},
        "accepted_by_kind": {k: sum(1 for t in traces if t.get("kind") == k and (t.get("quality") or {}).get("accepted"))
                             for k in KINDS},
        "sessions_with_accepted": len({t["session_id"] for t in traces if (t.get("quality") or {}).get("accepted")}),
        # Rejected by the daemon's duplicate rule (same prompt and workflow as an earlier trace):
        # the teacher repeats prompts ("Explain how the cache module works."); otherwise faithful.
        "duplicates_rejected": len(duplicates),
        "traces_with_problems": problems,
        "quarantined": status.get("spool", {}).get("quarantined"),
        "postgres": pg is not None, "wall_seconds": round(wall, 1), "workers": workers,
        "session_seconds_median": round(statistics.median(per_session), 2) if per_session else None,
        "seconds_per_session_wall": round(wall / max(len(plans), 1), 2),
        "workdir": str(base),
    }
    (out.parent / (out.stem + ".stats.json")).write_text(json.dumps(stats, indent=2))
    return stats


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/realcorpus/traces.jsonl"))
    parser.add_argument("--workdir", type=Path, help="temp HOME, UNDERSTUDY_HOME and sandboxes (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep each session's sandbox project")
    parser.add_argument("--kinds", nargs="*", choices=KINDS)
    parser.add_argument("--unique-prompts", action="store_true",
                        help="leave out a teacher prompt an earlier session already asked (else the store rejects "
                             "it as a duplicate)")
    parser.add_argument("--no-postgres", action="store_true",
                        help="leave the teacher's psql tasks out instead of running a throwaway Postgres server")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as Ctrl-C does: daemon and Postgres stopped
    stats = run_corpus(args.sessions, out=args.out, seed=args.seed, workers=args.workers, workdir=args.workdir,
                       keep=args.keep, kinds=args.kinds, progress=lambda s: print(s, flush=True),
                       postgres=False if args.no_postgres else None, unique_prompts=args.unique_prompts)
    shown = dict(stats, traces_with_problems=len(stats["traces_with_problems"]))
    print(json.dumps(shown, indent=2))
    return 0 if stats["sessions_ok"] == stats["sessions_planned"] and not stats["traces_with_problems"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
