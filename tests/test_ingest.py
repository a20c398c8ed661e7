"""The ingest engine against real spool files and a real SQLite store in a temp data dir:
crash safety, replay without duplicates, quarantine, late events, idle finalisation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from capture_daemon import paths
from capture_daemon.ingest import IngestSettings, Ingestor
from capture_daemon.schema import make_trace_id
from capture_daemon.store import TraceStore
from tests.spool_factory import write_event, write_session


def _ingestor(store, **settings) -> Ingestor:
    return Ingestor(store, paths.spool_dir(), paths.quarantine_dir(), IngestSettings(settle_seconds=0, **settings))


def _session(n: int, **kw):
    return write_session(paths.spool_dir(), f"sess-{n:04d}", f"prompt-{n:04d}", f"question {n}",
                         [("Bash", {"command": f"echo {n}"}, str(n)), ("Read", {"file_path": f"/f{n}"}, "x")],
                         f"answer {n}", **kw)


def test_complete_prompt_becomes_one_trace_and_spool_empties(understudy_home):
    _session(1)
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        assert ingestor.scan() == 6
        assert ingestor.finalize_ready() == 1
        [trace] = list(store.iter_traces())
    assert trace.trace_id == make_trace_id("sess-0001", "prompt-0001")
    assert [c.name for c in trace.tool_calls] == ["Bash", "Read"]
    assert trace.tool_calls[0].output == "1" and trace.final_response == "answer 1" and trace.complete
    assert not list(paths.spool_dir().glob("*.event"))


def test_crash_between_commit_and_delete_replays_without_duplicates(understudy_home, monkeypatch):
    files = _session(2)
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        # Simulate dying right after COMMIT: the spool files are never deleted.
        with monkeypatch.context() as patch:
            patch.setattr("capture_daemon.ingest._unlink", lambda path: None)
            ingestor.finalize_ready()
    assert all(f.exists() for f in files)
    with TraceStore.open() as store:  # the restarted daemon
        ingestor = _ingestor(store)
        ingestor.scan()
        assert ingestor.finalize_ready() == 0
        assert store.count() == 1
        assert [c.name for c in next(store.iter_traces()).tool_calls] == ["Bash", "Read"]
    assert not any(f.exists() for f in files)


def test_crash_during_partial_delete_keeps_the_full_trace(understudy_home, monkeypatch):
    files = _session(3)
    deleted = []

    def die_after_three(path):
        if len(deleted) == 3:
            raise KeyboardInterrupt("killed")
        deleted.append(path)
        os.unlink(path)

    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
            patch.setattr("capture_daemon.ingest._unlink", die_after_three)
            ingestor.finalize_ready()
    assert sum(f.exists() for f in files) == 3
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        ingestor.finalize_ready()
        [trace] = list(store.iter_traces())
    # The leftover files (Post Read, Stop, ...) did not rebuild a truncated trace.
    assert [c.name for c in trace.tool_calls] == ["Bash", "Read"] and trace.complete


def test_corrupt_files_are_quarantined_and_the_rest_flows(understudy_home):
    spool = paths.ensure(paths.spool_dir())
    (spool / "00000000000000000001-0000001-PreToolUse.event").write_bytes(b"not a header")
    (spool / "00000000000000000002-0000001-PreToolUse.event").write_bytes(b'{"v":1,"event":"PreToolUse"}\n{"no": "session"}')
    (spool / "00000000000000000003-0000001-Stop.event").write_bytes(b'{"v":1,"event":"Stop"}\n\xff\xfe garbage')
    _session(4)
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        assert ingestor.finalize_ready() == 1
    quarantined = sorted(p.name for p in paths.quarantine_dir().glob("*.event"))
    assert len(quarantined) == 3
    reasons = [p.read_text() for p in paths.quarantine_dir().glob("*.reason")]
    assert any("no session_id" in r for r in reasons) and any("not JSON" in r for r in reasons)
    assert not list(spool.glob("*.event"))


def test_lone_surrogates_and_odd_session_ids_are_stored_safely(understudy_home):
    spool = paths.spool_dir()
    write_event(spool, "UserPromptSubmit", {"session_id": "../../x", "prompt_id": "p", "prompt": "caf\ud800e"})
    write_event(spool, "Stop", {"session_id": "../../x", "prompt_id": "p", "last_assistant_message": "ok"})
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        ingestor.finalize_ready()
        [trace] = list(store.iter_traces())
    assert trace.session_id == "../../x" and trace.prompt.startswith("caf")
    assert not (understudy_home.parent / "x").exists()


def test_prompt_that_never_stops_is_finalised_incomplete_after_idle(understudy_home):
    clock = [time.time_ns()]
    _session(5, stop=False)
    with TraceStore.open() as store:
        ingestor = Ingestor(store, paths.spool_dir(), paths.quarantine_dir(),
                            IngestSettings(settle_seconds=0, idle_timeout_seconds=60), clock=lambda: clock[0])
        ingestor.scan()
        assert ingestor.finalize_ready() == 0
        clock[0] += int(61e9)
        assert ingestor.finalize_ready() == 1
        [trace] = list(store.iter_traces())
    assert not trace.complete and trace.incomplete_reason == "idle_timeout"
    assert len(trace.tool_calls) == 2


def test_late_event_reopens_and_rebuilds_the_stored_trace(understudy_home):
    _session(6)
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        ingestor.finalize_ready()
        # A subagent's call arrives after the trace was committed.
        write_event(paths.spool_dir(), "PreToolUse", {"session_id": "sess-0006", "prompt_id": "prompt-0006",
                                                      "agent_id": "a1", "agent_type": "Explore", "tool_name": "Grep",
                                                      "tool_input": {"pattern": "x"}, "tool_use_id": "late"})
        write_event(paths.spool_dir(), "PostToolUse", {"session_id": "sess-0006", "prompt_id": "prompt-0006",
                                                       "agent_id": "a1", "tool_name": "Grep", "tool_input": {"pattern": "x"},
                                                       "tool_use_id": "late", "tool_response": "found"})
        ingestor.scan()
        ingestor.finalize_ready()
        assert store.count() == 1
        [trace] = list(store.iter_traces())
    assert [(c.name, c.agent_id) for c in trace.tool_calls] == [("Bash", None), ("Read", None), ("Grep", "a1")]
    assert trace.reasoning_signals.tool_sequence == ["Bash", "Read"]


def test_daemon_killed_mid_ingest_loses_and_doubles_nothing(understudy_home):
    """kill -9 the real daemon process while it ingests hundreds of prompts, restart it."""
    n = 300
    for i in range(n):
        _session(100 + i)
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "capture_daemon.cli", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if paths.store_path().exists():
            with TraceStore.open() as store:
                if store.count() > 0:
                    break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with TraceStore.open() as store:
        committed_before = store.count()
    assert committed_before < n, "the kill should land mid-ingest; make the batch bigger if this fails"
    subprocess.run([sys.executable, "-m", "capture_daemon.cli", "start"], env=env, check=True, timeout=60)
    try:
        deadline = time.monotonic() + 120
        while list(paths.spool_dir().glob("*.event")) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        subprocess.run([sys.executable, "-m", "capture_daemon.cli", "stop"], env=env, check=True, timeout=60)
    with TraceStore.open() as store:
        traces = list(store.iter_traces())
    assert len(traces) == n
    assert len({t.trace_id for t in traces}) == n
    assert all(t.complete and [c.name for c in t.tool_calls] == ["Bash", "Read"] for t in traces)
    assert sorted(t.prompt for t in traces) == sorted(f"question {100 + i}" for i in range(n))


def test_status_json_reports_the_contract_fields(understudy_home):
    _session(7)
    spool = paths.spool_dir()
    (spool / "00000000000000000001-0000001-Stop.event").write_bytes(b"junk")
    out = subprocess.run([sys.executable, "-m", "capture_daemon.cli", "status", "--json"], capture_output=True,
                         text=True, check=True).stdout
    report = json.loads(out)
    assert report["daemon"] == {"running": False, "pid": None}
    assert report["spool"]["pending_events"] == 7  # 6 events + the junk file
    assert report["traces"]["total"] == 0
    assert isinstance(report["errors"], list)


def test_excluded_projects_are_dropped_at_ingest(understudy_home):
    paths.ensure(understudy_home)
    paths.config_path().write_text('[capture]\nexclude_projects = ["/home/dev/secret*"]\n')
    from capture_daemon.daemon import load_settings

    settings = load_settings()
    settings.settle_seconds = 0
    _session(8, cwd="/home/dev/secret-client/repo")
    _session(9, cwd="/home/dev/project")
    with TraceStore.open() as store:
        ingestor = Ingestor(store, paths.spool_dir(), paths.quarantine_dir(), settings)
        ingestor.scan()
        ingestor.finalize_ready()
        assert [t.prompt for t in store.iter_traces()] == ["question 9"]
    assert ingestor.excluded_count == 6
    assert not list(paths.spool_dir().glob("*.event"))


def test_a_trace_that_fails_to_build_is_retried_with_backoff_then_set_aside(understudy_home):
    """One trace's failure never holds up the others; it is retried on a backoff (not every
    pass), set aside in quarantine after max_attempts, and the reason names no payload value."""
    from capture_daemon.quality import analyze

    secret_prompt = "question 2 password=hunter2hunter2"
    write_session(paths.spool_dir(), "sess-bad", "prompt-bad", secret_prompt, [("Bash", {"command": "ls"}, "x")], "a")
    _session(1)
    calls = []

    def analyze_or_fail(trace):
        calls.append(trace.prompt_id)
        if trace.prompt_id == "prompt-bad":
            raise ValueError(f"cannot handle {trace.prompt!r}")  # a message quoting captured text
        return analyze(trace)

    clock = [time.time_ns()]
    with TraceStore.open() as store:
        ingestor = Ingestor(store, paths.spool_dir(), paths.quarantine_dir(), IngestSettings(settle_seconds=0),
                            analyze=analyze_or_fail, clock=lambda: clock[0])
        ingestor.scan()
        assert ingestor.finalize_ready() == 1  # the good one commits despite the bad one
        assert [t.prompt_id for t in store.iter_traces()] == ["prompt-0001"]
        for _ in range(5):  # passes within the backoff do not retry it
            assert ingestor.finalize_ready() == 0
        assert calls.count("prompt-bad") == 1
        [stuck] = ingestor.stuck()
        assert stuck["attempts"] == 1 and "building failed: ValueError" in stuck["reason"]
        for attempt in range(2, 5):
            clock[0] += int(301e9)
            ingestor.finalize_ready()
            assert calls.count("prompt-bad") == attempt
        assert ingestor.stuck() == [] and not ingestor.open
    quarantined = sorted(paths.quarantine_dir().glob("*.event"))
    assert len(quarantined) == 4 and not list(paths.spool_dir().glob("*.event"))
    reasons = "".join(p.read_text() for p in paths.quarantine_dir().glob("*.reason"))
    assert "set aside after 4 attempts" in reasons
    everything = reasons + "\n".join(ingestor.errors) + "".join(p.read_text(errors="replace") for p in quarantined)
    assert "hunter2hunter2" not in everything


def test_a_trace_that_fails_to_store_does_not_roll_back_the_batch(understudy_home, monkeypatch):
    _session(1)
    _session(2)
    real_put = TraceStore.put

    def put(self, trace, *args, **kwargs):
        if trace.prompt_id == "prompt-0002":
            raise TypeError("unserializable")
        return real_put(self, trace, *args, **kwargs)

    monkeypatch.setattr(TraceStore, "put", put)
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        assert ingestor.finalize_ready() == 1
        assert [t.prompt_id for t in store.iter_traces()] == ["prompt-0001"]
        assert "storing failed: TypeError" in ingestor.stuck()[0]["reason"]
        # Its own files wait in the spool; the committed trace's are gone.
        assert len(list(paths.spool_dir().glob("*.event"))) == 6


def test_quarantine_retention_and_interrupted_hook_writes(understudy_home):
    from capture_daemon.loop import purge_quarantine, set_aside_stale_tmp

    spool = paths.ensure(paths.spool_dir())
    (spool / "00000000000000000001-0000001-Stop.event").write_bytes(b"garbage token=ghp_" + b"a1B2" * 9)
    with TraceStore.open() as store:
        _ingestor(store).scan()
    [old] = paths.quarantine_dir().glob("*.event")
    assert b"ghp_" + b"a1B2" * 9 not in old.read_bytes()  # redacted on the way in
    tmp = paths.ensure(spool / "tmp")
    (tmp / "00000000000000000002-0000002-PreToolUse.event").write_bytes(b'{"v":1}\n{"session_id": "s", "pass')
    assert set_aside_stale_tmp(time.time()) == 0  # a hook may still be writing it
    assert set_aside_stale_tmp(time.time() + 7200) == 1 and not list(tmp.iterdir())
    assert len(list(paths.quarantine_dir().glob("*.event"))) == 2
    assert purge_quarantine(7, time.time() + 6 * 86400) == 0
    assert purge_quarantine(7, time.time() + 8 * 86400) == 2
    assert not list(paths.quarantine_dir().iterdir())


def test_a_bad_event_of_an_excluded_project_is_dropped_not_quarantined(understudy_home):
    settings = IngestSettings(settle_seconds=0, is_excluded=lambda cwd: cwd.startswith("/secret"))
    write_event(paths.spool_dir(), "Stop", {"session_id": "s", "prompt_id": "p", "cwd": "/secret/client",
                                            "background_tasks": "not a list"})
    with TraceStore.open() as store:
        ingestor = Ingestor(store, paths.spool_dir(), paths.quarantine_dir(), settings)
        ingestor.scan()
        assert ingestor.excluded_count == 1
    assert not paths.quarantine_dir().exists() or not list(paths.quarantine_dir().iterdir())
    assert not list(paths.spool_dir().glob("*.event"))  # no stand-in either


@pytest.mark.parametrize("compact", [True, False], ids=["compact", "spaced"])
def test_a_quarantined_event_keeps_no_secret_that_its_trace_would_not(understudy_home, compact):
    """An event set aside whole (here: one field of the wrong type) is redacted field by field,
    as ingest redacts it. Read as one text, JSON's escapes (`\\"`, `\\n`) and Claude Code's compact
    layout hid a password piped to `sudo -S`, a Dockerfile's `ENV API_TOKEN x`, a k8s env entry."""
    from tests.secret_corpus import SECRET_CASES

    separators = (",", ":") if compact else (", ", ": ")
    header = json.dumps({"v": 1, "event": "PostToolUse", "received_ns": 1, "bytes": 1}).encode()
    spool = paths.ensure(paths.spool_dir())
    for n, case in enumerate(SECRET_CASES):
        payload = {"session_id": "s", "prompt_id": "p", "hook_event_name": "PostToolUse", "tool_name": "Bash",
                   "tool_input": {"command": case.text}, "tool_response": {"stdout": case.text, "stderr": ""},
                   "duration_ms": "soon"}
        body = json.dumps(payload, separators=separators, ensure_ascii=False).encode()
        (spool / f"{n + 1:020d}-0000001-PostToolUse.event").write_bytes(header + b"\n" + body)
    with TraceStore.open() as store:
        _ingestor(store).scan()
    quarantined = {p.name: p.read_text() for p in paths.quarantine_dir().glob("*.event")}
    assert len(quarantined) == len(SECRET_CASES)
    leaked = [case.id for n, case in enumerate(SECRET_CASES)
              if any(s in quarantined[f"{n + 1:020d}-0000001-PostToolUse.event"] for s in case.secrets)]
    assert leaked == []
    # Still a spool file: `quarantine retry` reads it as the event it was.
    first = quarantined[f"{1:020d}-0000001-PostToolUse.event"]
    assert json.loads(first.partition("\n")[2])["tool_name"] == "Bash"


