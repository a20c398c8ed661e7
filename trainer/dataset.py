"""Stage 1, `trainer build-dataset`: accepted traces → chat examples, split by session.

    trainer build-dataset --traces export.jsonl --output runs/demo/dataset
    # or from Python:
    from trainer.dataset import DatasetConfig, build_dataset, load_traces, load_splits
    report = build_dataset(load_traces(Path("export.jsonl")), DatasetConfig(output_dir=Path("ds")))
    splits = load_splits(Path("ds"))          # a datasets.DatasetDict

One example per trace:
    system     the configured compact system prompt (the tool list is rendered by the template)
    user       "Working directory: {cwd}", then the prompt (`working_directory_turn = "system"`
               puts that line in the system turn instead)
    assistant  narration + the calls of one parallel group   } repeated per group of calls
    tool       one message per call (the error text for a failed call) }
    user       a message the user typed mid-turn, after the results it came with }  (when sent)
    assistant  the final answer

Tool-call arguments are stored as JSON strings: Arrow infers one struct type per column and
would merge the keys of every row's arguments (`{"command": "ls", "file_path": null}`).

`tools` holds every tool the trace offered (or those in `tools`), in the form `tool_schema` names
(trainer/tool_context.py, the same mapping `trainer serve` applies to a live request), rather than only the tools it used: a list
of used tools would give the workflow away in the prompt, and at serve time the student sees
everything Claude Code offers. Columns other than `messages` and `tools` are metadata for
evaluation; pass `SFT_COLUMNS` to `select_columns` before TRL sees the dataset (TRL reads a
`prompt` column as the prompt/completion format).
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from capture_daemon.schema import ToolCall, Trace
from trainer.chat_template import (
    DEFAULT_SYSTEM_PROMPT,
    count_tokens,
    dump_arguments,
    render,
    told_text,
    trim_tool_result,
)
from trainer.tool_context import tools_for

SPLITS = ("train", "validation", "test")
WORKING_DIRECTORY_TURNS = ("user", "system")
TOOL_SETS = ("offered", "called")
SFT_COLUMNS = ["messages", "tools"]


@dataclass
class DatasetConfig:
    output_dir: Path = Path("dataset")
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # The example names the session's working directory (the trace's cwd), as Claude Code's own
    # context does. Its file tools take absolute paths (the CLI makes every path absolute before
    # a hook sees it), which a student can only write if it knows where it is; `trainer serve`
    # reads the same line from the request (trainer/serve.py).
    working_directory: bool = True
    # Where that line goes: "user", before the prompt, or "system", after the system prompt and
    # before the tool list. A student copies the directory into every file path, and copying from
    # ~900 tokens back (Claude Code's 14 tools lie between) is what the tiny student failed at:
    # measured on 1,425 traces captured through the real CLI (docs/learning.md §4), the same base
    # and SFT, file paths right went from 8 of 103 Reads to 74 of 108, argument match 0.530 →
    # 0.706, first tool 0.877 → 0.935 (one base: another one, through `trainer run`, copied no
    # path at all either way, §4). Students trained before this setting had "system" (trainer
    # serve reads it that way when their run does not record it).
    working_directory_turn: str = "user"
    # Tool results longer than this are cut around a visible "[... trimmed N tokens ...]" marker.
    max_tool_result_tokens: int = 512
    # Tool and parameter descriptions in the schemas are cut to this many characters.
    tool_description_chars: int = 160
    # How much of each tool schema the student sees (trainer/tool_context.py): "full" JSON
    # schemas, "signature" (name, first sentence, {"param": "type"}; Claude Code's 14 tools in
    # ~1.0-1.3k tokens instead of ~3.8-5.5k) or "required" (required parameters only).
    tool_schema: str = "signature"
    # Only these tools are shown (empty: every tool offered, or as tool_set says).
    tools: list[str] = field(default_factory=list)
    # Which of the offered tools every example shows when `tools` is empty: "offered", all of them;
    # "called", those the teacher calls somewhere in the training split (the same list for every
    # example and split, so no example's list gives its own workflow away). A tool the teacher
    # never called is one the student cannot learn to call, and its schema costs context in every
    # example: Claude Code 2.1's 14 tools are ~1,000 of a real capture's ~1,580 SmolLM2 tokens,
    # the six a scripted teacher calls ~440. The list is written to stats.json (`tools_shown`) and
    # into the student's understudy_config.json as `dataset.tools`, so `trainer serve` shows the same.
    tool_set: str = "offered"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    # Subagents' calls are not part of the main conversation the student continues.
    include_subagent_calls: bool = False
    only_accepted: bool = True

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"`val_fraction` + `test_fraction` must leave room for training, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        from trainer.tool_context import TOOL_SCHEMAS

        if self.tool_schema not in TOOL_SCHEMAS:
            raise ValueError(f"`tool_schema` must be one of {', '.join(TOOL_SCHEMAS)}, got {self.tool_schema!r}")
        if self.tool_set not in TOOL_SETS:
            raise ValueError(f"`tool_set` must be one of {', '.join(TOOL_SETS)}, got {self.tool_set!r}")
        if self.working_directory_turn not in WORKING_DIRECTORY_TURNS:
            raise ValueError(f"`working_directory_turn` must be one of {', '.join(WORKING_DIRECTORY_TURNS)}, "
                             f"got {self.working_directory_turn!r}")
        if self.max_tool_result_tokens < 0:
            raise ValueError(f"`max_tool_result_tokens` must be >= 0 (0 = no trimming), got {self.max_tool_result_tokens}")


@dataclass
class DatasetReport:
    output_dir: Path
    counts: dict[str, int]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def paths(self) -> dict[str, Path]:
        return {split: self.output_dir / f"{split}.jsonl" for split in SPLITS}


# ---------------------------------------------------------------------------------------------
# Loading traces


class TraceFileError(ValueError):
    """A line of a traces file that is not a trace: one line naming the file, the line and why."""


def _validation_summary(exc: ValueError, shown: int = 2) -> str:
    """Pydantic's first errors on one line ("session_id: Field required; ..."), else the message's first line."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    found = errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"] for e in found[:shown]]
    more = f" (and {len(found) - shown} more)" if len(found) > shown else ""
    return "; ".join(parts) + more


