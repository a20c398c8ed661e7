"""`capture-daemon ui` in a real headless Chromium (tests/headless_chromium.py): the numbers on the
page are the store's, a screenshot is taken, a trace committed by the real daemon appears without a
reload, a click decides what `trainer build-dataset` takes, trace text stays text, and a POST
without the page's CSRF token is refused."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from capture_daemon.store import TraceStore
from tests.headless_chromium import Chromium, find_chromium
from tests.test_cli_traces import _store_sessions

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> see [docs](javascript:window.__xss=3)'
REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dashboard(understudy_home, tmp_path):
    import uvicorn

    from capture_daemon.ui.app import create_app

    port = _free_port()
    config = uvicorn.Config(create_app(runs_dir=tmp_path / "runs"), host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "dashboard did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


def _screenshot(page, path: Path) -> bytes:
    data = base64.b64decode(page.browser.send("Page.captureScreenshot", {"format": "png"}, session=page.session)["data"])
    path.write_bytes(data)
    return data


def _viewport(page, width=1280, height=860) -> None:
    page.browser.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=page.session)


def _xss_trace() -> str:
    """A trace whose prompt, narration and answer try to run script, stored as the rules left it."""
    from capture_daemon.quality import analyze
    from tests.trace_builders import bash, trace

    t = analyze(trace(prompt=XSS, calls=[bash("ls")], texts=[(0, XSS)], answer=XSS).model_copy(
        update={"trace_id": "x" * 32, "session_id": "s-xss", "prompt_id": "p-xss"}))
    with TraceStore.open() as store:
        store.put(t)
    return t.trace_id


def test_pages_numbers_xss_curation_and_csrf(dashboard, tmp_path):
    traces = _store_sessions()
    xss_id = _xss_trace()
    good = traces["compare the billing worker and the mailer"]
    with TraceStore.open() as store:
        stats = store.stats()
    with Chromium() as browser:
        page = browser.open(dashboard)
        _viewport(page)
        page.wait_for("document.body.dataset.state === 'ready' && document.body.dataset.page === 'live'")
        shown = page.eval("['total','accepted','rejected','human'].map(k => document.getElementById('stat-' + k).textContent)")
        assert shown == [str(stats["total"]), str(stats["accepted"]), str(stats["rejected"]), "0"]
        assert page.eval("document.querySelectorAll('#live-feed li').length") == stats["total"]
        png = _screenshot(page, tmp_path / "live.png")
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

        # Trace text is text: the prompt shows literally, nothing ran, no element came from it.
        page.eval(f"location.hash = '#/trace/{xss_id}'")
        page.wait_for("document.body.dataset.page === 'trace' && document.body.dataset.state === 'ready'")
        assert page.eval("document.getElementById('trace-prompt').textContent") == XSS
        assert page.eval("document.getElementById('trace-answer').textContent") == XSS
        assert page.eval("window.__xss") is None
        assert page.eval("document.querySelectorAll('#view img, #view script, a[href^=\"javascript\"]').length") == 0
        page.eval("location.hash = '#/browse'")
        page.wait_for("document.body.dataset.page === 'browse' && document.body.dataset.state === 'ready'")
        assert page.eval("window.__xss") is None
        assert page.eval(f"document.querySelector('tr[data-trace-id=\"{xss_id}\"] td.prompt').textContent") == XSS

        # A POST without the page's CSRF token is refused, from the page itself and from elsewhere.
        status = page.eval("fetch('/api/curate', {method: 'POST', headers: {'Content-Type': 'application/json'},"
                           f" body: JSON.stringify({{action: 'forget', ids: ['{good.trace_id}']}})}}).then(r => r.status)")
        assert status == 403
        request = urllib.request.Request(dashboard + "api/curate", method="POST", data=b'{"action":"forget","ids":[]}',
                                         headers={"Content-Type": "application/json", "Origin": "http://evil.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
        with TraceStore.open() as store:
            assert store.has_trace(good.trace_id)

        # A click rejects the accepted trace: build-dataset then leaves it out.
        page.click(f'tr[data-trace-id="{good.trace_id}"] .act-reject')
        page.wait_for("document.getElementById('flash') && document.getElementById('flash').textContent.startsWith('reject: 1')")
        page.wait_for("document.body.dataset.state === 'ready'")
        with TraceStore.open() as store:
            assert store.human_verdicts() == {good.trace_id: False}
        out = tmp_path / "ds"
        # Accept the short one (the rules rejected it) by hand: `trainer build-dataset` (one process, the
        # store) then takes it and leaves out the good one rejected above.
        say_hi = traces["say hi"]
        page.click(f'tr[data-trace-id="{say_hi.trace_id}"] .act-accept')
        page.wait_for("document.getElementById('flash') && document.getElementById('flash').textContent.startsWith('accept: 1')")
        # Offline, as CI is: without these the tokenizer lookup waits ~50 s on the network.
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        proc = subprocess.run([sys.executable, "-m", "trainer.cli", "build-dataset", "--output", str(out)],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        rows = [json.loads(line) for f in ("train.jsonl", "validation.jsonl", "test.jsonl")
                for line in (out / f).read_text().splitlines() if line.strip()]
        assert [r.get("trace_id") for r in rows] == [say_hi.trace_id]

        # Curate: readiness counts equal the store's after the clicks.
        page.eval("location.hash = '#/curate'")
        page.wait_for("document.body.dataset.page === 'curate' && document.body.dataset.state === 'ready'")
        with TraceStore.open() as store:
            accepted = store.count(accepted=True)
        assert page.eval("document.getElementById('ready-accepted').textContent") == str(accepted)


def test_a_broken_config_is_named_on_the_live_page(dashboard, understudy_home):
    """The daemon cannot start on a broken config.toml; the Health panel says so, with the file's problem."""
    understudy_home.mkdir(parents=True, exist_ok=True)
    (understudy_home / "config.toml").write_text("[capture]\nidle_timeout_seconds = 60\nfoo bar\n")
    with Chromium() as browser:
        page = browser.open(dashboard)
        page.wait_for("document.body.dataset.state === 'ready' && document.body.dataset.page === 'live'")
        shown = page.eval("document.getElementById('config-problem').textContent")
    assert shown.startswith("config.toml is broken: ") and "invalid TOML" in shown and "line 3" in shown, shown
    assert shown.endswith("fix it, then `capture-daemon start`"), shown