def test_a_quarantined_event_loses_what_a_secret_printer_printed(understudy_home):
    """`pass show` printed a bare password: the command, not the text, says it is one, and the
    quarantined copy of a bad event must drop it as its trace would (secret_output.py)."""
    password = "Qm7-horse-Battery-staple"
    header = json.dumps({"v": 1, "event": "PostToolUse", "received_ns": 1, "bytes": 1}).encode()
    payload = {"session_id": "s", "prompt_id": "p", "hook_event_name": "PostToolUse", "tool_name": "Bash",
               "tool_input": {"command": "pass show deploy/db"}, "tool_response": {"stdout": password, "stderr": ""},
               "duration_ms": "soon"}
    spool = paths.ensure(paths.spool_dir())
    (spool / f"{1:020d}-0000001-PostToolUse.event").write_bytes(header + b"\n" + json.dumps(payload).encode())
    with TraceStore.open() as store:
        _ingestor(store).scan()
    [copy] = paths.quarantine_dir().glob("*.event")
    text = copy.read_text()
    assert password not in text
    assert json.loads(text.partition("\n")[2])["tool_response"]["stdout"] == "[REDACTED:command-output]"


@pytest.mark.parametrize("compact", [True, False], ids=["compact", "spaced"])
def test_a_payload_cut_short_keeps_no_secret_its_structure_shows(understudy_home, compact):
    """A hook killed mid-write leaves JSON cut short: not parseable, so it was redacted as text
    alone, and a Kubernetes env entry's name and value, a Python keyword in an escaped command,
    a pgpass row... came through (17 of the corpus's cases). It is now closed, parsed and
    redacted field by field, each changed string replaced where it stands, the cut kept."""
    from tests.secret_corpus import SECRET_CASES

    separators = (",", ":") if compact else (", ", ": ")
    header = json.dumps({"v": 1, "event": "PostToolUse", "received_ns": 1, "bytes": 1}).encode()
    spool = paths.ensure(paths.spool_dir())
    for n, case in enumerate(SECRET_CASES):
        payload = {"session_id": "s", "prompt_id": "p", "hook_event_name": "PostToolUse", "tool_name": "Bash",
                   "tool_input": {"command": case.text}, "tool_response": {"stdout": case.text, "stderr": "", "interrupted": False}}
        body = json.dumps(payload, separators=separators, ensure_ascii=False).encode()
        # Cut inside the last value (`"interrupted": fa`): nothing of any secret is cut.
        (spool / f"{n + 1:020d}-0000001-PostToolUse.event").write_bytes(header + b"\n" + body[:-4])
    with TraceStore.open() as store:
        _ingestor(store).scan()
    quarantined = {p.name: p.read_bytes() for p in paths.quarantine_dir().glob("*.event")}
    assert len(quarantined) == len(SECRET_CASES)
    leaked = [case.id for n, case in enumerate(SECRET_CASES)
              if any(s.encode() in quarantined[f"{n + 1:020d}-0000001-PostToolUse.event"] for s in case.secrets)]
    assert leaked == []
    first = quarantined[f"{1:020d}-0000001-PostToolUse.event"].partition(b"\n")[2]
    with pytest.raises(ValueError):
        json.loads(first)  # still the payload cut short it was, not a repaired one


