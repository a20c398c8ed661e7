"""`trainer eval`: does the student work the way the teacher did, on prompts it never saw?

    trainer eval --model runs/x/sft/final --data runs/x/dataset --out runs/x/eval
    trainer eval --config understudy.toml --eval.max_examples 50 --eval.baselines majority

For each held-out example the student generates its workflow step by step: the conversation up to
the first assistant turn is rendered with the generation prompt, the student answers (greedy,
bounded, stopping at `<|eot_id|>`), and its turn is parsed into narration and tool calls. Then the
teacher's actual turn and tool results are appended (teacher forcing: the student sees the
observations the teacher saw) and the student takes the next step, until it answers without
calling a tool or the teacher's trace has no more observations to replay.

Metrics, per system (the student and each baseline). The sequence metrics read each call's tool
name even from a call whose JSON is broken (which tool it chose); valid_call_rate judges the writing.
    first_tool_accuracy    the first call's tool is the teacher's first tool
    exact_sequence_match   the whole tool sequence equals the teacher's
    sequence_similarity    1 - Levenshtein(student, teacher) / max(len), 1.0 when both are empty
    argument_match         for calls matched by name within a step, the fraction of the teacher's
                           argument keys whose values are equal
    valid_call_rate        calls that parse as JSON, name an offered tool and validate against its
                           JSON schema (jsonschema)
    answer_similarity      difflib ratio between the final answers
    answer_fact_recall     of the names and numbers the teacher's answer took from tool results
                           (a count a query returned, a path a search found; not ones the prompt
                           already had), the fraction the student's answer states too, numbers
                           compared without their thousands separators
    answered_rate          examples where the system ended with an answer (it learned to stop)

Baselines: "base", the untrained base model through the same code path, and "majority", always
the most common tool sequence of the train split (its first tool is the most common first tool).

Writes eval.json (summary and per-example detail) and eval.md (the table printed).
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import click

from trainer.config import STAGE_CONTEXT, ConfigError, UnderstudyConfig, resolve_cli_config, trained_config_path
from trainer.shared_prefix import SharedPrefixGenerator, common_prefix_length
from trainer.tool_context import is_signature, signature_to_schema

METRICS = [
    "first_tool_accuracy",
    "exact_sequence_match",
    "sequence_similarity",
    "argument_match",
    "valid_call_rate",
    "answer_similarity",
    "answer_fact_recall",
    "answered_rate",
]


# ----------------------------------------------------------------------------------------------
# Pure metrics


def levenshtein(a: Sequence[Any], b: Sequence[Any]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def sequence_similarity(a: Sequence[Any], b: Sequence[Any]) -> float:
    if not a and not b:
        return 1.0
    return 1.0 - levenshtein(a, b) / max(len(a), len(b))


def argument_match(student_args: dict[str, Any], teacher_args: dict[str, Any]) -> float:
    """Fraction of the teacher's argument keys the student set to the same value."""
    if not teacher_args:
        return 1.0 if not student_args else 0.0
    same = sum(1 for k, v in teacher_args.items() if k in student_args and student_args[k] == v)
    return same / len(teacher_args)


def answer_similarity(student: str, teacher: str) -> float:
    return difflib.SequenceMatcher(None, (student or "").strip(), (teacher or "").strip()).ratio()


# Names and numbers: tokens with a digit, "_", "/", "." or an inner capital (parse_date,
# src/auth/core.py, 40,055, AttributeError). Plain words are left out: "the" in a docstring and
# in the answer is no evidence that the answer reports what the tool returned.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./,-]*[A-Za-z0-9_]|[A-Za-z0-9_]")
_FACT_SHAPE = re.compile(r"[0-9_/.]|[a-z][A-Z]")
_GROUPED_NUMBER = re.compile(r"\d{1,3}(,\d{3})+")  # 40,055