def test_hooks_claude_code_will_not_run_are_named_on_the_live_page(dashboard, isolated_env, monkeypatch, tmp_path):
    """No hooks registered, or registered for events the `claude` on PATH does not know (it then
    runs none): the Health panel says so, as `status` does, instead of looking healthy."""
    from capture_daemon import hooks_config

    def shown() -> str:
        with Chromium() as browser:
            page = browser.open(dashboard)
            page.wait_for("document.body.dataset.state === 'ready' && document.body.dataset.page === 'live'")
            return page.eval("document.getElementById('hooks-problem')?.textContent ?? ''")

    assert shown() == "no hooks registered — `capture-daemon hooks install`"
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho '1.0.60 (Claude Code)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    hooks_config.install(hooks_config.settings_path())  # every event: what a newer Claude Code knows
    assert shown() == ("hooks not run: Claude Code 1.0.60 does not know SessionStart, PostToolUseFailure, "
                       "SubagentStart, SessionEnd and so runs no hook at all: run `capture-daemon hooks install` again")
    hooks_config.install(hooks_config.settings_path(), claude_version=(1, 0, 60))
    assert shown() == ""


@pytest.mark.e2e
def test_trace_committed_by_claude_code_appears_live(dashboard, understudy_home, claude_home, tmp_path):
    """The real Claude Code CLI runs a scripted session with the hooks registered, the real daemon
    commits it, and the open Live page shows it without a reload."""
    from tests.claude_harness import run_claude
    from tests.daemon_harness import RunningDaemon
    from tests.scripted_api import Script, ScriptedAPI, text, tool

    understudy_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (understudy_home / "config.toml").write_text("[capture]\nidle_timeout_seconds = 3\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("<b>bold?</b>\n")
    script = Script("summarise the notes", [[text("Let me read them."), tool("Read", {"file_path": str(project / "notes.txt")})],
                                             [text("The notes hold one line: <b>bold?</b>, shown as text.")]])
    with Chromium() as browser, RunningDaemon(understudy_home) as daemon:
        page = browser.open(dashboard)
        page.wait_for("document.body.dataset.page === 'live' && document.body.dataset.state === 'ready'")
        page.wait_for("document.getElementById('conn').textContent === 'live'")
        page.eval("window.__loaded = performance.timeOrigin")
        assert page.eval("document.querySelectorAll('#live-feed li').length") == 0
        with ScriptedAPI([script]) as api:
            proc = run_claude("summarise the notes", home=claude_home, understudy_home=understudy_home, cwd=project,
                              base_url=api.base_url, allowed_tools="Read")
        assert proc.returncode == 0, proc.stderr[-2000:]
        trace = daemon.wait_for(lambda: next((t for t in daemon.traces() if t["prompt"] == "summarise the notes"), None),
                                60, "the daemon to commit the trace")
        page.wait_for(f"document.querySelector('#live-feed li[data-trace-id=\"{trace['trace_id']}\"]') !== null", timeout=20)
        assert page.eval("window.__loaded") is not None  # the same page: no reload happened
        assert page.eval("document.querySelector('#live-feed li .prompt').textContent") == "summarise the notes"
        page.wait_for("document.getElementById('stat-total').textContent === '1'", timeout=10)


def _training_run(runs: Path) -> dict:
    """A run folder as `trainer run` leaves it: stage.json per stage, a curve PNG, eval.json."""
    run = runs / "demo"
    for stage in ("dataset", "sft", "eval"):
        (run / stage).mkdir(parents=True)
        (run / stage / "stage.json").write_text(json.dumps({"stage": stage, "status": "done", "at": "2026-12-01T10:00:00Z"}))
    (run / "sft" / "loss.png").write_bytes((REPO / "docs" / "dashboard-live.png").read_bytes())
    report = {"n_examples": 1, "split": "test", "summary": {"student": {"first_tool_accuracy": 0.75}, "majority": {"first_tool_accuracy": 0.25}},
              "examples": [{"trace_id": "t1", "prompt": "fix <b>it</b>",
                            "student": {"teacher": ["Read", "Edit", "Bash"], "student": ["Read", "Bash"], "answer": "done"},
                            "majority": {"teacher": ["Read", "Edit", "Bash"], "student": ["Read", "Edit", "Bash"], "answer": "ok"}}]}
    (run / "eval" / "eval.json").write_text(json.dumps(report))
    (run / "mine").mkdir()
    (run / "mine" / "mined.jsonl").write_text(json.dumps({"trace_id": "t1", "prompt": "<i>hard</i>", "score": 0.9, "gap": [1]}) + "\n")
    return report


def test_workflow_drawing_bulk_curation_and_training(dashboard, tmp_path):
    from capture_daemon.quality import analyze
    from tests.trace_builders import call, trace

    t = analyze(trace(
        prompt="compare the two configs",
        calls=[call("Read", group=1, file_path="a.toml"), call("Read", group=1, file_path="b.toml"),
               call("Bash", success=False, error="no such file", command="cat c.toml"), call("Bash", command="ls"),
               call("Grep", agent="agent-7", pattern="x")],
        texts=[(0, "Reading both at once."), (2, "That failed; listing instead.")]))
    with TraceStore.open() as store:
        store.put(t)
    _store_sessions()
    report = _training_run(tmp_path / "runs")
    with Chromium() as browser:
        page = browser.open(dashboard + f"#/trace/{t.trace_id}")
        page.wait_for("document.body.dataset.page === 'trace' && document.body.dataset.state === 'ready'")
        groups = page.eval("[...document.querySelectorAll('#workflow .group')].map(g => [g.className, "
                           "[...g.querySelectorAll('.call strong')].map(s => s.textContent)])")
        assert groups == [["group parallel", ["Read", "Read"]], ["group", ["Bash"]], ["group", ["Bash"]], ["group lane", ["Grep"]]]
        assert page.eval("[...document.querySelectorAll('.call.failed strong, .call.recovery strong')].map(s => s.closest('.call').className)") \
            == ["call failed", "call recovery"]
        assert page.eval("[...document.querySelectorAll('#workflow .text p')].map(p => p.textContent)") == \
            ["Reading both at once.", "That failed; listing instead."]
        assert page.eval("document.querySelectorAll('#reasons li').length") == len(t.quality.reasons)

        # Bulk: reject every trace that used Bash, from the Curate page's filter.
        page.eval("location.hash = '#/curate'")
        page.wait_for("document.body.dataset.page === 'curate' && document.body.dataset.state === 'ready'")
        page.type("#f-tool", "Bash")
        page.eval("document.getElementById('f-tool').dispatchEvent(new Event('change'))")
        page.wait_for("document.getElementById('bulk-count') && document.getElementById('bulk-count').textContent === '2 traces match'")
        page.click("#bulk-reject")
        page.wait_for("document.getElementById('flash') && document.getElementById('flash').textContent === 'reject: 2 trace(s)'")
        with TraceStore.open() as store:
            assert sorted(store.human_verdicts().values()) == [False, False]
            assert {x.trace_id for x in store.iter_traces(tool="Bash", accepted=False)} == set(store.human_verdicts())

        page.eval("location.hash = '#/run/demo'")
        page.wait_for("document.body.dataset.page === 'run' && document.body.dataset.state === 'ready'")
        assert page.eval("[...document.querySelectorAll('#stages td:nth-child(2)')].map(td => td.textContent)") == ["done"] * 3
        page.wait_for("document.querySelector('.curves img') !== null && document.querySelector('.curves img').naturalWidth > 0")
        cells = page.eval("[...document.querySelectorAll('#eval tr')].map(r => [...r.children].map(c => c.textContent))")
        assert cells == [["metric", "student", "majority"], ["first_tool_accuracy", "0.750", "0.250"]]
        assert page.eval("[...document.querySelectorAll('.example .seq li.diverge')].map(li => li.textContent)") == ["Bash"]
        assert page.eval("document.querySelector('.example .prompt').textContent") == report["examples"][0]["prompt"]
        assert page.eval("[...document.querySelectorAll('#mined tr')].map(r => [...r.children].map(c => c.textContent))") == \
            [["trace_id", "prompt", "score"], ["t1", "<i>hard</i>", "0.900"]]

