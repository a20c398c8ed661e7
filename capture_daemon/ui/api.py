"""What the dashboard shows, as JSON-ready data: traces, one trace, readiness, training runs.

Everything here reads the store (or a run folder's files) and returns plain dicts; app.py only
routes. Run folders are read as files (stage.json, eval.json, PNGs): nothing imports the trainer
or torch.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from capture_daemon.schema import Trace
from capture_daemon.store import TraceStore

VERDICTS = ("accepted", "rejected", "human", "rules", "unscored")
LIST_LIMIT = 500


def summary(trace: Trace, human: dict[str, bool]) -> dict[str, Any]:
    q, s = trace.quality, trace.reasoning_signals
    return {
        "trace_id": trace.trace_id, "session_id": trace.session_id, "prompt": trace.prompt[:300],
        "started_at": trace.started_at.isoformat() if trace.started_at else None, "project": trace.cwd,
        "source": trace.source, "complete": trace.complete, "pattern": s.pattern,
        "workflow": s.workflow or " → ".join(s.tool_sequence), "calls": len(trace.tool_calls),
        "accepted": None if q is None else q.accepted, "score": None if q is None else round(q.score, 3),
        "duplicate_of": None if q is None else q.duplicate_of, "human": human.get(trace.trace_id),
    }


def _day(value: str | None) -> str | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"'{value}' is not a date like 2026-11-01") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).isoformat()


def matching(store: TraceStore, f: dict[str, str]) -> Iterable[Trace]:
    """Traces matching a filter: verdict, pattern, tool, project, session, since, until, q (prompt text)."""
    verdict = f.get("verdict") or ""
    if verdict and verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got '{verdict}'")
    human = store.human_verdicts()
    until, text = _day(f.get("until")), (f.get("q") or "").lower()
    for t in store.iter_traces(accepted={"accepted": True, "rejected": False}.get(verdict), pattern=f.get("pattern") or None,
                               tool=f.get("tool") or None, since=_day(f.get("since")), project=f.get("project") or None):
        if f.get("session") and not t.session_id.startswith(f["session"]):
            continue
        if until and t.started_at and t.started_at.isoformat() > until:
            continue
        if text and text not in t.prompt.lower():
            continue
        if verdict == "human" and t.trace_id not in human or verdict == "rules" and t.trace_id in human:
            continue
        if verdict == "unscored" and t.quality is not None:
            continue
        yield t


def list_traces(store: TraceStore, f: dict[str, str]) -> dict[str, Any]:
    human = store.human_verdicts()
    found = list(matching(store, f))
    newest = found[::-1][:LIST_LIMIT]
    return {"total": len(found), "shown": len(newest), "traces": [summary(t, human) for t in newest]}


def trace_detail(store: TraceStore, trace_id: str) -> dict[str, Any] | None:
    trace = store.get(trace_id)
    if trace is None:
        return None
    return {"trace": trace.model_dump(mode="json"), "human": store.human_verdicts().get(trace_id)}


def readiness(store: TraceStore, target: int) -> dict[str, Any]:
    """How far the training set is from the target, and where it is thin."""
    by_pattern, by_source, by_project = Counter(), Counter(), Counter()
    accepted = duplicates = 0
    for t in store.iter_traces():
        if t.quality and t.quality.duplicate_of:
            duplicates += 1
        if not (t.quality and t.quality.accepted):
            continue
        accepted += 1
        by_pattern[t.reasoning_signals.pattern or "unanalysed"] += 1
        by_source[t.source] += 1
        by_project[t.cwd or "?"] += 1
    patterns = {p: by_pattern.get(p, 0) for p in ("linear", "parallel", "exploratory", "iterative")}
    thinnest = min(patterns, key=patterns.get)
    advice = (f"target reached ({accepted} of {target})" if accepted >= target else
              f"{target - accepted} more accepted traces to go; fewest so far: {thinnest} workflows ({patterns[thinnest]})")
    return {"target": target, "accepted": accepted, "progress": round(min(1.0, accepted / target), 3) if target else None,
            "by_pattern": {**patterns, **by_pattern}, "by_source": dict(by_source),
            "by_project": dict(by_project.most_common(10)), "duplicates": duplicates,
            "human_verdicts": len(store.human_verdicts()), "advice": advice}


def new_since(store: TraceStore, stored_after: float) -> tuple[list[dict[str, Any]], float]:
    """Traces stored (or stored again) after a time, oldest first, and the newest time seen."""
    human = store.human_verdicts()
    rows = store.db.execute("SELECT json, stored_at FROM traces WHERE stored_at > ? ORDER BY stored_at LIMIT 200",
                            (stored_after,)).fetchall()
    latest = max([stored_after, *(r[1] for r in rows)])
    return [dict(summary(Trace.model_validate_json(r[0]), human), stored_at=r[1]) for r in rows], latest


def latest_stored(store: TraceStore) -> float:
    return store.db.execute("SELECT COALESCE(MAX(stored_at), 0) FROM traces").fetchone()[0]


# --- training runs ------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Folders under runs_dir holding stage folders (dataset/, sft/, eval/ ... with stage.json)."""
    runs = []
    if not runs_dir.is_dir():
        return runs
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        stages = _stages(folder)
        if stages:
            runs.append({"name": folder.name, "stages": stages})
    return runs