def iter_jsonl_traces(path: Path) -> Iterator[Trace]:
    """Traces from a `capture-daemon export --format jsonl` file (one Trace JSON per line).

    A line that is not a trace stops the read with a TraceFileError (nothing is skipped: a
    training set quietly missing sessions would be a worse surprise than the error)."""
    with open(path, "rb") as fh:  # bytes: a line that is not UTF-8 is reported as that line's error
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield Trace.model_validate_json(line)
            except ValueError as exc:
                raise TraceFileError(
                    f"{path}, line {lineno}: not a trace ({_validation_summary(exc)}); fix or delete that line, "
                    "or export the traces again with `capture-daemon export --format jsonl`"
                ) from None


def load_traces(source: Optional[Path] = None, only_accepted: bool = True) -> Iterator[Trace]:
    """Traces from a JSONL export file, or from the capture store (UNDERSTUDY_HOME) when `source` is None."""
    if source is not None:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"No trace file at '{path}' (expected `capture-daemon export --format jsonl` output)")
        return iter_jsonl_traces(path)
    from capture_daemon.paths import store_path

    if not store_path().is_file():
        raise FileNotFoundError(
            f"No capture store at '{store_path()}'; capture some sessions first, or pass a JSONL export "
            "(`capture-daemon export --format jsonl`)"
        )
    return _store_traces(only_accepted)


def _store_traces(only_accepted: bool) -> Iterator[Trace]:
    from capture_daemon.store import TraceStore

    with TraceStore.open() as store:
        yield from store.iter_traces(accepted=True if only_accepted else None)


# ---------------------------------------------------------------------------------------------
# One trace → one example


def _tool_message(call: ToolCall, config: DatasetConfig, tokenizer) -> tuple[dict, int]:
    if call.success and not call.is_interrupt:
        text = call.output or ""
    else:
        detail = call.error or call.output or ("interrupted by the user" if call.is_interrupt else "the tool call failed")
        text = detail if detail.lower().startswith("error") else f"Error: {detail}"
    text, trimmed = trim_tool_result(text, config.max_tool_result_tokens, tokenizer)
    return {"role": "tool", "content": text, "tool_call_id": call.tool_use_id, "name": call.name}, trimmed


def _groups(calls: list[tuple[int, ToolCall]]) -> list[list[tuple[int, ToolCall]]]:
    """Consecutive calls of one agent with one parallel_group form one assistant turn."""
    groups: list[list[tuple[int, ToolCall]]] = []
    for index, call in calls:
        key = (call.agent_id, call.parallel_group)
        if groups and (groups[-1][-1][1].agent_id, groups[-1][-1][1].parallel_group) == key:
            groups[-1].append((index, call))
        else:
            groups.append([(index, call)])
    return groups


