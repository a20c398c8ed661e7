"""Live capture and import of the same prompt are one trace, for hooks of every Claude Code
version (issue 12): older CLIs send no prompt_id (nor tool_use_id, in 2.0.0), so the daemon
resolves the prompt to its transcript row's uuid, the id an import gives it."""

from __future__ import annotations

from pathlib import Path

from capture_daemon.assemble import iso_to_ns
from capture_daemon.importer import import_paths, prepare_for_store
from capture_daemon.ingest import Ingestor, IngestSettings
from capture_daemon.schema import make_trace_id
from capture_daemon.store import TraceStore
from tests.spool_factory import write_event
from tests.test_import_shapes import LONG, SESSION, Session


def _old_hooks(spool: Path, transcript: Path, prompt_row: dict, commands: list[str], stop: bool = True) -> None:
    """The events Claude Code 2.0.0 sends for one prompt: no prompt_id, no tool_use_id."""
    ns = iso_to_ns(prompt_row["timestamp"]) - 5_000_000  # the hook runs just before the row is written
    common = {"session_id": SESSION, "cwd": "/p", "transcript_path": str(transcript), "permission_mode": "default"}
    write_event(spool, "UserPromptSubmit", dict(common, prompt=prompt_row["message"]["content"]), ns)
    for command in commands:
        ns += 1000
        write_event(spool, "PreToolUse", dict(common, tool_name="Bash", tool_input={"command": command}), ns)
        ns += 1000
        write_event(spool, "PostToolUse", dict(common, tool_name="Bash", tool_input={"command": command},
                                               tool_response={"stdout": "ok"}), ns)
    if stop:
        write_event(spool, "Stop", dict(common, stop_hook_active=False), ns + 1000)


def _ingest(spool: Path, store: TraceStore, tmp_path: Path) -> Ingestor:
    ingestor = Ingestor(store, spool, tmp_path / "quarantine", IngestSettings(settle_seconds=0))
    ingestor.scan()
    ingestor.finalize_ready(force=True)
    return ingestor


def test_old_hooks_and_import_give_one_trace_even_for_repeated_prompt_text(tmp_path):
    s = Session()
    first = s.user("continue")
    s.call("Bash", "toolu_1", command="make one")
    s.text("One done.")
    second = s.user("continue")  # the same words again: resolved by time, not text alone
    s.call("Bash", "toolu_2", command="make two")
    s.text(LONG)
    transcript = s.write(tmp_path / "projects" / "-p" / f"{SESSION}.jsonl")
    spool = tmp_path / "spool"
    _old_hooks(spool, transcript, first, ["make one"])
    _old_hooks(spool, transcript, second, ["make two"])
    with TraceStore.open(tmp_path / "live.db") as store:
        ingestor = _ingest(spool, store, tmp_path)
        assert not ingestor.errors and ingestor.quarantined_count == 0
        live = {t.trace_id: t for t in store.iter_traces()}
    assert set(live) == {make_trace_id(SESSION, first["uuid"]), make_trace_id(SESSION, second["uuid"])}
    assert [c.input["command"] for c in live[make_trace_id(SESSION, second["uuid"])].tool_calls] == ["make two"]
    with TraceStore.open(tmp_path / "live.db") as store:
        report = import_paths([tmp_path / "projects"], store, prepare_for_store)
    assert report.imported == 0 and report.skipped_existing == 2


def test_an_imported_incomplete_prompt_is_replaced_by_the_live_complete_one(tmp_path):
    s = Session()
    row = s.user("long job")
    s.call("Bash", "toolu_1", command="step 1")
    s.call("Bash", "toolu_2", command="step 2")
    s.text(LONG)
    transcript = tmp_path / "projects" / "-p" / f"{SESSION}.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.write_text("".join(__import__("json").dumps(r) + "\n" for r in s.rows[:3]))
    with TraceStore.open(tmp_path / "t.db") as store:
        import_paths([tmp_path / "projects"], store, prepare_for_store)
        [early] = list(store.iter_traces())
        assert early.complete is False
        s.write(transcript)  # the session finishes; its hooks reach the daemon
        _old_hooks(tmp_path / "spool", transcript, row, ["step 1", "step 2"])
        _ingest(tmp_path / "spool", store, tmp_path)
        [done] = list(store.iter_traces())
    assert done.trace_id == early.trace_id and done.complete and done.source == "hook"
    assert [c.input["command"] for c in done.tool_calls] == ["step 1", "step 2"] and done.final_response == LONG


def test_without_a_transcript_the_old_prompt_is_still_captured(tmp_path):
    s = Session()
    row = s.user("no transcript here")
    _old_hooks(tmp_path / "spool", tmp_path / "gone.jsonl", row, ["ls"])
    with TraceStore.open(tmp_path / "t.db") as store:
        ingestor = _ingest(tmp_path / "spool", store, tmp_path)
        [trace] = list(store.iter_traces())
    assert ingestor.quarantined_count == 0
    assert trace.prompt == "no transcript here" and trace.prompt_id.startswith("pending:")
    # 2.0.0's hooks carry no tool_use_id: each Post is paired with its Pre.
    [call] = trace.tool_calls
    assert call.name == "Bash" and call.input == {"command": "ls"} and call.output == "ok" and call.success
    assert call.tool_use_id.startswith("hook-")


def test_a_prompt_with_an_image_resolves_to_its_row_by_time(tmp_path):
    """The hook's prompt is the text alone; the row also holds the pasted image."""
    s = Session()
    row = s.user([{"type": "text", "text": "what is in this picture"},
                  {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}])
    s.text("A diagram.")
    transcript = s.write(tmp_path / "projects" / "-p" / f"{SESSION}.jsonl")
    hook_row = dict(row, message={"role": "user", "content": "what is in this picture"})
    _old_hooks(tmp_path / "spool", transcript, hook_row, [])
    with TraceStore.open(tmp_path / "t.db") as store:
        _ingest(tmp_path / "spool", store, tmp_path)
        [trace] = list(store.iter_traces())
    assert trace.trace_id == make_trace_id(SESSION, row["uuid"]) and trace.final_response == "A diagram."
