"""Hook overhead: the registered capture-hook command vs the bare interpreter start it uses.

    .venv/bin/python benchmarks/bench_hook.py            # 200 runs of each, interleaved
    .venv/bin/python benchmarks/bench_hook.py -n 50 --payload-kb 50

Claude Code runs the hook synchronously on every tool call, so what matters is how much it
adds on top of starting ``python -I -S`` at all. Both commands are spawned the same way
(argv, no shell) and alternate run by run, so drift in machine load hits both alike.
Target: median(hook) / median(bare start) <= 1.2.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from capture_daemon import hooks_config  # noqa: E402

TARGET_RATIO = 1.2


def post_tool_use_payload(size_kb: int) -> bytes:
    """A PostToolUse event shaped like Claude Code's, with a Bash output of about size_kb."""
    line = "-rw-r--r-- 1 dev dev  4096 Nov 25 17:39 some_file_name.py\n"
    stdout = (line * (size_kb * 1024 // len(line) + 1))[: size_kb * 1024]
    event = {
        "session_id": "c9a30350-1aa6-4cf7-b5b8-b925479311b4",
        "transcript_path": "/home/dev/.claude/projects/-home-dev-project/c9a30350.jsonl",
        "cwd": "/home/dev/project",
        "prompt_id": "5d1a5f96-a02d-4fdf-a23d-1d571079093d",
        "permission_mode": "default",
        "hook_event_name": "PostToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": "ls -la", "description": "List files"},
        "tool_response": {"stdout": stdout, "stderr": "", "interrupted": False, "isImage": False},
        "tool_use_id": "toolu_01",
        "duration_ms": 18,
    }
    return json.dumps(event).encode()


def timed(argv: list[str], stdin_path: str, env: dict) -> float:
    with open(stdin_path, "rb") as stdin:
        start = time.perf_counter()
        subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, env=env, check=True)
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=200, help="runs of each command (default 200)")
    parser.add_argument("--payload-kb", type=int, default=50, help="PostToolUse payload size (default 50)")
    args = parser.parse_args()

    hook_argv = shlex.split(hooks_config.hook_command("PostToolUse"))
    bare_argv = [hook_argv[0], "-I", "-S", "-c", "pass"]
    with tempfile.TemporaryDirectory(prefix="bench-hook-") as tmp:
        payload = Path(tmp, "payload.json")
        payload.write_bytes(post_tool_use_payload(args.payload_kb))
        payload_bytes = payload.stat().st_size
        data_dir = Path(tmp, "understudy")
        env = dict(os.environ, UNDERSTUDY_HOME=str(data_dir))
        spool = data_dir / "spool"

        for _ in range(5):  # warm the page cache for both
            timed(hook_argv, str(payload), env)
            timed(bare_argv, os.devnull, env)
        hook_s, bare_s = [], []
        for i in range(args.runs):
            hook_s.append(timed(hook_argv, str(payload), env))
            bare_s.append(timed(bare_argv, os.devnull, env))
            if i % 50 == 49:  # keep the spool folder small, as the daemon would
                for f in spool.glob("*.event"):
                    f.unlink()
        events_ok = not (data_dir / "logs" / "hook-errors.log").exists()

    hook_med, bare_med = statistics.median(hook_s), statistics.median(bare_s)
    ratio = hook_med / bare_med
    p90 = lambda xs: statistics.quantiles(xs, n=10)[-1]  # noqa: E731
    print(f"interpreter: {hook_argv[0]}")
    print(f"payload: PostToolUse, {payload_bytes} bytes; "
          f"{args.runs} runs each, interleaved")
    print(f"bare start (-I -S -c pass): median {bare_med * 1e3:6.2f} ms   p90 {p90(bare_s) * 1e3:6.2f} ms")
    print(f"hook command              : median {hook_med * 1e3:6.2f} ms   p90 {p90(hook_s) * 1e3:6.2f} ms")
    print(f"ratio hook / bare start   : {ratio:.2f}x (target <= {TARGET_RATIO}x) {'OK' if ratio <= TARGET_RATIO else 'MISSED'}")
    if not events_ok:
        print("warning: the hook logged errors during the run (see its hook-errors.log)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
