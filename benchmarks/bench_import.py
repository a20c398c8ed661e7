"""Backfill speed: MB/s of Claude Code transcripts imported into the store (one core).

    .venv/bin/python benchmarks/bench_import.py [--sessions 300]

Target (issue 3): ≥ 50 MB/s. The corpus is the real session in shared/samples (a real
Claude Code 2.1.328 transcript: prompt snapshots, api-request-shape rows, tool results),
copied under fresh session and prompt ids. Printed beside a baseline measured in the same
run: parsing every line of the same files with orjson, what a naive importer would do.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT.parent / "shared" / "samples" / "simple-session" / "transcript.jsonl"


def make_corpus(folder: Path, sessions: int) -> int:
    template = SAMPLE.read_bytes()
    old_session = orjson.loads(template.splitlines()[0])["sessionId"].encode()
    old_prompt = b"5d1a5f96-a02d-4fdf-a23d-1d571079093d"
    total = 0
    for _ in range(sessions):
        data = template.replace(old_session, str(uuid.uuid4()).encode()).replace(old_prompt, str(uuid.uuid4()).encode())
        path = folder / "-home-dev-project" / f"{uuid.uuid4()}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        total += len(data)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=300)
    args = parser.parse_args()
    if not SAMPLE.exists():
        sys.exit(f"needs the sample transcript at {SAMPLE}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["UNDERSTUDY_HOME"] = str(Path(tmp) / "home")
        from capture_daemon.importer import import_paths, prepare_for_store
        from capture_daemon.store import TraceStore

        corpus = Path(tmp) / "projects"
        size = make_corpus(corpus, args.sessions)
        files = sorted(corpus.rglob("*.jsonl"))

        start = time.perf_counter()
        for path in files:
            for line in path.read_bytes().splitlines():
                orjson.loads(line)
        baseline = size / (time.perf_counter() - start) / 1e6

        start = time.perf_counter()
        with TraceStore.open() as store:
            report = import_paths([corpus], store, prepare_for_store)
        rate = size / (time.perf_counter() - start) / 1e6
    assert report.imported == args.sessions, report
    print(f"import: {args.sessions} sessions, {size / 1e6:.1f} MB, {report.imported} traces")
    print(f"  import                 {rate:7.1f} MB/s   target 50 MB/s: {rate / 50:.2f}x of target")
    print(f"  parse-every-line base  {baseline:7.1f} MB/s   import runs at {rate / baseline:.2f}x of baseline")


if __name__ == "__main__":
    main()
