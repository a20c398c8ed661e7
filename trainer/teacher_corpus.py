"""A scripted teacher: realistic Claude Code traces with one distinct workflow per kind of task.

This is the built-in corpus of `trainer run --demo` and the corpus of the learning test. The
wording of the prompt decides the kind (several templates per kind), and the arguments of the
calls come from the prompt (a file named in the prompt is the file Read or Edit opens), so a
student can learn both which tools to call and with what.

    kind         workflow (tool sequence)                       pattern
    compare      Read schema → Grep → Bash query A → Bash query B   linear
    fix_bug      Read → Edit → Bash (run the tests)                 linear
    investigate  Bash (fails) → Grep → Read                         exploratory, error recovery
    explore      Glob → [Read, Read] in parallel                    parallel
    db_question  Bash (sqlite3/psql query)                          linear
    write_file   Write → Bash (run it)                              linear

    python -c "from trainer.teacher_corpus import write_corpus_jsonl; write_corpus_jsonl('demo.jsonl', 300, 0)"
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

from capture_daemon.schema import Quality, ReasoningSignals, TextStep, ToolCall, Trace, make_trace_id

KINDS = ("compare", "fix_bug", "investigate", "explore", "db_question", "write_file")

# Compact versions of Claude Code's own tool schemas (the real ones carry pages of guidance that
# compact_tools() cuts down; these are already short so the demo trains fast on a CPU).
_SCHEMA = "http://json-schema.org/draft-07/schema#"


def _tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {
        "name": name,
        "description": description,
        "input_schema": {"$schema": _SCHEMA, "type": "object", "properties": properties, "required": required,
                         "additionalProperties": False},
    }


_STR, _NUM, _BOOL = {"type": "string"}, {"type": "number"}, {"type": "boolean"}
TOOLS_OFFERED: list[dict] = [
    _tool("Bash", "Run a shell command: tests, git, package managers, database clients.",
          {"command": _STR, "description": {"type": "string", "description": "What it does, in 5-10 words"}},
          ["command"]),
    _tool("Read", "Read a file; lines come back numbered.", {"file_path": _STR, "offset": _NUM, "limit": _NUM},
          ["file_path"]),
    _tool("Edit", "Replace an exact, unique string in a file.",
          {"file_path": _STR, "old_string": _STR, "new_string": _STR, "replace_all": _BOOL},
          ["file_path", "old_string", "new_string"]),
    _tool("Write", "Write a file, replacing it if it exists.", {"file_path": _STR, "content": _STR},
          ["file_path", "content"]),
    _tool("Grep", "Search file contents with a regular expression (ripgrep).",
          {"pattern": _STR, "path": _STR, "glob": _STR,
           "output_mode": {"type": "string", "enum": ["content", "files_with_matches", "count"]}, "-n": _BOOL},
          ["pattern"]),
    _tool("Glob", "Find files by glob pattern.", {"pattern": _STR, "path": _STR}, ["pattern"]),
]

PROJECTS = ["billing-api", "inventory-service", "blog-engine", "metrics-pipeline", "chat-server", "crm-backend",
            "payments", "todo-app", "shipping-tracker", "docs-site"]
MODULES = ["auth", "billing", "cache", "parser", "scheduler", "orders", "users", "reports", "search",
           "notifications", "storage", "config", "invoices", "sessions", "metrics", "shipping", "catalog"]
STEMS = ["handlers", "models", "utils", "service", "client", "validators", "serializers", "tasks", "views",
         "helpers", "core", "queries", "rules", "loader", "pricing"]
FUNCS = ["parse_date", "compute_total", "refresh_token", "validate_email", "apply_discount", "normalize_path",
         "retry_request", "format_currency", "load_settings", "merge_records", "split_batches", "next_run_time",
         "build_index", "round_amount", "expire_sessions", "resolve_user", "paginate", "chunk_rows"]
ARGS = ["items", "values", "records", "rows", "entries", "payload", "amounts", "events"]
TABLES = ["users", "orders", "invoices", "payments", "events", "sessions", "products", "customers",
          "subscriptions", "refunds", "shipments", "reviews", "coupons", "carts"]
SQLITE_DBS = ["data/app.db", "analytics.db", "db/dev.sqlite3", "var/shop.db", "instance/site.db"]
PG_DBS = ["shop", "analytics", "crm", "warehouse", "billing"]
SCRIPT_FOLDERS = ["scripts", "tools", "bin", "scripts/maintenance"]
SCHEMAS = ["db/schema.sql", "schema.sql", "migrations/001_init.sql", "sql/tables.sql", "docs/schema.sql"]


class NamePools:
    """The names a teacher's tasks are made of: modules, files, functions, tables, databases.

    `fixed` is the small hand-written set above (a few values each; the tests' worlds are built on
    it). `varied` composes a few hundred of each from common software nouns, so a held-out prompt
    almost always names something the training set used rarely or never: a student can only get
    the arguments right by copying them from the prompt and earlier results, not by recalling the
    corpus's favourite names (docs/learning.md §2c).
    """

    def __init__(self, kind: str = "fixed"):
        if kind not in NAME_POOLS:
            raise ValueError(f"Unknown names {kind!r}; choose from {list(NAME_POOLS)}")
        self.kind = kind
        if kind == "fixed":
            self.modules, self.stems, self.funcs, self.args = MODULES, STEMS, FUNCS, ARGS
            self.tables, self.sqlite_dbs, self.pg_dbs, self.schemas = TABLES, SQLITE_DBS, PG_DBS, SCHEMAS
            self.script_folders = SCRIPT_FOLDERS
            return
        plural = [f"{w}s" for w in _NOUNS]
        self.modules = _NOUNS + [f"{w}_{s}" for w in _NOUNS for s in ("api", "core", "sync")]
        self.stems = STEMS + _NOUNS + [f"{w}_{s}" for w in _NOUNS[::5] for s in ("utils", "store", "views")]
        self.funcs = [f"{v}_{w}" for v in _VERBS for w in _NOUNS]
        self.args = ARGS + plural
        self.tables = plural + [f"{a}_{b}s" for a, b in zip(_NOUNS[::3], _NOUNS[1::3])]
        self.sqlite_dbs = [f"{d}{w}.{ext}" for d in ("", "data/", "db/", "var/", "instance/", "storage/")
                           for w in _NOUNS for ext in ("db", "sqlite3")]
        self.script_folders = SCRIPT_FOLDERS + [f"{d}/{w}" for d in ("scripts", "tools", "ops") for w in _NOUNS]
        self.pg_dbs = _NOUNS + [f"{w}_prod" for w in _NOUNS[::4]]
        self.schemas = ["schema.sql"] + [f"{d}/{w}.sql" for d in ("db", "sql", "migrations", "docs", "schema")
                                         for w in ("schema", "tables", "init", "001_init", "ddl") + tuple(_NOUNS)]


# Common software nouns and verbs for `varied` names (each noun's plural is the noun + "s").
_NOUNS = ("account address alert archive asset audit badge batch bucket budget card channel chart checkout claim "
          "client cluster comment contact contract coupon credit cursor device digest discount domain draft email "
          "entry feed filter folder form grade group guest image inbox invite issue item job journal label ledger "
          "lead license link listing member message meter note offer order owner page panel parcel partner patient "
          "payment payout permit photo plan player policy post price profile project quota quote rating receipt "
          "record region reminder report request review role route rule sale schedule score seat segment sensor "
          "shift signal slot stock store survey tag task team tenant ticket token topic track trade trip unit "
          "upload user vendor visit voucher wallet widget zone").split()
_VERBS = ("parse load save build merge split check apply resolve compute format normalize validate refresh "
          "expire sync fetch update render count").split()
NAME_POOLS = ("fixed", "varied")


SCRIPT_TASKS = [
    ("dedupe_emails", "removes duplicate email addresses from a CSV file", "rows"),
    ("rotate_logs", "compresses log files older than seven days", "paths"),
    ("export_orders", "exports yesterday's orders to JSON", "orders"),
    ("check_links", "checks every link in the docs folder and prints the dead ones", "links"),
    ("seed_users", "fills the dev database with twenty fake users", "users"),
    ("loc_report", "prints lines of code per top-level package", "packages"),
    ("backup_db", "copies the SQLite database into a timestamped backup file", "backups"),
    ("resize_images", "shrinks every PNG under static/ to at most 800 pixels wide", "images"),
]
BUGS = [
    # (symptom in the prompt, function body, old line, new line, explanation)
    ("returns None for an empty list instead of an empty list",
     ["    if not {arg}:", "        return None", "    return sorted({arg})"],
     "        return None", "        return []",
     "the early return for empty input gave back None, so every caller that iterates over the result crashed"),
    ("is off by one and drops the last element",
     ["    out = []", "    for i in range(len({arg}) - 1):", "        out.append({arg}[i])", "    return out"],
     "    for i in range(len({arg}) - 1):", "    for i in range(len({arg})):",
     "the loop stopped one element early because of the `- 1` in the range, so the last element was never processed"),
    ("checks strings with `is` and misses matches at random",
     ["    name = (options or {{}}).get('name')", "    for key in {arg}:", "        if key is name:", "            return key",
      "    return None"],
     "        if key is name:", "        if key == name:",
     "it compared strings with `is`, which checks identity rather than equality and only works for interned strings"),
    ("applies the rate twice",
     ["    total = sum({arg})", "    total = total * rate * rate", "    return round(total, 2)"],
     "    total = total * rate * rate", "    total = total * rate",
     "the rate was multiplied in twice, so every result was scaled by the square of the rate"),
    ("crashes with a KeyError when the option is missing",
     ["    key, default = 'mode', 'fast'", "    options = options or {{}}", "    value = options[key]",
      "    return [value for _ in {arg}]"],
     "    value = options[key]", "    value = options.get(key, default)",
     "it indexed the options dict directly, which raises KeyError for missing keys instead of falling back to the default"),
]
FAILURES = [
    # (error line, search pattern, explanation template)
    ("ImportError: cannot import name '{func}' from '{mod}.{stem}'", "def {func}",
     "`{func}` is no longer defined in `{mod}/{stem}.py`: it was renamed to `{func}_v2`, but the import in the failing module still uses the old name"),
    ("AttributeError: module '{mod}.{stem}' has no attribute '{func}'", "{func}",
     "the code calls `{stem}.{func}`, but that function now lives in `{mod}/legacy.py` and the re-export was removed from `{stem}.py`"),
    ("KeyError: '{table}_url'", "{table}_url",
     "the configuration key `{table}_url` is read without a default, and the test environment does not define it"),
    ("TypeError: {func}() missing 1 required positional argument: '{arg}'", "def {func}",
     "`{func}` gained a required `{arg}` parameter, but one caller still invokes it without that argument"),
]
FAIL_COMMANDS = ["python -m pytest tests/test_{stem}.py -q", "make test", "python -m {mod}.cli sync",
                 "python scripts/nightly_{mod}.py", "tox -e py311"]

PROMPTS: dict[str, list[str]] = {
    "compare": [
        "Compare how many rows the {a} and {b} tables have in {db}. The schema is in {schema}.",
        "Which table is bigger in {db}, {a} or {b}? The schema file is {schema}.",
        "Can you check whether {a} has more records than {b}? Database: {db}, schema: {schema}.",
        "I need a comparison of the {a} and {b} tables in {db} (schema in {schema}).",
        "Compare {a} against {b} in {db} by row count; see {schema} for the table definitions.",
    ],
    "fix_bug": [
        "Fix the bug in {path}: `{func}` {symptom}.",
        "`{func}` in {path} {symptom}. Please fix it.",
        "There's a bug in {path} where {func} {symptom}. Can you fix it and make sure the tests pass?",
        "Please repair {func} in {path}; it {symptom}.",
        "Bug report: {func} ({path}) {symptom}. Fix it please.",
    ],
    "investigate": [
        "Why does `{cmd}` fail?",
        "`{cmd}` is failing, can you find out why?",
        "Investigate the failure of `{cmd}` and tell me the cause.",
        "Something broke: running `{cmd}` errors out. What's going on?",
        "Figure out why `{cmd}` stopped working.",
    ],
    "explore": [
        "Explain how the {mod} module works.",
        "Give me an overview of the code in src/{mod}/.",
        "How is src/{mod} organized? Walk me through it.",
        "I'm new here: what does the {mod} package do and how is it structured?",
        "Describe the main pieces of the {mod} code.",
    ],
    "db_question": [
        "How many {table} are there in {db}?",
        "Count the rows in the {table} table of {db}.",
        "Using {db}, tell me how many {table} we have.",
        "Quick question: what's the number of {table} in {db}?",
        "Look up the total count of {table} in {db}.",
    ],
    "write_file": [
        "Write a script {path} that {task}.",
        "Create {path}: a small script that {task}.",
        "Add a new file {path} which {task}.",
        "Please write {path}; it should be a script that {task}.",
        "I need a script at {path} that {task}.",
    ],
}

NARRATION: dict[str, list[list[str]]] = {
    # One list per call group; each entry is a list of alternative phrasings.
    "compare": [
        ["First I'll read {schema} to see how {a} and {b} are defined, then I'll search the code and query both tables.",
         "Let me start with the schema in {schema}, then look for the tables in the code, then count rows in each.",
         "I'll check the table definitions in {schema} first, then search for them and query {db}."],
        ["Now I'll search the code for where {a} and {b} are used.",
         "Next, a search for the two tables in src/.",
         "Let me grep for {a} and {b} to see how they're written."],
        ["Now I'll count the rows in {a}.", "Querying {a} first.", "Let me count {a}."],
        ["And now {b}.", "Now the same query for {b}.", "Next, counting {b}."],
    ],
    "fix_bug": [
        ["First I'll read {path} to find the bug in `{func}`, then fix it and run the tests.",
         "Let me look at {path} first, then edit `{func}` and run the tests.",
         "I'll open {path}, fix `{func}`, and then run its tests."],
        ["Found it. Now I'll fix the code.", "I see the problem; fixing it now.", "That's the bug. Let me edit it."],
        ["Now I'll run the tests to confirm the fix.", "Let me run the tests.", "Running the tests to check."],
    ],
    "investigate": [
        ["First I'll run `{cmd}` to see the error.", "Let me reproduce the failure by running `{cmd}`.",
         "I'll start by running `{cmd}` myself."],
        ["The command fails. I'll search the code for the failing name.",
         "It errors out. Let me search for where that comes from.",
         "That's the error. Now I'll grep for it."],
        ["Now I'll read the file the search points to.", "Let me read that file.", "Opening the matching file."],
    ],
    "explore": [
        ["First I'll list the files in src/{mod}/, then read the main ones.",
         "Let me find the files under src/{mod}/ first.",
         "I'll start by listing what's in src/{mod}/."],
        ["Now I'll read the two central files together.", "Let me read the main two files in parallel.",
         "Reading the two key files at once."],
    ],
    "db_question": [
        ["I'll query {db} directly.", "Let me count them with a query on {db}.", "I'll run a count query against {db}."],
    ],
    "write_file": [
        ["I'll write {path} first, then run it to check that it works.",
         "Let me create {path} and then run it.",
         "First I'll write the script, then I'll try it out."],
        ["Now I'll run it.", "Let me run the new script.", "Running it to check."],
    ],
}


class _Teacher:
    def __init__(self, rng: random.Random, phrasing: Optional[random.Random] = None, names: str = "fixed"):
        self.rng = rng
        self.names = NamePools(names)
        # A second teacher: same tasks, tools and answers, its own choice among equivalent phrasings.
        self.phrasing = phrasing
        self._decks: dict[int, list] = {}

    def pick(self, seq):
        return self.rng.choice(seq)

    def deal(self, seq):
        """One of `seq`, dealt from a shuffled deck so every variant comes up equally often.

        For the variants that decide what a workflow does (which bug, which failure, which script):
        drawn independently, one bug kind came up in 4-6 of a corpus's ~50 fixes (2 in training)
        against 14-16 for another, and the student's only invalid held-out calls were that kind's Edits.
        """
        deck = self._decks.setdefault(id(seq), [])
        if not deck:
            deck.extend(self.rng.sample(range(len(seq)), len(seq)))
        return seq[deck.pop()]

    def tool_id(self) -> str:
        return "toolu_01" + "".join(self.rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789")
                                    for _ in range(22))

    def numbered(self, lines: list[str]) -> str:
        return "\n".join(f"{i:>6}\t{line}" for i, line in enumerate(lines, 1))

    def code(self, func: str, arg: str, body: list[str]) -> list[str]:
        return [
            "import logging",
            "",
            f"def {func}({arg}, rate=1.0, options=None):",
            f'    """{func.replace("_", " ").capitalize()} for the given {arg}."""',
            *body,
            "",
            f"def _check_{arg}({arg}):",
            f"    return all(x is not None for x in {arg})",
        ]

    # ----- kinds. Each returns (values for the prompt and narration templates, call groups,
    # final answer, reasoning signals); a group is a list of calls issued together.

    def compare(self):
        a, b = self.rng.sample(self.names.tables, 2)
        db, schema = self.pick(self.names.sqlite_dbs), self.pick(self.names.schemas)
        na, nb = self.rng.randint(20, 50000), self.rng.randint(20, 50000)
        stem, mod = self.pick(self.names.stems), self.pick(self.names.modules)
        v = dict(a=a, b=b, db=db, schema=schema)
        schema_text = self.numbered([
            f"CREATE TABLE {a} (", "    id INTEGER PRIMARY KEY,", "    created_at TEXT NOT NULL,", f"    {b[:-1]}_id INTEGER", ");",
            "", f"CREATE TABLE {b} (", "    id INTEGER PRIMARY KEY,", "    amount_cents INTEGER,", "    status TEXT", ");",
        ])
        grep_out = f"src/{mod}/{stem}.py:{self.rng.randint(10, 90)}:    INSERT INTO {a} (created_at) VALUES (?)\n" \
                   f"src/{mod}/queries.py:{self.rng.randint(10, 90)}:    SELECT * FROM {b} WHERE status = ?"
        groups = [
            [self.call("Read", {"file_path": schema}, schema_text)],
            [self.call("Grep", {"pattern": f"{a}|{b}", "path": "src", "output_mode": "content"}, grep_out)],
            [self.call("Bash", {"command": f'sqlite3 {db} "SELECT COUNT(*) FROM {a};"', "description": f"Count rows in {a}"}, str(na))],
            [self.call("Bash", {"command": f'sqlite3 {db} "SELECT COUNT(*) FROM {b};"', "description": f"Count rows in {b}"}, str(nb))],
        ]
        big, small, nbig, nsmall = (a, b, na, nb) if na >= nb else (b, a, nb, na)
        final = (
            f"{big} is the bigger table: it has {nbig:,} rows in {db}, while {small} has {nsmall:,}, a difference of "
            f"{nbig - nsmall:,} rows (about {nbig / max(nsmall, 1):.1f} times as many). According to {schema}, {a} "
            f"stores a creation timestamp and a reference to {b}, and {b} holds amounts and a status. In the code, {a} "
            f"is written in src/{mod}/{stem}.py and {b} is read in src/{mod}/queries.py, so the gap is expected if "
            f"rows are archived at different rates. If you need a breakdown by month or status, I can run that query too."
        )
        return v, groups, final, dict(pattern="linear", used_database=True, files_read=[schema])

    def fix_bug(self):
        mod, stem, func, arg = self.pick(self.names.modules), self.pick(self.names.stems), self.pick(self.names.funcs), self.pick(self.names.args)
        path = f"src/{mod}/{stem}.py"
        symptom, body, old, new, why = self.deal(BUGS)
        body, old, new = [line.format(arg=arg) for line in body], old.format(arg=arg), new.format(arg=arg)
        v = dict(path=path, func=func, symptom=symptom)
        test_path = f"tests/test_{stem}.py"
        passed = self.rng.randint(4, 40)
        groups = [
            [self.call("Read", {"file_path": path}, self.numbered(self.code(func, arg, body)))],
            [self.call("Edit", {"file_path": path, "old_string": old, "new_string": new},
                       f"The file {path} has been updated.")],
            [self.call("Bash", {"command": f"python -m pytest {test_path} -q", "description": "Run the tests"},
                       f"{'.' * min(passed, 30)}\n{passed} passed in {self.rng.uniform(0.05, 3):.2f}s")],
        ]
        final = (
            f"I fixed `{func}` in {path}. The problem was that {why}. I changed `{old.strip()}` to `{new.strip()}`, "
            f"which keeps the behaviour for normal input and fixes the failing case. I then ran {test_path} and all "
            f"{passed} tests pass. You may want to add a regression test for this exact case so it cannot come back "
            f"unnoticed in a later refactor."
        )
        return v, groups, final, dict(pattern="linear", files_read=[path], files_changed=[path])

    def investigate(self):
        mod, stem, func, arg, table = self.pick(self.names.modules), self.pick(self.names.stems), self.pick(self.names.funcs), self.pick(self.names.args), self.pick(self.names.tables)
        cmd = self.deal(FAIL_COMMANDS).format(stem=stem, mod=mod)
        err_t, pattern_t, why_t = self.deal(FAILURES)
        f = dict(func=func, mod=mod, stem=stem, table=table, arg=arg)
        err, pattern, why = err_t.format(**f), pattern_t.format(**f), why_t.format(**f)
        found = f"src/{mod}/{stem}.py"
        line = self.rng.randint(12, 120)
        traceback = (f"Traceback (most recent call last):\n  File \"src/{mod}/__init__.py\", line 3, in <module>\n"
                     f"    from .{stem} import {func}\n{err}")
        groups = [
            [self.call("Bash", {"command": cmd, "description": "Reproduce the failure"}, traceback,
                       success=False, error=f"Exit code 1\n{traceback}")],
            [self.call("Grep", {"pattern": pattern, "path": "src", "output_mode": "content", "-n": True},
                       f"{found}:{line}:{pattern}_v2(" if pattern.startswith("def") else f"{found}:{line}:    {pattern}")],
            [self.call("Read", {"file_path": found}, self.numbered(self.code(func + "_v2", arg, [f"    return list({arg})"])))],
        ]
        final = (
            f"`{cmd}` fails with `{err}`. The cause: {why}. The search for `{pattern}` led to {found} around line {line}, "
            f"and reading it confirms this. To fix it, either update the caller to the current name and signature or "
            f"restore a compatibility alias in {found}. I haven't changed anything yet; tell me which option you prefer "
            f"and I'll make the change and rerun the command."
        )
        return dict(cmd=cmd), groups, final, dict(
            pattern="exploratory", error_recovery=True, files_read=[found])

    def explore(self):
        mod = self.pick(self.names.modules)
        stems = self.rng.sample(self.names.stems, self.rng.randint(3, 6))
        files = [f"src/{mod}/__init__.py"] + [f"src/{mod}/{s}.py" for s in stems]
        first, second = files[1], files[2]
        funcs = self.rng.sample(self.names.funcs, 2)
        groups = [
            [self.call("Glob", {"pattern": f"src/{mod}/**/*.py"}, "\n".join(files))],
            [self.call("Read", {"file_path": first}, self.numbered(self.code(funcs[0], "items", ["    return list(items)"]))),
             self.call("Read", {"file_path": second}, self.numbered(self.code(funcs[1], "rows", ["    return rows[:10]"])))],
        ]
        final = (
            f"The {mod} package lives in src/{mod}/ and has {len(files)} modules. {first} is the entry point: its "
            f"`{funcs[0]}` function takes the incoming items, validates them with a small private helper and returns "
            f"a normalized list. {second} builds on that with `{funcs[1]}`, which works on rows and returns the first "
            f"page of results. The remaining files ({', '.join(files[3:]) or 'none'}) hold supporting code. A good "
            f"place to start reading is {first}, then follow the calls into {second}."
        )
        return dict(mod=mod), groups, final, dict(pattern="parallel", files_read=[first, second])

    def db_question(self):
        table = self.pick(self.names.tables)
        n = self.rng.randint(0, 250000)
        if self.rng.random() < 0.5:
            db = self.pick(self.names.sqlite_dbs)
            command, where = f'sqlite3 {db} "SELECT COUNT(*) FROM {table};"', db
        else:
            name = self.pick(self.names.pg_dbs)
            db = f"the {name} Postgres database"
            command, where = f'psql -d {name} -At -c "SELECT COUNT(*) FROM {table};"', f"the {name} database"
        groups = [[self.call("Bash", {"command": command, "description": f"Count {table}"}, str(n))]]
        final = (
            f"There are {n:,} rows in the {table} table of {where}. I counted them with a single `SELECT COUNT(*)` "
            f"query, so this includes every row, whatever its status or age; soft-deleted or archived {table}, if "
            f"the table keeps any, are part of this number. If you want only recent or active {table}, tell me the "
            f"column to filter on and I will run a narrower query."
        )
        return dict(table=table, db=db), groups, final, dict(pattern="linear", used_database=True)

    def write_file(self):
        name, task, noun = self.deal(SCRIPT_TASKS)
        folder = self.pick(self.names.script_folders)
        path = f"{folder}/{name}.py"
        content = "\n".join([
            '"""' + task[0].upper() + task[1:] + '."""', "", "import argparse", "", "",
            "def main() -> int:", f"    parser = argparse.ArgumentParser(description={task!r})",
            "    parser.add_argument('--dry-run', action='store_true')", "    args = parser.parse_args()",
            f"    {noun} = []", f"    print(f'processed {{len({noun})}} {noun}')", "    return 0", "", "",
            "if __name__ == '__main__':", "    raise SystemExit(main())", "",
        ])
        groups = [
            [self.call("Write", {"file_path": path, "content": content}, f"File created successfully at: {path}")],
            [self.call("Bash", {"command": f"python {path} --dry-run", "description": "Run the new script"},
                       f"processed 0 {noun}")],
        ]
        final = (
            f"I created {path}, a small command-line script that {task}. It uses argparse, supports a `--dry-run` "
            f"flag so you can see what it would do without changing anything, and returns a proper exit code. I ran "
            f"it with `--dry-run` and it printed `processed 0 {noun}`, which is what an empty run should show. Next "
            f"steps could be adding tests and wiring it into the Makefile."
        )
        return dict(path=path, task=task), groups, final, dict(
            pattern="linear", files_changed=[path])

    # ----- helpers

    def call(self, name, args, output, success=True, error=None) -> ToolCall:
        return ToolCall(tool_use_id=self.tool_id(), name=name, input=args, output=None if not success else output,
                        success=success, error=error, duration_ms=self.rng.randint(5, 4000))

    def prompt(self, kind: str, values: dict) -> str:
        return self.pick(PROMPTS[kind]).format(**values)

    def narration(self, kind: str, values: dict) -> list[str]:
        picked = [self.pick(options) for options in NARRATION[kind]]  # drawn either way: the task stream stays the same
        if self.phrasing is not None:
            picked = [self.phrasing.choice(options) for options in NARRATION[kind]]
        return [text.format(**values) for text in picked]


def make_trace(teacher: _Teacher, kind: str, session_id: str, prompt_index: int, started: datetime,
               project: str) -> Trace:
    values, groups, final, signals = getattr(teacher, kind)()
    prompt = teacher.prompt(kind, values)
    narration = teacher.narration(kind, values)

    calls: list[ToolCall] = []
    texts: list[TextStep] = []
    for g, group in enumerate(groups):
        texts.append(TextStep(text=narration[g], position=len(calls)))
        t = started + timedelta(seconds=2 + 3 * g)
        for call in group:
            call.parallel_group = g
            call.started_at = t
            calls.append(call)
    # As capture does it: the closing text is the final answer, kept in final_response only.

    sequence = [c.name for c in calls]
    prompt_id = f"prompt-{prompt_index}"
    return Trace(
        trace_id=make_trace_id(session_id, prompt_id),
        session_id=session_id,
        prompt_id=prompt_id,
        prompt=prompt,
        final_response=final,
        model="claude-sonnet-4-5",
        cwd=f"/home/dev/{project}",
        started_at=started,
        ended_at=started + timedelta(seconds=5 + 3 * len(groups)),
        complete=True,
        source="hook",
        tool_calls=calls,
        assistant_text=texts,
        tools_offered=TOOLS_OFFERED,
        usage={"input_tokens": 1200 + 400 * len(calls), "output_tokens": 150 + 60 * len(calls)},
        reasoning_signals=ReasoningSignals(
            tool_sequence=sequence,
            workflow=" → ".join(sequence),
            reasoning_steps=len(groups) + 1,
            exploration_depth="minimal" if len(calls) <= 2 else "moderate",
            multi_step_reasoning=len(groups) > 1,
            used_database=signals.get("used_database", False),
            files_read=signals.get("files_read", []),
            files_changed=signals.get("files_changed", []),
            explicit_plan=narration[0] if " then " in narration[0] else None,
            pattern=signals["pattern"],
            patterns=[signals["pattern"]],
            error_recovery=signals.get("error_recovery", False),
        ),
        quality=Quality(score=1.0, accepted=True, reasons=["scripted teacher"]),
        kind=kind,  # extra field (the schema keeps unknown keys): lets tests group by task kind
    )


def generate_corpus(n: int = 300, seed: int = 0, kinds: Optional[list[str]] = None,
                    phrasing_seed: Optional[int] = None, names: str = "fixed") -> list[Trace]:
    """`n` traces, deterministic for a seed; kinds cycle in a shuffled order so they stay balanced.

    Sessions hold 1 to 3 prompts (same project), each with a unique session id.

    `phrasing_seed` gives a twin corpus: the same prompts, trace ids, tool calls, results and
    answers as `generate_corpus(n, seed)`, but narration chosen independently among the same
    equivalent phrasings: what a second teacher, or a student that learned the teacher perfectly,
    would write. The indistinguishability tests use it as the "can't tell" reference.
    """
    rng = random.Random(seed)
    teacher = _Teacher(rng, random.Random(phrasing_seed) if phrasing_seed is not None else None, names)
    kinds = list(kinds or KINDS)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"Unknown kind(s) {sorted(unknown)}; choose from {list(KINDS)}")
    schedule: list[str] = []
    while len(schedule) < n:
        block = kinds[:]
        rng.shuffle(block)
        schedule += block
    schedule = schedule[:n]

    base = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
    traces: list[Trace] = []
    i = 0
    while i < n:
        session_id = f"{rng.getrandbits(128):032x}"
        session_id = f"{session_id[:8]}-{session_id[8:12]}-4{session_id[13:16]}-a{session_id[17:20]}-{session_id[20:]}"
        project = rng.choice(PROJECTS)
        started = base + timedelta(minutes=37 * i + rng.randint(0, 30))
        for p in range(min(rng.choice([1, 1, 2, 2, 3]), n - i)):
            traces.append(make_trace(teacher, schedule[i], session_id, p, started, project))
            started += timedelta(minutes=rng.randint(2, 9))
            i += 1
    return traces


def write_corpus_jsonl(path, n: int = 300, seed: int = 0) -> Path:
    """Write generate_corpus(n, seed) as a `capture-daemon export --format jsonl` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for trace in generate_corpus(n, seed):
            fh.write(trace.model_dump_json() + "\n")
    return path
