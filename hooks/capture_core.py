"""What the capture hook does: write one hook event to understudy's spool, then get out of the way.

hooks/capture_hook.py is the command Claude Code runs; it only imports this module, which
Python compiles once and caches in hooks/__pycache__ (compiling this file on every tool call
cost more than everything else the hook does). Claude Code runs the hook synchronously on
every tool call, so it is built to be nearly free and harmless:

* standard library only, started with ``-I -S`` (no site-packages, no user paths);
* it never writes to stdout (for UserPromptSubmit and SessionStart, stdout is injected
  into Claude's context) and always exits 0, whatever happens;
* it never loses an event silently: whatever goes wrong is spooled as far as it got and
  logged, one line without payload content, to ``logs/hook-errors.log``
  (``capture-daemon status`` shows it);
* a deadline (5 s) bounds its running time even if stdin never closes or the disk hangs;
* the payload is not parsed unless it is too large to keep whole: the daemon parses it;
* on the usual path it imports nothing that ``python -I -S`` has not loaded already:
  ``posix`` stands in for ``os`` (~1 ms: it pulls in posixpath, stat, _collections_abc),
  ``_signal`` for ``signal`` (~5 ms, it pulls in ``enum``); ``os``, ``json`` (~9 ms, it
  pulls in ``re``) and ``fcntl`` are imported only on the rare paths that need them
  (oversized payloads, errors, the deadline, SessionStart). Measure with
  benchmarks/bench_hook.py before adding an import.

Spool file layout (one file per event, written to ``spool/tmp`` and renamed into
``spool/`` so no reader ever sees half a file)::

    {"v": 1, "event": "PostToolUse", "received_ns": ..., "bytes": N, ...}\n
    <the JSON Claude Code wrote to stdin, byte for byte, or a reduced copy>

A payload over 1 MiB is parsed and its long strings cut (header ``truncated``,
``original_bytes``, ``cut_strings``). One that cannot be reduced (over 64 MiB, not reduced
within REDUCE_BUDGET_SECONDS of the hook's start, not a JSON object, nested too deep) or
whose stdin never closed is kept as its first 1 MiB followed by its last ``tail_bytes``
bytes (so ids written last, like ``tool_use_id``, survive), with ``"unparsed": true,
"truncated": true, "original_bytes": N, "lost_reason": "..."`` in the header; the daemon
salvages the ids from those bytes and records the loss on the trace.

File names sort in arrival order and never contain anything taken from the payload.

SessionStart also brings the capture daemon back when it is not running (after a reboot,
crash or kill): see ``ensure_daemon``.
"""

import _signal  # the C module behind `signal`, without its enum wrappers (~5 ms to import)
import sys
import time

try:
    import posix  # the C module behind `os`, loaded at interpreter start: free to import
except ImportError:  # Windows
    import os as posix

STARTED = time.monotonic()  # about when the hook started: the reduce budget counts from here

SPOOL_FORMAT_VERSION = 1
# Payloads up to this size are spooled byte for byte, unparsed.
KEEP_WHOLE_BYTES = 1 << 20
# Larger ones are parsed and their long strings cut; past this, not even parsed.
PARSE_LIMIT_BYTES = 64 << 20
# Each string in a reduced payload keeps at most this many characters.
MAX_STRING_CHARS = 256 << 10
# A payload that could not be reduced keeps its first KEEP_WHOLE_BYTES and its last TAIL_BYTES.
TAIL_BYTES = 64 << 10
# Reducing stops this long after the hook started, well inside the deadline, so that what
# was read can still be spooled (with a marker) before the deadline.
REDUCE_BUDGET_SECONDS = 2.5
# At this point the hook spools what it has, logs why, and exits 0, whatever it is doing.
DEADLINE_SECONDS = 5
READ_CHUNK = 1 << 20

# Files in the data dir shared with capture_daemon (see capture_daemon/paths.py).
PAUSED_FILE = "paused"
STOPPED_FILE = "stopped"
DAEMON_CMD_FILE = "daemon.cmd"
DAEMON_LOCK_FILE = "daemon.lock"

