"""Claude Code hook: write one hook event to understudy's spool, then get out of the way.

Registered for every hook event as

    /abs/path/to/python3 -I -S /abs/path/to/hooks/capture_hook.py EVENT

Claude Code runs this synchronously on every tool call, so it is built to be nearly free
and harmless:

* standard library only, started with ``-I -S`` (no site-packages, no user paths);
* it never writes to stdout (for UserPromptSubmit and SessionStart, stdout is injected
  into Claude's context) and always exits 0, whatever happens;
* a watchdog alarm bounds its running time even if the disk hangs;
* the payload is not parsed unless it is too large to keep whole: the daemon parses it;
* it imports only what is already nearly free: ``json`` (~9 ms, it pulls in ``re``) is
  imported only for oversized payloads, and ``_signal`` stands in for ``signal`` (~5 ms,
  it pulls in ``enum``). Measure with benchmarks/bench_hook.py before adding an import.

Spool file layout (one file per event, written to ``spool/tmp`` and renamed into
``spool/`` so no reader ever sees half a file)::

    {"v": 1, "event": "PostToolUse", "received_ns": ..., "bytes": N, ...}\n
    <the JSON Claude Code wrote to stdin, byte for byte, or a reduced copy>

File names sort in arrival order and never contain anything taken from the payload.
Failures are appended to ``logs/hook-errors.log``, which ``capture-daemon status`` shows.
"""

import _signal  # the C module behind `signal`, without its enum wrappers (~5 ms to import)
import os
import sys
import time

SPOOL_FORMAT_VERSION = 1
# Payloads up to this size are spooled byte for byte, unparsed.
KEEP_WHOLE_BYTES = 1 << 20
# Larger ones are parsed and their long strings cut; past this, not even parsed.
PARSE_LIMIT_BYTES = 64 << 20
# Each string in a reduced payload keeps at most this many characters.
MAX_STRING_CHARS = 256 << 10
# The hook gives up (still exiting 0) after this long, whatever it is doing.
DEADLINE_SECONDS = 5
READ_CHUNK = 1 << 20


def data_dir():
    """Mirror of capture_daemon.paths.data_dir (stdlib only: this file cannot import it)."""
    home = os.environ.get("UNDERSTUDY_HOME")
    if home:
        return home
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(xdg, "understudy")


def read_stdin():
    """Read all of stdin; keep at most PARSE_LIMIT_BYTES, count the rest.

    Draining everything matters: a writer blocked on a full pipe would hang Claude Code.
    """
    stream = sys.stdin.buffer
    kept = []
    kept_bytes = 0
    total = 0
    while True:
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if kept_bytes < PARSE_LIMIT_BYTES:
            kept.append(chunk)
            kept_bytes += len(chunk)
    return b"".join(kept)[:PARSE_LIMIT_BYTES], total


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

    Written by hand for the usual fields (ints, bools, an alphanumeric event name) because
    importing json would cost more than everything else the hook does.
    """
    parts = []
    for key, value in header.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        elif isinstance(value, str) and value.isascii() and value.isalnum():
            text = '"%s"' % value
        else:
            import json

            return json.dumps(header).encode()
        parts.append('"%s": %s' % (key, text))
    return ("{" + ", ".join(parts) + "}").encode()


def reduce_payload(raw, total):
    """Shrink an oversized payload; return (body, header fields describing what was done)."""
    import json  # only oversized payloads pay for it

    if total <= PARSE_LIMIT_BYTES:
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            cuts = []
            payload = cut_long_strings(payload, cuts)
            body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
            return body, {"truncated": True, "original_bytes": total, "cut_strings": len(cuts)}
    # Unparseable or beyond the parse limit: keep the head only; the daemon quarantines it.
    return raw[:KEEP_WHOLE_BYTES], {"truncated": True, "original_bytes": total, "unparsed": True}


def log_error(base, message):
    try:
        logs = os.path.join(base, "logs")
        os.makedirs(logs, mode=0o700, exist_ok=True)
        line = "%s\t%s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), message.replace("\n", " ")[:500])
        fd = os.open(os.path.join(logs, "hook-errors.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except Exception:
        pass  # Nowhere left to report to; staying silent is still better than failing the hook.


def spool_event(base, event):
    if os.path.exists(os.path.join(base, "paused")):
        # `capture-daemon pause`: drain stdin so Claude Code never blocks, keep nothing.
        read_stdin()
        return
    raw, total = read_stdin()
    if total == 0:
        log_error(base, "hook %s: empty stdin, nothing spooled" % event)
        return
    header = {"v": SPOOL_FORMAT_VERSION, "event": event, "received_ns": time.time_ns(), "bytes": total}
    body = raw
    if total > KEEP_WHOLE_BYTES:
        body, extra = reduce_payload(raw, total)
        header.update(extra)

    spool = os.path.join(base, "spool")
    tmp_dir = os.path.join(spool, "tmp")
    os.makedirs(tmp_dir, mode=0o700, exist_ok=True)
    # Time first so names sort in arrival order; pid keeps concurrent hooks apart.
    name = "%020d-%07d-%s.event" % (header["received_ns"], os.getpid(), event if event.isalnum() else "Unknown")
    tmp_path = os.path.join(tmp_dir, name)
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, encode_header(header) + b"\n")
        view = memoryview(body)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except BaseException:
        os.close(fd)
        os.unlink(tmp_path)
        raise
    os.close(fd)
    os.rename(tmp_path, os.path.join(spool, name))


def main():
    event = sys.argv[1] if len(sys.argv) > 1 else "Unknown"
    base = data_dir()
    try:
        os.umask(0o077)
        if hasattr(_signal, "SIGALRM"):
            _signal.signal(_signal.SIGALRM, lambda *_: os._exit(0))
            _signal.alarm(DEADLINE_SECONDS)
        spool_event(base, event)
    except BaseException as exc:  # noqa: BLE001 - a hook must never fail Claude Code
        log_error(base, "hook %s: %s: %s" % (event, type(exc).__name__, exc))
    os._exit(0)


if __name__ == "__main__":
    main()
