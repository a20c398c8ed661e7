"""`trainer ab-test`: can judges tell the student from the teacher? Blind pairs, machine and human judges.

    trainer ab-test                         # build pairs, run the automatic judges, print the report
    trainer ab-test --serve                 # the local judging page for people: http://127.0.0.1:8766
    trainer ab-test --report                # recompute the report with the verdicts recorded so far
    trainer ab-test --abtest.judges discriminator,llm --abtest.llm_url https://api.anthropic.com

Pairs. For each held-out prompt (`abtest.split`), the teacher's workflow and the student's (rolled
out step by step with the teacher's observations replayed) are rendered by the same function
(trainer/reward.py `workflow_transcript`) and shown in a random order (seeded). The control arm
pairs each held-out teacher workflow with another teacher workflow of the same family (same teacher
tool sequence, else any other), one of the two designated at random as "the reference": judges
can't do better than chance there, so its confusion rate shows what "can't tell" looks like for
these judges and this many pairs. The two arms are shuffled together; neither the page nor the
LLM judge is told which arm a pair is in. The truth is kept in key.json, which the page never serves.

Judges, each asked "which of the two is Claude (the teacher)?":
    discriminator   trainer/discriminator.py: the side with the higher score
    llm             an Anthropic-compatible Messages API (`abtest.llm_url`), asked twice with the
                    two orders swapped; if it names different transcripts in the two orders, its
                    verdict follows position, not content, and counts as a tie (half wrong)
    human:<name>    people on the judging page; each verdict is appended to verdicts.jsonl

Report (report.json, report.md), per judge: the confusion rate (share of student pairs judged
wrong, ties counting half) with a Wilson confidence interval, the control arm's rate, and whether
the goal is met (confusion > `abtest.goal`, 0.45; 0.5 is chance); plus the held-out prompts where
the student was spotted most easily, which `trainer mine` boosts by workflow family.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from statistics import NormalDist
from typing import Any, Callable, Optional

import click

from trainer.config import STAGE_CONTEXT, ConfigError, UnderstudyConfig, resolve_cli_config

PAGE_DIR = Path(__file__).parent / "judge_page"
SIDES = ("left", "right")


# ----------------------------------------------------------------------------------------------
# Report math


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion; (0, 1) when n is 0. `successes` may be fractional (ties)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Exact at the edges (floating point would leave 1e-17 above 0 or below 1).
    lo = 0.0 if successes <= 0 else max(0.0, center - half)
    hi = 1.0 if successes >= n else min(1.0, center + half)
    return (lo, hi)


def confusion(verdicts: list[float], confidence: float = 0.95) -> dict[str, Any]:
    """Verdict values are 1 (judged right), 0 (wrong) or 0.5 (tie). Confusion = the wrong share."""
    n = len(verdicts)
    wrong = sum(1 - v for v in verdicts)
    lo, hi = wilson_interval(wrong, n, confidence)
    return {"n": n, "wrong": wrong, "rate": wrong / n if n else None, "ci": [lo, hi]}


# ----------------------------------------------------------------------------------------------
# Pairs


def _paths(cfg: UnderstudyConfig) -> dict[str, Path]:
    from trainer.mine import latest_student

    out = Path(cfg.run.out)
    return {
        "model": Path(cfg.abtest.model) if cfg.abtest.model else latest_student(cfg),
        "data": Path(cfg.abtest.data_dir or cfg.sft.data_dir or out / "dataset"),
        "out": Path(cfg.abtest.output_dir or out / "abtest"),
    }


def build_pairs(rows: list[dict[str, Any]], student: list, seed: int = 0, control_pool: Optional[list[dict[str, Any]]] = None) -> tuple[list[dict], dict[str, dict]]:
    """(blind pairs for judges, the key). Student pairs for every row, one control pair per row."""
    from trainer.evaluate import teacher_sequence
    from trainer.reward import teacher_workflow, workflow_text, workflow_transcript

    rng = random.Random(seed)
    pool = list(control_pool if control_pool is not None else rows)
    pairs, key = [], {}

    def side(row, wf) -> dict[str, str]:
        return {"prompt": row.get("prompt") or "", "transcript": workflow_transcript(row, wf)}

    for i, (row, s_wf) in enumerate(zip(rows, student)):
        t_wf = teacher_workflow(row)
        teacher_side = rng.choice(SIDES)
        sides = {teacher_side: side(row, t_wf), _other(teacher_side): side(row, s_wf)}
        pid = f"p{i:04d}s"
        pairs.append({"id": pid, **sides})
        key[pid] = {"arm": "student", "teacher_side": teacher_side, "trace_id": str(row.get("trace_id")),
                    "prompt": row.get("prompt"), "teacher": t_wf.sequence, "student": s_wf.sequence,
                    "texts": {teacher_side: workflow_text(row, t_wf), _other(teacher_side): workflow_text(row, s_wf)}}

        family = teacher_sequence(row["messages"])
        others = [r for r in pool if r.get("trace_id") != row.get("trace_id")]
        same = [r for r in others if teacher_sequence(r["messages"]) == family]
        partner = rng.choice(same or others) if others else None
        if partner is None:
            continue
        ref_side = rng.choice(SIDES)
        p_wf = teacher_workflow(partner)
        sides = {ref_side: side(row, t_wf), _other(ref_side): side(partner, p_wf)}
        pid = f"p{i:04d}c"
        pairs.append({"id": pid, **sides})
        key[pid] = {"arm": "control", "teacher_side": ref_side, "trace_id": str(row.get("trace_id")),
                    "partner": str(partner.get("trace_id")), "prompt": row.get("prompt"), "teacher": t_wf.sequence,
                    "same_family": bool(same),
                    "texts": {ref_side: workflow_text(row, t_wf), _other(ref_side): workflow_text(partner, p_wf)}}
    rng.shuffle(pairs)
    return pairs, key


def _other(side: str) -> str:
    return "right" if side == "left" else "left"


def load_pairs(directory: Path) -> tuple[list[dict], dict[str, dict]]:
    pairs_file, key_file = directory / "pairs.json", directory / "key.json"
    if not pairs_file.exists() or not key_file.exists():
        raise ConfigError(f"no A/B pairs at {directory}: run `trainer ab-test` first")
    return json.loads(pairs_file.read_text()), json.loads(key_file.read_text())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


# ----------------------------------------------------------------------------------------------
# Automatic judges


def judge_with_discriminator(pairs: list[dict], key: dict[str, dict], disc) -> list[dict[str, Any]]:
    # The discriminator reads each side as it was trained to: reward.workflow_text, kept in the key.
    texts = [key[p["id"]]["texts"][s] for p in pairs for s in SIDES]
    probs = disc.p_teacher(texts)
    out = []
    for i, p in enumerate(pairs):
        pl, pr = probs[2 * i], probs[2 * i + 1]
        choice = "left" if pl > pr else "right" if pr > pl else None
        out.append({"pair_id": p["id"], "judge": "discriminator", "choice": choice, "p_left": pl, "p_right": pr})
    return out


LLM_PROMPT = """Two transcripts follow. Each shows a coding agent working on a task: what it said, the tools it called (lines starting with →) and the results it saw (indented), then its final answer. One transcript was produced by Claude; the other by a different model imitating Claude.

