"""Claude Code hook: write one hook event to understudy's spool, then get out of the way.

Registered for every hook event as

    /abs/path/to/python3 -I -S /abs/path/to/hooks/capture_hook.py EVENT

Everything it does is in hooks/capture_core.py (read that). This file only imports it: Python
runs a script from source, compiling it on every start, but caches an imported module's
bytecode in hooks/__pycache__, and compiling the hook on every tool call cost more than
everything else it does (benchmarks/bench_hook.py). ``-I`` leaves this folder off sys.path,
so it is added, last, so that it can never shadow the standard library. Not even ``os`` is
imported here: it costs ~1 ms that ``python -I -S`` does not otherwise spend.
"""

import sys

sys.path.append(__file__.rpartition("/")[0] or ".")

try:
    import capture_core
except BaseException as exc:  # noqa: BLE001 - a hook must never fail Claude Code, nor print
    try:  # say so where `capture-daemon status` looks (capture_core.log_error, inlined)
        import os

        base = os.environ.get("UNDERSTUDY_HOME") or os.path.join(
            os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "understudy")
        os.makedirs(os.path.join(base, "logs"), mode=0o700, exist_ok=True)
        with open(os.path.join(base, "logs", "hook-errors.log"), "a") as log:
            log.write("hook %s: cannot import capture_core: %s: %s\n" % (sys.argv[1:2], type(exc).__name__, exc))
    except BaseException:  # noqa: BLE001
        pass
    import posix

    posix._exit(0)

if __name__ == "__main__":
    capture_core.main()
