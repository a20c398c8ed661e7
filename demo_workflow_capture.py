"""What a captured workflow looks like, and what the model will learn from it.

    python demo_workflow_capture.py          # builds a sample trace in memory and explains it
    python demo_workflow_capture.py --save   # ... and stores it ($UNDERSTUDY_HOME/traces.db)

It prints the trace (prompt, narration, tool calls, answer), the reasoning signals and
quality verdict understudy computes for it, a short trace the filter rejects for
contrast, and, when the training extra is installed, the chat-formatted training example
the trainer builds from it. Nothing is stored unless you pass --save: demo traces should
not end up in your training data by accident.
"""

from __future__ import annotations

import json
import sys
import textwrap

from capture_daemon import manual
from capture_daemon.quality import analyze
from claude_capture_hook import describe

PROMPT = "How many equipment tables are in the database, and which one is the largest?"
ANSWER = (
    "There are 357 equipment tables in the `public` schema (all named `equipment_*`). "
    "The largest is `equipment_readings` at 4.2 GB, about 38% of the schema's total size; it holds "
    "the raw sensor readings, one row per sensor per minute. The next largest are "
    "`equipment_events` (1.1 GB) and `equipment_maintenance` (640 MB). If storage is the concern, "
    "`equipment_readings` is the one worth partitioning by month."
)
NARRATION = [
    (0, "I'll start by listing the tables, then count the equipment ones, and finally compare their sizes."),
    (2, "357 equipment tables. Now their sizes."),
    (3, "That didn't work: I misspelled the view. Let me fix that and use pg_total_relation_size, "
        "which counts indexes too."),
]
CALLS = [
    ("Bash", {"command": "psql -c '\\dt'", "description": "List tables"},
     "                List of relations\n Schema |        Name         | Type  | Owner\n"
     "--------+---------------------+-------+-------\n public | equipment_events    | table | app\n ..."),
    ("Bash", {"command": "psql -tc \"SELECT count(*) FROM information_schema.tables "
                         "WHERE table_name LIKE 'equipment_%'\""}, "357"),
    ("Bash", {"command": "psql -c \"SELECT relname, pg_size_pretty(pg_relation_size(relid)) FROM pg_stat_user_tabels\""},
     "ERROR:  relation \"pg_stat_user_tabels\" does not exist", False),
    ("Bash", {"command": "psql -c \"SELECT relname, pg_size_pretty(pg_total_relation_size(relid)) AS size "
                         "FROM pg_stat_user_tables WHERE relname LIKE 'equipment_%' "
                         "ORDER BY pg_total_relation_size(relid) DESC LIMIT 3\""},
     "       relname         |  size\n-----------------------+--------\n equipment_readings    | 4200 MB\n"
     " equipment_events      | 1100 MB\n equipment_maintenance | 640 MB"),
]


def _section(title: str) -> None:
    print(f"\n{'=' * 78}\n{title}\n{'=' * 78}")


def _short(text: str, width: int = 100) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def show_trace(trace) -> None:
    print(f"prompt: {trace.prompt}\n")
    texts = sorted(trace.assistant_text, key=lambda t: t.position)
    for i, call in enumerate(trace.tool_calls):
        for t in texts:
            if t.position == i:
                print(textwrap.fill(f"  Claude: {t.text}", 100, subsequent_indent="          "))
        status = "ok" if call.success else "FAILED"
        print(f"  [{i + 1}] {call.name}({_short(json.dumps(call.input, ensure_ascii=False), 80)})  -> {status}")
        print(f"      {_short(call.output or call.error or '', 90)}")
    print("\n" + textwrap.fill(f"answer: {trace.final_response}", 100, subsequent_indent="        "))


def show_training_example(trace) -> None:
    try:
        from trainer.dataset import DatasetConfig, trace_to_example
    except ImportError as exc:
        print(f"(the trainer is not importable here: {exc}; install it with `pip install '.[train]'`)")
        return
    example = trace_to_example(trace, DatasetConfig())
    for m in example["messages"]:
        print(f"--- {m['role']}")
        if m.get("content"):
            print(textwrap.indent(_short(m["content"], 300) if m["role"] != "assistant" else m["content"], "    "))
        for c in m.get("tool_calls") or []:
            print(f"    <tool_call> {c['function']['name']} {_short(c['function']['arguments'], 110)}")
    try:
        from trainer.chat_template import render

        text = render(example["messages"], example["tools"])
    except Exception as exc:  # transformers missing, or no tools recorded
        print(f"\n(rendering with the chat template needs the training extra: {type(exc).__name__})")
        return
    print(f"\nRendered with understudy's chat template: {len(text)} characters; the loss is on the "
          "assistant turns only (narration, tool calls, answer).")


def main(argv: list[str]) -> int:
    save = "--save" in argv
    trace = analyze(manual.build_trace(PROMPT, ANSWER, CALLS, narration=NARRATION, cwd="/srv/plant"))

    _section("1. The capture: what Claude did, in order")
    show_trace(trace)

    _section("2. Reasoning signals and quality verdict (computed automatically)")
    print(describe(trace))

    _section("3. For contrast: a capture the filter rejects")
    short = analyze(manual.build_trace("Is the database up?", "Yes.", [("Bash", "pg_isready", "accepting connections")]))
    print(describe(short))

    _section("4. What the model learns: the chat-formatted training example")
    show_training_example(trace)

    if save:
        stored = manual.save(trace)
        print(f"\nStored as {stored.trace_id} ({'accepted' if stored.quality.accepted else 'rejected'}).")
    else:
        print("\n(Nothing was stored; run with --save to add this sample to your store.)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