def _fact_tokens(text: str) -> set[str]:
    """The name- and number-shaped tokens of `text`, numbers without thousands separators."""
    out = set()
    for token in _TOKEN_RE.findall(text or ""):
        token = token.rstrip(".,")
        if _GROUPED_NUMBER.fullmatch(token):
            token = token.replace(",", "")
        if len(token) > 1 and _FACT_SHAPE.search(token) and "," not in token:
            out.add(token)
    return out


def answer_facts(teacher_answer: str, results: str, prompt: str) -> set[str]:
    """The names and numbers of the teacher's answer that came from tool results, not the prompt."""
    return (_fact_tokens(teacher_answer) & _fact_tokens(results)) - _fact_tokens(prompt)


def tool_schemas(tools: Any) -> dict[str, dict[str, Any]]:
    """{name: JSON schema of its arguments} from the dataset's tools (OpenAI or Anthropic shape)."""
    if isinstance(tools, str):
        tools = json.loads(tools) if tools.strip() else []
    out = {}
    for t in tools or []:
        fn = t.get("function", t) if isinstance(t, dict) else {}
        name = fn.get("name")
        if name:
            params = fn.get("parameters") or fn.get("input_schema") or {"type": "object"}
            # A compact signature ({"file_path": "string"}) read as a JSON schema would accept anything.
            out[name] = signature_to_schema(params) if is_signature(params) and params else params
    return out


def call_is_valid(name: str, arguments: Any, valid_json: bool, schemas: dict[str, dict[str, Any]]) -> bool:
    """Parseable JSON, a tool that was offered, arguments valid against its schema."""
    import jsonschema

    if not valid_json or name not in schemas or not isinstance(arguments, dict):
        return False
    try:
        jsonschema.validate(arguments, schemas[name])
    except jsonschema.ValidationError:
        return False
    except jsonschema.SchemaError:
        # A tool schema jsonschema can't read says nothing about the call: count the call valid.
        return True
    return True


