"""`capture-daemon ui`'s guards without a browser (tests/test_ui_browser.py drives the pages)."""

from __future__ import annotations


def test_guards_without_a_browser(understudy_home, tmp_path):
    """Token off loopback, Host names on loopback, CSRF, path escapes; and no HTML-string API in the page."""
    from starlette.testclient import TestClient

    from capture_daemon.ui.app import STATIC, create_app

    local = TestClient(create_app(runs_dir=tmp_path), base_url="http://127.0.0.1:8765")
    assert local.get("/").status_code == 200
    assert TestClient(create_app(), base_url="http://attacker.example:8765").get("/api/traces").status_code == 421
    assert local.post("/api/curate", json={"action": "forget", "ids": []}).status_code == 403
    assert local.get("/runs/demo/../../etc/passwd").status_code == 404
    assert local.get("/static/app.py").status_code == 404
    shared = TestClient(create_app(token="s3cret", loopback=False), base_url="http://10.0.0.5:8765")
    assert shared.get("/api/traces").status_code == 401
    assert shared.get("/api/traces", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert shared.get("/api/traces", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    login = shared.get("/?token=s3cret", follow_redirects=False)
    assert login.status_code == 303 and "httponly" in login.headers["set-cookie"].lower()
    assert shared.get("/api/status").status_code == 200  # the cookie now
    for name in ("app.js", "index.html"):
        source = (STATIC / name).read_text()
        assert not any(api in source for api in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("))


def test_the_dashboard_does_not_import_the_training_stack():
    import subprocess
    import sys

    code = ("import sys, capture_daemon.cli, capture_daemon.ui.app\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'trainer', 'transformers', 'fastapi'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_clearing_a_verdict_while_config_is_broken_says_why(understudy_home, tmp_path):
    """"clear" judges the trace by config.toml's rules again: broken, that is a 409 naming the file
    (it was a bare 500), and the verdict stays until the file is fixed."""
    import re

    from starlette.testclient import TestClient

    from capture_daemon.store import TraceStore
    from capture_daemon.ui.app import create_app
    from tests.test_cli_traces import _store_sessions

    trace = next(iter(_store_sessions().values()))
    with TraceStore.open() as store:
        store.set_human_verdict([trace.trace_id], False)
    local = TestClient(create_app(runs_dir=tmp_path), base_url="http://127.0.0.1:8765")
    csrf = re.search(r'content="([^"]+)"', next(line for line in local.get("/").text.splitlines() if "csrf" in line)).group(1)
    (understudy_home / "config.toml").write_text('[quality]\nmin_score = "x"\n')
    clear = {"action": "clear", "ids": [trace.trace_id]}
    refused = local.post("/api/curate", json=clear, headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"].startswith(f"{understudy_home / 'config.toml'}: [quality] min_score") and "fix config.toml" in refused.json()["error"]
    with TraceStore.open() as store:
        assert store.human_verdicts() == {trace.trace_id: False}
    (understudy_home / "config.toml").unlink()
    assert local.post("/api/curate", json=clear, headers={"X-CSRF-Token": csrf}).json() == {"changed": 1}