# Exit codes of the child process that reduces a payload: 0 reduced, these for why not,
# anything else (an exception, a crash) is "reduce_failed".
_REASON_CODES = {"not_json": 3, "too_deep": 4}
_CODE_REASONS = {code: reason for reason, code in _REASON_CODES.items()}


class Hook:
    """What this run has done so far, so the deadline can spool and report it."""

    def __init__(self, base, event):
        self.base = base
        self.event = event
        self.phase = "starting"  # reading, reducing, writing, starting-daemon, done
        self.paused = False
        self.chunks = []  # the payload's first PARSE_LIMIT_BYTES (and a little more)
        self.kept_bytes = 0
        self.tail = b""  # the last TAIL_BYTES read past the kept chunks
        self.total = 0
        self.header = None
        self.name = None  # the spool file's name, set with the header
        self.tmp_path = None
        self.child = None  # the pid of the process reducing the payload, while it runs

    # --- reading ------------------------------------------------------------------------

    def read_stdin(self):
        """Read all of stdin; keep the first PARSE_LIMIT_BYTES and the last TAIL_BYTES, count the rest.

        Draining everything matters: a writer blocked on a full pipe would hang Claude Code.
        posix.read returns what is there, so at the deadline ``chunks`` holds all that came.
        """
        self.phase = "reading"
        read = posix.read
        while True:
            chunk = read(0, READ_CHUNK)
            if not chunk:
                break
            if self.paused:
                continue
            self.total += len(chunk)
            if self.kept_bytes < PARSE_LIMIT_BYTES:
                self.chunks.append(chunk)
                self.kept_bytes += len(chunk)
            else:
                self.tail = (self.tail + chunk)[-TAIL_BYTES:]

    def head_and_tail(self):
        """(first KEEP_WHOLE_BYTES, last bytes not in the head, at most TAIL_BYTES) of what was read."""
        head = b"".join(self.chunks[:2])[:KEEP_WHOLE_BYTES]  # chunks are at most READ_CHUNK each
        if len(head) < KEEP_WHOLE_BYTES:
            head = b"".join(self.chunks)[:KEEP_WHOLE_BYTES]
        room = min(TAIL_BYTES, self.total - len(head))
        if room <= 0:
            return head, b""
        last = b""
        for chunk in reversed(self.chunks):  # the kept chunks' last TAIL_BYTES
            last = chunk[-(TAIL_BYTES - len(last)):] + last
            if len(last) >= TAIL_BYTES:
                break
        return head, (last + self.tail)[-room:]

    # --- writing ------------------------------------------------------------------------

    def new_header(self):
        received_ns = time.time_ns()
        self.header = {"v": SPOOL_FORMAT_VERSION, "event": self.event, "received_ns": received_ns,
                       "bytes": self.total}
        # Time first so names sort in arrival order; pid keeps concurrent hooks apart.
        event = self.event if self.event.isalnum() else "Unknown"
        self.name = "%020d-%07d-%s.event" % (received_ns, posix.getpid(), event)
        return self.header

    def write(self, parts, tmp_suffix=""):
        """Write parts to spool/tmp/NAME[suffix]; return that path (rename it to publish)."""
        self.phase = "writing"
        tmp_dir = self.base + "/spool/tmp"
        tmp_path = self.tmp_path = tmp_dir + "/" + self.name + tmp_suffix
        flags = posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL
        try:
            fd = posix.open(tmp_path, flags, 0o600)
        except FileNotFoundError:  # first event in this data dir: make the folders, once
            import os

            os.makedirs(tmp_dir, mode=0o700, exist_ok=True)
            fd = posix.open(tmp_path, flags, 0o600)
        try:
            for part in parts:
                view = memoryview(part)
                while view:
                    view = view[posix.write(fd, view):]
        except BaseException:
            posix.close(fd)
            posix.unlink(tmp_path)
            raise
        posix.close(fd)
        return tmp_path

    def publish(self, tmp_path):
        posix.rename(tmp_path, self.base + "/spool/" + self.name)
        self.tmp_path = None

    def spool(self, body):
        self.publish(self.write((encode_header(self.header) + b"\n", body)))

    def spool_lost(self, reason, why="payload not parseable"):
        """Spool the head and tail of what was read, marked as cut; log one line about it."""
        head, tail = self.head_and_tail()
        self.header.update({"unparsed": True, "truncated": True, "original_bytes": self.total,
                            "lost_reason": reason})
        if tail:
            self.header["tail_bytes"] = len(tail)
        self.publish(self.write((encode_header(self.header) + b"\n", head, tail)))
        log_error(self.base, "hook %s: %s (%s); spooled the first %d and last %d of its %d bytes with a marker"
                  % (self.event, why, reason, len(head), len(tail), self.total))

    # --- the event ----------------------------------------------------------------------

    def run(self):
        if exists(self.base + "/" + PAUSED_FILE):
            # `capture-daemon pause`: drain stdin so Claude Code never blocks, keep nothing.
            self.paused = True
            self.read_stdin()
            self.phase = "done"
            return
        self.read_stdin()
        self.new_header()
        if self.total == 0:
            self.phase = "done"
            log_error(self.base, "hook %s: empty stdin, nothing spooled" % self.event)
        elif self.total <= KEEP_WHOLE_BYTES:
            self.spool(self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks))
        elif self.total > PARSE_LIMIT_BYTES:
            self.spool_lost("too_big_to_reduce", "over the %d MiB parse limit" % (PARSE_LIMIT_BYTES >> 20))
        else:
            self.spool_reduced()
        self.phase = "done"

    def spool_reduced(self):
        """Parse and cut an oversized payload in a child process, given until the reduce budget.

        A child because json.loads is one C call that no signal interrupts: a 60 MB payload
        could take the hook past its deadline. The child writes the reduced file; this
        process publishes it, or kills the child when time is up and spools the marker.
        """
        import os

        budget_end = STARTED + REDUCE_BUDGET_SECONDS
        if not hasattr(os, "fork"):  # no fork (Windows): reduce here, the deadline still applies
            reason = reduce_into(self, "")
            if reason is None:
                self.publish(self.tmp_path)
            else:
                self.spool_lost(reason, "payload not parseable")
            return
        out_of_time = "not reduced within %gs of the hook's start" % REDUCE_BUDGET_SECONDS
        if time.monotonic() >= budget_end:
            self.spool_lost("too_big_to_reduce", out_of_time)
            return
        self.phase = "reducing"
        child_tmp = os.path.join(self.base, "spool", "tmp", self.name + ".reduced")
        os.makedirs(os.path.dirname(child_tmp), mode=0o700, exist_ok=True)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _signal.signal(_signal.SIGALRM, _signal.SIG_DFL)  # orphaned, it still dies
                _signal.alarm(DEADLINE_SECONDS)
                reason = reduce_into(self, ".reduced")
                code = 0 if reason is None else _REASON_CODES[reason]
            finally:
                os._exit(code)
        self.child = pid
        status = None
        while status is None:
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if done:
                status = wait_status
            elif time.monotonic() >= budget_end:
                os.kill(pid, _signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            else:
                time.sleep(0.002)
        self.child = None
        code = os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else None
        if code == 0:
            self.publish(child_tmp)
            return
        try:
            os.unlink(child_tmp)
        except OSError:
            pass
        if status is None:
            self.spool_lost("too_big_to_reduce", out_of_time)
        elif code in _CODE_REASONS:
            self.spool_lost(_CODE_REASONS[code])
        else:
            self.spool_lost("reduce_failed", "reducing it failed (exit status %s)" % status)


def reduce_into(hook, tmp_suffix):
    """Write the reduced payload to spool/tmp (not published); None, or why it could not be."""
    import json  # only oversized payloads pay for it

    try:
        payload = json.loads(b"".join(hook.chunks))
        if not isinstance(payload, dict):
            return "not_json"
        cuts = []
        payload = cut_long_strings(payload, cuts)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    except RecursionError:  # nested deeper than the interpreter's stack allows
        return "too_deep"
    except ValueError:  # includes UnicodeDecodeError
        return "not_json"
    header = dict(hook.header, truncated=True, original_bytes=hook.total, cut_strings=len(cuts))
    hook.write((encode_header(header) + b"\n", body), tmp_suffix)
    return None


def cut_long_strings(value, cuts):
    """Return value with every string longer than MAX_STRING_CHARS cut, marking each cut."""
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            cuts.append(len(value))
            return value[:MAX_STRING_CHARS] + "\n[understudy: truncated, original %d chars]" % len(value)
        return value
    if isinstance(value, dict):
        return {k: cut_long_strings(v, cuts) for k, v in value.items()}
    if isinstance(value, list):
        return [cut_long_strings(v, cuts) for v in value]
    return value


def encode_header(header):
    """The header as JSON, byte for byte what ``json.dumps(header)`` gives.

    Written by hand for the usual fields (ints, bools, ascii words like an event name or a
    lost_reason) because importing json would cost more than everything else the hook does.
    """
    parts = []
    for key, value in header.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        elif isinstance(value, str) and value.isascii() and value.replace("_", "a").isalnum():
            text = '"%s"' % value
        else:
            import json

            return json.dumps(header).encode()
        parts.append('"%s": %s' % (key, text))
    return ("{" + ", ".join(parts) + "}").encode()


def log_error(base, message):
    """Append one line to logs/hook-errors.log; never a payload's content, never raises."""
    try:
        import os

        line = "%s\t%s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), message.replace("\n", " ")[:500])
        path = os.path.join(base, "logs", "hook-errors.log")
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, flags, 0o600)
        try:
            os.write(fd, line.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except Exception:
        pass  # Nowhere left to report to; staying silent is still better than failing the hook.


# --- the deadline -------------------------------------------------------------------------


def on_deadline(hook):
    """At DEADLINE_SECONDS: spool what was read (marked), log what happened, exit 0."""
    import os

    # Whatever this handler does is bounded too: a second alarm ends the process outright.
    _signal.signal(_signal.SIGALRM, lambda *_: os._exit(0))
    _signal.alarm(1)
    try:
        phase = hook.phase
        what = "still %s after the %ds deadline" % (phase, DEADLINE_SECONDS)
        if phase == "reading" and hook.paused:
            log_error(hook.base, "hook %s: stdin not closed after %ds (capture paused: nothing kept); gave up"
                      % (hook.event, DEADLINE_SECONDS))
        elif phase == "reading":
            hook.new_header()
            if hook.total:
                hook.spool_lost("stdin_not_closed", "stdin not closed after %ds" % DEADLINE_SECONDS)
            else:
                log_error(hook.base, "hook %s: stdin not closed after %ds and nothing read; nothing spooled"
                          % (hook.event, DEADLINE_SECONDS))
        elif phase == "reducing" and hook.header is not None:
            if hook.child:  # it would publish nothing, but it would leave its file behind
                os.kill(hook.child, _signal.SIGKILL)
                os.waitpid(hook.child, 0)
                try:
                    os.unlink(hook.base + "/spool/tmp/" + hook.name + ".reduced")
                except OSError:
                    pass
            hook.spool_lost("deadline", what)
        else:
            if hook.tmp_path:
                try:
                    os.unlink(hook.tmp_path)
                except OSError:
                    pass
            log_error(hook.base, "hook %s: %s; gave up" % (hook.event, what))
    except BaseException as exc:  # noqa: BLE001
        log_error(hook.base, "hook %s: deadline handling failed: %s" % (hook.event, type(exc).__name__))
    os._exit(0)


# --- bringing the daemon back -------------------------------------------------------------


def ensure_daemon(hook):
    """SessionStart: start the capture daemon, fully detached, if it is not running.

    Only where ``capture-daemon start`` has run: it writes ``daemon.cmd`` (the argv that runs
    the daemon, as JSON), which this stdlib-only hook could not work out (the venv's python)
    and a plugin's hooks.json cannot name. ``capture-daemon stop`` writes ``stopped``, and
    while it exists nothing is started (until the next ``capture-daemon start``); while
    capture is paused the hook does nothing at all. The daemon is alive when someone holds
    the lock on ``daemon.lock`` (the daemon holds it for its whole life, as
    capture_daemon.daemon.running_pid checks). The pid file is not needed for that: the lock
    alone decides, so a daemon that has the lock but has not yet written its pid gets no
    twin. Two sessions starting at once may both start one; the second exits at once
    because it cannot take the lock.
    """
    import os

    base = hook.base
    hook.phase = "starting-daemon"
    try:
        with open(os.path.join(base, DAEMON_CMD_FILE), "rb") as handle:
            raw = handle.read(65536)
    except OSError:
        return  # `capture-daemon start` never ran for this data dir (or it is broken: logged already)
    if os.path.exists(os.path.join(base, STOPPED_FILE)) or daemon_alive(base):
        return
    import json

    argv = json.loads(raw)
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError("%s is not a JSON list of strings" % DAEMON_CMD_FILE)
    if not os.access(argv[0], os.X_OK):  # the venv moved or was deleted
        raise FileNotFoundError("%s names %s, which cannot be run; run `capture-daemon start` again"
                                % (DAEMON_CMD_FILE, argv[0]))
    logs = os.path.join(base, "logs")
    os.makedirs(logs, mode=0o700, exist_ok=True)
    env = dict(os.environ, UNDERSTUDY_HOME=base)  # the daemon serves exactly this data dir
    pid = os.fork()
    if pid == 0:  # the first child: a new session, then a grandchild that is nobody's child
        try:
            os.setsid()
            if os.fork() == 0:
                exec_daemon(base, argv, env)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)  # the first child exits at once


