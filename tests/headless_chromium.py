"""Drive the system's headless Chromium over the DevTools protocol, with nothing but the stdlib.

Chromium's `--remote-debugging-pipe` speaks the DevTools protocol on file descriptors 3 (commands
in) and 4 (replies and events out), NUL-separated JSON, so neither a websocket library nor a
driver binary is needed. The pipes are moved to fds 3 and 4 by `bash -c 'exec ... 3<&N 4>&M'`
instead of a preexec_fn, which is unsafe in a process with threads (the test's server runs in one).

    with Chromium() as browser:
        page = browser.open("http://127.0.0.1:8766/")
        page.wait_for("document.body.dataset.state === 'ready'")
        page.click("#choose-left")                 # a real mouse press/release at the element
        page.key("2")                              # a real key press
        page.eval("document.title")
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from typing import Any, Optional

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--remote-debugging-pipe",
]


def find_chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class ProtocolError(RuntimeError):
    pass


def _dup_above(fd: int, lowest: int) -> int:
    """A copy of `fd` numbered `lowest` or higher; the original is closed."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, lowest)
    os.close(fd)
    return high


class Chromium:
    def __init__(self, binary: Optional[str] = None, timeout: float = 30.0, startup_timeout: float = 60.0):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise FileNotFoundError("no Chromium on PATH (Debian: apt-get install chromium)")
        self.timeout = timeout
        self.startup_timeout = startup_timeout

    def __enter__(self) -> "Chromium":
        # A first launch on a fresh machine can stall (font caches, a profile being made); one
        # relaunch with a fresh profile is cheaper than a red CI run, and a second stall is real.
        for attempt in (1, 2):
            self._launch()
            try:
                self.send("Browser.getVersion", timeout=self.startup_timeout)
                return self
            except (TimeoutError, ProtocolError) as error:
                log = self._stderr_tail()
                self._close(kill=True)
                if attempt == 2:
                    raise type(error)(f"{error} after {self.startup_timeout:.0f} s, twice; Chromium's stderr:\n{log}") from None
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        self._next_id, self._buffer, self._events = 0, b"", []
        self.user_dir = tempfile.mkdtemp(prefix="understudy-chromium-")
        to_child_r, self._write_fd = os.pipe()
        self._read_fd, from_child_w = os.pipe()
        # The child's ends move to 3 and 4 below; kept at 10 or above they cannot be 3 or 4
        # themselves, which would make `3<&4 4>&M 4<&-` close the very pipe it just set up.
        to_child_r, from_child_w = (_dup_above(fd, 10) for fd in (to_child_r, from_child_w))
        script = f'exec "$0" "$@" 3<&{to_child_r} 4>&{from_child_w} {to_child_r}<&- {from_child_w}>&-'
        self._stderr = open(os.path.join(self.user_dir, "stderr.log"), "wb")
        self.proc = subprocess.Popen(
            ["bash", "-c", script, self.binary, *FLAGS, f"--user-data-dir={self.user_dir}", "about:blank"],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
        )
        os.close(to_child_r)
        os.close(from_child_w)

    def _stderr_tail(self, lines: int = 15) -> str:
        """Chromium's last words, without the D-Bus complaints every container prints."""
        try:
            with open(os.path.join(self.user_dir, "stderr.log"), errors="replace") as f:
                kept = [line.rstrip() for line in f if "dbus" not in line]
        except OSError:
            return "(no stderr log)"
        return "\n".join(kept[-lines:]) or "(empty)"

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        self._close()

    def _close(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._write_fd, self._read_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stderr.close()
        shutil.rmtree(self.user_dir, ignore_errors=True)

    # -- protocol ------------------------------------------------------------------------------

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium")
            ready, _, _ = select.select([self._read_fd], [], [], left)
            if ready:
                chunk = os.read(self._read_fd, 1 << 16)
                if not chunk:
                    raise ProtocolError(f"Chromium closed the pipe (exit code {self.proc.poll()})")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: Optional[dict] = None, session: Optional[str] = None, timeout: Optional[float] = None) -> dict:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ProtocolError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def open(self, url: str) -> "Page":
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.wait_for("document.readyState === 'complete'")
        return page


class Page:
    def __init__(self, browser: Chromium, session: str):
        self.browser, self.session = browser, session

    def eval(self, expression: str) -> Any:
        result = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=self.session,
        )
        if "exceptionDetails" in result:
            raise ProtocolError(f"{expression!r} threw: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    def wait_for(self, condition: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(f"(() => {{ try {{ return {condition}; }} catch (e) {{ return false; }} }})()")
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {condition}")
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """A real mouse press and release at the element's centre (not element.click())."""
        box = self.eval(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            f" return [r.left + r.width / 2, r.top + r.height / 2]; }})()"
        )
        x, y = box
        self.eval(f"document.querySelector({json.dumps(selector)}).scrollIntoView({{block: 'center'}})")
        x, y = self.eval(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            f" return [r.left + r.width / 2, r.top + r.height / 2]; }})()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.browser.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
                              session=self.session)

    def type(self, selector: str, text: str) -> None:
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        self.browser.send("Input.insertText", {"text": text}, session=self.session)

    def key(self, key: str) -> None:
        code = {"1": ("Digit1", 49), "2": ("Digit2", 50), "Enter": ("Enter", 13)}.get(key, (key, ord(key[0])))
        for kind in ("keyDown", "keyUp"):
            params = {"type": kind, "key": key, "code": code[0], "windowsVirtualKeyCode": code[1]}
            if kind == "keyDown" and len(key) == 1:
                params["text"] = key
            self.browser.send("Input.dispatchKeyEvent", params, session=self.session)