def test_a_secret_found_whole_in_one_field_goes_from_the_field_the_cut_ran_through(understudy_home):
    header = json.dumps({"v": 1, "event": "PostToolUse", "received_ns": 1, "bytes": 1}).encode()
    command = "echo 'Qm7-horse-Battery-staple9' | sudo -S systemctl restart nginx"
    payload = {"session_id": "s", "hook_event_name": "PostToolUse", "tool_name": "Bash",
               "tool_input": {"command": command}, "tool_response": {"stdout": command, "stderr": ""}}
    body = json.dumps(payload, separators=(",", ":")).encode()
    cut = body[: body.rindex(b"| sudo") + 4]  # the output's copy loses `sudo -S`, which made it a secret
    spool = paths.ensure(paths.spool_dir())
    (spool / f"{1:020d}-0000001-PostToolUse.event").write_bytes(header + b"\n" + cut)
    with TraceStore.open() as store:
        _ingestor(store).scan()
    [copy] = paths.quarantine_dir().glob("*.event")
    data = copy.read_bytes()
    assert b"Qm7-horse-Battery-staple9" not in data
    assert data.rstrip().endswith(b"| su")  # still cut where it was cut


class _Killed(BaseException):
    """The process dying at this point (SIGKILL, power loss): nothing after it runs."""


def test_a_crash_while_setting_a_bad_event_aside_keeps_its_loss_on_the_trace(understudy_home, monkeypatch):
    """A PostToolUse of the wrong shape is set aside and a stand-in spooled so its trace records
    the loss. Killed between the two, the loss record was gone for good (the original already
    quarantined, the stand-in never written): the trace looked whole. Killed at either step now,
    the restarted daemon's trace records the loss exactly once."""
    spool = paths.spool_dir()
    common = {"session_id": "s-crash", "prompt_id": "p-crash", "cwd": "/home/dev/project",
              "transcript_path": "/nonexistent/s-crash.jsonl"}
    write_event(spool, "UserPromptSubmit", dict(common, prompt="list the files"))
    call = dict(common, tool_name="Bash", tool_use_id="toolu_1", tool_input={"command": "ls"})
    write_event(spool, "PreToolUse", call)
    write_event(spool, "PostToolUse", dict(call, tool_input="not an object", tool_response={"stdout": "a.py"}))
    write_event(spool, "Stop", dict(common, last_assistant_message="Listed the files.", background_tasks=[]))

    def killed(*_args, **_kwargs):
        raise _Killed

    with TraceStore.open() as store:
        with monkeypatch.context() as patch, pytest.raises(_Killed):
            patch.setattr(Ingestor, "_quarantine", killed)
            _ingestor(store).scan()
        ingestor = _ingestor(store)  # the restarted daemon
        ingestor.scan()
        ingestor.scan()  # the stand-in it spooled
        assert ingestor.finalize_ready(force=True) == 1
        [trace] = list(store.iter_traces())
    assert [(loss.event, loss.tool_use_id) for loss in trace.capture_losses] == [("PostToolUse", "toolu_1")]
    assert not trace.quality.accepted


def _excluding(store, **settings) -> Ingestor:
    from capture_daemon.config import CaptureSettings

    rule = CaptureSettings(exclude_projects=["/work/secret", "/work/proj/private"]).is_excluded
    return _ingestor(store, is_excluded=rule, **settings)


def _prompt(session: str, prompt: str, cwds: list[str], stop: bool = True) -> None:
    """A prompt whose events come from `cwds` in turn: its prompt, then a Bash call per later cwd."""
    spool = paths.spool_dir()
    common = {"session_id": session, "prompt_id": prompt, "transcript_path": f"/nonexistent/{session}.jsonl"}
    write_event(spool, "UserPromptSubmit", dict(common, cwd=cwds[0], prompt=f"look around {prompt}"))
    for n, cwd in enumerate(cwds[1:]):
        call = dict(common, cwd=cwd, tool_name="Bash", tool_use_id=f"toolu_{prompt}_{n}", tool_input={"command": "cat notes"})
        write_event(spool, "PreToolUse", call)
        write_event(spool, "PostToolUse", dict(call, tool_response={"stdout": f"notes of {cwd}", "stderr": ""}))
    if stop:
        write_event(spool, "Stop", dict(common, cwd=cwds[-1], last_assistant_message="Looked around.", background_tasks=[]))


def test_a_prompt_that_touches_an_excluded_project_is_dropped_whole(understudy_home):
    """exclude_projects was judged per event: a session started in an excluded project that
    `cd`s out stored its prompt (built from the transcript, excluded output and all), and one
    that `cd`s into an excluded folder lost the rest of its prompt, Stop included, and stored the
    excluded text anyway. Now the prompt is judged whole, and a session that started in an
    excluded project is excluded whole, across restarts."""
    spool = paths.spool_dir()
    write_event(spool, "SessionStart", {"session_id": "s-out", "cwd": "/work/secret", "source": "startup",
                                        "transcript_path": "/nonexistent/s-out.jsonl"})
    _prompt("s-out", "p-out", ["/work/secret", "/work/other"])
    _prompt("s-out", "p-out-later", ["/work/other", "/work/other"])
    _prompt("s-in", "p-in", ["/work/proj", "/work/proj", "/work/proj/private", "/work/proj"])
    _prompt("s-in", "p-clean", ["/work/proj", "/work/proj"])
    with TraceStore.open() as store:
        ingestor = _excluding(store)
        ingestor.scan()
        ingestor.finalize_ready(force=True)
        assert [t.prompt_id for t in store.iter_traces()] == ["p-clean"]
        assert ingestor.excluded_count > 0 and not list(spool.glob("*.event"))
        # Restarted: a later prompt of the session that started in the excluded project.
        _prompt("s-out", "p-after-restart", ["/work/other", "/work/other"])
        ingestor = _excluding(store)
        ingestor.scan()
        ingestor.finalize_ready(force=True)
        assert [t.prompt_id for t in store.iter_traces()] == ["p-clean"]
        dump = "".join(t.model_dump_json() for t in store.iter_traces())
    assert "/work/secret" not in dump and "private" not in dump
    assert quarantine_files() == []