def exec_daemon(base, argv, env):
    """Become the daemon: cwd /, stdin /dev/null, stdout and stderr logs/daemon.log (as `start` runs it)."""
    import os

    try:
        os.chdir("/")  # never the session's cwd: `python -m` would import from it
        null = os.open(os.devnull, os.O_RDWR)
        log = os.open(os.path.join(base, "logs", "daemon.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        # Claude Code waits for the hook's stdout and stderr to close: keep none of them.
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, 1 << 16)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.write(2, ("%s\tstarted by the SessionStart hook: the daemon was not running\n" % now).encode())
        os.execve(argv[0], argv, env)
    except BaseException as exc:  # noqa: BLE001
        try:
            os.write(2, ("could not start %s: %s\n" % (argv[0], exc)).encode("utf-8", "replace"))
        except BaseException:  # noqa: BLE001
            pass
    os._exit(127)


def daemon_alive(base):
    import fcntl
    import os

    try:
        fd = os.open(os.path.join(base, DAEMON_LOCK_FILE), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases our probe lock
    return False


def exists(path):
    try:
        posix.stat(path)
    except OSError:
        return False
    return True


def getenv(name):
    """os.environ.get(name), from posix.environ (bytes on POSIX, as os.fsdecode decodes it)."""
    value = posix.environ.get(name.encode() if posix.__name__ == "posix" else name)
    if isinstance(value, bytes):
        value = value.decode(sys.getfilesystemencoding(), "surrogateescape")
    return value


def data_dir():
    """Mirror of capture_daemon.paths.data_dir (stdlib only: this file cannot import it)."""
    home = getenv("UNDERSTUDY_HOME")
    if home:
        return home
    xdg = getenv("XDG_DATA_HOME")
    if not xdg:
        home = getenv("HOME")
        if not home:
            import os

            home = os.path.expanduser("~")
        xdg = home + "/.local/share"
    return xdg + "/understudy"


def main():
    event = sys.argv[1] if len(sys.argv) > 1 else "Unknown"
    hook = Hook(data_dir(), event)
    try:
        posix.umask(0o077)
        if hasattr(_signal, "SIGALRM"):
            _signal.signal(_signal.SIGALRM, lambda *_: on_deadline(hook))  # noqa: ARG005
            _signal.alarm(DEADLINE_SECONDS)
        hook.run()
    except BaseException as exc:  # noqa: BLE001 - a hook must never fail Claude Code
        log_error(hook.base, "hook %s: %s while %s: %s" % (event, type(exc).__name__, hook.phase, exc))
    if event == "SessionStart" and not hook.paused:  # even when spooling failed
        try:
            ensure_daemon(hook)
        except BaseException as exc:  # noqa: BLE001
            log_error(hook.base, "hook %s: %s while %s: %s" % (event, type(exc).__name__, hook.phase, exc))
    posix._exit(0)