def _stages(folder: Path) -> list[dict[str, Any]]:
    stages = []
    for stage_file in sorted(folder.glob("*/stage.json"), key=lambda p: p.stat().st_mtime):
        rec = _read_json(stage_file) or {}
        stages.append({"folder": stage_file.parent.name, "stage": rec.get("stage") or stage_file.parent.name,
                       "status": rec.get("status", "?"), "at": rec.get("at")})
    return stages


def _first_divergence(teacher: list, student: list) -> int | None:
    for i in range(max(len(teacher), len(student))):
        if i >= len(teacher) or i >= len(student) or teacher[i] != student[i]:
            return i
    return None


def run_detail(runs_dir: Path, name: str) -> dict[str, Any] | None:
    folder = runs_dir / name
    if "/" in name or name.startswith(".") or not folder.is_dir():
        return None
    images = sorted(str(p.relative_to(folder)) for p in folder.glob("*/*.png"))
    ev = next((e for e in (_read_json(p) for p in sorted(folder.glob("*/eval.json"))) if e), None)
    examples = []
    for ex in (ev or {}).get("examples", [])[:100]:
        systems = {k: v for k, v in ex.items() if isinstance(v, dict)}
        teacher = next((v.get("teacher") for v in systems.values() if v.get("teacher") is not None), []) or []
        examples.append({"trace_id": ex.get("trace_id"), "prompt": (ex.get("prompt") or "")[:400], "teacher": teacher,
                         "systems": {k: {"sequence": v.get("student") or [], "answer": (v.get("answer") or "")[:600],
                                         "first_divergence": _first_divergence(teacher, v.get("student") or []),
                                         "sequence_similarity": v.get("sequence_similarity")}
                                     for k, v in systems.items()}})
    ab = next((r for r in (_read_json(p) for p in sorted(folder.glob("*/report.json"))) if r), None)
    mined = _mined(folder)
    return {"name": name, "stages": _stages(folder), "images": images,
            "eval": None if ev is None else {"n_examples": ev.get("n_examples"), "split": ev.get("split"),
                                             "summary": ev.get("summary") or {}},
            "examples": examples, "ab_report": ab, "mined": mined}


def _mined(folder: Path, limit: int = 20) -> list[dict[str, Any]]:
    """The top of `trainer mine`'s ranking (mined.jsonl, best first): its scalar fields only."""
    rows = []
    for path in sorted(folder.glob("*/mined.jsonl"))[:1]:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append({k: v for k, v in row.items() if isinstance(v, (str, int, float, bool)) or v is None})
                if len(rows) >= limit:
                    break
    return rows


def run_file(runs_dir: Path, name: str, relative: str) -> Path | None:
    """A PNG inside one run folder (nothing outside it, nothing but images)."""
    root = (runs_dir / name).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or path.suffix != ".png" or not path.is_file():
        return None
    return path