def test_an_excluded_event_after_its_prompt_was_stored_drops_the_trace_and_later_ones(understudy_home):
    spool = paths.spool_dir()
    _prompt("s-late", "p-late", ["/work/proj", "/work/proj"])
    with TraceStore.open() as store:
        ingestor = _excluding(store)
        ingestor.scan()
        assert ingestor.finalize_ready(force=True) == 1
        late = {"session_id": "s-late", "prompt_id": "p-late", "cwd": "/work/proj/private", "tool_name": "Bash",
                "tool_use_id": "toolu_late", "tool_input": {"command": "cat plan.md"},
                "transcript_path": "/nonexistent/s-late.jsonl"}
        write_event(spool, "PostToolUse", dict(late, tool_response={"stdout": "merger plan", "stderr": ""}))
        ingestor.scan()
        ingestor.finalize_ready(force=True)
        assert list(store.iter_traces()) == []
        # One more event of that prompt, from a folder that is not excluded, stays dropped.
        write_event(spool, "PostToolUse", dict(late, cwd="/work/proj", tool_use_id="toolu_later",
                                               tool_response={"stdout": "x", "stderr": ""}))
        ingestor = _excluding(store)
        ingestor.scan()
        ingestor.finalize_ready(force=True)
        assert list(store.iter_traces()) == []


def quarantine_files() -> list:
    folder = paths.quarantine_dir()
    return sorted(folder.iterdir()) if folder.exists() else []


def test_an_excluded_event_with_nowhere_to_go_is_dropped_not_set_aside(understudy_home):
    """An older client's event (no prompt_id) whose session has no open prompt is quarantined,
    redacted, for days; from an excluded project it is dropped like the rest of that project."""
    spool = paths.spool_dir()
    write_event(spool, "PostToolUse", {"session_id": "s-old", "cwd": "/work/secret", "tool_name": "Bash",
                                       "tool_use_id": "toolu_old", "tool_input": {"command": "cat plan"},
                                       "tool_response": {"stdout": "SECRET PLAN", "stderr": ""},
                                       "transcript_path": "/nonexistent/s-old.jsonl"})
    with TraceStore.open() as store:
        ingestor = _excluding(store)
        ingestor.scan()
        assert ingestor.excluded_count == 1 and ingestor.quarantined_count == 0
    assert quarantine_files() == [] and not list(spool.glob("*.event"))


def _hook_event(n: int, event: str, at: int, **payload) -> "SpoolEvent":
    from capture_daemon.spool import SpoolEvent

    return SpoolEvent(f"{at:020d}-{n:04d}-{event}.event", event, at, dict(payload, session_id="s", prompt_id="p"), {})


def test_without_a_transcript_a_message_typed_mid_turn_is_kept_only_where_it_was_delivered():
    """The interactive CLI (2.1.328) sends a UserPromptSubmit under the running prompt's id
    when a message is typed mid-turn. Typed while a call runs, it is delivered with that call's
    result; typed after the last call ended, the CLI runs it as the next prompt instead (seen
    through the TUI): kept in the first case, never in the second."""
    from capture_daemon.assemble import build_trace

    bash = dict(tool_name="Bash", tool_input={"command": "sleep 6"}, tool_use_id="toolu_1")
    events = [_hook_event(1, "UserPromptSubmit", 1_000, prompt="tui slow"),
              _hook_event(2, "PreToolUse", 2_000, **bash),
              _hook_event(3, "UserPromptSubmit", 3_000, prompt="steer me mid turn"),
              _hook_event(4, "PostToolUse", 8_000, tool_response={"stdout": "slow"}, **bash),
              _hook_event(5, "UserPromptSubmit", 9_000, prompt="typed during the answer"),
              _hook_event(6, "Stop", 12_000, last_assistant_message="Done.", background_tasks=[])]
    trace = build_trace("s", "p", events, [], {}, complete=True)
    assert trace.prompt == "tui slow"
    assert [(m.text, m.position) for m in trace.mid_turn_messages] == [("steer me mid turn", 1)]