def system_turn(config: DatasetConfig, cwd: Optional[str]) -> str:
    """The student's system turn: the compact system prompt, and where the session works when
    `working_directory_turn` puts it there."""
    if config.working_directory and cwd and config.working_directory_turn == "system":
        return f"{config.system_prompt}\n\nWorking directory: {cwd}"
    return config.system_prompt


def user_turn(config: DatasetConfig, cwd: Optional[str], prompt: str) -> str:
    """The prompt, after where the session works when `working_directory_turn` puts it there."""
    if config.working_directory and cwd and config.working_directory_turn == "user":
        return f"Working directory: {cwd}\n\n{prompt}"
    return prompt


def trace_tools(trace: Trace, config: DatasetConfig, fallback: Optional[list[dict]] = None) -> list[dict]:
    return tools_for(trace.tools_offered or fallback or [], config)


def trace_to_example(
    trace: Trace,
    config: DatasetConfig,
    tokenizer=None,
    fallback_tools: Optional[list[dict]] = None,
) -> dict:
    """Turn one trace into a chat example (see the module docstring for the layout).

    `fallback_tools` (Anthropic- or OpenAI-style schemas) stand in when the trace recorded no
    tools_offered. The returned dict also carries `trimmed_tool_results`, a count for the stats,
    which build_dataset does not write out.
    """
    keep = (lambda c: True) if config.include_subagent_calls else (lambda c: c.agent_id is None)
    indexed = [(i, c) for i, c in enumerate(trace.tool_calls) if keep(c)]
    groups = _groups(indexed)

    # TextStep.position counts the calls of every agent issued before the text, so a text goes
    # with the group of the first kept call at or after its position; texts after the last kept
    # call (segment len(groups)) lead into the final answer.
    def segment_of(position: int) -> int:
        return next((g for g, group in enumerate(groups) if any(index >= position for index, _ in group)), len(groups))

    segments: list[list[tuple[str, int, bool]]] = [[] for _ in range(len(groups) + 1)]  # (text, position, main agent's)
    for step in sorted(
        (s for s in trace.assistant_text if config.include_subagent_calls or s.agent_id is None),
        key=lambda s: s.position,
    ):
        text = step.text.strip()
        if text:
            segments[segment_of(step.position)].append((text, step.position, step.agent_id is None))

    # A mid-turn message (the user's, or a hook's) arrived with the results of the calls before
    # its position: it follows the last group issued wholly before it, and the next assistant turn
    # reacts to it. One that came after the model had written text there and stopped (`after_text`:
    # a Stop hook sent it on) splits that segment: the text it stopped with, the message, the rest.
    told: list[list[str]] = [[] for _ in range(len(groups) + 1)]  # [0]: before the first group
    inside: list[list[tuple[int, str]]] = [[] for _ in range(len(groups) + 1)]  # (texts of the segment before it, words)
    for message in trace.mid_turn_messages:
        if message.agent_id is not None and not config.include_subagent_calls:
            continue  # a subagent's hook spoke to that subagent, whose turns are left out
        words = told_text(message.kind, message.text, message.hook)
        if message.after_text:
            segment = segments[segment_of(message.position)]
            earlier = sum(1 for _, position, _ in segment if position < message.position)
            here = sum(1 for _, position, main in segment if position == message.position and main)
            inside[segment_of(message.position)].append((earlier + min(message.after_text, here), words))
            continue
        before = [g for g, group in enumerate(groups) if all(index < message.position for index, _ in group)]
        told[before[-1] + 1 if before else 0].append(words)

    def tell(slot: int) -> None:
        if told[slot]:
            messages.append({"role": "user", "content": "\n\n".join(told[slot])})

    def stopped_and_told(slot: int) -> list[str]:
        """The assistant turns and hook messages inside a segment; returns the texts after the last."""
        texts = [text for text, _, _ in segments[slot]]
        done = 0
        for split, words in sorted(inside[slot], key=lambda pair: pair[0]):
            messages.append({"role": "assistant", "content": "\n\n".join(texts[done:split])})
            messages.append({"role": "user", "content": words})
            done = max(done, split)
        return texts[done:]

    messages: list[dict] = [
        {"role": "system", "content": system_turn(config, trace.cwd)},
        {"role": "user", "content": user_turn(config, trace.cwd, trace.prompt)},
    ]
    tell(0)
    trimmed_results = 0
    for g, group in enumerate(groups):
        narration = stopped_and_told(g)
        messages.append(
            {
                "role": "assistant",
                "content": "\n\n".join(narration),
                "tool_calls": [
                    {
                        "id": call.tool_use_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": dump_arguments(call.input)},
                    }
                    for _, call in group
                ],
            }
        )
        for _, call in group:
            message, trimmed = _tool_message(call, config, tokenizer)
            trimmed_results += bool(trimmed)
            messages.append(message)
        tell(g + 1)

    trailing = stopped_and_told(len(groups))
    final = (trace.final_response or "").strip()
    # The last narration is usually the final response itself; keep only what it does not repeat.
    lead_in = [t for t in trailing if t not in final]
    messages.append({"role": "assistant", "content": "\n\n".join(lead_in + ([final] if final else []))})

    tools = trace_tools(trace, config, fallback_tools)
    signals = trace.reasoning_signals
    return {
        "messages": messages,
        "tools": json.dumps(tools, ensure_ascii=False),
        "trace_id": trace.trace_id,
        "session_id": trace.session_id,
        "prompt": trace.prompt,
        "pattern": signals.pattern,
        "tool_sequence": list(signals.tool_sequence) or [c.name for _, c in indexed],
        "split": None,
        "trimmed_tool_results": trimmed_results,
    }


