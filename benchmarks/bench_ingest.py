"""Ingest throughput (spool → committed traces) and Stop → trace-committed latency.

    .venv/bin/python benchmarks/bench_ingest.py [--prompts 2000] [--latency-prompts 40]

Targets (issue 2): ≥ 5,000 events/s ingested; p95 Stop → committed ≤ 1 s with the daemon
running. Printed side by side with a baseline measured in the same run: just reading and
parsing the same spool files, so the ratio shows what assembly, redaction, analysis and
SQLite commits add on this machine today.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.spool_factory import write_event, write_session  # noqa: E402

OUTPUT = "total 16\n" + "-rw-r--r-- 1 dev dev 4096 Nov 25 17:39 file.txt\n" * 40


def fill(spool: Path, prompts: int) -> int:
    events = 0
    for i in range(prompts):
        events += len(write_session(spool, f"bench-{i // 5}", f"p-{i}", f"benchmark prompt {i}: compare a and b",
                                    [("Bash", {"command": f"ls {i}"}, OUTPUT), ("Read", {"file_path": f"/f{i}"}, OUTPUT),
                                     ("Grep", {"pattern": "x"}, OUTPUT)],
                                    "An answer that is long enough to look like a real one. " * 5))
    return events


def throughput(prompts: int) -> tuple[float, float, int]:
    from capture_daemon import paths
    from capture_daemon.ingest import IngestSettings, Ingestor
    from capture_daemon.spool import pending_names, read_event
    from capture_daemon.store import TraceStore

    events = fill(paths.spool_dir(), prompts)
    start = time.perf_counter()
    for name in pending_names(paths.spool_dir()):
        read_event(os.path.join(paths.spool_dir(), name))
    parse_rate = events / (time.perf_counter() - start)

    start = time.perf_counter()
    with TraceStore.open() as store:
        ingestor = Ingestor(store, paths.spool_dir(), paths.quarantine_dir(), IngestSettings(settle_seconds=0))
        ingestor.scan()
        committed = ingestor.finalize_ready()
    ingest_rate = events / (time.perf_counter() - start)
    assert committed == prompts, (committed, prompts)
    return ingest_rate, parse_rate, events


def latency(prompts: int) -> list[float]:
    from capture_daemon import paths
    from capture_daemon.schema import make_trace_id
    from capture_daemon.store import TraceStore

    daemon = subprocess.Popen([sys.executable, "-m", "capture_daemon.cli", "run"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        while not paths.pid_file().exists():
            time.sleep(0.01)
        samples = []
        spool = paths.spool_dir()
        with TraceStore.open() as store:
            for i in range(prompts):
                session, prompt = "latency", f"lat-{i}"
                write_session(spool, session, prompt, f"latency prompt {i}", [("Bash", {"command": "ls"}, OUTPUT)],
                              "done", stop=False)
                stopped_at = time.perf_counter()
                write_event(spool, "Stop", {"session_id": session, "prompt_id": prompt, "cwd": "/tmp",
                                            "last_assistant_message": "done", "background_tasks": []})
                trace_id = make_trace_id(session, prompt)
                while not store.has_trace(trace_id):
                    time.sleep(0.002)
                samples.append(time.perf_counter() - stopped_at)
        return samples
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--latency-prompts", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["UNDERSTUDY_HOME"] = str(Path(tmp) / "throughput")
        ingest_rate, parse_rate, events = throughput(args.prompts)
        os.environ["UNDERSTUDY_HOME"] = str(Path(tmp) / "latency")
        samples = latency(args.latency_prompts)
    p50 = statistics.median(samples)
    p95 = sorted(samples)[max(0, int(len(samples) * 0.95) - 1)]
    print(f"ingest: {events} events ({args.prompts} prompts)")
    print(f"  full ingest          {ingest_rate:10.0f} events/s   target 5000/s: {ingest_rate / 5000:.2f}x of target")
    print(f"  read+parse baseline  {parse_rate:10.0f} events/s   full ingest runs at {ingest_rate / parse_rate:.2f}x of baseline")
    print(f"Stop → committed: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms over {len(samples)} prompts "
          f"(target p95 ≤ 1000 ms: {p95:.2f}x of target)")


if __name__ == "__main__":
    main()