# ----------------------------------------------------------------------------------------------
# The teacher's workflow, read from a dataset row


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if raw else {}
    except (TypeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class TeacherStep:
    calls: list[tuple[str, dict[str, Any]]]
    content: str
    # The messages to append after the student's attempt: the teacher's turn and its tool results.
    replay: list[dict[str, Any]]


def teacher_steps(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[TeacherStep]]:
    """(context before the first assistant turn, the teacher's assistant turns with their results)."""
    first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
    context = messages[:first]
    steps: list[TeacherStep] = []
    for m in messages[first:]:
        if m["role"] == "assistant":
            calls = [
                (tc["function"]["name"], _arguments(tc["function"].get("arguments")))
                for tc in (m.get("tool_calls") or [])
            ]
            steps.append(TeacherStep(calls=calls, content=m.get("content") or "", replay=[m]))
        elif steps:
            steps[-1].replay.append(m)
    return context, steps


def teacher_sequence(messages: list[dict[str, Any]]) -> list[str]:
    return [name for step in teacher_steps(messages)[1] for name, _ in step.calls]


def teacher_answer(messages: list[dict[str, Any]]) -> str:
    steps = teacher_steps(messages)[1]
    return steps[-1].content if steps and not steps[-1].calls else ""


_NAME_RE = re.compile(r'"name"\s*:\s*"([^"\\]+)"')


def call_name(call) -> Optional[str]:
    """The tool a call names, read leniently from its text when the JSON as a whole is broken.

    The workflow metrics ask which tool the student chose; whether it wrote the call correctly is
    valid_call_rate's question. So a call cut off in a long `content` argument still counts as a
    Write in the sequence, and as invalid in valid_call_rate.
    """
    if call.name:
        return call.name
    m = _NAME_RE.search(call.raw or "")
    return m.group(1) if m else None


# ----------------------------------------------------------------------------------------------
# Systems


@dataclass
class Episode:
    """What one system did on one example."""

    calls_per_step: list[list[dict[str, Any]]] = field(default_factory=list)
    answer: Optional[str] = None
    raw: list[str] = field(default_factory=list)
    # Turns that ran into max_new_tokens before their end-of-turn token: a call cut there is invalid.
    cut_turns: int = 0

    @property
    def sequence(self) -> list[str]:
        return [c["name"] for step in self.calls_per_step for c in step]


class ModelPolicy:
    """A causal LM answering turn by turn through the tokenizer's chat template (the training one).

    Greedy by default; with `temperature` > 0 each turn is sampled (seed torch for repeatable draws),
    within the `top_p` nucleus, and with `greedy_calls` only the words around the tool calls are:
    each call is the likeliest one (trainer/decoding.py).
    """

    # Which of the last generate() call's turns stopped at max_new_tokens, not at a stop token
    # (reassigned by each call; a generate() that does not set it reports no cut turns).
    last_cut: list[bool] = []
    # The token ids of the last generate() call's turns (what was decoded, before any re-tokenizing).
    last_ids: list[list[int]] = []

    def __init__(self, model_path: str, max_new_tokens: int = 256, max_turns: int = 16, base: bool = False,
                 temperature: float = 0.0, top_p: float = 1.0, greedy_calls: bool = False,
                 precision: str = "fp32"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from trainer.chat_template import END_OF_TURN, apply_chat_template
        from trainer.sft import uses_bf16

        if base:
            # The untrained baseline takes the same path training took: template applied, embeddings resized.
            from trainer.sft import load_base_model, load_tokenizer

            self.tokenizer, _ = load_tokenizer(model_path)
            self.model = load_base_model(model_path, four_bit=False, cuda=torch.cuda.is_available(), tokenizer=self.tokenizer)
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
            apply_chat_template(self.tokenizer)  # a no-op on a student saved by `trainer sft`
            self.model = AutoModelForCausalLM.from_pretrained(model_path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()
        if uses_bf16(precision, cuda=self.device == "cuda"):  # eval.precision
            self.model.to(torch.bfloat16)
        self.end = END_OF_TURN
        stop = {self.tokenizer.convert_tokens_to_ids(END_OF_TURN), self.tokenizer.eos_token_id}
        self.stop_ids = [i for i in stop if i is not None and i != self.tokenizer.unk_token_id]
        self.max_new_tokens = max_new_tokens
        self.max_turns = max_turns
        self.temperature = temperature
        self.top_p = top_p
        self.greedy_calls = greedy_calls
        # The system turn and tools, the same for every turn of a project's workflows, are prefilled once.
        self.generator = SharedPrefixGenerator(self.model, self.tokenizer.pad_token_id)
        self._system_ids: dict[str, list[int]] = {}

    def sampling(self, temperature: float) -> "ModelPolicy":
        """The same student, sampled at `temperature`: model, tokenizer and prefix cache shared, not loaded again."""
        other = copy.copy(self)
        other.temperature = temperature
        return other

    def generate(self, conversations: list[tuple[list[dict[str, Any]], Any]]) -> list[str]:
        """One assistant turn for each (messages, tools), generated as one batch whose system turns
        and tool lists come from a cache (trainer/shared_prefix.py)."""
        import torch

        rows, prefix_lengths = [], []
        for messages, tools in conversations:
            tools = (json.loads(tools) if isinstance(tools, str) else tools) or None
            row = self._token_ids(messages, tools, add_generation_prompt=True)
            rows.append(row)
            prefix_lengths.append(self._system_length(messages, tools, row))
        sampling = {"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": self.top_p} if self.temperature > 0 else {
            "do_sample": False, "temperature": None, "top_k": None, "top_p": None}
        if self.temperature > 0 and self.greedy_calls:
            from transformers import LogitsProcessorList

            from trainer.chat_template import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
            from trainer.decoding import GreedyToolCalls

            call_ids = self.tokenizer.convert_tokens_to_ids([TOOL_CALL_OPEN, TOOL_CALL_CLOSE])
            sampling["logits_processor"] = LogitsProcessorList([GreedyToolCalls(*call_ids)])
        out, width = self.generator.generate(
            rows,
            prefix_lengths,
            max_new_tokens=self.max_new_tokens,
            **sampling,
            eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new = out[:, width:]
        stops = torch.tensor(self.stop_ids, device=new.device)
        self.last_cut = [not bool(torch.isin(ids, stops).any()) and ids.shape[0] >= self.max_new_tokens for ids in new]
        self.last_ids = [ids.tolist() for ids in new]
        return [self.tokenizer.decode(ids, skip_special_tokens=False).split(self.end)[0] for ids in new]

    def _token_ids(self, messages: list[dict[str, Any]], tools: Any, add_generation_prompt: bool) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                                  tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _system_length(self, messages: list[dict[str, Any]], tools: Any, row: list[int]) -> int:
        """How many of `row`'s first tokens are its system turn and tool list (rendered alone, once
        per distinct pair): the part every turn of a workflow, and every workflow of a project, shares."""
        system = [m for m in messages[:1] if m.get("role") == "system"]
        key = json.dumps([system, tools], sort_keys=True, default=str)
        ids = self._system_ids.get(key)
        if ids is None:
            try:
                ids = self._token_ids(system, tools, add_generation_prompt=False) if system or tools else []
            except Exception:  # a template that refuses a conversation without a user turn: nothing cached
                ids = []
            self._system_ids[key] = ids
        return common_prefix_length(ids, row)

    def run_batch(self, rows: list[dict[str, Any]]) -> list[Episode]:
        """Step all examples together: turn t of every example still working is one batch."""
        from trainer.chat_template import parse_assistant_output

        plans = [teacher_steps(r["messages"]) for r in rows]
        histories = [list(context) for context, _ in plans]
        episodes = [Episode() for _ in rows]
        active = [i for i, (_, steps) in enumerate(plans) if steps]
        t = 0
        while active and t < self.max_turns:
            texts = self.generate([(histories[i], rows[i].get("tools")) for i in active])
            still = []
            cut = self.last_cut if len(self.last_cut) == len(texts) else [False] * len(texts)
            for i, text, was_cut in zip(active, texts, cut):
                ep = episodes[i]
                ep.raw.append(text)
                ep.cut_turns += was_cut
                parsed = parse_assistant_output(text)
                calls = [
                    {"name": call_name(c), "arguments": c.arguments if isinstance(c.arguments, dict) else {}, "valid_json": c.valid_json}
                    for c in parsed.tool_calls
                ]
                if not calls:
                    ep.answer = parsed.narration
                    continue
                ep.calls_per_step.append(calls)
                steps = plans[i][1]
                # Teacher forcing: continue from what the teacher did and saw, while the trace lasts.
                histories[i].extend(steps[t].replay)
                if t + 1 < len(steps):
                    still.append(i)
            active = still
            t += 1
        return episodes

    def run(self, row: dict[str, Any]) -> Episode:
        return self.run_batch([row])[0]


class MajorityPolicy:
    """Always the train split's most common tool sequence."""

    def __init__(self, train_rows: list[dict[str, Any]]):
        seqs = [tuple(teacher_sequence(r["messages"])) for r in train_rows]
        firsts = Counter(s[0] for s in seqs if s)
        self.first_tool = firsts.most_common(1)[0][0] if firsts else None
        # The most common workflow among those that start with the most common first tool, so
        # the baseline's first call is the majority first tool and its sequence a real workflow.
        pool = Counter(s for s in seqs if (s[:1] or (None,))[0] == self.first_tool)
        self.sequence = list(pool.most_common(1)[0][0]) if pool else []

    def run_batch(self, rows: list[dict[str, Any]]) -> list[Episode]:
        return [self.run(r) for r in rows]

    def run(self, row: dict[str, Any]) -> Episode:
        return Episode(calls_per_step=[[{"name": n, "arguments": None, "valid_json": None}] for n in self.sequence])


# ----------------------------------------------------------------------------------------------
# Scoring


def score_episode(ep: Episode, row: dict[str, Any]) -> dict[str, Any]:
    _, steps = teacher_steps(row["messages"])
    t_seq = [n for s in steps for n, _ in s.calls]
    s_seq = ep.sequence
    schemas = tool_schemas(row.get("tools"))
    result: dict[str, Any] = {
        "teacher": t_seq,
        "student": s_seq,
        "first_tool_accuracy": float((s_seq[:1] or [None]) == (t_seq[:1] or [None])),
        "exact_sequence_match": float(s_seq == t_seq),
        "sequence_similarity": sequence_similarity(s_seq, t_seq),
    }
    # Argument match and validity only mean something for a system that writes arguments.
    calls = [c for step in ep.calls_per_step for c in step]
    if calls and calls[0].get("valid_json") is not None:
        result["valid_call_rate"] = sum(
            call_is_valid(c["name"], c["arguments"], c["valid_json"], schemas) for c in calls
        ) / len(calls)
        matches = []
        for i, student_calls in enumerate(ep.calls_per_step):
            if i >= len(steps):
                break
            unused = list(steps[i].calls)
            for c in student_calls:
                j = next((k for k, (n, _) in enumerate(unused) if n == c["name"]), None)
                if j is not None:
                    matches.append(argument_match(c["arguments"] or {}, unused.pop(j)[1]))
        result["argument_matches"] = matches
    if ep.raw:  # a system that generated text: did it answer, and how close to the teacher?
        teacher = teacher_answer(row["messages"])
        result["answer_similarity"] = answer_similarity(ep.answer or "", teacher)
        # Dataset rows hold every content as a string (trainer/dataset.py), as teacher_steps reads them.
        results = "\n".join(m.get("content") or "" for m in row["messages"] if m["role"] == "tool")
        prompt = "\n".join(m.get("content") or "" for m in row["messages"] if m["role"] in ("system", "user"))
        stated = _fact_tokens(ep.answer or "")
        result["answer_facts"] = [float(f in stated) for f in sorted(answer_facts(teacher, results, prompt))]
        result["answered_rate"] = float(ep.answer is not None)
        result["turns"] = len(ep.raw)
        result["cut_turns"] = ep.cut_turns
    return result


def aggregate(scored: list[dict[str, Any]]) -> dict[str, Optional[float]]:
    out: dict[str, Optional[float]] = {}
    for m in METRICS:
        if m == "argument_match":
            vals = [v for s in scored for v in s.get("argument_matches", [])]
        elif m == "answer_fact_recall":  # pooled over facts, as argument_match over calls
            vals = [v for s in scored for v in s.get("answer_facts", [])]
        else:
            vals = [s[m] for s in scored if m in s]
        out[m] = sum(vals) / len(vals) if vals else None
    return out


# ----------------------------------------------------------------------------------------------
# Report


def _column_names(summary: dict[str, Any], n: int, counts: Optional[dict[str, int]]) -> list[str]:
    """Each system's column header, with its example count where it saw fewer than all n."""
    counts = counts or {}
    return [f"{s} (first {counts[s]})" if counts.get(s, n) < n else s for s in summary]


def format_table(summary: dict[str, dict[str, Optional[float]]], n: int, counts: Optional[dict[str, int]] = None):
    from rich.table import Table

    table = Table(title=f"Held-out workflow evaluation ({n} examples)")
    table.add_column("metric")
    for column in _column_names(summary, n, counts):
        table.add_column(column, justify="right")
    for m in METRICS:
        table.add_row(m, *("—" if summary[s].get(m) is None else f"{summary[s][m]:.3f}" for s in summary))
    return table


def markdown_table(summary: dict[str, dict[str, Optional[float]]], n: int, counts: Optional[dict[str, int]] = None) -> str:
    systems = list(summary)
    lines = [
        f"# Held-out workflow evaluation ({n} examples)",
        "",
        "| metric | " + " | ".join(_column_names(summary, n, counts)) + " |",
        "| --- |" + " ---: |" * len(systems),
    ]
    for m in METRICS:
        vals = ["—" if summary[s].get(m) is None else f"{summary[s][m]:.3f}" for s in systems]
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _duration(seconds: float) -> str:
    from trainer.progress import format_duration  # imports transformers: not at module import

    return format_duration(seconds)


def _progress(done: int, total: int, elapsed: float) -> str:
    """`16/64 examples · 2m10s · ETA 6m30s`: the ETA at the mean pace of the batches so far."""
    return f"{done}/{total} examples · {_duration(elapsed)} · ETA {_duration(elapsed / done * (total - done))}"


def evaluate(
    cfg: UnderstudyConfig,
    model_path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = click.echo,
    print_table: bool = True,
) -> dict[str, Any]:
    """Score the student and the baselines on the held-out split; write eval.json and eval.md."""
    ev = cfg.eval
    sft_out = Path(cfg.sft.output_dir or Path(cfg.run.out) / "sft")
    default_model = sft_out / "final"
    model_path = Path(model_path or ev.model or default_model)
    data_dir = Path(data_dir or ev.data_dir or cfg.sft.data_dir or Path(cfg.run.out) / "dataset")
    output_dir = Path(output_dir or ev.output_dir or Path(cfg.run.out) / "eval")
    split_file = data_dir / f"{ev.split}.jsonl"
    if not split_file.exists():
        raise ConfigError(f"no {ev.split} split at {split_file}: run `trainer build-dataset` or set eval.data_dir")
    if model_path == default_model and not model_path.exists():
        raise ConfigError(f"no student at {model_path}: run `trainer sft` or set eval.model")
    rows = _read_rows(split_file)
    if ev.max_examples:
        rows = rows[: ev.max_examples]
    if not rows:
        raise ConfigError(f"the {ev.split} split at {split_file} is empty: more traces are needed")
    output_dir.mkdir(parents=True, exist_ok=True)

    import torch

    from trainer.sft import uses_bf16

    systems: dict[str, Any] = {}
    in_bf16 = uses_bf16(ev.precision, cuda=torch.cuda.is_available())
    log(f"Evaluating {model_path} on {len(rows)} {ev.split} examples{' in bf16' if in_bf16 else ''} …")
    try:
        systems["student"] = ModelPolicy(str(model_path), ev.max_new_tokens, ev.max_turns, precision=ev.precision)
    except (OSError, ValueError) as e:  # no model there (transformers says OSError), or not one it can read
        from trainer.sft import student_load_error

        raise ConfigError(student_load_error(str(model_path), e, "eval.model")) from None
    if "majority" in ev.baselines:
        train_file = data_dir / "train.jsonl"
        systems["majority"] = MajorityPolicy(_read_rows(train_file) if train_file.exists() else [])
    if "base" in ev.baselines:
        systems["base"] = _untrained_baseline(cfg, model_path, log)

    per_example: list[dict[str, Any]] = [
        {"trace_id": row.get("trace_id"), "prompt": row.get("prompt")} for row in rows
    ]
    scored: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    counts = {name: len(rows) for name in systems}
    if "base" in counts and ev.base_max_examples:
        counts["base"] = min(ev.base_max_examples, len(rows))
    for name, policy in systems.items():
        started = time.monotonic()
        for start in range(0, counts[name], ev.batch_size):
            chunk = rows[start : min(start + ev.batch_size, counts[name])]
            for j, (row, ep) in enumerate(zip(chunk, policy.run_batch(chunk))):
                s = score_episode(ep, row)
                scored[name].append(s)
                per_example[start + j][name] = {**s, "answer": ep.answer, "raw": ep.raw}
            done = start + len(chunk)
            if done < counts[name] and isinstance(policy, ModelPolicy):
                log(f"  {name}: {_progress(done, counts[name], time.monotonic() - started)}")
        log(f"  {name}: {counts[name]} examples done ({_duration(time.monotonic() - started)})")
        cut = sum(s.get("cut_turns", 0) for s in scored[name])
        if cut and name == "student":
            turns = sum(s.get("turns", 0) for s in scored[name])
            log(f"  warning: {cut} of the student's {turns} turns ran into eval.max_new_tokens = {ev.max_new_tokens} "
                "(a call cut there counts as invalid): raise eval.max_new_tokens")
    summary = {name: aggregate(vals) for name, vals in scored.items()}
    report = {
        "model": str(model_path),
        "data_dir": str(data_dir),
        "split": ev.split,
        "n_examples": len(rows),
        "n_examples_per_system": counts,
        "summary": summary,
        "majority_sequence": getattr(systems.get("majority"), "sequence", None),
        "examples": per_example,
    }
    (output_dir / "eval.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (output_dir / "eval.md").write_text(markdown_table(summary, len(rows), counts))
    if print_table:
        from rich.console import Console

        Console().print(format_table(summary, len(rows), counts))
    # The model card beside the student gets the evaluation, when the student came from `trainer sft`.
    card_dir = model_path.resolve().parent if model_path.name in ("final", "model") else None
    if card_dir is not None and (card_dir / "train_summary.json").exists():
        from trainer.sft import write_model_card

        write_model_card(card_dir, summary)
    return report


def untrained_base(cfg: UnderstudyConfig, model_path: Path) -> tuple[str, str, Path]:
    """The base the "base" baseline loads, the setting that names it, and where a GGUF base's
    conversion is cached: eval.base_model when set; else the base the student was trained from, as
    its run recorded it (so `trainer eval --model runs/x/sft/final` scores run x's own base, not the
    default 1B model the user may not have); else sft.base_model."""
    if cfg.eval.base_model:
        return cfg.eval.base_model, "eval.base_model", Path(cfg.run.out)
    record = trained_config_path(model_path)
    if cfg.source("sft.base_model") == "default" and record is not None:
        try:
            trained = json.loads(record.read_text())["config"]
            base, run_out = trained["sft"]["base_model"], trained["run"]["out"]
            if isinstance(base, str) and base and isinstance(run_out, str):
                return base, f"the base the student was trained from, as {record} records it", Path(run_out)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # an unreadable record: fall back to this command's own setting
    return cfg.sft.base_model, "sft.base_model", Path(cfg.run.out)


def _untrained_baseline(cfg: UnderstudyConfig, model_path: Path, log: Callable[[str], None]) -> "ModelPolicy":
    from trainer.bases import resolve_base
    from trainer.sft import base_load_error

    base, setting, cache_dir = untrained_base(cfg, model_path)
    log(f"  untrained baseline: {base} ({setting})")
    try:
        return ModelPolicy(resolve_base(base, cache_dir, log), cfg.eval.max_new_tokens, cfg.eval.max_turns, base=True,
                           precision=cfg.eval.precision)
    except (OSError, ValueError, KeyError) as e:  # a name the hub does not know (or no network), a folder without a model
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(base_load_error(
            base, e, setting="eval.base_model", otherwise=', or leave "base" out of eval.baselines'
        )) from None


@click.command("eval", context_settings=STAGE_CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="understudy.toml or YAML.")
@click.option("--model", "model_path", help="The student (eval.model); default {sft.output_dir}/final.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), help="Dataset directory (eval.data_dir).")
@click.option("--out", "output_dir", type=click.Path(file_okay=False), help="Where eval.json/eval.md go.")
@click.option("--max-examples", type=int, help="eval.max_examples")
@click.pass_context
def command(ctx, config_path, model_path, data_dir, output_dir, max_examples):
    """Score the student's step-by-step workflows on held-out prompts against the baselines.

    Any config value can be set as --SECTION.KEY VALUE or -o SECTION.KEY=VALUE.
    """
    cfg = resolve_cli_config(
        config_path,
        ctx.args,
        [
            ("eval.model", model_path),
            ("eval.data_dir", data_dir),
            ("eval.output_dir", output_dir),
            ("eval.max_examples", max_examples),
        ],
    )
    click.echo("Resolved config [eval]:")
    click.echo(cfg.describe(["eval"]))
    try:
        evaluate(cfg)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