# ---------------------------------------------------------------------------------------------
# Splitting


def _unit_hash(session_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}\x00{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_session(
    session_ids: Iterable[str], val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> dict[str, str]:
    """Assign each session to "train", "validation" or "test".

    A session's split depends only on its id and the seed (a hash in [0, 1) against the
    fractions), so it is the same whatever the input order, and a held-out session stays held out
    when more traces arrive. Fewer than 3 sessions all go to train. Otherwise every split gets at
    least one session: an empty validation or test split (possible on small corpora) takes the
    training session whose hash lies closest to its band.
    """
    ids = sorted(set(session_ids))
    if len(ids) < 3:  # too few to hold any out and still train
        return {sid: "train" for sid in ids}
    hashes = {sid: _unit_hash(sid, seed) for sid in ids}
    assignment = {}
    for sid in ids:
        u = hashes[sid]
        assignment[sid] = "test" if u < test_fraction else "validation" if u < test_fraction + val_fraction else "train"
    wanted = [("train", True), ("test", test_fraction > 0), ("validation", val_fraction > 0)]
    for split, want in wanted:
        if want and split not in assignment.values():
            # Take from the biggest split (train on ties) the session whose hash is nearest this band.
            sizes = Counter(assignment.values())
            donor = max(sizes, key=lambda s: (sizes[s], s == "train"))
            pool = [sid for sid in ids if assignment[sid] == donor]
            pick = max if split == "train" else min
            assignment[pick(pool, key=lambda sid: (hashes[sid], sid))] = split
    return assignment


# ---------------------------------------------------------------------------------------------
# Building and loading


def length_stats(lengths: list[int]) -> dict[str, Any]:
    if not lengths:
        return {"count": 0}
    ordered = sorted(lengths)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {
        "count": len(ordered),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": p95,
        "max": ordered[-1],
        "total": sum(ordered),
    }


def _union_tools(traces: list[Trace]) -> list[dict]:
    seen: dict[str, dict] = {}
    for trace in traces:
        for tool in trace.tools_offered:
            seen.setdefault(tool.get("name") or tool.get("function", {}).get("name"), tool)
    return list(seen.values())


def tools_called(examples: Iterable[dict]) -> list[str]:
    """The names of the tools the examples' assistant turns call, in the order first called."""
    names: dict[str, None] = {}
    for example in examples:
        for message in example["messages"]:
            for call in message.get("tool_calls") or []:
                names.setdefault(call["function"]["name"], None)
    return list(names)


def build_dataset(traces: Iterable[Trace], config: DatasetConfig, tokenizer=None) -> DatasetReport:
    """Write `{train,validation,test}.jsonl`, `stats.json` and `stats.md` under config.output_dir.

    Traces that are not accepted (when only_accepted) or have no final answer are skipped and
    counted. Output is deterministic: examples are ordered by (session, start time, trace id).
    """
    started = time.perf_counter()
    all_traces = list(traces)
    skipped: Counter[str] = Counter()
    kept: list[Trace] = []
    for trace in all_traces:
        if config.only_accepted and not (trace.quality and trace.quality.accepted):
            skipped["not accepted"] += 1
        elif not (trace.final_response or "").strip():
            skipped["no final answer"] += 1
        else:
            kept.append(trace)
    kept.sort(key=lambda t: (t.session_id, t.started_at.isoformat() if t.started_at else "", t.trace_id))

    fallback = _union_tools(kept)
    assignment = split_by_session([t.session_id for t in kept], config.val_fraction, config.test_fraction, config.seed)
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    lengths: dict[str, list[int]] = {split: [] for split in SPLITS}
    patterns: Counter[str] = Counter()
    tools_used: Counter[str] = Counter()
    trimmed = 0
    examples = [trace_to_example(trace, config, tokenizer, fallback_tools=fallback) for trace in kept]
    shown = tools_called(example for trace, example in zip(kept, examples) if assignment[trace.session_id] == "train") \
        if config.tool_set == "called" and not config.tools else None
    if shown:
        showing = replace(config, tools=shown)
        for trace, example in zip(kept, examples):
            example["tools"] = json.dumps(trace_tools(trace, showing, fallback), ensure_ascii=False)
    for trace, example in zip(kept, examples):
        trimmed += example.pop("trimmed_tool_results")
        split = assignment[trace.session_id]
        example["split"] = split
        rows[split].append(example)
        lengths[split].append(count_tokens(render(example["messages"], example["tools"]), tokenizer))
        patterns[example["pattern"] or "unknown"] += 1
        for message in example["messages"]:
            for call in message.get("tool_calls") or []:
                tools_used[call["function"]["name"]] += 1

    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows[split]:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    elapsed = time.perf_counter() - started
    stats = {
        "traces_in": len(all_traces),
        "examples": {split: len(rows[split]) for split in SPLITS},
        "sessions": {split: len({r["session_id"] for r in rows[split]}) for split in SPLITS},
        "skipped": dict(skipped),
        "token_lengths": {
            "counted_with": "tokenizer" if tokenizer is not None else "chars/4 estimate",
            **{split: length_stats(lengths[split]) for split in SPLITS},
            "all": length_stats([n for split in SPLITS for n in lengths[split]]),
        },
        "patterns": dict(patterns.most_common()),
        "tools": dict(tools_used.most_common()),
        # The tools every example shows when dataset.tool_set = "called" (null: as offered or `tools`).
        "tools_shown": shown or None,
        "trimmed_tool_results": trimmed,
        "max_tool_result_tokens": config.max_tool_result_tokens,
        "seconds": round(elapsed, 3),
        "traces_per_second": round(len(all_traces) / elapsed, 1) if elapsed > 0 else None,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    (out / "stats.md").write_text(_stats_markdown(stats), encoding="utf-8")
    return DatasetReport(output_dir=out, counts=stats["examples"], stats=stats)


def _stats_markdown(stats: dict) -> str:
    lines = ["# Dataset", ""]
    lines.append(f"{stats['traces_in']} traces in; skipped: {stats['skipped'] or 'none'}.")
    lines += ["", "| split | examples | sessions | tokens min | median | p95 | max |", "|---|---|---|---|---|---|---|"]
    for split in SPLITS:
        s = stats["token_lengths"][split]
        lines.append(
            f"| {split} | {stats['examples'][split]} | {stats['sessions'][split]} | "
            + " | ".join(str(s.get(k, "-")) for k in ("min", "median", "p95", "max"))
            + " |"
        )
    lines += ["", f"Token lengths counted with: {stats['token_lengths']['counted_with']}.", ""]
    lines += ["## Patterns", "", "| pattern | examples |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in stats["patterns"].items()]
    lines += ["", "## Tools", "", "| tool | calls |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in stats["tools"].items()]
    if stats.get("tools_shown"):
        lines += ["", f"Every example shows only the tools training calls (dataset.tool_set): {', '.join(stats['tools_shown'])}."]
    lines += [
        "",
        f"Tool results trimmed to {stats['max_tool_result_tokens']} tokens: {stats['trimmed_tool_results']}.",
        f"Built in {stats['seconds']} s ({stats['traces_per_second']} traces/s).",
        "",
    ]
    return "\n".join(lines)


def load_splits(output_dir: Path):
    """The written splits as a datasets.DatasetDict; empty splits are left out."""
    from datasets import load_dataset

    output_dir = Path(output_dir)
    files = {split: str(output_dir / f"{split}.jsonl") for split in SPLITS}
    missing = [p for p in files.values() if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"No dataset at '{output_dir}' (missing {', '.join(missing)}); run `trainer build-dataset`")
    files = {split: path for split, path in files.items() if Path(path).stat().st_size > 0}
    if not files:
        raise ValueError(f"The dataset at '{output_dir}' has no examples")
    try:
        return load_dataset("json", data_files=files)
    except Exception as e:  # a torn or hand-edited split: datasets' own error is a long traceback
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")[:200]
        raise ValueError(
            f"The dataset at '{output_dir}' cannot be read ({type(e).__name__}{': ' + first if first else ''}): "
            f"build it again with `trainer build-dataset` (under `trainer run`, delete {output_dir} and run again)"
        ) from None