def _transcript_rows(session: str, prompt_id: str, prompt: str, calls: list[tuple[str, str, dict, str]], answer: str) -> list[dict]:
    """A 2.1.328 transcript's rows for one prompt (shapes copied from a real session, trimmed):
    each call one assistant message, its result the next user row."""
    common = {"isSidechain": False, "sessionId": session, "cwd": "/home/dev/project", "version": "2.1.328"}
    rows = [dict(common, type="user", promptId=prompt_id, uuid="u0", timestamp="2026-12-07T07:27:07.259Z",
                 message={"role": "user", "content": prompt})]
    for n, (tool_use_id, name, model_input, output) in enumerate(calls, 1):
        rows.append(dict(common, type="assistant", uuid=f"a{n}", timestamp=f"2026-12-07T07:27:0{7 + n}.000Z",
                         message={"id": f"msg_{n}", "type": "message", "role": "assistant", "model": "claude-opus-5-5",
                                  "content": [{"type": "tool_use", "id": tool_use_id, "name": name, "input": model_input}],
                                  "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 20}}))
        rows.append(dict(common, type="user", promptId=prompt_id, uuid=f"r{n}", timestamp=f"2026-12-07T07:27:0{7 + n}.500Z",
                         message={"role": "user", "content": [{"tool_use_id": tool_use_id, "type": "tool_result",
                                                               "content": output, "is_error": False}]}))
    rows.append(dict(common, type="assistant", uuid="end", timestamp="2026-12-07T07:27:09.900Z",
                     message={"id": "msg_end", "type": "message", "role": "assistant", "model": "claude-opus-5-5",
                              "content": [{"type": "text", "text": answer}], "stop_reason": "end_turn",
                              "usage": {"input_tokens": 10, "output_tokens": 20}}))
    return rows


def test_a_call_keeps_the_input_the_model_sent_not_the_one_its_hooks_saw(understudy_home, tmp_path):
    """The hook's tool_input is the input as executed: a user's PreToolUse hook rewrote it
    (updatedInput), the CLI made the paths absolute, 2.1.328 dropped ExitPlanMode's plan, and
    the hook script cut a long string. The trace records what the model sent, as an import
    does; the hook's input stands in only for a call the transcript does not have yet."""
    big = "line of text 0123456789\n" * 60000
    key = "sk-ant-api03-" + "Q7x" * 30
    cut = big[:256_000] + f"\n[understudy: truncated, original {len(big)} chars]"
    project = "/home/dev/project"
    # (id, tool, what the model sent, what the PreToolUse/PostToolUse hooks carried, output)
    calls = [("toolu_0001", "Bash", {"command": "echo REWRITE_ME", "description": "x"},
              {"command": "echo REWRITTEN-BY-HOOK", "description": "rewritten"}, "REWRITTEN-BY-HOOK"),
             ("toolu_0002", "Read", {"file_path": "notes.txt"}, {"file_path": f"{project}/notes.txt"}, "hello"),
             ("toolu_0003", "Write", {"file_path": "./new.txt", "content": big},
              {"file_path": f"{project}/new.txt", "content": cut}, "File created"),
             ("toolu_0004", "ExitPlanMode", {"plan": f"1. Read notes\n2. Run with ANTHROPIC_API_KEY={key}"}, {},
              "User approved the plan"),
             ("toolu_0005", "Bash", {"command": "echo late"}, {"command": "echo late"}, "late")]
    session, prompt_id = "sess-input", "prompt-input"
    transcript = tmp_path / f"{session}.jsonl"
    # The last call is not in the transcript yet: its hooks are all there is.
    rows = _transcript_rows(session, prompt_id, "probe rewrite", [(i, n, m, o) for i, n, m, _, o in calls[:-1]], "Done.")
    transcript.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spool = paths.spool_dir()
    common = {"session_id": session, "prompt_id": prompt_id, "cwd": project, "transcript_path": str(transcript)}
    ns = time.time_ns()
    write_event(spool, "UserPromptSubmit", dict(common, prompt="probe rewrite"), ns)
    for n, (tool_use_id, name, _, executed, output) in enumerate(calls, 1):
        hook = dict(common, tool_name=name, tool_input=executed, tool_use_id=tool_use_id)
        write_event(spool, "PreToolUse", hook, ns + 10 * n)
        write_event(spool, "PostToolUse", dict(hook, tool_response={"stdout": output, "stderr": ""}), ns + 10 * n + 5)
    write_event(spool, "Stop", dict(common, last_assistant_message="Done.", background_tasks=[]), ns + 100)
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        ingestor.finalize_ready()
        [trace] = list(store.iter_traces())
    plan = trace.tool_calls[3].input.pop("plan")
    assert plan.startswith("1. Read notes\n2. Run with ANTHROPIC_API_KEY=") and key not in plan  # redacted all the same
    assert [c.input for c in trace.tool_calls] == [model for _, _, model, _, _ in calls[:3]] + [{}, {"command": "echo late"}]
    assert trace.tool_calls[0].output == "REWRITTEN-BY-HOOK"  # the result is still what ran
    assert trace.reasoning_signals.files_read == ["notes.txt"]
    assert trace.reasoning_signals.files_changed == ["./new.txt"]



def test_a_cli_internal_agent_of_the_2_1_42_tui_is_no_subagent():
    """Claude Code 2.1.42's TUI sends, for each prompt, a SubagentStop of an agent of its own
    (`agent_type` "", no SubagentStart, an agent transcript that is never written): the model
    started no subagent, and an import sees none. A subagent the model started is still kept."""
    from capture_daemon.assemble import build_trace
    from capture_daemon.signals import compute_signals

    root = "/home/dev/.claude/projects/-home-dev-project/54365e84"
    phantom = dict(transcript_path=f"{root}.jsonl", cwd="/home/dev/project", permission_mode="default",
                   hook_event_name="SubagentStop", stop_hook_active=False, agent_id="afde0f1",
                   agent_transcript_path=f"{root}/subagents/agent-afde0f1.jsonl", agent_type="")
    task = dict(tool_name="Task", tool_use_id="toolu_task",
                tool_input={"description": "look", "prompt": "SUBTASK look around", "subagent_type": "general-purpose"})
    real = dict(cwd="/home/dev/project", agent_id="a3ccbd4", agent_type="general-purpose")
    events = [_hook_event(1, "UserPromptSubmit", 1_000, prompt="probe bg alone"),
              _hook_event(2, "SubagentStop", 2_000, **phantom),
              _hook_event(3, "Stop", 3_000, last_assistant_message="Done.", background_tasks=[])]
    trace = build_trace("s", "p", events, [], {}, complete=True)
    assert trace.subagents == [] and not compute_signals(trace).used_subagents

    events[2:2] = [_hook_event(4, "PreToolUse", 2_100, **task),
                   _hook_event(5, "SubagentStart", 2_200, **real),
                   _hook_event(6, "SubagentStop", 2_300, **dict(real, last_assistant_message="Sub done.")),
                   _hook_event(7, "PostToolUse", 2_400, tool_response={"agentId": "a3ccbd4", "content": []}, **task)]
    trace = build_trace("s", "p", events, [], {}, complete=True)
    assert [(r.agent_id, r.agent_type, r.final_response, r.spawned_by) for r in trace.subagents] == \
        [("a3ccbd4", "general-purpose", "Sub done.", "toolu_task")]


# A background Bash job (`run_in_background`) that finishes after its prompt ended: Claude Code
# runs a `<task-notification>` turn. Payload shapes as the real 2.1.328 and 2.1.42 hooks send
# them (2.1.42: no prompt_id, and the notification names no tool_use_id).
def _bg_prompt(session: str, prompt_id: str | None, prompt: str, *, background: bool, command: str = "") -> None:
    spool = paths.spool_dir()
    ids = {"session_id": session, "cwd": "/work/proj", "transcript_path": f"/nonexistent/{session}.jsonl",
           "permission_mode": "default"}
    if prompt_id:
        ids["prompt_id"] = prompt_id
    tool_input = ({"command": "sleep 5; echo done", "description": "ticker", "run_in_background": True} if background
                  else {"command": command or f"echo {prompt}", "description": "s"})
    response = {"stdout": "" if background else tool_input["command"][5:], "stderr": "", "interrupted": False, "isImage": False,
                "noOutputExpected": False}
    if background:
        response["backgroundTaskId"] = "bfwbh17e7"
    tool_use_id = "toolu_bg_1" if background else f"toolu_{len(prompt)}"
    write_event(spool, "UserPromptSubmit", dict(ids, prompt=prompt))
    write_event(spool, "PreToolUse", dict(ids, tool_name="Bash", tool_input=tool_input, tool_use_id=tool_use_id))
    write_event(spool, "PostToolUse", dict(ids, tool_name="Bash", tool_input=tool_input, tool_response=response,
                                           tool_use_id=tool_use_id, duration_ms=102))
    tasks = [{"id": "bfwbh17e7", "type": "shell", "status": "running", "description": "ticker",
              "command": "sleep 5; echo done"}] if background else []
    write_event(spool, "Stop", dict(ids, stop_hook_active=False, last_assistant_message=f"{prompt} answered",
                                    **({"background_tasks": tasks, "session_crons": []} if prompt_id else {})))


def _bg_notification(session: str, prompt_id: str | None) -> None:
    if prompt_id:  # 2.1.328
        said = ("<task-notification>\n<task-id>bfwbh17e7</task-id>\n<tool-use-id>toolu_bg_1</tool-use-id>\n"
                "<output-file>/tmp/claude-0/-work-proj/s/tasks/bfwbh17e7.output</output-file>\n<status>completed</status>\n"
                "<summary>Background command \"ticker\" completed (exit code 0)</summary>\n</task-notification>")
    else:  # 2.1.42
        said = ("<task-notification>\n<task-id>bfwbh17e7</task-id>\n<output-file>/tmp/claude-0/-work-proj/tasks/"
                "bfwbh17e7.output</output-file>\n<status>completed</status>\n<summary>Background command \"ticker\" "
                "completed (exit code 0)</summary>\n</task-notification>\nRead the output file to retrieve the result: "
                "/tmp/claude-0/-work-proj/tasks/bfwbh17e7.output")
    _bg_prompt(session, prompt_id, said, background=False, command=_NOTIFY_CALL)


_NOTIFY_CALL = "echo handling-notification"


def _calls(store) -> dict[str, list[str]]:
    return {t.prompt: [c.input["command"] for c in t.tool_calls] for t in store.iter_traces()}


@pytest.mark.parametrize("prompt_ids", [True, False], ids=["2.1.328", "2.1.42"])
def test_a_background_bash_notification_reopens_the_stored_prompt_that_started_the_job(understudy_home, prompt_ids):
    """The daemon committed the prompt before the job finished (the usual case)."""
    _bg_prompt("s-bg", "p-start" if prompt_ids else None, "start the ticker", background=True)
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        assert ingestor.finalize_ready() == 1
        _bg_notification("s-bg", "p-notify" if prompt_ids else None)
        ingestor.scan()
        ingestor.finalize_ready()
        assert _calls(store) == {"start the ticker": ["sleep 5; echo done", _NOTIFY_CALL]}
        assert ingestor.quarantined_count == 0
    assert not list(paths.spool_dir().glob("*.event"))


@pytest.mark.parametrize("prompt_ids", [True, False], ids=["2.1.328", "2.1.42"])
def test_a_background_bash_notification_read_late_skips_the_prompt_typed_since(understudy_home, prompt_ids):
    """The daemon reads the spool after the fact: a second prompt ran before the job finished."""
    _bg_prompt("s-bg", "p-start" if prompt_ids else None, "start the ticker", background=True)
    _bg_prompt("s-bg", "p-second" if prompt_ids else None, "second", background=False)
    _bg_notification("s-bg", "p-notify" if prompt_ids else None)
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        ingestor.finalize_ready()
        assert _calls(store) == {"start the ticker": ["sleep 5; echo done", _NOTIFY_CALL], "second": ["echo second"]}
        assert ingestor.quarantined_count == 0


def test_a_stop_without_the_answer_waits_a_little_for_the_transcript_to_hold_it(understudy_home, tmp_path):
    """Claude Code 2.0.0 and 2.1.42 send no last_assistant_message with Stop: the answer is only
    in the transcript, which may be written after the hook ran (seen live on 2.1.42 on a loaded
    machine: the trace committed without its answer and was rejected as having none). A stopped
    prompt whose transcript has no answer yet is looked at again, for up to answer_wait_seconds;
    then it commits as it is."""
    clock = [time.time_ns()]
    spool = paths.spool_dir()
    answers = {}
    for session in ("sess-late", "sess-never"):
        transcript = tmp_path / f"{session}.jsonl"
        rows = _transcript_rows(session, f"p-{session}", "count the rows", [("toolu_1", "Bash", {"command": "wc -l t"}, "3 t")],
                                "There are 3 rows.")
        transcript.write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]))  # the answer not written yet
        answers[session] = rows[-1]
        ids = {"session_id": session, "prompt_id": f"p-{session}", "cwd": "/home/dev/project",
               "transcript_path": str(transcript)}
        write_event(spool, "UserPromptSubmit", dict(ids, prompt="count the rows"), clock[0])
        write_event(spool, "PreToolUse", dict(ids, tool_name="Bash", tool_input={"command": "wc -l t"}, tool_use_id="toolu_1"), clock[0] + 1)
        write_event(spool, "PostToolUse", dict(ids, tool_name="Bash", tool_input={"command": "wc -l t"}, tool_use_id="toolu_1",
                                               tool_response={"stdout": "3 t"}), clock[0] + 2)
        write_event(spool, "Stop", dict(ids, stop_hook_active=False), clock[0] + 3)  # as 2.1.42 sends it
    with TraceStore.open() as store:
        ingestor = Ingestor(store, spool, paths.quarantine_dir(), IngestSettings(settle_seconds=0), clock=lambda: clock[0])
        ingestor.scan()
        clock[0] += int(1e9)
        assert ingestor.finalize_ready() == 0  # neither answer written yet: both wait
        with open(tmp_path / "sess-late.jsonl", "a") as handle:
            handle.write(json.dumps(answers["sess-late"]) + "\n")
        clock[0] += int(1e9)
        assert ingestor.finalize_ready() == 1
        clock[0] += int(IngestSettings().answer_wait_seconds * 1e9)
        assert ingestor.finalize_ready() == 1
        traces = {t.session_id: t for t in store.iter_traces()}
    assert traces["sess-late"].final_response == "There are 3 rows." and traces["sess-late"].complete
    assert traces["sess-never"].final_response is None  # committed after the wait, as before