Which transcript was produced by Claude? Answer with the single letter A or B.

Transcript A
Task: {prompt_a}
{transcript_a}

Transcript B
Task: {prompt_b}
{transcript_b}"""


def ask_llm(url: str, model: str, api_key: str, prompt: str, timeout: float = 60.0) -> str:
    """One Messages API call; returns the text of the answer."""
    body = json.dumps({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": prompt}]}).encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/messages",
        data=body,
        headers={"content-type": "application/json", "x-api-key": api_key, "anthropic-version": "2023-06-01"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise ConfigError(f"LLM judge at {url}: HTTP {e.code} {e.read()[:200]!r}") from None
    except urllib.error.URLError as e:
        raise ConfigError(f"LLM judge at {url} unreachable: {e.reason}") from None
    return "".join(b.get("text", "") for b in data.get("content", []) if b.get("type") == "text")


def _letter(answer: str) -> Optional[str]:
    text = answer.strip().upper()
    for ch in text:
        if ch in "AB":
            return ch
    return None


def judge_with_llm(pairs: list[dict], url: str, model: str, api_key: str) -> list[dict[str, Any]]:
    """Each pair asked in both orders; a side only when both answers name the same transcript."""
    out = []
    for p in pairs:
        votes = []
        for first, second in (("left", "right"), ("right", "left")):
            prompt = LLM_PROMPT.format(prompt_a=p[first]["prompt"], transcript_a=p[first]["transcript"],
                                       prompt_b=p[second]["prompt"], transcript_b=p[second]["transcript"])
            answer = ask_llm(url, model, api_key, prompt)
            letter = _letter(answer)
            votes.append({"order": [first, second], "answer": answer, "side": None if letter is None else (first if letter == "A" else second)})
        sides = {v["side"] for v in votes}
        choice = votes[0]["side"] if len(sides) == 1 else None  # disagreement: position bias, a tie
        out.append({"pair_id": p["id"], "judge": "llm", "choice": choice, "votes": votes})
    return out


# ----------------------------------------------------------------------------------------------
# The report


def verdict_value(choice: Optional[str], truth: str) -> float:
    if choice not in SIDES:
        return 0.5
    return 1.0 if choice == truth else 0.0


def build_report(pairs: list[dict], key: dict[str, dict], auto: list[dict], human: list[dict], goal: float = 0.45,
                 confidence: float = 0.95, top: int = 10) -> dict[str, Any]:
    latest: dict[tuple[str, str], dict] = {}
    for v in auto:
        latest[(v["judge"], v["pair_id"])] = v
    for v in human:
        name = (v.get("judge") or "anonymous").strip() or "anonymous"
        latest[(f"human:{name}", v["pair_id"])] = v
    per_judge: dict[str, dict[str, list[float]]] = {}
    per_pair: dict[str, list[float]] = {}
    for (judge, pid), v in latest.items():
        k = key.get(pid)
        if k is None:
            continue
        value = verdict_value(v.get("choice"), k["teacher_side"])
        for name in ([judge, "human (all)"] if judge.startswith("human:") else [judge]):
            per_judge.setdefault(name, {"student": [], "control": []})[k["arm"]].append(value)
        if k["arm"] == "student":
            per_pair.setdefault(pid, []).append(value)
    judges = {}
    for name, arms in sorted(per_judge.items()):
        main, control = confusion(arms["student"], confidence), confusion(arms["control"], confidence)
        judges[name] = {
            "confusion": main,
            "control": control,
            "goal_met": main["rate"] is not None and main["rate"] > goal,
            "goal_met_significantly": main["n"] > 0 and main["ci"][0] > goal,
        }
    margins = {v["pair_id"]: (v["p_left"] - v["p_right"]) * (1 if key[v["pair_id"]]["teacher_side"] == "left" else -1)
               for v in auto if v["judge"] == "discriminator" and v["pair_id"] in key}
    spotted = []
    for pid, values in per_pair.items():
        k = key[pid]
        spotted.append({"pair_id": pid, "trace_id": k["trace_id"], "prompt": k["prompt"], "spotted_rate": sum(values) / len(values),
                        "judges": len(values), "discriminator_margin": margins.get(pid), "teacher": k["teacher"], "student": k["student"]})
    spotted.sort(key=lambda s: (-s["spotted_rate"], -(s["discriminator_margin"] or 0.0), s["pair_id"]))
    headline = "human (all)" if "human (all)" in judges else next(iter(judges), None)
    return {
        "pairs": {"student": sum(1 for k in key.values() if k["arm"] == "student"),
                  "control": sum(1 for k in key.values() if k["arm"] == "control")},
        "goal": goal,
        "confidence": confidence,
        "judges": judges,
        "headline_judge": headline,
        "goal_met": judges[headline]["goal_met"] if headline else None,
        "spotted": [s for s in spotted if s["spotted_rate"] > 0.5][:top],
    }


def _pct(x: Optional[float]) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def markdown_report(report: dict[str, Any]) -> str:
    conf = int(round(report["confidence"] * 100))
    lines = [
        "# Indistinguishability (A/B) report",
        "",
        f"{report['pairs']['student']} teacher-vs-student pairs, {report['pairs']['control']} teacher-vs-teacher control pairs. "
        f"Goal: judged wrong more than {_pct(report['goal'])} of the time (50% is chance).",
        "",
        f"| judge | pairs | confusion | {conf}% CI (Wilson) | control arm | control {conf}% CI | goal met |",
        "| --- | ---: | ---: | --- | ---: | --- | --- |",
    ]
    for name, j in report["judges"].items():
        c, k = j["confusion"], j["control"]
        met = ("yes (CI above goal)" if j["goal_met_significantly"] else "yes") if j["goal_met"] else "no"
        lines.append(f"| {name} | {c['n']} | {_pct(c['rate'])} | {_pct(c['ci'][0])}–{_pct(c['ci'][1])} | "
                     f"{_pct(k['rate'])} | {_pct(k['ci'][0])}–{_pct(k['ci'][1])} | {met} |")
    if report["headline_judge"]:
        lines += ["", f"Goal {'MET' if report['goal_met'] else 'NOT met'} for {report['headline_judge']}."]
    else:
        lines += ["", "No verdicts yet."]
    if report["spotted"]:
        lines += ["", "## Spotted most easily (feeds `trainer mine`)", "", "| spotted | disc margin | teacher | student | prompt |", "| ---: | ---: | --- | --- | --- |"]
        for s in report["spotted"]:
            m = "—" if s["discriminator_margin"] is None else f"{s['discriminator_margin']:+.2f}"
            lines.append(f"| {_pct(s['spotted_rate'])} | {m} | {' → '.join(s['teacher'])} | {' → '.join(s['student']) or '(none)'} | {(s['prompt'] or '')[:70]} |")
    return "\n".join(lines) + "\n"


def write_report(directory: Path, cfg: UnderstudyConfig, log: Callable[[str], None] = click.echo) -> dict[str, Any]:
    pairs, key = load_pairs(directory)
    report = build_report(pairs, key, read_jsonl(directory / "auto_verdicts.jsonl"), read_jsonl(directory / "verdicts.jsonl"),
                          cfg.abtest.goal, cfg.abtest.confidence)
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (directory / "report.md").write_text(markdown_report(report))
    log(markdown_report(report))
    return report


def run_abtest(cfg: UnderstudyConfig, log: Callable[[str], None] = click.echo, rebuild: bool = False, discriminator=None) -> dict[str, Any]:
    """Build the pairs (unless built), run the configured automatic judges, write the report."""
    from trainer.discriminator import Discriminator, discriminator_dir
    from trainer.reward import _read_rows, judged_rollouts

    ab = cfg.abtest
    for j in ab.judges:
        if j not in ("discriminator", "llm"):
            raise ConfigError(f"abtest.judges: unknown judge '{j}'; automatic judges are 'discriminator' and 'llm' (people use --serve)")
    if "llm" in ab.judges and not ab.llm_url:
        raise ConfigError("abtest.judges includes 'llm' but abtest.llm_url is empty: set it to an Anthropic-compatible base URL")
    if not 0 <= ab.goal <= 1:
        raise ConfigError(f"abtest.goal must be in [0, 1], got {ab.goal}")
    paths = _paths(cfg)
    out = paths["out"]
    out.mkdir(parents=True, exist_ok=True)
    if rebuild or not (out / "pairs.json").exists():
        split_file = paths["data"] / f"{ab.split}.jsonl"
        if not split_file.exists():
            raise ConfigError(f"no {ab.split} split at {split_file}: run `trainer build-dataset` or set abtest.data_dir")
        from trainer.sft import check_student

        check_student(paths["model"], "abtest.model", "run `trainer sft` or set abtest.model")
        rows = _read_rows(split_file, ab.max_pairs)
        log(f"[ab-test] rolling out {paths['model']} on {len(rows)} {ab.split} prompts …")
        student = judged_rollouts(cfg, str(paths["model"]), rows)
        pool = list(rows)
        for extra in ("validation", "train"):  # control partners of the same family, if the split has none
            f = paths["data"] / f"{extra}.jsonl"
            if extra != ab.split and f.exists():
                pool += _read_rows(f)
        pairs, key = build_pairs(rows, student, ab.seed, pool)
        (out / "pairs.json").write_text(json.dumps(pairs, indent=1) + "\n")
        (out / "key.json").write_text(json.dumps(key, indent=1) + "\n")
        (out / "auto_verdicts.jsonl").unlink(missing_ok=True)
    pairs, key = load_pairs(out)
    auto: list[dict] = []
    if "discriminator" in ab.judges:
        if discriminator is None and (discriminator_dir(cfg) / "calibration.json").exists():
            discriminator = Discriminator.load(discriminator_dir(cfg))
        if discriminator is None:
            log("[ab-test] no discriminator trained yet (`trainer reward --train-discriminator`): skipping that judge")
        else:
            auto += judge_with_discriminator(pairs, key, discriminator)
    if "llm" in ab.judges:
        api_key = os.environ.get(ab.llm_api_key_env, "")
        log(f"[ab-test] asking {ab.llm_model} at {ab.llm_url} about {len(pairs)} pairs, both orders …")
        auto += judge_with_llm(pairs, ab.llm_url, ab.llm_model, api_key)
    with open(out / "auto_verdicts.jsonl", "w") as fh:
        for v in auto:
            fh.write(json.dumps(v) + "\n")
    return write_report(out, cfg, log)


# ----------------------------------------------------------------------------------------------
# The judging page


def create_app(directory: str | os.PathLike):
    """A FastAPI app serving the judging page and recording each verdict in verdicts.jsonl."""
    from fastapi import Body, FastAPI, HTTPException
    from fastapi.responses import FileResponse

    directory = Path(directory)
    pairs, key = load_pairs(directory)
    by_id = {p["id"]: p for p in pairs}
    verdicts = directory / "verdicts.jsonl"
    lock = threading.Lock()
    app = FastAPI(title="understudy judging page", docs_url=None, redoc_url=None)

    @app.get("/")
    def index():
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html")

    @app.get("/judge.js")
    def script():
        return FileResponse(PAGE_DIR / "judge.js", media_type="text/javascript")

    @app.get("/judge.css")
    def style():
        return FileResponse(PAGE_DIR / "judge.css", media_type="text/css")

    @app.get("/api/pairs")
    def get_pairs():
        # Blind: ids and the two sides only; arm and truth stay in key.json.
        return {"pairs": [{"id": p["id"], "left": p["left"], "right": p["right"]} for p in pairs]}

    @app.get("/api/progress")
    def progress(judge: str = ""):
        done = sorted({v["pair_id"] for v in read_jsonl(verdicts) if v.get("judge") == judge})
        return {"judge": judge, "judged": done, "total": len(pairs)}

    @app.post("/api/verdicts")
    def record(payload: dict = Body(...)):
        pid, choice, judge = payload.get("pair_id"), payload.get("choice"), str(payload.get("judge") or "").strip()
        if pid not in by_id:
            raise HTTPException(404, f"unknown pair '{pid}'")
        if choice not in SIDES:
            raise HTTPException(422, f"choice must be 'left' or 'right', got {choice!r}")
        if not judge:
            raise HTTPException(422, "a judge name is required")
        line = {"pair_id": pid, "choice": choice, "judge": judge[:80], "ms": payload.get("ms"),
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with lock, open(verdicts, "a") as fh:
            fh.write(json.dumps(line) + "\n")
        count = sum(1 for v in read_jsonl(verdicts) if v.get("judge") == line["judge"])
        return {"recorded": True, "count": count}

    return app


def serve_page(directory: Path, host: str, port: int, log: Callable[[str], None] = click.echo) -> None:
    import uvicorn

    app = create_app(directory)
    log(f"Judging page: http://{host}:{port}/  (verdicts → {directory / 'verdicts.jsonl'}; Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@click.command("ab-test", context_settings=STAGE_CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="understudy.toml or YAML.")
@click.option("--model", "model_path", help="The student (abtest.model); default the RL student, else the SFT one.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), help="Dataset directory (abtest.data_dir).")
@click.option("--out", "output_dir", type=click.Path(file_okay=False), help="Output directory (abtest.output_dir).")
@click.option("--serve", is_flag=True, help="Serve the judging page for people (builds the pairs first if needed).")
@click.option("--report", "report_only", is_flag=True, help="Recompute the report from the verdicts recorded so far.")
@click.option("--rebuild", is_flag=True, help="Roll the student out again and draw new pairs.")
@click.pass_context
def command(ctx, config_path, model_path, data_dir, output_dir, serve, report_only, rebuild):
    """Blind A/B test: teacher vs student workflows on held-out prompts, plus a teacher-vs-teacher control.

    Judged by the discriminator, optionally an LLM (abtest.llm_url, both orders asked), and people on
    a local page (--serve). Reports each judge's confusion rate with a Wilson interval, the control
    arm's rate, whether the goal (confusion > abtest.goal) is met, and the prompts spotted most
    easily. Any config value can be set as --SECTION.KEY VALUE or -o SECTION.KEY=VALUE.
    """
    cfg = resolve_cli_config(
        config_path, ctx.args,
        [("abtest.model", model_path), ("abtest.data_dir", data_dir), ("abtest.output_dir", output_dir)],
    )
    try:
        out = _paths(cfg)["out"]
        if report_only:
            write_report(out, cfg)
            return
        if serve:
            if rebuild or not (out / "pairs.json").exists():
                run_abtest(cfg, rebuild=rebuild)
            serve_page(out, cfg.abtest.host, cfg.abtest.port)
            return
        run_abtest(cfg, rebuild=rebuild)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
