"""The judging page in a real headless Chromium: open it, judge a few pairs, verdicts recorded.

Chromium comes from the system packages (Debian: `apt-get install chromium`; test.sh installs it
when it is missing and apt-get exists). The page is driven over the DevTools protocol
(tests/headless_chromium.py): a real mouse click, a real key press, the name typed as text.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from tests.headless_chromium import Chromium, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ab_dir(tmp_path):
    """Pairs built by trainer.abtest.build_pairs from scripted-teacher rows and a crippled 'student'."""
    from trainer.abtest import build_pairs
    from trainer.dataset import DatasetConfig, trace_to_example
    from trainer.reward import Workflow, teacher_workflow
    from trainer.teacher_corpus import generate_corpus

    rows = [trace_to_example(t, DatasetConfig()) for t in generate_corpus(6, seed=3)]
    student = [Workflow(steps=teacher_workflow(r).steps[:1], answer="Done.") for r in rows]
    pairs, key = build_pairs(rows[:3], student[:3], seed=1, control_pool=rows)
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    (tmp_path / "key.json").write_text(json.dumps(key))
    return tmp_path


@pytest.fixture
def page_url(ab_dir):
    import uvicorn

    from trainer.abtest import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ab_dir), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "judging page did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


def test_judge_pairs_in_headless_chromium(ab_dir, page_url):
    from trainer.abtest import build_report, read_jsonl

    pairs = json.loads((ab_dir / "pairs.json").read_text())
    key = json.loads((ab_dir / "key.json").read_text())
    with Chromium() as browser:
        page = browser.open(page_url)
        page.wait_for("document.body.dataset.state === 'ready'")
        # Blind: the page got ids and sides only, nothing that says which side is the teacher.
        served = page.eval("fetch('/api/pairs').then(r => r.json())")
        assert all(set(p) == {"id", "left", "right"} for p in served["pairs"])
        assert "teacher" not in json.dumps(served) and "arm" not in json.dumps(served)

        page.type("#judge-name", "ada")
        page.click("#start")
        page.wait_for("document.body.dataset.state === 'judging'")
        first = page.eval("document.getElementById('pair').dataset.pairId")
        left_text = page.eval("document.querySelector('#side-left .transcript').textContent")
        assert left_text == next(p for p in pairs if p["id"] == first)["left"]["transcript"]
        # Both sides are styled identically: same font, size and box.
        styles = page.eval(
            "['left','right'].map(s => { const c = getComputedStyle(document.querySelector('#side-' + s + ' .transcript'));"
            " return [c.fontFamily, c.fontSize, c.backgroundColor, c.whiteSpace]; })"
        )
        assert styles[0] == styles[1]

        page.click("#choose-left")  # a mouse click
        page.wait_for(f"document.getElementById('pair').dataset.pairId !== {json.dumps(first)}")
        second = page.eval("document.getElementById('pair').dataset.pairId")
        page.key("2")  # keyboard: right
        page.wait_for(f"document.getElementById('pair').dataset.pairId !== {json.dumps(second)}")
        third = page.eval("document.getElementById('pair').dataset.pairId")
        page.click("#choose-right")
        page.wait_for(f"document.getElementById('pair').dataset.pairId !== {json.dumps(third)}")
        progress = page.eval("document.getElementById('progress').textContent")
        assert progress.startswith("ada: 3 of"), progress

        # A reload resumes where this judge stopped instead of asking again.
        page.eval("location.reload()")
        time.sleep(0.3)
        page.wait_for("document.body.dataset.state === 'ready'")
        page.click("#start")  # the name was remembered
        page.wait_for("document.body.dataset.state === 'judging'")
        assert page.eval("document.getElementById('progress').textContent").startswith("ada: 3 of")

    verdicts = read_jsonl(ab_dir / "verdicts.jsonl")
    assert [(v["pair_id"], v["choice"], v["judge"]) for v in verdicts] == [
        (first, "left", "ada"), (second, "right", "ada"), (third, "right", "ada")
    ]
    assert all(isinstance(v["ms"], int) for v in verdicts)
    report = build_report(pairs, key, [], verdicts)
    judged = report["judges"]["human:ada"]
    assert judged["confusion"]["n"] + judged["control"]["n"] == 3
    assert report["headline_judge"] == "human (all)"
