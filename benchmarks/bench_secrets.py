"""Secret detection quality: understudy's redactor beside Yelp's detect-secrets, same corpora.

    .venv/bin/python benchmarks/bench_secrets.py            # needs the dev extra: pip install -e '.[dev]'
    .venv/bin/python benchmarks/bench_secrets.py --all      # every format, not only the misses

Corpora: tests/secret_corpus.py, one planted secret format per case (an .env line, a shell command,
JSON, YAML, code, a CSV, a config file; values generated from a seeded random source) and benign
look-alikes (hashes, UUIDs, git SHAs, base64 images, CSS, lockfile integrity, minified JS, code
that names secrets, prose).

How each is scored, per case:
  understudy     caught when no planted secret value is left in `redact_text(case)`; a false
                 positive when a benign case comes back changed.
  detect-secrets each case written to a file and scanned as `detect-secrets scan` does, with its
                 default plugins and filters (`default_settings()` + `core.scan.scan_file`). Its
                 keyword rules depend on the file type (quotes required in code and plain text,
                 not in YAML or INI), and a paste has none, so each case is scanned as .txt,
                 .yaml, .py and .ini and scored at its best: caught when, in any of the four,
                 every planted value overlaps a reported secret (either contains the other) or,
                 for key material, a Private Key was reported; a false positive only when
                 something is reported for a benign case in all four.
Printed side by side: recall, false positives, and the formats either one misses. Exits 1 if
understudy's recall is below 100% or it has any false positive (the tests hold the same line).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capture_daemon.redact import redact_text  # noqa: E402
from tests.secret_corpus import BENIGN_CASES, SECRET_CASES, SecretCase  # noqa: E402

_KEY_LINE = re.compile(r"[A-Za-z0-9+/=]{40,}")
FILE_TYPES = (".txt", ".yaml", ".py", ".ini")


def ours_catches(case: SecretCase) -> bool:
    out = redact_text(case.text)
    return not any(s in out for s in case.secrets)


def ours_flags(text: str) -> bool:
    return redact_text(text) != text


def detect_secrets_scanner():
    """A function from text to detect-secrets' findings [(type, value)], or None if not installed."""
    try:
        from detect_secrets.core.scan import scan_file
        from detect_secrets.settings import default_settings
    except ImportError:
        return None
    tmp = Path(tempfile.mkdtemp(prefix="bench-secrets-"))

    def scan(text: str) -> list[list[tuple[str, str]]]:
        found = []
        with default_settings():
            for ext in FILE_TYPES:
                path = tmp / f"paste{ext}"
                path.write_text(text + "\n")
                found.append([(s.type, s.secret_value or "") for s in scan_file(str(path))])
        return found

    return scan


def ds_catches(findings: list[tuple[str, str]], case: SecretCase) -> bool:
    private_key = any(kind == "Private Key" for kind, _ in findings)

    def flagged(secret: str) -> bool:
        if private_key and _KEY_LINE.fullmatch(secret):
            return True
        return any(value and (secret in value or value in secret) for _, value in findings)

    return all(flagged(s) for s in case.secrets)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="list every format, not only those someone misses")
    args = parser.parse_args()

    scan = detect_secrets_scanner()
    if scan is None:
        print("detect-secrets is not installed: pip install -e '.[dev]' (or pip install detect-secrets)")

    rows = []
    t_ours = t_ds = 0.0
    for case in SECRET_CASES:
        start = time.perf_counter()
        ours = ours_catches(case)
        t_ours += time.perf_counter() - start
        theirs = None
        if scan is not None:
            start = time.perf_counter()
            theirs = any(ds_catches(found, case) for found in scan(case.text))
            t_ds += time.perf_counter() - start
        rows.append((case.id, ours, theirs))
    benign = []
    for case_id, text in BENIGN_CASES:
        theirs = None
        if scan is not None:
            per_type = scan(text)
            theirs = [f"{k}: {v[:24]}" for k, v in per_type[0]] if all(per_type) else []
        benign.append((case_id, ours_flags(text), theirs))

    n, b = len(rows), len(benign)
    ours_recall = sum(r[1] for r in rows)
    ours_fp = sum(r[1] for r in benign)
    print(f"planted corpus: {n} formats; benign corpus: {b} cases\n")
    print(f"{'':16} {'recall':>14} {'false positives':>17}")
    print(f"{'understudy':16} {ours_recall:>4}/{n} {ours_recall / n:6.1%} {ours_fp:>10}/{b}")
    if scan is not None:
        ds_recall = sum(bool(r[2]) for r in rows)
        ds_fp = sum(bool(r[2]) for r in benign)
        print(f"{'detect-secrets':16} {ds_recall:>4}/{n} {ds_recall / n:6.1%} {ds_fp:>10}/{b}")
        print(f"(time over the planted corpus: understudy {t_ours * 1000:.0f} ms, detect-secrets {t_ds * 1000:.0f} ms)")

    print(f"\n{'format':32} {'understudy':>11} {'detect-secrets':>15}")
    mark = {True: "caught", False: "MISSED", None: "-"}
    for case_id, ours, theirs in rows:
        if args.all or not ours or theirs is False:
            print(f"{case_id:32} {mark[ours]:>11} {mark[theirs]:>15}")
    print(f"\n{'benign case':32} {'understudy':>11} {'detect-secrets':>15}")
    for case_id, ours, theirs in benign:
        if args.all or ours or theirs:
            ds = "-" if theirs is None else ("flagged" if theirs else "clean")
            print(f"{case_id:32} {'FLAGGED' if ours else 'clean':>11} {ds:>15}" + (f"   {theirs[0]}" if theirs else ""))
    return 0 if ours_recall == n and ours_fp == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