def _typed_ahead_session(tmp_path, *, transcript: bool, delivered: bool = False) -> tuple[list, list]:
    """Two prompts as Claude Code 2.1.328's TUI reports them when the second is typed while the
    model writes the first's final answer (the order recorded from the real TUI through tmux):
    its UserPromptSubmit comes at once, under the first prompt's id, before the first's Stop;
    the TUI then runs it as the next prompt, whose own events come without one. With
    `delivered`, the message is typed while the first prompt's call runs instead (delivered
    within it) and the second prompt is one whose UserPromptSubmit was lost.
    Returns the spool files (first prompt's, second's)."""
    session, first, second = "sess-ahead", "prompt-first", "prompt-second"
    path = tmp_path / f"{session}.jsonl"
    rows = _transcript_rows(session, first, "check the feeder", [("toolu_a1", "Bash", {"command": "cat notes.txt"}, "11kV")],
                            "Transformer 1 runs at 11kV.")
    rows.insert(-1, {"type": "queue-operation", "operation": "enqueue", "timestamp": "2026-12-07T07:27:09.500Z",
                     "sessionId": session, "content": "now the second one"})
    rows.append({"type": "queue-operation", "operation": "dequeue", "timestamp": "2026-12-07T07:27:10.000Z",
                 "sessionId": session})
    rows += _transcript_rows(session, second, "now the second one", [("toolu_b1", "Bash", {"command": "echo two"}, "two")],
                             "Second done.")
    for row in rows[len(rows) // 2 + 1:]:
        row["uuid"] = "second-" + row["uuid"]
    if transcript:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spool, ns = paths.spool_dir(), time.time_ns()

    def hook(event, prompt_id, at, **payload):
        common = {"session_id": session, "prompt_id": prompt_id, "cwd": "/home/dev/project", "transcript_path": str(path)}
        return write_event(spool, event, dict(common, **payload), ns + at)

    bash_a = dict(tool_name="Bash", tool_input={"command": "cat notes.txt"}, tool_use_id="toolu_a1")
    bash_b = dict(tool_name="Bash", tool_input={"command": "echo two"}, tool_use_id="toolu_b1")
    typed_at = 150 if delivered else 300
    earlier = [hook("UserPromptSubmit", first, 100, prompt="check the feeder"),
               hook("PreToolUse", first, 110, **bash_a),
               hook("UserPromptSubmit", first, typed_at, prompt="now the second one"),
               hook("PostToolUse", first, 200, tool_response={"stdout": "11kV"}, **bash_a),
               hook("Stop", first, 500, last_assistant_message="Transformer 1 runs at 11kV.", background_tasks=[])]
    later = [hook("PreToolUse", second, 600, **bash_b),
             hook("PostToolUse", second, 610, tool_response={"stdout": "two"}, **bash_b),
             hook("Stop", second, 700, last_assistant_message="Second done.", background_tasks=[])]
    return earlier, later


def _ingest_live(earlier: list, later: list) -> dict:
    """As the running daemon sees them: the first prompt committed before the second's events."""
    for one in later:
        os.rename(one, f"{one}.held")
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        assert ingestor.finalize_ready() == 1
        for one in later:
            os.rename(f"{one}.held", one)
        ingestor.scan()
        ingestor.finalize_ready(force=True)
        return {t.prompt_id: t for t in store.iter_traces()}


@pytest.mark.parametrize("transcript", [True, False], ids=["transcript", "hooks-alone"])
def test_a_message_typed_while_the_answer_streams_is_the_next_prompt_complete(understudy_home, tmp_path, transcript):
    """The next prompt takes the UserPromptSubmit it was typed with, though it came under the
    previous prompt's id: complete, with its words, as `capture-daemon import` makes it, not
    `prompt_event_missing` until an import replaces it."""
    traces = _ingest_live(*_typed_ahead_session(tmp_path, transcript=transcript))
    first, second = traces["prompt-first"], traces["prompt-second"]
    assert (second.prompt, second.complete, second.incomplete_reason) == ("now the second one", True, None)
    assert [c.tool_use_id for c in second.tool_calls] == ["toolu_b1"] and second.final_response == "Second done."
    # The first prompt never took it in: no mid-turn message there, its own answer unchanged.
    assert (first.prompt, first.mid_turn_messages, first.final_response) == (
        "check the feeder", [], "Transformer 1 runs at 11kV.")
    # Nothing left behind, nothing set aside.
    assert not list(paths.spool_dir().glob("*.event")) and quarantine_files() == []


def test_a_message_delivered_within_its_prompt_is_no_later_prompts_words(understudy_home, tmp_path):
    """Typed while a call ran, the message reached the running prompt (a mid-turn message): a
    later prompt that lacks its UserPromptSubmit (lost) is not given that message's words."""
    traces = _ingest_live(*_typed_ahead_session(tmp_path, transcript=False, delivered=True))
    second = traces["prompt-second"]
    assert (second.prompt, second.complete, second.incomplete_reason) == ("", False, "prompt_event_missing")
    assert [m.text for m in traces["prompt-first"].mid_turn_messages] == ["now the second one"]


def test_a_message_typed_while_the_answer_streams_read_from_a_backlog(understudy_home, tmp_path):
    """The daemon was down: both prompts are read and committed in one pass, the next prompt's
    UserPromptSubmit still open under the previous prompt's trace."""
    _typed_ahead_session(tmp_path, transcript=True)
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        assert ingestor.finalize_ready() == 2
        traces = {t.prompt_id: t for t in store.iter_traces()}
    assert (traces["prompt-second"].prompt, traces["prompt-second"].complete) == ("now the second one", True)
    assert traces["prompt-first"].mid_turn_messages == [] and not list(paths.spool_dir().glob("*.event"))


def test_a_2_1_42_notification_turn_waits_a_little_for_its_closing_text(understudy_home, tmp_path):
    """Claude Code 2.1.42 runs a `<task-notification>` turn when a background Bash job ends; its
    Stop carries no last_assistant_message and the transcript gets the turn's closing text after
    the hook ran. The reopened trace waits for that text, as a prompt waits for its own answer
    (seen live: tests/test_background_bash.py lost that row), and a prompt with nothing to come
    commits at once."""
    clock = [time.time_ns()]
    spool = paths.spool_dir()
    transcript = tmp_path / "s-bg.jsonl"
    ids = {"session_id": "s-bg", "cwd": "/work/proj", "transcript_path": str(transcript), "permission_mode": "default"}
    said = ("<task-notification>\n<task-id>bfwbh17e7</task-id>\n<status>completed</status>\n<summary>Background command "
            "\"ticker\" completed (exit code 0)</summary>\n</task-notification>")
    common = {"isSidechain": False, "sessionId": "s-bg", "cwd": "/work/proj", "version": "2.1.42"}

    def user(uuid: str, content, at: str) -> dict:
        return dict(common, type="user", uuid=uuid, timestamp=f"2026-12-07T07:27:{at}Z", message={"role": "user", "content": content})

    def assistant(uuid: str, block: dict, at: str) -> dict:
        return dict(common, type="assistant", uuid=uuid, timestamp=f"2026-12-07T07:27:{at}Z",
                    message={"id": f"msg_{uuid}", "role": "assistant", "model": "claude-opus-5-5", "content": [block]})

    def result(uuid: str, tool_use_id: str, output: str, at: str) -> dict:
        return user(uuid, [{"type": "tool_result", "tool_use_id": tool_use_id, "content": output, "is_error": False}], at)

    background = {"command": "sleep 5; echo done", "description": "ticker", "run_in_background": True}
    rows = [user("u-start", "start the ticker", "01.000"),
            assistant("a1", {"type": "tool_use", "id": "toolu_bg", "name": "Bash", "input": background}, "02.000"),
            result("r1", "toolu_bg", "Command running in background with ID: bfwbh17e7", "02.500"),
            assistant("a2", {"type": "text", "text": "The ticker is running."}, "03.000"),
            user("u-note", said, "08.000"),
            assistant("a3", {"type": "tool_use", "id": "toolu_check", "name": "Bash", "input": {"command": "echo checked"}}, "09.000"),
            result("r3", "toolu_check", "checked", "09.500")]
    closing = assistant("a4", {"type": "text", "text": "The ticker printed done."}, "10.000")
    transcript.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def events(prompt: str, tool_use_id: str, tool_input: dict, response: dict) -> None:
        write_event(spool, "UserPromptSubmit", dict(ids, prompt=prompt), clock[0])
        call = dict(ids, tool_name="Bash", tool_input=tool_input, tool_use_id=tool_use_id)
        write_event(spool, "PreToolUse", call, clock[0] + 1)
        write_event(spool, "PostToolUse", dict(call, tool_response=response), clock[0] + 2)
        write_event(spool, "Stop", dict(ids, stop_hook_active=False), clock[0] + 3)  # as 2.1.42 sends it

    events("start the ticker", "toolu_bg", background, {"stdout": "", "stderr": "", "backgroundTaskId": "bfwbh17e7"})
    with TraceStore.open() as store:
        ingestor = Ingestor(store, spool, paths.quarantine_dir(), IngestSettings(settle_seconds=0), clock=lambda: clock[0])
        ingestor.scan()
        clock[0] += int(1e9)
        assert ingestor.finalize_ready() == 1  # its answer is there and no turn is pending: no wait
        clock[0] += int(5e9)
        events(said, "toolu_check", {"command": "echo checked"}, {"stdout": "checked", "stderr": ""})
        ingestor.scan()
        clock[0] += int(1e9)
        assert ingestor.finalize_ready() == 0  # the notification turn's closing text is not written yet
        with open(transcript, "a") as handle:
            handle.write(json.dumps(closing) + "\n")
        clock[0] += int(1e9)
        assert ingestor.finalize_ready() == 1
        [trace] = list(store.iter_traces())
    assert [c.tool_use_id for c in trace.tool_calls] == ["toolu_bg", "toolu_check"]
    assert [(s.text, s.position) for s in trace.assistant_text] == [("The ticker printed done.", 2)]
    assert trace.final_response == "The ticker is running." and trace.complete


def test_a_2_1_42_background_agent_waits_a_little_for_its_closing_text(understudy_home, tmp_path):
    """2.1.42's SubagentStop carries no last_assistant_message, and a background agent's
    transcript gets its closing text after that hook ran (seen with the real CLI): the reopened
    trace waits for it, then the run has its answer."""
    clock = [time.time_ns()]
    spool = paths.spool_dir()
    transcript, agent_file = tmp_path / "s-ag.jsonl", tmp_path / "s-ag" / "subagents" / "agent-ad8776e.jsonl"
    agent_file.parent.mkdir(parents=True)
    ids = {"session_id": "s-ag", "cwd": "/work/proj", "transcript_path": str(transcript), "permission_mode": "default"}
    common = {"isSidechain": False, "sessionId": "s-ag", "cwd": "/work/proj", "version": "2.1.42"}

    def row(kind: str, uuid: str, content, **extra) -> dict:
        message = {"role": kind, "content": content} if kind == "user" else \
            {"id": f"msg_{uuid}", "role": "assistant", "model": "claude-opus-5-5", "content": content}
        return dict(common, type=kind, uuid=uuid, timestamp="2026-12-07T07:27:01.000Z", message=message, **extra)

    task = {"description": "inspect notes", "prompt": "BG SUBTASK inspect", "subagent_type": "general-purpose",
            "run_in_background": True}
    launched = {"isAsync": True, "status": "async_launched", "agentId": "ad8776e", "description": "inspect notes"}
    transcript.write_text("".join(json.dumps(r) + "\n" for r in [
        row("user", "u1", "delegate it"),
        row("assistant", "a1", [{"type": "tool_use", "id": "toolu_task", "name": "Task", "input": task}]),
        row("user", "r1", [{"type": "tool_result", "tool_use_id": "toolu_task", "content": "Async agent launched"}],
            toolUseResult=launched),
        row("assistant", "a2", [{"type": "text", "text": "The agent is on it."}])]))
    agent_common = dict(isSidechain=True, agentId="ad8776e")
    agent_file.write_text("".join(json.dumps(r) + "\n" for r in [
        row("user", "s1", "BG SUBTASK inspect", **agent_common),
        row("assistant", "s2", [{"type": "tool_use", "id": "toolu_read", "name": "Read", "input": {"file_path": "/n"}}],
            **agent_common),
        row("user", "s3", [{"type": "tool_result", "tool_use_id": "toolu_read", "content": "11kV"}], **agent_common)]))
    write_event(spool, "UserPromptSubmit", dict(ids, prompt="delegate it"), clock[0])
    call = dict(ids, tool_name="Task", tool_input=task, tool_use_id="toolu_task")
    write_event(spool, "PreToolUse", call, clock[0] + 1)
    write_event(spool, "PostToolUse", dict(call, tool_response=launched), clock[0] + 2)
    write_event(spool, "Stop", dict(ids, stop_hook_active=False), clock[0] + 3)  # as 2.1.42 sends it: no agent named
    with TraceStore.open() as store:
        ingestor = Ingestor(store, spool, paths.quarantine_dir(), IngestSettings(settle_seconds=0), clock=lambda: clock[0])
        ingestor.scan()
        clock[0] += int(1e9)
        assert ingestor.finalize_ready() == 1
        write_event(spool, "SubagentStop", dict(ids, agent_id="ad8776e", agent_type="general-purpose", stop_hook_active=False,
                                                agent_transcript_path=str(agent_file)), clock[0])
        ingestor.scan()
        clock[0] += int(1e9)
        assert ingestor.finalize_ready() == 0  # the agent's closing text is not written yet
        with open(agent_file, "a") as handle:
            handle.write(json.dumps(row("assistant", "s4", [{"type": "text", "text": "The notes say 11kV."}], **agent_common)) + "\n")
        clock[0] += int(1e9)
        assert ingestor.finalize_ready() == 1
        assert ingestor.quarantined_count == 0
        [trace] = list(store.iter_traces())
    assert [(r.agent_id, r.final_response, r.complete) for r in trace.subagents] == [("ad8776e", "The notes say 11kV.", True)]
    assert sorted((c.tool_use_id, c.agent_id) for c in trace.tool_calls) == [("toolu_read", "ad8776e"), ("toolu_task", None)]


def test_a_notification_turn_keeps_its_reopened_prompt_open_until_its_own_stop(understudy_home):
    """A `<task-notification>` turn reopens the stored prompt, which still holds its old Stop: the
    prompt runs again until the turn's own Stop. Committed before (the old Stop looked final),
    2.1.42's calls of the turn, which carry no prompt_id, found no open prompt and were set aside."""
    spool = paths.spool_dir()
    _bg_prompt("s-bg", None, "start the ticker", background=True)
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        assert ingestor.finalize_ready() == 1
        ids = {"session_id": "s-bg", "cwd": "/work/proj", "transcript_path": "/nonexistent/s-bg.jsonl"}
        write_event(spool, "UserPromptSubmit", dict(ids, prompt="<task-notification>\n<task-id>bfwbh17e7</task-id>\n"
                                                         "<status>completed</status>\n</task-notification>"))
        ingestor.scan()
        assert ingestor.finalize_ready() == 0  # its turn runs: nothing to commit yet
        call = dict(ids, tool_name="Bash", tool_input={"command": _NOTIFY_CALL}, tool_use_id="toolu_notify")
        write_event(spool, "PreToolUse", call)
        write_event(spool, "PostToolUse", dict(call, tool_response={"stdout": "handling-notification", "stderr": ""}))
        write_event(spool, "Stop", dict(ids, stop_hook_active=False))
        ingestor.scan()
        assert ingestor.finalize_ready() == 1
        assert _calls(store) == {"start the ticker": ["sleep 5; echo done", _NOTIFY_CALL]}
        assert ingestor.quarantined_count == 0


def _older_client_turn(session: str, prompt: str | None, command: str, answer: str) -> None:
    """A turn as 2.1.42 sends it (no prompt_id): the prompt when `prompt` is given, a call, a Stop."""
    ids = {"session_id": session, "cwd": "/work/proj", "transcript_path": f"/nonexistent/{session}.jsonl"}
    spool = paths.spool_dir()
    if prompt is not None:
        write_event(spool, "UserPromptSubmit", dict(ids, prompt=prompt))
    tool_input = {"command": command, "description": "run"}
    write_event(spool, "PreToolUse", dict(ids, tool_name="Bash", tool_input=tool_input, tool_use_id=f"toolu_{command[5:]}"))
    write_event(spool, "PostToolUse", dict(ids, tool_name="Bash", tool_input=tool_input, tool_use_id=f"toolu_{command[5:]}",
                                           tool_response={"stdout": command[5:], "stderr": ""}))
    write_event(spool, "Stop", dict(ids, stop_hook_active=prompt is None, last_assistant_message=answer))


def test_a_prompt_a_stop_hook_sent_on_after_it_was_stored_takes_the_rest(understudy_home):
    """A user's Stop hook blocked the stop and the model went on, slower than the settle time:
    the daemon had stored the prompt by then. 2.1.42 and 2.0.0 name no prompt in the events that
    follow; no prompt came since, so they are the stored prompt's (once set aside, as lost)."""
    _older_client_turn("s-stop", "check the branch", "echo main", "The branch is fine.")
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        assert ingestor.finalize_ready() == 1
        _older_client_turn("s-stop", None, "echo tests", "Tests pass.")
        ingestor.scan()
        ingestor.finalize_ready()
        assert ingestor.quarantined_count == 0
        [trace] = list(store.iter_traces())
    assert [c.input["command"] for c in trace.tool_calls] == ["echo main", "echo tests"]
    assert trace.final_response == "Tests pass." and trace.complete
    assert quarantine_files() == [] and not list(paths.spool_dir().glob("*.event"))


def test_an_older_clients_event_after_a_new_prompt_goes_to_that_prompt_only(understudy_home):
    _older_client_turn("s-two", "first question", "echo one", "One.")
    _older_client_turn("s-two", "second question", "echo two", "Two.")
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        ingestor.finalize_ready()
        _older_client_turn("s-two", None, "echo more", "Two, and more.")
        ingestor.scan()
        ingestor.finalize_ready()
        assert _calls(store) == {"first question": ["echo one"], "second question": ["echo two", "echo more"]}


def test_an_older_clients_agent_stopping_after_the_prompt_was_stored_is_not_taken_into_it(understudy_home):
    """Only the model's own work goes on after a Stop hook sent it on (calls, a Stop that says so);
    an agent that stops then (a compaction's) belongs to no stored prompt."""
    _older_client_turn("s-cmp", "check the branch", "echo main", "The branch is fine.")
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        ingestor.finalize_ready()
        write_event(paths.spool_dir(), "SubagentStop", {"session_id": "s-cmp", "agent_id": "compact-1", "agent_type": "",
                                                        "transcript_path": "/nonexistent/s-cmp.jsonl"})
        ingestor.scan()
        ingestor.finalize_ready()
        assert ingestor.quarantined_count == 1
        [trace] = list(store.iter_traces())
    assert trace.subagents == [] and [c.input["command"] for c in trace.tool_calls] == ["echo main"]


def test_an_older_clients_call_while_a_background_agent_runs_reopens_no_prompt(understudy_home):
    """2.1.42 sends a background agent's calls with neither prompt nor agent id. One that comes
    after the session's latest prompt was stored is the agent's as likely as a Stop hook's
    continuation: it must not join the prompt typed meanwhile (set aside as before; the agent's
    transcript gives the call to the prompt that started it). Once the agent stopped, a call
    after a stored prompt is that prompt's continuation again."""
    ids = {"session_id": "s-bga", "cwd": "/work/proj", "transcript_path": "/nonexistent/s-bga.jsonl"}
    spool = paths.spool_dir()
    _older_client_turn("s-bga", "delegate to a background agent", "echo start", "The agent is on it.")
    write_event(spool, "SubagentStart", dict(ids, agent_id="a8d4dde", agent_type="general-purpose"))
    _older_client_turn("s-bga", "a question while the agent works", "echo meanwhile", "Answered.")
    with TraceStore.open() as store:
        ingestor = _ingestor(store)
        ingestor.scan()
        assert ingestor.finalize_ready() == 2
        read = dict(ids, tool_name="Read", tool_input={"file_path": "notes.txt"}, tool_use_id="toolu_bga_read")
        write_event(spool, "PreToolUse", read)
        write_event(spool, "PostToolUse", dict(read, tool_response={"type": "text"}))
        ingestor.scan()
        ingestor.finalize_ready()
        assert ingestor.quarantined_count == 2
        assert _calls(store)["a question while the agent works"] == ["echo meanwhile"]
        write_event(spool, "SubagentStop", dict(ids, agent_id="a8d4dde", agent_type="general-purpose"))
        ingestor.scan()
        ingestor.finalize_ready()
        _older_client_turn("s-bga", None, "echo more", "Answered, and more.")
        ingestor.scan()
        ingestor.finalize_ready()
        assert _calls(store)["a question while the agent works"] == ["echo meanwhile", "echo more"], (_calls(store), ingestor.quarantined_count)
